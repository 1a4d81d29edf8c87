//! `cargo run -p bench --release -- kernels [--quick] [--out DIR] [--reps N] [--only TEXT] [--adapter NAME] [--backend B]`
//!
//! GFLOP/s of the GPU kernels on real layer shapes (VGG-16, ResNet-50,
//! MobileNetV2, the default model's 5×5: 3×3, 5×5, 1×1 and depthwise convs,
//! a max-pool, a dense layer),
//! spatially scaled down so a whole run takes minutes on lavapipe. Each layer
//! is timed with the autotuned kernel, with the naive one-output-per-invocation
//! conv kernel, and on the CPU reference executor, all in the same run, in a
//! benchncnn-like table. Then the cold start of two models: the first
//! inference of a fresh executor with an empty autotune cache (shader
//! compilation, weight upload, tuning), the first inference of a second
//! executor with that cache warm, and the steady state.
//!
//! GPU layer figures are kernel time: `time_node` runs one warm-up dispatch,
//! then n dispatches in one submission (n sized so one sample takes about
//! 0.15 s), wall-clock around submit + wait, divided by n. CPU figures are
//! whole `cpu::run` calls of the same one-layer graph (after one warm-up run,
//! which is also the oracle the GPU outputs are checked against). Every
//! figure is the median of `--reps` samples (default 5, 3 with `--quick`),
//! taken round robin over the CPU and every kernel candidate of the layer.
//! `--only TEXT` runs just the layers whose "model layer" contains TEXT
//! (and no cold start); `--cold-only` just the cold start.
//! Writes `DIR/kernels.json` and `DIR/kernels.svg` (default `out/bench-kernels`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use svg::Document;
use svg::node::element::{Rectangle, Text};
use tile_engine::gpu::{ConvChoice, ConvVariant, GpuExecutor, GpuOptions};
use tile_engine::ir::{Activation, Conv, Graph, Op, Pool, PoolKind};
use tile_engine::{Executor, Tensor, cpu};

use crate::util::{COLORS, Rng, median, write_report};

/// Seconds one GPU sample should take, so short kernels are not lost in submit overhead.
const SAMPLE_S: f64 = 0.15;

/// What one benchmarked layer computes.
#[derive(Clone, Copy)]
enum Kind {
    /// Conv `c -> m`, `k×k`, stride `s`, `group` groups, same padding, ReLU.
    Conv {
        c: usize,
        m: usize,
        k: usize,
        s: usize,
        group: usize,
    },
    /// Max-pool `k×k` stride `s` over `c` channels, padding `k/2`.
    MaxPool { c: usize, k: usize, s: usize },
    /// Dense `[batch, k] x [k, m]`.
    Dense { k: usize, m: usize, batch: usize },
}

/// One row of the layer table.
struct Spec {
    model: &'static str,
    layer: &'static str,
    kind: Kind,
    /// Input height = width (ignored for dense).
    hw: usize,
    /// Part of the `--quick` subset.
    quick: bool,
}

