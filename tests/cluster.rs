//! A real loopback cluster (1 device + 2 edge + 1 cloud `tessera node`
//! processes, CPU executors, link emulators in front): it gives the bytes
//! `tessera infer` gives, survives an edge node killed or stalled mid-request
//! with a bit-identical result, refuses a foreign certificate, answers a
//! malformed request with an error while serving others, and the demo's
//! short mode writes files that parse.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use planner::profiler::{Span, SpanKind};
use planner::{Cluster, Tier};
use tessera::Backend;
use tessera::cluster::ClusterError;
use tessera::cluster::bundle::Bundle;
use tessera::cluster::coordinator::{Coordinator, ExecPlan, LoadedModel, Timeouts};
use tessera::cluster::experiment::{self, Adaptive};
use tessera::cluster::harness::{COORDINATOR, HarnessOptions, LocalCluster};
use tessera::cluster::wire::Msg;
use tile_engine::{Executor, Tensor};
use transport::{Capabilities, Control, Endpoint, EndpointConfig, Hello, PlanUpdate};

const SMALL: &str = r#"
[[nodes]]
name = "dev"
tier = "device"
address = "127.0.0.1:1"
gflops = 1.0
[[nodes]]
name = "e0"
tier = "edge"
address = "127.0.0.1:1"
gflops = 10.0
[[nodes]]
name = "e1"
tier = "edge"
address = "127.0.0.1:1"
gflops = 10.0
[[nodes]]
name = "sky"
tier = "cloud"
address = "127.0.0.1:1"
gflops = 10.0
[[links]]
from = "dev"
to = "e0"
bandwidth_mbps = 1000.0
delay_ms = 1.0
[[links]]
from = "dev"
to = "e1"
bandwidth_mbps = 1000.0
delay_ms = 1.0
[[links]]
from = "e0"
to = "e1"
bandwidth_mbps = 1000.0
delay_ms = 1.0
[[links]]
from = "e0"
to = "sky"
bandwidth_mbps = 200.0
delay_ms = 5.0
[[links]]
from = "e1"
to = "sky"
bandwidth_mbps = 200.0
delay_ms = 5.0
"#;

const EXE: &str = env!("CARGO_BIN_EXE_tessera");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

async fn start(name: &str) -> (LocalCluster, Coordinator) {
    start_cluster(name, toml::from_str(SMALL).expect("cluster toml")).await
}

/// Starts `cluster`'s daemons (CPU executors, metrics on) and connects a coordinator.
async fn start_cluster(name: &str, cluster: Cluster) -> (LocalCluster, Coordinator) {
    let local = start_daemons(name, cluster).await;
    let coord = connect(&local).await.expect("coordinator connects");
    (local, coord)
}

/// Starts `cluster`'s daemons (CPU executors, metrics on).
async fn start_daemons(name: &str, cluster: Cluster) -> LocalCluster {
    LocalCluster::start(
        cluster,
        HarnessOptions {
            exe: EXE.into(),
            dir: scratch(name),
            backend: Backend::Cpu,
            compute_lock: false,
            metrics: true,
        },
    )
    .await
    .expect("cluster starts")
}

/// A coordinator connected to `local`'s daemons.
async fn connect(local: &LocalCluster) -> Result<Coordinator, ClusterError> {
    let ep = local.coordinator_endpoint().expect("endpoint");
    Coordinator::connect(local.cluster.clone(), ep, local.addrs.clone()).await
}

/// A 1×3×24×24 image with varied pixel values in [0, 255].
/// Whether `text` names one of the cluster's nodes (`node NAME: …`).
fn names_a_node(local: &LocalCluster, text: &str) -> bool {
    local
        .cluster
        .nodes
        .iter()
        .any(|n| text.contains(&format!("node {}:", n.name)))
}

fn image() -> Tensor {
    let n = 3 * 24 * 24;
    let data = (0..n).map(|i| ((i * 37 % 251) as f32).min(255.0)).collect();
    Tensor::new(vec![1, 3, 24, 24], data).expect("tensor")
}

fn bits(t: &[Tensor]) -> Vec<u32> {
    t.iter()
        .flat_map(|t| t.data().iter().map(|v| v.to_bits()))
        .collect()
}

async fn load(coord: &Coordinator) -> LoadedModel {
    let bundle = Bundle::from_spec("default", &[1, 3, 24, 24]).expect("bundle");
    coord.load_model(&bundle).await.expect("model loads")
}

/// A plan that tiles the first tileable stretch of the model 1×2 over both edge nodes.
fn two_edge_plan(local: &LocalCluster, model: &LoadedModel) -> ExecPlan {
    let edges = local.tier(Tier::Edge);
    let device = local.tier(Tier::Device)[0];
    let cloud = local.tier(Tier::Cloud)[0];
    let mut plan = ExecPlan::single_node(
        "two edges",
        &model.graph,
        device,
        local.coordinator_node,
        Some(cloud),
    );
    let mut ops = Vec::new();
    for n in 0..model.graph.nodes.len() {
        ops.push(n);
        if tile_engine::tiling::Block::new(&model.graph, ops.clone()).is_err() {
            ops.pop();
            break;
        }
    }
    assert!(
        ops.len() > 3,
        "the default model starts with a tileable stretch"
    );
    let rest: Vec<usize> = (ops.len()..model.graph.nodes.len()).collect();
    plan.blocks = vec![tessera::cluster::coordinator::ExecBlock {
        ops,
        tiles: Some((tile_engine::tiling::Grid::uniform(1, 2), edges.clone())),
        node: local.coordinator_node,
        predicted_s: None,
    }];
    if !rest.is_empty() {
        plan.blocks.push(tessera::cluster::coordinator::ExecBlock {
            ops: rest,
            tiles: None,
            node: local.coordinator_node,
            predicted_s: None,
        });
    }
    plan
}

fn reference(model: &LoadedModel) -> Vec<Tensor> {
    tile_engine::cpu::CpuExecutor
        .run(&model.graph, &[image()])
        .expect("cpu run")
}

