//! The coordinator: connects to the node daemons, sends them the model once,
//! turns the planner's plan into jobs, dispatches tiles by the plan's shares
//! (idle edge nodes steal queued tiles), re-dispatches the tiles of a node
//! that dies or stalls, stitches the results, and feeds every measured span
//! back into the profiler.
//!
//! Data moves in a star around the coordinator, which sits where the
//! planner puts it (of the edge nodes linked to the device, the one linked
//! to the most others and the cloud, then the best device link): device →
//! coordinator, coordinator ⇄ edge nodes, coordinator → cloud. That is the
//! planner's cost model, so predicted and measured runs describe the same
//! traffic.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use planner::cluster::Backend;
use planner::cost::Topology;
use planner::profiler::{CLASSES, class_index};
use planner::{Cluster, Estimates, Prediction, Profiler, Tier};
use serde::Serialize;
use tile_engine::ir::OpClass;
use tile_engine::tiling::{Block, Grid, paste_region};
use tile_engine::{Graph, Tensor};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use transport::{Connection, Control, Endpoint, TileKind};

use super::bundle::{self, Bundle};
use super::calibrate::class_of;
use super::inbox::Inbox;
use super::job::{gather_inputs, plan_job};
use super::node::now_us;
use super::wire::{self, INPUT, MODEL_CHUNK, Msg, OUTPUT};
use super::{ClusterError, calibrate};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One connected node as the coordinator sees it.
pub struct Peer {
    /// Node name.
    pub name: String,
    /// Index in the cluster file.
    pub idx: usize,
    conn: Connection,
    inbox: Arc<Inbox>,
    jobs: Mutex<HashMap<u64, oneshot::Sender<Msg>>>,
    models: Mutex<HashMap<String, oneshot::Sender<Msg>>>,
    calibration: watch::Sender<Option<Vec<(String, f64)>>>,
    executor: Mutex<String>,
    alive: AtomicBool,
    /// Hashes of the models whose op profile the node said it holds (noted
    /// from every `ModelState` it sends).
    profiled: Mutex<HashSet<String>>,
}

impl Peer {
    /// Resolves once nothing at all has arrived from the node for `quiet`
    /// (not even acknowledgements), with why; pending while it talks.
    async fn silent_for(&self, quiet: Duration) -> String {
        let mut heard = self.conn.quinn().stats().udp_rx.datagrams;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.conn.quinn().stats().udp_rx.datagrams;
            if now != heard {
                (heard, since) = (now, Instant::now());
            } else if since.elapsed() >= quiet {
                return format!(
                    "stopped answering: nothing heard from it for {} s",
                    quiet.as_secs()
                );
            }
        }
    }

    /// Why an answer from this node will not come: its connection ended.
    fn closed_why(&self) -> String {
        self.conn
            .ended()
            .unwrap_or_else(|| "connection closed".to_string())
    }

    async fn start(conn: Connection, idx: usize) -> Arc<Peer> {
        let (calibration, _) = watch::channel(None);
        let peer = Arc::new(Peer {
            name: conn.peer().to_string(),
            idx,
            conn,
            inbox: Arc::new(Inbox::default()),
            jobs: Mutex::new(HashMap::new()),
            models: Mutex::new(HashMap::new()),
            calibration,
            executor: Mutex::new(String::new()),
            alive: AtomicBool::new(true),
            profiled: Mutex::new(HashSet::new()),
        });
        {
            let p = peer.clone();
            tokio::spawn(async move {
                while let Some(t) = p.conn.recv_tile().await {
                    if !p.inbox.put(t.header, t.payload.into_vec()) {
                        tracing::warn!(peer = %p.name, "result inbox full");
                    }
                }
            });
        }
        {
            let p = peer.clone();
            tokio::spawn(async move {
                while let Some(c) = p.conn.recv_control().await {
                    let Control::PlanUpdate(u) = c else {
                        if let Control::Error(e) = c {
                            tracing::warn!(peer = %p.name, "error frame: {}", e.message);
                        }
                        continue;
                    };
                    match Msg::parse(&u.body) {
                        Ok(m) => p.dispatch(m),
                        Err(e) => tracing::warn!(peer = %p.name, "{e}"),
                    }
                }
                p.alive.store(false, Ordering::Release);
                // Wake every waiter: their senders drop with the map entries.
                lock(&p.jobs).clear();
                lock(&p.models).clear();
            });
        }
        peer
    }

    fn dispatch(&self, m: Msg) {
        match &m {
            Msg::Done { job, .. } | Msg::Failed { job, .. } => {
                if let Some(tx) = lock(&self.jobs).remove(job) {
                    let _ = tx.send(m);
                } else if let Msg::Failed { message, .. } = &m {
                    tracing::warn!(peer = %self.name, "{message}");
                }
            }
            Msg::ModelState {
                hash,
                loaded,
                profiled,
                ..
            } => {
                if *loaded && *profiled {
                    lock(&self.profiled).insert(hash.clone());
                }
                if let Some(tx) = lock(&self.models).remove(hash) {
                    let _ = tx.send(m);
                }
            }
            Msg::ModelProfile { hash, .. } => {
                if let Some(tx) = lock(&self.models).remove(&profile_key(hash)) {
                    let _ = tx.send(m);
                }
            }
            Msg::Calibrated { rates, executor } => {
                *lock(&self.executor) = executor.clone();
                self.calibration.send_replace(Some(rates.clone()));
            }
            other => tracing::warn!(peer = %self.name, "unexpected {other:?}"),
        }
    }

    /// True until the connection dies or the coordinator gives up on the node.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// The executor the node reported.
    pub fn executor(&self) -> String {
        lock(&self.executor).clone()
    }

    /// The backend of the executor the node reported (`cpu` names the CPU
    /// executor, anything else a GPU adapter).
    pub fn backend(&self) -> Backend {
        if self.executor() == "cpu" {
            Backend::Cpu
        } else {
            Backend::Gpu
        }
    }

    /// Takes in a job's failure: the node is marked down unless its
    /// executor refused the job, which is the job's fault, not the node's
    /// (it stays in the plan), or this side's frame limits kept it from
    /// being sent ([`nodes_fault`]).
    fn fail(&self, e: &ClusterError) {
        if nodes_fault(e) {
            self.mark_down(&e.to_string());
        }
    }

    fn mark_down(&self, why: &str) {
        if self.leave_down(why) {
            tracing::warn!(peer = %self.name, "marked down: {why}");
        }
    }

    /// Marks the node down without a warning, for a caller that reports it
    /// itself; returns whether it was up.
    fn leave_down(&self, why: &str) -> bool {
        let was_up = self.alive.swap(false, Ordering::AcqRel);
        if was_up {
            self.conn.close(why);
        }
        was_up
    }

    /// Sends a message to the node.
    pub async fn send(&self, m: &Msg) -> Result<(), ClusterError> {
        m.send(&self.conn, 0).await
    }

    /// Whether the node answers a status question within [`PROBE_TIMEOUT`].
    /// The daemon answers `HasModel` on its async runtime, not behind its
    /// executor's queue, so a node busy with other coordinators' jobs
    /// answers at once, while a stopped, hung or cut-off one does not (and
    /// every daemon version answers it, so no new message is needed).
    async fn answers(&self, probe: u64) -> bool {
        // No model hash looks like this: the answer reaches this probe alone.
        let key = format!("probe {probe}");
        let (tx, rx) = oneshot::channel();
        lock(&self.models).insert(key.clone(), tx);
        let ask = async {
            self.send(&Msg::HasModel { hash: key.clone() }).await.ok()?;
            rx.await.ok()
        };
        let answered = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, ask).await,
            Ok(Some(Msg::ModelState { .. }))
        );
        lock(&self.models).remove(&key);
        answered
    }
}

/// A model the nodes hold, with the graph the coordinator plans it by.
pub struct LoadedModel {
    /// Content hash.
    pub hash: String,
    /// The optimised graph (node ids agree with every node's copy).
    pub graph: Arc<Graph>,
    /// The planner's view of it. Each op's FLOPs are scaled by what profiling
    /// it on a node measured (see [`Coordinator::load_model`]), so they are
    /// "work": FLOPs at the rate of the op's class.
    pub dag: planner::ModelDag,
    /// The node whose per-op profile the work in `dag` comes from, if any.
    pub profiled_on: Option<usize>,
    /// Nodes (cluster indices) that could not load the model, with why:
    /// they are down, and plans leave them out.
    pub left_out: Vec<(usize, String)>,
}

impl LoadedModel {
    /// The work of a job of graph nodes `ops` whose copy of them did
    /// `flops[c]` FLOPs of each op class `c` (a tile's halo and, on a GPU,
    /// kernel padding included; see [`super::job::class_flops`]), by class:
    /// each class's FLOPs weighted as the planner weights those ops. The
    /// profiler's rates are in this unit, and each class's part runs at its
    /// own rate.
    pub fn class_work(&self, ops: &[usize], flops: &[u64; CLASSES]) -> [u64; CLASSES] {
        let mut real = [0.0; CLASSES];
        let mut work = [0.0; CLASSES];
        for &o in ops {
            let c = self.graph.node_cost(o);
            let f = c.flops as f64;
            let i = class_index(c.class);
            real[i] += f;
            work[i] += self.dag.ops.get(o).map_or(f, |d| d.flops);
        }
        std::array::from_fn(|i| {
            if real[i] > 0.0 {
                (work[i] * flops[i] as f64 / real[i]) as u64
            } else {
                0
            }
        })
    }

    /// Makes plans cost the model's inputs as `inputs` cross a link: a map
    /// of whole numbers 0–255 (an image) as bytes, anything else as f32
    /// (see [`wire::send_tensors`]). Call it with a request's inputs before
    /// planning for it.
    pub fn expect_inputs(&mut self, inputs: &[&Tensor]) {
        let model_inputs = self.dag.tensors.iter_mut().filter(|t| t.producer.is_none());
        for (t, x) in model_inputs.zip(inputs) {
            t.bytes = wire::wire_bytes(x) as f64;
        }
    }
}

/// How long a node may take to time a model's ops.
const PROFILE_TIMEOUT: Duration = Duration::from_secs(300);