/// The layers, with the spatial size they have in the full model at 224×224
/// in the name when it was scaled down here.
fn specs() -> Vec<Spec> {
    let conv = |c, m, k, s, group| Kind::Conv { c, m, k, s, group };
    let spec = |model, layer, kind, hw, quick| Spec {
        model,
        layer,
        kind,
        hw,
        quick,
    };
    vec![
        spec(
            "rdn-x2",
            "UPN1 5x5 64->64 (@128)",
            conv(64, 64, 5, 1, 1),
            64,
            false,
        ),
        spec(
            "vgg16",
            "conv3_2 3x3 128->128 (@56)",
            conv(128, 128, 3, 1, 1),
            28,
            false,
        ),
        spec(
            "vgg16",
            "conv5_2 3x3 512->512",
            conv(512, 512, 3, 1, 1),
            14,
            false,
        ),
        spec(
            "resnet50",
            "conv1 7x7/2 3->64 (@224)",
            conv(3, 64, 7, 2, 1),
            112,
            false,
        ),
        // Unscaled: the lavapipe target layer (3x3 conv 64->64 at 56x56).
        spec(
            "resnet50",
            "res2a 3x3 64->64 @56 (target)",
            conv(64, 64, 3, 1, 1),
            56,
            true,
        ),
        spec(
            "resnet50",
            "res2a 1x1 64->256",
            conv(64, 256, 1, 1, 1),
            56,
            true,
        ),
        spec(
            "resnet50",
            "res2b 1x1 256->64",
            conv(256, 64, 1, 1, 1),
            56,
            false,
        ),
        spec(
            "resnet50",
            "res3a 3x3/2 128->128 (@56)",
            conv(128, 128, 3, 2, 1),
            56,
            false,
        ),
        spec(
            "resnet50",
            "pool1 max 3x3/2 64 (@112)",
            Kind::MaxPool { c: 64, k: 3, s: 2 },
            56,
            true,
        ),
        spec(
            "resnet50",
            "fc 2048->1000",
            Kind::Dense {
                k: 2048,
                m: 1000,
                batch: 1,
            },
            0,
            true,
        ),
        spec(
            "mobilenetv2",
            "b2 expand 1x1 24->144",
            conv(24, 144, 1, 1, 1),
            56,
            false,
        ),
        spec(
            "mobilenetv2",
            "b2 dw 3x3 144",
            conv(144, 144, 3, 1, 144),
            56,
            true,
        ),
        spec(
            "mobilenetv2",
            "b2 project 1x1 144->24",
            conv(144, 24, 1, 1, 1),
            56,
            false,
        ),
        spec(
            "mobilenetv2",
            "b1 dw 3x3/2 96 (@112)",
            conv(96, 96, 3, 2, 96),
            56,
            false,
        ),
    ]
}

/// A one-node graph for `spec`, with deterministic random weights.
fn layer_graph(spec: &Spec, rng: &mut Rng) -> anyhow::Result<Graph> {
    let (op, input) = match spec.kind {
        Kind::Conv { c, m, k, s, group } => {
            // He-style scale keeps outputs of order one.
            let scale = (6.0 / (c / group * k * k) as f32).sqrt();
            let op = Op::Conv(Conv {
                weight: Arc::new(rng.tensor(vec![m, c / group, k, k], scale)?),
                bias: Some(Arc::new((0..m).map(|_| rng.next() * 0.1).collect())),
                strides: [s, s],
                pads: [k / 2; 4],
                dilations: [1, 1],
                group,
                activation: Activation::Relu,
            });
            (op, vec![1, c, spec.hw, spec.hw])
        }
        Kind::MaxPool { c, k, s } => {
            let op = Op::Pool(Pool {
                kind: PoolKind::Max,
                kernel: [k, k],
                strides: [s, s],
                pads: [k / 2; 4],
                dilations: [1, 1],
                ceil_mode: false,
            });
            (op, vec![1, c, spec.hw, spec.hw])
        }
        Kind::Dense { k, m, batch } => {
            let op = Op::Dense {
                weight: Arc::new(rng.tensor(vec![k, m], (3.0 / k as f32).sqrt())?),
                bias: Some(Arc::new((0..m).map(|_| rng.next() * 0.1).collect())),
                activation: Activation::Identity,
            };
            (op, vec![batch, k])
        }
    };
    let mut g = Graph::default();
    let x = g.add_value("x", input);
    g.inputs.push(x);
    let y = g.add_node(spec.layer, op, vec![x], "y")?;
    g.outputs.push(y);
    g.validate()?;
    Ok(g)
}

/// One row of the table.
#[derive(Serialize)]
struct Row {
    model: String,
    layer: String,
    input: Vec<usize>,
    output: Vec<usize>,
    mflop: f64,
    /// The kernel the autotuner chose (the op name for non-conv layers).
    kernel: String,
    /// Wall-clock time of autotuning this layer (0 for non-conv layers).
    tune_ms: f64,
    tuned_ms: f64,
    tuned_gflops: f64,
    naive_ms: Option<f64>,
    naive_gflops: Option<f64>,
    cpu_ms: f64,
    cpu_gflops: f64,
    /// naive time / tuned time.
    tuned_vs_naive: Option<f64>,
    /// CPU time / tuned time.
    tuned_vs_cpu: f64,
    /// Largest |GPU - CPU| over the output, relative to max |CPU|.
    rel_err: f64,
    /// Every conv kernel candidate, median time.
    candidates: Vec<Candidate>,
}

