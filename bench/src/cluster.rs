//! `cargo run -p bench --release -- cluster [--quick] [--reps N] [--backend cpu|gpu] [--model default|vgg|resnet] [--size N] [--out DIR]`
//!
//! End to end on a real loopback cluster (1 device + 4 edge + 1 cloud node
//! daemons started from this binary, links emulated with the demo's
//! profile): for the default model, a VGG-like and a ResNet-like model,
//! runs the single-edge-node, every two-tier split (the fastest measured
//! of them and the single edge node, itself a split where the device only
//! uploads, is the baseline), cloud-only and tessera plans (with 1, 2 and 4 edge
//! nodes) side by side, and reports the replayed
//! (dedicated-hardware) makespan, speed-ups, backbone bytes and the
//! planner's prediction error. Every plan's output is checked bit for bit
//! against the single-node run. Each plan runs `--reps` times (default
//! [`experiment::MEASURED_RUNS`]); a plan with the same jobs as an earlier
//! one is measured once.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use planner::Tier;
use serde::Serialize;
use tessera::Backend;
use tessera::cluster::bundle::Bundle;
use tessera::cluster::coordinator::{Coordinator, ExecPlan, LoadedModel};
use tessera::cluster::experiment::{self, EXTRA_WARMUPS, MEASURED_RUNS};
use tessera::cluster::harness::{HarnessOptions, LocalCluster};
use tile_engine::Tensor;

use crate::onnx_models;

const CLUSTER: &str = include_str!("../../examples/cluster.toml");

#[derive(Serialize)]
struct Row {
    model: String,
    plan: String,
    edges: usize,
    replayed_ms: f64,
    runs_median_ms: f64,
    wall_ms: f64,
    predicted_ms: Option<f64>,
    prediction_error_pct: Option<f64>,
    backbone_bytes: u64,
    speedup_vs_single: f64,
    speedup_vs_two_tier: f64,
    tiles: String,
    /// Each stage's replayed time, with the planner's prediction for blocks.
    stages: String,
    bit_identical: bool,
    /// The earlier plan with the same jobs, whose runs this row reports.
    same_jobs_as: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bits(t: &[Tensor]) -> Vec<u32> {
    t.iter()
        .flat_map(|t| t.data().iter().map(|v| v.to_bits()))
        .collect()
}

fn image(hw: usize) -> Result<Tensor> {
    let n = 3 * hw * hw;
    let data = (0..n).map(|i| ((i * 37 % 251) as f32) / 255.0).collect();
    Ok(Tensor::new(vec![1, 3, hw, hw], data)?)
}

/// The plans for one model: baselines on the whole cluster, tessera on 1, 2 and 4 edge nodes.
fn plans(c: &Coordinator, m: &LoadedModel) -> Result<Vec<(usize, ExecPlan)>> {
    let all = experiment::comparison_plans(c, m)?;
    let device = c.cluster.tier_nodes(Tier::Device);
    let cloud = c.cluster.tier_nodes(Tier::Cloud);
    let edges = c.cluster.tier_nodes(Tier::Edge);
    let mut out = Vec::new();
    for k in [1usize, 2] {
        let nodes: Vec<usize> = device
            .iter()
            .chain(&edges[..k.min(edges.len())])
            .chain(&cloud)
            .copied()
            .collect();
        let (report, map) = experiment::plan_on(c, m, &nodes)?;
        out.push((
            k,
            ExecPlan::from_prediction(
                &format!("tessera, {k} edge"),
                &m.graph,
                &report.best.prediction,
                &report.topology,
                &map,
            ),
        ));
    }
    for (i, mut p) in all.into_iter().enumerate() {
        if i == 0 {
            p.name = format!("tessera, {} edge", edges.len());
            out.push((edges.len(), p));
        } else {
            out.push((1, p));
        }
    }
    Ok(out)
}

/// Arguments of `bench cluster`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// One measured run per plan and no extra warm-up runs.
    #[arg(long)]
    quick: bool,
    /// Measured runs per plan (default: as many as the demo, 1 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    reps: Option<u64>,
    /// Executor of the node daemons (default: the GPU if an adapter is found).
    #[arg(long, value_enum, ignore_case = true)]
    backend: Option<Backend>,
    /// Only this model.
    #[arg(long, value_enum, ignore_case = true)]
    model: Option<ModelArg>,
    /// Input side N (3×N×N) of every model, 256 as in `tessera demo`: the
    /// default model's 128×128 sample image is resized to it (halo overhead
    /// shrinks as maps grow). 32 to 1024.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(32..=1024))]
    size: u64,
    /// Folder for cluster.json and cluster.svg.
    #[arg(long, value_name = "DIR", default_value = "out/bench-cluster")]
    out: PathBuf,
}

