//! `plan` on a small model built with the engine's IR: baselines match
//! hand-computed costs, and both renderers show the plan.

use std::sync::Arc;

use planner::{Cluster, Estimates, Tier, plan};
use tile_engine::Tensor;
use tile_engine::ir::{Activation, Conv, Graph, Op, PoolKind};

fn example() -> Cluster {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cluster.toml");
    let text = std::fs::read_to_string(path).expect("readable");
    toml::from_str(&text).expect("parses")
}

/// A same-padded 3×3 convolution with ReLU and zero weights.
fn conv3x3(cin: usize, cout: usize) -> Op {
    Op::Conv(Conv {
        weight: Arc::new(Tensor::zeros(vec![cout, cin, 3, 3])),
        bias: None,
        strides: [1, 1],
        pads: [1, 1, 1, 1],
        dilations: [1, 1],
        group: 1,
        activation: Activation::Relu,
    })
}

fn small_cnn() -> Graph {
    let mut g = Graph::default();
    let mut h = g.add_value("input", vec![1, 16, 64, 64]);
    g.inputs.push(h);
    for i in 0..3 {
        h = g
            .add_node(
                format!("conv{i}"),
                conv3x3(16, 16),
                vec![h],
                format!("c{i}"),
            )
            .expect("conv");
    }
    h = g
        .add_node("gap", Op::GlobalPool(PoolKind::Max), vec![h], "gap_out")
        .expect("gap");
    h = g
        .add_node_with_shape("flat", Op::Reshape, vec![h], "flat_out", vec![1, 16])
        .expect("reshape");
    let dense = Op::Dense {
        weight: Arc::new(Tensor::zeros(vec![16, 10])),
        bias: None,
        activation: Activation::Identity,
    };
    h = g.add_node("fc", dense, vec![h], "logits").expect("dense");
    g.outputs.push(h);
    g
}

#[test]
fn baselines_match_hand_computed_costs_and_render() {
    let g = small_cnn();
    let cluster = example();
    let est = Estimates::from_cluster(&cluster);
    let report = plan(&g, &cluster, &est).expect("plans");
    let alt = |name: &str| report.alternative(name).expect("strategy present");
    // Device only: every op at the phone's per-class prior, then the ten
    // logits go up to the coordinator (100 Mbit/s + 5 ms).
    let phone = cluster.node_index("phone").expect("phone");
    let logits = 10.0 * 4.0;
    let want: f64 = (0..g.nodes.len())
        .map(|i| {
            let c = g.node_cost(i);
            c.flops as f64 / est.flops_per_s(phone, c.class)
        })
        .sum::<f64>()
        + 0.005
        + logits / 12.5e6;
    let d = &alt("device-only").prediction;
    assert!(
        (d.makespan_s - want).abs() < 1e-12 * want.max(1.0),
        "{} vs {want}",
        d.makespan_s
    );
    assert_eq!(d.up_bytes, logits);
    // Cloud only: the input crosses both cuts once (100 Mbit/s + 5 ms, then
    // 50 Mbit/s + 30 ms), and the logits come back over the backbone.
    let c = &alt("cloud-only").prediction;
    let input = 16.0 * 64.0 * 64.0 * 4.0;
    assert_eq!(c.up_bytes, input);
    assert_eq!(c.back_bytes, input + logits);
    let transfer = 0.005 + input / 12.5e6 + 0.030 + input / 6.25e6 + 0.030 + logits / 6.25e6;
    assert!(
        (c.up_s + c.back_s - transfer).abs() < 1e-12,
        "{}",
        c.up_s + c.back_s
    );
    assert!(c.labels.iter().all(|&l| l == Tier::Cloud));
    // Edge only: the convs form one tiled block, and the head (pool,
    // reshape, dense) runs whole on the coordinator as one job.
    let e = &alt("edge-only").prediction;
    // A tier that runs no op costs nothing, job overhead included.
    let mut busy = est.clone();
    busy.op_overhead_s = vec![[0.004, 0.0001]; cluster.nodes.len()];
    let again = plan(&g, &cluster, &busy).expect("plans");
    let idle = &again
        .alternative("edge-only")
        .expect("edge-only")
        .prediction;
    assert_eq!((idle.device_s, idle.cloud_s), (0.0, 0.0));
    assert_eq!(e.blocks.len(), 2);
    assert_eq!(e.blocks[0].ops, vec![0, 1, 2]);
    assert!(e.blocks[0].tiling.is_some());
    assert_eq!(e.blocks[1].ops, vec![3, 4, 5]);
    assert!(e.blocks[1].tiling.is_none());

    let table = report.table();
    for (name, _) in planner::plan::STRATEGIES {
        assert!(table.contains(name), "table lacks {name}:\n{table}");
    }
    assert!(table.contains("device|edge") && table.contains("edge|cloud"));
    let svg = report.svg();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    // One strip cell per op plus one bar per schedule slot.
    let rects = svg.matches("<rect").count();
    assert_eq!(rects, g.nodes.len() + report.schedule().len());
    assert!(svg.contains("solid: compute; pale: a transfer"), "no key");

    // The cloud-only schedule: up to the cloud, its compute, the logits
    // back down, one after the other (one bar for both ways drew the
    // logits coming back before the cloud had computed them).
    let mut cloudy = report.clone();
    cloudy.best = alt("cloud-only").clone();
    let slots = cloudy.schedule();
    let find = |lane: &str| {
        slots
            .iter()
            .find(|s| s.lane == lane)
            .unwrap_or_else(|| panic!("no {lane} slot: {slots:?}"))
    };
    let (up, compute, down) = (find("edge0→cloud"), find("cloud"), find("cloud→edge0"));
    assert_eq!(up.what, format!("{input:.0} B"));
    assert_eq!(down.what, format!("{logits:.0} B"));
    assert!((compute.start_s - up.end_s).abs() < 1e-12, "{slots:?}");
    assert!((down.start_s - compute.end_s).abs() < 1e-12, "{slots:?}");
    assert!((down.end_s - c.makespan_s).abs() < 1e-12, "{slots:?}");
}

