//! Cluster description: the nodes, their tiers and priors, and the links
//! between them. Read by the binary from `cluster.toml` (serde, unknown
//! fields rejected) and validated here before the planner uses it.

use serde::Deserialize;

use crate::error::{Error, Result};

/// Name of the device [`Cluster::add_input_stand_in`] adds to a cluster
/// file without one (not a name a node can have: it has parentheses).
pub const INPUT_STAND_IN: &str = "(input)";

/// Index of a node in [`Cluster::nodes`].
pub type NodeIdx = usize;

/// The three tiers, ordered as data flows through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The requesting device (exactly one per cluster).
    Device,
    /// Parallel edge nodes that share tiles.
    Edge,
    /// The cloud node (the fastest one is used if several are listed).
    Cloud,
}

impl Tier {
    /// All tiers in flow order.
    pub const ALL: [Tier; 3] = [Tier::Device, Tier::Edge, Tier::Cloud];

    /// Position in flow order (device 0, edge 1, cloud 2).
    pub fn rank(self) -> usize {
        self as usize
    }

    /// Lowercase name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Device => "device",
            Tier::Edge => "edge",
            Tier::Cloud => "cloud",
        }
    }
}

/// Which executor a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The wgpu executor.
    #[default]
    Gpu,
    /// The CPU reference executor.
    Cpu,
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique name, used by links and reports.
    pub name: String,
    /// The tier the node belongs to.
    pub tier: Tier,
    /// Listen address (`host:port`); the planner only carries it.
    pub address: String,
    /// Executor backend.
    #[serde(default)]
    pub backend: Backend,
    /// Cold-start throughput prior for 3×3 convolutions, in GFLOP/s;
    /// other op classes are scaled from it until calibration replaces them.
    pub gflops: f64,
}

/// One link. Field names match the transport crate's link emulator
/// (`bandwidth_mbps`, `delay_ms`, `jitter_ms`, `loss`). A link serves both
/// directions: a second entry between the same two nodes is refused.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Sending node name.
    pub from: String,
    /// Receiving node name.
    pub to: String,
    /// Bandwidth in Mbit/s (10^6 bits per second).
    pub bandwidth_mbps: f64,
    /// One-way delay in milliseconds.
    pub delay_ms: f64,
    /// Delay jitter (standard deviation) in milliseconds.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Packet loss probability in `[0, 1)`.
    #[serde(default)]
    pub loss: f64,
}

/// A whole cluster: one device, one or more edge nodes, and any number of cloud nodes (none included).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The nodes (`[[nodes]]` in TOML).
    pub nodes: Vec<NodeSpec>,
    /// The links (`[[links]]` in TOML).
    #[serde(default)]
    pub links: Vec<LinkSpec>,
}

impl Cluster {
    /// Checks names, tiers and figures; call once after deserialising.
    pub fn validate(&self) -> Result<()> {
        self.validate_parts()?;
        self.check_coordinator_links()
    }