#[test]
fn cluster_run_gives_the_bytes_of_tessera_infer() {
    let dir = scratch("infer");
    let input = dir.join("in.npy");
    let t = image();
    tessera::tensor_io::write_tensor(&input, &t, tessera::tensor_io::PixelRange::default())
        .expect("write npy");
    let want = dir.join("want.npy");
    let st = Command::new(EXE)
        .args(["infer", "--backend", "cpu", "--model", "default", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&want)
        .status()
        .expect("tessera infer");
    assert!(st.success());

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, coord) = start("run").await;
        // `tessera run` against the running daemons (direct, no emulator).
        coord.shutdown().await;
        let cloud = local.tier(Tier::Cloud)[0];
        // The cluster file, with node `lost`'s address a name that does
        // not resolve, or without the device.
        let device = local.tier(Tier::Device)[0];
        let dev_name = local.cluster.nodes[device].name.clone();
        let cluster_file = |lost: Option<usize>, no_device: bool| {
            let mut text = String::new();
            for (i, n) in local.cluster.nodes.iter().enumerate() {
                if no_device && i == device {
                    continue;
                }
                let address = if lost == Some(i) {
                    "no-such-host.invalid:7202"
                } else {
                    &n.address
                };
                text.push_str(&format!(
                    "[[nodes]]\nname = \"{}\"\ntier = \"{}\"\naddress = \"{address}\"\ngflops = 10.0\n",
                    n.name,
                    n.tier.name(),
                ));
            }
            for l in &local.cluster.links {
                if no_device && (l.from == dev_name || l.to == dev_name) {
                    continue;
                }
                text.push_str(&format!(
                    "[[links]]\nfrom = \"{}\"\nto = \"{}\"\nbandwidth_mbps = {}\ndelay_ms = {}\n",
                    l.from, l.to, l.bandwidth_mbps, l.delay_ms
                ));
            }
            let cfile = dir.join("cluster.toml");
            std::fs::write(&cfile, text).expect("cluster file");
            cfile
        };
        let run = |cfile: &Path| {
            let got = dir.join("got.npy");
            let out = Command::new(EXE)
                .args(["run", "--model", "default", "--cluster"])
                .arg(cfile)
                .arg("--certs")
                .arg(local.dir().join("certs"))
                .arg("--input")
                .arg(&input)
                .arg("--output")
                .arg(&got)
                .output()
                .expect("tessera run");
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(out.status.success(), "tessera run failed: {stderr}");
            let a = std::fs::read(&want).expect("want");
            let b = std::fs::read(&got).expect("got");
            assert_eq!(a, b, "tessera run and tessera infer disagree");
            stderr
        };
        run(&cluster_file(None, false));
        // Edge nodes (and a cloud) without a device: the input starts at
        // the client; no device is waited for (one listed but not running
        // cost every request a 10 s connection timeout).
        let started = std::time::Instant::now();
        let stderr = run(&cluster_file(None, true));
        assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
        assert!(!stderr.contains("planning without it"), "{stderr}");
        // A node whose name does not resolve is planned around, as one
        // that does not answer is.
        let stderr = run(&cluster_file(Some(cloud), false));
        let name = &local.cluster.nodes[cloud].name;
        assert!(
            stderr.contains(&format!(
                "node {name}: its address no-such-host.invalid:7202 ("
            )) && stderr.contains("does not resolve")
                && stderr.contains("planning without it"),
            "{stderr}"
        );
    });
}

#[test]
fn tiles_on_two_edges_equal_the_cpu_reference_and_metrics_count_them() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, coord) = start("tiles").await;
        let model = load(&coord).await;
        let plan = two_edge_plan(&local, &model);
        let before = coord.profiler.lock().expect("profiler").estimates();
        let r = experiment::run_plan(&coord, &model, &image(), &plan, 1, true)
            .await
            .expect("run");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        for e in local.tier(Tier::Edge) {
            assert!(
                r.records
                    .iter()
                    .any(|x| x.node == e && x.tile.is_some() && x.ok),
                "edge node {e} ran no tile"
            );
        }
        // A node's first run of a block is cold (kernels compiled, weights
        // uploaded) and teaches the profiler nothing; the next one is warm.
        let ran: Vec<_> = r.records.iter().filter(|x| x.ok && x.ops > 0).collect();
        assert!(!ran.is_empty() && ran.iter().all(|x| x.cold), "{ran:?}");
        assert_eq!(coord.profiler.lock().expect("profiler").estimates(), before);
        let again = experiment::run_plan(&coord, &model, &image(), &plan, 2, false)
            .await
            .expect("second run");
        assert_eq!(bits(&again.outputs), bits(&reference(&model)));
        let tiles: Vec<_> = again
            .records
            .iter()
            .filter(|x| x.ok && x.tile.is_some())
            .collect();
        assert!(
            !tiles.is_empty() && tiles.iter().all(|x| !x.cold),
            "{tiles:?}"
        );
        // The model travelled once: a second load finds it cached.
        let again = load(&coord).await;
        assert_eq!(again.hash, model.hash);
        let e1 = local.tier(Tier::Edge)[1];
        let url = local.metrics[e1].clone().expect("metrics url");
        let body = http_get(&url);
        assert!(
            body.contains("tessera_tiles_total{node=\"e1\"} 2"),
            "{body}"
        );
        assert!(
            body.contains("tessera_models_loaded_total{node=\"e1\"} 1"),
            "{body}"
        );
        // The gauges: this coordinator's connection, the one model cached.
        assert!(
            body.contains("tessera_connections{node=\"e1\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("tessera_cached_models{node=\"e1\"} 1"),
            "{body}"
        );
        let cached: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix("tessera_cached_model_bytes{node=\"e1\"} "))
            .and_then(|v| v.parse().ok())
            .expect("cached bytes");
        assert!(cached > 100_000.0, "the model's weights: {body}");
        coord.shutdown().await;
        let open = read_until(|| http_get(&url), "tessera_connections{node=\"e1\"} 0", 50).await;
        assert!(
            open.contains("tessera_connections{node=\"e1\"} 0"),
            "the connection ended: {open}"
        );
    });
}

#[test]
fn a_loaded_model_is_planned_by_its_profiled_op_costs() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, coord) = start("profile").await;
        let model = load(&coord).await;
        let g = &model.graph;
        let reweighted = model
            .dag
            .ops
            .iter()
            .enumerate()
            .filter(|(i, op)| {
                let f = g.node_cost(*i).flops as f64;
                (op.flops - f).abs() > 0.05 * f.max(1.0)
            })
            .count();
        assert!(
            reweighted > 0,
            "no op's FLOPs were reweighted by the profile"
        );
        assert!(
            model
                .dag
                .ops
                .iter()
                .all(|op| op.flops.is_finite() && op.flops >= 0.0)
        );
        // The profiled node's predicted whole-model time is near its measured one.
        let e0 = coord.profiling_node(&model.hash).expect("a node profiles");
        assert!(
            local.tier(Tier::Edge).contains(&e0),
            "an edge node profiles"
        );
        assert_eq!(model.profiled_on, Some(e0));
        // Profiling occupies the executor: a scraper sees it as busy time
        // before the node has run any job.
        let body = http_get(&local.metrics[e0].clone().expect("metrics url"));
        let value = |name: &str| -> f64 {
            body.lines()
                .find(|l| l.starts_with(&format!("{name}{{")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {body}"))
        };
        assert_eq!(value("tessera_jobs_total"), 0.0, "{body}");
        assert!(value("tessera_busy_seconds_total") > 0.0, "{body}");
        let est = coord.profiler.lock().expect("profiler").estimates();
        let predicted: f64 = model
            .dag
            .ops
            .iter()
            .map(|op| est.compute_time(e0, op.class, op.flops))
            .sum();
        let device = local.tier(Tier::Device)[0];
        let cloud = local.tier(Tier::Cloud)[0];
        let plan = ExecPlan::single_node("e0", g, device, e0, Some(cloud));
        let mut measured = f64::INFINITY;
        for request in 1..=2 {
            let r = experiment::run_plan(&coord, &model, &image(), &plan, request, false)
                .await
                .expect("run");
            for x in r.records.iter().filter(|x| x.node == e0 && x.ok) {
                measured = measured.min((x.end_us - x.start_us) as f64 / 1e6);
            }
        }
        let ratio = predicted / measured;
        assert!(
            (0.25..4.0).contains(&ratio),
            "predicted {predicted} s, measured {measured} s"
        );
        // Work is in units of the calibration, whatever was learnt since:
        // with e0 learnt three times slower (as another model's spans might
        // teach it), the same model (its profile cached on e0) loads with
        // the same work per op.
        let mut classes = Vec::new();
        for op in &model.dag.ops {
            if !classes.contains(&op.class) {
                classes.push(op.class);
            }
        }
        {
            let mut p = coord.profiler.lock().expect("profiler");
            for &class in &classes {
                let rate = p.estimates().flops_per_s(e0, class);
                for _ in 0..30 {
                    let span = Span {
                        node: e0,
                        kind: SpanKind::Compute {
                            class,
                            flops: 1_000_000_000,
                        },
                        seconds: 3e9 / rate,
                    };
                    p.observe(&span).expect("span");
                }
                let learnt = p.estimates().flops_per_s(e0, class);
                assert!(learnt < 0.7 * rate, "{class:?}: {rate} -> {learnt}");
            }
        }
        let again = load(&coord).await;
        for (a, b) in model.dag.ops.iter().zip(&again.dag.ops) {
            assert!(
                (a.flops - b.flops).abs() <= 1e-9 * a.flops.max(1.0),
                "{}: work {} at the first load, {} after learning",
                a.name,
                a.flops,
                b.flops
            );
        }
        coord.shutdown().await;
    });
}

