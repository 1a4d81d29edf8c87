//! The full cost model: predicted makespan of a labelling (op → tier).
//!
//! `makespan = device + up + Σ_blocks block + back + cloud`, where
//! - `device`/`cloud`: the tier's ops run on its node at its per-class throughput;
//! - `up`/`back`: the device→coordinator and coordinator→cloud transfers of
//!   every tensor crossing that cut, each tensor once however many ops read it
//!   (a tensor produced on the device and read in the cloud crosses both);
//!   a link's delay is paid once per request if any op lies beyond it;
//! - a tiled block: `max` over its edge nodes of tile input transfer (halo
//!   included) + tile compute (halo recomputation included) + tile output
//!   transfer; a non-tileable edge op runs whole on the coordinator.
//!
//! Consecutive requests pipeline across the five stages (different
//! resources), so the steady-state period is the slowest stage; it is
//! reported next to the makespan.

use crate::cluster::{Cluster, NodeIdx, Tier};
use crate::dag::{Geometry, ModelDag, OpIdx, TensorIdx};
use crate::error::{Error, Result};
use crate::halo::{HaloModel, block_inputs, block_outputs};
use crate::profiler::Estimates;
use crate::shares::{TilePlan, retime_block, solve_block};

/// Delay and inverse bandwidth of one directed link.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LinkCost {
    /// One-way delay, seconds.
    pub delay_s: f64,
    /// Seconds per byte.
    pub s_per_byte: f64,
}

impl LinkCost {
    /// Time to send `bytes` (0 bytes still pays the delay).
    pub fn time(&self, bytes: f64) -> f64 {
        self.delay_s + bytes * self.s_per_byte
    }

    fn between(cluster: &Cluster, est: &Estimates, from: NodeIdx, to: NodeIdx) -> Result<LinkCost> {
        if from == to {
            return Ok(LinkCost::default());
        }
        let l = est
            .links
            .get(from)
            .and_then(|r| r.get(to))
            .and_then(|l| l.as_ref())
            .ok_or_else(|| Error::MissingLink {
                from: cluster.nodes[from].name.clone(),
                to: cluster.nodes[to].name.clone(),
            })?;
        Ok(LinkCost {
            delay_s: l.delay.mean,
            s_per_byte: 1.0 / l.bandwidth.mean,
        })
    }
}

/// Which node plays which role in a plan, and the links between them.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// The device node.
    pub device: NodeIdx,
    /// The edge node that receives the device's tensors, scatters tiles and stitches them.
    pub coordinator: NodeIdx,
    /// All edge nodes (the coordinator included), in cluster order.
    pub edges: Vec<NodeIdx>,
    /// The cloud node used; `None` for a cluster without one (plans then
    /// keep to the device and edge tiers).
    pub cloud: Option<NodeIdx>,
    /// Device → coordinator.
    pub up: LinkCost,
    /// Coordinator → cloud (`None` without a cloud node).
    pub back: Option<LinkCost>,
    /// Coordinator → each edge node (aligned with `edges`).
    pub scatter: Vec<LinkCost>,
    /// Each edge node → coordinator (aligned with `edges`).
    pub gather: Vec<LinkCost>,
    /// The device and the cloud node as tile workers (those with links both
    /// ways to the coordinator): they are idle while the edge part runs.
    pub helpers: Vec<Worker>,
}

/// A node that can take tiles, with its links from and to the coordinator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Worker {
    /// The node.
    pub node: NodeIdx,
    /// Its tier.
    pub tier: Tier,
    /// Coordinator → node.
    pub scatter: LinkCost,
    /// Node → coordinator.
    pub gather: LinkCost,
}

impl Topology {
    /// Tile workers for a block: the edge nodes, then the device and the
    /// cloud node where `helpers` allows their tier (`[device, cloud]`).
    pub fn workers(&self, helpers: [bool; 2]) -> Vec<Worker> {
        let mut v: Vec<Worker> = self
            .edges
            .iter()
            .zip(self.scatter.iter().zip(&self.gather))
            .map(|(&node, (&scatter, &gather))| Worker {
                node,
                tier: Tier::Edge,
                scatter,
                gather,
            })
            .collect();
        v.extend(self.helpers.iter().copied().filter(|w| match w.tier {
            Tier::Device => helpers[0],
            Tier::Cloud => helpers[1],
            Tier::Edge => false,
        }));
        v
    }
}

