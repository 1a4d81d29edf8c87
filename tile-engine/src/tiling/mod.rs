//! Tile geometry: receptive fields, halos, grids with shares, fused-block choice, tiled execution.
//!
//! A fused [`Block`] is a convex set of spatially local nodes (conv with
//! optional residual, transposed conv, pooling incl. `ceil_mode` and
//! dilation, activations, per-channel/broadcast binary ops, concat on
//! channels, pad, crop, integer nearest upsampling, DepthToSpace). For one
//! tile (a rectangle of the block's output), the geometry walks the block
//! backwards and gives every value the rectangle it must be computed over:
//! the union of what its readers need. A reader that needs less gets an
//! inserted `Op::Crop`. The tile's graph ([`Tile::graph`]) is a copy of the
//! block in which every node keeps its name and op parameters (weights are
//! shared `Arc`s); only extents and pads differ. Pads stay where the tile
//! touches the map border (partially when a window only reaches part of the
//! pad) and are zero on interior edges, where the halo supplies real data.
//!
//! Average pooling: per-tile pads reproduce the untiled divisor in both
//! `count_include_pad` modes, because the tile's padded extent contains the
//! same taps of every window (at a `ceil_mode` far border the end pad stays
//! capped at the untiled one). No extra op field is needed.
//!
//! Grids larger than the map: [`plan_tiles`] fails with a clear error;
//! [`run_tiled`] clamps (see [`TiledOptions::clamp_grid`]). Share rounding is
//! documented on [`split`].

mod axis;
mod block;
mod exec;
mod fusion;
mod grid;
mod plan;
mod region;
mod stitch;

pub(crate) use block::nearest_is_floor;
pub use block::{Block, is_tileable};
pub use exec::{TiledOptions, extract, run_segments, run_tiled};
pub use fusion::{
    BlockReport, DEFAULT_MAX_HALO_OVERHEAD, FusionOptions, Segment, choose_blocks, halo_overhead,
    report_block,
};
pub use grid::{Grid, split};
pub use plan::{
    Tile, block_regions, halo_flops, peak_live_bytes, plan_tile, plan_tiles, row_copy_elements,
    untiled_flops,
};
pub use region::{Region, Span};
pub use stitch::{paste_region, slice_region};