#[test]
fn an_idle_edge_node_steals_queued_tiles() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, coord) = start("steal").await;
        let model = load(&coord).await;
        let mut plan = two_edge_plan(&local, &model);
        // Every tile queued on the coordinator's node; the other edge node
        // has none and must take some from the back of that queue.
        let owner = local.coordinator_node;
        let grid = tile_engine::tiling::Grid::uniform(2, 3);
        plan.blocks[0].tiles = Some((grid, vec![owner; 6]));
        let r = coord.run(1, &model, image(), &plan).await.expect("run");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        let thief = local
            .tier(Tier::Edge)
            .into_iter()
            .find(|&e| e != owner)
            .expect("second edge");
        let stolen: Vec<_> = r.records.iter().filter(|x| x.stolen && x.ok).collect();
        assert!(!stolen.is_empty(), "no tile was stolen");
        assert!(stolen.iter().all(|x| x.node == thief));
        assert_eq!(
            r.records
                .iter()
                .filter(|x| x.tile.is_some() && x.ok)
                .count(),
            6
        );
        coord.shutdown().await;
    });
}

#[test]
fn the_device_runs_its_tile_of_the_first_block_beside_its_upload() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, coord) = start("early").await;
        let mut model = load(&coord).await;
        // Plans cost the upload at what will cross the link.
        let mut fractional = image();
        fractional.data_mut()[0] = 0.5;
        model.expect_inputs(&[&fractional]);
        assert_eq!(model.dag.tensors[0].bytes, (3 * 24 * 24 * 4) as f64);
        model.expect_inputs(&[&image()]);
        assert_eq!(model.dag.tensors[0].bytes, (3 * 24 * 24) as f64);
        let mut plan = two_edge_plan(&local, &model);
        let device = local.tier(Tier::Device)[0];
        let mut owners = local.tier(Tier::Edge);
        owners.push(device);
        plan.blocks[0].tiles = Some((tile_engine::tiling::Grid::uniform(3, 1), owners));
        let r = experiment::run_plan(&coord, &model, &image(), &plan, 1, false)
            .await
            .expect("run");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        let tiles: Vec<_> = r
            .records
            .iter()
            .filter(|x| x.stage == "block 0" && x.ok)
            .collect();
        assert_eq!(tiles.len(), 3);
        // The image's pixels are whole numbers 0–255: they cross the link
        // as bytes, a quarter of their f32 size.
        let upload = r
            .records
            .iter()
            .find(|x| x.stage == "device")
            .expect("the device's upload");
        assert_eq!(upload.out_bytes, 3 * 24 * 24, "{upload:?}");
        for t in &tiles {
            if t.node == device {
                // The device's own image: handed over, not sent on a link.
                assert!(t.early && t.in_bytes == 0 && t.submit_bytes > 0, "{t:?}");
            } else {
                assert!(!t.early && t.in_bytes > 0, "{t:?}");
            }
        }
        // Replayed, the device's tile starts with the request; the edge
        // nodes' tiles start after the upload reached the coordinator.
        let dev = &local.cluster.nodes[device].name;
        let coord_name = &local.cluster.nodes[local.coordinator_node].name;
        let upload_end = r
            .replay
            .slots
            .iter()
            .filter(|s| s.lane == format!("{dev}→{coord_name}") && s.what.starts_with("device"))
            .map(|s| s.end_s)
            .fold(f64::NAN, f64::max);
        assert!(upload_end > 0.0, "no upload in {:?}", r.replay.slots);
        for s in r.replay.slots.iter().filter(|s| !s.transfer) {
            if &s.lane == dev {
                assert_eq!(s.start_s, 0.0, "{s:?}");
            } else {
                assert!(s.start_s >= upload_end, "{s:?} before the upload ended");
            }
        }
        // The same image read as byte / 255 (a `.png` input of a model
        // that takes [0, 1]) also crosses as bytes, and the tiles see the
        // same f32 bits as the single-node run.
        let mut unit = image();
        unit.data_mut().iter_mut().for_each(|v| *v /= 255.0);
        model.expect_inputs(&[&unit]);
        assert_eq!(model.dag.tensors[0].bytes, (3 * 24 * 24) as f64);
        let r = experiment::run_plan(&coord, &model, &unit, &plan, 1, false)
            .await
            .expect("run");
        let want = tile_engine::cpu::CpuExecutor
            .run(&model.graph, &[unit])
            .expect("cpu run");
        assert_eq!(bits(&r.outputs), bits(&want));
        let upload = r.records.iter().find(|x| x.stage == "device");
        assert_eq!(upload.map(|u| u.out_bytes), Some(3 * 24 * 24), "{upload:?}");
        coord.shutdown().await;
    });
}

/// The device stopped (SIGSTOP) before a request whose plan has it upload
/// the input and run a tile of the first block: the coordinator has the
/// input too, so the request completes bit-identically without it (it
/// failed with "the device's upload of the input failed"); the next
/// request, whose plan runs the model on the device, runs it on the
/// coordinator's edge node (it failed with "the device is down").
#[test]
fn a_device_that_dies_costs_its_part_of_the_plan_not_the_request() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, mut coord) = start("device-dies").await;
        coord.timeouts = timeouts(Duration::from_secs(2));
        let model = load(&coord).await;
        let want = bits(&reference(&model));
        let mut plan = two_edge_plan(&local, &model);
        let device = local.tier(Tier::Device)[0];
        let mut owners = local.tier(Tier::Edge);
        owners.push(device);
        plan.blocks[0].tiles = Some((tile_engine::tiling::Grid::uniform(3, 1), owners));
        local.signal(device, "STOP").expect("SIGSTOP");
        let r = experiment::run_plan(&coord, &model, &image(), &plan, 1, false)
            .await
            .expect("the request completes without the device");
        assert_eq!(bits(&r.outputs), want);
        assert!(
            r.records.iter().any(|x| x.node == device && !x.ok),
            "the device's jobs should have failed: {:?}",
            r.records
        );
        let tiles: Vec<_> = r
            .records
            .iter()
            .filter(|x| x.stage == "block 0" && x.ok)
            .collect();
        assert_eq!(tiles.len(), 3, "each tile pasted once: {tiles:?}");
        assert!(tiles.iter().all(|x| x.node != device));
        assert!(
            !coord.alive().contains(&device),
            "the device is marked down"
        );
        let mut on_device = ExecPlan::single_node(
            "device only",
            &model.graph,
            device,
            local.coordinator_node,
            None,
        );
        on_device.device_ops = (0..model.graph.nodes.len()).collect();
        on_device.blocks.clear();
        let r = experiment::run_plan(&coord, &model, &image(), &on_device, 2, false)
            .await
            .expect("the device's ops run elsewhere");
        assert_eq!(bits(&r.outputs), want);
        let ran = r.records.iter().find(|x| x.stage == "device" && x.ok);
        assert_eq!(
            ran.map(|x| x.node),
            Some(local.coordinator_node),
            "{:?}",
            r.records
        );
        let _ = local.signal(device, "CONT");
        coord.shutdown().await;
    });
}