    /// [`Cluster::validate`] without the check that some edge node can
    /// coordinate: the planner's sub-cluster of live nodes may have lost
    /// that node, and plans with the edge nodes its coordinator reaches.
    pub fn validate_parts(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for n in &self.nodes {
            if n.name.is_empty() {
                return Err(Error::Cluster("a node has an empty name".into()));
            }
            if !seen.insert(n.name.as_str()) {
                return Err(Error::Cluster(format!("node name {} used twice", n.name)));
            }
            if !(n.gflops.is_finite() && n.gflops > 0.0) {
                return Err(Error::Cluster(format!(
                    "node {}: gflops must be a positive number, got {}",
                    n.name, n.gflops
                )));
            }
        }
        let count = |t: Tier| self.nodes.iter().filter(|n| n.tier == t).count();
        if count(Tier::Device) != 1 {
            return Err(Error::Cluster(format!(
                "exactly one device node expected, found {}",
                count(Tier::Device)
            )));
        }
        // A cloud node is optional: without one, plans keep to the device
        // and edge tiers. Plans use one; a second would be ignored silently.
        if count(Tier::Cloud) > 1 {
            let names: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.tier == Tier::Cloud)
                .map(|n| n.name.as_str())
                .collect();
            return Err(Error::Cluster(format!(
                "at most one cloud node expected, found {} ({})",
                names.len(),
                names.join(", ")
            )));
        }
        if count(Tier::Edge) == 0 {
            return Err(Error::Cluster("no edge node".into()));
        }
        let mut pairs = std::collections::HashSet::new();
        for l in &self.links {
            // A link serves both directions; a second one between the same
            // nodes would be ignored silently.
            let pair = if l.from < l.to {
                (l.from.as_str(), l.to.as_str())
            } else {
                (l.to.as_str(), l.from.as_str())
            };
            if !pairs.insert(pair) {
                return Err(Error::Cluster(format!(
                    "two links between {} and {} (a link serves both directions)",
                    pair.0, pair.1
                )));
            }
            for end in [&l.from, &l.to] {
                if self.node_index(end).is_none() {
                    return Err(Error::Cluster(format!("link names unknown node {end}")));
                }
            }
            if l.from == l.to {
                return Err(Error::Cluster(format!("link from {} to itself", l.from)));
            }
            let what = format!("link {}→{}", l.from, l.to);
            if !(l.bandwidth_mbps.is_finite() && l.bandwidth_mbps > 0.0) {
                return Err(Error::Cluster(format!(
                    "{what}: bandwidth_mbps must be a positive number (got {})",
                    l.bandwidth_mbps
                )));
            }
            let tier = |end: &str| self.node_index(end).map(|i| self.nodes[i].tier);
            if let (Some(a), Some(b)) = (tier(&l.from), tier(&l.to))
                && a != b
                && a != Tier::Edge
                && b != Tier::Edge
            {
                // Plans send the device's data to the cloud through the
                // coordinator edge node: a direct link would be ignored.
                return Err(Error::Cluster(format!(
                    "{what}: the device and the cloud are not linked directly in tessera's plans \
                     (their tensors go through the coordinator edge node); remove this link"
                )));
            }
            for (field, v) in [("delay_ms", l.delay_ms), ("jitter_ms", l.jitter_ms)] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(Error::Cluster(format!(
                        "{what}: {field} must be a number ≥ 0 (got {v})"
                    )));
                }
            }
            if !(l.loss.is_finite() && (0.0..1.0).contains(&l.loss)) {
                return Err(Error::Cluster(format!(
                    "{what}: loss must be in [0, 1) (got {})",
                    l.loss
                )));
            }
        }
        Ok(())
    }

    /// Checks that some edge node can be the coordinator: linked to the
    /// device, to every other edge node and to a cloud node if there is one
    /// (the links of the planner's star, see `cost::Topology`). Without this, a file
    /// with no `[[links]]` passed validation and failed only when a plan
    /// was made.
    fn check_coordinator_links(&self) -> Result<()> {
        let device = self.tier_nodes(Tier::Device);
        let Some(&device) = device.first() else {
            return Ok(());
        };
        let edges = self.tier_nodes(Tier::Edge);
        let candidates: Vec<NodeIdx> = edges
            .iter()
            .copied()
            .filter(|&e| self.link(device, e).is_some())
            .collect();
        let Some(&first) = candidates.first() else {
            return Err(Error::Cluster(format!(
                "no link between device {} and any edge node (add a [[links]] entry)",
                self.nodes[device].name
            )));
        };
        // Plans use one cloud node (the fastest), so one link to a cloud
        // node is what is needed.
        let clouds = self.tier_nodes(Tier::Cloud);
        let missing = |c: NodeIdx| -> Vec<&str> {
            let mut m: Vec<&str> = edges
                .iter()
                .filter(|&&n| n != c && self.link(c, n).is_none())
                .map(|&n| self.nodes[n].name.as_str())
                .collect();
            if !clouds.is_empty() && clouds.iter().all(|&n| self.link(c, n).is_none()) {
                m.extend(clouds.iter().map(|&n| self.nodes[n].name.as_str()));
            }
            m
        };
        if candidates.iter().any(|&c| missing(c).is_empty()) {
            return Ok(());
        }
        Err(Error::Cluster(format!(
            "edge node {} (linked to device {}) has no link to {}: the coordinator \
             sits at an edge node linked to the device and needs a link to every \
             other edge node and to a cloud node",
            self.nodes[first].name,
            self.nodes[device].name,
            missing(first).join(", ")
        )))
    }

    /// Checks that no two nodes share an address. For cluster files, whose
    /// addresses are where the daemons listen; clusters built in code
    /// (tests, the demo's harness) may carry placeholders.
    pub fn check_addresses(&self) -> Result<()> {
        for (i, a) in self.nodes.iter().enumerate() {
            if let Some(b) = self.nodes[..i].iter().find(|b| b.address == a.address) {
                return Err(Error::Cluster(format!(
                    "nodes {} and {} both have address {}",
                    b.name, a.name, a.address
                )));
            }
        }
        Ok(())
    }

    /// For a cluster file that lists no device (edge nodes alone, the
    /// client's input sent straight to them): adds [`INPUT_STAND_IN`], a
    /// device that computes nothing, has no address and reaches every edge
    /// node over a free link, which is what the planner's star needs to
    /// start from. Returns whether it added one.
    pub fn add_input_stand_in(&mut self) -> bool {
        if !self.tier_nodes(Tier::Device).is_empty() {
            return false;
        }
        let edges: Vec<String> = self
            .tier_nodes(Tier::Edge)
            .iter()
            .map(|&e| self.nodes[e].name.clone())
            .collect();
        self.nodes.insert(
            0,
            NodeSpec {
                name: INPUT_STAND_IN.into(),
                tier: Tier::Device,
                address: String::new(),
                backend: Backend::Cpu,
                gflops: 1e-9,
            },
        );
        self.links.extend(edges.into_iter().map(|to| LinkSpec {
            from: INPUT_STAND_IN.into(),
            to,
            bandwidth_mbps: 1e9,
            delay_ms: 0.0,
            jitter_ms: 0.0,
            loss: 0.0,
        }));
        true
    }

    /// Index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<NodeIdx> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Indices of the nodes of one tier, in file order.
    pub fn tier_nodes(&self, tier: Tier) -> Vec<NodeIdx> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].tier == tier)
            .collect()
    }

    /// The link between `from` and `to`, whichever way it is listed (one
    /// entry serves both directions).
    pub fn link(&self, from: NodeIdx, to: NodeIdx) -> Option<&LinkSpec> {
        let (f, t) = (&self.nodes.get(from)?.name, &self.nodes.get(to)?.name);
        self.links
            .iter()
            .find(|l| &l.from == f && &l.to == t)
            .or_else(|| self.links.iter().find(|l| &l.from == t && &l.to == f))
    }
}
