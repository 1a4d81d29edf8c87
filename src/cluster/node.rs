//! `tessera node`: the daemon of one tier. It listens on QUIC with mutual
//! TLS, caches models by content hash, runs jobs (whole segments or tiles of
//! fused blocks) on its executor one at a time, reports calibration and
//! per-job spans, and serves Prometheus metrics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tile_engine::{Graph, Tensor};
use tokio::sync::oneshot;
use tokio::time::Instant;
use transport::{
    Capabilities, Connection, Control, Endpoint, EndpointConfig, Hello, Identity, TileKind,
};

use super::bundle::{self, Bundle};
use super::config::NodeConfig;
use super::inbox::Inbox;
use super::job::plan_job;
use super::metrics::{self, Metrics};
use super::model_cache::ModelCache;
use super::wire::{self, CHUNK_BYTES, INPUT, MODEL_CHUNK, Msg, OUTPUT};
use super::{ClusterError, calibrate, tier_wire};

/// How long a job waits for its input tensors before it fails.
const INPUT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a model upload may go without its next chunk.
const CHUNK_SILENCE: Duration = Duration::from_secs(30);

/// Microseconds since the Unix epoch: every process on a machine shares
/// this clock, so the demo can lay all nodes' spans on one time line.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Outputs and the executor's start and end (µs, Unix epoch), or why it failed.
type RunResult = Result<(Vec<Tensor>, u64, u64), String>;

enum Work {
    Run {
        graph: Graph,
        inputs: Vec<Tensor>,
        /// False once the job's coordinator has gone (its connection closed):
        /// a job still queued then is dropped, not run for no one.
        wanted: Box<dyn Fn() -> bool + Send>,
        reply: oneshot::Sender<RunResult>,
    },
    Calibrate {
        reply: oneshot::Sender<Vec<(String, f64)>>,
    },
    /// Drop the executor and end the thread (the daemon is stopping).
    Stop,
    Profile {
        graph: Arc<Graph>,
        /// Asked between ops: false once no one wants the profile.
        wanted: Box<dyn Fn() -> bool + Send>,
        /// Each op's seconds, and how long the executor was busy.
        reply: oneshot::Sender<(Vec<Option<f64>>, Duration)>,
    },
}

/// The executor lives on its own thread (GPU executors need not be `Send`,
/// and jobs must not stall the async runtime); jobs queue in front of it.
#[derive(Clone)]
struct ExecHandle {
    tx: std::sync::mpsc::Sender<Work>,
    /// What the daemon announces in its Hello (peers group by it).
    name: String,
    /// The name with the GPU's backend and driver, for the log.
    description: String,
    /// Jobs that may hold their inputs in memory at once: later ones wait
    /// with theirs still in the connection's bounded inbox.
    slots: Arc<tokio::sync::Semaphore>,
    /// Signalled once the thread has dropped its executor.
    stopped: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
    /// Set when the executor could not be made again after a panic.
    lost: tokio::sync::watch::Receiver<bool>,
}

/// Jobs whose inputs a node holds for its executor at once (queued or
/// running), over all connections.
const MAX_QUEUED_JOBS: usize = 64;
/// How long a job takes its inputs once all have arrived (they are held).
const INPUT_GRACE: Duration = Duration::from_secs(5);

/// Runs `f`, turning a panic into `None` and `panicked = true`.
fn guarded<T>(panicked: &mut bool, f: impl FnOnce() -> T) -> Option<T> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    *panicked |= r.is_none();
    r
}