impl Topology {
    /// Picks the cloud node (the fastest) and the coordinator: of the edge
    /// nodes linked to the device, one linked to the most other edge nodes
    /// and the cloud (the star's centre; the first in the file was picked,
    /// and a file another edge node could coordinate failed to plan), then
    /// the fastest device link, ties to the first in the cluster file, so
    /// that a running coordinator does not move when compute estimates
    /// change. Edge nodes (and a cloud) with no link to the coordinator are
    /// left out: the live part of a cluster whose coordinator is down may
    /// have no node linked to all the others.
    pub fn choose(cluster: &Cluster, est: &Estimates) -> Result<Topology> {
        cluster.validate_parts()?;
        if est.throughput.len() != cluster.nodes.len() || est.links.len() != cluster.nodes.len() {
            return Err(Error::Measurement(
                "estimates do not describe this cluster's nodes".into(),
            ));
        }
        let device = cluster.tier_nodes(Tier::Device)[0];
        let edges = cluster.tier_nodes(Tier::Edge);
        let conv = tile_engine::ir::OpClass::Conv3x3;
        let cloud = cluster
            .tier_nodes(Tier::Cloud)
            .into_iter()
            .max_by(|&a, &b| {
                est.flops_per_s(a, conv)
                    .total_cmp(&est.flops_per_s(b, conv))
            });
        let linked = |a: NodeIdx, b: NodeIdx| cluster.link(a, b).is_some();
        let reach = |e: NodeIdx| {
            edges.iter().filter(|&&o| o != e && linked(e, o)).count()
                + usize::from(cloud.is_some_and(|c| linked(e, c)))
        };
        let mut coordinator = None;
        let mut best = (0, f64::INFINITY);
        for &e in &edges {
            if let Ok(l) = LinkCost::between(cluster, est, device, e) {
                let (r, t) = (reach(e), l.time(1e6));
                if coordinator.is_none() || r > best.0 || (r == best.0 && t < best.1) {
                    best = (r, t);
                    coordinator = Some(e);
                }
            }
        }
        let coordinator = coordinator.ok_or_else(|| Error::MissingLink {
            from: cluster.nodes[device].name.clone(),
            to: "any edge node".into(),
        })?;
        let edges: Vec<NodeIdx> = edges
            .into_iter()
            .filter(|&e| e == coordinator || linked(coordinator, e))
            .collect();
        let cloud = cloud.filter(|&c| linked(coordinator, c));
        let scatter = edges
            .iter()
            .map(|&e| LinkCost::between(cluster, est, coordinator, e))
            .collect::<Result<Vec<_>>>()?;
        let gather = edges
            .iter()
            .map(|&e| LinkCost::between(cluster, est, e, coordinator))
            .collect::<Result<Vec<_>>>()?;
        let helpers = [
            Some((device, Tier::Device)),
            cloud.map(|c| (c, Tier::Cloud)),
        ]
        .into_iter()
        .flatten()
        .filter_map(|(node, tier)| {
            Some(Worker {
                node,
                tier,
                scatter: LinkCost::between(cluster, est, coordinator, node).ok()?,
                gather: LinkCost::between(cluster, est, node, coordinator).ok()?,
            })
        })
        .collect();
        Ok(Topology {
            device,
            coordinator,
            up: LinkCost::between(cluster, est, device, coordinator)?,
            back: cloud
                .map(|c| LinkCost::between(cluster, est, coordinator, c))
                .transpose()?,
            edges,
            cloud,
            scatter,
            gather,
            helpers,
        })
    }
}