/// One conv kernel candidate of a layer.
#[derive(Serialize)]
struct Candidate {
    kernel: String,
    ms: f64,
    gflops: f64,
    dispatches_per_sample: u32,
    /// The autotuner's choice.
    chosen: bool,
}

/// The naive one-output-per-invocation conv kernel.
const NAIVE: ConvChoice = ConvChoice {
    variant: ConvVariant::Naive,
    wg: 64,
};

fn label(c: ConvChoice) -> String {
    format!("{:?}/wg{}", c.variant, c.wg)
}

/// Cold start of one model.
#[derive(Serialize, Deserialize)]
struct ColdStart {
    model: String,
    /// Mesa's on-disk shader cache: "on" or "off" (`MESA_SHADER_CACHE_DISABLE`).
    shader_cache: String,
    input: Vec<usize>,
    nodes: usize,
    convs: usize,
    mflop: f64,
    /// `GpuExecutor::new` (adapter, device, kernel layout).
    executor_new_ms: f64,
    /// First run of a fresh executor, autotune cache empty: shader
    /// compilation, weight upload, tuning of every conv layer.
    first_run_empty_cache_ms: f64,
    /// `GpuExecutor::new` of the second executor.
    executor_new_warm_ms: f64,
    /// First run of a second executor with the cache written by the first
    /// (shader compilation and weight upload again, no tuning).
    first_run_warm_cache_ms: f64,
    /// Median run once pipelines, weights and choices are in place.
    steady_ms: f64,
    /// Pipelines compiled by the first executor.
    pipelines: usize,
    /// Weight buffers uploaded by the first executor.
    weight_buffers: usize,
    /// Layer choices in the autotune cache after the first run.
    cached_choices: usize,
    /// The second executor's output equals the first's bit for bit.
    warm_output_identical: bool,
    /// Median CPU reference run, for scale.
    cpu_ms: f64,
    /// Largest |GPU - CPU| over the output, relative to max |CPU|.
    rel_err: f64,
}

#[derive(Serialize)]
struct Report {
    command: String,
    adapter: String,
    adapter_name: String,
    backend: String,
    driver: String,
    driver_info: String,
    mesa_shader_cache_disable: Option<String>,
    /// `/proc/loadavg` before and after the run: lavapipe shares the CPU, so load skews it.
    loadavg: (String, String),
    reps: usize,
    quick: bool,
    layers: Vec<Row>,
    cold_start: Vec<ColdStart>,
}

/// Arguments of `bench kernels`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Fewer layers and samples.
    #[arg(long)]
    quick: bool,
    /// Only the cold start.
    #[arg(long)]
    cold_only: bool,
    /// Only the layers whose "model layer" contains TEXT (and no cold start).
    #[arg(long, value_name = "TEXT", conflicts_with = "cold_only")]
    only: Option<String>,
    /// Folder for kernels.json and kernels.svg.
    #[arg(long, value_name = "DIR", default_value = "out/bench-kernels")]
    out: PathBuf,
    /// Samples per figure (default 5, 3 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    reps: Option<u64>,
    /// Adapter whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// wgpu backend (vulkan, gl, metal, dx12).
    #[arg(long, value_name = "B")]
    backend: Option<String>,
}

impl Args {
    fn options(&self) -> GpuOptions {
        GpuOptions {
            adapter: self.adapter.clone(),
            backend: self.backend.clone(),
            ..GpuOptions::default()
        }
    }
}

/// "off" when `MESA_SHADER_CACHE_DISABLE` disables Mesa's on-disk shader cache, else "on".
fn shader_cache_state() -> String {
    match std::env::var("MESA_SHADER_CACHE_DISABLE") {
        Ok(v) if v == "1" || v.eq_ignore_ascii_case("true") => "off".into(),
        _ => "on".into(),
    }
}