#[test]
fn nearest_upsampling_tiles_as_a_pointwise_op_between_two_map_sizes() {
    let mut g = tile_engine::default_model::graph([32, 32]).expect("default model");
    tile_engine::passes::optimize(&mut g).expect("passes");
    let dag = planner::ModelDag::from_graph(&g).expect("dag");
    // The whole super-resolution model is one run of tileable ops, so the
    // planner may fuse its up-sampling tail into the block before it.
    for op in &dag.ops {
        assert!(op.tileable(), "{} is not tileable", op.name);
    }
    let at = |name: &str| {
        dag.ops
            .iter()
            .position(|o| o.name == name)
            .unwrap_or_else(|| panic!("no op {name}"))
    };
    let (upn3, up, sr) = (at("UPN3"), at("UPsample"), at("SR"));
    assert_eq!(dag.tensors[dag.ops[up].output].hw, Some([64, 64]));
    let top = planner::HaloModel::tile_work(
        &planner::ReceptiveField,
        &dag,
        &[upn3, up, sr],
        planner::halo::Region {
            top: 0.0,
            bottom: 0.5,
            left: 0.0,
            right: 1.0,
        },
    );
    // SR (3×3) needs up-sampled rows 0..33, so UPsample reads UPN3 rows
    // 0..17 (⌈33/2⌉), and UPN3 (3×3) reads rows 0..18 of its 32-row input.
    let input = &dag.tensors[dag.ops[upn3].inputs[0]];
    assert!((top.in_bytes - input.bytes * 18.0 / 32.0).abs() < 1e-6);
    let per_row = |op: usize, rows: f64, of: f64| dag.ops[op].flops * rows / of;
    assert!((top.op_flops[2] - per_row(sr, 32.0, 64.0)).abs() < 1e-6);
    assert!((top.op_flops[1] - per_row(up, 33.0, 64.0)).abs() < 1e-6);
    assert!((top.op_flops[0] - per_row(upn3, 17.0, 32.0)).abs() < 1e-6);
}