/// Knobs of the planner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanOptions {
    /// Most ops fused into one tiled block (DeepThings fuses up to ~16 layers).
    pub max_fuse_depth: usize,
    /// Rounds of re-scaling the additive edge model to the full model's edge time.
    pub calibration_rounds: usize,
    /// Let the device (`[0]`) and the cloud node (`[1]`) take tiles of edge
    /// blocks too, when the strategy uses their tier and the planner
    /// predicts it pays; both off, only edge nodes tile, as in a classic
    /// vertical split. The cloud is off by default: its tiles' feature maps
    /// would cross the backbone, the link tessera keeps free of them.
    pub tile_helpers: [bool; 2],
    /// Smallest tile worth running, in output values (pixels × channels)
    /// of the map of the block's heaviest op: below it a GPU (and lavapipe all the
    /// more) runs far under its whole-map FLOP rate, which the planner's
    /// per-class rates do not capture, so smaller tiles are not proposed
    /// (a block whose map is smaller runs as one tile). 32×32 pixels of 64
    /// channels; counted in values, not pixels, because a wide layer keeps
    /// the GPU busy on a small map: lavapipe ran 8×32-pixel strips of
    /// 256-channel 3×3 convs at 94 % of the whole map's FLOP rate.
    pub min_tile_values: usize,
    /// Seconds each fused block after the first of a run is charged when
    /// the run is cut: a cut adds a gather, stitch, slice and scatter round
    /// at the coordinator whose small jobs the block estimate undercounts
    /// (the cut after UPN3 in the default model, five runs: predicted 6.0,
    /// 6.3, 6.5, 13.1 ms, replayed 9.6, 8.0, 8.9, 19.9 ms: 1.7–6.8 ms
    /// more), so a cut must win by more than it.
    pub block_round_s: f64,
    /// A plan spread over several nodes is chosen over the best plan that
    /// runs on one node only when it is predicted this much faster (0.1 =
    /// 10 %): it has more jobs, transfers and tiles to be mispredicted by,
    /// and on a small model the two are often within that error.
    pub single_node_margin: f64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_fuse_depth: 16,
            calibration_rounds: 3,
            tile_helpers: [true, false],
            min_tile_values: 32 * 32 * 64,
            block_round_s: 0.005,
            single_node_margin: 0.1,
        }
    }
}

impl PlanOptions {
    /// Which helper tiers (`[device, cloud]`) take tiles under a strategy
    /// that uses the `allowed` tiers (`[device, edge, cloud]`).
    pub fn helper_tiers(&self, allowed: [bool; 3]) -> [bool; 2] {
        let on = self.tile_helpers;
        [on[0] && allowed[0], on[1] && allowed[2]]
    }
}

/// Solved blocks by structure (see [`structure_key`]), one map per set of
/// helper tiers allowed to take tiles (index: device + 2 × cloud).
type BlockCache = [rustc_hash::FxHashMap<Vec<u64>, BlockPlan>; 4];

/// Everything [`solve_block`] reads of a block, with op and tensor indices
/// replaced by positions: two blocks with equal keys get the same plan. A
/// deep model repeats its blocks (a ResNet stage's basic blocks), so the
/// cut search's thousands of candidate blocks are a few hundred shapes;
/// keyed by op indices, solving each one was most of the planning time.
fn structure_key(dag: &ModelDag, ops: &[OpIdx], key: &mut Vec<u64>) {
    fn tensor(key: &mut Vec<u64>, t: &crate::dag::DagTensor) {
        match t.hw {
            Some([h, w]) => key.extend([h as u64, w as u64]),
            None => key.extend([u64::MAX, u64::MAX]),
        }
        key.extend([
            t.bytes.to_bits(),
            t.elements.to_bits(),
            u64::from(t.producer.is_none()),
            u64::from(t.is_output),
        ]);
    }
    // The cut search's blocks are runs of ascending op indices: positions
    // by binary search there, by a scan otherwise.
    let sorted = ops.windows(2).all(|w| w[0] < w[1]);
    let position = |o: OpIdx| {
        if sorted {
            ops.binary_search(&o).ok()
        } else {
            ops.iter().position(|&x| x == o)
        }
    };
    key.clear();
    // The model's first block may start beside the device's upload.
    key.push(u64::from(ops.first() == Some(&0)));
    let mut outside: Vec<TensorIdx> = Vec::new();
    for &o in ops {
        let op = &dag.ops[o];
        key.extend([op.class as u64, op.flops.to_bits()]);
        match op.geometry {
            Geometry::Window {
                extent,
                stride,
                pad,
            }
            | Geometry::Transposed {
                extent,
                stride,
                pad,
            } => {
                let tag = if matches!(op.geometry, Geometry::Window { .. }) {
                    0
                } else {
                    3
                };
                key.extend(
                    [
                        tag, extent[0], extent[1], stride[0], stride[1], pad[0], pad[1],
                    ]
                    .map(|x| x as u64),
                );
            }
            Geometry::Shift { offset } => key.extend([4, offset[0] as u64, offset[1] as u64]),
            Geometry::Pointwise => key.push(1),
            Geometry::Global => key.push(2),
        }
        for &t in &op.inputs {
            let within = dag.tensors[t].producer.and_then(position);
            match within {
                Some(at) => key.extend([0, at as u64]),
                None => {
                    let at = outside.iter().position(|&x| x == t).unwrap_or_else(|| {
                        outside.push(t);
                        outside.len() - 1
                    });
                    key.extend([1, at as u64]);
                    tensor(key, &dag.tensors[t]);
                }
            }
        }
        let out = &dag.tensors[op.output];
        key.push(u64::MAX - 1);
        tensor(key, out);
        key.push(u64::from(
            out.consumers.is_empty() || out.consumers.iter().any(|&c| position(c).is_none()),
        ));
    }
}