/// The per-op seconds in `node`'s answer to a profile request for a model
/// of `ops` ops, or why there are none, in words (the raw `Result` nest
/// read `Ok(Err(RecvError(())))` in the log).
fn profile_answer(
    node: &str,
    ops: usize,
    answer: Result<Result<Msg, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
) -> Result<Vec<Option<f64>>, String> {
    match answer {
        Err(_) => Err(format!(
            "node {node} did not profile the model within {} s",
            PROFILE_TIMEOUT.as_secs()
        )),
        Ok(Err(_)) => Err(format!("node {node} went away while profiling the model")),
        Ok(Ok(Msg::ModelProfile { error: Some(e), .. })) => {
            Err(format!("node {node} could not profile the model: {e}"))
        }
        Ok(Ok(Msg::ModelProfile { seconds, .. })) if seconds.len() == ops => Ok(seconds),
        Ok(Ok(Msg::ModelProfile { seconds, .. })) => Err(format!(
            "node {node} profiled {} ops of a model of {ops}",
            seconds.len()
        )),
        Ok(Ok(other)) => Err(format!(
            "node {node} answered the profile request with {other:?}"
        )),
    }
}

fn profile_key(hash: &str) -> String {
    format!("profile {hash}")
}

/// One fused block of an executable plan.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecBlock {
    /// Graph node ids, ascending.
    pub ops: Vec<usize>,
    /// Grid and the node (cluster index) of each tile, row-major; `None` = run whole on `node`.
    pub tiles: Option<(Grid, Vec<usize>)>,
    /// Node for a whole block.
    pub node: usize,
    /// The planner's predicted time for the block, if it came from the planner.
    pub predicted_s: Option<f64>,
}

/// A plan in the form the coordinator runs: node ids per stage and nodes by cluster index.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecPlan {
    /// Name for reports (`tessera 3-tier`, `single edge`, ...).
    pub name: String,
    /// Device node.
    pub device: usize,
    /// The coordinator's location (an edge node).
    pub coordinator: usize,
    /// Cloud node (`None` for a cluster without one).
    pub cloud: Option<usize>,
    /// Ops on the device (may be empty: the device then only uploads).
    pub device_ops: Vec<usize>,
    /// Edge blocks in order.
    pub blocks: Vec<ExecBlock>,
    /// Ops on the cloud.
    pub cloud_ops: Vec<usize>,
    /// The planner's predicted makespan, if it came from the planner.
    pub predicted_s: Option<f64>,
    /// The planner's predicted device stage (its ops, then the upload), seconds.
    pub predicted_device_s: Option<f64>,
    /// The planner's predicted cloud stage (transfers both ways and its ops), seconds.
    pub predicted_cloud_s: Option<f64>,
}

/// `ops` (ascending) cut into the runs the engine tiles as one block each,
/// in order, with whether each tiles at all: each run grows while
/// [`Block::new`] takes it.
fn engine_blocks(graph: &Graph, ops: &[usize]) -> Vec<(Vec<usize>, bool)> {
    let tiles = |ops: &[usize]| Block::new(graph, ops.to_vec()).is_ok();
    if tiles(ops) {
        return vec![(ops.to_vec(), true)];
    }
    let mut parts = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    for &op in ops {
        run.push(op);
        if run.len() > 1 && !tiles(&run) {
            run.pop();
            parts.push((std::mem::take(&mut run), true));
            run.push(op);
        }
        if run.len() == 1 && !tiles(&run) {
            parts.push((std::mem::take(&mut run), false));
        }
    }
    if !run.is_empty() {
        parts.push((run, true));
    }
    parts
}

impl ExecPlan {
    /// From a planner prediction on a cluster whose node `i` is `map[i]` of the full cluster.
    pub fn from_prediction(
        name: &str,
        graph: &Graph,
        p: &Prediction,
        topo: &Topology,
        map: &[usize],
    ) -> ExecPlan {
        let at = |tier: Tier| -> Vec<usize> {
            (0..p.labels.len())
                .filter(|&i| p.labels[i] == tier)
                .collect()
        };
        let coordinator = map[topo.coordinator];
        let mut blocks = Vec::new();
        for b in &p.blocks {
            let Some(t) = &b.tiling else {
                blocks.push(ExecBlock {
                    ops: b.ops.clone(),
                    tiles: None,
                    node: b.node_times.first().map_or(coordinator, |t| map[t.node]),
                    predicted_s: Some(b.time_s),
                });
                continue;
            };
            // The planner's geometry is approximate: a block it tiles may
            // not be one the engine tiles (outputs of two map sizes, a U-Net
            // encoder stage's skip and its pooled map). It is cut into the
            // engine's blocks, each tiled with the planner's grid, not run
            // whole on the coordinator.
            let parts = engine_blocks(graph, &b.ops);
            let flops = |ops: &[usize]| ops.iter().map(|&o| graph.node_cost(o).flops).sum::<u64>();
            let total = flops(&b.ops).max(1) as f64;
            let workers: Vec<usize> = t.nodes.iter().map(|&n| map[n]).collect();
            if parts.len() > 1 && t.rows * t.cols > 1 {
                tracing::info!(
                    ops = b.ops.len(),
                    parts = parts.len(),
                    "a block the planner tiled {}x{} is tiled by the engine as {} blocks",
                    t.rows,
                    t.cols,
                    parts.len()
                );
            }
            for (ops, tileable) in parts {
                let predicted_s = Some(b.time_s * flops(&ops) as f64 / total);
                let tiles = tileable.then(|| {
                    let block = Block::new(graph, ops.clone()).ok()?;
                    let [h, w] = block.output_hw(graph);
                    let grid = Grid::with_shares(t.row_shares.clone(), t.col_shares.clone());
                    (t.rows <= h && t.cols <= w && grid.regions(h, w).is_ok())
                        .then(|| (grid, workers.clone()))
                });
                let tiles = tiles.flatten();
                // One tile is the block run whole: on the node the planner
                // gave it.
                let node = match (&tiles, t.rows * t.cols) {
                    (None, 1) => workers.first().copied().unwrap_or(coordinator),
                    _ => coordinator,
                };
                blocks.push(ExecBlock {
                    ops,
                    tiles,
                    node,
                    predicted_s,
                });
            }
        }
        ExecPlan {
            name: name.to_string(),
            device: map[topo.device],
            coordinator,
            cloud: topo.cloud.map(|c| map[c]),
            device_ops: at(Tier::Device),
            blocks,
            cloud_ops: at(Tier::Cloud),
            predicted_s: Some(p.makespan_s),
            predicted_device_s: Some(p.device_s + p.up_s),
            predicted_cloud_s: Some(p.back_s + p.cloud_s),
        }
    }

    /// The whole model on one node (the input uploaded from the device first).
    pub fn single_node(
        name: &str,
        graph: &Graph,
        device: usize,
        node: usize,
        cloud: Option<usize>,
    ) -> ExecPlan {
        ExecPlan {
            name: name.to_string(),
            device,
            coordinator: node,
            cloud,
            device_ops: Vec::new(),
            blocks: vec![ExecBlock {
                ops: (0..graph.nodes.len()).collect(),
                tiles: None,
                node,
                predicted_s: None,
            }],
            cloud_ops: Vec::new(),
            predicted_s: None,
            predicted_device_s: None,
            predicted_cloud_s: None,
        }
    }
}

/// Folds one node's calibration (`rates`: class name → FLOP/s, and the
/// job overhead) into `p`; nodes reporting the same `executor` (adapter)
/// are peers there (`Profiler::set_kind`).
fn fold_calibration(
    p: &mut Profiler,
    node: usize,
    rates: &[(String, f64)],
    executor: &str,
) -> Result<(), ClusterError> {
    let compute = rates
        .iter()
        .filter_map(|(n, r)| {
            Some(planner::profiler::ComputeRate {
                node,
                class: class_of(n)?,
                flops_per_s: *r,
            })
        })
        .filter(|r| r.flops_per_s.is_finite() && r.flops_per_s > 0.0)
        .collect();
    let get = |k: &str| rates.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    p.set_kind(node, (!executor.is_empty()).then(|| executor.to_string()))
        .map_err(|e| ClusterError::Protocol(e.to_string()))?;
    // Only a per-job cost: a per-op cost measured as the difference of
    // two millisecond timings, multiplied by a block's op count, made
    // identical nodes look several times apart.
    // A figure no node could measure (negative, not finite) is dropped like
    // a bad rate above: refused, it would fail every later plan.
    if let Some(job) = get(calibrate::JOB_OVERHEAD).filter(|j| j.is_finite() && *j >= 0.0) {
        p.set_overhead(node, [job, 0.0])
            .map_err(|e| ClusterError::Protocol(e.to_string()))?;
    }
    p.calibrate(&planner::Calibration {
        compute,
        links: Vec::new(),
    })
    .map_err(|e| ClusterError::Protocol(e.to_string()))
}

/// What happened to one job: the raw material of traces and replays.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord {
    /// Request number.
    pub request: u64,
    /// Stage: `device`, `block N`, `cloud`.
    pub stage: String,
    /// Stage index (device 0, blocks 1.., cloud last).
    pub stage_idx: usize,
    /// Node (cluster index).
    pub node: usize,
    /// Node name.
    pub node_name: String,
    /// Tile index within the block, if a tile.
    pub tile: Option<usize>,
    /// Bytes that only hand the request's input to the device (not part of the plan's traffic).
    pub submit_bytes: u64,
    /// Bytes sent to the node.
    pub in_bytes: u64,
    /// Bytes returned.
    pub out_bytes: u64,
    /// Coordinator sent the job (µs, Unix epoch).
    pub sent_us: u64,
    /// Node started computing.
    pub start_us: u64,
    /// Node finished computing.
    pub end_us: u64,
    /// Coordinator had all outputs.
    pub recv_us: u64,
    /// FLOPs.
    pub flops: u64,
    /// FLOPs weighted by the model's per-op profile, by op class (indexed as
    /// [`planner::profiler::ALL_CLASSES`]; see [`LoadedModel::class_work`]):
    /// what the profiler's rates measure.
    pub class_work: [u64; CLASSES],
    /// Dominant op class (wire name).
    pub class: String,
    /// Ops the job ran.
    pub ops: usize,
    /// Elements a GPU tile's crops copied row by row
    /// ([`tile_engine::tiling::row_copy_elements`]), which its span includes
    /// (0 elsewhere: a CPU executor's crops are `memcpy`s).
    pub row_copies: u64,
    /// False if the job failed or timed out (its work was discarded).
    pub ok: bool,
    /// True if an idle node took the tile from another node's queue.
    pub stolen: bool,
    /// True if the node held the job's inputs when the request started (the
    /// device's tiles of a first block that reads only the model input) and
    /// ran it while the rest of the input was uploaded.
    pub early: bool,
    /// True if the node ran these ops for the first time (kernels compiled,
    /// weights uploaded): the span is not folded into the profiler.
    pub cold: bool,
}