/// A node that goes silent while it profiles a model is marked down, not
/// only skipped for the profile: left in the plan, it cost the request it
/// was profiled for a job timeout more (30 s in a trial).
#[test]
fn a_node_silent_while_it_profiles_the_model_is_marked_down() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, mut coord) = start("profile-stall").await;
        coord.timeouts.stall = Duration::from_secs(1);
        let mut model = load(&coord).await;
        let node = coord.profiling_node(&model.hash).expect("a node profiles");
        local.signal(node, "STOP").expect("SIGSTOP");
        let asked = std::time::Instant::now();
        assert_eq!(coord.profile_model(&mut model).await, None);
        assert!(
            asked.elapsed() < Duration::from_secs(8),
            "{:?}",
            asked.elapsed()
        );
        assert!(
            !coord.alive().contains(&node),
            "the silent node is marked down"
        );
        // What `tessera run` says of it (it said "its connection closed").
        let why = coord.down_reason(node).expect("a reason");
        assert!(why.contains("while profiling the model"), "{why}");
        let _ = local.signal(node, "CONT");
        coord.shutdown().await;
    });
}

/// What `read` returns once it contains `want`, or after `tries` readings
/// 100 ms apart its last (for the caller's assertion to show).
async fn read_until(mut read: impl FnMut() -> String, want: &str, tries: usize) -> String {
    let mut text = read();
    for _ in 1..tries {
        if text.contains(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = read();
    }
    text
}

fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host");
    let mut s = std::net::TcpStream::connect(hostport).expect("connect metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    body
}

#[test]
fn a_device_and_cloud_that_do_not_answer_are_left_down_and_planned_around() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (mut local, first) = start("nocloud").await;
        first.shutdown().await;
        let device = local.tier(Tier::Device)[0];
        let cloud = local.tier(Tier::Cloud)[0];
        local.kill(device);
        local.kill(cloud);
        // A new coordinator: neither answers its handshake. They are given
        // up on once the edge nodes have answered and a few seconds more
        // have passed, not after the full handshake timeout (10 s, every
        // request, while a node was down).
        let ep = local.coordinator_endpoint().expect("endpoint");
        let asked = std::time::Instant::now();
        let coord = Coordinator::connect(local.cluster.clone(), ep, local.addrs.clone())
            .await
            .expect("the edge nodes are enough");
        assert!(
            asked.elapsed() < Duration::from_secs(6),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(coord.alive(), local.tier(Tier::Edge));
        let model = load(&coord).await;
        let adaptive = Adaptive::new(&coord, &model).expect("a plan over the edge nodes");
        let plan = &adaptive.plan;
        assert!(
            plan.cloud_ops.is_empty() && plan.device_ops.is_empty(),
            "{plan:?}"
        );
        // The input starts at the coordinator: nothing waits for the device.
        let r = experiment::run_plan(&coord, &model, &image(), plan, 1, true)
            .await
            .expect("run");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        assert!(
            r.records
                .iter()
                .all(|x| x.node != cloud && x.node != device)
        );
        coord.shutdown().await;
        // With no edge node left either, the error names each of them.
        let edges = local.tier(Tier::Edge);
        for &e in &edges {
            local.kill(e);
        }
        let ep = local.coordinator_endpoint().expect("endpoint");
        let Err(e) = Coordinator::connect(local.cluster.clone(), ep, local.addrs.clone()).await
        else {
            panic!("a cluster without an edge node connected");
        };
        let text = e.to_string();
        for &n in &edges {
            let name = &local.cluster.nodes[n].name;
            assert!(text.contains(&format!("node {name}:")), "{text}");
        }
    });
}

/// A daemon whose node file gives another tier than the cluster file (a
/// cloud node listed as an edge node) is refused by name, with both tiers,
/// and planned around like a node that does not answer. Before, the
/// coordinator ignored the tier in the daemon's Hello and handed the cloud
/// node edge tiles.
#[test]
fn a_node_whose_tier_disagrees_with_the_cluster_file_is_refused_and_planned_around() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, first) = start("tier").await;
        first.shutdown().await;
        let cloud = local.tier(Tier::Cloud)[0];
        let mut cluster = local.cluster.clone();
        cluster.nodes[cloud].tier = Tier::Edge;
        // A backend the file gets wrong is costed as the daemon runs it.
        let edge = local.tier(Tier::Edge)[0];
        assert_eq!(cluster.nodes[edge].backend, planner::cluster::Backend::Cpu);
        cluster.nodes[edge].backend = planner::cluster::Backend::Gpu;
        let ep = local.coordinator_endpoint().expect("endpoint");
        let coord = Coordinator::connect(cluster, ep, local.addrs.clone())
            .await
            .expect("the other nodes are enough");
        assert_eq!(
            coord.backend(edge),
            planner::cluster::Backend::Cpu,
            "costed as the daemon runs"
        );
        let (sub, _) = coord.sub_problem(&coord.alive());
        let planned = sub
            .nodes
            .iter()
            .find(|n| n.name == local.cluster.nodes[edge].name);
        assert_eq!(
            planned.map(|n| n.backend),
            Some(planner::cluster::Backend::Cpu),
            "planned as the daemon runs"
        );
        assert!(!coord.alive().contains(&cloud), "{:?}", coord.alive());
        assert_eq!(coord.alive().len(), local.cluster.nodes.len() - 1);
        let why = coord.down_reason(cloud).expect("a reason");
        assert!(
            why.contains("node sky:") && why.contains("\"cloud\"") && why.contains("\"edge\""),
            "{why}"
        );
        let model = load(&coord).await;
        let adaptive = Adaptive::new(&coord, &model).expect("a plan without sky");
        let r = experiment::run_plan(&coord, &model, &image(), &adaptive.plan, 1, true)
            .await
            .expect("run");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        assert!(r.records.iter().all(|x| x.node != cloud), "{:?}", r.records);
        coord.shutdown().await;
    });
}

/// A cluster file with no cloud node: the planner keeps to the device and
/// edge tiers, and the run gives the reference bits. Before, the planner
/// refused such a cluster ("no cloud node").
#[test]
fn a_cluster_without_a_cloud_node_plans_and_runs_on_the_device_and_edges() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut cluster: Cluster = toml::from_str(SMALL).expect("cluster toml");
        cluster.nodes.retain(|n| n.tier != Tier::Cloud);
        cluster.links.retain(|l| l.from != "sky" && l.to != "sky");
        let (_local, coord) = start_cluster("cloudless", cluster).await;
        let model = load(&coord).await;
        let (report, _) = experiment::plan_live(&coord, &model).expect("a plan without a cloud");
        assert!(report.topology.cloud.is_none());
        assert!(
            report
                .alternatives
                .iter()
                .all(|p| !p.strategy.contains("cloud")
                    && !p.prediction.labels.contains(&Tier::Cloud)),
            "{:?}",
            report
                .alternatives
                .iter()
                .map(|p| p.strategy)
                .collect::<Vec<_>>()
        );
        let adaptive = Adaptive::new(&coord, &model).expect("adaptive plan");
        assert_eq!(adaptive.plan.cloud, None);
        let r = experiment::run_plan(&coord, &model, &image(), &adaptive.plan, 1, true)
            .await
            .expect("run");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        // The baselines a demo compares against exist without a cloud too.
        let names: Vec<String> = experiment::comparison_plans(&coord, &model)
            .expect("comparison plans")
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(names.iter().any(|n| n == "single edge node"), "{names:?}");
        assert!(names.iter().all(|n| !n.contains("cloud")), "{names:?}");
        coord.shutdown().await;
    });
}

