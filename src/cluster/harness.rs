//! A real cluster on loopback: one `tessera node` child process per node of
//! a cluster description, throwaway certificates, and a link-emulator relay
//! in front of every node except the coordinator's, shaped like the
//! cluster's link between that node and the coordinator. The demo, the
//! cluster benchmark and the cluster tests start clusters with it.
//!
//! Children are killed when the [`LocalCluster`] is dropped, and each child
//! exits by itself when its stdin closes, so none outlives a parent that is
//! killed.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use planner::{Cluster, Estimates, Tier};
use transport::emulator::{LinkConfig, Relay};
use transport::{Capabilities, Endpoint, EndpointConfig, Hello, Identity};

use crate::Backend;

/// The name the coordinator's certificate carries.
pub const COORDINATOR: &str = "coordinator";
/// Environment variable that makes a node exit when its stdin closes.
pub const WATCH_STDIN: &str = "TESSERA_EXIT_WITH_STDIN";

/// How to start the children.
#[derive(Clone, Debug)]
pub struct HarnessOptions {
    /// The `tessera` binary to run as `tessera node`.
    pub exe: PathBuf,
    /// Work folder: certificates, node files, logs.
    pub dir: PathBuf,
    /// Executor of every node.
    pub backend: Backend,
    /// Serialise compute across nodes (see `trace`): needed for replay on a shared machine.
    pub compute_lock: bool,
    /// Serve metrics on a free local port per node.
    pub metrics: bool,
}

