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

/// A same-padded `k×k` convolution with ReLU, `cin` → `cout` channels.
fn conv_op(cin: usize, cout: usize, k: usize, group: usize) -> Op {
    let p = k / 2;
    Op::Conv(Conv {
        weight: Arc::new(weights(vec![cout, cin / group, k, k])),
        bias: Some(Arc::new(vec![0.01; cout])),
        strides: [1, 1],
        pads: [p, p, p, p],
        dilations: [1, 1],
        group,
        activation: Activation::Relu,
    })
}

fn conv_graph(c: usize, hw: usize, k: usize, group: usize) -> Option<Graph> {
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, c, hw, hw]);
    g.inputs.push(x);
    let y = g
        .add_node("calib", conv_op(c, c, k, group), vec![x], "y")
        .ok()?;
    g.outputs.push(y);
    Some(g)
}

/// Fastest seconds of `reps` timed runs after one warm-up: what the node
/// can do. Other processes only slow a run, and the median of three taken
/// while another process compiled set one node's share of the tiles to 7 %
/// until the daemon restarted.
fn time(exec: &dyn Executor, graph: &Graph, reps: usize) -> Option<f64> {
    let input = weights(graph.shape(graph.inputs[0]).to_vec());
    let times = runs(exec, graph, std::slice::from_ref(&input), 1, reps)?;
    times.into_iter().min_by(f64::total_cmp)
}