fn start_executor(cfg: &NodeConfig) -> Result<ExecHandle> {
    let (tx, rx) = std::sync::mpsc::channel::<Work>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    let (lost_tx, lost) = tokio::sync::watch::channel(false);
    let (backend, adapter, autotune) = (cfg.backend, cfg.adapter.clone(), cfg.autotune);
    // A lock asked for and not taken would let jobs overlap unseen: refuse
    // to start, as for any other config mistake.
    let lock_file = match &cfg.compute_lock {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(p)
                .with_context(|| {
                    format!(
                        "{}: field `compute_lock`: cannot open {}",
                        cfg.file.display(),
                        p.display()
                    )
                })?,
        ),
        None => None,
    };
    // The daemon has no --backend flag: the way out is its config file.
    let cpu_hint = format!(
        "backend = \"cpu\" in {}{}",
        cfg.file.display(),
        if cfg.adapter.is_some() {
            " (without `adapter`)"
        } else {
            ""
        }
    );
    let thread = std::thread::Builder::new()
        .name("executor".into())
        .spawn(move || {
            let locked = |f: &mut dyn FnMut()| match &lock_file {
                Some(l) => super::compute_lock::with_lock(l, f),
                None => f(),
            };
            // Creating an executor compiles kernels: under the lock, so it
            // does not steal the cores from another node's calibration.
            let make = || crate::exec::executor(backend, adapter.clone(), !autotune, &cpu_hint);
            let mut made = None;
            locked(&mut || made = Some(make()));
            let mut exec = match made {
                Some(Ok(e)) => {
                    let _ = ready_tx.send(Ok((e.name(), e.describe())));
                    e
                }
                Some(Err(e)) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                None => return,
            };
            while let Ok(work) = rx.recv() {
                // A panic (a bug, or a model crafted to hit one) fails its
                // own work item; the executor, whose state it may have left
                // half-updated, is then made afresh, and the thread, with
                // every later client's job, carries on.
                let mut panicked = false;
                match work {
                    Work::Stop => break,
                    Work::Run {
                        graph,
                        inputs,
                        wanted,
                        reply,
                    } => {
                        // Asked before the job and, on an executor that
                        // can stop between ops (the CPU one), before each.
                        let keep_going = || !reply.is_closed() && wanted();
                        if !keep_going() {
                            let _ = reply.send(Err("its coordinator has gone".to_string()));
                            continue;
                        }
                        let until = crate::exec::Until {
                            exec: exec.as_ref(),
                            keep_going: &keep_going,
                        };
                        let mut out = Err("not run".to_string());
                        locked(&mut || {
                            let start = now_us();
                            // A map over this GPU's binding limit runs on a
                            // finer grid here, with the same result: the
                            // planner does not know each node's limits.
                            let run = guarded(&mut panicked, || {
                                crate::exec::run_within_limits(
                                    &until,
                                    &graph,
                                    &inputs,
                                    tile_engine::tiling::Grid::uniform(1, 1),
                                    None,
                                    &mut |m| tracing::info!("{m}"),
                                )
                            });
                            out = match run {
                                Some(r) => r
                                    .map(|(o, _)| (o, start, now_us()))
                                    .map_err(|e| format!("{e:#}")),
                                None => Err("the executor panicked on this job".to_string()),
                            };
                        });
                        let _ = reply.send(out);
                    }
                    Work::Calibrate { reply } => {
                        let mut rates = Vec::new();
                        locked(&mut || {
                            rates = guarded(&mut panicked, || calibrate::calibrate(exec.as_ref()))
                                .unwrap_or_default();
                        });
                        let _ = reply.send(rates);
                    }
                    Work::Profile {
                        graph,
                        wanted,
                        reply,
                    } => {
                        let mut seconds = Vec::new();
                        let mut busy = Duration::ZERO;
                        let keep_going = || !reply.is_closed() && wanted();
                        locked(&mut || {
                            let t0 = std::time::Instant::now();
                            seconds = guarded(&mut panicked, || {
                                calibrate::profile_ops(exec.as_ref(), &graph, &keep_going)
                            })
                            .flatten()
                            .unwrap_or_default();
                            busy = t0.elapsed();
                        });
                        let _ = reply.send((seconds, busy));
                    }
                }
                if panicked {
                    tracing::error!("the executor panicked; starting a fresh one");
                    // A remake that panics too is a lost executor as well.
                    let mut remade = None;
                    locked(&mut || remade = guarded(&mut false, make));
                    match remade {
                        Some(Ok(e)) => {
                            let old = std::mem::replace(&mut exec, e);
                            // Its state may be poisoned; its drop must not
                            // take the thread down after all.
                            guarded(&mut panicked, move || drop(old));
                        }
                        _ => {
                            tracing::error!("cannot start a fresh executor");
                            lost_tx.send_replace(true);
                            break;
                        }
                    }
                }
            }
            // The GPU is released here, before the process exits: a GL
            // driver's teardown racing the exit aborted daemons stopped
            // with SIGTERM (double free, EGL BadDisplay).
            drop(exec);
            let _ = stopped_tx.send(());
        })
        .context("cannot start the executor thread")?;
    match ready_rx.recv() {
        Ok(Ok((name, description))) => Ok(ExecHandle {
            tx,
            name,
            description,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_QUEUED_JOBS)),
            stopped: Arc::new(Mutex::new(stopped_rx)),
            lost,
        }),
        failed => {
            // Let the thread drop what it made of the GPU before the
            // process exits: the driver's teardown racing the exit once
            // aborted with a heap corruption after the error was printed.
            let _ = thread.join();
            match failed {
                Ok(Err(e)) => Err(e),
                _ => Err(anyhow::anyhow!("the executor thread died while starting")),
            }
        }
    }
}