/// A `[1, c, 32, 32]` input, an explicit Pad of `pads`, a 3×3 stride-2
/// conv without pads, then a `k`×`k` stride-2 transposed conv with `up_pads`
/// and `extra` output padding: how TF exports a strided "same" conv and a
/// decoder. Returns the graph and the transposed conv's output.
fn pad_down_up(
    c: usize,
    pads: [usize; 4],
    k: usize,
    up_pads: [usize; 4],
    extra: usize,
) -> (Graph, usize) {
    let mut g = Graph::default();
    let x = g.add_value("input", vec![1, c, 32, 32]);
    g.inputs.push(x);
    let pad = Op::Pad { pads, value: 0.0 };
    let p = g.add_node("pad", pad, vec![x], "p").expect("pad");
    let down = Op::Conv(Conv {
        weight: Arc::new(Tensor::zeros(vec![c, c, 3, 3])),
        bias: None,
        strides: [2, 2],
        pads: [0; 4],
        dilations: [1, 1],
        group: 1,
        activation: Activation::Relu,
    });
    let d = g.add_node("down", down, vec![p], "d").expect("conv");
    let up = Op::ConvTranspose(tile_engine::ir::ConvTranspose {
        weight: Arc::new(Tensor::zeros(vec![c, c, k, k])),
        bias: None,
        strides: [2, 2],
        pads: up_pads,
        dilations: [1, 1],
        output_padding: [extra; 2],
        group: 1,
        activation: Activation::Identity,
    });
    let u = g.add_node("up", up, vec![d], "u").expect("convtranspose");
    (g, u)
}

/// How TF exports a strided "same" conv and a decoder: an explicit Pad, a
/// 3×3 stride-2 conv without pads, then a 2×2 stride-2 transposed conv.
/// All three tile (they are one block for the engine), and a tile's halo
/// follows each: a strip of the top half reads 17 of 32 input rows.
#[test]
fn explicit_pads_and_transposed_convs_tile_with_their_halos() {
    let (mut g, u) = pad_down_up(8, [0, 0, 1, 1], 2, [0; 4], 0);
    g.outputs.push(u);
    let block: Vec<usize> = (0..3).collect();
    assert!(tile_engine::tiling::Block::new(&g, block.clone()).is_ok());
    let dag = planner::ModelDag::from_graph(&g).expect("dag");
    for op in &dag.ops {
        assert!(op.tileable(), "{} is not tileable", op.name);
    }
    assert_eq!(dag.tensors[dag.ops[0].output].hw, Some([33, 33]));
    assert_eq!(dag.tensors[dag.ops[1].output].hw, Some([16, 16]));
    assert_eq!(dag.tensors[dag.ops[2].output].hw, Some([32, 32]));
    let top = planner::HaloModel::tile_work(
        &planner::ReceptiveField,
        &dag,
        &block,
        planner::halo::Region {
            top: 0.0,
            bottom: 0.5,
            left: 0.0,
            right: 1.0,
        },
    );
    // Output rows 0..16 of `up` (kernel 2, stride 2) read `down` rows 0..8;
    // those (3×3, stride 2) read padded rows 0..17, which are input rows
    // 0..17 (the pad is at the bottom).
    let rows = |op: usize| dag.tensors[dag.ops[op].output].hw.map(|[h, _]| h);
    assert_eq!(top.op_extent[2][0], 16, "{:?}", rows(2));
    assert_eq!(top.op_extent[1][0], 8);
    assert_eq!(top.op_extent[0][0], 17);
    let input = &dag.tensors[dag.ops[0].inputs[0]];
    assert!(
        (top.in_bytes - input.bytes * 17.0 / 32.0).abs() < 1e-6,
        "{} of {}",
        top.in_bytes,
        input.bytes
    );
}

