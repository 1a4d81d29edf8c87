//! Choosing and opening an executor.

use anyhow::{Context, Result};
use serde::Deserialize;
use tile_engine::Executor;

/// Which executor runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The CPU reference executor (plain Rust, the oracle).
    Cpu,
    /// The wgpu executor (any Vulkan, Metal, DX12 or GL adapter).
    Gpu,
}

/// Opens the executor the user asked for. `cpu_hint` says how this
/// command picks the CPU executor instead (`--backend cpu`, or a config
/// file's field), for the error when no GPU adapter opens.
pub fn executor(
    backend: Backend,
    adapter: Option<String>,
    no_autotune: bool,
    cpu_hint: &str,
) -> Result<Box<dyn Executor>> {
    Ok(match backend {
        Backend::Cpu => Box::new(tile_engine::cpu::CpuExecutor),
        Backend::Gpu => Box::new(
            tile_engine::gpu::GpuExecutor::new(tile_engine::gpu::GpuOptions {
                adapter,
                no_autotune,
                ..Default::default()
            })
            .with_context(|| format!("cannot open the GPU executor (try {cpu_hint})"))?,
        ),
    })
}