/// `--model` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ModelArg {
    /// The embedded RDN ×2 super-resolution model.
    Default,
    /// The VGG-16-like model.
    Vgg,
    /// The ResNet-like model.
    Resnet,
}

/// Runs the cluster benchmark.
pub fn run(args: Args) -> Result<()> {
    let quick = args.quick;
    let out = args.out;
    let only = args.model.map(|m| match m {
        ModelArg::Default => "default",
        ModelArg::Vgg => "vgg",
        ModelArg::Resnet => "resnet",
    });
    let reps = args.reps.map(|r| r as usize);
    let size = usize::try_from(args.size)?;
    let side = i64::try_from(args.size)?;
    let backend = args.backend.unwrap_or_else(|| {
        if tessera::exec::executor(Backend::Gpu, None, true, "--backend cpu").is_ok() {
            Backend::Gpu
        } else {
            Backend::Cpu
        }
    });
    std::fs::create_dir_all(&out).with_context(|| format!("--out {}", out.display()))?;
    let reps = reps.unwrap_or(if quick { 1 } else { MEASURED_RUNS });
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let cluster = toml::from_str(CLUSTER).context("embedded cluster file")?;
        let local = LocalCluster::start(
            cluster,
            HarnessOptions {
                exe: std::env::current_exe()?,
                dir: out.join("cluster"),
                backend,
                compute_lock: true,
                metrics: false,
            },
        )
        .await?;
        let mut coord = Coordinator::connect(
            local.cluster.clone(),
            local.coordinator_endpoint()?,
            local.addrs.clone(),
        )
        .await?;
        // Compute is serialised across the daemons by the compute lock.
        coord.steal = false;
        let executor = coord.peer(0).map(|p| p.executor()).unwrap_or_default();
        println!("cluster benchmark: 1 device + 4 edge + 1 cloud daemons, {executor}, demo link profile, {reps} measured run(s) per plan; replayed = each job at its median duration over the runs, runs' med. = median of the runs' replayed makespans");
        let models_dir = out.join("models");
        let vgg = models_dir.join("vgg_like.onnx");
        let resnet = models_dir.join("resnet_like.onnx");
        // Only the models benchmarked are written (10 MB of ONNX at 128²).
        let wanted = |name: &str| only.is_none_or(|o| o == name);
        if wanted("vgg") || wanted("resnet") {
            std::fs::create_dir_all(&models_dir)?;
        }
        if wanted("vgg") {
            onnx_models::write(&onnx_models::vgg_like(side), &vgg)?;
        }
        if wanted("resnet") {
            onnx_models::write(&onnx_models::resnet_like(side), &resnet)?;
        }
        let models: Vec<(String, String, Tensor)> = vec![
            (format!("default (RDN ×2, {size}²)"), "default".into(), tile_engine::default_model::sample_input(size)?),
            (format!("VGG-like ({size}²)"), vgg.display().to_string(), image(size)?),
            (format!("ResNet-like ({size}²)"), resnet.display().to_string(), image(size)?),
        ]
        .into_iter()
        .filter(|(label, _, _)| only.is_none_or(|o| label.to_lowercase().starts_with(o)))
        .collect();

        let mut rows = Vec::new();
        let mut request = 0;
        for (label, spec, input) in &models {
            let bundle = Bundle::from_spec(spec, input.shape())?;
            let mut m = coord.load_model(&bundle).await?;
            m.expect_inputs(&[input]);
            // Each model starts from the calibration, as a fresh deployment would.
            coord.reset_estimates()?;
            // Warm-up round: pipelines compile, the profiler learns the model;
            // then tessera's plans re-made from what it saw and run again
            // (one tile's span is noisy), as the demo does.
            let warm: Vec<_> = plans(&coord, &m)?.into_iter().map(|(_, p)| p).collect();
            let tessera = |p: &ExecPlan| p.name.starts_with("tessera");
            experiment::measure(&coord, &m, input, &warm, 1, &mut request, |k| tessera(&warm[k]), |_, _| {}).await?;
            let extra_warm = if quick { 0 } else { EXTRA_WARMUPS };
            for _ in 0..extra_warm {
                for (_, p) in plans(&coord, &m)?.into_iter().filter(|(_, p)| tessera(p)) {
                    request += 1;
                    experiment::run_plan(&coord, &m, input, &p, request, true).await?;
                }
            }
            let plans = plans(&coord, &m)?;
            // Plans with the same jobs as an earlier one are measured once.
            let execs: Vec<_> = plans.iter().map(|(_, p)| p.clone()).collect();
            let twins = experiment::twins(&execs);
            let runs = experiment::measure(&coord, &m, input, &execs, reps, &mut request, |k| tessera(&execs[k]), |_, _| {}).await?;
            let runs_median = |k: usize| median(runs[k].iter().map(|r| r.replay.makespan_s).collect());
            // Each job at its median duration over the runs (the noise of
            // this shared machine would otherwise favour plans of one job).
            let replays: Vec<_> = runs.iter().map(|r| experiment::median_job_replay(&coord, r)).collect();
            let med = |k: usize| replays[k].as_ref().map_or_else(|| runs_median(k), |r| r.makespan_s);
            let idx = |prefix: &str| plans.iter().position(|(_, p)| p.name.starts_with(prefix));
            let single = idx("single").map_or(f64::NAN, med);
            // The best two-tier split is the fastest measured one; the whole
            // model on the edge node (the device only uploads) is one too.
            let two = (0..plans.len())
                .filter(|&k| plans[k].1.name.starts_with(experiment::TWO_TIER_PREFIX))
                .map(med)
                .fold(single, f64::min);
            let reference = idx("single").and_then(|k| runs[k].first()).map(|r| bits(&r.outputs));
            for (k, (edges, p)) in plans.iter().enumerate() {
                let replayed = med(k);
                let r0 = &runs[k][0];
                rows.push(Row {
                    model: label.to_string(),
                    plan: p.name.clone(),
                    edges: *edges,
                    replayed_ms: replayed * 1e3,
                    runs_median_ms: runs_median(k) * 1e3,
                    wall_ms: median(runs[k].iter().map(|r| r.wall_s).collect()) * 1e3,
                    predicted_ms: p.predicted_s.map(|s| s * 1e3),
                    prediction_error_pct: p.predicted_s.map(|s| (s - replayed) / replayed * 100.0),
                    backbone_bytes: r0.backbone_bytes(&coord),
                    speedup_vs_single: single / replayed,
                    speedup_vs_two_tier: two / replayed,
                    tiles: experiment::shares_text(&coord, p),
                    stages: replays[k].as_ref().map_or_else(String::new, |r| experiment::stages_text(r, p)),
                    bit_identical: reference.as_ref().is_some_and(|b| runs[k].iter().all(|r| &bits(&r.outputs) == b)),
                    same_jobs_as: twins[k].map(|j| plans[j].1.name.clone()),
                });
            }
        }
        coord.shutdown().await;
        drop(local);
        print_table(&rows);
        println!("\nstages of each tessera plan: replayed (predicted) ms");
        for r in rows.iter().filter(|r| r.plan.starts_with("tessera")) {
            println!("  {:<24} {:<16} {}", r.model, r.plan, r.stages);
        }
        if rows.iter().any(|r| !r.bit_identical) {
            bail!("a plan's output differs from the single-node run");
        }
        std::fs::write(out.join("cluster.json"), serde_json::to_vec_pretty(&rows)?)?;
        std::fs::write(out.join("cluster.svg"), svg(&rows))?;
        println!("wrote {0}/cluster.json and {0}/cluster.svg", out.display());
        Ok(())
    })
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<24} {:<28} {:>11} {:>11} {:>9} {:>12} {:>7} {:>9} {:>9} {:>12}",
        "model",
        "plan",
        "replayed ms",
        "runs' med.",
        "wall ms",
        "predicted ms",
        "error",
        "vs single",
        "vs 2-tier",
        "backbone"
    );
    for r in rows {
        println!(
            "{:<24} {:<28} {:>11.1} {:>11.1} {:>9.1} {:>12} {:>7} {:>8.2}× {:>8.2}× {:>12}{}",
            r.model,
            r.plan,
            r.replayed_ms,
            r.runs_median_ms,
            r.wall_ms,
            r.predicted_ms.map_or("-".into(), |v| format!("{v:.1}")),
            r.prediction_error_pct
                .map_or("-".into(), |v| format!("{v:+.0}%")),
            r.speedup_vs_single,
            r.speedup_vs_two_tier,
            tessera::cluster::trace::fmt_bytes(r.backbone_bytes),
            r.same_jobs_as
                .as_ref()
                .map_or(String::new(), |j| format!("  (= {j}, measured once)")),
        );
    }
}