impl ExecHandle {
    /// Ends the executor thread after the jobs queued before this, waiting at
    /// most `within` for it to release the GPU.
    async fn stop(&self, within: Duration) {
        if self.tx.send(Work::Stop).is_err() {
            return;
        }
        let stopped = self.stopped.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = lock(&stopped).recv_timeout(within);
        })
        .await;
    }

    async fn run(
        &self,
        graph: Graph,
        inputs: Vec<Tensor>,
        wanted: Box<dyn Fn() -> bool + Send>,
    ) -> RunResult {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Work::Run {
                graph,
                inputs,
                wanted,
                reply,
            })
            .map_err(|_| "executor stopped".to_string())?;
        rx.await.map_err(|_| "executor stopped".to_string())?
    }

    /// Each op's seconds (none if stopped: `wanted` turned false, or a
    /// panic) and how long the executor was busy.
    async fn profile(
        &self,
        graph: Arc<Graph>,
        wanted: Box<dyn Fn() -> bool + Send>,
    ) -> (Vec<Option<f64>>, Duration) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Work::Profile {
                graph,
                wanted,
                reply,
            })
            .is_err()
        {
            return (Vec::new(), Duration::ZERO);
        }
        rx.await.unwrap_or_default()
    }

    async fn calibrate(&self) -> Vec<(String, f64)> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Work::Calibrate { reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Node {
    name: String,
    exec: ExecHandle,
    models: Mutex<ModelCache>,
    /// Models a client was told to send and is sending, by hash: another
    /// client asking about one waits for that load instead of sending the
    /// same bytes again. The sender side lives in the claiming session.
    loading: Mutex<HashMap<String, tokio::sync::watch::Receiver<()>>>,
    /// Per-op seconds of each profiled model: a coordinator that connects
    /// again (each `tessera run`) gets them without the runs.
    profiles: Mutex<HashMap<String, Vec<Option<f64>>>>,
    metrics: Arc<Metrics>,
    throttle: Mutex<f64>,
    rates: Mutex<Vec<(String, f64)>>,
    max_model_bytes: u64,
    /// (model hash, op ids) sets this process has run once: a first run
    /// pays one-off costs and is reported cold.
    warm: Mutex<HashSet<(String, Vec<usize>)>>,
    /// One profile of a model at a time, by hash (see `Msg::ProfileModel`).
    profiling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// `tessera node --config FILE`: reads the file and serves until SIGINT or
/// SIGTERM (or, when started by the demo's harness, until the parent goes away).
pub fn main(config: &std::path::Path) -> Result<()> {
    let cfg = NodeConfig::read(config)?;
    if std::env::var_os(super::harness::WATCH_STDIN).is_some() {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let served = rt.block_on(serve(cfg));
    // A model still being decoded on the blocking pool is not waited for:
    // the connections are closed, nobody will ask for it.
    rt.shutdown_timeout(Duration::from_millis(200));
    served
}

/// Installs the SIGINT, SIGTERM and SIGHUP handlers now (a signal that comes
/// before the returned future is polled is kept, not fatal) and returns a
/// future that resolves with the first one's name.
pub fn stop_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
        // A closed terminal or session: stopped as cleanly (it killed a
        // daemon on the spot, its connections left to time out).
        let mut hup = signal(SignalKind::hangup()).context("cannot watch for SIGHUP")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => "SIGHUP",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}

/// How long a stopping daemon waits for its peers to see its connections close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a stopping daemon waits for the job its executor is running.
const EXECUTOR_GRACE: Duration = Duration::from_secs(5);

/// Runs a node daemon until SIGINT or SIGTERM.
pub async fn serve(cfg: NodeConfig) -> Result<()> {
    let identity = Identity::load(&cfg.certs, &cfg.name)
        .with_context(|| format!("certificates for {} in {}", cfg.name, cfg.certs.display()))?;
    // Before the executor starts and calibrates, both of which wait for a
    // shared compute lock: a signal meanwhile stops the daemon cleanly (it
    // was killed by it, exit 143, after saying nothing).
    let stop = stop_signal()?;
    tokio::pin!(stop);
    let starting = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || start_executor(&cfg))
    };
    let exec = tokio::select! {
        made = starting => made.context("the executor thread failed to start")??,
        sig = &mut stop => {
            tracing::info!(node = %cfg.name, "{sig} while the executor started: stopping");
            return Ok(());
        }
    };
    tracing::info!(node = %cfg.name, executor = %exec.description, "executor ready");
    let metrics = Arc::new(Metrics::default());
    let node = Arc::new(Node {
        name: cfg.name.clone(),
        exec: exec.clone(),
        models: Mutex::new(ModelCache::new(cfg.model_cache_bytes)),
        loading: Mutex::new(HashMap::new()),
        profiles: Mutex::new(HashMap::new()),
        metrics: metrics.clone(),
        throttle: Mutex::new(1.0),
        rates: Mutex::new(Vec::new()),
        max_model_bytes: cfg.max_model_bytes,
        warm: Mutex::new(HashSet::new()),
        profiling: Mutex::new(HashMap::new()),
    });
    // Ports first: a port in use fails at once, not after the calibration.
    // The QUIC socket is bound for real once the Hello holds the measured
    // rate; this probe only catches a port that is taken now.
    drop(
        std::net::UdpSocket::bind(cfg.listen)
            .with_context(|| format!("cannot listen on {}", cfg.listen))?,
    );
    let _metrics_task = match cfg.metrics {
        Some(addr) => {
            let (bound, task) = metrics::serve(addr, cfg.name.clone(), metrics.clone())
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            println!("metrics on http://{bound}/metrics");
            Some(task)
        }
        None => None,
    };
    if cfg.calibrate {
        let rates = tokio::select! {
            rates = exec.calibrate() => rates,
            sig = &mut stop => {
                tracing::info!(node = %cfg.name, "{sig} during the calibration: stopping");
                return Ok(());
            }
        };
        let readable: Vec<String> = rates
            .iter()
            .map(|(class, r)| match class.as_str() {
                // The one entry that is a time, not a rate.
                calibrate::JOB_OVERHEAD => format!("job overhead {:.2} ms", r * 1e3),
                _ => format!("{class} {:.2} GFLOP/s", r / 1e9),
            })
            .collect();
        tracing::info!(node = %cfg.name, "calibrated: {}", readable.join(", "));
        *lock(&node.rates) = rates;
    }
    let gflops = lock(&node.rates)
        .iter()
        .find(|(n, _)| n == "conv3x3")
        .map_or(0.0, |(_, r)| r / 1e9);
    let hello = Hello {
        node_id: cfg.name.clone(),
        tier: tier_wire(cfg.tier),
        adapter: exec.name.clone(),
        capabilities: Capabilities {
            gflops: gflops as f32,
            memory_bytes: 0,
            max_payload_bytes: transport::Caps::default().max_payload_bytes,
            features: Vec::new(),
        },
    };
    let endpoint = Endpoint::bind(
        cfg.listen,
        EndpointConfig::new(identity, cfg.peers.clone(), hello),
    )
    .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    // The demo waits for this line before it connects.
    println!(
        "node {} ({:?}) listening on {} with {}",
        cfg.name,
        cfg.tier,
        endpoint.local_addr()?,
        exec.name
    );
    let mut lost = exec.lost.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.incoming() => incoming,
            // A node without an executor would take every job and fail it
            // (a lost GPU, say); exiting tells its coordinators at once, and
            // whatever supervises the daemon to start it again.
            Ok(_) = lost.wait_for(|&l| l) => {
                endpoint.close();
                let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
                anyhow::bail!("the executor failed and could not be started again; stopping");
            }
            sig = &mut stop => {
                // Closed connections (code Shutdown) tell the coordinator at
                // once to re-dispatch this node's tiles; a process that just
                // died would leave it waiting for each job's timeout.
                tracing::info!(node = %cfg.name, "{sig}: closing connections");
                endpoint.close();
                let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
                exec.stop(EXECUTOR_GRACE).await;
                return Ok(());
            }
        };
        match incoming {
            None => {
                exec.stop(EXECUTOR_GRACE).await;
                return Ok(());
            }
            // Each handshake on its own task: a peer that stalls in it
            // must not hold up the next connection.
            Some(incoming) => {
                let (node, peers) = (node.clone(), cfg.peers.clone());
                tokio::spawn(async move {
                    match incoming.finish().await {
                        Ok(conn) => {
                            tracing::info!(
                                node = %node.name,
                                peer = conn.peer(),
                                from = %conn.quinn().remote_address(),
                                "connected"
                            );
                            handle(node, conn).await;
                        }
                        Err(e) => {
                            node.metrics.errors.fetch_add(1, Ordering::Relaxed);
                            // The peer's side reads why in a close frame cut
                            // short; the allow-list is said here.
                            tracing::warn!(
                                node = %node.name,
                                "handshake failed, no connection: {e} (this node's peers: {peers:?})"
                            );
                        }
                    }
                });
            }
        }
    }
}

