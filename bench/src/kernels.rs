//! `cargo run -p bench --release -- kernels`.

/// Runs the kernels benchmark.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the kernels benchmark is not implemented yet")
}
