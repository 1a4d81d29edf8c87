//! Per-tile plans: the regions every value of a block is computed over for
//! one tile, the tile's copy of the block's sub-graph, and its costs.

use std::collections::HashMap;
use std::sync::Arc;

use super::axis::{AxisMap, LocalAxis};
use super::block::{Block, InputGeom, node_geom};
use super::grid::{Grid, split};
use super::region::{Region, Span};
use super::stitch::slice_region;
use crate::error::{Error, Result};
use crate::ir::{Graph, NodeId, Op, ValueId};

/// One tile of a fused block: where its output goes, what input it needs,
/// what it costs, and the graph that computes it.
#[derive(Clone, Debug)]
pub struct Tile {
    /// Grid row of the tile.
    pub grid_row: usize,
    /// Grid column of the tile.
    pub grid_col: usize,
    /// The rectangle of the block's output map(s) this tile produces.
    pub out_region: Region,
    /// The halo-extended rectangle of the block's first input map it reads
    /// (the whole map for a broadcast operand).
    pub in_region: Region,
    /// One rectangle per [`Block::inputs`] entry, in that order.
    pub in_regions: Vec<Region>,
    /// FLOPs of the block's nodes over this tile (inserted crops excluded).
    pub flops: u64,
    /// Bytes of runtime input to send for this tile (halo included).
    pub in_bytes: u64,
    /// Bytes of output this tile returns (no halo).
    pub out_bytes: u64,
    /// Largest sum of live runtime tensors while running this tile's graph
    /// (inputs and outputs included, weights and constants excluded).
    pub peak_bytes: u64,
    /// The tile's copy of the block: original node names and op parameters
    /// (weights shared), tile-sized extents and pads, plus inserted crops.
    /// Its inputs are [`Block::inputs`] cut to [`Tile::in_regions`]; its
    /// outputs are [`Block::outputs`] cut to [`Tile::out_region`].
    pub graph: Graph,
}

fn hw(shape: &[usize]) -> Option<[usize; 2]> {
    match shape {
        [_, _, h, w] => Some([*h, *w]),
        _ => None,
    }
}

fn with_hw(shape: &[usize], r: Region) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let [.., h, w] = s.as_mut_slice() {
        *h = r.rows.len();
        *w = r.cols.len();
    }
    s
}

fn bytes(shape: &[usize]) -> u64 {
    shape.iter().map(|&d| d as u64).product::<u64>() * 4
}

/// The per-tile copy of an op: only pads (and a crop's offset) change.
fn localize(op: &Op, l: [LocalAxis; 2], crop_offset: [usize; 2]) -> Op {
    let pads = [l[0].pad_begin, l[1].pad_begin, l[0].pad_end, l[1].pad_end];
    let mut op = op.clone();
    match &mut op {
        Op::Conv(c) => c.pads = pads,
        Op::ConvTranspose(c) => {
            c.pads = pads;
            c.output_padding = [l[0].output_padding, l[1].output_padding];
        }
        Op::Pool(p) => p.pads = pads,
        Op::Pad { pads: p, .. } => *p = pads,
        Op::Crop { offset } => *offset = crop_offset,
        _ => {}
    }
    op
}

/// Regions worked out backwards from one tile's output rectangle.
struct Regions {
    /// The rectangle each value is computed over (or cut to, for block inputs).
    value: HashMap<ValueId, Region>,
    /// For each (node, input index) with a sliced input, the rectangle it reads.
    read: HashMap<(NodeId, usize), Region>,
}

fn backward(graph: &Graph, block: &Block, out: Region) -> Result<Regions> {
    let mut value: HashMap<ValueId, Region> = HashMap::new();
    let mut read = HashMap::new();
    for &o in &block.outputs {
        value.insert(o, out);
    }
    for &id in block.nodes.iter().rev() {
        let n = &graph.nodes[id];
        let Some(&wanted) = value.get(&n.output) else {
            continue; // nothing downstream reads this node for this tile
        };
        let geom = node_geom(graph, id)
            .ok_or_else(|| Error::Unsupported(format!("node {} cannot be tiled", n.name)))?;
        let (p, maps) = geom
            .primary()
            .ok_or_else(|| Error::Unsupported(format!("node {} has no map input", n.name)))?;
        let geom_err = || Error::Shape(format!("node {}: not an NCHW map", n.name));
        let [ih, iw] = hw(graph.shape(n.inputs[p])).ok_or_else(geom_err)?;
        let [oh, ow] = hw(graph.shape(n.output)).ok_or_else(geom_err)?;
        let grown = Region::new(
            maps[0].expand(wanted.rows, ih, oh)?,
            maps[1].expand(wanted.cols, iw, ow)?,
        );
        value.insert(n.output, grown);
        for (k, (&v, g)) in n.inputs.iter().zip(&geom.inputs).enumerate() {
            let [h, w] = match hw(graph.shape(v)) {
                Some(d) => d,
                None => continue, // rank < 4 broadcast operand: passed whole
            };
            let r = match g {
                InputGeom::Map(m) => {
                    let r = Region::new(m[0].need(grown.rows, h), m[1].need(grown.cols, w));
                    if r.area() == 0 {
                        return Err(Error::Unsupported(format!(
                            "node {}: tile {grown} reads nothing of input {k}",
                            n.name
                        )));
                    }
                    read.insert((id, k), r);
                    r
                }
                InputGeom::Whole => Region::full(h, w),
            };
            let merged = value.get(&v).map_or(r, |have| have.union(&r));
            value.insert(v, merged);
        }
    }
    Ok(Regions { value, read })
}