/// Models one connection keeps from the cache's evictions.
const PINNED_MODELS: usize = 8;

/// What one connection holds: its inbox, and the models it last loaded or
/// asked about. The cache drops none of those while the connection lasts
/// (it skips models held elsewhere), so another client's model never fails
/// this one's jobs with "not loaded" after it was told they were.
#[derive(Default)]
struct Session {
    inbox: Inbox,
    models: Mutex<std::collections::VecDeque<(String, Arc<Graph>)>>,
    /// Loads this client was told to send (see `Node::loading`); dropping
    /// one, when its load ends or the connection does, wakes the waiters.
    claims: Mutex<HashMap<String, tokio::sync::watch::Sender<()>>>,
}

impl Session {
    /// The model from the node's cache, kept for this connection.
    fn model(&self, node: &Node, hash: &str) -> Option<Arc<Graph>> {
        let g = lock(&node.models).get(hash)?;
        self.pin(hash, &g);
        Some(g)
    }

    /// Keeps `graph` for this connection, newest last, at most [`PINNED_MODELS`].
    fn pin(&self, hash: &str, graph: &Arc<Graph>) {
        let mut m = lock(&self.models);
        m.retain(|(h, _)| h != hash);
        m.push_back((hash.to_string(), graph.clone()));
        if m.len() > PINNED_MODELS {
            m.pop_front();
        }
    }
}

