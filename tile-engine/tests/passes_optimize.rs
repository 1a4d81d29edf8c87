//! Each pass rewrites what it should (asserted on the op list) and the
//! optimized graph computes what the original did (CPU executor, random
//! inputs, within 1e-5 relative: folding changes rounding).

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tile_engine::cpu;
use tile_engine::ir::{Activation, BinaryKind, Conv, ConvTranspose, Pool, PoolKind, ValueId};
use tile_engine::passes;
use tile_engine::{Error, Graph, Op, Tensor};

type R = Result<(), Error>;

fn random(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
    )
    .expect("shape matches data")
}

fn random_vec(n: usize, rng: &mut StdRng) -> Arc<Vec<f32>> {
    Arc::new((0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect())
}

fn conv(cin: usize, cout: usize, k: usize, rng: &mut StdRng) -> Op {
    Op::Conv(Conv {
        weight: Arc::new(random(&[cout, cin, k, k], rng)),
        bias: Some(random_vec(cout, rng)),
        strides: [1, 1],
        pads: [k / 2; 4],
        dilations: [1, 1],
        group: 1,
        activation: Activation::Identity,
    })
}

fn binary(kind: BinaryKind) -> Op {
    Op::Binary {
        kind,
        activation: Activation::Identity,
    }
}

/// Runs `g` before and after `pass` on the same random inputs; returns the optimized graph.
fn check_equivalent(g: &Graph, pass: impl Fn(&mut Graph) -> R, seed: u64) -> Result<Graph, Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs: Vec<Tensor> = g
        .inputs
        .iter()
        .map(|&v| random(g.shape(v), &mut rng))
        .collect();
    let before = cpu::run(g, &inputs)?;
    let mut opt = g.clone();
    pass(&mut opt)?;
    opt.validate()?;
    let after = cpu::run(&opt, &inputs)?;
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.shape(), a.shape());
        for (x, y) in b.data().iter().zip(a.data()) {
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
    // Graph outputs keep their names.
    let names = |g: &Graph| -> Vec<String> {
        g.outputs
            .iter()
            .map(|&o| g.values[o].name.clone())
            .collect()
    };
    assert_eq!(names(g), names(&opt));
    Ok(opt)
}

