//! Online profiler: per node and op class a throughput estimate, per link a
//! bandwidth and one-way delay estimate, each with its uncertainty. Fed spans
//! (measured intervals) by the caller; never reads a clock itself.

use tile_engine::ir::OpClass;

use crate::cluster::{Cluster, NodeIdx};
use crate::error::{Error, Result};
use crate::estimator::{Estimate, Estimator, EstimatorConfig};

/// Number of op classes.
pub const CLASSES: usize = 6;

/// Every op class, in index order.
pub const ALL_CLASSES: [OpClass; CLASSES] = [
    OpClass::Conv3x3,
    OpClass::Conv1x1,
    OpClass::Depthwise,
    OpClass::Pool,
    OpClass::Dense,
    OpClass::Elementwise,
];

/// Position of `class` in [`ALL_CLASSES`].
pub fn class_index(class: OpClass) -> usize {
    match class {
        OpClass::Conv3x3 => 0,
        OpClass::Conv1x1 => 1,
        OpClass::Depthwise => 2,
        OpClass::Pool => 3,
        OpClass::Dense => 4,
        OpClass::Elementwise => 5,
    }
}

/// Cold-start throughput of each class relative to 3×3 convolution. Memory-bound
/// classes do far fewer FLOPs per byte, so they run far below the conv figure;
/// these ratios only matter until calibration or the first spans replace them.
const CLASS_PRIOR_RATIO: [f64; CLASSES] = [1.0, 0.8, 0.25, 0.1, 0.5, 0.05];
/// Relative uncertainty of a cluster-file prior.
const FILE_PRIOR_REL_STD: f64 = 0.5;
/// Relative uncertainty of a link calibration measurement.
const CALIBRATION_REL_STD: f64 = 0.1;
/// Relative uncertainty of a node's start-up compute calibration: a few
/// layers of about 10 ms each. On a shared machine the same node's 3×3 conv
/// rate measured 14–27 GFLOP/s in runs minutes apart, and six identical
/// daemons calibrated at 13–25 GFLOP/s in one demo; a tighter prior kept
/// such a spread as real (identical peers got 15–23 % of the rows) and
/// let it outweigh the first measured spans.
const COMPUTE_CALIBRATION_REL_STD: f64 = 0.25;
/// Relative spread between the rate estimates of nodes of one kind that is
/// put down to noise (see [`Profiler::set_kind`]): one tile's rate varies by
/// 15–30 % run to run on a shared machine, and an estimate from a few
/// tiles keeps a good part of that.
const PEER_SPREAD: f64 = 0.1;
/// Prior probability that a node of a kind really runs at another rate
/// than its peers (throttled, busy), and the log-scale spread of such rates.
const PEER_APART_PRIOR: f64 = 0.2;
const PEER_APART_SPREAD: f64 = 1.0;
/// Jobs shorter than this are mostly fixed cost: their FLOP rate says little
/// about the node and would drag its estimate around, so they teach the
/// node's fixed job cost instead (see [`Profiler::observe_mixed_job`]).
pub const MIN_RATE_JOB_S: f64 = 0.05;
/// How much faster than its work at the current rate (as a fraction of its
/// span) a short job must run to teach the rate rather than the fixed cost:
/// beyond the ±4–8 % run-to-run noise of such jobs on this machine.
const SHORT_JOB_FAST: f64 = 0.1;
/// Transfers at most this large measure delay; larger ones measure bandwidth.
const SMALL_TRANSFER_BYTES: u64 = 16 * 1024;

/// What one span measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SpanKind {
    /// Ops of one class ran on the span's node.
    Compute {
        /// Op class.
        class: OpClass,
        /// FLOPs done (halo included).
        flops: u64,
    },
    /// Bytes went from the span's node to `to`.
    Transfer {
        /// Receiving node.
        to: NodeIdx,
        /// Payload bytes.
        bytes: u64,
    },
}

/// A measured interval, as recorded by a daemon (duration only: the planner has no clock).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// Node that computed or sent.
    pub node: NodeIdx,
    /// What was measured.
    pub kind: SpanKind,
    /// Duration in seconds.
    pub seconds: f64,
}

/// One calibration figure for a node and op class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ComputeRate {
    /// Node.
    pub node: NodeIdx,
    /// Op class.
    pub class: OpClass,
    /// Measured FLOP/s.
    pub flops_per_s: f64,
}

/// One calibration figure for a directed link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkRate {
    /// Sender.
    pub from: NodeIdx,
    /// Receiver.
    pub to: NodeIdx,
    /// Measured bytes/s.
    pub bytes_per_s: f64,
    /// Measured one-way delay in seconds.
    pub delay_s: f64,
}