/// The cold start measured again in a child process with Mesa's on-disk
/// shader cache off (it is read at device creation, so it cannot be turned
/// off in this process), so the first-run figures include real shader compilation.
fn cold_start_without_shader_cache(a: &Args) -> anyhow::Result<Vec<ColdStart>> {
    let dir = a.out.join("no-shader-cache");
    let exe = std::env::current_exe().context("finding the bench executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["kernels", "--cold-only", "--out"])
        .arg(&dir)
        .env("MESA_SHADER_CACHE_DISABLE", "true");
    if a.quick {
        cmd.arg("--quick");
    }
    if let Some(r) = a.reps {
        cmd.args(["--reps", &r.to_string()]);
    }
    if let Some(ad) = &a.adapter {
        cmd.args(["--adapter", ad]);
    }
    if let Some(b) = &a.backend {
        cmd.args(["--backend", b]);
    }
    let out = cmd
        .output()
        .context("running the cold-start child process")?;
    anyhow::ensure!(
        out.status.success(),
        "cold-start child process failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let path = dir.join("kernels.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    #[derive(Deserialize)]
    struct Child {
        cold_start: Vec<ColdStart>,
    }
    let child: Child =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(child.cold_start)
}

/// The 1, 5 and 15 minute load averages ("?" where `/proc/loadavg` is missing).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn gflops(flops: u64, ms: f64) -> f64 {
    flops as f64 / (ms * 1e-3).max(1e-12) / 1e9
}

/// Largest |got - want| relative to max |want| (1 when the shapes differ).
fn rel_err(got: &[Tensor], want: &[Tensor]) -> f64 {
    if got.len() != want.len() || got.iter().zip(want).any(|(g, w)| g.shape() != w.shape()) {
        return 1.0;
    }
    let (mut diff, mut scale) = (0.0f64, 1e-6f64);
    for (g, w) in got.iter().zip(want) {
        for (&a, &b) in g.data().iter().zip(w.data()) {
            diff = diff.max(f64::from((a - b).abs()));
            scale = scale.max(f64::from(b.abs()));
        }
    }
    diff / scale
}

/// Dispatches per GPU sample of node 0 of `g` (with `conv` forced), so one
/// sample takes about [`SAMPLE_S`].
fn dispatches_per_sample(
    gpu: &GpuExecutor,
    g: &Graph,
    conv: Option<ConvChoice>,
) -> anyhow::Result<u32> {
    let probe = gpu.time_node(g, 0, conv, 1)?.as_secs_f64();
    Ok((SAMPLE_S / probe.max(1e-6)).clamp(1.0, 64.0) as u32)
}

/// Median wall-clock time (ms) of `f` over `reps` calls.
fn time_median<T>(reps: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<f64> {
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(ms(t.elapsed()));
    }
    Ok(median(v))
}

fn bench_layer(gpu: &GpuExecutor, spec: &Spec, rng: &mut Rng, reps: usize) -> anyhow::Result<Row> {
    let g = layer_graph(spec, rng)?;
    let node = &g.nodes[0];
    let flops = g.node_cost(0).flops;
    let input = [rng.tensor(g.shape(g.inputs[0]).to_vec(), 1.0)?];
    // The warm-up CPU run is also the oracle for the GPU kernels.
    let want = cpu::run(&g, &input)?;

    let t = Instant::now();
    let choice = gpu.conv_choice(&g, node)?;
    let tune_ms = ms(t.elapsed());
    let kernel = choice.map_or_else(|| node.op.name().to_string(), label);
    let mut err = rel_err(&gpu.run(&g, &input)?, &want);
    // Every candidate the autotuner considers is timed: the tuned and naive
    // figures are two of these, and the rest show whether the (quick,
    // two-dispatch) tuning picked the fastest. `None` is the executor's own
    // choice, for layers that are not convs.
    let variants: Vec<Option<ConvChoice>> = match &node.op {
        Op::Conv(c) => ConvChoice::candidates(c).into_iter().map(Some).collect(),
        _ => vec![None],
    };
    let mut dispatches = Vec::with_capacity(variants.len());
    for &v in &variants {
        if v.is_some() {
            err = err.max(rel_err(&gpu.run_with(&g, &input, v)?, &want));
        }
        dispatches.push(dispatches_per_sample(gpu, &g, v)?);
    }
    // Round robin over the CPU and every GPU variant, so load from other
    // processes on this shared machine falls on all of them alike.
    let mut cpu_samples = Vec::with_capacity(reps);
    let mut samples = vec![Vec::with_capacity(reps); variants.len()];
    for _ in 0..reps {
        let t = Instant::now();
        cpu::run(&g, &input)?;
        cpu_samples.push(ms(t.elapsed()));
        for ((&v, &n), out) in variants.iter().zip(&dispatches).zip(&mut samples) {
            out.push(ms(gpu.time_node(&g, 0, v, n)?));
        }
    }
    let cpu_ms = median(cpu_samples);
    let times: Vec<f64> = samples.into_iter().map(median).collect();
    let mut candidates = Vec::new();
    let (mut tuned_ms, mut naive_ms) = (times[0], None);
    for ((&v, &n), &t) in variants.iter().zip(&dispatches).zip(&times) {
        let Some(cand) = v else { continue };
        if Some(cand) == choice {
            tuned_ms = t;
        }
        if cand == NAIVE {
            naive_ms = Some(t);
        }
        candidates.push(Candidate {
            kernel: label(cand),
            ms: t,
            gflops: gflops(flops, t),
            dispatches_per_sample: n,
            chosen: Some(cand) == choice,
        });
    }
    anyhow::ensure!(
        choice.is_none() || candidates.iter().any(|c| c.chosen),
        "{} {}: the tuned kernel {kernel} is not among the candidates",
        spec.model,
        spec.layer
    );
    anyhow::ensure!(
        err < 1e-4,
        "{} {}: GPU output differs from the CPU reference (relative error {err:.2e})",
        spec.model,
        spec.layer
    );
    Ok(Row {
        model: spec.model.into(),
        layer: spec.layer.into(),
        input: g.shape(g.inputs[0]).to_vec(),
        output: g.shape(g.outputs[0]).to_vec(),
        mflop: flops as f64 / 1e6,
        kernel,
        tune_ms: if choice.is_some() { tune_ms } else { 0.0 },
        tuned_ms,
        tuned_gflops: gflops(flops, tuned_ms),
        naive_ms,
        naive_gflops: naive_ms.map(|n| gflops(flops, n)),
        cpu_ms,
        cpu_gflops: gflops(flops, cpu_ms),
        tuned_vs_naive: naive_ms.map(|n| n / tuned_ms),
        tuned_vs_cpu: cpu_ms / tuned_ms,
        rel_err: err,
        candidates,
    })
}

/// The models of the cold-start table, optimized as `tessera infer` does.
fn cold_models(quick: bool) -> anyhow::Result<Vec<(String, Graph)>> {
    let mut out = Vec::new();
    let hw = if quick { 32 } else { 64 };
    let mut g = tile_engine::default_model::graph([hw, hw])?;
    tile_engine::passes::optimize(&mut g)?;
    out.push((format!("default model (RDN x2) {hw}x{hw}"), g));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models/resnet8.onnx");
    let mut g = tile_engine::onnx::load_file(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    tile_engine::passes::optimize(&mut g)?;
    out.push(("resnet8.onnx".to_string(), g));
    Ok(out)
}

/// Number of layer choices recorded in an autotune cache file (all adapters).
fn cached_choices(path: &Path) -> anyhow::Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(v.as_object().map_or(0, |o| {
        o.values()
            .filter_map(|a| a.as_object())
            .map(|a| a.len())
            .sum()
    }))
}

fn cold_start(
    options: &GpuOptions,
    out_dir: &Path,
    name: String,
    g: &Graph,
    rng: &mut Rng,
    reps: usize,
) -> anyhow::Result<ColdStart> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cache = out_dir.join(format!("autotune-cold-{slug}.json"));
    if cache.exists() {
        std::fs::remove_file(&cache).with_context(|| format!("removing {}", cache.display()))?;
    }
    let options = GpuOptions {
        cache_path: Some(cache.clone()),
        no_autotune: false,
        ..options.clone()
    };
    let inputs: Vec<Tensor> = g
        .inputs
        .iter()
        .map(|&v| rng.tensor(g.shape(v).to_vec(), 1.0))
        .collect::<anyhow::Result<_>>()?;
    let convs = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_)))
        .count();

    let t = Instant::now();
    let first = GpuExecutor::new(options.clone())?;
    let executor_new_ms = ms(t.elapsed());
    let t = Instant::now();
    let out1 = first.run(g, &inputs)?;
    let first_run_empty_cache_ms = ms(t.elapsed());
    let pipelines = first.pipelines_compiled();
    let weight_buffers = first.weights_uploaded();
    drop(first);
    let cached_choices = cached_choices(&cache)?;

    let t = Instant::now();
    let second = GpuExecutor::new(options)?;
    let executor_new_warm_ms = ms(t.elapsed());
    let t = Instant::now();
    let out2 = second.run(g, &inputs)?;
    let first_run_warm_cache_ms = ms(t.elapsed());
    let steady_ms = time_median(reps, || Ok(second.run(g, &inputs)?))?;
    let warm_output_identical = out1.len() == out2.len()
        && out1.iter().zip(&out2).all(|(a, b)| {
            a.shape() == b.shape()
                && a.data()
                    .iter()
                    .zip(b.data())
                    .all(|(x, y)| x.to_bits() == y.to_bits())
        });
    let want = cpu::run(g, &inputs)?;
    let cpu_ms = time_median(reps.min(3), || Ok(cpu::run(g, &inputs)?))?;
    let err = rel_err(&out2, &want);
    anyhow::ensure!(
        err < 1e-3,
        "{name}: GPU output differs from the CPU reference (relative error {err:.2e})"
    );
    Ok(ColdStart {
        model: name,
        shader_cache: shader_cache_state(),
        input: inputs
            .first()
            .map(|t| t.shape().to_vec())
            .unwrap_or_default(),
        nodes: g.nodes.len(),
        convs,
        mflop: g.total_flops() as f64 / 1e6,
        executor_new_ms,
        first_run_empty_cache_ms,
        executor_new_warm_ms,
        first_run_warm_cache_ms,
        steady_ms,
        pipelines,
        weight_buffers,
        cached_choices,
        warm_output_identical,
        cpu_ms,
        rel_err: err,
    })
}

