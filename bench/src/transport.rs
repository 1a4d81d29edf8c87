//! `cargo run -p bench --release -- transport`.

/// Runs the transport benchmark.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the transport benchmark is not implemented yet")
}
