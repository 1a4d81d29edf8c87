//! `tessera demo`: the embedded default model, run whole and tile by tile.
//!
//! The three-tier cluster (daemons over QUIC, planner, link emulator) is not
//! wired into the demo yet; until it is, the demo runs everything in this
//! process and says so. What it shows is real: the tiled runs are checked
//! bit for bit against the untiled run, and the output against the model
//! authors' reference image.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tile_engine::tiling::Grid;
use tile_engine::{Executor, Tensor, default_model};

use crate::{Backend, infer};

const OUT_DIR: &str = "out";

/// Runs the demo and prints what happened.
pub fn demo() -> Result<()> {
    let input = default_model::png_to_tensor(default_model::fixture_png())?;
    let [_, _, h, w] = input.shape() else {
        anyhow::bail!("embedded fixture has shape {:?}", input.shape());
    };
    let mut graph = default_model::graph([*h, *w])?;
    tile_engine::passes::optimize(&mut graph)?;
    println!("tessera demo — single process (the three-tier cluster is not wired in yet)");
    println!(
        "model: UpscalerJS default ×2 super-resolution (embedded), {} ops, {:.2} GFLOP per {}×{} image",
        graph.nodes.len(),
        graph.total_flops() as f64 / 1e9,
        h,
        w
    );

    let exec: Box<dyn Executor> = match infer::executor(Backend::Gpu, None, false) {
        Ok(e) => e,
        Err(e) => {
            println!("no usable GPU adapter ({e:#}); using the CPU reference executor");
            infer::executor(Backend::Cpu, None, false)?
        }
    };
    println!("executor: {}", exec.name());

    let grids = ["1x1", "2x2", "3x3"];
    let bar = ProgressBar::new(grids.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let mut runs: Vec<(&str, Tensor, Duration)> = Vec::new();
    for g in grids {
        bar.set_message(format!("grid {g}"));
        let grid = Grid::parse(g)?;
        let started = Instant::now();
        let out = infer::run_graph(exec.as_ref(), &graph, input.clone(), &grid, None)?;
        runs.push((g, out, started.elapsed()));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let (_, untiled, _) = &runs[0];
    println!("\n{:<6} {:>10} {:>22}", "grid", "time", "equals untiled");
    for (g, out, t) in &runs {
        let same = bits(out) == bits(untiled);
        println!(
            "{:<6} {:>8.1} ms {:>22}",
            g,
            t.as_secs_f64() * 1e3,
            if same { "yes, bit for bit" } else { "NO" }
        );
        anyhow::ensure!(same, "grid {g} changed the output: tiling is broken");
    }

    let png = default_model::tensor_to_png(untiled)?;
    let (_, _, ours) = default_model::decode_rgb8(&png)?;
    let (_, _, theirs) = default_model::decode_rgb8(default_model::reference_png())?;
    let diffs: Vec<u8> = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let within1 = diffs.iter().filter(|&&d| d <= 1).count() as f64 / diffs.len().max(1) as f64;
    let max = diffs.iter().copied().max().unwrap_or(0);
    println!(
        "\nagainst the model authors' result.png: {:.2}% of pixel values within ±1, max difference {max}",
        within1 * 100.0
    );

    std::fs::create_dir_all(OUT_DIR).with_context(|| format!("cannot create {OUT_DIR}/"))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = Path::new(OUT_DIR).join(name);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
    };
    write("input.png", default_model::fixture_png())?;
    write("output.png", &png)?;
    println!(
        "wrote {OUT_DIR}/input.png ({w}×{h}) and {OUT_DIR}/output.png ({}×{})",
        2 * w,
        2 * h
    );
    Ok(())
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}