/// Runs the kernels benchmark.
pub fn run(a: Args) -> anyhow::Result<()> {
    let load_before = loadavg();
    let reps = a.reps.map_or(if a.quick { 3 } else { 5 }, |r| r as usize);
    let command = std::iter::once("cargo run -p bench --release --".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    // A cache private to this run, so every layer is tuned here and now.
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let layer_cache = a.out.join("autotune-layers.json");
    if layer_cache.exists() {
        std::fs::remove_file(&layer_cache)
            .with_context(|| format!("removing {}", layer_cache.display()))?;
    }
    let gpu = GpuExecutor::new(GpuOptions {
        cache_path: Some(layer_cache),
        no_autotune: false,
        ..a.options()
    })
    .context("opening the GPU executor")?;
    let info = gpu.context().info.clone();
    println!("adapter: {}", gpu.adapter_info());
    println!("load average before: {load_before}");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rows = Vec::new();
    if let Some(t) = &a.only {
        let names: Vec<String> = specs()
            .iter()
            .map(|s| format!("{} {}", s.model, s.layer))
            .collect();
        anyhow::ensure!(
            names.iter().any(|n| n.contains(t.as_str())),
            "--only {t:?} matches no layer; the layers are: {}",
            names.join(", ")
        );
    }
    if !a.cold_only {
        println!("{reps} samples per figure, medians; GFLOP/s = layer FLOPs / median time\n");
        print_header();
        let picked = |s: &Spec| match &a.only {
            Some(t) => format!("{} {}", s.model, s.layer).contains(t.as_str()),
            None => s.quick || !a.quick,
        };
        for spec in specs().iter().filter(|s| picked(s)) {
            let row = bench_layer(&gpu, spec, &mut rng, reps)?;
            print_row(&row);
            rows.push(row);
        }
        print_candidates(&rows);
    }
    drop(gpu);

    let mut cold = Vec::new();
    // `--only` looks at chosen layers: no cold start.
    let models = if a.only.is_some() {
        Vec::new()
    } else {
        cold_models(a.quick)?
    };
    for (name, g) in models {
        let c = cold_start(&a.options(), &a.out, name, &g, &mut rng, reps)?;
        anyhow::ensure!(
            c.warm_output_identical,
            "{}: the warm-cache executor's output differs from the first executor's",
            c.model
        );
        cold.push(c);
    }
    if !a.cold_only && a.only.is_none() && shader_cache_state() == "on" {
        cold.extend(cold_start_without_shader_cache(&a)?);
    }
    print_cold(&cold);
    let load_after = loadavg();
    println!("load average after: {load_after}");

    let report = Report {
        command,
        adapter: format!(
            "{} ({:?}, {} {})",
            info.name, info.backend, info.driver, info.driver_info
        ),
        adapter_name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        mesa_shader_cache_disable: std::env::var("MESA_SHADER_CACHE_DISABLE").ok(),
        loadavg: (load_before, load_after),
        reps,
        quick: a.quick,
        layers: rows,
        cold_start: cold,
    };
    write_report(&a.out, "kernels", &report, &chart(&report))
}

fn print_candidates(rows: &[Row]) {
    println!("\nconv kernel candidates, median ms (* = autotuner's choice)");
    for r in rows.iter().filter(|r| !r.candidates.is_empty()) {
        let cands: Vec<String> = r
            .candidates
            .iter()
            .map(|c| {
                let star = if c.chosen { "*" } else { "" };
                format!("{}{star} {:.2}", c.kernel, c.ms)
            })
            .collect();
        println!("{:<12} {:<28} {}", r.model, r.layer, cands.join("  "));
    }
}

fn print_cold(cold: &[ColdStart]) {
    if cold.is_empty() {
        return;
    }
    println!(
        "\ncold start, wall-clock ms: first run of a fresh executor with an empty autotune cache, \
         of a second executor with the cache warm, and the steady state"
    );
    println!(
        "{:<30} {:>11} {:>7} {:>9} {:>11} {:>9} {:>10} {:>8} {:>8} {:>6} {:>6}",
        "model",
        "mesa cache",
        "MFLOP",
        "new exec",
        "1st, empty",
        "new exec",
        "1st, warm",
        "steady",
        "cpu",
        "pipes",
        "tuned"
    );
    for c in cold {
        println!(
            "{:<30} {:>11} {:>7.1} {:>9.1} {:>11.1} {:>9.1} {:>10.1} {:>8.1} {:>8.1} {:>6} {:>6}",
            c.model,
            c.shader_cache,
            c.mflop,
            c.executor_new_ms,
            c.first_run_empty_cache_ms,
            c.executor_new_warm_ms,
            c.first_run_warm_cache_ms,
            c.steady_ms,
            c.cpu_ms,
            c.pipelines,
            c.cached_choices
        );
    }
}

fn print_header() {
    println!(
        "{:<12} {:<28} {:>7} {:<13} {:>9} {:>7} {:>9} {:>7} {:>9} {:>7} {:>8} {:>8}",
        "model",
        "layer",
        "MFLOP",
        "tuned kernel",
        "tuned ms",
        "GFLOP/s",
        "naive ms",
        "GFLOP/s",
        "cpu ms",
        "GFLOP/s",
        "x naive",
        "x cpu"
    );
}

fn print_row(r: &Row) {
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    println!(
        "{:<12} {:<28} {:>7.1} {:<13} {:>9.3} {:>7.2} {:>9} {:>7} {:>9.3} {:>7.2} {:>8} {:>8.2}",
        r.model,
        r.layer,
        r.mflop,
        r.kernel,
        r.tuned_ms,
        r.tuned_gflops,
        opt(r.naive_ms, 3),
        opt(r.naive_gflops, 2),
        r.cpu_ms,
        r.cpu_gflops,
        opt(r.tuned_vs_naive, 1),
        r.tuned_vs_cpu
    );
}

/// One group of bars: its label, and a value (or none) per series.
type Group = (String, Vec<Option<f64>>);

/// Where bar labels end: room for the longest at about 6.2 px a character
/// of 11 px type (cold-start labels ran off the left edge at a fixed 320).
fn label_room(groups: &[&[Group]]) -> f64 {
    let longest = groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|g| g.0.chars().count())
        .max()
        .unwrap_or(0);
    (18.0 + 6.2 * longest as f64).max(320.0)
}

