//! IR rewrite passes: BatchNorm (ChannelAffine) and per-channel constant
//! folding into convolutions, identity removal, pixel-shuffle chains as
//! depth-to-space, activation and residual-Add fusion.
//!
//! Each pass keeps the graph valid (topological, every value produced once)
//! and keeps graph output values (and so their names) in place. Fusions are
//! bit-exact; folding scales into weights changes rounding slightly.

mod fold;
mod fuse;
mod rewrite;
mod shuffle;

use crate::error::Result;
use crate::ir::Graph;

pub use fold::{fold_channel_affine, fold_per_channel_binary};
pub use fuse::{fuse_activations, fuse_residual_add, remove_identities};
pub use shuffle::depth_to_space_chains;

/// Runs every pass in order, then drops what no output depends on.
pub fn optimize(graph: &mut Graph) -> Result<()> {
    graph.validate()?;
    fold_channel_affine(graph)?;
    fold_per_channel_binary(graph)?;
    remove_identities(graph)?;
    depth_to_space_chains(graph)?;
    fuse_activations(graph)?;
    fuse_residual_add(graph)?;
    graph.prune();
    graph.validate()
}
