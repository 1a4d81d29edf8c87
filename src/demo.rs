//! `tessera demo`: a real three-tier cluster on loopback. One device, four
//! edge and one cloud daemon run as child processes behind the link
//! emulator; the coordinator in this process plans the embedded default
//! model from the nodes' calibration, runs it against the baselines,
//! checks the result bit for bit, slows one edge node down midway to show
//! the plan adapting, and writes what happened to `out/`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use planner::{Cluster, Tier};
use tessera::Backend;
use tessera::cluster::bundle::Bundle;
use tessera::cluster::coordinator::{Coordinator, ExecPlan, JobRecord};
use tessera::cluster::experiment::{self, Adaptive, PlanRun, RunStep};
use tessera::cluster::harness::{HarnessOptions, LocalCluster};
use tessera::cluster::trace::{self, fmt_bytes};
use tessera::cluster::wire::Msg;
use tile_engine::{Tensor, default_model};

/// The demo's cluster: see the links it documents.
const CLUSTER: &str = include_str!("../examples/cluster.toml");

/// Arguments of `tessera demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Fewer requests (CI uses this).
    #[arg(long)]
    pub quick: bool,
    /// Executor of every node (default: gpu if an adapter opens, else cpu).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Side N of the sample image (N×N, resampled from the embedded
    /// 128×128 one unless N is 128). Larger images spend less of each tile
    /// on its halo, so the cluster's speed-up grows, and take longer (the
    /// time grows with N²). 32 to 1024.
    #[arg(long, value_name = "N", default_value_t = DEMO_SIDE, value_parser = clap::value_parser!(u16).range(32..=1024))]
    pub size: u16,
    /// Output folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

/// Side of the embedded sample image, the one the model authors' result is for.
const FIXTURE_SIDE: u16 = 128;

/// The demo's default side. Five strips of a 128×128 map recompute a
/// quarter of their work as halos (BENCHMARKS.md, stop 16); a 512×512
/// output is a super-resolution job of a size users run, where they
/// recompute an eighth, and it still takes about a minute here.
const DEMO_SIDE: u16 = 256;

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_message(msg.to_string());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Share of the 8-bit values of `png` within ±1 of the model authors'
/// `result.png` (the output for the embedded 128×128 image).
fn within_one_of_authors(png: &[u8]) -> Result<f64> {
    let (_, _, a) = default_model::decode_rgb8(png)?;
    let (_, _, b) = default_model::decode_rgb8(default_model::reference_png())?;
    if a.len() != b.len() {
        bail!("the output is not the size of the authors' result");
    }
    let near = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.abs_diff(**y) <= 1)
        .count();
    Ok(near as f64 / a.len().max(1) as f64)
}

fn bits(t: &[Tensor]) -> Vec<u32> {
    t.iter()
        .flat_map(|t| t.data().iter().map(|v| v.to_bits()))
        .collect()
}

/// Runs the demo and prints what happened.
pub fn demo(args: &DemoArgs) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        // SIGTERM (a service manager, `timeout`) stops it as Ctrl-C does.
        let stop = tessera::cluster::node::stop_signal()?;
        tokio::select! {
            r = demo_async(args) => r,
            sig = stop => Err(tessera::console::Interrupted {
                signal: sig,
                what: "interrupted; the node daemons were stopped".into(),
            }
            .into()),
        }
    })
}

fn pick_backend(args: &DemoArgs) -> Backend {
    if let Some(b) = args.backend {
        return b;
    }
    match tile_engine::gpu::GpuExecutor::new(tile_engine::gpu::GpuOptions {
        no_autotune: true,
        ..Default::default()
    }) {
        // Software GL compiles each kernel variant for seconds, in each of
        // six daemons; lavapipe (Vulkan) or a real GPU does not.
        Ok(g) if g.adapter_info().contains("Gl") && g.adapter_info().contains("llvmpipe") => {
            println!(
                "wgpu found only llvmpipe through GL, which compiles shaders slowly; the nodes use the CPU executor (--backend gpu forces the GPU one; installing mesa-vulkan-drivers gives lavapipe)"
            );
            Backend::Cpu
        }
        Ok(_) => Backend::Gpu,
        Err(e) => {
            println!("no usable GPU adapter ({e}); the nodes use the CPU executor");
            Backend::Cpu
        }
    }
}