fn op_names(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

fn input(g: &mut Graph, shape: &[usize]) -> ValueId {
    let x = g.add_value(format!("x{}", g.inputs.len()), shape.to_vec());
    g.inputs.push(x);
    x
}

#[test]
fn channel_affine_folds_into_conv_conv_transpose_and_dense() -> R {
    let mut rng = StdRng::seed_from_u64(1);
    let mut g = Graph::default();
    let x = input(&mut g, &[1, 3, 6, 5]);
    let c = g.add_node("c", conv(3, 4, 3, &mut rng), vec![x], "c")?;
    let bn = Op::ChannelAffine {
        scale: random_vec(4, &mut rng),
        shift: random_vec(4, &mut rng),
    };
    let a = g.add_node("bn", bn, vec![c], "a")?;
    let ct = Op::ConvTranspose(ConvTranspose {
        weight: Arc::new(random(&[4, 3, 2, 2], &mut rng)),
        bias: None,
        strides: [2, 2],
        pads: [0; 4],
        dilations: [1, 1],
        output_padding: [0, 0],
        group: 2,
        activation: Activation::Identity,
    });
    let t = g.add_node("ct", ct, vec![a], "t")?;
    let bn2 = Op::ChannelAffine {
        scale: random_vec(6, &mut rng),
        shift: random_vec(6, &mut rng),
    };
    let t2 = g.add_node("bn2", bn2, vec![t], "t2")?;
    let p = g.add_node(
        "gp",
        Op::GlobalPool(PoolKind::Average {
            count_include_pad: false,
        }),
        vec![t2],
        "p",
    )?;
    let f = g.add_node_with_shape("flat", Op::Reshape, vec![p], "f", vec![1, 6])?;
    let d = Op::Dense {
        weight: Arc::new(random(&[6, 2], &mut rng)),
        bias: None,
        activation: Activation::Identity,
    };
    let y = g.add_node("fc", d, vec![f], "fc")?;
    let bn3 = Op::ChannelAffine {
        scale: random_vec(2, &mut rng),
        shift: random_vec(2, &mut rng),
    };
    let out = g.add_node("bn3", bn3, vec![y], "out")?;
    g.outputs.push(out);
    let opt = check_equivalent(&g, passes::fold_channel_affine, 10)?;
    assert_eq!(
        op_names(&opt),
        ["conv", "convtranspose", "globalpool", "reshape", "dense"]
    );
    Ok(())
}

#[test]
fn channel_affine_not_folded_when_conv_output_is_shared_or_activated() -> R {
    let mut rng = StdRng::seed_from_u64(2);
    let mut g = Graph::default();
    let x = input(&mut g, &[1, 2, 4, 4]);
    let c = g.add_node("c", conv(2, 2, 1, &mut rng), vec![x], "c")?;
    let bn = Op::ChannelAffine {
        scale: random_vec(2, &mut rng),
        shift: random_vec(2, &mut rng),
    };
    let a = g.add_node("bn", bn.clone(), vec![c], "a")?;
    let s = g.add_node("sum", binary(BinaryKind::Add), vec![a, c], "s")?;
    let mut relu_conv = conv(2, 2, 1, &mut rng);
    if let Op::Conv(cv) = &mut relu_conv {
        cv.activation = Activation::Relu;
    }
    let c2 = g.add_node("c2", relu_conv, vec![s], "c2")?;
    let out = g.add_node("bn2", bn, vec![c2], "out")?;
    g.outputs.push(out);
    let opt = check_equivalent(&g, passes::fold_channel_affine, 11)?;
    assert_eq!(
        op_names(&opt),
        ["conv", "channelaffine", "binary", "conv", "channelaffine"]
    );
    Ok(())
}

#[test]
fn per_channel_binary_constants_fold_into_conv() -> R {
    let mut rng = StdRng::seed_from_u64(3);
    let mut g = Graph::default();
    let x = input(&mut g, &[1, 2, 5, 5]);
    let c = g.add_node("c", conv(2, 3, 3, &mut rng), vec![x], "c")?;
    // The Unsqueeze/Mul/Add chain: scale [1, C, 1, 1], shift [C, 1, 1], then constant - conv, then / scalar.
    let scale = g.add_constant("scale", random(&[1, 3, 1, 1], &mut rng));
    let m = g.add_node("mul", binary(BinaryKind::Mul), vec![scale, c], "m")?;
    let shift = g.add_constant("shift", random(&[3, 1, 1], &mut rng));
    let a = g.add_node("add", binary(BinaryKind::Add), vec![m, shift], "a")?;
    let k = g.add_constant("k", random(&[3, 1, 1], &mut rng));
    let s = g.add_node("rsub", binary(BinaryKind::Sub), vec![k, a], "s")?;
    let two = g.add_constant("two", Tensor::scalar(2.0));
    let d = g.add_node(
        "div",
        Op::Binary {
            kind: BinaryKind::Div,
            activation: Activation::Relu,
        },
        vec![s, two],
        "d",
    )?;
    g.outputs.push(d);
    let opt = check_equivalent(&g, passes::fold_per_channel_binary, 12)?;
    assert_eq!(op_names(&opt), ["conv"]);
    assert!(matches!(&opt.nodes[0].op, Op::Conv(c) if c.activation == Activation::Relu));
    Ok(())
}

#[test]
fn non_per_channel_constants_stay() -> R {
    let mut rng = StdRng::seed_from_u64(4);
    let mut g = Graph::default();
    let x = input(&mut g, &[1, 3, 3, 3]);
    let c = g.add_node("c", conv(3, 3, 1, &mut rng), vec![x], "c")?;
    // [3] broadcasts along W, not channels; [1, 1, 3, 1] varies along H.
    let w_vec = g.add_constant("wv", random(&[3], &mut rng));
    let m = g.add_node("mul", binary(BinaryKind::Mul), vec![c, w_vec], "m")?;
    let c2 = g.add_node("c2", conv(3, 3, 1, &mut rng), vec![m], "c2")?;
    let h_vec = g.add_constant("hv", random(&[1, 1, 3, 1], &mut rng));
    let out = g.add_node("add", binary(BinaryKind::Add), vec![c2, h_vec], "out")?;
    g.outputs.push(out);
    let opt = check_equivalent(&g, passes::fold_per_channel_binary, 13)?;
    assert_eq!(op_names(&opt), ["conv", "binary", "conv", "binary"]);
    Ok(())
}

#[test]
fn identities_are_removed_but_outputs_keep_their_names() -> R {
    let mut g = Graph::default();
    let x = input(&mut g, &[1, 2, 3, 3]);
    let a = g.add_node("id", Op::Activation(Activation::Identity), vec![x], "a")?;
    let r = g.add_node_with_shape("same", Op::Reshape, vec![a], "r", vec![1, 2, 3, 3])?;
    let p = Op::Pool(Pool {
        kind: PoolKind::Max,
        kernel: [2, 2],
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        ceil_mode: false,
    });
    let m = g.add_node("pool", p, vec![r], "m")?;
    let out = g.add_node_with_shape("same2", Op::Reshape, vec![m], "out", vec![1, 2, 2, 2])?;
    // A real reshape stays.
    let flat = g.add_node_with_shape("flat", Op::Reshape, vec![x], "flat", vec![1, 18])?;
    g.outputs = vec![out, flat];
    let opt = check_equivalent(&g, passes::remove_identities, 14)?;
    assert_eq!(op_names(&opt), ["maxpool", "reshape"]);
    Ok(())
}

#[test]
fn activations_fuse_into_single_consumer_producers() -> R {
    let mut rng = StdRng::seed_from_u64(5);
    let mut g = Graph::default();
    let x = input(&mut g, &[1, 2, 4, 4]);
    let c = g.add_node("c", conv(2, 2, 3, &mut rng), vec![x], "c")?;
    let r = g.add_node("relu", Op::Activation(Activation::Relu), vec![c], "r")?;
    // A second activation cannot fuse: the conv already has one.
    let s = g.add_node("sig", Op::Activation(Activation::Sigmoid), vec![r], "s")?;
    let b = g.add_node("add", binary(BinaryKind::Add), vec![s, x], "b")?;
    let slope = Activation::PRelu {
        slope: Arc::new(vec![0.1, 0.2]),
    };
    let p = g.add_node("prelu", Op::Activation(slope), vec![b], "p")?;
    // Shared producer output: no fusion.
    let c2 = g.add_node("c2", conv(2, 2, 1, &mut rng), vec![p], "c2")?;
    let t = g.add_node("tanh", Op::Activation(Activation::Tanh), vec![c2], "t")?;
    let out = g.add_node("add2", binary(BinaryKind::Add), vec![t, c2], "out")?;
    g.outputs.push(out);
    let opt = check_equivalent(&g, passes::fuse_activations, 15)?;
    assert_eq!(
        op_names(&opt),
        [
            "conv",
            "activation",
            "binary",
            "conv",
            "activation",
            "binary"
        ]
    );
    assert!(matches!(&opt.nodes[0].op, Op::Conv(c) if c.activation == Activation::Relu));
    assert!(matches!(
        &opt.nodes[2].op,
        Op::Binary {
            activation: Activation::PRelu { .. },
            ..
        }
    ));
    Ok(())
}

#[test]
fn residual_add_fuses_and_respects_order() -> R {
    let mut rng = StdRng::seed_from_u64(6);
    let mut g = Graph::default();
    let x = input(&mut g, &[1, 2, 5, 5]);
    // Block 1: residual (x) exists before the conv.
    let c1 = g.add_node("c1", conv(2, 2, 3, &mut rng), vec![x], "c1")?;
    let a1 = Op::Binary {
        kind: BinaryKind::Add,
        activation: Activation::Relu,
    };
    let s1 = g.add_node("add1", a1, vec![x, c1], "s1")?;
    // Block 2: the conv comes first, the residual branch is computed after it.
    let c2 = g.add_node("c2", conv(2, 2, 3, &mut rng), vec![s1], "c2")?;
    let branch = g.add_node("branch", conv(2, 2, 1, &mut rng), vec![s1], "branch")?;
    let s2 = g.add_node("add2", binary(BinaryKind::Add), vec![c2, branch], "s2")?;
    // Block 3: conv with an activation already: act(conv) + r must stay unfused.
    let mut c3op = conv(2, 2, 1, &mut rng);
    if let Op::Conv(c) = &mut c3op {
        c.activation = Activation::Relu;
    }
    let c3 = g.add_node("c3", c3op, vec![s2], "c3")?;
    let out = g.add_node("add3", binary(BinaryKind::Add), vec![c3, s2], "out")?;
    g.outputs.push(out);
    let opt = check_equivalent(&g, passes::fuse_residual_add, 16)?;
    assert_eq!(op_names(&opt), ["conv", "conv", "conv", "conv", "binary"]);
    assert_eq!(opt.nodes[0].inputs.len(), 2);
    assert!(matches!(&opt.nodes[0].op, Op::Conv(c) if c.activation == Activation::Relu));
    // The fused c2 moved after its residual's producer.
    assert_eq!(opt.nodes[1].name, "branch");
    assert_eq!(opt.nodes[2].name, "c2");
    assert_eq!(opt.nodes[2].inputs.len(), 2);
    Ok(())
}

#[test]
fn optimize_runs_every_pass_on_a_resnet_block() -> R {
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = Graph::default();
    let x = input(&mut g, &[1, 4, 8, 8]);
    let c1 = g.add_node("c1", conv(4, 4, 3, &mut rng), vec![x], "c1")?;
    let bn1 = Op::ChannelAffine {
        scale: random_vec(4, &mut rng),
        shift: random_vec(4, &mut rng),
    };
    let b1 = g.add_node("bn1", bn1, vec![c1], "b1")?;
    let r1 = g.add_node("relu1", Op::Activation(Activation::Relu), vec![b1], "r1")?;
    let c2 = g.add_node("c2", conv(4, 4, 3, &mut rng), vec![r1], "c2")?;
    let scale = g.add_constant("scale", random(&[1, 4, 1, 1], &mut rng));
    let m = g.add_node("mul", binary(BinaryKind::Mul), vec![c2, scale], "m")?;
    let shift = g.add_constant("shift", random(&[4, 1, 1], &mut rng));
    let a = g.add_node("add", binary(BinaryKind::Add), vec![m, shift], "a")?;
    let id = g.add_node(
        "dropout",
        Op::Activation(Activation::Identity),
        vec![a],
        "id",
    )?;
    let s = g.add_node("res", binary(BinaryKind::Add), vec![id, x], "s")?;
    let out = g.add_node("relu2", Op::Activation(Activation::Relu), vec![s], "out")?;
    g.outputs.push(out);
    let opt = check_equivalent(&g, passes::optimize, 17)?;
    assert_eq!(op_names(&opt), ["conv", "conv"]);
    assert_eq!(opt.nodes[1].inputs.len(), 2);
    assert!(opt.constants.is_empty(), "folded constants are pruned");
    Ok(())
}
