//! `node.toml`: what one daemon needs to know about itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::Backend;

/// A node daemon's configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name: its certificate's name and its name in the cluster file.
    pub name: String,
    /// `device`, `edge` or `cloud`.
    pub tier: planner::Tier,
    /// QUIC listen address.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Folder with `ca.pem`, `<name>.pem` and `<name>.key` (see `tessera certs`);
    /// a relative path is taken from the config file's folder.
    pub certs: PathBuf,
    /// Names of the peers allowed to connect (the coordinator's included).
    pub peers: Vec<String>,
    /// Executor: `gpu` (default) or `cpu`.
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// GPU adapter name (substring).
    #[serde(default)]
    pub adapter: Option<String>,
    /// Kernel autotuning; off by default so that every node of a cluster
    /// makes the same kernel choices and tiles stitch bit for bit.
    #[serde(default)]
    pub autotune: bool,
    /// Prometheus metrics endpoint (`GET /metrics`), e.g. `127.0.0.1:9100`.
    #[serde(default, deserialize_with = "some_socket_addr")]
    pub metrics: Option<SocketAddr>,
    /// Largest model bundle accepted, bytes.
    #[serde(default = "default_max_model_bytes")]
    pub max_model_bytes: u64,
    /// Bundle bytes of the models kept loaded; past it the least recently
    /// used are dropped (a coordinator that loads one again sends it again),
    /// but not those a live connection loaded or a job is running.
    #[serde(default = "default_model_cache_bytes")]
    pub model_cache_bytes: u64,
    /// Run calibration at start-up (default true).
    #[serde(default = "yes")]
    pub calibrate: bool,
    /// A lock file all daemons on one machine share, taken around each job
    /// so their compute spans do not overlap (the demo sets it; see
    /// ARCHITECTURE.md, "dedicated-hardware makespan"); a relative path is
    /// taken from the config file's folder.
    #[serde(default)]
    pub compute_lock: Option<PathBuf>,
    /// The file this configuration was read from (errors name it).
    #[serde(skip)]
    pub file: PathBuf,
}

fn default_backend() -> Backend {
    Backend::Gpu
}

fn default_max_model_bytes() -> u64 {
    1 << 30
}

/// An IP address and port; a host name is refused with a word on why
/// (serde's own message is "invalid socket address syntax").
fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP address and port such as 0.0.0.0:7000 or \
             127.0.0.1:7000 (a daemon binds an address, not a host name)"
        ))
    })
}

fn some_socket_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

fn default_model_cache_bytes() -> u64 {
    4 << 30
}

fn yes() -> bool {
    true
}

impl NodeConfig {
    /// Reads and checks a node file; errors name the file and the field.
    pub fn read(path: &Path) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("nodes"))
        {
            bail!(
                "{}: this is a cluster file ([[nodes]]), which `tessera run` and `tessera plan` take; `tessera node` takes one node's file (name, tier, listen, certs, peers)",
                path.display()
            );
        }
        let mut cfg: NodeConfig =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        cfg.file = path.to_path_buf();
        // Relative paths mean "next to this file", not "wherever the daemon
        // was started": a service manager or a `cd` elsewhere must not
        // change which certificates a node loads.
        let dir = path.parent().unwrap_or(Path::new(""));
        cfg.certs = dir.join(&cfg.certs);
        cfg.compute_lock = cfg.compute_lock.map(|p| dir.join(p));
        transport::certs::check_node_name(&cfg.name)
            .with_context(|| format!("{}: field `name`", path.display()))?;
        if cfg.peers.is_empty() {
            bail!(
                "{}: field `peers` is empty: nobody could connect",
                path.display()
            );
        }
        for p in &cfg.peers {
            transport::certs::check_node_name(p)
                .with_context(|| format!("{}: field `peers`", path.display()))?;
        }
        for (field, v) in [
            ("max_model_bytes", cfg.max_model_bytes),
            ("model_cache_bytes", cfg.model_cache_bytes),
        ] {
            if v == 0 {
                bail!(
                    "{}: field `{field}` must be above 0 (no model could load)",
                    path.display()
                );
            }
        }
        if let (Some(name), Backend::Cpu) = (&cfg.adapter, cfg.backend) {
            bail!(
                "{}: field `adapter` ({name}) picks a GPU adapter; it does nothing with backend = \"cpu\"",
                path.display()
            );
        }
        Ok(cfg)
    }
}
