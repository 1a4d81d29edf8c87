//! Tile work of a fused block: FLOPs per op, input bytes (halo included) and
//! output bytes of one tile. The planner asks a [`HaloModel`] so the engine's
//! exact tile geometry (`tile_engine::tiling`) can replace the built-in
//! [`ReceptiveField`] estimator without touching the planner.

use crate::dag::{Geometry, ModelDag, OpIdx, TensorIdx};

/// A tile's output region as fractions of the block's output map:
/// rows `[top, bottom)` and columns `[left, right)`, each within `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    /// First row fraction.
    pub top: f64,
    /// End row fraction.
    pub bottom: f64,
    /// First column fraction.
    pub left: f64,
    /// End column fraction.
    pub right: f64,
}

impl Region {
    /// The whole map.
    pub const FULL: Region = Region {
        top: 0.0,
        bottom: 1.0,
        left: 0.0,
        right: 1.0,
    };

    /// Fraction of the map's area.
    pub fn area(&self) -> f64 {
        (self.bottom - self.top).max(0.0) * (self.right - self.left).max(0.0)
    }
}

/// Work of one tile of a fused block.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TileWork {
    /// FLOPs of each block op for this tile (halo recomputation included), in block order.
    pub op_flops: Vec<f64>,
    /// Rows and columns of each block op's output the tile computes (halo
    /// included; `[0, 0]` where the map size is unknown), in block order.
    pub op_extent: Vec<[usize; 2]>,
    /// Bytes of the block's input maps the tile needs (its halo included).
    pub in_bytes: f64,
    /// Bytes of the block's outputs the tile produces (no halo).
    pub out_bytes: f64,
    /// Elements the tile's crops move through a copy kernel: where an op
    /// (or the block's output) needs fewer columns of a map than a sibling
    /// made the tile compute, the executor copies its part out row by row
    /// (a crop of whole rows is one `memcpy` per channel and is not counted).
    pub copy_elements: f64,
}

/// Geometry source for tile work. `block` lists tileable ops in topological order.
/// `Sync`: the planner solves strategies on several threads.
pub trait HaloModel: Sync {
    /// Work of the tile covering `region` of the block's outputs.
    fn tile_work(&self, dag: &ModelDag, block: &[OpIdx], region: Region) -> TileWork;
}

/// Inputs of a block: runtime tensors its ops read that it does not produce.
pub fn block_inputs(dag: &ModelDag, block: &[OpIdx]) -> Vec<TensorIdx> {
    let mut v = Vec::new();
    for &o in block {
        for &t in &dag.ops[o].inputs {
            let inside = dag.tensors[t].producer.is_some_and(|p| block.contains(&p));
            if !inside && !v.contains(&t) {
                v.push(t);
            }
        }
    }
    v
}

/// Outputs of a block: tensors it produces that are read outside it or leave the model.
pub fn block_outputs(dag: &ModelDag, block: &[OpIdx]) -> Vec<TensorIdx> {
    block
        .iter()
        .map(|&o| dag.ops[o].output)
        .filter(|&t| {
            let tensor = &dag.tensors[t];
            tensor.is_output
                || tensor.consumers.is_empty()
                || tensor.consumers.iter().any(|c| !block.contains(c))
        })
        .collect()
}

/// Built-in estimator: propagates each tile's output rows/columns backwards
/// through the block's windows (`in = [o*s - pad, (o_end-1)*s - pad + extent)`,
/// clipped to the map), which is exactly the receptive-field growth of
/// stacked convolutions and pools. An op's tile FLOPs are its FLOPs times the
/// fraction of its output map the tile needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceptiveField;

type Span1 = (usize, usize);

fn hull(a: Option<Span1>, b: Span1) -> Span1 {
    match a {
        Some(a) => (a.0.min(b.0), a.1.max(b.1)),
        None => b,
    }
}

fn frac_span(lo: f64, hi: f64, n: usize) -> Span1 {
    let a = (lo * n as f64).round() as usize;
    let b = (hi * n as f64).round() as usize;
    (a.min(n), b.min(n).max(a.min(n)))
}

fn back(span: Span1, extent: usize, stride: usize, pad: usize, n_in: usize) -> Span1 {
    if span.1 <= span.0 {
        return (0, 0);
    }
    let lo = (span.0 * stride).saturating_sub(pad);
    let hi = ((span.1 - 1) * stride + extent).saturating_sub(pad);
    (lo.min(n_in), hi.min(n_in).max(lo.min(n_in)))
}

/// The inputs a transposed conv's outputs `span` read: `x` with
/// `x*stride - pad + k` in `span` for some `k < extent`.
fn back_transposed(span: Span1, extent: usize, stride: usize, pad: usize, n_in: usize) -> Span1 {
    if span.1 <= span.0 {
        return (0, 0);
    }
    let stride = stride.max(1);
    let lo = (span.0 + pad).saturating_sub(extent.saturating_sub(1)) / stride;
    let hi = (span.1 - 1 + pad) / stride + 1;
    (lo.min(n_in), hi.min(n_in).max(lo.min(n_in)))
}

/// The inputs a crop's outputs `span` read: each `offset` further on.
fn shift(span: Span1, offset: usize, n_in: usize) -> Span1 {
    if span.1 <= span.0 {
        return (0, 0);
    }
    let lo = (span.0 + offset).min(n_in);
    (lo, (span.1 + offset).min(n_in).max(lo))
}

fn scale(span: Span1, n_from: usize, n_to: usize) -> Span1 {
    if n_from == n_to {
        return span;
    }
    if n_to == 1 {
        return if span.1 > span.0 { (0, 1) } else { (0, 0) };
    }
    let f = |x: usize| (x * n_to).div_ceil(n_from.max(1)).min(n_to);
    ((span.0 * n_to / n_from.max(1)).min(n_to), f(span.1))
}

