//! The tessera library behind the binary: model loading, tensor files, the
//! cluster (node daemon, coordinator, trace replay, the demo's harness).
//! The binary (`main.rs`) is a thin CLI over it; the benchmarks reuse it.

pub mod cluster;
pub mod console;
pub mod exec;
pub mod model;
pub mod plan;
pub mod tensor_io;

pub use exec::Backend;
