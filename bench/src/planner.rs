//! `cargo run -p bench --release -- planner`.

/// Runs the planner benchmark.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the planner benchmark is not implemented yet")
}