/// Summary of a short calibration run (the daemon issue produces it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    /// Per node and class throughputs.
    pub compute: Vec<ComputeRate>,
    /// Per link bandwidth and delay.
    pub links: Vec<LinkRate>,
}

/// Estimated figures of one directed link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkEstimate {
    /// Bytes per second.
    pub bandwidth: Estimate,
    /// One-way delay in seconds.
    pub delay: Estimate,
}

/// A snapshot of everything the planner needs to predict times.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimates {
    /// `throughput[node][class_index]` in FLOP/s.
    pub throughput: Vec<[Estimate; CLASSES]>,
    /// `links[from][to]`, `None` where the cluster has no link.
    pub links: Vec<Vec<Option<LinkEstimate>>>,
    /// Fixed cost of a job on each node, seconds: `[per job, per op]`
    /// (submission and read-back; dispatch and buffer set-up per op). What
    /// makes a small tile slower per FLOP than a large one.
    pub op_overhead_s: Vec<[f64; 2]>,
}

impl Estimates {
    /// The cold-start estimates of a cluster file alone.
    pub fn from_cluster(cluster: &Cluster) -> Estimates {
        Profiler::new(cluster).estimates()
    }

    /// Mean FLOP/s of `node` for `class`.
    pub fn flops_per_s(&self, node: NodeIdx, class: OpClass) -> f64 {
        self.throughput[node][class_index(class)].mean
    }

    /// Fixed seconds a job of `ops` ops costs on `node` besides its FLOPs.
    pub fn overhead(&self, node: NodeIdx, ops: usize) -> f64 {
        let [job, op] = self.op_overhead_s.get(node).copied().unwrap_or([0.0; 2]);
        job + op * ops as f64
    }

    /// Seconds to do `flops` of `class` on `node`.
    pub fn compute_time(&self, node: NodeIdx, class: OpClass, flops: f64) -> f64 {
        flops / self.flops_per_s(node, class)
    }

    /// Seconds to send `bytes` from `from` to `to` (0 on the same node), `None` without a link.
    pub fn transfer_time(&self, from: NodeIdx, to: NodeIdx, bytes: f64) -> Option<f64> {
        if from == to {
            return Some(0.0);
        }
        let l = self.links.get(from)?.get(to)?.as_ref()?;
        Some(l.delay.mean + bytes / l.bandwidth.mean)
    }

    /// Scales one node's throughput (all classes): for scenarios and what-if tables.
    pub fn scale_node(&mut self, node: NodeIdx, factor: f64) {
        for e in &mut self.throughput[node] {
            e.mean *= factor;
            e.std *= factor;
        }
    }