/// Elements `g`'s crops copy with rows narrower than their source: the GPU
/// executor moves those through a copy kernel, where a crop of whole rows is
/// one `memcpy` per channel (a 2-D tile's residual branches, not a strip's).
pub fn row_copy_elements(g: &Graph) -> u64 {
    g.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Crop { .. }))
        .filter(|n| {
            let width = |v| g.shape(v).last().copied();
            n.inputs
                .first()
                .is_some_and(|&i| width(i) != width(n.output))
        })
        .map(|n| g.shape(n.output).iter().product::<usize>() as u64)
        .sum()
}

/// Peak bytes of live runtime tensors when `g`'s nodes run in order and each
/// value is freed after its last reader (inputs included, graph outputs kept
/// to the end, constants and op weights excluded).
pub fn peak_live_bytes(g: &Graph) -> u64 {
    let mut last_use = vec![None::<usize>; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in &n.inputs {
            last_use[v] = Some(i);
        }
    }
    for &o in &g.outputs {
        last_use[o] = Some(usize::MAX);
    }
    let size = |v: ValueId| bytes(&g.values[v].shape);
    let mut live: u64 = g.inputs.iter().map(|&v| size(v)).sum();
    let mut peak = live;
    let mut dying: Vec<Vec<ValueId>> = vec![Vec::new(); g.nodes.len()];
    for (v, lu) in last_use.iter().enumerate() {
        if let Some(i) = *lu
            && i < g.nodes.len()
            && !g.constants.contains_key(&v)
        {
            dying[i].push(v);
        }
    }
    for (i, n) in g.nodes.iter().enumerate() {
        live += size(n.output);
        peak = peak.max(live);
        for &v in &dying[i] {
            live -= size(v);
        }
        if last_use[n.output].is_none() {
            live -= size(n.output);
        }
    }
    peak
}

