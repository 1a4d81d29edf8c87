//! The example cluster file parses into the planner's types; bad files are rejected with a reason.

use planner::{Cluster, Error, Estimates, Tier};

fn example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cluster.toml");
    std::fs::read_to_string(path).expect("examples/cluster.toml is readable")
}

#[test]
fn example_cluster_has_one_device_four_edges_one_cloud() {
    let c: Cluster = toml::from_str(&example()).expect("parses");
    c.validate().expect("valid");
    assert_eq!(c.tier_nodes(Tier::Device).len(), 1);
    assert_eq!(c.tier_nodes(Tier::Edge).len(), 4);
    assert_eq!(c.tier_nodes(Tier::Cloud).len(), 1);
    let est = Estimates::from_cluster(&c);
    let (phone, e0, e1, cloud) = (0, 1, 2, 5);
    // 100 Mbit/s + 5 ms: 1.25 MB takes 0.1 s + 0.005 s; links work both ways.
    let t = est.transfer_time(phone, e0, 1.25e6).expect("link");
    assert!((t - 0.105).abs() < 1e-9, "{t}");
    assert_eq!(est.transfer_time(e0, phone, 1.25e6), Some(t));
    let t = est.transfer_time(e0, e1, 125e6).expect("link");
    assert!((t - 1.001).abs() < 1e-9, "{t}");
    let t = est.transfer_time(e1, cloud, 6.25e6).expect("link");
    assert!((t - 1.030).abs() < 1e-9, "{t}");
    assert_eq!(est.transfer_time(phone, cloud, 1.0), None);
}

#[test]
fn unknown_fields_and_bad_values_are_rejected() {
    let extra = example().replacen("gflops = 5.0", "gflops = 5.0\ncolour = \"red\"", 1);
    let err = toml::from_str::<Cluster>(&extra).expect_err("unknown field");
    assert!(err.to_string().contains("colour"), "{err}");

    let dup = example().replacen("name = \"edge1\"", "name = \"edge0\"", 1);
    let c: Cluster = toml::from_str(&dup).expect("parses");
    assert!(matches!(c.validate(), Err(Error::Cluster(m)) if m.contains("edge0")));

    let neg = example().replacen("bandwidth_mbps = 100.0", "bandwidth_mbps = -1.0", 1);
    let c: Cluster = toml::from_str(&neg).expect("parses");
    assert!(matches!(c.validate(), Err(Error::Cluster(m)) if m.contains("bandwidth_mbps")));

    let two_clouds = example().replacen("tier = \"edge\"", "tier = \"cloud\"", 1);
    let c: Cluster = toml::from_str(&two_clouds).expect("parses");
    assert!(
        matches!(c.validate(), Err(Error::Cluster(m)) if m.contains("one cloud node") && m.contains("edge0"))
    );

    let mut c: Cluster = toml::from_str(&example()).expect("parses");
    let mut back = c.links[0].clone();
    std::mem::swap(&mut back.from, &mut back.to);
    c.links.push(back);
    assert!(matches!(c.validate(), Err(Error::Cluster(m)) if m.contains("two links between")));

    // A device↔cloud link would be ignored by every plan: refused, saying so.
    let mut c: Cluster = toml::from_str(&example()).expect("parses");
    let mut direct = c.links[0].clone();
    direct.to = "cloud".into();
    c.links.push(direct);
    assert!(
        matches!(c.validate(), Err(Error::Cluster(m)) if m.contains("phone→cloud") && m.contains("not linked directly"))
    );
    let inf = example().replacen("bandwidth_mbps = 100.0", "bandwidth_mbps = inf", 1);
    let c: Cluster = toml::from_str(&inf).expect("parses");
    assert!(
        matches!(c.validate(), Err(Error::Cluster(m)) if m.contains("positive number (got inf)"))
    );

    let two_devices = example().replacen("tier = \"edge\"", "tier = \"device\"", 1);
    let c: Cluster = toml::from_str(&two_devices).expect("parses");
    assert!(matches!(c.validate(), Err(Error::Cluster(m)) if m.contains("device")));
}

/// The example without its cloud node (and its links) is a valid cluster:
/// plans keep to the device and edge tiers. Without edge nodes it is not.
#[test]
fn a_cluster_without_a_cloud_node_plans_device_and_edge_only() {
    let mut c: Cluster = toml::from_str(&example()).expect("parses");
    c.nodes.retain(|n| n.tier != Tier::Cloud);
    c.links.retain(|l| l.from != "cloud" && l.to != "cloud");
    c.validate().expect("a cloud node is optional");
    let graph = tile_engine::default_model::graph([32, 32]).expect("default model");
    let report = planner::plan(&graph, &c, &Estimates::from_cluster(&c)).expect("plans");
    assert_eq!(report.topology.cloud, None);
    let strategies: Vec<&str> = report.alternatives.iter().map(|p| p.strategy).collect();
    assert_eq!(strategies, ["device+edge", "device-only", "edge-only"]);
    assert!(!report.best.prediction.labels.contains(&Tier::Cloud));
    assert!(report.best.makespan_s().is_finite());
    assert!(report.table().contains("cloud none"), "{}", report.table());

    c.nodes.retain(|n| n.tier != Tier::Edge);
    assert!(matches!(c.validate(), Err(Error::Cluster(m)) if m.contains("no edge node")));
}