/// A cloud node whose `max_model_bytes` is under the model's size is left
/// out like an unreachable one and the request runs without it; before, its
/// refusal aborted the whole run. Only when no edge node can load the model
/// is it an error, and that names the node and why.
#[test]
fn a_node_that_cannot_load_the_model_is_left_out_unless_no_edge_node_can() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut local = start_daemons("refuse", toml::from_str(SMALL).expect("toml")).await;
        let small = "max_model_bytes = 1000\n";
        let cloud = local.tier(Tier::Cloud)[0];
        local.restart_with(cloud, small).await.expect("restart");
        let coord = connect(&local).await.expect("coordinator connects");
        let model = load(&coord).await;
        let [(who, why)] = model.left_out.as_slice() else {
            panic!("only the cloud is left out: {:?}", model.left_out);
        };
        assert_eq!(*who, cloud);
        assert!(why.contains("max_model_bytes (1000)"), "{why}");
        assert!(!why.contains("model: model:"), "one prefix, not two: {why}");
        assert!(!coord.alive().contains(&cloud));
        let adaptive = Adaptive::new(&coord, &model).expect("a plan without the cloud");
        let r = experiment::run_plan(&coord, &model, &image(), &adaptive.plan, 1, true)
            .await
            .expect("run");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        assert!(r.records.iter().all(|x| x.node != cloud));
        coord.shutdown().await;

        for e in local.tier(Tier::Edge) {
            local.restart_with(e, small).await.expect("restart");
        }
        let coord = connect(&local).await.expect("coordinator connects");
        let bundle = Bundle::from_spec("default", &[1, 3, 24, 24]).expect("bundle");
        let err = match coord.load_model(&bundle).await {
            Ok(_) => panic!("no edge node can load the model"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("max_model_bytes (1000)"), "{err}");
        assert!(names_a_node(&local, &err), "{err}");
        coord.shutdown().await;
    });
}

/// A node whose name did not resolve when the coordinator started is
/// looked up again when nodes are re-admitted, and comes back once it
/// resolves; before, it stayed down for the coordinator's life.
#[test]
fn a_node_that_did_not_resolve_is_looked_up_again_on_readmission() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let local = start_daemons("re-resolve", toml::from_str(SMALL).expect("toml")).await;
        let cloud = local.tier(Tier::Cloud)[0];
        let mut addrs: Vec<Result<std::net::SocketAddr, String>> =
            local.addrs.iter().copied().map(Ok).collect();
        addrs[cloud] = Err("does not resolve (yet)".into());
        let ep = local.coordinator_endpoint().expect("endpoint");
        let coord = Coordinator::connect_resolved(local.cluster.clone(), ep, addrs)
            .await
            .expect("connects");
        assert!(!coord.alive().contains(&cloud));
        // The cluster's address for it resolves now (it is an IP address).
        let back = coord.readmit().await;
        assert_eq!(back, vec![local.cluster.nodes[cloud].name.clone()]);
        assert!(coord.alive().contains(&cloud));
        coord.shutdown().await;
    });
}

/// A node that refuses a model for its size answers at the model's first
/// message, and the coordinator stops sending it there: before, every
/// request sent the whole model (88 MB in a trial) before the refusal.
#[test]
fn a_model_over_a_nodes_limit_is_not_sent_to_it() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut local = start_daemons("refuse-early", toml::from_str(SMALL).expect("toml")).await;
        let cloud = local.tier(Tier::Cloud)[0];
        local
            .restart_with(cloud, "max_model_bytes = 1000000\n")
            .await
            .expect("restart");
        // resnet8 with 24 MiB of a field no reader knows: still a valid
        // model (protobuf skips unknown fields), and 24 MiB to send.
        let mut bytes = std::fs::read("tests/data/models/resnet8.onnx").expect("resnet8");
        let pad = 24usize << 20;
        bytes.extend_from_slice(&[0xC2, 0x3E]); // field 1000, length-delimited
        let mut n = pad;
        while n >= 0x80 {
            bytes.push((n as u8 & 0x7F) | 0x80);
            n >>= 7;
        }
        bytes.push(n as u8);
        bytes.resize(bytes.len() + pad, 0);
        let path = local.dir().join("padded.onnx");
        std::fs::write(&path, &bytes).expect("write");
        let bundle =
            Bundle::from_spec(path.to_str().expect("utf-8"), &[1, 3, 64, 64]).expect("bundle");
        let coord = connect(&local).await.expect("coordinator connects");
        let model = coord
            .load_model(&bundle)
            .await
            .expect("loads on the others");
        assert!(model.left_out.iter().any(|(who, _)| *who == cloud));
        let body = http_get(local.metrics[cloud].as_deref().expect("metrics url"));
        let received: f64 = body
            .lines()
            .find(|l| l.starts_with("tessera_bytes_received_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .expect("bytes received");
        assert!(
            received < (pad / 2) as f64,
            "{received} bytes of {pad} reached the node"
        );
        // Nor does the request wait, at its end, for acknowledgements of the
        // part it sent (2 s a request before).
        let closing = std::time::Instant::now();
        coord.shutdown().await;
        assert!(
            closing.elapsed() < Duration::from_millis(1500),
            "{:?}",
            closing.elapsed()
        );
    });
}

/// A request about to lose (or wait for) an edge node: the cluster (with
/// `timeouts`), the model, a plan over both edge nodes, the reference
/// bits, and the victim (the edge node that is not the coordinator's),
/// slowed `throttle`× so its tile is surely in flight when the test does
/// something to it.
struct Victim {
    local: LocalCluster,
    coord: Coordinator,
    model: LoadedModel,
    plan: ExecPlan,
    want: Vec<u32>,
    victim: usize,
}

/// A node whose cache has room for one model keeps the first client's
/// model while that client is connected, though a second client loads
/// another, and the first runs it; once the first has gone, the next model
/// loaded takes its place. Before, the second load dropped it and the
/// first client's tiles failed with "not loaded here".
#[test]
fn a_full_cache_keeps_a_connected_clients_model_and_drops_it_once_the_client_goes() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut local = start_daemons("evict", toml::from_str(SMALL).expect("toml")).await;
        let edges = local.tier(Tier::Edge);
        for &e in &edges {
            local
                .restart_with(e, "model_cache_bytes = 1\n")
                .await
                .expect("restart");
        }
        let logs = |local: &LocalCluster| -> Vec<String> {
            edges
                .iter()
                .map(|&e| {
                    let name = &local.cluster.nodes[e].name;
                    std::fs::read_to_string(local.dir().join(format!("{name}.log")))
                        .expect("node log")
                })
                .collect()
        };
        let first = connect(&local).await.expect("first coordinator");
        let model = load(&first).await;
        let second = connect(&local).await.expect("second coordinator");
        let other = Bundle::from_spec("default", &[1, 3, 16, 16]).expect("bundle");
        let other = second.load_model(&other).await.expect("other model loads");
        for log in logs(&local) {
            assert!(!log.contains("dropped from the model cache"), "{log}");
        }
        let plan = two_edge_plan(&local, &model);
        let r = experiment::run_plan(&first, &model, &image(), &plan, 1, false)
            .await
            .expect("the first client's model runs");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        for &e in &edges {
            assert!(
                r.records.iter().any(|x| x.node == e && x.ok),
                "node {e} ran no tile: {:?}",
                r.records
            );
        }
        first.shutdown().await;
        // The first client's connection ends on the nodes a moment later.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let third = connect(&local).await.expect("third coordinator");
        let another = Bundle::from_spec("default", &[1, 3, 20, 20]).expect("bundle");
        third.load_model(&another).await.expect("third model loads");
        for log in logs(&local) {
            let dropped = |hash: &str| {
                log.lines()
                    .any(|l| l.contains("dropped from the model cache") && l.contains(hash))
            };
            assert!(
                dropped(&model.hash),
                "the first client's model stays:\n{log}"
            );
            assert!(
                !dropped(&other.hash),
                "the second client's model went:\n{log}"
            );
        }
        third.shutdown().await;
        second.shutdown().await;
    });
}