/// Bars' length at their longest; the canvas is `left` + this + 120 px.
const BARS_WIDTH: f64 = 520.0;

/// Horizontal bars: one group of bars per label (ending at `left`), one
/// bar per series.
fn bars(
    mut doc: Document,
    (y0, left): (f64, f64),
    title: &str,
    unit: &str,
    series: &[&str],
    groups: &[Group],
) -> (Document, f64) {
    let (width, bar_h) = (BARS_WIDTH, 13.0);
    // With three series this is the 51 px per group that `chart` sizes for.
    let group_h = bar_h * series.len() as f64 + 12.0;
    let max = groups
        .iter()
        .flat_map(|g| g.1.iter().flatten())
        .fold(1e-9, |m: f64, &v| m.max(v));
    doc = doc.add(
        Text::new(title)
            .set("x", 10)
            .set("y", y0 + 18.0)
            .set("font-size", 14)
            .set("font-weight", "bold"),
    );
    for (i, name) in series.iter().enumerate() {
        // Legend entries across the bars' width, whatever `left` is.
        let x = left + i as f64 * (BARS_WIDTH + 120.0) / series.len().max(1) as f64;
        doc = doc
            .add(
                Rectangle::new()
                    .set("x", x)
                    .set("y", y0 + 28.0)
                    .set("width", 12)
                    .set("height", 12)
                    .set("fill", COLORS[i % COLORS.len()]),
            )
            .add(
                Text::new(*name)
                    .set("x", x + 16.0)
                    .set("y", y0 + 39.0)
                    .set("font-size", 11),
            );
    }
    let mut y = y0 + 52.0;
    for (label, values) in groups {
        doc = doc.add(
            Text::new(label.clone())
                .set("x", left - 8.0)
                .set("y", y + group_h / 2.0)
                .set("font-size", 11)
                .set("text-anchor", "end"),
        );
        for (j, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let by = y + j as f64 * bar_h;
            let w = (v / max * width).max(1.0);
            doc = doc
                .add(
                    Rectangle::new()
                        .set("x", left)
                        .set("y", by)
                        .set("width", w)
                        .set("height", bar_h - 2.0)
                        .set("fill", COLORS[j % COLORS.len()]),
                )
                .add(
                    Text::new(format!("{v:.2} {unit}"))
                        .set("x", left + w + 4.0)
                        .set("y", by + bar_h - 4.0)
                        .set("font-size", 10),
                );
        }
        y += group_h;
    }
    (doc, y + 10.0)
}

