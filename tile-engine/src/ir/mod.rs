//! The model IR: a DAG of ops over float32 tensors with static shapes.
//!
//! Feature maps are NCHW. Weights live inside the ops that own them (a conv
//! holds its kernel), so executors and the tile geometry never look a weight
//! up by name; other constant operands (a per-channel scale for a broadcast
//! `Mul`) are graph constants referenced by [`ValueId`].

mod cost;
mod graph;
mod op;
mod shape;

pub use cost::{OpClass, OpCost};
pub use graph::{Graph, Node, NodeId, Value, ValueId};
pub use op::{
    Activation, BinaryKind, BorderMode, Conv, ConvTranspose, CoordTransform, DepthToSpaceMode,
    NearestMode, Op, Pool, PoolKind, ReduceKind, ResizeMode,
};
pub(crate) use op::{max_nan, min_nan};
pub use shape::{broadcast, check_explicit, infer, window_out};

/// Largest spatial size, pad, stride, dilation, kernel or factor an importer
/// accepts from a model file: keeps all shape arithmetic far from overflow.
pub const MAX_DIM: usize = 1 << 24;
