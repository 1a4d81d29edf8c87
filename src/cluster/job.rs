//! A job as both sides see it: which sub-graph (or tile of a fused block)
//! runs, which tensors go in and come out, with what shapes. Coordinator and
//! node derive it from the same graph and the same ids, so only ids travel.

use planner::profiler::{CLASSES, class_index};
use tile_engine::ir::ValueId;
use tile_engine::tiling::{Block, Region, Span, extract, plan_tile};
use tile_engine::{Graph, Tensor};

use super::ClusterError;
use super::wire::Rect;

/// What one job computes.
#[derive(Clone, Debug)]
pub struct JobPlan {
    /// The graph the executor runs (a sub-graph, or a tile's copy of a block).
    pub graph: Graph,
    /// Runtime inputs, as values of the model graph, in order.
    pub inputs: Vec<ValueId>,
    /// For a tile: the rectangle of each NCHW input to send (`None` = whole tensor).
    pub in_regions: Vec<Option<Region>>,
    /// Shapes of the tensors sent (tile inputs are cut to their rectangle).
    pub input_shapes: Vec<Vec<usize>>,
    /// Outputs, as values of the model graph, in order.
    pub outputs: Vec<ValueId>,
    /// Shapes of the tensors returned.
    pub output_shapes: Vec<Vec<usize>>,
    /// For a tile: the output rectangle.
    pub out_region: Option<Region>,
    /// FLOPs (halo included for a tile).
    pub flops: u64,
}

fn with_hw(shape: &[usize], r: Region) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let [.., h, w] = s.as_mut_slice() {
        *h = r.rows.len();
        *w = r.cols.len();
    }
    s
}

/// Plans a job; `nodes` must be ascending ids of `graph`.
pub fn plan_job(
    graph: &Graph,
    nodes: &[usize],
    tile: Option<Rect>,
) -> Result<JobPlan, ClusterError> {
    if nodes.is_empty() {
        return Err(ClusterError::Protocol(
            "a job needs at least one node".into(),
        ));
    }
    if nodes.windows(2).any(|w| w[0] >= w[1]) || nodes.iter().any(|&n| n >= graph.nodes.len()) {
        return Err(ClusterError::Protocol(format!(
            "job nodes must be ascending ids below {}",
            graph.nodes.len()
        )));
    }
    match tile {
        None => {
            let consumers = graph.consumers();
            let (sub, inputs, outputs) = extract(graph, nodes, &consumers);
            let flops = nodes.iter().map(|&n| graph.node_cost(n).flops).sum();
            Ok(JobPlan {
                graph: sub,
                in_regions: vec![None; inputs.len()],
                input_shapes: inputs.iter().map(|&v| graph.shape(v).to_vec()).collect(),
                output_shapes: outputs.iter().map(|&v| graph.shape(v).to_vec()).collect(),
                inputs,
                outputs,
                out_region: None,
                flops,
            })
        }
        Some([y, x, h, w]) => {
            let block = Block::new(graph, nodes.to_vec())
                .map_err(|e| ClusterError::Protocol(format!("not a tileable block: {e}")))?;
            let [bh, bw] = block.output_hw(graph);
            if h == 0
                || w == 0
                || y.checked_add(h).is_none_or(|e| e > bh)
                || x.checked_add(w).is_none_or(|e| e > bw)
            {
                return Err(ClusterError::Protocol(format!(
                    "tile {y},{x} {h}x{w} outside the block's {bh}x{bw} output"
                )));
            }
            let out = Region::new(Span::new(y, y + h), Span::new(x, x + w));
            let t = plan_tile(graph, &block, out)
                .map_err(|e| ClusterError::Protocol(format!("cannot plan tile: {e}")))?;
            let in_regions: Vec<Option<Region>> = block
                .inputs
                .iter()
                .zip(&t.in_regions)
                .map(|(&v, &r)| (graph.shape(v).len() == 4).then_some(r))
                .collect();
            Ok(JobPlan {
                input_shapes: block
                    .inputs
                    .iter()
                    .zip(&in_regions)
                    .map(|(&v, r)| match r {
                        Some(r) => with_hw(graph.shape(v), *r),
                        None => graph.shape(v).to_vec(),
                    })
                    .collect(),
                output_shapes: block
                    .outputs
                    .iter()
                    .map(|&v| with_hw(graph.shape(v), out))
                    .collect(),
                graph: t.graph,
                inputs: block.inputs,
                in_regions,
                outputs: block.outputs,
                out_region: Some(out),
                flops: t.flops,
            })
        }
    }
}

