//! How the planner cuts the edge part into fused blocks (the least summed
//! block time over every way to cut, checked against brute force) and when
//! the device and the cloud node take tiles of an edge block.

use planner::cluster::{Backend, Cluster, LinkSpec, NodeSpec, Tier};
use planner::cost::{Context, PlanOptions};
use planner::shares::solve_block;
use planner::synth::{SplitMix, chain_with, random_cluster};
use planner::{Estimates, ReceptiveField, plan_dag};

/// Least summed block time over all ways to cut `0..n` into runs of at most `depth`.
fn brute_force(ctx: &Context<'_>, n: usize, depth: usize, helpers: [bool; 2]) -> f64 {
    let workers = ctx.topo.workers(helpers);
    let mut best = f64::INFINITY;
    for mask in 0u32..(1 << (n - 1)) {
        let mut cuts = vec![0];
        cuts.extend((1..n).filter(|i| mask & (1 << (i - 1)) != 0));
        cuts.push(n);
        if cuts.windows(2).any(|w| w[1] - w[0] > depth) {
            continue;
        }
        let t: f64 = cuts
            .windows(2)
            .map(|w| solve_block(ctx, &(w[0]..w[1]).collect::<Vec<_>>(), &workers).time_s)
            .sum();
        let rounds = (cuts.len() - 2) as f64 * ctx.opts.block_round_s;
        best = best.min(t + rounds);
    }
    best
}

#[test]
fn block_cuts_are_the_least_summed_time_and_rounds_of_all_cuts() {
    let mut rng = SplitMix(7);
    let mut split_seen = false;
    for case in 0..40 {
        let n = 2 + case % 6;
        let hw = 16 << (case % 3);
        let sizes = vec![hw; n + 1];
        // Wide maps make block boundaries expensive, narrow ones cheap.
        let channels = [2.0, 16.0, 64.0][case % 3];
        let dag = chain_with(&sizes, 3 + 2 * (case % 2), channels);
        let cluster = random_cluster(&mut rng, 1 + case % 4);
        let est = Estimates::from_cluster(&cluster);
        let opts = PlanOptions {
            max_fuse_depth: 1 + case % 5,
            // Every other case without the charge for a block's round.
            block_round_s: [0.0, 0.005][case % 2],
            ..PlanOptions::default()
        };
        let ctx = Context::new(&dag, &cluster, &est, &ReceptiveField, opts).expect("context");
        let labels = vec![Tier::Edge; n];
        let p = ctx.evaluate_in(&labels, [false, true, false]);
        let want = brute_force(&ctx, n, opts.max_fuse_depth, [false; 2]);
        let got = p.edge_s + (p.blocks.len() - 1) as f64 * opts.block_round_s;
        assert!(
            (got - want).abs() <= 1e-9 * want.max(1e-9),
            "case {case}: planner {got} s, best cut {want} s"
        );
        assert!(p.blocks.iter().all(|b| b.ops.len() <= opts.max_fuse_depth));
        let covered: Vec<usize> = p.blocks.iter().flat_map(|b| b.ops.clone()).collect();
        assert_eq!(covered, (0..n).collect::<Vec<_>>());
        split_seen |= p.blocks.len() > n.div_ceil(opts.max_fuse_depth);
    }
    assert!(
        split_seen,
        "no case cut a run shorter than the depth allows"
    );
}

fn node(name: &str, tier: Tier, gflops: f64) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        tier,
        address: "127.0.0.1:0".into(),
        backend: Backend::Gpu,
        gflops,
    }
}

fn link(from: &str, to: &str, mbps: f64, ms: f64) -> LinkSpec {
    LinkSpec {
        from: from.into(),
        to: to.into(),
        bandwidth_mbps: mbps,
        delay_ms: ms,
        jitter_ms: 0.0,
        loss: 0.0,
    }
}