impl JobRecord {
    /// A job of `stage` on `node` that has not run yet: no bytes, no times, not ok.
    pub fn pending(
        request: u64,
        stage: &str,
        stage_idx: usize,
        node: usize,
        node_name: &str,
        class: &str,
    ) -> Self {
        JobRecord {
            request,
            stage: stage.to_string(),
            stage_idx,
            node,
            node_name: node_name.to_string(),
            tile: None,
            submit_bytes: 0,
            in_bytes: 0,
            out_bytes: 0,
            sent_us: 0,
            start_us: 0,
            end_us: 0,
            recv_us: 0,
            flops: 0,
            class_work: [0; CLASSES],
            class: class.to_string(),
            ops: 0,
            row_copies: 0,
            ok: false,
            stolen: false,
            early: false,
            cold: false,
        }
    }

    /// The job's work over all op classes.
    pub fn work(&self) -> u64 {
        self.class_work.iter().sum()
    }
}

/// The outputs and records of one request.
#[derive(Debug)]
pub struct RunOutcome {
    /// Model outputs.
    pub outputs: Vec<Tensor>,
    /// Every job, failed ones included.
    pub records: Vec<JobRecord>,
    /// Wall-clock seconds.
    pub wall_s: f64,
}

/// How patient the coordinator is. A job past its deadline is not given
/// up while its node answers a probe: its allowance is renewed instead.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Fixed part of a job's deadline.
    pub base: Duration,
    /// A job may take this many times its predicted duration on top.
    pub factor: f64,
    /// How many more allowances a job gets while its node answers probes. A
    /// node busy with other coordinators' jobs finishes late but finishes;
    /// one whose executor is wedged answers too, so it is given up on after
    /// these all the same.
    pub renewals: u32,
    /// How long a node may send nothing at all (not even acknowledgements)
    /// while it is asked about, sent or profiling a model before it counts
    /// as not answering (the README's 10 s).
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            base: Duration::from_secs(10),
            factor: 6.0,
            renewals: 9,
            stall: Duration::from_secs(10),
        }
    }
}

/// How long a node whose job is past its deadline, or that has fallen
/// silent (see [`JOB_SILENCE`]), has to answer a probe before it is marked
/// down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node running a job may send nothing at all before it is
/// probed. A live one is heard from every second at least (transport
/// keep-alives and their acknowledgements), computing or not.
const JOB_SILENCE: Duration = Duration::from_secs(3);
/// How long a node has to complete the handshake (a dead address would
/// otherwise hold the coordinator for the transport's 30 s idle timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The least a node's handshake is waited for once another node has
/// answered (see [`Handshakes`]): quinn resends a lost first flight after
/// about 1 s and a second after 2 s more, so a healthy node on a lossy
/// link still fits.
const LAST_HANDSHAKE: Duration = Duration::from_secs(3);
/// How long a connected node may take to report its start-up calibration.
const CALIBRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The coordinator's first handshakes, made together: once one node has
/// answered, one still silent is waited for four times the slowest answer,
/// at least [`LAST_HANDSHAKE`], not [`CONNECT_TIMEOUT`] (a node that was
/// down cost every request 10 s; its neighbours answer in milliseconds).
#[derive(Default)]
struct Handshakes {
    slowest_us: AtomicU64,
}

impl Handshakes {
    /// Whether a handshake `waited` so far is late next to the answers.
    fn late(&self, waited: Duration) -> bool {
        let slowest = Duration::from_micros(self.slowest_us.load(Ordering::Acquire));
        !slowest.is_zero() && waited >= (slowest * 4).max(LAST_HANDSHAKE)
    }

    /// Counts a handshake answered after `took`.
    fn answered(&self, took: Duration) {
        self.slowest_us
            .fetch_max(took.as_micros().max(1) as u64, Ordering::AcqRel);
    }
}

/// Drives a cluster of node daemons.
pub struct Coordinator {
    /// The cluster description (node order = indices everywhere).
    pub cluster: Cluster,
    endpoint: Endpoint,
    peers: Mutex<Vec<Option<Arc<Peer>>>>,
    /// Where each node is reached, or why it cannot be (its name did not
    /// resolve).
    addrs: Mutex<Vec<Result<SocketAddr, String>>>,
    /// Online estimates.
    pub profiler: Mutex<Profiler>,
    next_id: AtomicU64,
    /// Job deadlines.
    pub timeouts: Timeouts,
    /// Idle workers take queued tiles from busy ones. Turn it off when the
    /// nodes share one machine behind a compute lock: there a node waiting
    /// for the lock looks busy, so the first to finish would steal tiles
    /// that dedicated hardware would have run in parallel.
    pub steal: bool,
    /// Time each op of a model on one edge node when it is loaded and plan
    /// by those times (else by FLOPs at each op class's calibrated rate).
    pub profile_models: bool,
    /// Whether the warning about a block tiled across different executors was given.
    warned_mixed: AtomicBool,
    /// Why each node is down, from its last failed (re)connection.
    down_why: Mutex<Vec<Option<String>>>,
}

impl Coordinator {
    /// Connects to every node (at `addrs[i]` for node `i`: the cluster
    /// file's address, or a link emulator in front of it), all at once. A
    /// node that cannot be reached is left down (plans leave it out and
    /// [`Coordinator::readmit`] tries it again; a device left out of the
    /// plan is skipped, the coordinator holds the input); at least one edge
    /// node must answer.
    pub async fn connect(
        cluster: Cluster,
        endpoint: Endpoint,
        addrs: Vec<SocketAddr>,
    ) -> Result<Coordinator, ClusterError> {
        Self::connect_resolved(cluster, endpoint, addrs.into_iter().map(Ok).collect()).await
    }

    /// [`Coordinator::connect`] where some nodes have no address: each is
    /// left down with the reason given (a host name that did not resolve
    /// costs its node, not the request).
    pub async fn connect_resolved(
        cluster: Cluster,
        endpoint: Endpoint,
        addrs: Vec<Result<SocketAddr, String>>,
    ) -> Result<Coordinator, ClusterError> {
        let profiler = Profiler::new(&cluster);
        let cluster_len = cluster.nodes.len();
        let c = Coordinator {
            peers: Mutex::new(vec![None; cluster.nodes.len()]),
            cluster,
            endpoint,
            addrs: Mutex::new(addrs),
            profiler: Mutex::new(profiler),
            next_id: AtomicU64::new(1),
            timeouts: Timeouts::default(),
            steal: true,
            profile_models: true,
            warned_mixed: AtomicBool::new(false),
            down_why: Mutex::new(vec![None; cluster_len]),
        };
        let together = Handshakes::default();
        let tries = futures_util::future::join_all(
            (0..c.cluster.nodes.len()).map(|i| c.reconnect_among(i, Some(&together))),
        )
        .await;
        let mut down = Vec::new();
        for (i, r) in tries.into_iter().enumerate() {
            if let Err(e) = r {
                tracing::info!(node = %c.cluster.nodes[i].name, "left down: {e}");
                down.push((i, e));
            }
        }
        let needed = |i: usize| {
            c.cluster.nodes[i].tier == Tier::Edge
                && c.cluster
                    .tier_nodes(Tier::Edge)
                    .iter()
                    .all(|&e| c.peer(e).is_none())
        };
        let mut edges: Vec<(usize, ClusterError)> =
            down.into_iter().filter(|(i, _)| needed(*i)).collect();
        if edges.len() > 1 {
            // Every edge node is down: name each, not just the first.
            let each: Vec<String> = edges.iter().map(|(_, e)| e.to_string()).collect();
            return Err(ClusterError::NoEdge(each.join("; ")));
        }
        if let Some((_, e)) = edges.pop() {
            return Err(e);
        }
        Ok(c)
    }

    /// The executor node `i` runs: its daemon's (the adapter its Hello
    /// names, `cpu` for the CPU executor) while it is connected, else the
    /// cluster file's `backend`. Plans and spans cost a node by this, not
    /// by a `backend` the file gets wrong (a GPU's kernel padding and row
    /// copies priced on a CPU node, or not on a GPU one).
    pub fn backend(&self, i: usize) -> Backend {
        self.peer(i)
            .map_or(self.cluster.nodes[i].backend, |p| p.backend())
    }

    /// (Re)connects node `i` and waits for its calibration, which is folded
    /// into the profiler. A node whose daemon announces another tier than
    /// the cluster file gives it is refused (and left down).
    pub async fn reconnect(&self, i: usize) -> Result<Arc<Peer>, ClusterError> {
        self.reconnect_among(i, None).await
    }

    /// [`Coordinator::reconnect`], one of the handshakes `together`.
    async fn reconnect_among(
        &self,
        i: usize,
        together: Option<&Handshakes>,
    ) -> Result<Arc<Peer>, ClusterError> {
        let r = self.try_connect(i, together).await;
        lock(&self.down_why)[i] = r.as_ref().err().map(ToString::to_string);
        r
    }

    /// Why node `i` is down, from its last failed (re)connection, if it is.
    pub fn down_reason(&self, i: usize) -> Option<String> {
        if self.peer(i).is_some() {
            return None;
        }
        lock(&self.down_why).get(i).cloned().flatten()
    }

