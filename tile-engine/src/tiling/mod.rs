//! Tile geometry: receptive fields, halos, grids with shares, fused-block choice, tiled execution.

mod axis;
mod block;
mod exec;
mod fusion;
mod grid;
mod plan;
mod region;
mod stitch;

pub use block::{Block, is_tileable};
pub use exec::{TiledOptions, run_segments, run_tiled};
pub use fusion::{
    BlockReport, DEFAULT_MAX_HALO_OVERHEAD, FusionOptions, Segment, choose_blocks, halo_overhead,
    report_block,
};
pub use grid::{Grid, split};
pub use plan::{Tile, halo_flops, peak_live_bytes, plan_tile, plan_tiles};
pub use region::{Region, Span};
pub use stitch::{paste_region, slice_region};