/// A device and a cloud node as fast as the two edge nodes, on good links.
fn even_cluster(cloud_link_mbps: f64) -> Cluster {
    Cluster {
        nodes: vec![
            node("phone", Tier::Device, 10.0),
            node("edge0", Tier::Edge, 10.0),
            node("edge1", Tier::Edge, 10.0),
            node("cloud", Tier::Cloud, 10.0),
        ],
        links: vec![
            link("phone", "edge0", 1000.0, 1.0),
            link("phone", "edge1", 1000.0, 1.0),
            link("edge0", "edge1", 1000.0, 1.0),
            link("cloud", "edge0", cloud_link_mbps, 1.0),
            link("cloud", "edge1", cloud_link_mbps, 1.0),
        ],
    }
}

/// The default plan of `dag` on [`even_cluster`] with a fast cloud link.
fn plan_on_even(dag: &planner::ModelDag) -> planner::PlanReport {
    let cluster = even_cluster(1000.0);
    let est = Estimates::from_cluster(&cluster);
    plan_dag(dag, &cluster, &est, &ReceptiveField, PlanOptions::default()).expect("plan")
}

fn tile_nodes(report: &planner::PlanReport, strategy: &str) -> Vec<String> {
    let plan = report.alternative(strategy).expect("strategy");
    let mut names: Vec<String> = plan
        .prediction
        .blocks
        .iter()
        .filter_map(|b| b.tiling.as_ref())
        .flat_map(|t| t.nodes.iter().map(|&n| report.nodes[n].0.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_device_takes_tiles_when_its_tier_is_used_and_the_cloud_only_when_allowed() {
    // A compute-heavy chain: 64 channels, 96×96, six 3×3 convs (four
    // workers' tiles stay above the smallest tile worth running).
    let dag = chain_with(&[96; 7], 3, 64.0);
    let cluster = even_cluster(1000.0);
    let est = Estimates::from_cluster(&cluster);
    let report = plan_dag(
        &dag,
        &cluster,
        &est,
        &ReceptiveField,
        PlanOptions::default(),
    )
    .expect("plan");
    assert_eq!(
        tile_nodes(&report, "three-tier"),
        ["edge0", "edge1", "phone"]
    );
    // A strategy without the device tier leaves the device out.
    assert_eq!(tile_nodes(&report, "edge+cloud"), ["edge0", "edge1"]);

    // The cloud joins only when allowed; the classic split uses edge nodes only.
    let both = PlanOptions {
        tile_helpers: [true, true],
        ..PlanOptions::default()
    };
    let report = plan_dag(&dag, &cluster, &est, &ReceptiveField, both).expect("plan");
    assert_eq!(
        tile_nodes(&report, "three-tier"),
        ["cloud", "edge0", "edge1", "phone"]
    );
    let vertical = PlanOptions {
        tile_helpers: [false; 2],
        ..PlanOptions::default()
    };
    let report = plan_dag(&dag, &cluster, &est, &ReceptiveField, vertical).expect("plan");
    assert_eq!(tile_nodes(&report, "three-tier"), ["edge0", "edge1"]);

    // Behind a thin link the cloud would only slow the block down.
    let thin = even_cluster(1.0);
    let est = Estimates::from_cluster(&thin);
    let report = plan_dag(&dag, &thin, &est, &ReceptiveField, both).expect("plan");
    assert!(!tile_nodes(&report, "three-tier").contains(&"cloud".to_string()));
}

#[test]
fn no_tile_is_smaller_than_the_minimum_and_small_maps_run_as_one_tile() {
    let cluster = even_cluster(1000.0);
    let est = Estimates::from_cluster(&cluster);
    let channels = 64.0;
    for hw in [16usize, 24, 40, 64, 96] {
        let dag = chain_with(&[hw; 5], 3, channels);
        let opts = PlanOptions::default();
        let values = channels * (hw * hw) as f64;
        let report = plan_dag(&dag, &cluster, &est, &ReceptiveField, opts).expect("plan");
        for alt in &report.alternatives {
            for b in &alt.prediction.blocks {
                let Some(t) = &b.tiling else { continue };
                for r in 0..t.rows {
                    for c in 0..t.cols {
                        let v = t.region(r, c).area() * values;
                        assert!(
                            t.rows * t.cols == 1 || v >= opts.min_tile_values as f64 - 1e-6,
                            "{hw}²: a tile of {v} values in {}",
                            alt.strategy
                        );
                    }
                }
                if values < 2.0 * opts.min_tile_values as f64 {
                    assert_eq!((t.rows, t.cols), (1, 1), "{hw}² must not be split");
                }
            }
        }
    }
}

#[test]
fn a_small_map_of_wide_layers_is_split() {
    // 32×32 pixels of 256 channels hold four tiles of the minimum: a VGG
    // late stage, which one node ran alone while it was counted in pixels.
    let cluster = even_cluster(1000.0);
    let est = Estimates::from_cluster(&cluster);
    let dag = chain_with(&[32; 4], 3, 256.0);
    let report = plan_dag(
        &dag,
        &cluster,
        &est,
        &ReceptiveField,
        PlanOptions::default(),
    )
    .expect("plan");
    let tiles: usize = report
        .best
        .prediction
        .blocks
        .iter()
        .filter_map(|b| b.tiling.as_ref())
        .map(|t| t.rows * t.cols)
        .max()
        .unwrap_or(1);
    assert!(tiles > 1, "the 256-channel 32×32 block ran as one tile");
    assert!(tiles <= 4, "{tiles} tiles: more than the minimum allows");
}

#[test]
fn strips_run_along_rows_where_column_strips_would_waste_kernel_lanes() {
    // Three equal workers on fast links, a square map: row and column strips
    // carry the same halo, but a 32-pixel-wide column strip fills the
    // kernels' 8-pixel row blocks no better than a 128-wide row strip, and
    // narrower or uneven column widths leave blocks half empty.
    let dag = chain_with(&[100; 5], 3, 64.0);
    let report = plan_on_even(&dag);
    let plan = report.alternative("three-tier").expect("three-tier");
    let tiled: Vec<_> = plan
        .prediction
        .blocks
        .iter()
        .filter_map(|b| b.tiling.as_ref())
        .collect();
    assert!(!tiled.is_empty(), "the block is tiled");
    for t in tiled {
        assert_eq!(
            t.cols, 1,
            "{}x{} tiles: strips should be rows",
            t.rows, t.cols
        );
    }
}

#[test]
fn the_device_runs_its_tiles_of_a_block_on_model_inputs_while_it_uploads() {
    // The device on 100 Mbit/s links: its upload of the input is the
    // head start its own tiles of the first block get.
    let mut cluster = even_cluster(1000.0);
    for l in &mut cluster.links {
        if l.from == "phone" {
            l.bandwidth_mbps = 100.0;
            l.delay_ms = 5.0;
        }
    }
    let dag = chain_with(&[96; 7], 3, 64.0);
    let est = Estimates::from_cluster(&cluster);
    let ctx = Context::new(
        &dag,
        &cluster,
        &est,
        &ReceptiveField,
        PlanOptions::default(),
    )
    .expect("context");
    let phone = cluster.node_index("phone").expect("phone");
    let workers = ctx.topo.workers([true, false]);
    let device_part = |ops: &[usize]| {
        let b = solve_block(&ctx, ops, &workers);
        let share = b.tiling.as_ref().expect("tiled").node_share(phone);
        let t = *b
            .node_times
            .iter()
            .find(|t| t.node == phone)
            .expect("the device takes a tile");
        (share, t)
    };
    // Ops 0..6 read the model input, which starts on the device.
    let (first_share, first) = device_part(&[0, 1, 2, 3, 4, 5]);
    let upload = ctx.topo.up.time(dag.tensors[dag.ops[0].inputs[0]].bytes);
    assert_eq!(first.in_s, 0.0);
    assert!((first.head_start_s - upload).abs() < 1e-12);
    assert!((first.total() - ((first.compute_s - upload).max(0.0) + first.out_s)).abs() < 1e-12);
    // Ops 1..6 read a map the coordinator gathered: no head start.
    let (later_share, later) = device_part(&[1, 2, 3, 4, 5]);
    assert_eq!(later.head_start_s, 0.0);
    assert!(later.in_s > 0.0);
    assert!(
        first_share > later_share * 1.2,
        "device share {first_share:.3} with the head start, {later_share:.3} without"
    );
}

/// A residual network of `repeats` blocks (3×3 conv, 3×3 conv, add of the
/// block's input) on a `hw`×`hw` map; block `odd_one` adds the output of
/// its first conv instead, so its structure differs from the others'.
fn residual_dag(repeats: usize, hw: usize, odd_one: usize) -> planner::ModelDag {
    use planner::dag::{DagOp, DagTensor, Geometry};
    use tile_engine::ir::OpClass;
    let map = |name: String, producer: Option<usize>| DagTensor {
        name,
        bytes: 16.0 * (hw * hw) as f64 * 4.0,
        elements: 16.0 * (hw * hw) as f64,
        hw: Some([hw, hw]),
        producer,
        consumers: Vec::new(),
        is_output: false,
    };
    let window = Geometry::Window {
        extent: [3, 3],
        stride: [1, 1],
        pad: [1, 1],
    };
    let mut tensors = vec![map("input".into(), None)];
    let mut ops: Vec<DagOp> = Vec::new();
    let mut h = 0;
    for r in 0..repeats {
        let mut op = |class, geometry, inputs: Vec<usize>, flops: f64| {
            tensors.push(map(format!("t{}", ops.len()), Some(ops.len())));
            ops.push(DagOp {
                name: format!("op{}", ops.len()),
                class,
                flops,
                inputs,
                output: tensors.len() - 1,
                geometry,
            });
            tensors.len() - 1
        };
        let a = op(
            OpClass::Conv3x3,
            window,
            vec![h],
            2.0 * 9.0 * 256.0 * (hw * hw) as f64,
        );
        let b = op(
            OpClass::Conv3x3,
            window,
            vec![a],
            2.0 * 9.0 * 256.0 * (hw * hw) as f64,
        );
        let skip = if r == odd_one { a } else { h };
        h = op(
            OpClass::Elementwise,
            Geometry::Pointwise,
            vec![b, skip],
            (16 * hw * hw) as f64,
        );
    }
    if let Some(last) = tensors.last_mut() {
        last.is_output = true;
    }
    planner::ModelDag::new(ops, tensors).expect("residual DAG")
}

/// Blocks are solved once per structure (a deep model repeats its blocks):
/// every block of a plan must get exactly what solving its own ops gives,
/// including blocks whose ops match an earlier block's but for where a skip
/// connection comes from or whether their output is read later.
#[test]
fn blocks_of_equal_structure_share_a_solve_and_others_do_not() {
    let mut rng = SplitMix(11);
    for (case, &(repeats, hw, odd_one)) in [(8, 64, 3), (6, 48, 0), (10, 32, 9)].iter().enumerate()
    {
        let dag = residual_dag(repeats, hw, odd_one);
        let cluster = random_cluster(&mut rng, 2 + case);
        let est = Estimates::from_cluster(&cluster);
        let opts = PlanOptions {
            max_fuse_depth: 4,
            ..PlanOptions::default()
        };
        let ctx = Context::new(&dag, &cluster, &est, &ReceptiveField, opts).expect("context");
        let labels = vec![Tier::Edge; dag.ops.len()];
        let p = ctx.evaluate_in(&labels, [true, true, false]);
        let workers = ctx.topo.workers([true, false]);
        assert!(p.blocks.len() > 1, "case {case}: one block");
        for b in &p.blocks {
            let fresh = solve_block(&ctx, &b.ops, &workers);
            assert_eq!(
                (b.time_s, &b.tiling, b.in_bytes, b.out_bytes),
                (fresh.time_s, &fresh.tiling, fresh.in_bytes, fresh.out_bytes),
                "case {case}: block {:?}",
                b.ops
            );
        }
    }
}