    /// Scales the bandwidth of the link between `a` and `b` (both directions).
    pub fn scale_link(&mut self, a: NodeIdx, b: NodeIdx, factor: f64) {
        for (f, t) in [(a, b), (b, a)] {
            if let Some(Some(l)) = self.links.get_mut(f).and_then(|r| r.get_mut(t)) {
                l.bandwidth.mean *= factor;
                l.bandwidth.std *= factor;
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct LinkState {
    bandwidth: Estimator,
    delay: Estimator,
}

/// The profiler state: one estimator per node and class and two per directed link.
#[derive(Clone, Debug)]
pub struct Profiler {
    cfg: EstimatorConfig,
    nodes: Vec<[Estimator; CLASSES]>,
    links: Vec<Vec<Option<LinkState>>>,
    op_overhead: Vec<[f64; 2]>,
    kinds: Vec<Option<String>>,
    /// The cluster file's throughput prior per node and class.
    priors: Vec<[f64; CLASSES]>,
}

impl Profiler {
    /// Cold start from the cluster file's priors (node GFLOP/s, link figures).
    pub fn new(cluster: &Cluster) -> Profiler {
        let priors: Vec<[f64; CLASSES]> = cluster
            .nodes
            .iter()
            .map(|n| std::array::from_fn(|c| n.gflops * 1e9 * CLASS_PRIOR_RATIO[c]))
            .collect();
        let nodes = priors
            .iter()
            .map(|p| std::array::from_fn(|c| Estimator::with_prior(p[c], FILE_PRIOR_REL_STD)))
            .collect();
        let n = cluster.nodes.len();
        let links = (0..n)
            .map(|f| {
                (0..n)
                    .map(|t| {
                        cluster.link(f, t).map(|l| LinkState {
                            bandwidth: Estimator::with_prior(
                                l.bandwidth_mbps * 1e6 / 8.0,
                                FILE_PRIOR_REL_STD,
                            ),
                            delay: Estimator::with_prior(
                                (l.delay_ms * 1e-3).max(1e-6),
                                FILE_PRIOR_REL_STD,
                            ),
                        })
                    })
                    .collect()
            })
            .collect();
        Profiler {
            cfg: EstimatorConfig::default(),
            nodes,
            links,
            op_overhead: vec![[0.0; 2]; n],
            kinds: vec![None; n],
            priors,
        }
    }

    /// Says that `node` is hardware of kind `kind` (an adapter name), or of
    /// no known kind. The throughput estimates of nodes of one kind are
    /// drawn towards their median where they differ by about as much as
    /// their noise ([`PEER_SPREAD`] plus each estimate's own uncertainty)
    /// and left apart where they differ by more: identical GPUs whose few
    /// tiles happened to run 20 % apart get near-equal shares, while one
    /// that became 1.5× or more slower keeps its own estimate.
    pub fn set_kind(&mut self, node: NodeIdx, kind: Option<String>) -> Result<()> {
        let slot = self
            .kinds
            .get_mut(node)
            .ok_or_else(|| Error::Measurement(format!("kind: unknown node {node}")))?;
        *slot = kind;
        Ok(())
    }

    /// Each node's per-class estimates, drawn towards its kind's median (log
    /// scale). A log-deviation `d` is noise around the median (std `s`: the
    /// estimate's relative std and [`PEER_SPREAD`] together) or a real
    /// difference (prior probability [`PEER_APART_PRIOR`], spread
    /// [`PEER_APART_SPREAD`]); it becomes `d` times the posterior
    /// probability of the second.
    fn throughputs(&self) -> Vec<[Estimate; CLASSES]> {
        let raw: Vec<[Estimate; CLASSES]> = self
            .nodes
            .iter()
            .map(|n| std::array::from_fn(|c| n[c].estimate()))
            .collect();
        let mut out = raw.clone();
        let mut kinds: Vec<&String> = self.kinds.iter().flatten().collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let members: Vec<NodeIdx> = (0..raw.len())
                .filter(|&i| self.kinds[i].as_ref() == Some(kind))
                .collect();
            if members.len() < 2 {
                continue;
            }
            for c in 0..CLASSES {
                let mut logs: Vec<f64> = members.iter().map(|&i| raw[i][c].mean.ln()).collect();
                logs.sort_by(f64::total_cmp);
                let m = logs.len();
                let centre = if m % 2 == 1 {
                    logs[m / 2]
                } else {
                    0.5 * (logs[m / 2 - 1] + logs[m / 2])
                };
                for &i in &members {
                    let e = raw[i][c];
                    let d = e.mean.ln() - centre;
                    let s = ((e.std / e.mean).powi(2) + PEER_SPREAD.powi(2)).sqrt();
                    let density = |sd: f64| (-0.5 * (d / sd).powi(2)).exp() / sd;
                    let apart = PEER_APART_PRIOR * density(PEER_APART_SPREAD);
                    let noise = (1.0 - PEER_APART_PRIOR) * density(s);
                    let mean = (centre + d * apart / (apart + noise)).exp();
                    if mean.is_finite() && mean > 0.0 {
                        out[i][c] = Estimate {
                            mean,
                            std: e.std * mean / e.mean,
                        };
                    }
                }
            }
        }
        out
    }

    /// Uses a different estimator tuning.
    pub fn with_config(mut self, cfg: EstimatorConfig) -> Profiler {
        self.cfg = cfg;
        self
    }

    /// Replaces priors by calibration figures (tighter uncertainty than file priors).
    /// A class the calibration did not measure keeps its prior scaled by the
    /// ratio measured on that node's other classes, if any.
    pub fn calibrate(&mut self, cal: &Calibration) -> Result<()> {
        let mut measured: Vec<[Option<f64>; CLASSES]> = vec![[None; CLASSES]; self.nodes.len()];
        for r in &cal.compute {
            let slot = self.nodes.get_mut(r.node).ok_or_else(|| {
                Error::Measurement(format!("calibration: unknown node {}", r.node))
            })?;
            positive("calibration throughput", r.flops_per_s)?;
            slot[class_index(r.class)] =
                Estimator::with_prior(r.flops_per_s, COMPUTE_CALIBRATION_REL_STD);
            measured[r.node][class_index(r.class)] = Some(r.flops_per_s);
        }
        for (node, m) in measured.iter().enumerate() {
            // Geometric mean of measured / prior over the measured classes.
            let logs: Vec<f64> = (0..CLASSES)
                .filter_map(|c| Some((m[c]? / self.priors[node][c]).ln()))
                .collect();
            if logs.is_empty() {
                continue;
            }
            let ratio = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
            for c in (0..CLASSES).filter(|&c| m[c].is_none()) {
                self.nodes[node][c] =
                    Estimator::with_prior(self.priors[node][c] * ratio, FILE_PRIOR_REL_STD);
            }
        }
        for r in &cal.links {
            positive("calibration bandwidth", r.bytes_per_s)?;
            let l = self.link_mut(r.from, r.to)?;
            l.bandwidth = Estimator::with_prior(r.bytes_per_s, CALIBRATION_REL_STD);
            l.delay = Estimator::with_prior(r.delay_s.max(1e-6), CALIBRATION_REL_STD);
        }
        Ok(())
    }

    /// Folds in one span.
    pub fn observe(&mut self, span: &Span) -> Result<()> {
        positive("span duration", span.seconds)?;
        let cfg = self.cfg;
        match span.kind {
            SpanKind::Compute { class, flops } => {
                let node = self.nodes.get_mut(span.node).ok_or_else(|| {
                    Error::Measurement(format!("span: unknown node {}", span.node))
                })?;
                if flops > 0 {
                    node[class_index(class)].observe(flops as f64 / span.seconds, &cfg);
                }
            }
            SpanKind::Transfer { to, bytes } => {
                let l = self.link_mut(span.node, to)?;
                let bw = l.bandwidth.estimate().mean;
                let delay = l.delay.estimate().mean;
                if bytes <= SMALL_TRANSFER_BYTES {
                    // Small messages measure latency; subtract the serialisation time.
                    let d = span.seconds - bytes as f64 / bw;
                    l.delay.observe(d.max(span.seconds * 0.05), &cfg);
                } else {
                    // Large ones measure bandwidth; a duration below the known
                    // delay would give an absurd rate, so it is clamped.
                    let t = (span.seconds - delay).max(span.seconds * 0.05);
                    l.bandwidth.observe(bytes as f64 / t, &cfg);
                }
            }
        }
        Ok(())
    }

    /// Folds in many spans; stops at the first invalid one.
    pub fn observe_all<'a>(&mut self, spans: impl IntoIterator<Item = &'a Span>) -> Result<()> {
        spans.into_iter().try_for_each(|s| self.observe(s))
    }

    /// Current estimates with uncertainties.
    pub fn estimates(&self) -> Estimates {
        Estimates {
            throughput: self.throughputs(),
            links: self
                .links
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|l| {
                            l.map(|l| LinkEstimate {
                                bandwidth: l.bandwidth.estimate(),
                                delay: l.delay.estimate(),
                            })
                        })
                        .collect()
                })
                .collect(),
            op_overhead_s: self.op_overhead.clone(),
        }
    }

    /// Sets a node's fixed job cost `[per job, per op]` in seconds, as its
    /// calibration measured it (a one-op and a many-op job of negligible FLOPs).
    pub fn set_overhead(&mut self, node: NodeIdx, overhead: [f64; 2]) -> Result<()> {
        let slot = self
            .op_overhead
            .get_mut(node)
            .ok_or_else(|| Error::Measurement(format!("overhead: unknown node {node}")))?;
        if overhead.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(Error::Measurement(format!(
                "overhead {overhead:?} must be ≥ 0"
            )));
        }
        *slot = overhead;
        Ok(())
    }

    /// Folds in one finished job of `ops` ops on `node` whose work spans op
    /// classes (`work[i]` of class [`ALL_CLASSES`]`[i]`, in the planner's
    /// units) and is mostly of class `dominant`. A plan prices each class's
    /// part at that class's rate, so the other classes' time at their
    /// current rates is taken off the span before the dominant rate learns
    /// from it: left in, the dominant rate absorbs it and every prediction
    /// counts it twice (the default model's concats and up-sampling left
    /// the 3×3 conv rate 16 % low and predictions 12–17 % long). A job
    /// shorter than [`MIN_RATE_JOB_S`] teaches the node's fixed job cost
    /// instead ([`Profiler::observe_short_job`]). A job whose other classes
    /// and fixed cost would leave its dominant class under a fifth of the
    /// span teaches nothing: the other classes' rates are off, and what
    /// remained would read as a many times faster node.
    pub fn observe_mixed_job(
        &mut self,
        node: NodeIdx,
        dominant: OpClass,
        ops: usize,
        work: &[u64; CLASSES],
        seconds: f64,
    ) -> Result<()> {
        positive("job duration", seconds)?;
        if node >= self.nodes.len() {
            return Err(Error::Measurement(format!("job: unknown node {node}")));
        }
        let d = class_index(dominant);
        let est = self.estimates();
        let others: f64 = ALL_CLASSES
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != d)
            .map(|(i, &c)| work[i] as f64 / est.flops_per_s(node, c).max(1e-9))
            .sum();
        let rest = seconds - others;
        // A short job is what teaches the fixed cost, so that cost is not
        // taken off before asking whether it teaches anything: a fixed cost
        // over the short jobs' spans (a calibration on a busy machine read
        // 5.5 ms where 1-op jobs took 0.2–0.8 ms) would otherwise keep every
        // one of them out and stay for good.
        let short = seconds < MIN_RATE_JOB_S;
        let fixed = if short { 0.0 } else { est.overhead(node, ops) };
        if rest - fixed < seconds * 0.2 {
            return Ok(());
        }
        if !short {
            self.observe_job(node, dominant, ops, work[d], rest)
        } else {
            self.observe_short_job(node, dominant, ops, work[d], rest)
        }
    }

    /// Folds in one finished job of `ops` ops and `flops` FLOPs (mostly of
    /// `class`) that took `seconds` on `node`: the node's fixed job cost
    /// (see [`Profiler::set_overhead`]) is taken off before the FLOP rate is
    /// observed, so small tiles do not read as a slow node.
    pub fn observe_job(
        &mut self,
        node: NodeIdx,
        class: OpClass,
        ops: usize,
        flops: u64,
        seconds: f64,
    ) -> Result<()> {
        positive("job duration", seconds)?;
        let [job, op] = *self
            .op_overhead
            .get(node)
            .ok_or_else(|| Error::Measurement(format!("job: unknown node {node}")))?;
        let compute = (seconds - job - op * ops as f64).max(seconds * 0.2);
        if flops > 0 {
            self.observe(&Span {
                node,
                kind: SpanKind::Compute { class, flops },
                seconds: compute,
            })?;
        }
        Ok(())
    }

    /// Folds in a job too short to say much about the node's FLOP rate
    /// (mostly fixed cost): what it took beyond `work` at the current rate
    /// moves the node's per-job cost, a third of the way each time. Small
    /// tiles pay more than the warm calibration's fixed cost (waking the
    /// GPU, read-back of a fresh buffer), and a planner that does not know
    /// it tiles small models that one node runs faster.
    pub fn observe_short_job(
        &mut self,
        node: NodeIdx,
        class: OpClass,
        ops: usize,
        work: u64,
        seconds: f64,
    ) -> Result<()> {
        positive("job duration", seconds)?;
        if node >= self.nodes.len() {
            return Err(Error::Measurement(format!("job: unknown node {node}")));
        }
        // The rate plans use (drawn towards the node's peers).
        let rate = self.estimates().flops_per_s(node, class);
        let [job, op] = self.op_overhead[node];
        let fixed = seconds - work as f64 / rate - op * ops as f64;
        if fixed < -SHORT_JOB_FAST * seconds && work > 0 {
            // Clearly faster than its work at the current rate alone: the
            // rate is low, and a fixed cost, which cannot go below zero,
            // cannot make up for it (a ResNet-like model's 40 ms jobs, after
            // one slow span over the line, were predicted 36 % long for
            // good). Only clearly: a rate taught by every fast job but never
            // by a slow one would drift high on noise alone.
            return self.observe_job(node, class, ops, work, seconds);
        }
        self.op_overhead[node][0] = job + (fixed.max(0.0) - job) / 3.0;
        Ok(())
    }

    fn link_mut(&mut self, from: NodeIdx, to: NodeIdx) -> Result<&mut LinkState> {
        self.links
            .get_mut(from)
            .and_then(|r| r.get_mut(to))
            .and_then(|l| l.as_mut())
            .ok_or_else(|| Error::Measurement(format!("no link from node {from} to node {to}")))
    }
}