/// Plans the tile of `block` that produces `out` (a rectangle of the block's output map).
pub fn plan_tile(graph: &Graph, block: &Block, out: Region) -> Result<Tile> {
    let [h, w] = block.output_hw(graph);
    if out.area() == 0 || !Region::full(h, w).contains(&out) {
        return Err(Error::InvalidInput(format!(
            "tile {out} is empty or outside the {h}×{w} block output"
        )));
    }
    let regions = backward(graph, block, out)?;
    let mut tg = Graph::default();
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut in_regions = Vec::with_capacity(block.inputs.len());
    for &u in &block.inputs {
        let shape = graph.shape(u);
        let r = match (hw(shape), regions.value.get(&u)) {
            (Some(_), Some(r)) => *r,
            (Some([h, w]), None) => Region::full(h, w),
            (None, _) => Region::default(),
        };
        let tile_shape = if hw(shape).is_some() {
            with_hw(shape, r)
        } else {
            shape.to_vec()
        };
        in_regions.push(r);
        let id = tg.add_value(graph.values[u].name.clone(), tile_shape);
        tg.inputs.push(id);
        map.insert(u, id);
    }
    let mut flops = 0u64;
    for &id in &block.nodes {
        let n = &graph.nodes[id];
        let Some(&grown) = regions.value.get(&n.output) else {
            continue;
        };
        let mut ins = Vec::with_capacity(n.inputs.len());
        let mut crop_offset = [0, 0];
        let mut locals = [LocalAxis::default(); 2];
        let geom = node_geom(graph, id)
            .ok_or_else(|| Error::Unsupported(format!("node {} cannot be tiled", n.name)))?;
        for (k, (&v, g)) in n.inputs.iter().zip(&geom.inputs).enumerate() {
            let t = match map.get(&v) {
                Some(&t) => t,
                None => {
                    // A constant operand: whole if broadcast, else cut to the tile.
                    let c = graph.constants.get(&v).ok_or_else(|| {
                        Error::Malformed(format!("node {} reads undefined value {v}", n.name))
                    })?;
                    let tensor = match (hw(c.shape()), regions.value.get(&v)) {
                        (Some([h, w]), Some(r)) if *r != Region::full(h, w) => {
                            Arc::new(slice_region(c, *r)?)
                        }
                        _ => Arc::clone(c),
                    };
                    let id = tg.add_value(graph.values[v].name.clone(), tensor.shape().to_vec());
                    tg.constants.insert(id, tensor);
                    map.insert(v, id);
                    id
                }
            };
            let (InputGeom::Map(m), Some(&need)) = (g, regions.read.get(&(id, k))) else {
                ins.push(t);
                continue;
            };
            let have = regions.value.get(&v).copied().unwrap_or(need);
            let offset = [
                need.rows.start - have.rows.start,
                need.cols.start - have.cols.start,
            ];
            let is_crop_op = matches!(n.op, Op::Crop { .. }) && k == 0;
            let t = if have == need || is_crop_op {
                crop_offset = offset;
                t
            } else {
                let shape = with_hw(graph.shape(v), need);
                tg.add_node_with_shape(
                    format!("{}/crop{k}", n.name),
                    Op::Crop { offset },
                    vec![t],
                    format!("{}/crop{k}", graph.values[v].name),
                    shape,
                )?
            };
            if Some(k) == geom.primary().map(|p| p.0) {
                let [ih, iw] = hw(graph.shape(v)).unwrap_or([0, 0]);
                locals = [
                    m[0].local(grown.rows, need.rows, ih)?,
                    m[1].local(grown.cols, need.cols, iw)?,
                ];
            }
            ins.push(t);
        }
        let op = localize(&n.op, locals, crop_offset);
        let shape = with_hw(graph.shape(n.output), grown);
        let out_id = tg
            .add_node_with_shape(
                n.name.clone(),
                op,
                ins,
                graph.values[n.output].name.clone(),
                shape,
            )
            .map_err(|e| Error::Shape(format!("tile {out}: {e}")))?;
        flops += tg.node_cost(tg.nodes.len() - 1).flops;
        map.insert(n.output, out_id);
    }
    for &o in &block.outputs {
        let t = *map
            .get(&o)
            .ok_or_else(|| Error::Malformed(format!("block output {o} never computed")))?;
        let have = regions.value.get(&o).copied().unwrap_or(out);
        let t = if have == out {
            t
        } else {
            tg.add_node_with_shape(
                format!("{}/tile", graph.values[o].name),
                Op::Crop {
                    offset: [
                        out.rows.start - have.rows.start,
                        out.cols.start - have.cols.start,
                    ],
                },
                vec![t],
                format!("{}/tile", graph.values[o].name),
                with_hw(graph.shape(o), out),
            )?
        };
        tg.outputs.push(t);
    }
    let in_bytes = tg.inputs.iter().map(|&v| bytes(tg.shape(v))).sum();
    let out_bytes = tg.outputs.iter().map(|&v| bytes(tg.shape(v))).sum();
    let peak_bytes = peak_live_bytes(&tg);
    Ok(Tile {
        grid_row: 0,
        grid_col: 0,
        out_region: out,
        in_region: in_regions.first().copied().unwrap_or_default(),
        in_regions,
        flops,
        in_bytes,
        out_bytes,
        peak_bytes,
        graph: tg,
    })
}

/// Plans every tile of `block` for `grid`, row-major, on [`block_regions`].
/// Fails when the grid has more rows or columns than the block's output map
/// (see [`Grid::clamped`]).
pub fn plan_tiles(graph: &Graph, block: &Block, grid: &Grid) -> Result<Vec<Tile>> {
    let regions = block_regions(graph, block, grid)?;
    regions
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut t = plan_tile(graph, block, r)?;
            t.grid_row = i / grid.cols;
            t.grid_col = i % grid.cols;
            Ok(t)
        })
        .collect()
}