    async fn try_connect(
        &self,
        i: usize,
        together: Option<&Handshakes>,
    ) -> Result<Arc<Peer>, ClusterError> {
        let name = self.cluster.nodes[i].name.clone();
        let known = lock(&self.addrs)[i].clone();
        let addr = match known {
            Ok(a) => a,
            // A name that did not resolve at the start may now (a DNS entry
            // or a container that came up since); the first handshakes
            // come right after the first lookup.
            Err(why) => match together {
                None => self.resolve_again(i).await.ok_or(why),
                Some(_) => Err(why),
            }
            .map_err(|why| ClusterError::Node {
                node: name.clone(),
                why,
            })?,
        };
        let started = Instant::now();
        let answered = {
            let handshake = self.endpoint.connect(addr, &name);
            tokio::pin!(handshake);
            loop {
                tokio::select! {
                    r = &mut handshake => break Some(r),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        let waited = started.elapsed();
                        if waited >= CONNECT_TIMEOUT
                            || together.is_some_and(|t| t.late(waited))
                        {
                            break None;
                        }
                    }
                }
            }
        };
        if let (Some(t), Some(Ok(_))) = (together, &answered) {
            t.answered(started.elapsed());
        }
        let conn = answered
            .ok_or_else(|| ClusterError::Node {
                node: name.clone(),
                why: format!(
                    "no answer at {addr} within {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
            })?
            .map_err(|e| ClusterError::Node {
                node: name.clone(),
                why: e.to_string(),
            })?;
        let peer = Peer::start(conn, i).await;
        let mut rx = peer.calibration.subscribe();
        // A node that refuses this coordinator's certificate (valid, but not
        // among its peers) closes the connection after the handshake; the
        // wait ends there, not at the calibration timeout.
        let calibrated = tokio::select! {
            r = tokio::time::timeout(CALIBRATION_TIMEOUT, rx.wait_for(Option::is_some)) => r,
            why = peer.conn.closed() => {
                return Err(ClusterError::Node {
                    node: name,
                    why: format!("closed the connection before its calibration: {why}"),
                });
            }
        };
        let rates = calibrated
            .map_err(|_| ClusterError::Node {
                node: name.clone(),
                why: format!("no calibration within {} s", CALIBRATION_TIMEOUT.as_secs()),
            })?
            .map_err(|_| ClusterError::Node {
                node: name.clone(),
                why: "connection closed before calibration".into(),
            })?
            .clone()
            .unwrap_or_default();
        // The Hello is the first frame of the control stream the calibration
        // came on, so it is here. A daemon of another tier would be planned
        // as the cluster file says (a cloud GPU handed edge tiles) with
        // nothing to tell the user why plans and timings are off.
        let hello = peer
            .conn
            .peer_hello()
            .await
            .map_err(|e| ClusterError::Node {
                node: name.clone(),
                why: format!("no hello: {e}"),
            })?;
        let (said, listed) = (
            super::tier_from_wire(hello.tier),
            self.cluster.nodes[i].tier,
        );
        if said != listed {
            let why = format!(
                "the daemon's node file says tier \"{}\" but the cluster file lists it as \"{}\": refused (make the two agree)",
                said.name(),
                listed.name()
            );
            peer.conn.close(&format!(
                "tier mismatch: {} in the cluster file",
                listed.name()
            ));
            return Err(ClusterError::Node { node: name, why });
        }
        fold_calibration(&mut lock(&self.profiler), i, &rates, &peer.executor())?;
        if peer.backend() != self.cluster.nodes[i].backend {
            let (listed, runs) = match peer.backend() {
                Backend::Cpu => ("\"gpu\" (or none: gpu is the default)", "cpu"),
                Backend::Gpu => ("\"cpu\"", "gpu"),
            };
            tracing::warn!(
                "node {name}: the cluster file gives backend {listed} but its daemon runs the {runs} executor ({}); planned as {runs} (make the two agree)",
                peer.executor()
            );
        }
        lock(&self.peers)[i] = Some(peer.clone());
        Ok(peer)
    }

    /// A profiler that knows only the live nodes' start-up calibration.
    fn calibrated_profiler(&self) -> Result<Profiler, ClusterError> {
        let mut p = Profiler::new(&self.cluster);
        for i in self.alive() {
            let Some(peer) = self.peer(i) else { continue };
            let rates = peer.calibration.borrow().clone().unwrap_or_default();
            fold_calibration(&mut p, i, &rates, &peer.executor())?;
        }
        Ok(p)
    }

    /// Forgets every observed span and starts again from the live nodes'
    /// start-up calibration. Observed rates are those of one model's op mix
    /// and tile sizes; before a different model is planned they would make
    /// the nodes that ran it look slower than those that did not.
    pub fn reset_estimates(&self) -> Result<(), ClusterError> {
        *lock(&self.profiler) = self.calibrated_profiler()?;
        Ok(())
    }

    /// Where node `i` is reached from now on (a restarted daemon's new address).
    pub fn set_address(&self, i: usize, addr: SocketAddr) {
        lock(&self.addrs)[i] = Ok(addr);
    }

    /// Looks node `i`'s `host:port` up again, keeping what it finds (an
    /// IPv4 address first, as at the start).
    async fn resolve_again(&self, i: usize) -> Option<SocketAddr> {
        let spec = self.cluster.nodes[i].address.as_str();
        if spec.is_empty() {
            return None;
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host(spec).await.ok()?.collect();
        let addr = found
            .iter()
            .find(|a| a.is_ipv4())
            .or(found.first())
            .copied()?;
        self.set_address(i, addr);
        Some(addr)
    }

    /// The connected peer of node `i`, if alive.
    pub fn peer(&self, i: usize) -> Option<Arc<Peer>> {
        lock(&self.peers)
            .get(i)
            .cloned()
            .flatten()
            .filter(|p| p.alive())
    }

    /// The executors (as the nodes reported them) of the nodes sharing a
    /// tiled block of `plan`, when they are not all the same.
    /// Only blocks with an op whose bits may differ between executors
    /// count (see [`tile_engine::ir::Op::same_bits_everywhere`]): a block of
    /// sums, ReLUs and max pools gives the same bits on either.
    fn mixed_executors(&self, graph: &Graph, plan: &ExecPlan) -> Option<Vec<String>> {
        plan.blocks.iter().find_map(|b| {
            let (_, owners) = b.tiles.as_ref()?;
            if b.ops.iter().all(|&op| {
                graph
                    .nodes
                    .get(op)
                    .is_none_or(|n| n.op.same_bits_everywhere())
            }) {
                return None;
            }
            let mut kinds: Vec<String> = owners
                .iter()
                .filter_map(|&n| self.peer(n))
                .map(|p| p.executor())
                .collect();
            kinds.sort();
            kinds.dedup();
            (kinds.len() > 1).then_some(kinds)
        })
    }

    /// Indices of nodes that are up.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.cluster.nodes.len())
            .filter(|&i| self.peer(i).is_some())
            .collect()
    }

    /// Probes every node that is up, all at once, and marks down those that
    /// do not answer within [`PROBE_TIMEOUT`], each with its reason (see
    /// [`Coordinator::down_reason`]); returns their indices. For a caller
    /// about to plan after a long wait (a model profiled for seconds): a
    /// node stopped meanwhile would otherwise get its share of the tiles
    /// and cost the request a silence timeout.
    pub async fn probe_all(&self) -> Vec<usize> {
        let peers: Vec<Arc<Peer>> = (0..self.cluster.nodes.len())
            .filter_map(|i| self.peer(i))
            .collect();
        let answers =
            futures_util::future::join_all(peers.iter().map(|p| p.answers(self.id()))).await;
        let mut down = Vec::new();
        for (p, answered) in peers.iter().zip(answers) {
            if !answered {
                let why = format!(
                    "did not answer a probe within {} s before the plan",
                    PROBE_TIMEOUT.as_secs()
                );
                self.set_down(p, &why);
                down.push(p.idx);
            }
        }
        down
    }

    /// Tries to bring back nodes that are down (a restarted daemon is
    /// re-admitted after its calibration); returns the names re-admitted.
    pub async fn readmit(&self) -> Vec<String> {
        let mut back = Vec::new();
        for i in 0..self.cluster.nodes.len() {
            if self.peer(i).is_none()
                && tokio::time::timeout(Duration::from_secs(3), self.reconnect(i))
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                back.push(self.cluster.nodes[i].name.clone());
            }
        }
        back
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends the model to every live node that does not have it yet. A node
    /// that cannot load it (over its `max_model_bytes`, no answer) is left
    /// down and listed in [`LoadedModel::left_out`], as an unreachable node
    /// is left out at [`Coordinator::connect`]; it is an error only when no
    /// edge node has the model.
    pub async fn load_model(&self, bundle: &Bundle) -> Result<LoadedModel, ClusterError> {
        let bytes = bundle.encode();
        let hash = bundle::hash(&bytes);
        let graph = Arc::new(bundle.graph()?);
        let dag = planner::ModelDag::from_graph(&graph)
            .map_err(|e| ClusterError::Model(e.to_string()))?;
        let chunks = wire::model_chunks(&bytes);
        let mut left_out = Vec::new();
        let mut edge_error = None;
        // Every node at once: one that stalls mid-upload holds up only itself.
        let peers: Vec<(usize, Arc<Peer>)> = self
            .alive()
            .into_iter()
            .filter_map(|i| Some((i, self.peer(i)?)))
            .collect();
        let loads = futures_util::future::join_all(
            peers
                .iter()
                .map(|(_, p)| self.ensure_model(p, &hash, &bytes, &chunks)),
        )
        .await;
        for ((i, p), loaded) in peers.iter().zip(loads) {
            let i = *i;
            if let Err(e) = loaded {
                let why = match &e {
                    ClusterError::Node { why, .. } => why.clone(),
                    other => other.to_string(),
                };
                p.leave_down(&why);
                tracing::info!(peer = %p.name, "left out: {why}");
                if self.cluster.nodes[i].tier == Tier::Edge {
                    edge_error = Some(e);
                }
                left_out.push((i, why));
            }
        }
        let edges = self.cluster.tier_nodes(Tier::Edge);
        if let Some(e) = edge_error
            && edges.iter().all(|&i| self.peer(i).is_none())
        {
            return Err(e);
        }
        let mut model = LoadedModel {
            hash,
            graph,
            dag,
            profiled_on: None,
            left_out,
        };
        if self.profile_models {
            self.profile_model(&mut model).await;
        }
        Ok(model)
    }

    /// The node [`Coordinator::profile_model`] asks for model `hash`: a live
    /// edge node that holds its profile, else one picked by the hash, else
    /// the first live node.
    pub fn profiling_node(&self, hash: &str) -> Option<usize> {
        let edges = self.cluster.tier_nodes(planner::Tier::Edge);
        let alive = self.alive();
        let holds = |i: &usize| {
            self.peer(*i)
                .is_some_and(|p| lock(&p.profiled).contains(hash))
        };
        // A node that holds the profile answers at once: after a restart of
        // the node that profiled the model, asking the first edge node again
        // would time every op anew.
        let live: Vec<usize> = edges
            .iter()
            .filter(|i| alive.contains(i))
            .copied()
            .collect();
        // Otherwise one picked by the model's hash: clients that load the
        // same model together share one profile, and different models (a
        // model at several input sizes) are profiled on different edge
        // nodes at once, not one after another on the first.
        let by_hash = u64::from_str_radix(hash.get(..16).unwrap_or(""), 16).unwrap_or(0);
        live.iter()
            .find(|i| holds(i))
            .or_else(|| live.get((by_hash % live.len().max(1) as u64) as usize))
            .or_else(|| alive.first())
            .copied()
    }