/// On the example cluster the default model's plan uses the edge tier only:
/// the three-tier, device+edge, edge+cloud and edge-only strategies all
/// find it, and the report names it by the fewest tiers. The tier rows say
/// which share of the tiled work each tier's nodes run.
#[test]
fn a_tied_plan_is_named_by_its_fewest_tiers_and_tile_shares_are_shown() {
    let c: Cluster = toml::from_str(&example()).expect("parses");
    let graph = tile_engine::default_model::graph([128, 128]).expect("default model");
    let report = planner::plan(&graph, &c, &Estimates::from_cluster(&c)).expect("plans");
    let best = report.best.makespan_s();
    let tied: Vec<&str> = report
        .alternatives
        .iter()
        .filter(|p| (p.makespan_s() - best).abs() <= best * 1e-9)
        .map(|p| p.strategy)
        .collect();
    assert!(tied.len() >= 2 && tied.contains(&"three-tier"), "{tied:?}");
    assert_eq!(report.best.strategy, "edge-only", "tied: {tied:?}");
    let table = report.table();
    let edge_row = table
        .lines()
        .find(|l| l.starts_with("edge "))
        .expect("an edge row");
    assert!(edge_row.ends_with("100.0 %"), "{table}");
    let device_row = table
        .lines()
        .find(|l| l.starts_with("device "))
        .expect("a device row");
    assert!(device_row.ends_with('-'), "{table}");
}

/// With one edge node the default model's device+edge plan is predicted
/// 5 % faster than edge-only, under the 10 % a plan over several nodes
/// must win by: the table says why the slower one-node plan was chosen.
#[test]
fn a_one_node_plan_chosen_over_a_faster_one_says_why() {
    let mut c: Cluster = toml::from_str(&example()).expect("parses");
    let keep = ["phone", "edge0"];
    c.nodes.retain(|n| keep.contains(&n.name.as_str()));
    c.links
        .retain(|l| keep.contains(&l.from.as_str()) && keep.contains(&l.to.as_str()));
    c.validate().expect("valid");
    let graph = tile_engine::default_model::graph([128, 128]).expect("default model");
    let report = planner::plan(&graph, &c, &Estimates::from_cluster(&c)).expect("plans");
    assert!(report.best.on_one_node(), "{}", report.table());
    let faster = report
        .alternative("device+edge")
        .expect("device+edge planned");
    assert!(faster.makespan_s() < report.best.makespan_s());
    let table = report.table();
    assert!(
        table.contains("chosen over device+edge") && table.contains("more than 10 % faster"),
        "{table}"
    );
}

/// A file whose links leave the device or an edge node unreachable from
/// every possible coordinator is refused when it is read, naming the nodes;
/// before, it passed and planning failed later ("no link between phone and
/// any edge node"), which `tessera run` reported as a protocol error.
#[test]
fn links_that_no_coordinator_can_use_are_refused() {
    let mut c: Cluster = toml::from_str(&example()).expect("parses");
    c.links.clear();
    let err = c.validate().expect_err("no links");
    assert_eq!(
        err.to_string(),
        "cluster: no link between device phone and any edge node (add a [[links]] entry)"
    );

    // edge3 is linked only to the phone: no edge node reaches all the others.
    let mut c: Cluster = toml::from_str(&example()).expect("parses");
    c.links
        .retain(|l| !(l.from.starts_with("edge") && l.to == "edge3") && l.from != "edge3");
    let err = c.validate().expect_err("edge3 cut off");
    let Error::Cluster(m) = err else {
        panic!("{err:?}")
    };
    assert!(
        m.starts_with("edge node edge0 (linked to device phone) has no link to edge3:"),
        "{m}"
    );
}

#[test]
fn two_nodes_at_one_address_are_refused_naming_both() {
    let c: Cluster = toml::from_str(&example()).expect("parses");
    c.check_addresses().expect("the example's addresses differ");
    let dup = example().replacen("127.0.0.1:7102", "127.0.0.1:7101", 1);
    let c: Cluster = toml::from_str(&dup).expect("parses");
    let err = c.check_addresses().expect_err("duplicate address");
    assert_eq!(
        err.to_string(),
        "cluster: nodes edge0 and edge1 both have address 127.0.0.1:7101"
    );
}