/// The tiles of `block`'s output map for `grid`, row-major: the grid's own
/// cuts ([`Grid::regions`]), each moved by less than the block's
/// up-sampling factor to where the two strips it separates cost least. A
/// cut off the factor's rows makes both strips compute the low-resolution
/// row it falls in, with that row's whole halo: a ×3
/// super-resolution model cut 3×3 recomputed 19 % of its FLOPs, 12 % with
/// its cuts on multiples of 3. Without up-sampling the cuts stay.
pub fn block_regions(graph: &Graph, block: &Block, grid: &Grid) -> Result<Vec<Region>> {
    let [h, w] = block.output_hw(graph);
    let factor = upsampling(graph, block);
    let rows = split(h, grid.rows, &grid.row_shares, "rows")?;
    let cols = split(w, grid.cols, &grid.col_shares, "columns")?;
    let strip = |axis: usize, s: Span| match axis {
        0 => Region::new(s, Span::new(0, w)),
        _ => Region::new(Span::new(0, h), s),
    };
    let rows = snap_cuts(rows, factor[0], |s| {
        Ok(plan_tile(graph, block, strip(0, s))?.flops)
    })?;
    let cols = snap_cuts(cols, factor[1], |s| {
        Ok(plan_tile(graph, block, strip(1, s))?.flops)
    })?;
    Ok(rows
        .iter()
        .flat_map(|r| cols.iter().map(move |c| Region::new(*r, *c)))
        .collect())
}

/// Per axis, the largest product of up-sampling factors (nearest resizes,
/// depth-to-space, transposed convs' strides) on a path through the block
/// to its output, capped at 8.
fn upsampling(graph: &Graph, block: &Block) -> [usize; 2] {
    let mut below: HashMap<ValueId, [usize; 2]> =
        block.outputs.iter().map(|&o| (o, [1, 1])).collect();
    for &id in block.nodes.iter().rev() {
        let n = &graph.nodes[id];
        let (Some(&out), Some(geom)) = (below.get(&n.output), node_geom(graph, id)) else {
            continue;
        };
        for (&v, g) in n.inputs.iter().zip(&geom.inputs) {
            let InputGeom::Map(maps) = g else { continue };
            let up = |m: &AxisMap| match *m {
                AxisMap::Upsample { factor } => factor,
                AxisMap::Transposed { stride, .. } => stride,
                _ => 1,
            };
            let e = below.entry(v).or_insert([1, 1]);
            for a in 0..2 {
                e[a] = e[a].max(out[a].saturating_mul(up(&maps[a])).min(8));
            }
        }
    }
    below
        .values()
        .fold([1, 1], |m, f| [m[0].max(f[0]), m[1].max(f[1])])
}

/// Moves each cut between `spans` by less than `factor` (left to right, each
/// strip keeping a row) to where its two strips' FLOPs add up to least (the
/// least recomputed), the nearest such row on a tie. Not FLOPs per share:
/// that sum falls with every row moved to the faster worker and pulled
/// unequal strips' cuts off the factor. `flops` costs a strip.
fn snap_cuts(
    spans: Vec<Span>,
    factor: usize,
    flops: impl Fn(Span) -> Result<u64>,
) -> Result<Vec<Span>> {
    if factor < 2 || spans.len() < 2 {
        return Ok(spans);
    }
    let mut bounds: Vec<usize> = spans.iter().map(|s| s.start).collect();
    bounds.push(spans.last().map_or(0, |s| s.end));
    for k in 1..spans.len() {
        let (prev, next, at) = (bounds[k - 1], bounds[k + 1], bounds[k]);
        let candidates =
            at.saturating_sub(factor - 1).max(prev + 1)..=(at + factor - 1).min(next - 1);
        let mut best = (u64::MAX, usize::MAX, at);
        for c in candidates {
            let key = (
                flops(Span::new(prev, c))? + flops(Span::new(c, next))?,
                c.abs_diff(at),
            );
            if key < (best.0, best.1) {
                best = (key.0, key.1, c);
            }
        }
        bounds[k] = best.2;
    }
    Ok(bounds.windows(2).map(|b| Span::new(b[0], b[1])).collect())
}

/// Halo cost of tiling `block` with `grid`: FLOPs over all tiles, and untiled.
pub fn halo_flops(graph: &Graph, block: &Block, grid: &Grid) -> Result<(u64, u64)> {
    let tiles = plan_tiles(graph, block, grid)?;
    Ok((
        tiles.iter().map(|t| t.flops).sum(),
        untiled_flops(graph, block)?,
    ))
}

/// FLOPs of `block` run as one tile: the rows and columns no later op reads
/// (a strided window's unread border) are skipped, as in every tile, so a
/// 1×1 grid has no halo, not a negative one.
pub fn untiled_flops(graph: &Graph, block: &Block) -> Result<u64> {
    Ok(plan_tile(graph, block, full_region(graph, block))?.flops)
}

/// Spans of the whole map, for callers that want a 1×1 plan.
pub(crate) fn full_region(graph: &Graph, block: &Block) -> Region {
    let [h, w] = block.output_hw(graph);
    Region::new(Span::new(0, h), Span::new(0, w))
}