/// A running loopback cluster.
pub struct LocalCluster {
    /// The cluster (addresses are those of the running daemons).
    pub cluster: Cluster,
    /// Where the coordinator connects for each node (a relay, or the node).
    pub addrs: Vec<SocketAddr>,
    /// The node the coordinator stands in for.
    pub coordinator_node: usize,
    /// Metrics URL per node, when enabled.
    pub metrics: Vec<Option<String>>,
    opts: HarnessOptions,
    children: Vec<Option<Child>>,
    relays: Vec<Option<Relay>>,
    node_addrs: Vec<SocketAddr>,
    /// Lines added to each node's `node.toml` (see [`LocalCluster::restart_with`]).
    extra: Vec<String>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The link between nodes `a` and `b` as the emulator takes it.
pub fn link_config(cluster: &Cluster, a: usize, b: usize) -> Option<LinkConfig> {
    let (na, nb) = (&cluster.nodes[a].name, &cluster.nodes[b].name);
    let l = cluster
        .links
        .iter()
        .find(|l| (&l.from == na && &l.to == nb) || (&l.from == nb && &l.to == na))?;
    Some(LinkConfig {
        bandwidth_mbps: l.bandwidth_mbps,
        delay_ms: l.delay_ms,
        jitter_ms: l.jitter_ms,
        loss: l.loss,
        seed: (a * 131 + b) as u64 + 1,
        ..LinkConfig::default()
    })
}

impl LocalCluster {
    /// Generates certificates, starts every node and the relays.
    pub async fn start(mut cluster: Cluster, opts: HarnessOptions) -> Result<LocalCluster> {
        cluster.validate()?;
        // Every daemon runs `opts.backend`; the cluster file says so too.
        for node in &mut cluster.nodes {
            node.backend = match opts.backend {
                Backend::Cpu => planner::cluster::Backend::Cpu,
                Backend::Gpu => planner::cluster::Backend::Gpu,
            };
        }
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("cannot create {}", opts.dir.display()))?;
        let mut names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        names.push(COORDINATOR.to_string());
        transport::certs::generate(&opts.dir.join("certs"), &names)
            .context("cannot write the cluster's certificates")?;
        let n = cluster.nodes.len();
        let mut lc = LocalCluster {
            addrs: Vec::new(),
            coordinator_node: 0,
            metrics: vec![None; n],
            children: (0..n).map(|_| None).collect(),
            relays: (0..n).map(|_| None).collect(),
            node_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0)); n],
            extra: vec![String::new(); n],
            opts,
            cluster: cluster.clone(),
        };
        for i in 0..n {
            lc.spawn(i)?;
        }
        for i in 0..n {
            lc.wait_ready(i)?;
            cluster.nodes[i].address = lc.node_addrs[i].to_string();
        }
        lc.cluster = cluster;
        let topo =
            planner::cost::Topology::choose(&lc.cluster, &Estimates::from_cluster(&lc.cluster))?;
        lc.coordinator_node = topo.coordinator;
        for i in 0..n {
            lc.relay(i).await?;
        }
        Ok(lc)
    }

    fn node_file(&self, i: usize) -> Result<PathBuf> {
        let node = &self.cluster.nodes[i];
        let path = self.opts.dir.join(format!("{}.toml", node.name));
        let backend = match self.opts.backend {
            Backend::Cpu => "cpu",
            Backend::Gpu => "gpu",
        };
        // Paths relative to the node file's folder (`dir`), as a node
        // reads them, so they hold wherever `dir` is (the demo's is relative).
        let mut text = format!(
            "name = \"{}\"\ntier = \"{}\"\nlisten = \"127.0.0.1:0\"\ncerts = \"certs\"\npeers = [\"{COORDINATOR}\"]\nbackend = \"{backend}\"\n",
            node.name,
            node.tier.name(),
        );
        if self.opts.metrics {
            text.push_str("metrics = \"127.0.0.1:0\"\n");
        }
        if self.opts.compute_lock {
            text.push_str("compute_lock = \"compute.lock\"\n");
        }
        text.push_str(&self.extra[i]);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let file = self.node_file(i)?;
        let name = self.cluster.nodes[i].name.clone();
        let log = std::fs::File::create(self.opts.dir.join(format!("{name}.log")))
            .context("cannot create a node log")?;
        let child = Command::new(&self.opts.exe)
            .args(["node", "--config"])
            .arg(&file)
            .env(WATCH_STDIN, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.opts.exe.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Reads the child's stdout until it says where it listens.
    fn wait_ready(&mut self, i: usize) -> Result<()> {
        let name = self.cluster.nodes[i].name.clone();
        let Some(child) = self.children[i].as_mut() else {
            bail!("{name} is not running");
        };
        let Some(out) = child.stdout.take() else {
            bail!("{name}: no stdout");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let log_path = self.opts.dir.join(format!("{name}.out"));
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).ok();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(l) = log.as_mut() {
                    let _ = writeln!(l, "{line}");
                }
                if let Some(url) = line.strip_prefix("metrics on ") {
                    let _ = tx.send((true, url.to_string()));
                }
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((false, addr));
                }
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(180)) {
                Ok((true, url)) => self.metrics[i] = Some(url),
                Ok((false, addr)) => {
                    self.node_addrs[i] = addr
                        .parse()
                        .with_context(|| format!("{name} printed a bad address {addr}"))?;
                    return Ok(());
                }
                Err(_) => {
                    let log = self.opts.dir.join(format!("{name}.log"));
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                    bail!(
                        "node {name} did not start (log {}): {}",
                        log.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    );
                }
            }
        }
    }

    async fn relay(&mut self, i: usize) -> Result<()> {
        let c = self.coordinator_node;
        let target = self.node_addrs[i];
        let addr = match (i != c).then(|| link_config(&self.cluster, c, i)).flatten() {
            Some(cfg) => {
                let r = Relay::start(SocketAddr::from(([127, 0, 0, 1], 0)), target, &cfg)
                    .await
                    .context("cannot start a link emulator")?;
                let a = r.local_addr();
                self.relays[i] = Some(r);
                a
            }
            None => target,
        };
        if self.addrs.len() <= i {
            self.addrs.resize(i + 1, addr);
        }
        self.addrs[i] = addr;
        Ok(())
    }

    /// The coordinator's endpoint (its own certificate, all nodes allowed).
    pub fn coordinator_endpoint(&self) -> Result<Endpoint> {
        let id = Identity::load(&self.opts.dir.join("certs"), COORDINATOR)?;
        let peers = self.cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let hello = Hello {
            node_id: COORDINATOR.into(),
            tier: transport::Tier::Edge,
            adapter: "none".into(),
            capabilities: Capabilities::default(),
        };
        Ok(Endpoint::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            EndpointConfig::new(id, peers, hello),
        )?)
    }

    /// Kills node `i` with SIGKILL (no goodbye).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) node `i`: a stalled node.
    pub fn signal(&self, i: usize, sig: &str) -> Result<()> {
        let Some(c) = self.children[i].as_ref() else {
            bail!("node {i} is not running");
        };
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(c.id().to_string())
            .status()
            .context("cannot run kill")?
            .success();
        if !ok {
            bail!("kill -{sig} failed");
        }
        Ok(())
    }

    /// Sends node `i` SIGTERM and waits up to `within` for it to exit;
    /// returns its exit status (`None`: still running).
    pub fn terminate(&mut self, i: usize, within: Duration) -> Result<Option<ExitStatus>> {
        self.signal(i, "TERM")?;
        let Some(c) = self.children[i].as_mut() else {
            bail!("node {i} is not running");
        };
        let until = std::time::Instant::now() + within;
        loop {
            if let Some(st) = c.try_wait().context("cannot wait for a node")? {
                return Ok(Some(st));
            }
            if std::time::Instant::now() >= until {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts node `i` again (same name, new port) and points its relay at it.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i)?;
        self.cluster.nodes[i].address = self.node_addrs[i].to_string();
        self.relays[i] = None;
        self.relay(i).await
    }

    /// Starts node `i` again as [`LocalCluster::restart`] does, with `lines`
    /// added to its `node.toml` (a node configured unlike the others).
    pub async fn restart_with(&mut self, i: usize, lines: &str) -> Result<()> {
        self.extra[i] = lines.to_string();
        self.restart(i).await
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }

    /// Nodes of a tier.
    pub fn tier(&self, t: Tier) -> Vec<usize> {
        self.cluster.tier_nodes(t)
    }

    /// The work folder.
    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }
}