impl HaloModel for ReceptiveField {
    fn tile_work(&self, dag: &ModelDag, block: &[OpIdx], region: Region) -> TileWork {
        // Needed (rows, cols) per tensor touched by the block; blocks are short,
        // so a linear list beats a map.
        let mut need: Vec<(TensorIdx, Span1, Span1)> = Vec::with_capacity(block.len() * 2);
        fn merge(need: &mut Vec<(TensorIdx, Span1, Span1)>, t: TensorIdx, r: Span1, c: Span1) {
            if r.1 <= r.0 || c.1 <= c.0 {
                return;
            }
            match need.iter_mut().find(|e| e.0 == t) {
                Some(e) => {
                    e.1 = hull(Some(e.1), r);
                    e.2 = hull(Some(e.2), c);
                }
                None => need.push((t, r, c)),
            }
        }
        let mut out_bytes = 0.0;
        // What each op reads of each input, and the tile of each block
        // output, before the hull over all of a map's readers: where one is
        // narrower than the hull, the engine crops it out.
        let mut reads: Vec<(TensorIdx, Span1, Span1)> = Vec::new();
        for t in block_outputs(dag, block) {
            let tensor = &dag.tensors[t];
            if let Some([h, w]) = tensor.hw {
                let r = frac_span(region.top, region.bottom, h);
                let c = frac_span(region.left, region.right, w);
                out_bytes +=
                    tensor.bytes * ((r.1 - r.0) * (c.1 - c.0)) as f64 / (h * w).max(1) as f64;
                reads.push((t, r, c));
                merge(&mut need, t, r, c);
            }
        }
        let mut op_flops = vec![0.0; block.len()];
        let mut op_extent = vec![[0, 0]; block.len()];
        for (j, &o) in block.iter().enumerate().rev() {
            let op = &dag.ops[o];
            let Some(&(_, r, c)) = need.iter().find(|e| e.0 == op.output) else {
                continue;
            };
            let Some([h, w]) = dag.tensors[op.output].hw else {
                continue;
            };
            op_flops[j] = op.flops * ((r.1 - r.0) * (c.1 - c.0)) as f64 / (h * w).max(1) as f64;
            op_extent[j] = [r.1 - r.0, c.1 - c.0];
            for &i in &op.inputs {
                let Some([hi, wi]) = dag.tensors[i].hw else {
                    continue;
                };
                let (ri, ci) = match op.geometry {
                    Geometry::Window {
                        extent,
                        stride,
                        pad,
                    } => (
                        back(r, extent[0], stride[0], pad[0], hi),
                        back(c, extent[1], stride[1], pad[1], wi),
                    ),
                    Geometry::Transposed {
                        extent,
                        stride,
                        pad,
                    } => (
                        back_transposed(r, extent[0], stride[0], pad[0], hi),
                        back_transposed(c, extent[1], stride[1], pad[1], wi),
                    ),
                    Geometry::Shift { offset } => {
                        (shift(r, offset[0], hi), shift(c, offset[1], wi))
                    }
                    Geometry::Pointwise | Geometry::Global => (scale(r, h, hi), scale(c, w, wi)),
                };
                reads.push((i, ri, ci));
                merge(&mut need, i, ri, ci);
            }
        }
        let mut copy_elements = 0.0;
        for &(t, r, c) in &reads {
            let (Some([h, w]), Some(&(_, _, hull_c))) =
                (dag.tensors[t].hw, need.iter().find(|e| e.0 == t))
            else {
                continue;
            };
            if c != hull_c {
                copy_elements += dag.tensors[t].elements * ((r.1 - r.0) * (c.1 - c.0)) as f64
                    / (h * w).max(1) as f64;
            }
        }
        let mut in_bytes = 0.0;
        for t in block_inputs(dag, block) {
            let tensor = &dag.tensors[t];
            match (tensor.hw, need.iter().find(|e| e.0 == t)) {
                (Some([h, w]), Some(&(_, r, c))) => {
                    in_bytes +=
                        tensor.bytes * ((r.1 - r.0) * (c.1 - c.0)) as f64 / (h * w).max(1) as f64;
                }
                (None, _) => in_bytes += tensor.bytes,
                (Some(_), None) => {}
            }
        }
        TileWork {
            op_flops,
            op_extent,
            in_bytes,
            out_bytes,
            copy_elements,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::chain;

    #[test]
    fn halo_of_two_3x3_convs_is_two_rows_each_side() {
        // 3 stacked 3×3/s1/p1 convs on a 16×16 map.
        let dag = chain(&[16, 16, 16, 16], 3);
        let block = [0, 1, 2];
        let top = ReceptiveField.tile_work(
            &dag,
            &block,
            Region {
                top: 0.0,
                bottom: 0.5,
                left: 0.0,
                right: 1.0,
            },
        );
        // Last conv: 8 rows; middle: 9; first: 10; input: 11 rows of 16.
        let per_row = dag.ops[0].flops / 16.0;
        assert!((top.op_flops[2] - 8.0 * per_row).abs() < 1e-6);
        assert!((top.op_flops[1] - 9.0 * per_row).abs() < 1e-6);
        assert!((top.op_flops[0] - 10.0 * per_row).abs() < 1e-6);
        assert!((top.in_bytes - dag.tensors[0].bytes * 11.0 / 16.0).abs() < 1e-6);
        assert!((top.out_bytes - dag.tensors[3].bytes * 0.5).abs() < 1e-6);
        let full = ReceptiveField.tile_work(&dag, &block, Region::FULL);
        assert!((full.op_flops.iter().sum::<f64>() - dag.total_flops()).abs() < 1e-6);
    }
}