async fn handle(node: Arc<Node>, conn: Connection) {
    let _open = node.metrics.connected();
    let session = Arc::new(Session::default());
    {
        let (conn, session, metrics) = (conn.clone(), session.clone(), node.metrics.clone());
        tokio::spawn(async move {
            while let Some(t) = conn.recv_tile().await {
                metrics
                    .bytes_in
                    .fetch_add(t.payload.as_bytes().len() as u64, Ordering::Relaxed);
                if !session.inbox.put(t.header, t.payload.into_vec()) {
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = conn.peer(), "inbox full: tensor dropped");
                }
            }
        });
    }
    let rates = lock(&node.rates).clone();
    let hello = Msg::Calibrated {
        rates,
        executor: node.exec.name.clone(),
    };
    if let Err(e) = hello.send(&conn, 0).await {
        tracing::warn!(peer = conn.peer(), "{e}");
        return;
    }
    while let Some(c) = conn.recv_control().await {
        match c {
            Control::PlanUpdate(p) => match Msg::parse(&p.body) {
                Ok(msg) => {
                    let (node, conn, session) = (node.clone(), conn.clone(), session.clone());
                    tokio::spawn(async move { on_message(node, conn, session, msg).await });
                }
                Err(e) => {
                    node.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = conn.peer(), "{e}");
                    let _ = Msg::Failed {
                        job: 0,
                        message: e.to_string(),
                    }
                    .send(&conn, 0)
                    .await;
                }
            },
            Control::Shutdown(_) => break,
            Control::Error(e) => tracing::warn!(peer = conn.peer(), "peer error: {}", e.message),
            Control::Profile(_) => {}
        }
    }
    tracing::info!(
        node = %node.name,
        peer = conn.peer(),
        from = %conn.quinn().remote_address(),
        "connection ended"
    );
}