fn svg(rows: &[Row]) -> String {
    use svg::Document;
    use svg::node::element::{Rectangle, Text};
    let (left, width, bar) = (330.0, 520.0, 16.0);
    let max = rows.iter().map(|r| r.replayed_ms).fold(1e-9, f64::max);
    let mut doc = Document::new();
    let mut y = 30.0;
    doc = doc.add(
        Text::new("replayed makespan per plan (ms, dedicated hardware)")
            .set("x", 10)
            .set("y", 18)
            .set("font-family", "sans-serif")
            .set("font-size", 14),
    );
    let mut last = String::new();
    for r in rows {
        if r.model != last {
            y += 8.0;
            doc = doc.add(
                Text::new(r.model.clone())
                    .set("x", 10)
                    .set("y", y + 12.0)
                    .set("font-family", "sans-serif")
                    .set("font-size", 12)
                    .set("font-weight", "bold"),
            );
            y += bar + 2.0;
            last = r.model.clone();
        }
        let w = r.replayed_ms / max * width;
        doc = doc
            .add(
                Text::new(r.plan.clone())
                    .set("x", 20)
                    .set("y", y + 12.0)
                    .set("font-family", "sans-serif")
                    .set("font-size", 11),
            )
            .add(
                Rectangle::new()
                    .set("x", left)
                    .set("y", y + 2.0)
                    .set("width", w.max(1.0))
                    .set("height", bar - 4.0)
                    .set(
                        "fill",
                        if r.plan.starts_with("tessera") {
                            "#3d7be8"
                        } else {
                            "#999"
                        },
                    ),
            )
            .add(
                Text::new(format!("{:.0} ms", r.replayed_ms))
                    .set("x", left + w + 4.0)
                    .set("y", y + 12.0)
                    .set("font-family", "sans-serif")
                    .set("font-size", 10),
            );
        y += bar + 2.0;
    }
    doc.set("viewBox", (0, 0, left + width + 80.0, y + 10.0))
        .set("width", left + width + 80.0)
        .set("height", y + 10.0)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::{Args, Backend, ModelArg};
    use crate::util::parse_args;

    #[test]
    fn flags_land_in_their_fields_whatever_their_case() {
        let a: Args = parse_args(&["--model", "ResNet", "--backend", "GPU", "--reps", "3"])
            .expect("valid flags");
        assert!(matches!(a.model, Some(ModelArg::Resnet)), "{:?}", a.model);
        assert!(matches!(a.backend, Some(Backend::Gpu)), "{:?}", a.backend);
        assert_eq!(a.reps, Some(3));
        assert!(!a.quick);
        assert_eq!(a.out, std::path::Path::new("out/bench-cluster"));
    }
}
