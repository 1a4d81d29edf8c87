//! `tessera plan`: the plan for a model on a cluster, from the cluster
//! file's cold-start figures (no node is contacted).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use planner::{Cluster, Estimates};

/// Reads and validates a cluster file; errors name the file and the field.
pub fn read_cluster(path: &Path) -> Result<Cluster> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text
        .parse::<toml::Table>()
        .is_ok_and(|t| t.contains_key("listen") || t.contains_key("peers"))
    {
        anyhow::bail!(
            "{}: this is a node's file (listen, peers), which `tessera node` takes; give the cluster file ([[nodes]] and [[links]])",
            path.display()
        );
    }
    let mut cluster: Cluster =
        toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    // Edge nodes alone: the input starts at the client, a device that
    // computes nothing and is never contacted.
    let stand_in = cluster.add_input_stand_in();
    cluster
        .validate()
        .and_then(|()| cluster.check_addresses())
        .with_context(|| format!("{}", path.display()))?;
    // What `tessera run` would refuse without a network: `plan` says so
    // too. (Names are resolved by `run` alone; a plan may be made away
    // from the cluster's network.)
    for n in cluster.nodes.iter().skip(usize::from(stand_in)) {
        transport::certs::check_issuable_name(&n.name)
            .with_context(|| path.display().to_string())?;
        let host_port = n.address.rsplit_once(':');
        let valid = host_port.is_some_and(|(host, port)| {
            // u16's parse takes a leading '+'; a port is digits only, and
            // port 0 (any free port) names no node.
            valid_host(host)
                && host != "0.0.0.0"
                && host != "[::]"
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !valid {
            let why = if host_port.is_some_and(|(_, port)| port == "0") {
                "port 0 names no node: give the port its daemon listens on"
            } else if host_port.is_some_and(|(host, _)| host == "0.0.0.0" || host == "[::]") {
                "that host names every interface of a daemon's machine, not one to reach: give the node's address"
            } else {
                "give it as host:port"
            };
            anyhow::bail!(
                "{}: node {} address {}: {why}",
                path.display(),
                n.name,
                n.address
            );
        }
    }
    Ok(cluster)
}

/// Whether `host` can name a node: an IPv4 address, an IPv6 one in
/// brackets, or a host name (letters, digits, `-`, `_` as a container's
/// service name may have, and `.`; all digits and dots is an IPv4 address
/// or nothing: `256.1.1.1`). A URL's scheme (`http://x`) is none of them.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host.parse::<std::net::Ipv4Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Resolves each node's `host:port` of a cluster file read from `path`
/// (host names included: a cluster of several machines is addressed by
/// name), preferring IPv4. A name that does not resolve is that node's
/// error (the request can run without it); two nodes that resolve to one
/// socket address (`localhost:7201` and `127.0.0.1:7201`) are the file's.
/// Errors name the file and the address.
pub fn node_addresses(
    path: &Path,
    cluster: &Cluster,
) -> Result<Vec<std::result::Result<SocketAddr, String>>> {
    let mut addrs = Vec::with_capacity(cluster.nodes.len());
    for n in &cluster.nodes {
        if n.name == planner::cluster::INPUT_STAND_IN {
            addrs.push(Err(format!(
                "no device in {}: the input starts at this client",
                path.display()
            )));
            continue;
        }
        // Said as the coordinator's reason the node is down: "node edge1: …".
        let mine = |why: String| {
            Err(format!(
                "its address {} ({}) {why}",
                n.address,
                path.display()
            ))
        };
        let found: Vec<SocketAddr> = match n.address.to_socket_addrs() {
            Ok(found) => found.collect(),
            Err(e) => {
                addrs.push(mine(format!("does not resolve ({e})")));
                continue;
            }
        };
        // The coordinator's endpoint is bound to an IPv4 socket unless a
        // node can only be reached over IPv6.
        let Some(addr) = found
            .iter()
            .find(|a| a.is_ipv4())
            .or(found.first())
            .copied()
        else {
            addrs.push(mine("resolves to no address".into()));
            continue;
        };
        if let Some(j) = addrs.iter().position(|a| a.as_ref() == Ok(&addr)) {
            return Err(anyhow!(
                "{}: nodes {} ({}) and {} ({}) are both at {addr}",
                path.display(),
                cluster.nodes[j].name,
                cluster.nodes[j].address,
                n.name,
                n.address
            ));
        }
        addrs.push(Ok(addr));
    }
    Ok(addrs)
}

/// Prints the plan as a table and optionally draws it; with `input`, for
/// that file's shape and the bytes it would cross links as.
pub fn plan(
    cluster: &Path,
    model: &str,
    svg: Option<&Path>,
    input_shape: Option<&[usize]>,
    input: Option<(&Path, Option<f32>)>,
) -> Result<()> {
    if let Some(path) = svg
        && !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        anyhow::bail!(
            "--svg {}: the plan is drawn as SVG; give a path ending in .svg",
            path.display()
        );
    }
    let cluster = read_cluster(cluster)?;
    let kind = crate::model::kind_of(model)?;
    let tensor = match input {
        Some((path, scale)) => {
            crate::model::check_pixel_scale(kind, path, &[], scale)?;
            Some(crate::model::read_input(kind, path, scale)?)
        }
        None => None,
    };
    let (graph, tensor) = match (input, tensor) {
        // As `tessera run` loads it for this input.
        (Some((path, scale)), Some(t)) => {
            let (graph, t) = crate::model::load_for_input(model, path, t, scale)?;
            crate::model::check_one_input(model, &graph)?;
            crate::model::check_input(model, &graph, &t)?;
            (graph, Some(t))
        }
        _ => {
            let graph = crate::model::load_for_planning(model, input_shape)?;
            crate::model::check_one_input(model, &graph)?;
            (graph, None)
        }
    };
    let mut dag = planner::ModelDag::from_graph(&graph)?;
    // What `tessera run` sends (see `Coordinator::expect_inputs`): the
    // default model is always given an image.
    let wire = match &tensor {
        Some(t) => Some(crate::cluster::wire::wire_bytes(t) as f64),
        None if kind == crate::model::ModelKind::Default => {
            // Bytes, padded to whole f32 words as `wire_bytes` pads them.
            let values = graph.shape(graph.inputs[0]).iter().product::<usize>();
            Some(values.div_ceil(4) as f64 * 4.0)
        }
        None => None,
    };
    if let Some(bytes) = wire {
        for t in dag.tensors.iter_mut().filter(|t| t.producer.is_none()) {
            t.bytes = bytes;
        }
    }
    let est = Estimates::from_cluster(&cluster);
    let report = planner::plan::plan_dag(
        &dag,
        &cluster,
        &est,
        &planner::ReceptiveField,
        planner::PlanOptions::default(),
    )
    .with_context(|| format!("planning {model}"))?;
    println!("{}", report.table());
    if let Some(path) = svg {
        std::fs::write(path, report.svg())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("drew the plan in {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(addresses: [&str; 2]) -> Cluster {
        let text = format!(
            "[[nodes]]\nname = \"phone\"\ntier = \"device\"\naddress = \"{}\"\ngflops = 1.0\n\
             [[nodes]]\nname = \"edge0\"\ntier = \"edge\"\naddress = \"{}\"\ngflops = 1.0\n\
             [[links]]\nfrom = \"phone\"\nto = \"edge0\"\nbandwidth_mbps = 10.0\ndelay_ms = 1.0\n",
            addresses[0], addresses[1]
        );
        toml::from_str(&text).expect("cluster toml")
    }

    #[test]
    fn host_names_resolve_and_errors_name_the_file_node_and_address() -> Result<()> {
        let path = Path::new("c.toml");
        let addrs = node_addresses(path, &cluster(["localhost:7201", "127.0.0.1:7202"]))?;
        let first = addrs[0].clone().map_err(anyhow::Error::msg)?;
        assert_eq!(first.port(), 7201);
        assert!(first.ip().is_loopback(), "{first}");
        assert_eq!(addrs[1], Ok(SocketAddr::from(([127, 0, 0, 1], 7202))));

        // One node's name failing costs that node, not the others.
        let addrs = node_addresses(path, &cluster(["127.0.0.1:7201", "edge0-without-port"]))?;
        assert_eq!(addrs[0], Ok(SocketAddr::from(([127, 0, 0, 1], 7201))));
        let e = addrs[1].clone().expect_err("no port");
        assert!(
            e.starts_with("its address edge0-without-port (c.toml) does not resolve ("),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn plan_refuses_what_run_would_without_resolving_names() {
        let dir = std::env::temp_dir().join(format!("tessera-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let read = |addresses: [&str; 2], name: &str| {
            let text = format!(
                "[[nodes]]\nname = \"phone\"\ntier = \"device\"\naddress = \"{}\"\ngflops = 1.0\n\
                 [[nodes]]\nname = \"{name}\"\ntier = \"edge\"\naddress = \"{}\"\ngflops = 1.0\n\
                 [[links]]\nfrom = \"phone\"\nto = \"{name}\"\nbandwidth_mbps = 10.0\ndelay_ms = 1.0\n",
                addresses[0], addresses[1]
            );
            let path = dir.join("c.toml");
            std::fs::write(&path, text).expect("write");
            read_cluster(&path).map_err(|e| format!("{e:#}"))
        };
        // A host name that does not resolve here may still be planned for.
        read(["127.0.0.1:7201", "no-such-host.invalid:7202"], "edge0").expect("unresolved name");
        read(["[::1]:7201", "127.0.0.1:7202"], "edge0").expect("IPv6");
        read(["127.0.0.1:7201", "edge_0.local:7202"], "edge0").expect("a service name");
        let e = read(["127.0.0.1:7201", "127.0.0.1"], "edge0").expect_err("no port");
        assert!(
            e.ends_with("node edge0 address 127.0.0.1: give it as host:port"),
            "{e}"
        );
        for bad in [
            ":7202",
            "edge0:+80",
            "edge0:",
            "http://edge0:7202",
            "256.1.1.1:7202",
            "[::zz]:7202",
        ] {
            let e = read(["127.0.0.1:7201", bad], "edge0").expect_err(bad);
            assert!(e.ends_with("give it as host:port"), "{bad}: {e}");
        }
        let e = read(["127.0.0.1:7201", "127.0.0.1:0"], "edge0").expect_err("port 0");
        assert!(
            e.ends_with("port 0 names no node: give the port its daemon listens on"),
            "{e}"
        );
        let e = read(["127.0.0.1:7201", "127.0.0.1:7202"], "Edge Zero").expect_err("name");
        assert!(e.contains("node name 'Edge Zero' must be"), "{e}");
        let e = read(["127.0.0.1:7201", "127.0.0.1:7202"], "ca").expect_err("ca");
        assert!(e.contains("node name 'ca' is reserved"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_names_for_one_socket_address_are_refused() {
        let c = cluster(["localhost:7201", "127.0.0.1:7201"]);
        c.check_addresses().expect("the strings differ");
        let e = node_addresses(Path::new("c.toml"), &c).expect_err("one socket address");
        assert_eq!(
            e.to_string(),
            "c.toml: nodes phone (localhost:7201) and edge0 (127.0.0.1:7201) are both at 127.0.0.1:7201"
        );
    }
}