/// The planner's receptive fields of explicit pads, crops and transposed
/// convs are the engine's: for each tile of row strips and column strips,
/// the input rows and columns the planner charges are those the engine
/// cuts (a crop was charged `offset` more of each).
#[test]
fn pad_crop_and_transposed_conv_read_what_the_engine_reads() {
    let (mut g, u) = pad_down_up(4, [1, 2, 1, 0], 3, [1; 4], 1);
    let [uh, uw] = [g.shape(u)[2], g.shape(u)[3]];
    let crop = Op::Crop { offset: [3, 2] };
    let c = g
        .add_node_with_shape("crop", crop, vec![u], "c", vec![1, 4, uh - 5, uw - 4])
        .expect("crop");
    g.outputs.push(c);
    let ops: Vec<usize> = (0..4).collect();
    let block = tile_engine::tiling::Block::new(&g, ops.clone()).expect("one block");
    let dag = planner::ModelDag::from_graph(&g).expect("dag");
    let input = &dag.tensors[dag.ops[0].inputs[0]];
    let [h, w] = block.output_hw(&g);
    for grid in [
        tile_engine::tiling::Grid::uniform(3, 1),
        tile_engine::tiling::Grid::uniform(1, 3),
    ] {
        let tiles = tile_engine::tiling::plan_tiles(&g, &block, &grid).expect("tiles");
        for t in &tiles {
            let o = t.out_region;
            let work = planner::HaloModel::tile_work(
                &planner::ReceptiveField,
                &dag,
                &ops,
                planner::halo::Region {
                    top: o.rows.start as f64 / h as f64,
                    bottom: o.rows.end as f64 / h as f64,
                    left: o.cols.start as f64 / w as f64,
                    right: o.cols.end as f64 / w as f64,
                },
            );
            let r = t.in_regions[0];
            let want = input.bytes * (r.rows.len() * r.cols.len()) as f64 / (32.0 * 32.0);
            assert!(
                (work.in_bytes - want).abs() < 1e-6,
                "{grid} tile {o:?}: planner {} B, engine {want} B ({r:?})",
                work.in_bytes
            );
        }
    }
}

/// Two 3×3 convolutions of 64 channels on a 128² map: heavy enough that
/// splitting them over two equal nodes pays for a 100 Mbit/s upload.
fn heavy_cnn() -> Graph {
    let mut g = Graph::default();
    let mut h = g.add_value("input", vec![1, 3, 128, 128]);
    g.inputs.push(h);
    for (i, cin) in [3, 64, 64].into_iter().enumerate() {
        h = g
            .add_node(
                format!("conv{i}"),
                conv3x3(cin, 64),
                vec![h],
                format!("c{i}"),
            )
            .expect("conv");
    }
    g.outputs.push(h);
    g
}

#[test]
fn with_one_edge_node_as_fast_as_the_device_the_two_share_the_tiles() {
    // A device and one edge node of equal speed: the edge tier alone is no
    // faster than the device, but the device helps with its tiles, so
    // sending the input up to share the work beats the device-only plan.
    let cluster: Cluster = toml::from_str(
        "[[nodes]]\nname = \"d\"\ntier = \"device\"\naddress = \"x\"\ngflops = 10.0\n\
         [[nodes]]\nname = \"e\"\ntier = \"edge\"\naddress = \"x\"\ngflops = 10.0\n\
         [[nodes]]\nname = \"c\"\ntier = \"cloud\"\naddress = \"x\"\ngflops = 10.0\n\
         [[links]]\nfrom = \"d\"\nto = \"e\"\nbandwidth_mbps = 100.0\ndelay_ms = 5.0\n\
         [[links]]\nfrom = \"e\"\nto = \"c\"\nbandwidth_mbps = 50.0\ndelay_ms = 30.0\n",
    )
    .expect("cluster");
    let est = Estimates::from_cluster(&cluster);
    let report = plan(&heavy_cnn(), &cluster, &est).expect("plans");
    let device_only = report.alternative("device-only").expect("device-only");
    let best = &report.best.prediction;
    assert!(
        best.makespan_s < 0.85 * device_only.makespan_s(),
        "best {} s vs device-only {} s",
        best.makespan_s,
        device_only.makespan_s()
    );
    let tiled = best
        .blocks
        .iter()
        .filter_map(|b| b.tiling.as_ref())
        .any(|t| t.nodes.contains(&0) && t.nodes.contains(&1));
    assert!(tiled, "tiles over the device and the edge node: {best:?}");
    assert!(!report.best.on_one_node() && device_only.on_one_node());
    // Asked for a 50 % predicted gain before spreading a plan over several
    // nodes, the planner keeps the fastest one-node plan instead (the edge
    // node's: the device-only plan also sends its 4 MiB output up).
    let dag = planner::ModelDag::from_graph(&heavy_cnn()).expect("dag");
    let opts = planner::cost::PlanOptions {
        single_node_margin: 0.5,
        ..Default::default()
    };
    let cautious =
        planner::plan_dag(&dag, &cluster, &est, &planner::ReceptiveField, opts).expect("plans");
    assert!(
        cautious.best.on_one_node(),
        "{:?}",
        cautious.best.prediction.labels
    );
    assert!(cautious.best.makespan_s() <= device_only.makespan_s());
}