async fn on_message(node: Arc<Node>, conn: Connection, session: Arc<Session>, msg: Msg) {
    match msg {
        Msg::Run {
            job,
            model,
            nodes,
            tile,
            inputs,
        } => {
            if let Err(e) = run_job(&node, &conn, &session, job, &model, &nodes, tile, inputs).await
            {
                if conn.quinn().close_reason().is_some() {
                    // Its client went away (Ctrl-C, a failed request): the
                    // job was dropped on purpose, which is no error to alert on.
                    tracing::info!(node = %node.name, job, "job dropped: its coordinator has gone ({e})");
                    session.inbox.forget(job);
                    return;
                }
                node.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %node.name, job, "job failed: {e}");
                // Inputs the failed job never claimed (or that arrive
                // late) would hold inbox space until the connection ends.
                session.inbox.forget(job);
                // The coordinator reads a failed job as the executor's
                // refusal and says "executor:" itself.
                let message = match e {
                    ClusterError::Exec(m) => m,
                    other => other.to_string(),
                };
                let _ = Msg::Failed { job, message }.send(&conn, 0).await;
            }
        }
        Msg::HasModel { hash } => {
            let loaded = model_here_or_claimed(&node, &session, &hash).await;
            let profiled = loaded && lock(&node.profiles).contains_key(&hash);
            let _ = Msg::ModelState {
                hash,
                loaded,
                error: None,
                profiled,
            }
            .send(&conn, 0)
            .await;
        }
        Msg::LoadModel {
            hash,
            transfer,
            bytes,
        } => {
            let result = load_model(&node, &session, &hash, transfer, bytes).await;
            // Loaded or not, clients waiting for this one's load may go on.
            lock(&session.claims).remove(&hash);
            // Chunks not read (the model was here already, or the load
            // failed) would hold inbox space until the connection ends.
            session.inbox.forget(transfer);
            if let Err(e) = &result {
                node.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %node.name, "model {hash}: {e}");
            }
            let profiled = result.is_ok() && lock(&node.profiles).contains_key(&hash);
            let _ = Msg::ModelState {
                hash,
                loaded: result.is_ok(),
                profiled,
                // The coordinator says "cannot load the model: …" itself.
                error: result.err().map(|e| match e {
                    ClusterError::Model(why) => why,
                    e => e.to_string(),
                }),
            }
            .send(&conn, 0)
            .await;
        }
        Msg::Calibrate => {
            let rates = node.exec.calibrate().await;
            *lock(&node.rates) = rates.clone();
            let _ = Msg::Calibrated {
                rates,
                executor: node.exec.name.clone(),
            }
            .send(&conn, 0)
            .await;
        }
        Msg::ProfileModel { hash } => {
            // Clients that start together with a new model all ask for its
            // profile: one runs, the others wait for it and take it from
            // the map, instead of each profiling again ahead of every job.
            let gate = lock(&node.profiling)
                .entry(hash.clone())
                .or_default()
                .clone();
            let turn = gate.lock().await;
            let graph = session.model(&node, &hash);
            let cached = lock(&node.profiles).get(&hash).cloned();
            let (seconds, error) = match (cached, graph) {
                (Some(s), _) => (s, None),
                (None, Some(g)) => {
                    // Profiling occupies the executor as jobs do: the busy
                    // time and queue depth a scraper sees include it.
                    let queued = node.metrics.queued();
                    let client = conn.quinn().clone();
                    let wanted = Box::new(move || client.close_reason().is_none());
                    let (s, busy) = node.exec.profile(g, wanted).await;
                    drop(queued);
                    node.metrics
                        .busy_us
                        .fetch_add(busy.as_micros() as u64, Ordering::Relaxed);
                    if s.is_empty() {
                        tracing::info!(
                            node = %node.name,
                            model = %hash,
                            "no profile: its client has gone, or the executor failed"
                        );
                    } else {
                        tracing::info!(
                            node = %node.name,
                            model = %hash,
                            "profiled {} ops in {:.1} s",
                            s.len(),
                            busy.as_secs_f64()
                        );
                    }
                    // A stopped profile is no profile, and a model dropped
                    // from the cache while it was profiled takes none into
                    // the map.
                    if !s.is_empty() && lock(&node.models).contains(&hash) {
                        lock(&node.profiles).insert(hash.clone(), s.clone());
                    }
                    (s, None)
                }
                (None, None) => (Vec::new(), Some(format!("model {hash} is not loaded here"))),
            };
            drop(turn);
            {
                // The gate goes once no one else waits at it (the map and
                // this task hold the only references).
                let mut gates = lock(&node.profiling);
                if Arc::strong_count(&gate) == 2 {
                    gates.remove(&hash);
                }
            }
            let answer = Msg::ModelProfile {
                hash: hash.clone(),
                seconds,
                error,
            };
            if let Err(e) = answer.send(&conn, 0).await {
                // Too large to send, say: the coordinator plans from FLOPs
                // at once instead of waiting out its timeout.
                tracing::warn!(node = %node.name, "model {hash}: the profile was not sent: {e}");
                let _ = Msg::ModelProfile {
                    hash,
                    seconds: Vec::new(),
                    error: Some(format!("the profile could not be sent: {e}")),
                }
                .send(&conn, 0)
                .await;
            }
        }
        Msg::Throttle { factor } => {
            *lock(&node.throttle) = if factor.is_finite() {
                factor.clamp(1.0, 100.0)
            } else {
                1.0
            };
            tracing::info!(node = %node.name, factor, "throttled");
        }
        other => tracing::warn!(node = %node.name, "unexpected message {other:?}"),
    }
}