async fn demo_async(args: &DemoArgs) -> Result<()> {
    let t_start = Instant::now();
    let (_lock, work) = claim_out_dir(&args.out)?;
    let side = usize::from(args.size);
    let input = default_model::sample_input(side)?;
    let bundle = Bundle::from_spec("default", input.shape())?;
    let graph = bundle.graph()?;
    println!("tessera demo — a three-tier cluster on loopback");
    println!(
        "model: UpscalerJS default ×2 super-resolution (embedded, MIT), {} ops, {:.2} GFLOP per {side}×{side} image",
        graph.nodes.len(),
        graph.total_flops() as f64 / 1e9
    );
    println!(
        "links (emulated in user space): device↔edge 100 Mbit/s 5 ms, edge↔edge 1 Gbit/s 1 ms, edge↔cloud 50 Mbit/s 30 ms"
    );
    let backend = pick_backend(args);
    let cluster: Cluster = toml::from_str(CLUSTER).context("embedded cluster file")?;
    let exe = std::env::current_exe().context("cannot find the tessera binary")?;

    let pb = spinner(&format!(
        "starting 6 node daemons ({} executor), calibrating",
        match backend {
            Backend::Gpu => "GPU",
            Backend::Cpu => "CPU",
        }
    ));
    let mut local = LocalCluster::start(
        cluster,
        HarnessOptions {
            exe,
            dir: work.clone(),
            backend,
            compute_lock: true,
            metrics: true,
        },
    )
    .await
    .with_context(|| match backend {
        // The node files are the demo's own: the user's switch is the flag.
        Backend::Gpu => "the demo's GPU nodes did not start (`tessera demo --backend cpu` runs them on the CPU executor)",
        Backend::Cpu => "the demo's nodes did not start",
    })?;
    let endpoint = local.coordinator_endpoint()?;
    let mut coord =
        Coordinator::connect(local.cluster.clone(), endpoint, local.addrs.clone()).await?;
    // Compute is serialised across the daemons (see the compute lock above).
    coord.steal = false;
    pb.finish_and_clear();
    let est = coord.profiler.lock().map(|p| p.estimates()).ok();
    println!(
        "\nnodes (child processes; certificates are throwaway, in {}; conv3x3 rates from the start-up calibrations, pooled over nodes of one adapter, each node's own in its log):",
        work.join("certs").display()
    );
    for (i, n) in coord.cluster.nodes.iter().enumerate() {
        let rate = est.as_ref().map_or(0.0, |e| {
            e.flops_per_s(i, tile_engine::ir::OpClass::Conv3x3) / 1e9
        });
        let exec = coord.peer(i).map(|p| p.executor()).unwrap_or_default();
        println!(
            "  {:<6} {:<6} {:<40} conv3x3 {:>6.2} GFLOP/s  metrics {}",
            n.name,
            n.tier.name(),
            exec,
            rate,
            local.metrics[i].as_deref().unwrap_or("-")
        );
    }
    let coordinator = local.coordinator_node;
    println!(
        "coordinator: in this process, at {} (the edge node with the best device link)",
        coord.cluster.nodes[coordinator].name
    );

    let pb = spinner(
        "sending the model to every node (once, by content hash) and timing its ops on one edge node",
    );
    let loading = std::time::Instant::now();
    let mut model = coord.load_model(&bundle).await?;
    model.expect_inputs(&[&input]);
    pb.finish_and_clear();
    for (i, why) in &model.left_out {
        println!(
            "{}: {why}, planning without it",
            coord.cluster.nodes[*i].name
        );
    }
    println!(
        "model sent once to each node: {} bytes, sha256 {}…; its {} ops {} ({:.1} s with the transfer)",
        bundle.encode().len(),
        &model.hash[..12],
        model.dag.ops.len(),
        model.profiled_on.map_or_else(
            || "not profiled: the planner uses FLOPs at calibrated rates".to_string(),
            |n| format!("timed on {} for the planner", coord.cluster.nodes[n].name)
        ),
        loading.elapsed().as_secs_f64()
    );

    let (first, _) = experiment::plan_live(&coord, &model)?;
    println!("\nplan from the calibrated estimates:\n{}", first.table());

    // A warm-up round (pipelines compile, the profiler sees real spans),
    // tessera's plan re-made from what it saw and run again, twice, then
    // the plans again from the updated estimates, measured side by side
    // (the quick mode: no extra warm-up, one round).
    let reps = if args.quick {
        1
    } else {
        experiment::MEASURED_RUNS
    };
    let extra_warm = if args.quick {
        0
    } else {
        experiment::EXTRA_WARMUPS
    };
    let warm = experiment::comparison_plans(&coord, &model)?;
    let warm_twins = experiment::twins(&warm);
    let measured = warm_twins.iter().filter(|t| t.is_none()).count();
    let bar = ProgressBar::new((measured * (1 + reps) + extra_warm) as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut request = 0;
    // The bar counts finished runs; its message names the one running.
    let tick = |p: &ExecPlan, what: &str, step: RunStep| match step {
        RunStep::Started => bar.set_message(format!("{what} {}", p.name)),
        RunStep::Finished => bar.inc(1),
    };
    experiment::measure(
        &coord,
        &model,
        &input,
        &warm,
        1,
        &mut request,
        |k| warm[k].name == "tessera",
        |p, step| tick(p, "warm-up", step),
    )
    .await?;
    for _ in 0..extra_warm {
        let again = experiment::comparison_plans(&coord, &model)?;
        if let Some(p) = again.first() {
            tick(p, "warm-up again:", RunStep::Started);
            request += 1;
            experiment::run_plan(&coord, &model, &input, p, request, true).await?;
            tick(p, "warm-up again:", RunStep::Finished);
        }
    }
    let (report, _) = experiment::plan_live(&coord, &model)?;
    let plans = experiment::comparison_plans(&coord, &model)?;
    let twins = experiment::twins(&plans);
    let runs: BTreeMap<usize, Vec<PlanRun>> = experiment::measure(
        &coord,
        &model,
        &input,
        &plans,
        reps,
        &mut request,
        |k| k == 0,
        |p, step| tick(p, "run", step),
    )
    .await?
    .into_iter()
    .enumerate()
    .collect();
    bar.finish_and_clear();
    println!(
        "plan after the warm-up round (estimates from measured spans): {}",
        experiment::shares_text(&coord, &plans[0])
    );

    // Each plan's replay puts every job at its median duration over the
    // runs: a tile's time varies by ±15–25 % from run to run on this machine,
    // and the slowest of five noisy tiles would otherwise set the makespan.
    let summary: BTreeMap<usize, PlanRun> = runs
        .iter()
        .filter_map(|(&k, r)| Some((k, experiment::representative(&coord, r)?)))
        .collect();
    let reported = |k: usize| -> Option<&PlanRun> { summary.get(&k) };
    println!(
        "\nmeasured (wall clock on this shared 2-core machine) and replayed (each node on its own hardware, transfers on the emulated links, each job at its median over {reps} run{}):",
        if reps == 1 { "" } else { "s" }
    );
    println!(
        "  {:<28} {:>10} {:>12} {:>13} {:>15}",
        "plan", "wall ms", "replayed ms", "predicted ms", "backbone bytes"
    );
    for (k, p) in plans.iter().enumerate() {
        if let Some(r) = reported(k) {
            println!(
                "  {:<28} {:>10.1} {:>12.1} {:>13} {:>15}{}",
                p.name,
                r.wall_s * 1e3,
                r.replay.makespan_s * 1e3,
                p.predicted_s
                    .map_or("-".into(), |s| format!("{:.1}", s * 1e3)),
                fmt_bytes(r.backbone_bytes(&coord)),
                twins[k].map_or_else(
                    || one_tier_note(p),
                    |j| format!("  (the same jobs as {}: measured once)", plans[j].name)
                )
            );
        }
    }
    let ours = reported(0).context("no tessera run")?;
    let single = reported(1).context("no single-node run")?;
    let ratio = |r: &PlanRun| r.replay.makespan_s / ours.replay.makespan_s.max(1e-12);
    println!("\nspeedup of tessera (replayed makespan):");
    println!("  vs single edge node: {:.2}×", ratio(single));
    // Identical nodes cannot beat one of them by more than their number:
    // past it, the machine's load changed between the plans' runs (they
    // share these cores with whatever else runs), and the figure says so.
    let workers = {
        let mut nodes: Vec<usize> = ours.records.iter().map(|r| r.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.len()
    };
    if ratio(single) > workers as f64 * 1.02 {
        println!(
            "  (over {workers}× with {workers} nodes computing: the machine's load changed between runs; run it again on a quiet machine)"
        );
    }
    // The fastest measured run among plans whose name starts with `prefix`.
    let fastest = |prefix: &str| -> Option<&PlanRun> {
        (0..plans.len())
            .filter(|&k| plans[k].name.starts_with(prefix))
            .filter_map(reported)
            .min_by(|a, b| a.replay.makespan_s.total_cmp(&b.replay.makespan_s))
    };
    // The whole model on the edge node is a two-tier split too (the device
    // only uploads): when the planner's two-tier pick is slower than that
    // measured, the single edge node is the baseline to beat.
    let two = [fastest(experiment::TWO_TIER_PREFIX), Some(single)]
        .into_iter()
        .flatten()
        .min_by(|a, b| a.replay.makespan_s.total_cmp(&b.replay.makespan_s));
    if let Some(two) = two {
        let which = two
            .name
            .trim_start_matches(experiment::TWO_TIER_PREFIX)
            .trim_end_matches(')');
        println!(
            "  vs the best two-tier split ({which}, the fastest measured of the three two-tier plans and the single edge node): {:.2}×",
            ratio(two)
        );
    }
    if let Some(cloud) = fastest("cloud-only") {
        let (a, b) = (cloud.backbone_bytes(&coord), ours.backbone_bytes(&coord));
        if b == 0 {
            println!(
                "  backbone (edge↔cloud, both ways) bytes: {} vs cloud-only {} (none at all)",
                fmt_bytes(b),
                fmt_bytes(a)
            );
        } else {
            println!(
                "  backbone bytes: {:.2}× fewer than cloud-only",
                a as f64 / b as f64
            );
        }
    }
    let same = bits(&ours.outputs) == bits(&single.outputs);
    println!(
        "  result equals the single-node run bit for bit: {}",
        if same { "yes" } else { "NO" }
    );
    if !same {
        bail!("the cluster's output differs from the single-node run");
    }
    let out = ours.outputs.first().context("no output")?;
    let png = default_model::tensor_to_png(out)?;
    if args.size == FIXTURE_SIDE {
        println!(
            "  against the model authors' result.png: {:.2}% of pixel values within ±1",
            within_one_of_authors(&png)? * 100.0
        );
    } else {
        // The authors' result is for the embedded 128×128 image only: the
        // model is checked on that one, in this process (0.3 s).
        let fixture = default_model::png_to_tensor(default_model::fixture_png())?;
        let side = usize::from(FIXTURE_SIDE);
        let mine = tile_engine::cpu::run(&default_model::graph([side, side])?, &[fixture])?;
        let png = default_model::tensor_to_png(mine.first().context("no output")?)?;
        println!(
            "  the model on the embedded {side}×{side} image (CPU executor, in this process) against the authors' result.png: {:.2}% of pixel values within ±1",
            within_one_of_authors(&png)? * 100.0
        );
    }

    println!("\nper node, tessera run: tiles, busy time");
    for (i, n) in coord.cluster.nodes.iter().enumerate() {
        let mine: Vec<&JobRecord> = ours
            .records
            .iter()
            .filter(|r| r.node == i && r.ok)
            .collect();
        let tiles = mine.iter().filter(|r| r.tile.is_some()).count();
        let busy: u64 = mine
            .iter()
            .map(|r| r.end_us.saturating_sub(r.start_us))
            .sum();
        println!(
            "  {:<6} {:>2} tiles  {:>8.1} ms busy",
            n.name,
            tiles,
            busy as f64 / 1e3
        );
    }
    println!("stages of the tessera run: replayed (predicted) ms");
    println!("  {}", experiment::stages_text(&ours.replay, &ours.plan));
    println!(
        "bytes per link, tessera run (replayed; the input's hand-over to the device excluded):"
    );
    let mut links: Vec<_> = ours.replay.link_bytes.iter().collect();
    links.sort();
    for (l, b) in links {
        println!("  {l:<16} {}", fmt_bytes(*b));
    }

    // Midway: one edge node gets three times slower; the profiler sees it
    // in the spans and the planner re-weights the tiles.
    let mut adaptive = Adaptive::new(&coord, &model)?;
    let slow = coord
        .cluster
        .tier_nodes(Tier::Edge)
        .into_iter()
        .find(|&e| e != coordinator)
        .context("no second edge node")?;
    let slow_name = coord.cluster.nodes[slow].name.clone();
    println!("\nadapting: {slow_name} becomes 3× slower (throttled) from the next request");
    if let Some(p) = coord.peer(slow) {
        p.send(&Msg::Throttle { factor: 3.0 }).await?;
    }
    let mut adapt_runs = Vec::new();
    let steps = if args.quick { 3 } else { 4 };
    println!(
        "  plan before: {}",
        experiment::shares_text(&coord, &adaptive.plan)
    );
    for step in 0..steps {
        request += 1;
        let r = experiment::run_plan(&coord, &model, &input, &adaptive.plan, request, true).await?;
        let decision = adaptive.update(&coord, &model)?;
        let changed = !decision.starts_with("plan kept");
        println!(
            "  request {:>2}: replayed {:>7.1} ms  est. whole-model time {}  → {}{}",
            step + 1,
            r.replay.makespan_s * 1e3,
            edge_rates(&coord, &model),
            decision,
            if changed {
                format!(
                    "\n              new plan: {}",
                    experiment::shares_text(&coord, &adaptive.plan)
                )
            } else {
                String::new()
            }
        );
        if bits(&r.outputs) != bits(&single.outputs) {
            bail!("an adapted run changed the output");
        }
        adapt_runs.push(r);
    }
    println!("  every adapted run's output equals the single-node run bit for bit");
    if let Some(p) = coord.peer(slow) {
        p.send(&Msg::Throttle { factor: 1.0 }).await?;
    }

    // Node metrics, read over HTTP like Prometheus would.
    if let Some(url) = local.metrics[slow].clone()
        && let Some(line) = scrape(&url, "tessera_tiles_total")
    {
        println!("\n{slow_name} metrics ({url}): {line}");
    }

    let out_dir = &args.out;
    write(out_dir, "input.png", &default_model::tensor_to_png(&input)?)?;
    write(out_dir, "output.png", &png)?;
    write(out_dir, "plan.svg", report.svg().as_bytes())?;
    let mut all: Vec<JobRecord> = Vec::new();
    // A plan that runs another's jobs holds copies of that plan's runs:
    // their jobs go in the trace once.
    let measured = runs
        .iter()
        .filter(|(k, _)| twins.get(**k).is_none_or(Option::is_none))
        .flat_map(|(_, r)| r);
    for r in measured.chain(&adapt_runs) {
        all.extend(r.records.iter().cloned());
    }
    let trace_json = serde_json::to_vec_pretty(&trace::chrome_trace(&all))?;
    write(out_dir, "trace.json", &trace_json)?;
    let mut panels = Vec::new();
    for (k, p) in plans.iter().enumerate() {
        if let Some(r) = reported(k) {
            panels.push((format!("{} (replayed)", p.name), r.replay.slots.clone()));
        }
    }
    if let Some(r) = adapt_runs.last() {
        panels.push((
            format!("tessera after adapting to a slow {slow_name} (replayed)"),
            r.replay.slots.clone(),
        ));
    }
    write(out_dir, "gantt.svg", trace::gantt_svg(&panels).as_bytes())?;
    println!(
        "\nwrote {0}/input.png, {0}/output.png ({2}×{2}), {0}/plan.svg, {0}/trace.json (Perfetto), {0}/gantt.svg; node logs in {1}",
        out_dir.display(),
        work.display(),
        2 * side
    );
    coord.shutdown().await;
    local.kill_all();
    println!(
        "done in {:.1} s; all node daemons stopped",
        t_start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The profiler's estimate of a whole-model pass on each edge node (its
/// per-op overhead and FLOP rates together), as `name seconds` pairs.
fn edge_rates(coord: &Coordinator, model: &tessera::cluster::coordinator::LoadedModel) -> String {
    let Ok(est) = coord.profiler.lock().map(|p| p.estimates()) else {
        return String::new();
    };
    let g = &model.graph;
    coord
        .cluster
        .tier_nodes(Tier::Edge)
        .into_iter()
        .map(|e| {
            let t: f64 = model
                .dag
                .ops
                .iter()
                .map(|op| est.compute_time(e, op.class, op.flops))
                .sum::<f64>()
                + est.overhead(e, g.nodes.len());
            // In ms: at `--size 32` every node read "0.0 s", throttled or not.
            format!("{} {:.0} ms", coord.cluster.nodes[e].name, t * 1e3)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// For a two-tier split whose best plan runs every op on one tier (the
/// device+cloud split of a model whose output is too large to send back
/// is the device alone), a note saying so; else nothing.
fn one_tier_note(p: &ExecPlan) -> String {
    if !p.name.starts_with(experiment::TWO_TIER_PREFIX) {
        return String::new();
    }
    let tiers = [
        ("device", !p.device_ops.is_empty()),
        ("edge", !p.blocks.is_empty()),
        ("cloud", !p.cloud_ops.is_empty()),
    ];
    match tiers.iter().filter(|t| t.1).collect::<Vec<_>>()[..] {
        [(tier, _)] => format!("  (every op on the {tier}: no split of the two paid)"),
        _ => String::new(),
    }
}

/// Files the demo writes in `--out`, besides its `cluster/` folder.
const OUTPUTS: [&str; 5] = [
    "input.png",
    "output.png",
    "plan.svg",
    "trace.json",
    "gantt.svg",
];

/// Marks a `cluster/` folder as the demo's own, so a later run may clear it.
const MARKER: &str = ".tessera-demo";

/// Makes `out` the demo's for this run: a folder (a file there is refused),
/// held by this process alone (a second demo in it would replace the first's
/// certificates under it), its `cluster/` folder cleared only if a demo
/// made it (a user's own `cluster/` there is refused, never deleted), and
/// the previous run's output files gone, so an interrupted run leaves none
/// that look like its own. Returns the held lock and the `cluster/` path.
fn claim_out_dir(out: &Path) -> Result<(std::fs::File, PathBuf)> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!("--out {}: not a folder", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let lock_path = out.join(".tessera-demo.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    if let Err(e) = lock.try_lock() {
        return Err(match e {
            std::fs::TryLockError::WouldBlock => anyhow::anyhow!(
                "--out {}: another tessera demo is running in this folder; give another --out",
                out.display()
            ),
            std::fs::TryLockError::Error(e) => {
                anyhow::Error::new(e).context(format!("cannot lock {}", lock_path.display()))
            }
        });
    }
    let work = out.join("cluster");
    // A demo's folder: the marker, or (an earlier version's) its node
    // files and certificates.
    let ours = |w: &Path| {
        w.join(MARKER).exists() || (w.join("phone.toml").is_file() && w.join("certs").is_dir())
    };
    if work.exists() {
        if !ours(&work) {
            anyhow::bail!(
                "{}: a folder the demo did not make (it writes its nodes' files there); give another --out",
                work.display()
            );
        }
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear {}", work.display()))?;
    }
    for name in OUTPUTS {
        let _ = std::fs::remove_file(out.join(name));
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    std::fs::write(
        work.join(MARKER),
        "made by `tessera demo`; cleared by its next run\n",
    )
    .with_context(|| format!("cannot write in {}", work.display()))?;
    Ok((lock, work))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
}

/// One metric line from a node's Prometheus endpoint.
fn scrape(url: &str, metric: &str) -> Option<String> {
    let hostport = url.strip_prefix("http://")?.split('/').next()?;
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(metric))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_out_folder_is_claimed_without_touching_what_the_demo_did_not_make() {
        let root = std::env::temp_dir().join(format!("tessera-demo-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // A user's own `cluster/` folder: refused, its file kept.
        let mine = root.join("mine");
        std::fs::create_dir_all(mine.join("cluster")).expect("dir");
        std::fs::write(mine.join("cluster/important.txt"), "precious").expect("file");
        let e = claim_out_dir(&mine).expect_err("a folder the demo did not make");
        assert!(
            format!("{e:#}").contains("a folder the demo did not make"),
            "{e:#}"
        );
        assert!(mine.join("cluster/important.txt").exists());
        // A demo's folder is cleared, and the last run's outputs go with it.
        let out = root.join("out");
        let (lock, work) = claim_out_dir(&out).expect("a new folder");
        std::fs::write(work.join("edge0.log"), "old").expect("log");
        std::fs::write(out.join("output.png"), "old").expect("png");
        // ...but not while another demo holds it.
        let e = claim_out_dir(&out).expect_err("held");
        assert!(format!("{e:#}").contains("another tessera demo"), "{e:#}");
        drop(lock);
        let (_lock, work) = claim_out_dir(&out).expect("a demo's folder again");
        assert!(!work.join("edge0.log").exists() && !out.join("output.png").exists());
        // A file is no folder.
        let file = root.join("afile");
        std::fs::write(&file, "x").expect("file");
        let e = claim_out_dir(&file).expect_err("a file");
        assert!(format!("{e:#}").contains("not a folder"), "{e:#}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
