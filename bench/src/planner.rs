//! `cargo run -p bench --release -- planner [--iters N]`: planning time of
//! a 200-op ResNet-like DAG (built with the IR's `Graph::add_node`) on an
//! 8-node cluster (1 device, 6 edge, 1 cloud), target < 10 ms per plan.
//! Also prints the plan for the 1+4+1 example cluster. Writes
//! `planner.json` and `planner.svg` in `--out` (default `out/bench/`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use planner::cluster::{Backend, Cluster, LinkSpec, NodeSpec, Tier};
use planner::{Estimates, ModelDag};
use tile_engine::Tensor;
use tile_engine::ir::{Activation, BinaryKind, Conv, Graph, Op, Pool, PoolKind};

use crate::util::median;

fn conv(
    g: &mut Graph,
    name: &str,
    x: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    relu: bool,
) -> anyhow::Result<usize> {
    let in_c = g.shape(x)[1];
    let p = k / 2;
    let op = Op::Conv(Conv {
        weight: Arc::new(Tensor::zeros(vec![out_c, in_c, k, k])),
        bias: None,
        strides: [stride, stride],
        pads: [p, p, p, p],
        dilations: [1, 1],
        group: 1,
        activation: if relu {
            Activation::Relu
        } else {
            Activation::Identity
        },
    });
    Ok(g.add_node(name, op, vec![x], format!("{name}_out"))?)
}

/// A ResNet-like model with exactly `target` ops: stem, basic residual
/// blocks (conv-relu, conv, add+relu) over four stages, global pool, dense.
pub fn resnet_like(target: usize) -> anyhow::Result<Graph> {
    let mut g = Graph::default();
    let x = g.add_value("input", vec![1, 3, 224, 224]);
    g.inputs.push(x);
    let mut h = conv(&mut g, "stem", x, 64, 7, 2, true)?;
    let pool = Op::Pool(Pool {
        kind: PoolKind::Max,
        kernel: [3, 3],
        strides: [2, 2],
        pads: [1, 1, 1, 1],
        dilations: [1, 1],
        ceil_mode: false,
    });
    h = g.add_node("stem_pool", pool, vec![h], "stem_pool_out")?;
    // Tail: global pool, reshape, dense = 3 ops; stages: 3 ops per block + 1 per projection.
    let tail = 3;
    let body = target.saturating_sub(g.nodes.len() + tail + 3);
    let blocks = body / 3;
    let per_stage = [
        blocks / 4 + usize::from(!blocks.is_multiple_of(4)),
        blocks / 4 + usize::from(blocks % 4 > 1),
        blocks / 4 + usize::from(blocks % 4 > 2),
        blocks / 4,
    ];
    let mut b = 0;
    for (s, (&n, c)) in per_stage.iter().zip([64, 128, 256, 512]).enumerate() {
        for i in 0..n {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let skip = if stride == 2 {
                conv(&mut g, &format!("proj{s}"), h, c, 1, 2, false)?
            } else {
                h
            };
            let a = conv(&mut g, &format!("b{b}c1"), h, c, 3, stride, true)?;
            let a = conv(&mut g, &format!("b{b}c2"), a, c, 3, 1, false)?;
            h = g.add_node(
                format!("b{b}add"),
                Op::Binary {
                    kind: BinaryKind::Add,
                    activation: Activation::Relu,
                },
                vec![a, skip],
                format!("b{b}_out"),
            )?;
            b += 1;
        }
    }
    // Pad with pointwise ops so the count is exact.
    while g.nodes.len() + tail < target {
        let k = g.nodes.len();
        h = g.add_node(
            format!("act{k}"),
            Op::Activation(Activation::Relu),
            vec![h],
            format!("act{k}_out"),
        )?;
    }
    h = g.add_node(
        "gap",
        Op::GlobalPool(PoolKind::Average {
            count_include_pad: false,
        }),
        vec![h],
        "gap_out",
    )?;
    let c = g.shape(h)[1];
    h = g.add_node_with_shape("flatten", Op::Reshape, vec![h], "flat", vec![1, c])?;
    let dense = Op::Dense {
        weight: Arc::new(Tensor::zeros(vec![c, 1000])),
        bias: None,
        activation: Activation::Identity,
    };
    h = g.add_node("fc", dense, vec![h], "logits")?;
    g.outputs.push(h);
    g.validate()?;
    Ok(g)
}