/// Two clients that load the same new model at once get one profile of it:
/// the second waits for the first's instead of running its own after it;
/// and each node is sent the model once: the second client waits for the
/// first's load instead of sending the same bytes.
#[test]
fn clients_loading_a_new_model_together_share_one_profile() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let local = start_daemons("profile-once", toml::from_str(SMALL).expect("toml")).await;
        let a = connect(&local).await.expect("first coordinator");
        let b = connect(&local).await.expect("second coordinator");
        // Large enough that its profile (about a second) overlaps the
        // second client's request.
        let bundle = Bundle::from_spec("default", &[1, 3, 64, 64]).expect("bundle");
        let started = std::time::Instant::now();
        let (ma, mb) = tokio::join!(a.load_model(&bundle), b.load_model(&bundle));
        let took = started.elapsed();
        let (ma, mb) = (ma.expect("first loads"), mb.expect("second loads"));
        for (i, url) in local.metrics.iter().enumerate() {
            let body = http_get(url.as_deref().expect("metrics url"));
            let name = &local.cluster.nodes[i].name;
            assert!(
                body.contains(&format!("tessera_models_loaded_total{{node=\"{name}\"}} 1")),
                "{name} was sent the model twice: {body}"
            );
        }
        // Waiting for the other's load costs no more than loading it.
        // (through the emulated links of a 4 s keep-alive, a lost reply
        // shows as 4 s and more).
        assert!(took < Duration::from_secs(4), "the two loads took {took:?}");
        assert_eq!(ma.hash, mb.hash);
        let who = ma.profiled_on.expect("profiled");
        assert_eq!(mb.profiled_on, Some(who));
        let name = &local.cluster.nodes[who].name;
        let log =
            std::fs::read_to_string(local.dir().join(format!("{name}.log"))).expect("node log");
        let profiles = log.lines().filter(|l| l.contains("profiled ")).count();
        assert_eq!(profiles, 1, "{log}");
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// A client asks the edge node that holds a model's profile for it, not
/// the one the model's hash picks, which (down when the model was first
/// profiled, or restarted since) would time every op again.
#[test]
fn a_model_is_profiled_by_the_edge_node_that_holds_its_profile() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut local = start_daemons("profile-holder", toml::from_str(SMALL).expect("toml")).await;
        let mut first = connect(&local).await.expect("coordinator");
        first.profile_models = false;
        let hash = load(&first).await.hash;
        let picked = first.profiling_node(&hash).expect("a node to profile");
        first.shutdown().await;
        local.kill(picked);
        let a = connect(&local).await.expect("first coordinator");
        let ma = load(&a).await;
        let holder = ma.profiled_on.expect("profiled");
        assert_ne!(holder, picked, "the picked node is down");
        a.shutdown().await;
        local.restart(picked).await.expect("restart");
        let b = connect(&local).await.expect("second coordinator");
        assert!(b.alive().contains(&picked), "the restarted node is up");
        let mb = load(&b).await;
        assert_eq!(
            mb.profiled_on,
            Some(holder),
            "asked the node with the profile"
        );
        assert_eq!(mb.hash, ma.hash);
        let name = &local.cluster.nodes[holder].name;
        let log =
            std::fs::read_to_string(local.dir().join(format!("{name}.log"))).expect("node log");
        let profiles = log.lines().filter(|l| l.contains("profiled ")).count();
        assert_eq!(profiles, 1, "{log}");
        b.shutdown().await;
    });
}

/// Different models (one model at several input sizes) are profiled on
/// different edge nodes, picked by their hashes, so clients that bring new
/// models together do not queue on the first edge node.
#[test]
fn models_are_profiled_on_the_edge_nodes_their_hashes_pick() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, mut coord) = start("profile-spread").await;
        coord.profile_models = false;
        let edges = local.tier(Tier::Edge);
        let mut seen = std::collections::HashSet::new();
        for side in [16, 20, 24, 28, 32, 36] {
            let bundle = Bundle::from_spec("default", &[1, 3, side, side]).expect("bundle");
            let model = coord.load_model(&bundle).await.expect("loads");
            let node = coord.profiling_node(&model.hash).expect("a node");
            assert!(edges.contains(&node), "{node} is not an edge node");
            seen.insert(node);
        }
        assert_eq!(
            seen.len(),
            edges.len(),
            "six models on one edge node: {seen:?}"
        );
        coord.shutdown().await;
    });
}

async fn slowed_victim(name: &str, timeouts: Timeouts, throttle: f64) -> Victim {
    let (local, mut coord) = start(name).await;
    coord.timeouts = timeouts;
    let model = load(&coord).await;
    let plan = two_edge_plan(&local, &model);
    let want = bits(&reference(&model));
    let victim = local
        .tier(Tier::Edge)
        .into_iter()
        .find(|&e| e != local.coordinator_node)
        .expect("victim");
    coord
        .peer(victim)
        .expect("peer")
        .send(&Msg::Throttle { factor: throttle })
        .await
        .expect("throttle");
    Victim {
        local,
        coord,
        model,
        plan,
        want,
        victim,
    }
}

/// Jobs time out after `base` plus 4× their prediction.
fn timeouts(base: Duration) -> Timeouts {
    Timeouts {
        base,
        factor: 4.0,
        ..Timeouts::default()
    }
}

/// Kills (or stops) the non-coordinator edge node while its tile runs. The
/// killed node's job has a minute before its deadline, as a long job's
/// might: it is given up on when it falls silent, within seconds. The
/// stopped node's deadline comes first (a second), and a probe it does not
/// answer gives it up there.
async fn fault_mid_request(how: &str) {
    let base = Duration::from_secs(if how == "kill" { 60 } else { 1 });
    let Victim {
        mut local,
        coord,
        model,
        plan,
        want,
        victim,
    } = slowed_victim(how, timeouts(base), 40.0).await;
    let started = std::time::Instant::now();
    let run = coord.run(7, &model, image(), &plan);
    let fault = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        match how {
            "kill" => local.kill(victim),
            _ => local.signal(victim, "STOP").expect("SIGSTOP"),
        }
    };
    let (out, ()) = tokio::join!(run, fault);
    let out = out.expect("the request completes despite the fault");
    // 3 s of silence (or the deadline) and a 2 s probe, then the tile
    // again elsewhere.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(bits(&out.outputs), want, "result differs after re-dispatch");
    assert!(
        out.records.iter().any(|r| r.node == victim && !r.ok),
        "the victim's job should have failed"
    );
    let tiles: Vec<_> = out
        .records
        .iter()
        .filter(|r| r.tile.is_some() && r.ok)
        .collect();
    assert_eq!(tiles.len(), 2, "each tile pasted exactly once: {tiles:?}");
    assert!(tiles.iter().all(|r| r.node != victim));
    assert!(
        !coord.alive().contains(&victim),
        "the victim is marked down"
    );
    // The plan drops the node...
    let adaptive = Adaptive::new(&coord, &model).expect("re-plan");
    assert!(adaptive.plan.blocks.iter().all(|b| b.node != victim
        && b.tiles.as_ref().is_none_or(|(_, o)| !o.contains(&victim))));
    // ...and takes it back once it is restarted and calibrated.
    if how != "kill" {
        let _ = local.signal(victim, "CONT");
    }
    local.restart(victim).await.expect("restart");
    coord.set_address(victim, local.addrs[victim]);
    let back = coord.readmit().await;
    assert!(
        back.contains(&local.cluster.nodes[victim].name),
        "re-admitted: {back:?}"
    );
    let model = load(&coord).await;
    let r = coord
        .run(8, &model, image(), &plan)
        .await
        .expect("run after re-admission");
    assert_eq!(bits(&r.outputs), want);
    assert!(r.records.iter().any(|x| x.node == victim && x.ok));
    coord.shutdown().await;
}