/// Most a client waits for another's load of the same model before it is
/// told to send the model itself.
const CLAIM_WAIT: Duration = Duration::from_secs(120);

/// Whether `hash` is loaded here (marked used: one just reported loaded is
/// not the next evicted), waiting first for another client's load of it.
/// A `false` is a claim: this client sends the model, and others asking
/// meanwhile wait for its load rather than send it too (clients that start
/// together with a new model each sent it).
async fn model_here_or_claimed(node: &Node, session: &Session, hash: &str) -> bool {
    let started = Instant::now();
    // Only a content hash is claimed: a coordinator's liveness probe asks
    // about "probe N", which no one loads.
    let claimable = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    loop {
        if session.model(node, hash).is_some() {
            return true;
        }
        // This client is sending it already (it asked again).
        if !claimable || lock(&session.claims).contains_key(hash) {
            return false;
        }
        let other = {
            let mut loading = lock(&node.loading);
            // Claims that ended (loaded, failed, client gone) go.
            loading.retain(|_, rx| rx.has_changed().is_ok());
            match loading.get(hash) {
                Some(rx) => Some(rx.clone()),
                // No load under way: this client's.
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(());
                    loading.insert(hash.to_string(), rx);
                    lock(&session.claims).insert(hash.to_string(), tx);
                    None
                }
            }
        };
        let Some(mut rx) = other else {
            return false;
        };
        let left = CLAIM_WAIT.saturating_sub(started.elapsed());
        // Woken when the claim ends (its sender dropped): loaded, failed,
        // or the claiming client gone; the loop finds out which.
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            // Waited long enough: this client sends its own copy.
            return false;
        }
    }
}