/// GFLOP/s per layer (tuned, naive, CPU), then cold-start times per model.
fn chart(r: &Report) -> Document {
    let layer_groups: Vec<(String, Vec<Option<f64>>)> = r
        .layers
        .iter()
        .map(|l| {
            (
                format!("{} {}", l.model, l.layer),
                vec![Some(l.tuned_gflops), l.naive_gflops, Some(l.cpu_gflops)],
            )
        })
        .collect();
    let cold_groups: Vec<(String, Vec<Option<f64>>)> = r
        .cold_start
        .iter()
        .map(|c| {
            (
                format!("{} (Mesa shader cache {})", c.model, c.shader_cache),
                vec![
                    Some(c.first_run_empty_cache_ms),
                    Some(c.first_run_warm_cache_ms),
                    Some(c.steady_ms),
                ],
            )
        })
        .collect();
    // Each section: 52 px of title and legend, 51 px per group of three bars, 10 px after.
    let section = |groups: usize| 62.0 + 51.0 * groups as f64;
    let left = label_room(&[&layer_groups, &cold_groups]);
    let (w, h) = (
        left + BARS_WIDTH + 120.0,
        section(r.layers.len()) + 10.0 + section(r.cold_start.len()),
    );
    let doc = Document::new()
        .set("viewBox", (0, 0, w, h))
        .set("font-family", "Helvetica, Arial, sans-serif")
        .add(
            Rectangle::new()
                .set("width", w)
                .set("height", h)
                .set("fill", "white"),
        );
    let (doc, y) = bars(
        doc,
        (0.0, left),
        &format!("Kernel GFLOP/s per layer (median), {}", r.adapter_name),
        "",
        &["GPU tuned", "GPU naive conv", "CPU reference"],
        &layer_groups,
    );
    let (doc, _) = bars(
        doc,
        (y + 10.0, left),
        "Cold start (wall-clock ms)",
        "ms",
        &[
            "1st run, empty autotune cache",
            "1st run, warm cache",
            "steady state",
        ],
        &cold_groups,
    );
    doc
}