#[test]
fn a_tile_narrower_than_its_maps_pays_for_the_crops_the_engine_inserts() {
    use tile_engine::tiling::{Block, Grid, plan_tiles};
    let mut g = tile_engine::default_model::graph([32, 32]).expect("default model");
    tile_engine::passes::optimize(&mut g).expect("passes");
    let dag = planner::ModelDag::from_graph(&g).expect("dag");
    let ops: Vec<usize> = (0..dag.ops.len()).collect();
    let block = Block::new(&g, ops.clone()).expect("block");
    let [h, w] = block.output_hw(&g);
    // Elements the engine's crops copy with rows narrower than their source
    // (the residual branches of the dense blocks), per tile, and those of
    // them that crop SR's input: up-sampling computes whole pixel pairs, so
    // it makes a column more than SR reads, which the halo model (exact
    // spans, no pairs) does not see.
    let engine_copies = |grid: &str| -> Vec<(planner::halo::Region, f64, f64)> {
        let tiles = plan_tiles(&g, &block, &Grid::parse(grid).expect("grid")).expect("tiles");
        tiles
            .iter()
            .map(|t| {
                let all = tile_engine::tiling::row_copy_elements(&t.graph);
                let pairs: usize = t
                    .graph
                    .nodes
                    .iter()
                    .filter(|n| n.name.starts_with("SR/") && matches!(n.op, Op::Crop { .. }))
                    .filter(|n| t.graph.shape(n.inputs[0])[3] != t.graph.shape(n.output)[3])
                    .map(|n| t.graph.shape(n.output).iter().product::<usize>())
                    .sum();
                let r = t.out_region;
                let region = planner::halo::Region {
                    top: r.rows.start as f64 / h as f64,
                    bottom: r.rows.end as f64 / h as f64,
                    left: r.cols.start as f64 / w as f64,
                    right: r.cols.end as f64 / w as f64,
                };
                (region, all as f64 - pairs as f64, pairs as f64)
            })
            .collect()
    };
    let model = |region| {
        planner::HaloModel::tile_work(&planner::ReceptiveField, &dag, &ops, region).copy_elements
    };
    // Row strips crop whole rows (a memcpy per channel): nothing counted.
    for (region, engine, pairs) in engine_copies("4x1") {
        assert_eq!(engine + pairs, 0.0);
        assert_eq!(model(region), 0.0);
    }
    // A 2-D grid's tiles copy their residual branches row by row.
    for (region, engine, pairs) in engine_copies("2x2") {
        assert!(engine > 0.0);
        // The pixel-pair crop is small beside the branches' (one column).
        assert!(pairs < 0.2 * engine, "{pairs} vs {engine}");
        let predicted = model(region);
        assert!(
            (predicted - engine).abs() <= 0.02 * engine,
            "{region:?}: model {predicted} vs engine {engine} elements"
        );
    }
}