fn positive(what: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::Measurement(format!(
            "{what} must be positive, got {v}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster of `nodes` (name, GFLOP/s): the first is the device, the
    /// last the cloud, the rest edge nodes; links of 100 Mbit/s and 1 ms
    /// from the device and to the cloud and other edges, all at the first
    /// edge node.
    fn cluster(nodes: &[(&str, f64)]) -> crate::Cluster {
        let last = nodes.len() - 1;
        let mut toml = String::new();
        for (i, (name, gflops)) in nodes.iter().enumerate() {
            let tier = match i {
                0 => "device",
                i if i == last => "cloud",
                _ => "edge",
            };
            toml += &format!(
                "[[nodes]]\nname = \"{name}\"\ntier = \"{tier}\"\naddress = \"x\"\ngflops = {gflops:?}\n"
            );
        }
        let hub = nodes[1].0;
        for (i, (name, _)) in nodes.iter().enumerate().filter(|&(i, _)| i != 1) {
            let (from, to) = if i == 0 { (*name, hub) } else { (hub, *name) };
            toml += &format!(
                "[[links]]\nfrom = \"{from}\"\nto = \"{to}\"\nbandwidth_mbps = 100.0\ndelay_ms = 1.0\n"
            );
        }
        toml::from_str(&toml).expect("cluster")
    }

    /// A device, `edges` edge nodes and a cloud node, all of one 10 GFLOP/s prior.
    fn identical(edges: usize) -> crate::Cluster {
        let names: Vec<String> = std::iter::once("d".to_string())
            .chain((0..edges).map(|i| format!("e{i}")))
            .chain(std::iter::once("c".to_string()))
            .collect();
        let nodes: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 10.0)).collect();
        cluster(&nodes)
    }

    #[test]
    fn small_jobs_do_not_read_as_a_slow_node() {
        let cluster = cluster(&[("d", 1.0), ("e", 1.0), ("c", 1.0)]);
        let mut p = Profiler::new(&cluster);
        // True node: 20 ms per job + 2 GFLOP/s; jobs from tiny to large.
        p.set_overhead(1, [0.01, 0.001]).expect("overhead");
        assert!(p.set_overhead(1, [-1.0, 0.0]).is_err());
        for _ in 0..3 {
            for &f in &[1e7, 5e8, 2e9, 4e7, 1e9] {
                let t = 0.02 + f / 2e9;
                p.observe_job(1, OpClass::Conv3x3, 10, f as u64, t)
                    .expect("observe");
            }
        }
        let est = p.estimates();
        let rate = est.flops_per_s(1, OpClass::Conv3x3);
        assert!((rate / 2e9 - 1.0).abs() < 0.05, "rate {rate}");
        let predicted = est.overhead(1, 10) + est.compute_time(1, OpClass::Conv3x3, 1e7);
        assert!(
            (predicted / (0.02 + 1e7 / 2e9) - 1.0).abs() < 0.1,
            "{predicted}"
        );
    }

    #[test]
    fn nodes_of_one_kind_share_rates_unless_far_apart() {
        let cluster = identical(4);
        let mut p = Profiler::new(&cluster);
        // One tile each on identical hardware, 12 % apart either way; node 5
        // (the cloud) has become 3x slower.
        let rates = [10e9, 11.2e9, 8.8e9, 10.5e9, 9.2e9, 3.3e9];
        let conv = |p: &mut Profiler, node: usize, rate: f64| {
            p.observe(&Span {
                node,
                kind: SpanKind::Compute {
                    class: OpClass::Conv3x3,
                    flops: 1_000_000_000,
                },
                seconds: 1e9 / rate,
            })
            .expect("observe");
        };
        for (i, &r) in rates.iter().enumerate() {
            conv(&mut p, i, r);
        }
        let spread = |p: &Profiler, nodes: &[usize]| {
            let est = p.estimates();
            let v: Vec<f64> = nodes
                .iter()
                .map(|&i| est.flops_per_s(i, OpClass::Conv3x3))
                .collect();
            v.iter().copied().fold(0.0, f64::max) / v.iter().copied().fold(f64::INFINITY, f64::min)
        };
        let before = spread(&p, &[0, 1, 2, 3, 4]);
        assert!(before > 1.08, "raw estimates differ: {before}");
        for i in 0..6 {
            p.set_kind(i, Some("gpu".into())).expect("kind");
        }
        let after = spread(&p, &[0, 1, 2, 3, 4]);
        assert!(after < 1.04, "peers drawn together: {before} -> {after}");
        let est = p.estimates();
        let slow = est.flops_per_s(5, OpClass::Conv3x3);
        let peer = est.flops_per_s(0, OpClass::Conv3x3);
        assert!(
            peer / slow > 1.6,
            "the slowed node stays apart: {peer} vs {slow}"
        );
        // A node that was settled among its peers and becomes 3x slower is
        // seen at its first slow sample, peers or not.
        for _ in 0..4 {
            for i in 0..5 {
                conv(&mut p, i, 10e9);
            }
        }
        conv(&mut p, 3, 10e9 / 3.0);
        let est = p.estimates();
        let (stepped, peer) = (
            est.flops_per_s(3, OpClass::Conv3x3),
            est.flops_per_s(0, OpClass::Conv3x3),
        );
        assert!(
            peer / stepped > 2.0,
            "a 3x step shows at once: {peer} vs {stepped}"
        );
        // A node of another kind is left alone.
        p.set_kind(2, Some("other".into())).expect("kind");
        let raw2 = p.nodes[2][0].estimate().mean;
        assert_eq!(p.estimates().flops_per_s(2, OpClass::Conv3x3), raw2);
    }

    #[test]
    fn calibrations_of_identical_peers_are_drawn_together_unless_far_apart() {
        let cluster = identical(5);
        let mut p = Profiler::new(&cluster);
        // One demo's start-up calibrations of six identical daemons, and a
        // seventh node 3x below their median.
        let rates = [22.4e9, 13.4e9, 22.1e9, 15.0e9, 22.4e9, 22.2e9, 7.0e9];
        let compute = rates
            .iter()
            .enumerate()
            .map(|(node, &flops_per_s)| ComputeRate {
                node,
                class: OpClass::Conv3x3,
                flops_per_s,
            })
            .collect();
        p.calibrate(&Calibration {
            compute,
            links: Vec::new(),
        })
        .expect("calibrate");
        for i in 0..rates.len() {
            p.set_kind(i, Some("gpu".into())).expect("kind");
        }
        let est = p.estimates();
        let r: Vec<f64> = (0..rates.len())
            .map(|i| est.flops_per_s(i, OpClass::Conv3x3))
            .collect();
        let peers = &r[..6];
        let spread = peers.iter().copied().fold(0.0, f64::max)
            / peers.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(spread < 1.25, "1.67x apart raw, drawn to {spread}: {r:?}");
        assert!(r[0] / r[6] > 2.5, "the slow node stays apart: {r:?}");
    }

    #[test]
    fn classes_calibration_skips_follow_the_classes_it_measured() {
        let cluster = cluster(&[("d", 5.0), ("e", 40.0), ("c", 400.0)]);
        let mut p = Profiler::new(&cluster);
        // The file says 5, 40 and 400 GFLOP/s; calibration finds them equal.
        let compute = (0..3)
            .map(|node| ComputeRate {
                node,
                class: OpClass::Conv3x3,
                flops_per_s: 14e9,
            })
            .collect();
        p.calibrate(&Calibration {
            compute,
            links: Vec::new(),
        })
        .expect("calibrate");
        let est = p.estimates();
        for class in [OpClass::Pool, OpClass::Elementwise, OpClass::Dense] {
            let r: Vec<f64> = (0..3).map(|n| est.flops_per_s(n, class)).collect();
            assert!(
                (r[0] / r[1] - 1.0).abs() < 1e-9 && (r[2] / r[1] - 1.0).abs() < 1e-9,
                "{class:?}: {r:?}"
            );
        }
        let ratio = est.flops_per_s(1, OpClass::Elementwise) / est.flops_per_s(1, OpClass::Conv3x3);
        assert!((ratio - CLASS_PRIOR_RATIO[5]).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn other_classes_time_is_not_read_as_a_slow_dominant_class() {
        let cluster = cluster(&[("d", 20.0), ("e", 20.0), ("c", 20.0)]);
        let mut p = Profiler::new(&cluster);
        p.set_overhead(1, [0.0, 0.0]).expect("overhead");
        let est = p.estimates();
        let elem = est.flops_per_s(1, OpClass::Elementwise);
        // True node: the conv part at 16 GFLOP/s (the prior says 20), and a
        // fifth of each job's time in elementwise ops at their prior rate
        // (the shares of the default model's tiles).
        let conv = 16e9;
        let mut work = [0u64; CLASSES];
        work[class_index(OpClass::Conv3x3)] = 1_600_000_000;
        work[class_index(OpClass::Elementwise)] = (0.025 * elem) as u64;
        let seconds = 1.6e9 / conv + 0.025;
        for _ in 0..10 {
            p.observe_mixed_job(1, OpClass::Conv3x3, 16, &work, seconds)
                .expect("observe");
        }
        let est = p.estimates();
        let learnt = est.flops_per_s(1, OpClass::Conv3x3);
        assert!((learnt / conv - 1.0).abs() < 0.03, "{learnt} vs {conv}");
        let predicted: f64 = ALL_CLASSES
            .iter()
            .enumerate()
            .map(|(i, &c)| est.compute_time(1, c, work[i] as f64))
            .sum();
        assert!(
            (predicted / seconds - 1.0).abs() < 0.03,
            "{predicted} vs {seconds}"
        );
        // Other classes priced at more than the whole span: their rates are
        // off, and the job teaches nothing rather than a runaway conv rate.
        let mut heavy = work;
        heavy[class_index(OpClass::Elementwise)] = (0.2 * elem) as u64;
        p.observe_mixed_job(1, OpClass::Conv3x3, 16, &heavy, 0.15)
            .expect("heavy");
        assert_eq!(p.estimates().flops_per_s(1, OpClass::Conv3x3), learnt);
        assert!(
            p.observe_mixed_job(9, OpClass::Conv3x3, 1, &work, 0.1)
                .is_err()
        );
    }

    #[test]
    fn short_jobs_faster_than_the_rate_allows_raise_the_rate() {
        let cluster = cluster(&[("d", 20.0), ("e", 20.0), ("c", 20.0)]);
        let mut p = Profiler::new(&cluster);
        p.set_overhead(1, [0.0, 0.0]).expect("overhead");
        // Two slow long spans (contention) halve the estimate...
        for _ in 0..2 {
            p.observe_job(1, OpClass::Conv3x3, 5, 1_200_000_000, 0.12)
                .expect("slow");
        }
        let low = p.estimates().flops_per_s(1, OpClass::Conv3x3);
        assert!(low < 14e9, "{low}");
        // ...then short jobs at the true 20 GFLOP/s must bring it back.
        for _ in 0..8 {
            p.observe_short_job(1, OpClass::Conv3x3, 5, 600_000_000, 0.03)
                .expect("short");
        }
        let est = p.estimates();
        let predicted = est.overhead(1, 5) + est.compute_time(1, OpClass::Conv3x3, 6e8);
        assert!((predicted / 0.03 - 1.0).abs() < 0.15, "{predicted}");
    }

    #[test]
    fn noisy_short_jobs_do_not_push_the_rate_up() {
        let cluster = cluster(&[("d", 20.0), ("e", 20.0), ("c", 20.0)]);
        let mut p = Profiler::new(&cluster);
        p.set_overhead(1, [0.0002, 0.0]).expect("overhead");
        let prior = p.estimates().flops_per_s(1, OpClass::Conv3x3);
        // True node: the prior rate and a 0.2 ms fixed cost, with ±8 %
        // run-to-run noise on 30 ms jobs: half of them run faster than
        // their work at the true rate, which must not read as a faster node.
        let mut s: u64 = 7;
        for _ in 0..60 {
            let u = crate::testutil::uniform(&mut s);
            let seconds = (0.0002 + 6e8 / prior) * (0.92 + 0.16 * u);
            p.observe_short_job(1, OpClass::Conv3x3, 5, 600_000_000, seconds)
                .expect("short");
        }
        let rate = p.estimates().flops_per_s(1, OpClass::Conv3x3);
        assert!((rate / prior - 1.0).abs() < 0.02, "{rate} vs {prior}");
    }

    #[test]
    fn short_jobs_bring_down_a_fixed_cost_calibrated_too_high() {
        let cluster = cluster(&[("d", 10.0), ("e", 10.0), ("c", 10.0)]);
        let mut p = Profiler::new(&cluster);
        p.set_overhead(1, [0.0055, 0.0]).expect("overhead");
        // True node: 0.5 ms per job; 1-op jobs of negligible pooling work.
        let mut work = [0u64; CLASSES];
        work[class_index(OpClass::Pool)] = 10_000;
        for _ in 0..12 {
            p.observe_mixed_job(1, OpClass::Pool, 1, &work, 0.0005)
                .expect("observe");
        }
        let fixed = p.estimates().overhead(1, 1);
        assert!((fixed / 0.0005 - 1.0).abs() < 0.1, "{fixed}");
    }

    #[test]
    fn short_jobs_teach_the_fixed_cost_of_a_job() {
        let cluster = cluster(&[("d", 10.0), ("e", 10.0), ("c", 10.0)]);
        let mut p = Profiler::new(&cluster);
        p.set_overhead(1, [0.0005, 0.0]).expect("overhead");
        // True node: 8 ms per job + 10 GFLOP/s; short jobs of 1-20 MFLOP.
        for k in 0..12u64 {
            let work = 1_000_000 + (k % 4) * 6_000_000;
            p.observe_short_job(1, OpClass::Conv3x3, 5, work, 0.008 + work as f64 / 1e10)
                .expect("observe");
        }
        let est = p.estimates();
        let predicted = est.overhead(1, 5) + est.compute_time(1, OpClass::Conv3x3, 1e7);
        assert!((predicted / 0.009 - 1.0).abs() < 0.1, "{predicted}");
        assert!(p.observe_short_job(9, OpClass::Conv3x3, 1, 1, 0.1).is_err());
    }
}