/// Everything an evaluation needs, shared by all candidates of one planning call.
pub struct Context<'a> {
    /// The model.
    pub dag: &'a ModelDag,
    /// The cluster.
    pub cluster: &'a Cluster,
    /// Current estimates.
    pub est: &'a Estimates,
    /// Roles and links.
    pub topo: Topology,
    /// Tile geometry.
    pub halo: &'a dyn HaloModel,
    /// Knobs.
    pub opts: PlanOptions,
    /// Solved blocks, keyed by their structure and helper tiers: candidates share most blocks.
    cache: std::cell::RefCell<BlockCache>,
    /// The key being built, reused: the cut search looks up thousands of blocks.
    key: std::cell::RefCell<Vec<u64>>,
}

impl<'a> Context<'a> {
    /// Builds the context (chooses the topology).
    pub fn new(
        dag: &'a ModelDag,
        cluster: &'a Cluster,
        est: &'a Estimates,
        halo: &'a dyn HaloModel,
        opts: PlanOptions,
    ) -> Result<Context<'a>> {
        Ok(Context {
            topo: Topology::choose(cluster, est)?,
            dag,
            cluster,
            est,
            halo,
            opts,
            cache: Default::default(),
            key: Default::default(),
        })
    }

    fn block(&self, ops: &[OpIdx], helpers: [bool; 2]) -> BlockPlan {
        let b = self.solved(ops, helpers, BlockPlan::clone);
        BlockPlan {
            ops: ops.to_vec(),
            ..b
        }
    }

    /// Predicted time of a block (solved once per structure; no copy of its plan).
    fn block_time(&self, ops: &[OpIdx], helpers: [bool; 2]) -> f64 {
        self.solved(ops, helpers, |b| b.time_s)
    }

    /// `read` of the cached plan of a block with the structure of `ops`, solved first if new.
    fn solved<T>(&self, ops: &[OpIdx], helpers: [bool; 2], read: impl Fn(&BlockPlan) -> T) -> T {
        let map = usize::from(helpers[0]) + 2 * usize::from(helpers[1]);
        let key = {
            let mut key = self.key.borrow_mut();
            structure_key(self.dag, ops, &mut key);
            if let Some(b) = self.cache.borrow()[map].get(key.as_slice()) {
                return read(b);
            }
            key.clone()
        };
        let b = solve_block(self, ops, &self.topo.workers(helpers));
        let out = read(&b);
        self.cache.borrow_mut()[map].insert(key, b);
        out
    }

    /// Predicts the schedule of a labelling (`labels[op]`) with every tier
    /// allowed to take tiles, choosing the block boundaries and solving each
    /// block's grid and shares.
    pub fn evaluate(&self, labels: &[Tier]) -> Prediction {
        self.evaluate_in(labels, [true; 3])
    }

    /// [`Context::evaluate`] for a strategy that uses only the `allowed`
    /// tiers (`[device, edge, cloud]`): a tier outside it takes no tiles.
    pub fn evaluate_in(&self, labels: &[Tier], allowed: [bool; 3]) -> Prediction {
        let helpers = self.opts.helper_tiers(allowed);
        let mut blocks = Vec::new();
        for run in edge_runs(self.dag, labels) {
            blocks.extend(self.segment(&run, helpers));
        }
        self.assemble(labels, blocks)
    }

    /// Cuts a run of edge ops into the fused blocks with the least summed
    /// predicted time (dynamic programming over cut points, blocks at most
    /// `max_fuse_depth` long). Deep blocks recompute wide halos; short ones
    /// pay a scatter and gather per block: the balance depends on the model,
    /// the grid and the links, so it is solved rather than fixed.
    fn segment(&self, run: &[OpIdx], helpers: [bool; 2]) -> Vec<BlockPlan> {
        if run.len() == 1 || !self.dag.ops[run[0]].tileable() {
            return vec![self.block(run, helpers)];
        }
        let depth = self.opts.max_fuse_depth.max(1);
        let n = run.len();
        // best[j]: least time for run[..j], with the start of its last block.
        let mut best: Vec<(f64, usize)> = vec![(0.0, 0); n + 1];
        for j in 1..=n {
            best[j] = (j.saturating_sub(depth)..j)
                .map(|i| {
                    let round = if i > 0 { self.opts.block_round_s } else { 0.0 };
                    (best[i].0 + self.block_time(&run[i..j], helpers) + round, i)
                })
                .min_by(|x, y| x.0.total_cmp(&y.0))
                .unwrap_or((f64::INFINITY, 0));
        }
        let mut cuts = vec![n];
        while let Some(&j) = cuts.last() {
            if j == 0 {
                break;
            }
            cuts.push(best[j].1);
        }
        cuts.reverse();
        cuts.windows(2)
            .map(|w| self.block(&run[w[0]..w[1]], helpers))
            .collect()
    }

    /// Re-predicts a plan under this context's estimates, keeping its cuts, grids and shares.
    pub fn retime(&self, prev: &Prediction) -> Prediction {
        let blocks = prev.blocks.iter().map(|b| retime_block(self, b)).collect();
        self.assemble(&prev.labels, blocks)
    }

    fn assemble(&self, labels: &[Tier], blocks: Vec<BlockPlan>) -> Prediction {
        let dag = self.dag;
        let est = self.est;
        let tier_time = |tier: Tier, node: NodeIdx| -> f64 {
            let ops = labels.iter().filter(|l| **l == tier).count();
            // A tier with no ops runs no job: no job overhead either (the
            // cloud was charged one in plans that never reach it).
            if ops == 0 {
                return 0.0;
            }
            dag.ops
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == tier)
                .map(|(o, _)| est.compute_time(node, o.class, o.flops))
                .sum::<f64>()
                + est.overhead(node, ops)
        };
        let (up_bytes, up_back_bytes, down_bytes) = cut_bytes(dag, labels);
        let max_tier = labels.iter().copied().max().unwrap_or(Tier::Device);
        let up_s = if max_tier >= Tier::Edge || up_bytes > 0.0 {
            self.topo.up.time(up_bytes)
        } else {
            0.0
        };
        // Labels on a cloud tier the cluster lacks are never a plan.
        let (back_s, down_s) = match (max_tier >= Tier::Cloud, self.topo.back) {
            (false, _) => (0.0, 0.0),
            (true, Some(back)) => {
                let down_s = if down_bytes > 0.0 {
                    back.time(down_bytes)
                } else {
                    0.0
                };
                (back.time(up_back_bytes) + down_s, down_s)
            }
            (true, None) => (f64::INFINITY, 0.0),
        };
        let back_bytes = up_back_bytes + down_bytes;
        let edge_s = blocks.iter().map(|b| b.time_s).sum();
        let device_s = tier_time(Tier::Device, self.topo.device);
        let cloud_s = match self.topo.cloud {
            Some(cloud) => tier_time(Tier::Cloud, cloud),
            None if labels.contains(&Tier::Cloud) => f64::INFINITY,
            None => 0.0,
        };
        let stages = [device_s, up_s, edge_s, back_s, cloud_s];
        Prediction {
            labels: labels.to_vec(),
            device_s,
            up_bytes,
            up_s,
            blocks,
            edge_s,
            back_bytes,
            back_s,
            down_bytes,
            down_s,
            cloud_s,
            makespan_s: stages.iter().sum(),
            period_s: stages.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// Bytes crossing the device|edge and edge|cloud cuts upwards (each tensor
/// once per cut it crosses, from its producer's tier to its furthest
/// consumer's tier), and the bytes of model outputs the cloud computes,
/// which cross the backbone back down. The coordinator, on the edge tier,
/// gathers the model's outputs: one the device computes goes up to it, one
/// the cloud computes comes back to it (the device-only and cloud-only
/// plans of the default model return a 768 KiB image, 68 and 156 ms on
/// the demo's links, which the predictions used to leave out).
pub fn cut_bytes(dag: &ModelDag, labels: &[Tier]) -> (f64, f64, f64) {
    let mut cuts = [0.0; 2];
    let mut down = 0.0;
    for t in &dag.tensors {
        let src = t.producer.map_or(Tier::Device, |p| labels[p]);
        let mut dst = t.consumers.iter().map(|&c| labels[c]).max().unwrap_or(src);
        if t.is_output {
            dst = dst.max(Tier::Edge);
            if src == Tier::Cloud {
                down += t.bytes;
            }
        }
        for (k, cut) in cuts.iter_mut().enumerate() {
            if src.rank() <= k && dst.rank() > k {
                *cut += t.bytes;
            }
        }
    }
    (cuts[0], cuts[1], down)
}

/// Groups the edge ops (topological order) into runs of consecutive
/// tileable ops, which [`Context::evaluate`] cuts into fused blocks, and
/// runs of consecutive non-tileable ops, each of which runs whole as one
/// job (a classifier's pool, flatten and dense head: one round trip, not
/// one per op).
pub fn edge_runs(dag: &ModelDag, labels: &[Tier]) -> Vec<Vec<OpIdx>> {
    let mut runs = Vec::new();
    let mut cur: Vec<OpIdx> = Vec::new();
    let mut cur_whole = false;
    for (i, op) in dag.ops.iter().enumerate() {
        if labels[i] != Tier::Edge {
            continue;
        }
        let whole = !op.tileable();
        if whole != cur_whole && !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
        cur_whole = whole;
        cur.push(i);
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

/// Cuts the edge ops into blocks of at most `max_depth` consecutive ops of
/// one run ([`edge_runs`]): the fixed grouping the additive model's halo
/// estimate assumes.
pub fn edge_blocks(dag: &ModelDag, labels: &[Tier], max_depth: usize) -> Vec<Vec<OpIdx>> {
    edge_runs(dag, labels)
        .into_iter()
        .flat_map(|run| {
            run.chunks(max_depth.max(1))
                .map(<[OpIdx]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Predicted time of one edge node's tile in a block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeTime {
    /// The edge node.
    pub node: NodeIdx,
    /// Receiving the tile (halo included) from the coordinator.
    pub in_s: f64,
    /// Running the block on the tile.
    pub compute_s: f64,
    /// Returning the output tile.
    pub out_s: f64,
    /// FLOPs of the tile (halo recomputation included).
    pub flops: f64,
    /// Input bytes of the tile (halo included).
    pub in_bytes: f64,
    /// Output bytes of the tile.
    pub out_bytes: f64,
    /// Seconds before the block's start at which the tile could begin: the
    /// device's tiles of the model's first block, when it reads only model
    /// inputs, run on the image the device holds while it uploads the rest.
    pub head_start_s: f64,
}

impl NodeTime {
    /// End-to-end time of the tile, from the block's start.
    pub fn total(&self) -> f64 {
        (self.in_s + self.compute_s - self.head_start_s).max(0.0) + self.out_s
    }
}

/// One block of the edge part, with its grid and shares.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockPlan {
    /// Ops of the block, topological order.
    pub ops: Vec<OpIdx>,
    /// Grid and shares; `None` for a non-tileable op run whole on the coordinator.
    pub tiling: Option<TilePlan>,
    /// Bytes of the block's input maps (no halo).
    pub in_bytes: f64,
    /// Bytes of the block's outputs.
    pub out_bytes: f64,
    /// FLOPs of the block, untiled.
    pub flops: f64,
    /// Per participating node.
    pub node_times: Vec<NodeTime>,
    /// Block time: the slowest node.
    pub time_s: f64,
}

impl BlockPlan {
    pub(crate) fn io_bytes(dag: &ModelDag, ops: &[OpIdx]) -> (f64, f64) {
        let i = block_inputs(dag, ops)
            .iter()
            .map(|&t| dag.tensors[t].bytes)
            .sum();
        let o = block_outputs(dag, ops)
            .iter()
            .map(|&t| dag.tensors[t].bytes)
            .sum();
        (i, o)
    }
}

/// The predicted schedule of one labelling.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Tier of each op.
    pub labels: Vec<Tier>,
    /// Device compute, seconds.
    pub device_s: f64,
    /// Bytes crossing the device|edge cut.
    pub up_bytes: f64,
    /// Device → coordinator transfer, seconds.
    pub up_s: f64,
    /// Edge blocks in order.
    pub blocks: Vec<BlockPlan>,
    /// Sum of block times.
    pub edge_s: f64,
    /// Bytes crossing the edge|cloud cut, both ways (model outputs the cloud computes come back).
    pub back_bytes: f64,
    /// Coordinator ⇄ cloud transfers, seconds.
    pub back_s: f64,
    /// Of `back_bytes`, the model outputs the cloud sends back down.
    pub down_bytes: f64,
    /// Of `back_s`, the time those outputs take (after the cloud's compute).
    pub down_s: f64,
    /// Cloud compute, seconds.
    pub cloud_s: f64,
    /// Latency of one request.
    pub makespan_s: f64,
    /// Steady-state time between requests when consecutive requests pipeline.
    pub period_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{DagOp, DagTensor};
    use tile_engine::ir::OpClass;

    /// 3×3 convs on 16×16 maps; op `i` reads the tensors `reads[i]`
    /// (0 is the model input, `k + 1` op `k`'s output).
    fn dag(reads: &[&[usize]]) -> ModelDag {
        let map = |producer: Option<usize>| DagTensor {
            name: String::new(),
            bytes: 4096.0,
            elements: 1024.0,
            hw: Some([16, 16]),
            producer,
            consumers: Vec::new(),
            is_output: false,
        };
        let mut tensors = vec![map(None)];
        let mut ops = Vec::new();
        for (i, r) in reads.iter().enumerate() {
            tensors.push(map(Some(i)));
            ops.push(DagOp {
                name: format!("op{i}"),
                class: OpClass::Conv3x3,
                flops: 1e6,
                inputs: r.to_vec(),
                output: i + 1,
                geometry: Geometry::Window {
                    extent: [3, 3],
                    stride: [1, 1],
                    pad: [1, 1],
                },
            });
        }
        ModelDag::new(ops, tensors).expect("dag")
    }

    /// The coordinator is the edge node the links make the star's centre,
    /// not the first linked to the device; an edge node the coordinator
    /// cannot reach is left out of a live sub-cluster's plan, not an error.
    #[test]
    fn the_coordinator_is_the_edge_node_linked_to_the_others() {
        let link = |a: &str, b: &str| {
            format!(
                "[[links]]\nfrom = \"{a}\"\nto = \"{b}\"\nbandwidth_mbps = 100.0\ndelay_ms = 1.0\n"
            )
        };
        let node = |n: &str, t: &str| {
            format!("[[nodes]]\nname = \"{n}\"\ntier = \"{t}\"\naddress = \"h:1\"\ngflops = 1.0\n")
        };
        let text = [
            node("dev", "device"),
            node("e0", "edge"),
            node("e1", "edge"),
            node("e2", "edge"),
            link("dev", "e0"),
            link("dev", "e1"),
            link("e0", "e1"),
            link("e1", "e2"),
        ]
        .concat();
        let cluster: Cluster = toml::from_str(&text).expect("cluster");
        cluster.validate().expect("e1 can coordinate");
        let est = Estimates::from_cluster(&cluster);
        let topo = Topology::choose(&cluster, &est).expect("topology");
        assert_eq!(cluster.nodes[topo.coordinator].name, "e1");
        assert_eq!(topo.edges.len(), 3);
        // e1 down: e0 coordinates the edge nodes it reaches.
        let mut live = cluster.clone();
        live.nodes.retain(|n| n.name != "e1");
        live.links.retain(|l| l.from != "e1" && l.to != "e1");
        let est = Estimates::from_cluster(&live);
        let topo = Topology::choose(&live, &est).expect("a plan without e2");
        assert_eq!(live.nodes[topo.coordinator].name, "e0");
        assert_eq!(topo.edges, vec![topo.coordinator]);
    }

    #[test]
    fn structure_keys_match_repeated_blocks_only() {
        // Ops 1-3: x, y, z(y, x); ops 4-6: x', y', z'(y', y'); then a chain.
        let d = dag(&[&[0], &[1], &[2], &[3, 2], &[4], &[5], &[6, 6], &[7], &[8]]);
        let key = |ops: std::ops::Range<usize>| {
            let mut key = Vec::new();
            structure_key(&d, &ops.collect::<Vec<_>>(), &mut key);
            key
        };
        // Two links of a chain: x', y' and the chain's last two ops.
        assert_eq!(key(4..6), key(7..9));
        // The model's first block starts beside the device's upload.
        assert_ne!(key(0..2), key(7..9));
        // Same ops, but x's output is also read after the block 1..3 (by z).
        assert_ne!(key(1..3), key(4..6));
        // z reads the block's first and second op, z' its second twice.
        assert_ne!(key(1..4), key(4..7));
    }
}
