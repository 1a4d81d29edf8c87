//! The fusion chooser: cuts a model into tileable fused blocks and
//! whole-map segments, and reports what each block costs when tiled.

use super::block::{Block, is_tileable};
use super::grid::Grid;
use super::plan::{peak_live_bytes, plan_tile, plan_tiles};
use crate::error::Result;
use crate::ir::{Graph, NodeId};

/// Default ceiling on a block's halo FLOP overhead at the reference grid.
///
/// 10% at 2×2: on VGG-16 at 224×224 the chooser then fuses conv1_1..conv3_1
/// (7 nodes, 5.2% model-wide halo at 2×2, 16% at 4×4) where fusing the first
/// 8 convs as one block costs 29% at 2×2 and 102% at 4×4 (tile bench).
pub const DEFAULT_MAX_HALO_OVERHEAD: f64 = 0.10;

/// How the chooser cuts a model into fused blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct FusionOptions {
    /// Fixed block depth (`--fuse N`): at most this many nodes per block, no
    /// overhead limit. `None`: grow each block while its halo overhead at
    /// `reference_grid` stays at or under `max_halo_overhead`.
    pub fuse: Option<usize>,
    /// The grid the overhead limit is evaluated at (clamped to small maps).
    pub reference_grid: Grid,
    /// Ceiling on `tiled FLOPs / untiled FLOPs - 1` at the reference grid.
    pub max_halo_overhead: f64,
}

impl Default for FusionOptions {
    fn default() -> Self {
        Self {
            fuse: None,
            reference_grid: Grid::uniform(2, 2),
            max_halo_overhead: DEFAULT_MAX_HALO_OVERHEAD,
        }
    }
}

impl FusionOptions {
    /// Options with a fixed depth (`--fuse N`).
    pub fn fixed(depth: usize) -> Self {
        Self {
            fuse: Some(depth),
            ..Self::default()
        }
    }
}

/// A piece of a model, in execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A fused block run tile by tile.
    Tiled(Block),
    /// Nodes that need whole maps (dense layers, global pooling…), run untiled.
    Whole(Vec<NodeId>),
}

/// Halo FLOP overhead of `block` at `grid` (clamped to the block's output
/// map): `tiled / untiled - 1`.
pub fn halo_overhead(graph: &Graph, block: &Block, grid: &Grid) -> Result<f64> {
    let [h, w] = block.output_hw(graph);
    let tiles = plan_tiles(graph, block, &grid.clamped(h, w))?;
    let tiled: u64 = tiles.iter().map(|t| t.flops).sum();
    let untiled = super::plan::untiled_flops(graph, block)?;
    Ok(if untiled == 0 {
        0.0
    } else {
        tiled as f64 / untiled as f64 - 1.0
    })
}

/// Cuts `graph` into segments, in node order. Tileable nodes are grouped in
/// runs of consecutive nodes (a contiguous range of a topological order is
/// always a convex sub-DAG); each run is carved greedily from its start into
/// the longest valid blocks (outputs of one size) within the depth or
/// overhead limit. A single node is always a valid block whatever its halo.
pub fn choose_blocks(graph: &Graph, options: &FusionOptions) -> Vec<Segment> {
    let n = graph.nodes.len();
    let mut segs: Vec<Segment> = Vec::new();
    let push_whole = |segs: &mut Vec<Segment>, id: NodeId| match segs.last_mut() {
        Some(Segment::Whole(v)) => v.push(id),
        _ => segs.push(Segment::Whole(vec![id])),
    };
    let depth = options.fuse.map(|d| d.max(1));
    let mut i = 0;
    while i < n {
        if !is_tileable(graph, i) {
            push_whole(&mut segs, i);
            i += 1;
            continue;
        }
        let mut end = i;
        while end + 1 < n && is_tileable(graph, end + 1) {
            end += 1;
        }
        let mut start = i;
        while start <= end {
            let mut best: Option<(usize, Block)> = None;
            for j in start..=end {
                if depth.is_some_and(|d| j - start + 1 > d) {
                    break;
                }
                let Ok(b) = Block::new(graph, (start..=j).collect()) else {
                    continue;
                };
                if depth.is_none() && best.is_some() {
                    match halo_overhead(graph, &b, &options.reference_grid) {
                        Ok(o) if o <= options.max_halo_overhead => {}
                        _ => break,
                    }
                }
                best = Some((j, b));
            }
            match best {
                Some((j, b)) => {
                    segs.push(Segment::Tiled(b));
                    start = j + 1;
                }
                None => {
                    push_whole(&mut segs, start);
                    start += 1;
                }
            }
        }
        i = end + 1;
    }
    segs
}

/// What tiling one block with one grid costs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BlockReport {
    /// Name of the block's first node.
    pub first: String,
    /// Name of the block's last node.
    pub last: String,
    /// Number of nodes (layers) in the block.
    pub layers: usize,
    /// The grid, as `RxC` (after clamping to the output map).
    pub grid: String,
    /// FLOPs of the block run untiled.
    pub untiled_flops: u64,
    /// FLOPs summed over all tiles.
    pub tiled_flops: u64,
    /// `tiled_flops / untiled_flops - 1`, as a percentage.
    pub halo_overhead_pct: f64,
    /// Peak live bytes of the block run untiled (one tile covering the map).
    pub untiled_peak_bytes: u64,
    /// Largest per-tile peak of live bytes.
    pub tile_peak_bytes: u64,
    /// Largest per-tile input (halo included), bytes.
    pub max_in_bytes: u64,
    /// Largest per-tile output, bytes.
    pub max_out_bytes: u64,
    /// Input bytes summed over tiles (what the coordinator sends).
    pub total_in_bytes: u64,
}

/// Reports on tiling `block` with `grid` (clamped to the block's output map).
pub fn report_block(graph: &Graph, block: &Block, grid: &Grid) -> Result<BlockReport> {
    let [h, w] = block.output_hw(graph);
    let grid = grid.clamped(h, w);
    let tiles = plan_tiles(graph, block, &grid)?;
    let whole = plan_tile(graph, block, super::plan::full_region(graph, block))?;
    let untiled_flops = whole.flops;
    let tiled_flops: u64 = tiles.iter().map(|t| t.flops).sum();
    let (first, last) = block.span_names(graph);
    Ok(BlockReport {
        first,
        last,
        layers: block.nodes.len(),
        grid: grid.to_string(),
        untiled_flops,
        tiled_flops,
        halo_overhead_pct: if untiled_flops == 0 {
            0.0
        } else {
            (tiled_flops as f64 / untiled_flops as f64 - 1.0) * 100.0
        },
        untiled_peak_bytes: peak_live_bytes(&whole.graph),
        tile_peak_bytes: tiles.iter().map(|t| t.peak_bytes).max().unwrap_or(0),
        max_in_bytes: tiles.iter().map(|t| t.in_bytes).max().unwrap_or(0),
        max_out_bytes: tiles.iter().map(|t| t.out_bytes).max().unwrap_or(0),
        total_in_bytes: tiles.iter().map(|t| t.in_bytes).sum(),
    })
}