async fn load_model(
    node: &Node,
    session: &Session,
    hash: &str,
    transfer: u64,
    bytes: u64,
) -> Result<(), ClusterError> {
    if session.model(node, hash).is_some() {
        return Ok(());
    }
    let inbox = &session.inbox;
    if bytes > node.max_model_bytes {
        return Err(ClusterError::Model(format!(
            "{bytes} bytes is over this node's max_model_bytes ({})",
            node.max_model_bytes
        )));
    }
    let len = bytes as usize;
    let chunks = len.div_ceil(CHUNK_BYTES);
    // Reserved as chunks come, not all at once on the peer's word.
    let mut data = Vec::with_capacity(len.min(16 * CHUNK_BYTES));
    for i in 0..chunks {
        // A large model on a slow link takes as long as it takes; what
        // fails it is a sender that has stopped.
        let deadline = Instant::now() + CHUNK_SILENCE;
        let (_, f) = inbox
            .take((transfer, MODEL_CHUNK, i as u32), deadline)
            .await
            .ok_or_else(|| {
                ClusterError::Model(format!(
                    "chunk {i} of {chunks} {}",
                    if inbox.overflowed(transfer) {
                        inbox.why_missing(transfer)
                    } else {
                        format!("never came (nothing for {} s)", CHUNK_SILENCE.as_secs())
                    }
                ))
            })?;
        let want = (len - i * CHUNK_BYTES).min(CHUNK_BYTES);
        let got: &[u8] = bytemuck::cast_slice(&f);
        if got.len() != want.div_ceil(4) * 4 {
            return Err(ClusterError::Model(format!(
                "chunk {i} has {} bytes, expected {want}",
                got.len()
            )));
        }
        data.extend_from_slice(&got[..want]);
    }
    if bundle::hash(&data) != hash {
        return Err(ClusterError::Model(
            "content does not match its hash".into(),
        ));
    }
    let graph = tokio::task::spawn_blocking(move || Bundle::decode(&data)?.graph())
        .await
        .map_err(|e| ClusterError::Model(e.to_string()))??;
    let graph = Arc::new(graph);
    // Pinned before it is cached: the cache's eviction skips it from the start.
    session.pin(hash, &graph);
    let dropped = {
        let mut cache = lock(&node.models);
        let dropped = cache.insert(hash, graph, bytes);
        node.metrics.cache_holds(cache.len(), cache.bytes());
        dropped
    };
    node.metrics.models.fetch_add(1, Ordering::Relaxed);
    for h in dropped {
        lock(&node.profiles).remove(&h);
        lock(&node.warm).retain(|(model, _)| *model != h);
        tracing::info!(node = %node.name, model = %h, "dropped from the model cache (model_cache_bytes)");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_job(
    node: &Node,
    conn: &Connection,
    session: &Session,
    job: u64,
    model: &str,
    nodes: &[usize],
    tile: Option<wire::Rect>,
    inputs: u32,
) -> Result<(), ClusterError> {
    let inbox = &session.inbox;
    let deadline = Instant::now() + INPUT_TIMEOUT;
    if nodes.is_empty() {
        // No ops: the node sends its tensors on (a device whose plan part
        // is empty still has to upload its input).
        let mut echo = Vec::new();
        for i in 0..inputs.min(64) {
            let (h, data) = inbox.take((job, INPUT, i), deadline).await.ok_or_else(|| {
                ClusterError::Protocol(format!("input {i} of job {job} {}", inbox.why_missing(job)))
            })?;
            let shape: Vec<usize> = h.shape.iter().map(|&d| d as usize).collect();
            echo.push(wire::to_tensor(&h, data, &shape)?);
        }
        let now = now_us();
        let sent = wire::send_tensors(conn, TileKind::Result, job, OUTPUT, &echo).await?;
        node.metrics.bytes_out.fetch_add(sent, Ordering::Relaxed);
        // A job like any other to whoever counts them (`tessera run` does).
        node.metrics.jobs.fetch_add(1, Ordering::Relaxed);
        return Msg::Done {
            job,
            outputs: echo.len() as u32,
            start_us: now,
            end_us: now,
            flops: 0,
            cold: false,
        }
        .send(conn, 0)
        .await;
    }
    let graph = session
        .model(node, model)
        .ok_or_else(|| ClusterError::Model(format!("model {model} is not loaded here")))?;
    let plan = plan_job(&graph, nodes, tile)?;
    if plan.inputs.len() != inputs as usize {
        return Err(ClusterError::Protocol(format!(
            "job announces {inputs} inputs, its nodes read {}",
            plan.inputs.len()
        )));
    }
    // Inputs wait in the connection's bounded inbox until all have come;
    // only then does the job take a slot and them, and it gives the slot
    // back when the executor is done: a job whose inputs never come, or
    // whose client reads its outputs slowly, holds none.
    for i in 0..inputs {
        if !inbox.wait_for((job, INPUT, i), deadline).await {
            return Err(ClusterError::Protocol(format!(
                "input {i} of job {job} {}",
                inbox.why_missing(job)
            )));
        }
    }
    // Its inputs are all here: from now it waits for the executor.
    let queued = node.metrics.queued();
    let slot = node
        .exec
        .slots
        .acquire()
        .await
        .map_err(|_| ClusterError::Exec("executor stopped".into()))?;
    let deadline = Instant::now() + INPUT_GRACE;
    let mut tensors = Vec::with_capacity(plan.input_shapes.len());
    for (i, shape) in plan.input_shapes.iter().enumerate() {
        let (h, data) = inbox
            .take((job, INPUT, i as u32), deadline)
            .await
            .ok_or_else(|| {
                ClusterError::Protocol(format!("input {i} of job {job} {}", inbox.why_missing(job)))
            })?;
        tensors.push(wire::to_tensor(&h, data, shape)?);
    }
    let client = conn.quinn().clone();
    let wanted = Box::new(move || client.close_reason().is_none());
    let result = node.exec.run(plan.graph, tensors, wanted).await;
    drop(slot);
    drop(queued);
    let (outputs, start_us, mut end_us) = result.map_err(ClusterError::Exec)?;
    let cold = lock(&node.warm).insert((model.to_string(), nodes.to_vec()));
    let factor = *lock(&node.throttle);
    if factor > 1.0 {
        // A throttled node behaves like slower hardware: its job takes
        // `factor` times as long, and reports so.
        let extra = (end_us.saturating_sub(start_us) as f64 * (factor - 1.0)) as u64;
        tokio::time::sleep(Duration::from_micros(extra)).await;
        end_us += extra;
    }
    node.metrics
        .busy_us
        .fetch_add(end_us.saturating_sub(start_us), Ordering::Relaxed);
    let sent = wire::send_tensors(conn, TileKind::Result, job, OUTPUT, &outputs).await?;
    node.metrics.bytes_out.fetch_add(sent, Ordering::Relaxed);
    node.metrics.jobs.fetch_add(1, Ordering::Relaxed);
    if tile.is_some() {
        node.metrics.tiles.fetch_add(1, Ordering::Relaxed);
    }
    Msg::Done {
        job,
        outputs: outputs.len() as u32,
        start_us,
        end_us,
        flops: plan.flops,
        cold,
    }
    .send(conn, 0)
    .await
}
