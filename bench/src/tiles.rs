//! `cargo run -p bench --release -- tiles`.

/// Runs the tiles benchmark.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the tiles benchmark is not implemented yet")
}