    /// Times each op of a loaded model alone on one edge node (the first
    /// live one) and turns each op's FLOPs into work: its measured seconds
    /// at that node's rate for the op's class. A 5×5 or a small-map
    /// convolution runs at another FLOP rate than the calibration's layers,
    /// and the planner would otherwise misjudge blocks of them; node speeds
    /// stay per class, so the profile's relative costs carry to every node.
    /// Without an answer the FLOPs stay as they are. Returns the node that
    /// profiled the model, if one did (also set in
    /// [`LoadedModel::profiled_on`]). [`Coordinator::load_model`] calls it
    /// when [`Coordinator::profile_models`] is set; a caller that reports
    /// progress calls it itself. The nodes keep the profile, so only the
    /// first call for a model on a node takes time.
    pub async fn profile_model(&self, model: &mut LoadedModel) -> Option<usize> {
        let (hash, dag) = (model.hash.as_str(), &mut model.dag);
        let p = self.profiling_node(hash).and_then(|i| self.peer(i))?;
        let (tx, rx) = oneshot::channel();
        lock(&p.models).insert(profile_key(hash), tx);
        let answer = match p.send(&Msg::ProfileModel { hash: hash.into() }).await {
            // A node that dies while it profiles is given up on once it has
            // been silent for `stall` (a busy one still sends keep-alives),
            // not after the transport's idle timeout.
            Ok(()) => tokio::select! {
                a = tokio::time::timeout(PROFILE_TIMEOUT, rx) => a,
                why = p.silent_for(self.timeouts.stall) => {
                    // Down, not just unprofiled: left in the plan, it cost
                    // the request a job timeout more.
                    tracing::warn!(
                        "node {} {why} while profiling the model: marked down; planning from FLOPs",
                        p.name
                    );
                    self.set_down(&p, &format!("{why} while profiling the model"));
                    lock(&p.models).remove(&profile_key(hash));
                    return None;
                }
            },
            Err(e) => {
                tracing::warn!(
                    "cannot ask node {} to profile the model: {e}; planning from FLOPs",
                    p.name
                );
                p.fail(&e);
                return None;
            }
        };
        let seconds = match profile_answer(&p.name, dag.ops.len(), answer) {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!("{why}; planning from FLOPs");
                return None;
            }
        };
        // Work is measured in units of the profiling node's calibrated
        // rates, not its current estimates: those were learnt from another
        // model's spans, and a model loaded after them (then planned from a
        // reset profiler) was predicted 30-50 % fast.
        let est = match self.calibrated_profiler() {
            Ok(p) => p.estimates(),
            Err(e) => {
                tracing::warn!("no calibrated estimates for the model profile: {e}");
                return None;
            }
        };
        for (op, s) in dag.ops.iter_mut().zip(seconds) {
            if let Some(s) = s.filter(|s| s.is_finite() && *s >= 0.0) {
                op.flops = s * est.flops_per_s(p.idx, op.class);
            }
        }
        model.profiled_on = Some(p.idx);
        Some(p.idx)
    }

    async fn ensure_model(
        &self,
        p: &Peer,
        hash: &str,
        bytes: &[u8],
        chunks: &[Vec<f32>],
    ) -> Result<(), ClusterError> {
        let ask = |m: Msg| async move {
            let (tx, rx) = oneshot::channel();
            lock(&p.models).insert(hash.to_string(), tx);
            p.send(&m).await?;
            tokio::time::timeout(Duration::from_secs(300), rx)
                .await
                .map_err(|_| ClusterError::Node {
                    node: p.name.clone(),
                    why: "no answer about the model".into(),
                })?
                .map_err(|_| ClusterError::Node {
                    node: p.name.clone(),
                    why: p.closed_why(),
                })
        };
        let stalled = |why: String| ClusterError::Node {
            node: p.name.clone(),
            why,
        };
        let has = tokio::select! {
            r = ask(Msg::HasModel { hash: hash.into() }) => r?,
            why = p.silent_for(self.timeouts.stall) => return Err(stalled(why)),
        };
        if let Msg::ModelState { loaded: true, .. } = has {
            return Ok(());
        }
        let transfer = self.id();
        let load = Msg::LoadModel {
            hash: hash.into(),
            transfer,
            bytes: bytes.len() as u64,
        };
        let (tx, mut rx) = oneshot::channel();
        lock(&p.models).insert(hash.to_string(), tx);
        let upload = async {
            p.send(&load).await?;
            for (i, c) in chunks.iter().enumerate() {
                let h = wire::tensor_header(transfer, MODEL_CHUNK, i as u32, &[c.len()]);
                p.conn
                    .send_tile(&h, c)
                    .await
                    .map_err(|e| ClusterError::Node {
                        node: p.name.clone(),
                        why: format!(
                            "sending the model (part {} of {}): {e}",
                            i + 1,
                            chunks.len()
                        ),
                    })?;
            }
            Ok::<(), ClusterError>(())
        };
        let closed = |_| ClusterError::Node {
            node: p.name.clone(),
            why: p.closed_why(),
        };
        // A node receiving acknowledges all the time: one silent for
        // `stall` has stopped (paused, hung), not slowed. One that answers
        // before the model is all sent has refused it (over its
        // `max_model_bytes`): the rest is not sent (it was, 88 MB a request).
        // One that has it already (another client's load) gets the rest, as
        // an upload cut mid-frame leaves that frame unacknowledged and the
        // request's end waiting for it.
        tokio::pin!(upload);
        let early = tokio::select! {
            r = &mut upload => {
                r?;
                None
            }
            a = &mut rx => Some(a.map_err(closed)?),
            why = p.silent_for(self.timeouts.stall) => return Err(stalled(why)),
        };
        if let Some(Msg::ModelState { loaded: true, .. }) = &early {
            tokio::select! {
                r = &mut upload => r?,
                why = p.silent_for(self.timeouts.stall) => return Err(stalled(why)),
            }
        }
        let answer = match early {
            Some(a) => a,
            None => tokio::time::timeout(Duration::from_secs(300), rx)
                .await
                .map_err(|_| ClusterError::Node {
                    node: p.name.clone(),
                    why: "model load timed out".into(),
                })?
                .map_err(closed)?,
        };
        match answer {
            Msg::ModelState { loaded: true, .. } => Ok(()),
            Msg::ModelState { error, .. } => Err(ClusterError::Node {
                node: p.name.clone(),
                why: format!("cannot load the model: {}", error.unwrap_or_default()),
            }),
            other => Err(ClusterError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Current estimates restricted to `nodes` (cluster indices), with the sub-cluster.
    pub fn sub_problem(&self, nodes: &[usize]) -> (Cluster, Estimates) {
        let est = lock(&self.profiler).estimates();
        let names: Vec<&str> = nodes
            .iter()
            .map(|&i| self.cluster.nodes[i].name.as_str())
            .collect();
        let cluster = Cluster {
            nodes: nodes
                .iter()
                .map(|&i| {
                    let mut n = self.cluster.nodes[i].clone();
                    n.backend = self.backend(i);
                    n
                })
                .collect(),
            links: self
                .cluster
                .links
                .iter()
                .filter(|l| names.contains(&l.from.as_str()) && names.contains(&l.to.as_str()))
                .cloned()
                .collect(),
        };
        let sub = Estimates {
            op_overhead_s: nodes.iter().map(|&i| est.op_overhead_s[i]).collect(),
            throughput: nodes.iter().map(|&i| est.throughput[i]).collect(),
            links: nodes
                .iter()
                .map(|&a| nodes.iter().map(|&b| est.links[a][b]).collect())
                .collect(),
        };
        (cluster, sub)
    }

    /// Predicted seconds of `work` ([`LoadedModel::work`]) of `class` on node `i`.
    fn predict(&self, i: usize, class: OpClass, work: u64) -> f64 {
        lock(&self.profiler)
            .estimates()
            .compute_time(i, class, work as f64)
    }

    /// How long a job may take before its node is asked whether it is alive.
    fn allowance(&self, node: usize, class: OpClass, work: u64, bytes: u64) -> Duration {
        let t = self.timeouts.base.as_secs_f64()
            + self.timeouts.factor * self.predict(node, class, work)
            + bytes as f64 / 1e6;
        Duration::from_secs_f64(t.min(3600.0))
    }

    /// Marks `p` down and keeps `why` for [`Coordinator::down_reason`]
    /// ("node NAME: why"), for a caller that reports it itself.
    fn set_down(&self, p: &Peer, why: &str) {
        p.leave_down(why);
        lock(&self.down_why)[p.idx] = Some(format!("node {}: {why}", p.name));
    }

    /// Returns, saying why, once `peer` has sent nothing for
    /// [`JOB_SILENCE`] and then does not answer a probe either.
    async fn gone_silent(&self, peer: &Peer) -> String {
        loop {
            let why = peer.silent_for(JOB_SILENCE).await;
            if !peer.answers(self.id()).await {
                return format!("{why}, nor answered a probe");
            }
        }
    }

    /// Runs one job on `peer`: sends the inputs, waits for the outputs.
    #[allow(clippy::too_many_arguments)]
    async fn remote(
        &self,
        peer: &Peer,
        model: &LoadedModel,
        nodes: &[usize],
        tile: Option<wire::Rect>,
        inputs: &[Tensor],
        out_shapes: &[Vec<usize>],
        class: OpClass,
        rec: &mut JobRecord,
    ) -> Result<Vec<Tensor>, ClusterError> {
        let job = self.id();
        let (tx, rx) = oneshot::channel();
        lock(&peer.jobs).insert(job, tx);
        rec.sent_us = now_us();
        // Both ways: a large output is still crossing the link after its job.
        let f32_bytes: u64 = inputs.iter().map(|t| t.byte_len() as u64).sum::<u64>()
            + out_shapes
                .iter()
                .map(|s| s.iter().product::<usize>() as u64 * 4)
                .sum::<u64>();
        let allowance = self.allowance(peer.idx, class, rec.work(), f32_bytes);
        let sent = Instant::now();
        let mut deadline = sent + allowance;
        let gone = |why: String| ClusterError::Node {
            node: peer.name.clone(),
            why,
        };
        let result = async {
            let send = async {
                peer.send(&Msg::Run {
                    job,
                    model: model.hash.clone(),
                    nodes: nodes.to_vec(),
                    tile,
                    inputs: inputs.len() as u32,
                })
                .await?;
                wire::send_tensors(&peer.conn, TileKind::Tile, job, INPUT, inputs).await
            };
            // Past the deadline a node is not taken for dead while it
            // answers: its executor may be queued with other coordinators'
            // jobs (concurrent `tessera run`s), which the prediction cannot
            // know about. A stopped or cut-off node does not answer. The
            // inputs' send is held to the same deadline: to a node killed
            // mid-request it waits on flow control until the transport's
            // idle timeout (30 s) otherwise.
            let mut renewed = 0;
            tokio::pin!(send);
            let in_bytes = loop {
                let sending = tokio::select! {
                    s = tokio::time::timeout_at(deadline, &mut send) => s,
                    why = self.gone_silent(peer) => {
                        return Err(gone(format!("job {job}: {why} while taking its inputs")));
                    }
                };
                match sending {
                    Ok(sent) => break sent?,
                    Err(_) if renewed < self.timeouts.renewals && peer.answers(self.id()).await => {
                        renewed += 1;
                        deadline = Instant::now() + allowance;
                    }
                    Err(_) => {
                        return Err(gone(format!(
                            "job {job}: its inputs were not taken within {:.0} s and the node did not answer",
                            sent.elapsed().as_secs_f64()
                        )));
                    }
                }
            };
            let mut rx = rx;
            let answer = loop {
                // A node killed or stopped mid-job falls silent: it is
                // given up on then, not at the job's deadline, which is
                // sized for a live node that is slow (10 s and more).
                let waited = tokio::select! {
                    a = tokio::time::timeout_at(deadline, &mut rx) => a,
                    why = self.gone_silent(peer) => return Err(gone(format!("job {job}: {why}"))),
                };
                match waited {
                    Ok(a) => {
                        break a.map_err(|_| {
                            // A daemon that was stopped closes with code
                            // Shutdown; say so rather than only "lost".
                            let why = peer.conn.quinn().close_reason();
                            gone(match why {
                                Some(w) => format!("connection lost: {w}"),
                                None => "connection lost".into(),
                            })
                        })?;
                    }
                    Err(_) if renewed >= self.timeouts.renewals => {
                        return Err(gone(format!(
                            "job {job} not done after {:.0} s although the node answers",
                            sent.elapsed().as_secs_f64()
                        )));
                    }
                    Err(_) if peer.answers(self.id()).await => {
                        renewed += 1;
                        deadline = Instant::now() + allowance;
                        tracing::info!(
                            peer = %peer.name,
                            job,
                            "past its deadline but the node answers (busy): \
                             waiting {:.1} s more",
                            allowance.as_secs_f64()
                        );
                    }
                    Err(_) => {
                        return Err(gone(format!(
                            "job {job} timed out and the node did not answer within {} s",
                            PROBE_TIMEOUT.as_secs()
                        )));
                    }
                }
            };
            let (outputs, start_us, end_us, cold) = match answer {
                Msg::Done {
                    outputs,
                    start_us,
                    end_us,
                    cold,
                    ..
                } => (outputs, start_us, end_us, cold),
                Msg::Failed { message, .. } => return Err(ClusterError::Exec(message)),
                other => return Err(ClusterError::Protocol(format!("unexpected {other:?}"))),
            };
            if out_shapes.len() != outputs as usize {
                return Err(ClusterError::Protocol(format!(
                    "job {job} returned {outputs} outputs, expected {}",
                    out_shapes.len()
                )));
            }
            // The outputs went out before `Done` but may come after it (a
            // few MB behind a tiny control message): they get their own
            // allowance, not what was left of the job's.
            let deadline = deadline.max(Instant::now() + allowance);
            let mut out = Vec::with_capacity(outputs as usize);
            let mut out_bytes = 0;
            for i in 0..outputs {
                let taken = tokio::select! {
                    t = peer.inbox.take((job, OUTPUT, i), deadline) => t,
                    why = self.gone_silent(peer) => {
                        return Err(gone(format!("output {i} of job {job}: {why}")));
                    }
                };
                let (h, data) = taken.ok_or_else(|| {
                    gone(format!(
                        "output {i} of job {job} {}",
                        peer.inbox.why_missing(job)
                    ))
                })?;
                out_bytes += h.payload_bytes().unwrap_or(0);
                out.push(wire::to_tensor(&h, data, &out_shapes[i as usize])?);
            }
            Ok((out, start_us, end_us, cold, in_bytes, out_bytes))
        }
        .await;
        lock(&peer.jobs).remove(&job);
        rec.recv_us = now_us();
        match result {
            Ok((out, start, end, cold, in_bytes, out_bytes)) => {
                rec.start_us = start;
                rec.end_us = end;
                rec.cold = cold;
                // What crossed the link: a byte-encoded map counts a quarter.
                rec.in_bytes = in_bytes;
                rec.out_bytes = out_bytes;
                rec.ok = true;
                Ok(out)
            }
            Err(e) => {
                peer.inbox.forget(job);
                rec.ok = false;
                Err(e)
            }
        }
    }

    fn dominant_class(graph: &Graph, nodes: &[usize]) -> OpClass {
        let mut by: HashMap<usize, (OpClass, u64)> = HashMap::new();
        for &n in nodes {
            let c = graph.node_cost(n);
            let e = by
                .entry(planner::profiler::class_index(c.class))
                .or_insert((c.class, 0));
            e.1 += c.flops;
        }
        by.into_values()
            .max_by_key(|&(_, f)| f)
            .map_or(OpClass::Elementwise, |(c, _)| c)
    }

    fn record(
        &self,
        request: u64,
        stage: &str,
        stage_idx: usize,
        node: usize,
        class: OpClass,
    ) -> JobRecord {
        JobRecord::pending(
            request,
            stage,
            stage_idx,
            node,
            &self.cluster.nodes[node].name,
            calibrate::class_name(class),
        )
    }

    /// Runs a whole segment on the first live node of `candidates`, moving
    /// on to the next if one fails.
    #[allow(clippy::too_many_arguments)]
    async fn run_whole(
        &self,
        request: u64,
        model: &LoadedModel,
        stage: &str,
        stage_idx: usize,
        ops: &[usize],
        candidates: &[usize],
        env: &mut [Option<Tensor>],
        records: &mut Vec<JobRecord>,
    ) -> Result<(), ClusterError> {
        let graph = &model.graph;
        let plan = plan_job(graph, ops, None)?;
        let class = Self::dominant_class(graph, ops);
        let inputs = gather_inputs(&plan, env)?;
        let mut last = None;
        // The block's node is often the coordinator and an edge node too:
        // each is tried once.
        let mut tried = Vec::with_capacity(candidates.len());
        for &n in candidates {
            if tried.contains(&n) {
                continue;
            }
            tried.push(n);
            let Some(peer) = self.peer(n) else { continue };
            let mut rec = self.record(request, stage, stage_idx, n, class);
            rec.flops = plan.flops;
            let flops = super::job::class_flops(graph, &plan.graph, false);
            rec.class_work = model.class_work(ops, &flops);
            rec.ops = ops.len();
            let r = self
                .remote(
                    &peer,
                    model,
                    ops,
                    None,
                    &inputs,
                    &plan.output_shapes,
                    class,
                    &mut rec,
                )
                .await;
            records.push(rec);
            match r {
                Ok(outs) => {
                    for (&v, t) in plan.outputs.iter().zip(outs) {
                        env[v] = Some(t);
                    }
                    return Ok(());
                }
                Err(e) => {
                    peer.fail(&e);
                    // Which daemon refused, as a refused tile says it.
                    last = Some(match e {
                        ClusterError::Exec(m) => ClusterError::Node {
                            node: stage.into(),
                            why: format!(
                                "every node failed this stage; the last said {}: {m}",
                                peer.name
                            ),
                        },
                        e => e,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| ClusterError::Node {
            node: stage.into(),
            why: "no live node can run this stage".into(),
        }))
    }

    /// Runs one request by `plan`.
    pub async fn run(
        &self,
        request: u64,
        model: &LoadedModel,
        input: Tensor,
        plan: &ExecPlan,
    ) -> Result<RunOutcome, ClusterError> {
        let started = std::time::Instant::now();
        let graph = model.graph.clone();
        let mut env: Vec<Option<Tensor>> = vec![None; graph.values.len()];
        let &[input_id] = graph.inputs.as_slice() else {
            return Err(ClusterError::Model(
                "cluster runs take models with one input".into(),
            ));
        };
        if input.shape() != graph.shape(input_id) {
            return Err(ClusterError::Protocol(format!(
                "input has shape {:?}, the model takes {:?}",
                input.shape(),
                graph.shape(input_id)
            )));
        }
        if let Some(kinds) = self.mixed_executors(&graph, plan)
            && !self.warned_mixed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "tiles of one block run on different executors ({}) and the block \
                 has ops whose last bits can differ between executors (convolutions, \
                 transcendental activations, averages, divisions, norms, softmax, \
                 linear or cubic resizing), so the output may differ from a \
                 single-node run's by a few ULP; give the nodes that share blocks \
                 the same backend and adapter for bit-identical results",
                kinds.join(", ")
            );
        }
        let submit = input.byte_len() as u64;
        env[input_id] = Some(input);
        let mut records = Vec::new();

        // Device: its ops, or just the upload of its input. The input is
        // here too, so a device that is down, or dies during the request,
        // costs its part of the plan, not the request: its upload is
        // skipped, its ops run on the next candidate as an edge block's do,
        // and its tiles go to the live workers as a dead edge node's do.
        let mut first_block = 0;
        let device = self.peer(plan.device);
        if let Some(device) = &device
            && plan.device_ops.is_empty()
        {
            let mut rec = self.record(request, "device", 0, plan.device, OpClass::Elementwise);
            let t = env[input_id].clone().into_iter().collect::<Vec<_>>();
            // A job without ops hands its inputs back: the same count and
            // shapes, checked like any job's outputs.
            let echoed: Vec<Vec<usize>> = t.iter().map(|x| x.shape().to_vec()).collect();
            let (up_tx, up_rx) = watch::channel(false);
            let upload = async {
                let r = self
                    .remote(
                        device,
                        model,
                        &[],
                        None,
                        &t,
                        &echoed,
                        OpClass::Elementwise,
                        &mut rec,
                    )
                    .await;
                if let Err(e) = &r {
                    tracing::warn!(
                        peer = %device.name,
                        "the device's upload failed ({e}); the coordinator's copy of the input is used"
                    );
                    device.fail(e);
                }
                // Either way the input is at the coordinator now.
                let _ = up_tx.send(true);
                drop(up_tx);
                Ok::<(), ClusterError>(())
            };
            // The device's tiles of a first block that reads only the model
            // input run on the image it holds, while it uploads the rest.
            let early = match plan.blocks.first() {
                Some(
                    b @ ExecBlock {
                        tiles: Some((grid, owners)),
                        ..
                    },
                ) if owners.contains(&plan.device) => Some((b, grid, owners)),
                _ => None,
            };
            if let Some((block, grid, owners)) = early {
                let tiled = self.run_tiled(
                    request,
                    model,
                    "block 0",
                    1,
                    block,
                    grid,
                    owners,
                    &mut env,
                    &mut records,
                    Some((plan.device, up_rx)),
                );
                let (up, tiled) = tokio::join!(upload, tiled);
                up?;
                tiled?;
                first_block = 1;
            } else {
                upload.await?;
            }
            rec.submit_bytes = submit;
            rec.in_bytes = 0;
            records.push(rec);
        } else if !plan.device_ops.is_empty() {
            let mut cands = vec![plan.device, plan.coordinator];
            cands.extend(self.cluster.tier_nodes(Tier::Edge));
            cands.extend(plan.cloud);
            self.run_whole(
                request,
                model,
                "device",
                0,
                &plan.device_ops,
                &cands,
                &mut env,
                &mut records,
            )
            .await?;
            if let Some(r) = records.last_mut() {
                r.submit_bytes = submit;
                r.in_bytes = 0;
            }
        }

        for (b, block) in plan.blocks.iter().enumerate().skip(first_block) {
            let stage = format!("block {b}");
            match &block.tiles {
                None => {
                    let mut cands = vec![block.node, plan.coordinator];
                    cands.extend(self.cluster.tier_nodes(Tier::Edge));
                    cands.extend(plan.cloud);
                    self.run_whole(
                        request,
                        model,
                        &stage,
                        b + 1,
                        &block.ops,
                        &cands,
                        &mut env,
                        &mut records,
                    )
                    .await?;
                }
                Some((grid, owners)) => {
                    self.run_tiled(
                        request,
                        model,
                        &stage,
                        b + 1,
                        block,
                        grid,
                        owners,
                        &mut env,
                        &mut records,
                        None,
                    )
                    .await?;
                }
            }
        }
        if !plan.cloud_ops.is_empty() {
            let stage_idx = plan.blocks.len() + 1;
            let mut cands: Vec<usize> = plan.cloud.into_iter().collect();
            cands.push(plan.coordinator);
            cands.extend(self.cluster.tier_nodes(Tier::Edge));
            self.run_whole(
                request,
                model,
                "cloud",
                stage_idx,
                &plan.cloud_ops,
                &cands,
                &mut env,
                &mut records,
            )
            .await?;
        }
        let outputs = graph
            .outputs
            .iter()
            .map(|&v| {
                // Cloned, not taken: two outputs may name one value (an
                // Identity of another output).
                env[v].clone().ok_or_else(|| {
                    ClusterError::Protocol(format!(
                        "output {} was never computed",
                        graph.values[v].name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunOutcome {
            outputs,
            records,
            wall_s: started.elapsed().as_secs_f64(),
        })
    }

    /// Tiles of one block: each tile starts in its owner's queue; every live
    /// edge node (owners first) runs a worker that takes from its own queue,
    /// then steals from the back of the longest other queue. A node whose
    /// job fails or times out is marked down and its tiles go back to the
    /// pool; a tile's output is pasted once, from the first run that returns it.
    ///
    /// With `early = (device, upload)`, the block is the first and the
    /// device is still uploading the model input: if every tile reads only
    /// model inputs, the device starts on its tiles at once (it holds the
    /// image) and the other workers wait for the upload to arrive.
    #[allow(clippy::too_many_arguments)]
    async fn run_tiled(
        &self,
        request: u64,
        model: &LoadedModel,
        stage: &str,
        stage_idx: usize,
        block: &ExecBlock,
        grid: &Grid,
        owners: &[usize],
        env: &mut [Option<Tensor>],
        records: &mut Vec<JobRecord>,
        early: Option<(usize, watch::Receiver<bool>)>,
    ) -> Result<(), ClusterError> {
        let graph = &model.graph;
        let tb = Block::new(graph, block.ops.clone())
            .map_err(|e| ClusterError::Protocol(format!("{stage}: {e}")))?;
        let regions = tile_engine::tiling::block_regions(graph, &tb, grid)
            .map_err(|e| ClusterError::Protocol(format!("{stage}: {e}")))?;
        let class = Self::dominant_class(graph, &block.ops);
        // Plan every tile up front: inputs to send and output shapes.
        let mut jobs = Vec::with_capacity(regions.len());
        for r in &regions {
            let rect = [r.rows.start, r.cols.start, r.rows.len(), r.cols.len()];
            let plan = plan_job(graph, &block.ops, Some(rect))?;
            let inputs = gather_inputs(&plan, env)?;
            jobs.push((rect, plan, inputs));
        }
        let local = jobs
            .iter()
            .all(|(_, p, _)| p.inputs.iter().all(|v| graph.inputs.contains(v)));
        // Without local inputs the device waits for its own upload like the rest.
        let device = early.as_ref().map(|(d, _)| *d);
        let (early_node, gate) = match early {
            Some((d, gate)) => (local.then_some(d), Some(gate)),
            None => (None, None),
        };
        let mut workers: Vec<usize> = Vec::new();
        for &o in owners
            .iter()
            .chain(self.cluster.tier_nodes(Tier::Edge).iter())
        {
            if !workers.contains(&o) && self.peer(o).is_some() {
                workers.push(o);
            }
        }
        // Each tile starts with its planned owner, or round-robin over the
        // live workers if the owner is down.
        let owner_of = |t: usize| -> Option<usize> {
            let o = owners.get(t).copied()?;
            if workers.contains(&o) {
                workers.iter().position(|&w| w == o)
            } else if workers.is_empty() {
                None
            } else {
                Some(t % workers.len())
            }
        };
        let mut queues = vec![VecDeque::new(); workers.len()];
        let mut orphans = VecDeque::new();
        for t in 0..jobs.len() {
            match owner_of(t) {
                Some(slot) => queues[slot].push_back(t),
                None => orphans.push_back(t),
            }
        }
        let state = Mutex::new(TileState {
            steal: self.steal,
            queues,
            orphans,
            done: vec![None; jobs.len()],
            records: Vec::new(),
            running: 0,
        });
        let changed = Notify::new();
        let work = |slot: usize| {
            let (state, changed, jobs) = (&state, &changed, &jobs);
            let node = workers[slot];
            let mut gate = gate.clone().filter(|_| early_node != Some(node));
            async move {
                let Some(peer) = self.peer(node) else {
                    // Down since the plan was made: its tiles are anyone's
                    // now, not left for the serial fallback.
                    let mut s = lock(state);
                    let mine = std::mem::take(&mut s.queues[slot]);
                    s.orphans.extend(mine);
                    drop(s);
                    changed.notify_waiters();
                    return;
                };
                if let Some(g) = gate.as_mut()
                    && g.wait_for(|&arrived| arrived).await.is_err()
                {
                    // The upload was dropped unfinished (the request is
                    // being abandoned): nothing to wait for.
                    return;
                }
                loop {
                    // Taken and counted as running under one lock: a worker
                    // in between would see nothing queued, nobody running,
                    // and leave.
                    let next = {
                        let mut s = lock(state);
                        let next = s.next(slot);
                        if next.is_some() {
                            s.running += 1;
                        }
                        next
                    };
                    let Some((t, stolen)) = next else {
                        // Nothing queued: wait for a failure to free tiles, or the end.
                        let notified = changed.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        {
                            let s = lock(state);
                            if s.any_waiting(slot) {
                                continue;
                            }
                            // Done, or nobody running who could fail and free a tile.
                            if s.done.iter().all(Option::is_some) || s.running == 0 {
                                return;
                            }
                        }
                        notified.await;
                        continue;
                    };
                    let (mut rec, r) = self
                        .run_tile(
                            &peer, request, model, stage, stage_idx, block, class, t, &jobs[t],
                            stolen,
                        )
                        .await;
                    if early_node == Some(node) {
                        // Its inputs were the device's own: handed over, not sent.
                        rec.early = true;
                        rec.submit_bytes = rec.in_bytes;
                        rec.in_bytes = 0;
                    }
                    let mut s = lock(state);
                    s.running -= 1;
                    s.records.push(rec);
                    match r {
                        Ok(outs) => {
                            if s.done[t].is_none() {
                                s.done[t] = Some(outs);
                            }
                            drop(s);
                            changed.notify_waiters();
                        }
                        Err(e) => {
                            s.orphans.push_back(t);
                            let mine: Vec<usize> = s.queues[slot].drain(..).collect();
                            s.orphans.extend(mine);
                            drop(s);
                            // The node sits this block out.
                            peer.fail(&e);
                            changed.notify_waiters();
                            return;
                        }
                    }
                }
            }
        };
        futures_util::future::join_all((0..workers.len()).map(work)).await;
        let mut s = state.into_inner().unwrap_or_else(|p| p.into_inner());
        records.append(&mut s.records);
        if let Some(g) = &gate
            && !*g.borrow()
        {
            let node = device.map_or("device", |d| self.cluster.nodes[d].name.as_str());
            return Err(ClusterError::Node {
                node: node.to_string(),
                why: "the device's upload of the input failed".into(),
            });
        }
        // Every edge worker died with tiles left: run them anywhere alive.
        for (t, job) in jobs.iter().enumerate() {
            if s.done[t].is_some() {
                continue;
            }
            let mut got = None;
            let mut refused = None;
            for n in self.alive() {
                let Some(peer) = self.peer(n) else { continue };
                let (rec, r) = self
                    .run_tile(
                        &peer, request, model, stage, stage_idx, block, class, t, job, false,
                    )
                    .await;
                records.push(rec);
                match r {
                    Ok(o) => {
                        got = Some(o);
                        break;
                    }
                    Err(ClusterError::Exec(m)) => refused = Some(format!("{}: {m}", peer.name)),
                    Err(e) if !nodes_fault(&e) => refused = Some(format!("{}: {e}", peer.name)),
                    Err(e) => peer.mark_down(&e.to_string()),
                }
            }
            s.done[t] = Some(got.ok_or_else(|| ClusterError::Node {
                node: stage.into(),
                why: match refused {
                    Some(m) => format!("every node failed this tile; the last said {m}"),
                    None => "every node failed this tile".into(),
                },
            })?);
        }
        let mut outs: Vec<Tensor> = tb
            .outputs
            .iter()
            .map(|&o| Tensor::zeros(graph.shape(o).to_vec()))
            .collect();
        for (t, res) in s.done.into_iter().enumerate() {
            let region = jobs[t]
                .1
                .out_region
                .ok_or_else(|| ClusterError::Protocol("tile without region".into()))?;
            for (dst, src) in outs.iter_mut().zip(res.into_iter().flatten()) {
                paste_region(dst, &src, region)
                    .map_err(|e| ClusterError::Protocol(e.to_string()))?;
            }
        }
        for (&o, t) in tb.outputs.iter().zip(outs) {
            env[o] = Some(t);
        }
        Ok(())
    }

    /// Runs tile `t` of a block on `peer` and records it.
    #[allow(clippy::too_many_arguments)]
    async fn run_tile(
        &self,
        peer: &Peer,
        request: u64,
        model: &LoadedModel,
        stage: &str,
        stage_idx: usize,
        block: &ExecBlock,
        class: OpClass,
        t: usize,
        job: &TileJob,
        stolen: bool,
    ) -> (JobRecord, Result<Vec<Tensor>, ClusterError>) {
        let (rect, plan, inputs) = job;
        let mut rec = self.record(request, stage, stage_idx, peer.idx, class);
        rec.tile = Some(t);
        rec.flops = plan.flops;
        // A GPU tile's span includes its kernel padding and its row-by-row
        // crop copies, which the planner prices on top of the ops' work:
        // both are recorded as work, so the learnt rate does not absorb them.
        let gpu = self.backend(peer.idx) == Backend::Gpu;
        if gpu {
            rec.row_copies = tile_engine::tiling::row_copy_elements(&plan.graph);
        }
        let flops = super::job::class_flops(&model.graph, &plan.graph, gpu);
        rec.class_work = model.class_work(&block.ops, &flops);
        rec.ops = block.ops.len();
        rec.stolen = stolen;
        let r = self
            .remote(
                peer,
                model,
                &block.ops,
                Some(*rect),
                inputs,
                &plan.output_shapes,
                class,
                &mut rec,
            )
            .await;
        (rec, r)
    }

    /// Folds a request's successful warm jobs into the profiler. A cold
    /// job is left out: a node's first run of a block took 2–2.5× its later
    /// runs on lavapipe (kernels compiled, weights uploaded), and folded in
    /// it left the estimates 25 % slow after three more runs, so every
    /// prediction was that much too long.
    pub fn observe(&self, records: &[JobRecord]) {
        let mut p = lock(&self.profiler);
        for r in records
            .iter()
            .filter(|r| r.ok && !r.cold && r.work() > 0 && r.end_us > r.start_us)
        {
            let Some(class) = class_of(&r.class) else {
                continue;
            };
            // A GPU tile's row copies run at the elementwise rate, as the
            // planner prices them on top of the ops' work.
            let mut work = r.class_work;
            work[class_index(OpClass::Elementwise)] += r.row_copies;
            let seconds = (r.end_us - r.start_us) as f64 / 1e6;
            if let Err(e) = p.observe_mixed_job(r.node, class, r.ops, &work, seconds) {
                tracing::warn!("span not folded in: {e}");
            }
        }
    }

    /// Closes every connection.
    pub async fn shutdown(&self) {
        let peers: Vec<Arc<Peer>> = lock(&self.peers).iter().flatten().cloned().collect();
        // A node left down has its connection closed already: waiting for
        // acknowledgements there (a model upload it refused part-way) cost
        // every request that had one 2 s.
        for p in peers.iter().filter(|p| p.alive()) {
            let _ = tokio::time::timeout(Duration::from_secs(2), p.conn.shutdown("done")).await;
        }
        self.endpoint.close();
        // Until the close frames are out: a process that exits first leaves
        // the nodes holding its connections (and their models) for their
        // idle timeout, 30 s.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// One tile of a block: its output rectangle, its plan, and its inputs.
type TileJob = (wire::Rect, super::job::JobPlan, Vec<Tensor>);

struct TileState {
    steal: bool,
    queues: Vec<VecDeque<usize>>,
    orphans: VecDeque<usize>,
    done: Vec<Option<Vec<Tensor>>>,
    records: Vec<JobRecord>,
    running: usize,
}

/// Whether a job's failure says something about its node: not when its
/// executor refused the job (the job's fault), nor when this side's own frame
/// limits kept it from being sent (a tensor over `max_payload_bytes`, say),
/// which every other node would meet too.
fn nodes_fault(e: &ClusterError) -> bool {
    !matches!(
        e,
        ClusterError::Exec(_) | ClusterError::Transport(transport::Error::Frame(_))
    )
}

impl TileState {
    /// Whether worker `slot` has something it may take now.
    fn any_waiting(&self, slot: usize) -> bool {
        !self.orphans.is_empty()
            || !self.queues[slot].is_empty()
            || (self.steal && self.queues.iter().any(|q| !q.is_empty()))
    }

    /// The next tile for worker `slot`: its own queue, then orphans, then a
    /// steal from the back of the longest queue. Second value: stolen.
    fn next(&mut self, slot: usize) -> Option<(usize, bool)> {
        if let Some(t) = self.queues[slot].pop_front() {
            return Some((t, false));
        }
        if let Some(t) = self.orphans.pop_front() {
            return Some((t, true));
        }
        if !self.steal {
            return None;
        }
        let victim = (0..self.queues.len())
            .filter(|&q| q != slot)
            .max_by_key(|&q| self.queues[q].len())?;
        self.queues[victim].pop_back().map(|t| (t, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block the planner tiles but the engine does not (a U-Net encoder
    /// stage: its skip map and its pooled map both leave the block) is cut
    /// into blocks the engine tiles, in order, each still tiled.
    #[test]
    fn a_block_of_two_output_sizes_is_cut_into_engine_blocks() {
        use std::sync::Arc;
        use tile_engine::ir::{Activation, Conv, Op, Pool, PoolKind};
        let conv = |c: usize| {
            Op::Conv(Conv {
                weight: Arc::new(Tensor::zeros(vec![c, c, 3, 3])),
                bias: None,
                strides: [1, 1],
                pads: [1; 4],
                dilations: [1, 1],
                group: 1,
                activation: Activation::Relu,
            })
        };
        let pool = Op::Pool(Pool {
            kind: PoolKind::Max,
            kernel: [2, 2],
            strides: [2, 2],
            pads: [0; 4],
            dilations: [1, 1],
            ceil_mode: false,
        });
        let mut g = Graph::default();
        let x = g.add_value("x", vec![1, 4, 16, 16]);
        g.inputs.push(x);
        let skip = g.add_node("c1", conv(4), vec![x], "skip").expect("c1");
        let p = g.add_node("pool", pool, vec![skip], "p").expect("pool");
        let y = g.add_node("c2", conv(4), vec![p], "y").expect("c2");
        g.outputs.extend([skip, y]);
        assert!(Block::new(&g, vec![0, 1, 2]).is_err(), "two output sizes");
        let parts = engine_blocks(&g, &[0, 1, 2]);
        assert_eq!(parts, vec![(vec![0], true), (vec![1, 2], true)]);
        for (ops, _) in &parts {
            Block::new(&g, ops.clone()).expect("the engine tiles each part");
        }
    }

    /// Only what a node did marks it down: not its executor's refusal,
    /// nor this side's frame limits (every node would meet those).
    #[test]
    fn a_frame_this_side_will_not_send_is_no_nodes_fault() {
        let limit = transport::FrameError::Limit("payload length 300000000 exceeds cap".into());
        assert!(!nodes_fault(&ClusterError::Transport(limit.into())));
        assert!(!nodes_fault(&ClusterError::Exec("no kernel".into())));
        assert!(nodes_fault(&ClusterError::Node {
            node: "edge1".into(),
            why: "job 3 timed out".into(),
        }));
        assert!(nodes_fault(&ClusterError::Transport(
            transport::Error::Connection("lost".into())
        )));
    }

    /// A node killed while it profiles the model: the log line says so in
    /// words (it read `no model profile: Ok(Err(RecvError(())))`).
    #[test]
    fn a_node_gone_while_profiling_is_reported_in_words() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let gone = rt.block_on(async {
            let (tx, rx) = oneshot::channel::<Msg>();
            drop(tx);
            Ok(rx.await)
        });
        assert_eq!(
            profile_answer("edge0", 3, gone),
            Err("node edge0 went away while profiling the model".to_string())
        );
        let late = rt.block_on(async {
            let (_tx, rx) = oneshot::channel::<Msg>();
            tokio::time::timeout(Duration::from_millis(1), rx).await
        });
        let why = profile_answer("edge0", 3, late).err().unwrap_or_default();
        assert!(why.contains("edge0") && why.contains("within"), "{why}");
        let answer = |seconds: Vec<Option<f64>>, error: Option<&str>| {
            Ok(Ok(Msg::ModelProfile {
                hash: "h".into(),
                seconds,
                error: error.map(String::from),
            }))
        };
        assert_eq!(
            profile_answer("edge0", 2, answer(vec![Some(1.0), None], None)),
            Ok(vec![Some(1.0), None])
        );
        assert_eq!(
            profile_answer("edge0", 3, answer(vec![Some(1.0)], None)),
            Err("node edge0 profiled 1 ops of a model of 3".to_string())
        );
        assert_eq!(
            profile_answer("edge0", 3, answer(Vec::new(), Some("not loaded"))),
            Err("node edge0 could not profile the model: not loaded".to_string())
        );
    }
}
