//! `cargo run -p bench --release -- cluster`.

/// Runs the cluster benchmark.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the cluster benchmark is not implemented yet")
}