/// FLOPs of `tile`'s nodes (a tile's copy of nodes of `model`, under their
/// names) by op class (indexed as [`planner::profiler::ALL_CLASSES`]). With
/// `padded` (a GPU tile) each is weighted by the GPU kernel's padding on its
/// tile extent against the whole map's, and a column cut
/// ([`planner::shares::gpu_tile_factor`]): the work a GPU tile's span
/// measures, as the planner prices it, op by op. Inserted crops have no node
/// of that name and no FLOPs.
pub fn class_flops(model: &Graph, tile: &Graph, padded: bool) -> [u64; CLASSES] {
    let whole: std::collections::HashMap<&str, usize> = model
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.output))
        .collect();
    let hw = |g: &Graph, v| match g.shape(v) {
        [.., h, w] => [*h, *w],
        _ => [0, 0],
    };
    let mut by_class = [0.0; CLASSES];
    for (i, n) in tile.nodes.iter().enumerate() {
        let cost = tile.node_cost(i);
        let Some(&out) = whole.get(n.name.as_str()) else {
            continue;
        };
        let pad = if padded {
            planner::shares::gpu_tile_factor(cost.class, hw(tile, n.output), hw(model, out))
        } else {
            1.0
        };
        by_class[class_index(cost.class)] += cost.flops as f64 * pad;
    }
    by_class.map(|f| f as u64)
}

/// Cuts the job's inputs out of the values the coordinator holds.
pub fn gather_inputs(plan: &JobPlan, env: &[Option<Tensor>]) -> Result<Vec<Tensor>, ClusterError> {
    plan.inputs
        .iter()
        .zip(&plan.in_regions)
        .map(|(&v, r)| {
            let t = env
                .get(v)
                .and_then(Option::as_ref)
                .ok_or_else(|| ClusterError::Protocol(format!("value {v} is not computed yet")))?;
            match r {
                Some(r) => tile_engine::tiling::slice_region(t, *r)
                    .map_err(|e| ClusterError::Protocol(e.to_string())),
                None => Ok(t.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{class_flops, plan_job};
    use planner::profiler::class_index;
    use tile_engine::Graph;
    use tile_engine::ir::OpClass;
    use tile_engine::tiling::row_copy_elements;

    fn padded_flops(model: &Graph, tile: &Graph) -> u64 {
        class_flops(model, tile, true).iter().sum()
    }

    #[test]
    fn a_tile_counts_its_kernel_padding_and_its_row_copies() {
        let mut g = tile_engine::default_model::graph([32, 32]).expect("default model");
        tile_engine::passes::optimize(&mut g).expect("passes");
        let ops: Vec<usize> = (0..g.nodes.len()).collect();
        // The output is 64×64; rects are [row, col, rows, cols].
        let whole = plan_job(&g, &ops, Some([0, 0, 64, 64])).expect("whole");
        assert_eq!(padded_flops(&g, &whole.graph), whole.flops);
        assert_eq!(row_copy_elements(&whole.graph), 0);
        // A strip of the full width: whole 8-pixel row blocks, as the map;
        // only the last SIMD chunk weighs more on fewer rows.
        let strip = plan_job(&g, &ops, Some([16, 0, 16, 64])).expect("strip");
        let ratio = padded_flops(&g, &strip.graph) as f64 / strip.flops as f64;
        assert!((1.0..1.04).contains(&ratio), "strip padding {ratio}");
        let strip_ratio = ratio;
        assert_eq!(row_copy_elements(&strip.graph), 0);
        // A 2-D tile 27 columns wide: its convs run partial row blocks, and
        // its residual branches are cropped row by row.
        let tile = plan_job(&g, &ops, Some([16, 21, 16, 27])).expect("tile");
        let ratio = padded_flops(&g, &tile.graph) as f64 / tile.flops as f64;
        assert!(
            ratio > strip_ratio + 0.05,
            "2-D tile padding {ratio} vs a strip's {strip_ratio}"
        );
        assert!(row_copy_elements(&tile.graph) > 0);
        // Padding is priced op by op, as the planner prices it: only the
        // conv classes carry it, other classes' FLOPs stay as they are.
        let plain = class_flops(&g, &tile.graph, false);
        let padded = class_flops(&g, &tile.graph, true);
        let (conv, elem) = (
            class_index(OpClass::Conv3x3),
            class_index(OpClass::Elementwise),
        );
        assert!(plain[elem] > 0, "{plain:?}");
        assert_eq!(padded[elem], plain[elem]);
        assert!(
            padded[conv] as f64 > plain[conv] as f64 * 1.05,
            "{padded:?} {plain:?}"
        );
    }
}