#[test]
fn the_planner_tiles_what_the_engine_tiles() {
    use tile_engine::ir::{BinaryKind, ReduceKind};
    // A conv, CBAM spatial attention, then softmaxes across channels: every
    // op maps a pixel to the same pixel, so the engine fuses them all and
    // the planner must cost them as one tileable run, not cut it.
    let mut g = Graph::default();
    let x = g.add_value("input", vec![1, 8, 32, 32]);
    g.inputs.push(x);
    let c = g
        .add_node("conv", conv3x3(8, 8), vec![x], "c")
        .expect("conv");
    let mean = g
        .add_node("mean", Op::ChannelReduce(ReduceKind::Mean), vec![c], "m")
        .expect("mean");
    let max = g
        .add_node("max", Op::ChannelReduce(ReduceKind::Max), vec![c], "mx")
        .expect("max");
    let cat = g
        .add_node("cat", Op::Concat { axis: 1 }, vec![mean, max], "cat")
        .expect("cat");
    let att = g
        .add_node("att", conv3x3(2, 1), vec![cat], "att")
        .expect("att");
    let mul = Op::Binary {
        kind: BinaryKind::Mul,
        activation: Activation::Identity,
    };
    let y = g.add_node("mul", mul, vec![c, att], "y").expect("mul");
    let s = g
        .add_node("sm", Op::Softmax { axis: 1 }, vec![y], "s")
        .expect("softmax");
    let l = g
        .add_node("lsm", Op::LogSoftmax { axis: 1 }, vec![s], "l")
        .expect("log softmax");
    g.outputs.push(l);
    let dag = planner::ModelDag::from_graph(&g).expect("dag");
    for (i, op) in dag.ops.iter().enumerate() {
        assert!(tile_engine::tiling::is_tileable(&g, i), "{}", op.name);
        assert!(op.tileable(), "the planner cuts at {}", op.name);
    }
}

/// A pooled branch broadcast back over the map (DeepLab's head: global
/// pool, a 1×1 conv on the 1×1 map, added to every pixel) is cut out of the
/// planner's blocks, as the engine will not tile a block that makes the
/// map it broadcasts: every block the planner tiles, the engine tiles.
#[test]
fn a_broadcast_branch_is_not_planned_into_a_tiled_block() {
    use tile_engine::ir::BinaryKind;
    let mut g = Graph::default();
    let x = g.add_value("input", vec![1, 8, 64, 64]);
    g.inputs.push(x);
    let c = g
        .add_node("conv", conv3x3(8, 8), vec![x], "c")
        .expect("conv");
    let p = g
        .add_node("gap", Op::GlobalPool(PoolKind::Max), vec![c], "p")
        .expect("pool");
    let q = g
        .add_node("proj", conv3x3(8, 8), vec![p], "q")
        .expect("1x1 conv");
    let add = Op::Binary {
        kind: BinaryKind::Add,
        activation: Activation::Identity,
    };
    let y = g.add_node("add", add, vec![c, q], "y").expect("add");
    let z = g
        .add_node("conv2", conv3x3(8, 8), vec![y], "z")
        .expect("conv2");
    g.outputs.push(z);
    let dag = planner::ModelDag::from_graph(&g).expect("dag");
    assert!(!dag.ops[2].tileable(), "the 1x1 map's conv is cut out");
    let cluster = example();
    let est = Estimates::from_cluster(&cluster);
    let report = plan(&g, &cluster, &est).expect("plan");
    let mut tiled = 0;
    for b in report
        .alternatives
        .iter()
        .flat_map(|a| &a.prediction.blocks)
    {
        if b.tiling.is_some() {
            tiled += 1;
            let block = tile_engine::tiling::Block::new(&g, b.ops.clone());
            assert!(block.is_ok(), "{:?}: {:?}", b.ops, block.err());
        }
    }
    assert!(tiled > 0, "something is tiled");
}

#[test]
fn a_strategy_with_more_workers_never_plans_slower() {
    // A fully convolutional net on a 224×224 image (a new user's FCN): the
    // device's input is local but its strip's output crosses its slow link.
    // Three-tier may use every worker edge-only has, and the device too, so
    // its best plan costs no more than edge-only's.
    let mut g = Graph::default();
    let mut h = g.add_value("input", vec![1, 3, 224, 224]);
    g.inputs.push(h);
    for (i, (cin, cout)) in [(3, 16), (16, 16), (16, 16), (16, 2)]
        .into_iter()
        .enumerate()
    {
        h = g
            .add_node(
                format!("conv{i}"),
                conv3x3(cin, cout),
                vec![h],
                format!("c{i}"),
            )
            .expect("conv");
    }
    g.outputs.push(h);
    let cluster = example();
    let report = plan(&g, &cluster, &Estimates::from_cluster(&cluster)).expect("plans");
    let cost = |name: &str| {
        let p = report.alternative(name).expect("strategy present");
        p.prediction.makespan_s
    };
    let three = cost("three-tier");
    for fewer in ["edge-only", "device+edge", "edge+cloud"] {
        assert!(
            three <= cost(fewer) + 1e-12,
            "three-tier {three} > {fewer} {}",
            cost(fewer)
        );
    }
}