/// A client that goes away mid-request (Ctrl-C of `tessera run`): the node
/// drops its running job and says why, and does not count it in
/// `tessera_errors_total`, which an operator alerts on.
#[test]
fn a_job_whose_client_leaves_is_dropped_without_counting_an_error() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let Victim {
            local,
            coord,
            model,
            plan,
            victim,
            ..
        } = slowed_victim("leave", timeouts(Duration::from_secs(60)), 40.0).await;
        let run = coord.run(7, &model, image(), &plan);
        // The request is abandoned while the slowed node's tile runs.
        assert!(
            tokio::time::timeout(Duration::from_millis(400), run)
                .await
                .is_err(),
            "the slowed tile finished in 400 ms"
        );
        coord.shutdown().await;
        let name = &local.cluster.nodes[victim].name;
        let log_path = local.dir().join(format!("{name}.log"));
        let log = read_until(
            || std::fs::read_to_string(&log_path).expect("node log"),
            "job dropped: its coordinator has gone",
            100,
        )
        .await;
        assert!(
            log.contains("job dropped: its coordinator has gone"),
            "{log}"
        );
        let body = http_get(&local.metrics[victim].clone().expect("metrics url"));
        assert!(
            body.contains(&format!("tessera_errors_total{{node=\"{name}\"}} 0")),
            "{body}"
        );
    });
}

#[test]
fn an_edge_node_killed_mid_request_is_replaced_bit_identically() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(fault_mid_request("kill"));
}

#[test]
fn an_edge_node_stalled_mid_request_is_replaced_bit_identically() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(fault_mid_request("stop"));
}

/// SIGTERM to an edge node mid-request: it closes its connections and exits
/// 0 at once, and the coordinator re-dispatches its tile on the closed
/// connection, long before the job's timeout (60 s here). Before, the
/// daemon died like `kill -9` and the coordinator waited for the timeout.
#[test]
fn an_edge_node_stopped_with_sigterm_exits_cleanly_and_its_tile_is_redispatched_at_once() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let Victim {
            mut local,
            coord,
            model,
            plan,
            want,
            victim,
        } = slowed_victim("term", timeouts(Duration::from_secs(60)), 40.0).await;
        let started = std::time::Instant::now();
        let run = coord.run(7, &model, image(), &plan);
        let stop = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            local
                .terminate(victim, Duration::from_secs(5))
                .expect("SIGTERM")
        };
        let (out, status) = tokio::join!(run, stop);
        let status = status.expect("the node exits within 5 s of SIGTERM");
        assert!(status.success(), "{status:?}");
        let out = out.expect("the request completes");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}: waited for the job timeout",
            started.elapsed()
        );
        assert_eq!(bits(&out.outputs), want);
        assert!(out.records.iter().any(|r| r.node == victim && !r.ok));
        let tiles: Vec<_> = out
            .records
            .iter()
            .filter(|r| r.tile.is_some() && r.ok)
            .collect();
        assert_eq!(tiles.len(), 2, "each tile pasted exactly once: {tiles:?}");
        assert!(tiles.iter().all(|r| r.node != victim));
        assert!(!coord.alive().contains(&victim));
        coord.shutdown().await;
    });
}

#[test]
fn a_busy_node_past_its_deadline_is_waited_for_not_marked_down() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // Deadlines far shorter than the slowed node's tile: before the
        // probe, its job timed out, it was marked down and its tile re-run.
        let deadlines = Timeouts {
            base: Duration::from_millis(200),
            factor: 0.0,
            renewals: 1000,
            ..Timeouts::default()
        };
        // The daemons live as long as `_local`.
        let Victim {
            local: _local,
            mut coord,
            model,
            plan,
            want,
            victim: busy,
        } = slowed_victim("busy", deadlines, 100.0).await;
        coord.steal = false;
        let out = coord
            .run(9, &model, image(), &plan)
            .await
            .expect("the request completes");
        assert_eq!(bits(&out.outputs), want);
        assert!(out.records.iter().all(|r| r.ok), "{:?}", out.records);
        let tile = out
            .records
            .iter()
            .find(|r| r.node == busy && r.tile.is_some())
            .expect("the busy node ran its tile");
        let took = Duration::from_micros(tile.recv_us - tile.sent_us);
        assert!(
            took > Duration::from_millis(400),
            "the tile ({took:?}) must outlast its 200 ms deadline for this test to mean anything"
        );
        assert!(coord.alive().contains(&busy), "the busy node stays up");
        coord.shutdown().await;
    });
}

