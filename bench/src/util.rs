//! Helpers shared by the benchmarks: deterministic weights, medians, plot colours, output files.

use std::path::Path;

use anyhow::Context as _;
use tile_engine::Tensor;

/// A deterministic pseudo-random source (xorshift), enough for weights.
pub struct Rng(pub u64);

impl Rng {
    /// Next value, uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// A tensor of `shape` with values uniform in [-scale, scale).
    pub fn tensor(&mut self, shape: Vec<usize>, scale: f32) -> anyhow::Result<Tensor> {
        let n = shape.iter().product();
        Ok(Tensor::new(
            shape,
            (0..n).map(|_| self.next() * scale).collect(),
        )?)
    }
}

/// The median of `v` (the upper one for an even count); 0 for an empty `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Series colours of the SVG plots.
pub const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// Writes `dir/stem.json` (pretty) and `dir/stem.svg`, creating `dir`.
pub fn write_report(
    dir: &Path,
    stem: &str,
    json: &impl serde::Serialize,
    svg: &svg::Document,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let jp = dir.join(format!("{stem}.json"));
    std::fs::write(&jp, serde_json::to_string_pretty(json)?)
        .with_context(|| format!("writing {}", jp.display()))?;
    let sp = dir.join(format!("{stem}.svg"));
    svg::save(&sp, svg).with_context(|| format!("writing {}", sp.display()))?;
    println!("\nwrote {} and {}", jp.display(), sp.display());
    Ok(())
}

/// Parses one benchmark's flags (`argv` without the program name), as clap
/// does for the binary: for tests of a subcommand's `Args`.
#[cfg(test)]
pub fn parse_args<A: clap::Args>(argv: &[&str]) -> Result<A, clap::Error> {
    let cmd = A::augment_args(clap::Command::new("bench"));
    let m = cmd.try_get_matches_from(std::iter::once("bench").chain(argv.iter().copied()))?;
    <A as clap::FromArgMatches>::from_arg_matches(&m)
}