/// A crawling device link and a slow backbone: the whole model on one edge
/// node is the plan to beat, and a second edge node (whose tiles gain too
/// little to pay the margin) must not turn the choice into the slower
/// cloud-only plan, which it did when no one-node plan kept to one edge.
#[test]
fn a_second_edge_node_never_makes_the_chosen_plan_slower_than_one_edge_alone() {
    let node = |name: &str, tier: &str, gflops: f64| {
        format!(
            "[[nodes]]\nname = \"{name}\"\ntier = \"{tier}\"\naddress = \"127.0.0.1:{}\"\ngflops = {gflops}\n",
            7100 + name.len()
        )
    };
    let link = |from: &str, to: &str, mbps: f64, ms: f64| {
        format!(
            "[[links]]\nfrom = \"{from}\"\nto = \"{to}\"\nbandwidth_mbps = {mbps}\ndelay_ms = {ms}\n"
        )
    };
    let cluster = |edges: &[&str]| -> Cluster {
        let mut t = node("phone", "device", 5.0) + &node("cloudy", "cloud", 400.0);
        for (i, e) in edges.iter().enumerate() {
            t += &format!(
                "[[nodes]]\nname = \"{e}\"\ntier = \"edge\"\naddress = \"127.0.0.1:{}\"\ngflops = 40.0\n",
                7201 + i
            );
            t += &link("phone", e, 0.1, 200.0);
            t += &link(e, "cloudy", 10.0, 30.0);
            for other in &edges[..i] {
                t += &link(other, e, 1000.0, 1.0);
            }
        }
        let c: Cluster = toml::from_str(&t).expect("parses");
        c.validate().expect("valid");
        c
    };
    let graph = tile_engine::default_model::graph([128, 128]).expect("default model");
    let plan_on = |edges: &[&str]| {
        let c = cluster(edges);
        plan(&graph, &c, &Estimates::from_cluster(&c)).expect("plans")
    };
    let one = plan_on(&["e0"]);
    assert!(one.best.on_one_node(), "{}", one.table());
    assert!(one.best.prediction.labels.iter().all(|&t| t == Tier::Edge));
    for edges in [&["e0", "e1"][..], &["e0", "e1", "e2", "e3"]] {
        let many = plan_on(edges);
        let alone = many.one_edge.as_ref().expect("a one-edge plan");
        assert!(
            (alone.makespan_s() - one.best.makespan_s()).abs() < 1e-9,
            "{} vs {}",
            alone.makespan_s(),
            one.best.makespan_s()
        );
        assert!(
            many.best.makespan_s() <= one.best.makespan_s() * (1.0 + 1e-9),
            "{} edges chose {} at {:.1} ms, one edge alone {:.1} ms:\n{}",
            edges.len(),
            many.best.strategy,
            many.best.makespan_s() * 1e3,
            one.best.makespan_s() * 1e3,
            many.table()
        );
        assert!(
            many.table().contains(planner::plan::ONE_EDGE),
            "{}",
            many.table()
        );
    }
}

/// With several edge nodes, a report that does not cost the whole model on
/// the coordinator edge says so and why (it was left out silently when its
/// compute alone could not win).
#[test]
fn the_one_edge_node_plan_is_shown_or_said_to_be_left_out() {
    let cluster = example();
    let est = Estimates::from_cluster(&cluster);
    let report = plan(&heavy_cnn(), &cluster, &est).expect("plans");
    let text = report.table();
    // Four edge nodes share this model's tiles: one alone cannot win.
    let floor = report.one_edge_floor_s.expect("not costed");
    assert!(report.one_edge.is_none());
    assert!(
        text.contains(&format!(
            "one edge node not costed: its compute alone ({:.3} ms)",
            floor * 1e3
        )),
        "{text}"
    );
    assert!(floor >= report.best.makespan_s(), "{floor}");
}