/// Seconds of each of `reps` timed runs of `graph` on `inputs`, after `warm` untimed ones.
fn runs(
    exec: &dyn Executor,
    graph: &Graph,
    inputs: &[Tensor],
    warm: usize,
    reps: usize,
) -> Option<Vec<f64>> {
    let mut times = Vec::new();
    // A map over a GPU's binding limit runs on a finer grid, as the
    // node's jobs do (`run_within_limits`): the first run finds the grid,
    // the others use it. Timed whole only, such an op had no profile and
    // the planner priced it by FLOPs.
    let mut grid = tile_engine::tiling::Grid::uniform(1, 1);
    for rep in 0..warm + reps {
        let t = Instant::now();
        let (_, ran) =
            crate::exec::run_within_limits(exec, graph, inputs, grid, None, &mut |_| {}).ok()?;
        grid = ran;
        if rep >= warm {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Some(times)
}

/// `steps` crops in a row, each one row and one column off a `c`-channel
/// `side`×`side` map: what a 2-D tile's residual branches do, and an
/// elementwise op's cost per element (the planner prices a tile's crops at
/// the elementwise rate). It becomes the node's elementwise rate: a loaded
/// model's own elementwise ops are priced by their profiled seconds in
/// these units, so for them the rate cancels, and on a CPU node the
/// planner counts no crop copies. Chained so the transfers are paid once.
fn crop_graph(c: usize, side: usize, steps: usize) -> Option<Graph> {
    let mut g = Graph::default();
    let mut x = g.add_value("x", vec![1, c, side, side]);
    g.inputs.push(x);
    for k in 1..=steps {
        let s = side.checked_sub(k)?;
        x = g
            .add_node_with_shape(
                format!("crop{k}"),
                Op::Crop { offset: [1, 1] },
                vec![x],
                format!("c{k}"),
                vec![1, c, s, s],
            )
            .ok()?;
    }
    g.outputs.push(x);
    Some(g)
}

/// Fastest of `reps` runs of graph nodes `ops` as one job, after `warm`
/// untimed ones, the job's fixed cost `fixed` taken off.
fn job_seconds(
    exec: &dyn Executor,
    graph: &Graph,
    ops: &[usize],
    warm: usize,
    reps: usize,
    fixed: f64,
) -> Option<f64> {
    let job = super::job::plan_job(graph, ops, None).ok()?;
    let inputs: Vec<Tensor> = job
        .input_shapes
        .iter()
        .map(|s| weights(s.clone()))
        .collect();
    let t = runs(exec, &job.graph, &inputs, warm, reps)?
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    Some((t - fixed).max(0.0))
}

/// Seconds each node of `graph` costs on this executor, `None` where it
/// could not run alone. The planner scales each op's FLOPs by it: a 5×5 or
/// a small-map convolution runs at another FLOP rate than the calibration
/// layers, and a model's own layers say by how much. Each op is timed alone
/// (for the relative costs) and the whole graph once as one job (for the
/// total: a lone op also pays for moving its tensors, which a fused job
/// does not), and the op times are scaled to that total.
pub fn profile_ops(
    exec: &dyn Executor,
    graph: &Graph,
    keep_going: &dyn Fn() -> bool,
) -> Option<Vec<Option<f64>>> {
    let fixed = overhead(exec).unwrap_or(0.0);
    let mut alone: Vec<Option<f64>> = Vec::with_capacity(graph.nodes.len());
    for n in 0..graph.nodes.len() {
        // Asked between ops: a profile whose client has gone stops here
        // rather than hold the executor for the next client's jobs.
        if !keep_going() {
            return None;
        }
        alone.push(job_seconds(exec, graph, &[n], 1, 2, fixed));
    }
    if !keep_going() {
        return None;
    }
    let all: Vec<usize> = (0..graph.nodes.len()).collect();
    // The ops ran just before, so their kernels are warm.
    let whole = job_seconds(exec, graph, &all, 0, 2, fixed);
    let sum: f64 = alone.iter().flatten().sum();
    if let Some(whole) = whole.filter(|_| alone.iter().all(Option::is_some) && sum > 0.0) {
        let k = whole / sum;
        alone.iter_mut().flatten().for_each(|s| *s *= k);
    }
    Some(alone)
}

/// The fixed cost of a job, seconds: a one-op job of negligible FLOPs
/// (submission, one dispatch, read-back).
fn overhead(exec: &dyn Executor) -> Option<f64> {
    time(exec, &conv_graph(4, 4, 1, 1)?, 5)
}

/// Times each calibration layer (one warm-up, fastest of five) and returns
/// FLOP/s per class name. Classes it does not run are left to the planner,
/// which scales their priors by what it measured here.
pub fn calibrate(exec: &dyn Executor) -> Vec<(String, f64)> {
    let cases = [
        ("conv3x3", conv_graph(64, 48, 3, 1)),
        ("conv1x1", conv_graph(64, 32, 1, 1)),
        ("depthwise", conv_graph(64, 32, 3, 64)),
        ("elementwise", crop_graph(64, 72, 6)),
    ];
    let mut rates = Vec::new();
    let fixed = overhead(exec);
    for (name, graph) in cases {
        let Some(graph) = graph else { continue };
        let flops: u64 = (0..graph.nodes.len())
            .map(|n| graph.node_cost(n).flops)
            .sum();
        if let Some(t) = time(exec, &graph, 5) {
            let compute = (t - fixed.unwrap_or(0.0)).max(t * 0.2);
            rates.push((name.to_string(), flops as f64 / compute.max(1e-9)));
        }
    }
    if let Some(job) = fixed {
        rates.push((JOB_OVERHEAD.to_string(), job));
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs each call after sleeping the next of its delays (ms), cycling.
    struct Delayed {
        delays: Vec<u64>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Executor for Delayed {
        fn name(&self) -> String {
            "delayed".into()
        }
        fn run(&self, graph: &Graph, inputs: &[Tensor]) -> tile_engine::Result<Vec<Tensor>> {
            let i = self
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ms = self.delays[i % self.delays.len()];
            std::thread::sleep(std::time::Duration::from_millis(ms));
            tile_engine::cpu::run(graph, inputs)
        }
    }

    /// A calibration run slowed by another process does not set the rate:
    /// the fastest run does (the median of three set one node's share to
    /// 7 % for as long as its daemon ran).
    #[test]
    fn a_layer_is_timed_by_its_fastest_run() {
        let exec = Delayed {
            // The warm-up, then four slowed runs and one free one.
            delays: vec![0, 60, 60, 5, 60, 60],
            calls: Default::default(),
        };
        let g = conv_graph(4, 8, 3, 1).expect("graph");
        let t = time(&exec, &g, 5).expect("timed");
        assert!(t < 0.04, "{t} s: a slowed run was taken");
    }

    #[test]
    fn a_profile_ranks_ops_by_their_cost() {
        // A cheap 3→32 conv, then a 32→32 one with ~10× its FLOPs, big
        // enough that a run takes milliseconds on the CPU executor.
        let mut g = Graph::default();
        let x = g.add_value("x", vec![1, 3, 160, 160]);
        g.inputs.push(x);
        let a = g
            .add_node("a", conv_op(3, 32, 3, 1), vec![x], "a")
            .expect("a");
        let b = g
            .add_node("b", conv_op(32, 32, 3, 1), vec![a], "b")
            .expect("b");
        g.outputs.push(b);
        let exec = tile_engine::cpu::CpuExecutor;
        let p = profile_ops(&exec, &g, &|| true).expect("not stopped");
        let [Some(pa), Some(pb)] = p[..] else {
            panic!("both ops profile: {p:?}");
        };
        assert!(pb > 2.0 * pa, "{pa} s vs {pb} s");
        // Told to stop after the first op, it stops there.
        let asked = std::cell::Cell::new(0);
        let stopped = profile_ops(&exec, &g, &|| {
            asked.set(asked.get() + 1);
            asked.get() < 2
        });
        assert!(stopped.is_none());
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn an_op_whose_map_is_over_the_binding_limit_is_profiled_on_a_finer_grid() {
        let mut g = Graph::default();
        let x = g.add_value("x", vec![1, 3, 24, 24]);
        g.inputs.push(x);
        let a = g
            .add_node("a", conv_op(3, 4, 3, 1), vec![x], "a")
            .expect("a");
        g.outputs.push(a);
        // The whole input (1728 values) is over; a 2×2 tile's is not.
        let exec = crate::exec::Bounded::new(1200);
        let p = profile_ops(&exec, &g, &|| true).expect("not stopped");
        assert!(matches!(p[..], [Some(s)] if s >= 0.0), "{p:?}");
        // Refused whole once per timing (the op alone, the graph as a
        // job), then run on the finer grid found.
        assert_eq!(exec.refused.into_inner(), 2);
    }
}
