//! The engine of tessera: model IR, importers, tile geometry, and the CPU
//! reference and wgpu executors that run fused blocks on tiles.
//!
//! Everything here is single-process and free of networking: the transport
//! and planner crates build on these types.

pub mod cpu;
pub mod default_model;
pub mod error;
pub mod gpu;
pub mod ir;
pub mod onnx;
pub mod passes;
pub mod tensor;
pub mod tfjs;
pub mod tiling;

pub use error::{Error, Result};
pub use ir::{Graph, Node, NodeId, Op, ValueId};
pub use tensor::Tensor;

/// Runs graphs: implemented by the CPU reference executor and the wgpu executor,
/// so tiling and the daemons drive either through one interface.
pub trait Executor {
    /// Short name for reports ("cpu", or the GPU adapter's name).
    fn name(&self) -> String;
    /// Longer description for a user (a GPU executor adds its backend and driver).
    fn describe(&self) -> String {
        self.name()
    }
    /// Runs `graph` with one tensor per graph input, returning one tensor per graph output.
    ///
    /// A node keeps its per-layer choices (kernel variant, accumulation order)
    /// when it is run again inside a tile's copy of the graph: same node name
    /// and op parameters, only spatial extent and pads differ. That is what
    /// makes tiled output bit-identical to untiled output.
    fn run(&self, graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>>;

    /// Like [`Executor::run`], giving up with [`Error::Cancelled`] where
    /// `keep_going` says false. An executor without a point to stop at
    /// between ops (a GPU run is one submission) runs to the end.
    fn run_until(
        &self,
        graph: &Graph,
        inputs: &[Tensor],
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Vec<Tensor>> {
        let _ = keep_going;
        self.run(graph, inputs)
    }
}