#[test]
fn a_foreign_certificate_is_refused_and_a_malformed_request_gets_an_error() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, coord) = start("certs").await;
        let e0 = local.tier(Tier::Edge)[0];
        let addr = local.cluster.nodes[e0].address.parse().expect("addr");
        let name = local.cluster.nodes[e0].name.clone();
        let hello = Hello {
            node_id: COORDINATOR.into(),
            tier: transport::Tier::Edge,
            adapter: "none".into(),
            capabilities: Capabilities::default(),
        };
        // Same name, another CA: the node refuses the handshake.
        let foreign = transport::certs::ephemeral(&[COORDINATOR.to_string(), name.clone()])
            .expect("foreign ca")
            .remove(0);
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().expect("addr"),
            EndpointConfig::new(foreign, vec![name.clone()], hello.clone()),
        )
        .expect("bind");
        let refused = match ep.connect(addr, &name).await {
            Err(_) => true,
            Ok(c) => tokio::time::timeout(Duration::from_secs(5), c.recv_control())
                .await
                .map_or(true, |m| m.is_none()),
        };
        assert!(refused, "a certificate from another CA was accepted");
        // One line in the node's log says so, with why and from where.
        let log_path = local.dir().join(format!("{name}.log"));
        let mut refusals = Vec::new();
        for _ in 0..50 {
            let log = std::fs::read_to_string(&log_path).expect("node log");
            refusals = log
                .lines()
                .filter(|l| l.contains("WARN") && l.contains("handshake"))
                .map(str::to_string)
                .collect();
            if !refusals.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let local_addr = ep.local_addr().expect("local addr").to_string();
        assert_eq!(refusals.len(), 1, "{refusals:#?}");
        assert!(refusals[0].contains("handshake failed"), "{refusals:#?}");
        assert!(refusals[0].contains(&local_addr), "{refusals:#?}");
        assert!(refusals[0].contains("peer certificate"), "{refusals:#?}");
        assert!(
            refusals[0].contains("this node's peers: ["),
            "{refusals:#?}"
        );

        // A second, legitimate connection sends garbage and a bogus job...
        let id = transport::Identity::load(&local.dir().join("certs"), COORDINATOR).expect("id");
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().expect("addr"),
            EndpointConfig::new(id, vec![name.clone()], hello),
        )
        .expect("bind");
        let raw = ep.connect(addr, &name).await.expect("legit connect");
        raw.send_control(Control::PlanUpdate(PlanUpdate {
            epoch: 1,
            body: b"{not json".to_vec(),
        }))
        .await
        .expect("send garbage");
        Msg::Run {
            job: 99,
            model: "nope".into(),
            nodes: vec![3, 1],
            tile: None,
            inputs: 0,
        }
        .send(&raw, 2)
        .await
        .expect("send bogus job");
        Msg::ProfileModel {
            hash: "nope".into(),
        }
        .send(&raw, 3)
        .await
        .expect("send bogus profile request");
        let mut failures = Vec::new();
        let mut profile_error = None;
        while failures.len() < 2 || profile_error.is_none() {
            let m = tokio::time::timeout(Duration::from_secs(10), raw.recv_control())
                .await
                .expect("an answer")
                .expect("connection open");
            let Control::PlanUpdate(u) = m else { continue };
            match Msg::parse(&u.body) {
                Ok(Msg::Failed { job, message }) => failures.push((job, message)),
                Ok(Msg::ModelProfile { seconds, error, .. }) => {
                    assert!(seconds.is_empty(), "{seconds:?}");
                    profile_error = error;
                }
                _ => {}
            }
        }
        assert!(
            profile_error
                .as_deref()
                .is_some_and(|e| e.contains("not loaded")),
            "{profile_error:?}"
        );
        assert!(
            failures
                .iter()
                .any(|(j, m)| *j == 0 && m.contains("bad message")),
            "{failures:?}"
        );
        assert!(
            failures
                .iter()
                .any(|(j, m)| *j == 99 && m.contains("not loaded")),
            "{failures:?}"
        );
        // ...while the coordinator's requests keep working.
        let model = load(&coord).await;
        let plan = two_edge_plan(&local, &model);
        let r = coord
            .run(3, &model, image(), &plan)
            .await
            .expect("normal run");
        assert_eq!(bits(&r.outputs), bits(&reference(&model)));
        coord.shutdown().await;

        // A certificate of the cluster's CA that no node lists as a peer:
        // refused at once, by name, not after the calibration timeout.
        let other = local.cluster.nodes[local.tier(Tier::Edge)[1]].name.clone();
        let id = transport::Identity::load(&local.dir().join("certs"), &other).expect("id");
        let names: Vec<String> = local.cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let hello = Hello {
            node_id: other.clone(),
            tier: transport::Tier::Edge,
            adapter: "none".into(),
            capabilities: Capabilities::default(),
        };
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().expect("addr"),
            EndpointConfig::new(id, names, hello),
        )
        .expect("bind");
        let addrs = local
            .cluster
            .nodes
            .iter()
            .map(|n| n.address.parse().expect("addr"))
            .collect();
        let started = std::time::Instant::now();
        let refused = Coordinator::connect(local.cluster.clone(), ep, addrs).await;
        let Err(e) = refused else {
            panic!("a coordinator no node lists was accepted");
        };
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "refused after {:?}: {e}",
            started.elapsed()
        );
        // The whole reason reaches the client (a longer one was cut short
        // in the close frame: "…, no allow-list").
        let e = e.to_string();
        assert!(
            e.contains(&format!("certificate [\"{other}\"] not in peers"))
                && names_a_node(&local, &e),
            "{e}"
        );
    });
}

#[test]
fn the_demo_short_mode_writes_files_that_parse() {
    let out = scratch("demo");
    // A relative --out, as the README's `cargo run --release -- demo` has
    // (its default is `out`): the node files it writes must hold from there.
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else {
        panic!("scratch folder {} has no parent", out.display());
    };
    let run = Command::new(EXE)
        .current_dir(parent)
        // A size other than the embedded image's, so the model is checked
        // against the authors' result on that image in-process.
        .args([
            "demo",
            "--quick",
            "--backend",
            "cpu",
            "--size",
            "64",
            "--out",
        ])
        .arg(name)
        .output()
        .expect("tessera demo");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("bit for bit: yes"), "{stdout}");
    assert!(
        stdout.contains("vs the best two-tier split"),
        "the demo compares against the fastest measured two-tier split: {stdout}"
    );
    let authors = stdout
        .lines()
        .find_map(|l| l.split_once("against the authors' result.png: "))
        .and_then(|(_, r)| r.split('%').next()?.parse::<f64>().ok());
    assert!(authors.is_some_and(|p| p >= 99.0), "{authors:?}: {stdout}");
    let png = std::fs::read(out.join("output.png")).expect("output.png");
    let (w, h, _) = tile_engine::default_model::decode_rgb8(&png).expect("png decodes");
    assert_eq!((w, h), (128, 128));
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("trace.json")).expect("trace.json"))
            .expect("trace parses");
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let spans: Vec<String> = events
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| format!("{} {} {} {}", e["name"], e["tid"], e["ts"], e["pid"]))
        .collect();
    assert!(!spans.is_empty(), "{trace}");
    // A plan measured once with another's jobs adds no copies of them.
    let mut unique = spans.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), spans.len(), "a span twice");
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "M" && e["name"] == "process_name"),
        "{trace}"
    );
    for svg in ["plan.svg", "gantt.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).expect("svg");
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
    let logs = std::fs::read_dir(Path::new(&out).join("cluster")).expect("work dir");
    assert!(
        logs.count() >= 6,
        "node files and logs are kept for inspection"
    );
}

/// Ctrl-C during the demo stops every node daemon it started and exits
/// 130, as a shell reports a stop by SIGINT (it exited 1, as for an error).
#[test]
fn an_interrupted_demo_stops_its_daemons_and_exits_130() {
    let out = scratch("demo-int");
    let mut demo = Command::new(EXE)
        .args(["demo", "--quick", "--backend", "cpu", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tessera demo");
    let work = out.join("cluster");
    let logs = || {
        std::fs::read_dir(&work).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .count()
        })
    };
    let started = std::time::Instant::now();
    while logs() < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the demo started no daemons"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let st = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let stopped = std::time::Instant::now();
    let status = loop {
        if let Some(s) = demo.try_wait().expect("wait") {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "the demo did not stop within 20 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = demo.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("SIGINT: interrupted"), "{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    // No process is left running a node file of this demo.
    let needle = work.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle) && c.contains(" node "))
        .collect();
    assert!(left.is_empty(), "daemons left running: {left:?}");
}

/// A node stopped while the model was profiled is found by the probe
/// before the plan, not by its tiles' silence after it (`tessera run`
/// gave it tiles and waited about 5 s more).
#[test]
fn a_node_stopped_before_the_plan_is_found_by_the_probe() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (local, coord) = start("probe").await;
        let victim = local
            .tier(Tier::Edge)
            .into_iter()
            .find(|&e| e != local.coordinator_node)
            .expect("victim");
        assert!(coord.probe_all().await.is_empty(), "every node answers");
        local.signal(victim, "STOP").expect("SIGSTOP");
        let started = std::time::Instant::now();
        let down = coord.probe_all().await;
        assert!(started.elapsed() < Duration::from_secs(4));
        let _ = local.signal(victim, "CONT");
        assert_eq!(down, [victim]);
        assert!(!coord.alive().contains(&victim));
        let why = coord.down_reason(victim).expect("a reason");
        assert!(why.contains("did not answer a probe"), "{why}");
        coord.shutdown().await;
    });
}
