//! The running system: node daemons, the coordinator that drives them by the
//! planner's plan, trace replay, and the harness the demo and the cluster
//! benchmark start clusters with.
//!
//! - [`wire`], [`bundle`], [`job`]: what travels and how both sides agree on it.
//! - [`node`], [`config`], [`metrics`], [`calibrate`], [`model_cache`]: the daemon.
//! - [`coordinator`]: plans, dispatches, steals, re-dispatches, stitches.
//! - [`trace`]: spans of a run, the dedicated-hardware replay, Gantt and JSON.
//! - [`harness`]: child daemons on loopback behind the link emulator.

pub mod bundle;
pub mod calibrate;
pub mod compute_lock;
pub mod config;
pub mod coordinator;
pub mod experiment;
pub mod harness;
pub mod inbox;
pub mod job;
pub mod metrics;
pub mod model_cache;
pub mod node;
pub mod trace;
pub mod wire;

/// What can go wrong between coordinator and nodes.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The transport failed (connection, stream, TLS, caps).
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// A peer sent something that does not fit the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A model could not be transferred or parsed.
    #[error("model: {0}")]
    Model(String),
    /// The executor failed a job.
    #[error("executor: {0}")]
    Exec(String),
    /// No edge node could be reached: why, for each.
    #[error("no edge node can be reached: {0}")]
    NoEdge(String),
    /// A node did not answer in time or went away.
    #[error("node {node}: {why}")]
    Node {
        /// The node.
        node: String,
        /// What happened.
        why: String,
    },
}

/// The planner's tier as the transport's Hello spells it.
pub fn tier_wire(t: planner::Tier) -> transport::Tier {
    match t {
        planner::Tier::Device => transport::Tier::Device,
        planner::Tier::Edge => transport::Tier::Edge,
        planner::Tier::Cloud => transport::Tier::Cloud,
    }
}

/// The transport's Hello tier as the planner spells it.
pub fn tier_from_wire(t: transport::Tier) -> planner::Tier {
    match t {
        transport::Tier::Device => planner::Tier::Device,
        transport::Tier::Edge => planner::Tier::Edge,
        transport::Tier::Cloud => planner::Tier::Cloud,
    }
}
