//! The short calibration a node runs at start-up (and on re-admission): a
//! few layers of each main op class, timed on the node's own executor, so
//! the planner starts from measured throughputs instead of guesses.

use std::sync::Arc;
use std::time::Instant;

use tile_engine::ir::{Activation, Conv, OpClass};
use tile_engine::{Executor, Graph, Op, Tensor};

/// The op classes calibration measures, with the names used on the wire.
pub const CLASSES: [(&str, OpClass); 6] = [
    ("conv3x3", OpClass::Conv3x3),
    ("conv1x1", OpClass::Conv1x1),
    ("depthwise", OpClass::Depthwise),
    ("pool", OpClass::Pool),
    ("dense", OpClass::Dense),
    ("elementwise", OpClass::Elementwise),
];

/// Calibration key of the fixed cost per job, seconds.
pub const JOB_OVERHEAD: &str = "job_overhead_s";

/// The wire name of an op class.
pub fn class_name(class: OpClass) -> &'static str {
    CLASSES
        .iter()
        .find(|(_, c)| *c == class)
        .map_or("conv3x3", |(n, _)| n)
}

/// The op class of a wire name.
pub fn class_of(name: &str) -> Option<OpClass> {
    CLASSES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

fn weights(shape: Vec<usize>) -> Tensor {
    let n: usize = shape.iter().product();
    // Deterministic, small, varied values: calibration measures speed only.
    let data = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-4)
        .collect();
    Tensor::new(shape, data).unwrap_or_else(|_| Tensor::zeros(vec![1]))
}

fn conv_graph(c: usize, hw: usize, k: usize, group: usize) -> Option<Graph> {
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, c, hw, hw]);
    g.inputs.push(x);
    let p = k / 2;
    let op = Op::Conv(Conv {
        weight: Arc::new(weights(vec![c, c / group, k, k])),
        bias: Some(Arc::new(vec![0.01; c])),
        strides: [1, 1],
        pads: [p, p, p, p],
        dilations: [1, 1],
        group,
        activation: Activation::Relu,
    });
    let y = g.add_node("calib", op, vec![x], "y").ok()?;
    g.outputs.push(y);
    Some(g)
}

/// Median seconds of `reps` timed runs after one warm-up.
fn time(exec: &dyn Executor, graph: &Graph, reps: usize) -> Option<f64> {
    let input = weights(graph.shape(graph.inputs[0]).to_vec());
    let mut times = Vec::new();
    for rep in 0..=reps {
        let t = Instant::now();
        exec.run(graph, std::slice::from_ref(&input)).ok()?;
        if rep > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied()
}

/// The fixed cost of a job, seconds: a one-op job of negligible FLOPs
/// (submission, one dispatch, read-back).
fn overhead(exec: &dyn Executor) -> Option<f64> {
    time(exec, &conv_graph(4, 4, 1, 1)?, 5)
}

/// Times each calibration layer (one warm-up, median of three) and returns
/// FLOP/s per class name. Classes it does not run are left to the planner,
/// which scales their priors by what it measured here.
pub fn calibrate(exec: &dyn Executor) -> Vec<(String, f64)> {
    let cases = [
        ("conv3x3", conv_graph(64, 48, 3, 1)),
        ("conv1x1", conv_graph(64, 32, 1, 1)),
        ("depthwise", conv_graph(64, 32, 3, 64)),
    ];
    let mut rates = Vec::new();
    let fixed = overhead(exec);
    for (name, graph) in cases {
        let Some(graph) = graph else { continue };
        let flops: u64 = (0..graph.nodes.len())
            .map(|n| graph.node_cost(n).flops)
            .sum();
        if let Some(t) = time(exec, &graph, 3) {
            let compute = (t - fixed.unwrap_or(0.0)).max(t * 0.2);
            rates.push((name.to_string(), flops as f64 / compute.max(1e-9)));
        }
    }
    if let Some(job) = fixed {
        rates.push((JOB_OVERHEAD.to_string(), job));
    }
    rates
}