/// One device, `edges` edge nodes, one cloud; the example cluster's link figures.
pub fn cluster(edges: usize) -> Cluster {
    let node = |name: String, tier, gflops| NodeSpec {
        name,
        tier,
        address: "127.0.0.1:0".into(),
        backend: Backend::Gpu,
        gflops,
    };
    let link = |from: String, to: String, mbps, ms| LinkSpec {
        from,
        to,
        bandwidth_mbps: mbps,
        delay_ms: ms,
        jitter_ms: 0.0,
        loss: 0.0,
    };
    let mut nodes = vec![node("phone".into(), Tier::Device, 5.0)];
    let mut links = Vec::new();
    for e in 0..edges {
        nodes.push(node(
            format!("edge{e}"),
            Tier::Edge,
            if e % 2 == 0 { 40.0 } else { 25.0 },
        ));
        links.push(link("phone".into(), format!("edge{e}"), 100.0, 5.0));
        links.push(link(format!("edge{e}"), "cloud".into(), 50.0, 30.0));
        for f in e + 1..edges {
            links.push(link(format!("edge{e}"), format!("edge{f}"), 1000.0, 1.0));
        }
    }
    nodes.push(node("cloud".into(), Tier::Cloud, 400.0));
    Cluster { nodes, links }
}

/// Arguments of `bench planner`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Timed planning runs (at least 1).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    iters: u32,
    /// Folder for planner.json and planner.svg.
    #[arg(long, value_name = "DIR", default_value = "out/bench")]
    out: std::path::PathBuf,
}

/// Runs the planner benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    let iters = args.iters as usize;
    let graph = resnet_like(200)?;
    let c8 = cluster(6);
    c8.validate()?;
    let est = Estimates::from_cluster(&c8);
    // Warm-up, then timed runs of the whole entry point (graph → DAG → plan).
    let report = planner::plan(&graph, &c8, &est)?;
    let mut full = Vec::with_capacity(iters);
    let mut dag_only = Vec::with_capacity(iters);
    let dag = ModelDag::from_graph(&graph)?;
    for _ in 0..iters {
        let t = Instant::now();
        let r = planner::plan(&graph, &c8, &est)?;
        full.push(t.elapsed().as_secs_f64());
        std::hint::black_box(r);
        let t = Instant::now();
        let r = planner::plan_dag(
            &dag,
            &c8,
            &est,
            &planner::ReceptiveField,
            Default::default(),
        )?;
        dag_only.push(t.elapsed().as_secs_f64());
        std::hint::black_box(r);
    }
    let (m_full, m_dag) = (median(full.clone()), median(dag_only));
    let worst = full.iter().copied().fold(0.0, f64::max);
    println!(
        "planner: {} ops x {} nodes, {} runs (wall-clock, this machine)",
        graph.nodes.len(),
        c8.nodes.len(),
        iters
    );
    println!("{:<34} {:>10}", "measure", "ms");
    println!("{:<34} {:>10.3}", "plan(&Graph) median", m_full * 1e3);
    println!("{:<34} {:>10.3}", "plan(&Graph) worst", worst * 1e3);
    println!("{:<34} {:>10.3}", "plan_dag(&ModelDag) median", m_dag * 1e3);
    println!(
        "target < 10 ms: {}",
        if m_full < 0.010 { "met" } else { "NOT met" }
    );
    println!();
    println!("{}", report.table());
    let example = cluster(4);
    let ex_report = planner::plan(&graph, &example, &Estimates::from_cluster(&example))?;
    println!(
        "same model on 1 device + 4 edge + 1 cloud:\n{}",
        ex_report.table()
    );
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("--out {}", out.display()))?;
    let json = serde_json::json!({
        "benchmark": "planner",
        "ops": graph.nodes.len(),
        "nodes": c8.nodes.len(),
        "iterations": iters,
        "plan_graph_median_ms": m_full * 1e3,
        "plan_graph_worst_ms": worst * 1e3,
        "plan_dag_median_ms": m_dag * 1e3,
        "predicted_makespan_ms": report.best.makespan_s() * 1e3,
        "strategy": report.best.strategy,
        "clock": "wall-clock",
    });
    let (json_path, svg_path) = (out.join("planner.json"), out.join("planner.svg"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&svg_path, ex_report.svg())
        .with_context(|| format!("writing {}", svg_path.display()))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}
