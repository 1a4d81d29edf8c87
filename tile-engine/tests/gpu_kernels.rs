//! Every GPU kernel against the CPU reference executor on small
//! proptest-generated problems (odd sizes, strides, dilations, groups,
//! padding, 1-pixel maps), plus a whole small model and the per-layer
//! determinism that tiling relies on.
//!
//! Needs a GPU adapter (lavapipe in CI: `WGPU_BACKEND=vulkan`). Without one
//! the tests fail with the adapter error; they never skip.

mod accuracy_common;

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tile_engine::Executor;
use tile_engine::gpu::{ConvChoice, ConvVariant, GpuExecutor, GpuOptions};
use tile_engine::ir::{
    Activation, BinaryKind, BorderMode, Conv, ConvTranspose, CoordTransform, DepthToSpaceMode,
    Graph, NearestMode, Op, Pool, PoolKind, ReduceKind, ResizeMode,
};
use tile_engine::{Tensor, cpu};

fn gpu() -> &'static GpuExecutor {
    static EXEC: OnceLock<Result<GpuExecutor, String>> = OnceLock::new();
    match EXEC.get_or_init(|| {
        GpuExecutor::new(GpuOptions {
            no_autotune: true,
            ..GpuOptions::default()
        })
        .map_err(|e| e.to_string())
    }) {
        Ok(e) => e,
        Err(e) => panic!("GPU tests need an adapter (e.g. lavapipe with WGPU_BACKEND=vulkan): {e}"),
    }
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let data = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::new(shape.to_vec(), data).expect("shape matches data")
}

fn assert_close(gpu: &Tensor, cpu: &Tensor, what: &str) {
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shape");
    for (i, (g, c)) in gpu.data().iter().zip(cpu.data()).enumerate() {
        let ok = (g - c).abs() <= 1e-4 * (c.abs() + 1.0) || (g.is_nan() && c.is_nan()) || g == c;
        assert!(ok, "{what}: element {i}: gpu {g} vs cpu {c}");
    }
}

/// A graph with one input of `shape` and one node.
fn single(op: Op, shape: &[usize], out_shape: Option<Vec<usize>>) -> Graph {
    let mut g = Graph::default();
    let x = g.add_value("x", shape.to_vec());
    g.inputs.push(x);
    let y = match out_shape {
        Some(s) => g.add_node_with_shape("node", op, vec![x], "y", s),
        None => g.add_node("node", op, vec![x], "y"),
    }
    .expect("valid test graph");
    g.outputs.push(y);
    g
}

fn check(g: &Graph, inputs: &[Tensor], conv: Option<ConvChoice>, what: &str) {
    let want = cpu::run(g, inputs).expect("cpu reference");
    let got = gpu().run_with(g, inputs, conv).expect("gpu run");
    for (a, b) in got.iter().zip(&want) {
        assert_close(a, b, what);
    }
}

fn activation(k: u8, channels: usize) -> Activation {
    match k % 22 {
        0 => Activation::Identity,
        1 => Activation::Relu,
        2 => Activation::LeakyRelu { alpha: 0.1 },
        3 => Activation::PRelu {
            slope: Arc::new((0..channels).map(|c| 0.05 * c as f32 - 0.2).collect()),
        },
        4 => Activation::Sigmoid,
        5 => Activation::Tanh,
        6 => Activation::Clip {
            min: -0.5,
            max: 0.7,
        },
        7 => Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        8 => Activation::HardSwish,
        9 => Activation::Elu { alpha: 0.7 },
        10 => Activation::Selu {
            alpha: 1.673_263_2,
            gamma: 1.050_701,
        },
        11 => Activation::Softplus,
        12 => Activation::Erf,
        13 => Activation::Gelu { tanh: false },
        14 => Activation::Gelu { tanh: true },
        15 => Activation::Mish,
        16 => Activation::Abs,
        17 => Activation::Neg,
        18 => Activation::Exp,
        // Log, Sqrt and Reciprocal give NaN or inf on some random inputs,
        // which the comparison accepts when both executors agree.
        19 => Activation::Log,
        20 => Activation::Sqrt,
        _ => Activation::Reciprocal,
    }
}

#[derive(Debug, Clone)]
struct ConvProblem {
    n: usize,
    group: usize,
    cg: usize,
    mg: usize,
    hw: [usize; 2],
    k: [usize; 2],
    stride: [usize; 2],
    dil: [usize; 2],
    pads: [usize; 4],
    bias: bool,
    residual: bool,
    act: u8,
    seed: u64,
}

fn conv_problem() -> impl Strategy<Value = ConvProblem> {
    (
        (
            1usize..=2,
            prop_oneof![Just(1usize), Just(2), Just(3)],
            1usize..=5,
            prop_oneof![Just(1usize), Just(3), Just(4), Just(8)],
        ),
        (
            [1usize..=9, 1usize..=9],
            [1usize..=3, 1usize..=3],
            [1usize..=2, 1usize..=2],
            [1usize..=2, 1usize..=2],
        ),
        (
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
            any::<bool>(),
            any::<bool>(),
            0u8..22,
            any::<u64>(),
        ),
    )
        .prop_map(
            |((n, group, cg, mg), (hw, k, stride, dil), (pads, bias, residual, act, seed))| {
                ConvProblem {
                    n,
                    group,
                    cg,
                    mg,
                    hw,
                    k,
                    stride,
                    dil,
                    pads,
                    bias,
                    residual,
                    act,
                    seed,
                }
            },
        )
        .prop_filter("window fits the padded input", |p| {
            (0..2).all(|a| p.hw[a] + p.pads[a] + p.pads[a + 2] > p.dil[a] * (p.k[a] - 1))
        })
}

fn conv_graph(p: &ConvProblem) -> (Graph, Vec<Tensor>) {
    let (c, m) = (p.cg * p.group, p.mg * p.group);
    let weight = Arc::new(random(&[m, p.cg, p.k[0], p.k[1]], p.seed ^ 1));
    let conv = Conv {
        weight,
        bias: p
            .bias
            .then(|| Arc::new((0..m).map(|i| 0.1 * i as f32 - 0.3).collect())),
        strides: p.stride,
        pads: p.pads,
        dilations: p.dil,
        group: p.group,
        activation: activation(p.act, m),
    };
    let mut g = Graph::default();
    let xs = [p.n, c, p.hw[0], p.hw[1]];
    let x = g.add_value("x", xs.to_vec());
    g.inputs.push(x);
    let mut inputs = vec![random(&xs, p.seed)];
    let y = if p.residual {
        // Shape of the residual = the conv's output shape.
        let probe = single(Op::Conv(conv.clone()), &xs, None);
        let os = probe.shape(probe.outputs[0]).to_vec();
        let r = g.add_value("r", os.clone());
        g.inputs.push(r);
        inputs.push(random(&os, p.seed ^ 2));
        g.add_node("conv", Op::Conv(conv), vec![x, r], "y")
    } else {
        g.add_node("conv", Op::Conv(conv), vec![x], "y")
    }
    .expect("valid conv");
    g.outputs.push(y);
    (g, inputs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn conv_kernels_match_cpu(p in conv_problem()) {
        let (g, inputs) = conv_graph(&p);
        let Op::Conv(c) = &g.nodes[0].op else { unreachable!() };
        for variant in [ConvVariant::Naive, ConvVariant::Block, ConvVariant::Block8, ConvVariant::Block8Texture, ConvVariant::Grouped] {
            let choice = ConvChoice { variant, wg: 32 };
            if choice.applies(c) {
                check(&g, &inputs, Some(choice), &format!("{variant:?} {p:?}"));
            }
        }
    }

    #[test]
    fn conv_transpose_matches_cpu(
        n in 1usize..=2, group in 1usize..=2, cg in 1usize..=3, mg in 1usize..=3,
        hw in [1usize..=5, 1usize..=5], k in [1usize..=3, 1usize..=3], stride in [1usize..=3, 1usize..=3],
        dil in [1usize..=2, 1usize..=2], pad in 0usize..=1, opad in 0usize..=1, bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let opad = [opad.min(stride[0] - 1), opad.min(stride[1] - 1)];
        let op = Op::ConvTranspose(ConvTranspose {
            weight: Arc::new(random(&[cg * group, mg, k[0], k[1]], seed ^ 3)),
            bias: bias.then(|| Arc::new((0..mg * group).map(|i| i as f32 * 0.1).collect())),
            strides: stride,
            pads: [pad, 0, 0, pad],
            dilations: dil,
            output_padding: opad,
            group,
            activation: Activation::Relu,
        });
        let shape = [n, cg * group, hw[0], hw[1]];
        let mut g = Graph::default();
        let x = g.add_value("x", shape.to_vec());
        g.inputs.push(x);
        if let Ok(y) = g.add_node("ct", op, vec![x], "y") {
            g.outputs.push(y);
            check(&g, &[random(&shape, seed)], None, "convtranspose");
        }
    }

    #[test]
    fn pools_match_cpu(
        shape in [1usize..=2, 1usize..=3, 1usize..=7, 1usize..=7], k in [1usize..=3, 1usize..=3],
        stride in [1usize..=2, 1usize..=2], pads in [0usize..=1, 0usize..=1, 0usize..=1, 0usize..=1],
        dil in [1usize..=2, 1usize..=2], ceil in any::<bool>(), kind in 0u8..3, seed in any::<u64>(),
    ) {
        let kind = match kind { 0 => PoolKind::Max, 1 => PoolKind::Average { count_include_pad: false }, _ => PoolKind::Average { count_include_pad: true } };
        let pads = [pads[0].min(k[0] - 1), pads[1].min(k[1] - 1), pads[2].min(k[0] - 1), pads[3].min(k[1] - 1)];
        let op = Op::Pool(Pool { kind, kernel: k, strides: stride, pads, dilations: dil, ceil_mode: ceil });
        let mut g = Graph::default();
        let x = g.add_value("x", shape.to_vec());
        g.inputs.push(x);
        if let Ok(y) = g.add_node("pool", op, vec![x], "y") {
            g.outputs.push(y);
            check(&g, &[random(&shape, seed)], None, "pool");
        }
        for kind in [PoolKind::Max, PoolKind::Average { count_include_pad: false }] {
            check(&single(Op::GlobalPool(kind), &shape, None), &[random(&shape, seed)], None, "globalpool");
        }
    }

    #[test]
    fn dense_and_matmul_match_cpu(n in 1usize..=5, k in 1usize..=9, m in 1usize..=9, act in 0u8..22, seed in any::<u64>()) {
        let op = Op::Dense {
            weight: Arc::new(random(&[k, m], seed ^ 5)),
            bias: Some(Arc::new((0..m).map(|i| i as f32 * 0.05).collect())),
            activation: activation(act, m),
        };
        check(&single(op, &[n, k], None), &[random(&[n, k], seed)], None, "dense");
        // MatMul with a broadcast batch dim.
        let mut g = Graph::default();
        let a = g.add_value("a", vec![2, 1, n, k]);
        let b = g.add_value("b", vec![3, k, m]);
        g.inputs.extend([a, b]);
        let y = g.add_node("mm", Op::MatMul, vec![a, b], "y").expect("matmul");
        g.outputs.push(y);
        check(&g, &[random(&[2, 1, n, k], seed), random(&[3, k, m], seed ^ 7)], None, "matmul");
    }

    #[test]
    fn elementwise_ops_match_cpu(shape in [1usize..=2, 1usize..=4, 1usize..=5, 1usize..=5], act in 0u8..22, kind in 0u8..6, seed in any::<u64>()) {
        let x = random(&shape, seed);
        check(&single(Op::Activation(activation(act, shape[1])), &shape, None), std::slice::from_ref(&x), None, "activation");
        let scale = Arc::new((0..shape[1]).map(|c| 1.0 + c as f32).collect());
        let shift = Arc::new((0..shape[1]).map(|c| c as f32 * -0.5).collect());
        check(&single(Op::ChannelAffine { scale, shift }, &shape, None), std::slice::from_ref(&x), None, "affine");
        let kind = [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul, BinaryKind::Div, BinaryKind::Max, BinaryKind::Min][kind as usize];
        // Binary: runtime a broadcast against a constant per-channel b.
        let mut g = Graph::default();
        let a = g.add_value("a", shape.to_vec());
        g.inputs.push(a);
        let b = g.add_constant("b", random(&[shape[1], 1, 1], seed ^ 9));
        let y = g.add_node("bin", Op::Binary { kind, activation: activation(act, shape[1]) }, vec![a, b], "y").expect("binary");
        g.outputs.push(y);
        check(&g, std::slice::from_ref(&x), None, "binary");
        check(&single(Op::Softmax { axis: 1 }, &shape, None), std::slice::from_ref(&x), None, "softmax");
        check(&single(Op::LogSoftmax { axis: 1 }, &shape, None), std::slice::from_ref(&x), None, "logsoftmax");
        for kind in [ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min, ReduceKind::Sum, ReduceKind::L2, ReduceKind::ArgMax, ReduceKind::ArgMin] {
            check(&single(Op::ChannelReduce(kind), &shape, None), std::slice::from_ref(&x), None, "channelreduce");
        }
        check(&single(Op::Lrn { size: 3, alpha: 1e-2, beta: 0.75, bias: 1.0 }, &shape, None), std::slice::from_ref(&x), None, "lrn");
    }

    #[test]
    fn data_movement_matches_cpu(shape in [1usize..=2, 1usize..=4, 1usize..=5, 1usize..=5], pads in [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2], seed in any::<u64>()) {
        let x = random(&shape, seed);
        let one = std::slice::from_ref(&x);
        check(&single(Op::Pad { pads, value: 0.25 }, &shape, None), one, None, "pad");
        check(&single(Op::BorderPad { pads, mode: BorderMode::Edge }, &shape, None), one, None, "edge pad");
        // Reflect pads stay shorter than their axis.
        let fit = [pads[0].min(shape[2] - 1), pads[1].min(shape[3] - 1), pads[2].min(shape[2] - 1), pads[3].min(shape[3] - 1)];
        check(&single(Op::BorderPad { pads: fit, mode: BorderMode::Reflect }, &shape, None), one, None, "reflect pad");
        check(&single(Op::Transpose { perm: vec![0, 2, 3, 1] }, &shape, None), one, None, "transpose");
        let crop = vec![shape[0], shape[1], shape[2] - shape[2] / 2, shape[3] - shape[3] / 3];
        check(&single(Op::Crop { offset: [shape[2] / 2, shape[3] / 3] }, &shape, Some(crop)), one, None, "crop");
        check(&single(Op::Reshape, &shape, Some(vec![shape[0], shape[1] * shape[2] * shape[3]])), one, None, "reshape");
        let (start, len) = (shape[1] / 2, shape[1] - shape[1] / 2);
        check(&single(Op::ChannelSlice { start, len }, &shape, None), one, None, "channelslice");
        let d2s_shape = [shape[0], shape[1] * 4, shape[2], shape[3]];
        for mode in [DepthToSpaceMode::Dcr, DepthToSpaceMode::Crd] {
            check(&single(Op::DepthToSpace { blocksize: 2, mode }, &d2s_shape, None), &[random(&d2s_shape, seed)], None, "depthtospace");
        }
        let cubic = |a, exclude_outside| ResizeMode::Cubic { a, exclude_outside };
        let modes = [ResizeMode::Linear, ResizeMode::Nearest(NearestMode::RoundPreferFloor), ResizeMode::Nearest(NearestMode::Floor), cubic(-0.75, false), cubic(-0.5, true)];
        let coords = [CoordTransform::HalfPixel, CoordTransform::AlignCorners, CoordTransform::Asymmetric, CoordTransform::PytorchHalfPixel];
        for (i, mode) in modes.into_iter().enumerate() {
            let coord = coords[(seed as usize + i) % 4];
            let out = vec![shape[0], shape[1], shape[2] * 2, shape[3] * 3 / 2 + 1];
            let scales = [2.0, out[3] as f32 / shape[3] as f32];
            check(&single(Op::Resize { mode, coord, scales }, &shape, Some(out)), one, None, "resize");
        }
        // Concat along channels and along W.
        for axis in [1usize, 3] {
            let mut g = Graph::default();
            let a = g.add_value("a", shape.to_vec());
            let mut bs = shape.to_vec();
            bs[axis] += 1;
            let b = g.add_value("b", bs.clone());
            g.inputs.extend([a, b]);
            let y = g.add_node("cat", Op::Concat { axis }, vec![a, b, a], "y").expect("concat");
            g.outputs.push(y);
            check(&g, &[x.clone(), random(&bs, seed ^ 11)], None, "concat");
        }
    }
}

/// A small DAG: conv branches written in place into a concat, a residual
/// conv, pooling, a dense head and a softmax.
fn small_model() -> Graph {
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 3, 11, 13]);
    g.inputs.push(x);
    let conv =
        |m: usize, c: usize, k: usize, s: usize, group: usize, act: Activation, seed: u64| {
            Op::Conv(Conv {
                weight: Arc::new(random(&[m, c / group, k, k], seed)),
                bias: Some(Arc::new((0..m).map(|i| 0.01 * i as f32).collect())),
                strides: [s, s],
                pads: [k / 2; 4],
                dilations: [1, 1],
                group,
                activation: act,
            })
        };
    let a = g
        .add_node(
            "stem",
            conv(8, 3, 3, 2, 1, Activation::Relu, 1),
            vec![x],
            "a",
        )
        .expect("stem");
    let b1 = g
        .add_node(
            "b1",
            conv(8, 8, 1, 1, 1, Activation::Relu, 2),
            vec![a],
            "b1",
        )
        .expect("b1");
    let b2 = g
        .add_node(
            "b2",
            conv(8, 8, 3, 1, 8, Activation::HardSwish, 3),
            vec![a],
            "b2",
        )
        .expect("b2");
    let p = g
        .add_node(
            "pool",
            Op::Pool(Pool {
                kind: PoolKind::Max,
                kernel: [3, 3],
                strides: [1, 1],
                pads: [1; 4],
                dilations: [1, 1],
                ceil_mode: false,
            }),
            vec![a],
            "p",
        )
        .expect("pool");
    let cat = g
        .add_node("cat", Op::Concat { axis: 1 }, vec![b1, b2, p], "cat")
        .expect("cat");
    let r = g
        .add_node(
            "res",
            conv(24, 24, 3, 1, 1, Activation::Identity, 4),
            vec![cat, cat],
            "r",
        )
        .expect("res");
    let gp = g
        .add_node(
            "gap",
            Op::GlobalPool(PoolKind::Average {
                count_include_pad: false,
            }),
            vec![r],
            "gp",
        )
        .expect("gap");
    let f = g
        .add_node_with_shape("flat", Op::Reshape, vec![gp], "f", vec![1, 24])
        .expect("flat");
    let d = g
        .add_node(
            "fc",
            Op::Dense {
                weight: Arc::new(random(&[24, 10], 5)),
                bias: None,
                activation: Activation::Identity,
            },
            vec![f],
            "d",
        )
        .expect("fc");
    let s = g
        .add_node("softmax", Op::Softmax { axis: 1 }, vec![d], "s")
        .expect("softmax");
    g.outputs.extend([s, r]);
    g
}

#[test]
fn a_small_model_matches_cpu() {
    let g = small_model();
    let x = random(&[1, 3, 11, 13], 42);
    check(&g, std::slice::from_ref(&x), None, "small model");
    // A second run reuses pooled buffers and cached weights: same bits.
    let a = gpu().run(&g, std::slice::from_ref(&x)).expect("run 1");
    let b = gpu().run(&g, std::slice::from_ref(&x)).expect("run 2");
    assert_eq!(a, b);
}

/// Dilated windows with padding, count_include_pad and ceil_mode (the last
/// ceil_mode column window hangs past the end padding); the ONNX
/// `test_averagepool_2d_dilations` case once failed on the GPU only.
#[test]
fn dilated_pools_match_cpu() {
    let shape = [1usize, 2, 9, 8];
    for kind in [
        PoolKind::Max,
        PoolKind::Average {
            count_include_pad: false,
        },
        PoolKind::Average {
            count_include_pad: true,
        },
    ] {
        for ceil_mode in [false, true] {
            let op = Op::Pool(Pool {
                kind,
                kernel: [3, 2],
                strides: [2, 2],
                pads: [1, 1, 1, 0],
                dilations: [2, 3],
                ceil_mode,
            });
            let mut g = Graph::default();
            let x = g.add_value("x", shape.to_vec());
            g.inputs.push(x);
            let y = g.add_node("pool", op, vec![x], "y").expect("valid pool");
            g.outputs.push(y);
            check(
                &g,
                &[random(&shape, 11)],
                None,
                &format!("{kind:?} ceil {ceil_mode}"),
            );
        }
    }
}

/// A tile's copy of a conv (same name and params, fewer rows, its own pads)
/// reproduces the matching rows of the untiled output bit for bit.
#[test]
fn a_tile_copy_of_a_conv_is_bit_identical() {
    for variant in [
        ConvVariant::Block,
        ConvVariant::Block8,
        ConvVariant::Block8Texture,
        ConvVariant::Naive,
        ConvVariant::Grouped,
    ] {
        let p = ConvProblem {
            n: 1,
            group: 1,
            cg: 5,
            mg: 8,
            hw: [10, 9],
            k: [3, 3],
            stride: [1, 1],
            dil: [1, 1],
            pads: [1, 1, 1, 1],
            bias: true,
            residual: false,
            act: 1,
            seed: 7,
        };
        let (full, inputs) = conv_graph(&p);
        let choice = Some(ConvChoice { variant, wg: 64 });
        let whole = gpu().run_with(&full, &inputs, choice).expect("untiled");
        // Bottom tile: output rows 4..10 need input rows 3..10, pad bottom only.
        let tile_in = Tensor::new(
            vec![1, 5, 7, 9],
            inputs[0]
                .data()
                .chunks(90)
                .flat_map(|plane| plane[27..].to_vec())
                .collect(),
        )
        .expect("tile input");
        let tp = ConvProblem {
            hw: [7, 9],
            pads: [0, 1, 1, 1],
            ..p.clone()
        };
        let (tile, _) = conv_graph(&tp);
        // Same weights: reuse the full graph's op with the tile's pads.
        let mut tile = tile;
        if let (Op::Conv(t), Op::Conv(f)) = (&mut tile.nodes[0].op, &full.nodes[0].op) {
            t.weight = f.weight.clone();
            t.bias = f.bias.clone();
        }
        let part = gpu().run_with(&tile, &[tile_in], choice).expect("tile");
        let (w, rows) = (9, 6);
        for m in 0..8 {
            let want = &whole[0].data()[m * 90 + 4 * w..m * 90 + 10 * w];
            let got = &part[0].data()[m * rows * w..(m + 1) * rows * w];
            assert!(
                want.iter()
                    .zip(got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{variant:?} channel {m}"
            );
        }
    }
}

/// The texture kernel only moves the weights: same accumulation order as
/// Block8, so the same bits, and a layer tuned to either tiles the same.
#[test]
fn weight_texture_and_buffer_kernels_agree_bit_for_bit() {
    for (cg, mg, k, group) in [(5, 16, 3, 1), (3, 8, 1, 2), (7, 24, 5, 1)] {
        let p = ConvProblem {
            n: 2,
            group,
            cg,
            mg,
            hw: [11, 13],
            k: [k, k],
            stride: [1, 1],
            dil: [1, 1],
            pads: [k / 2; 4],
            bias: true,
            residual: false,
            act: 1,
            seed: cg as u64,
        };
        let (g, inputs) = conv_graph(&p);
        let run = |variant| {
            gpu()
                .run_with(&g, &inputs, Some(ConvChoice { variant, wg: 32 }))
                .expect("gpu run")
        };
        let (buf, tex) = (run(ConvVariant::Block8), run(ConvVariant::Block8Texture));
        assert!(
            buf[0]
                .data()
                .iter()
                .zip(tex[0].data())
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{p:?}"
        );
        check(
            &g,
            &inputs,
            Some(ConvChoice {
                variant: ConvVariant::Block8Texture,
                wg: 64,
            }),
            "texture",
        );
    }
}

/// The 8x8 kernel's 5-wide stride-1 path (one 12-column row window for all
/// five taps) against the CPU and, bit for bit, the 4x4 kernel, which loads
/// per tap in the same accumulation order: widths that are not whole 8-pixel
/// blocks, asymmetric pads, a row dilation, a residual input.
#[test]
fn conv_5_wide_rows_match_cpu_and_the_4x4_kernel_bit_for_bit() {
    for (hw, pads, dil, residual) in [
        ([9, 13], [2; 4], [1, 1], false),
        ([6, 7], [0, 2, 1, 0], [1, 1], true),
        ([11, 17], [2, 1, 2, 3], [2, 1], false),
        ([5, 21], [2, 0, 2, 0], [1, 1], true),
    ] {
        let p = ConvProblem {
            n: 1,
            group: 1,
            cg: 5,
            mg: 16,
            hw,
            k: [5, 5],
            stride: [1, 1],
            dil,
            pads,
            bias: true,
            residual,
            act: 1,
            seed: 23,
        };
        let (g, inputs) = conv_graph(&p);
        let run = |variant| {
            gpu()
                .run_with(&g, &inputs, Some(ConvChoice { variant, wg: 32 }))
                .expect("gpu run")
        };
        let reference = run(ConvVariant::Block);
        for variant in [ConvVariant::Block8, ConvVariant::Block8Texture] {
            let got = run(variant);
            assert!(
                got[0]
                    .data()
                    .iter()
                    .zip(reference[0].data())
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{variant:?} {p:?}"
            );
            check(
                &g,
                &inputs,
                Some(ConvChoice { variant, wg: 64 }),
                &format!("{variant:?} {p:?}"),
            );
        }
    }
}

/// Copies whose innermost collapsed dim is a multiple of 4 and contiguous
/// (a crop of whole rows, a channel concat, a reshape) move 4 elements per
/// invocation; others one. Both give the CPU's bits exactly.
#[test]
fn strided_copies_by_four_and_by_one_are_exact() {
    let bits = |t: &[Tensor]| -> Vec<u32> {
        t.iter()
            .flat_map(|t| t.data().iter().map(|v| v.to_bits()))
            .collect()
    };
    let exact = |g: &Graph, inputs: &[Tensor], what: &str| {
        let want = cpu::run(g, inputs).expect("cpu reference");
        let got = gpu().run(g, inputs).expect("gpu run");
        assert_eq!(bits(&got), bits(&want), "{what}");
    };
    let x = random(&[2, 3, 6, 8], 41);
    // Rows 2..6 of 8-wide rows: [6, 32] after collapsing, 32 = 4 × 8.
    let crop = single(
        Op::Crop { offset: [2, 0] },
        &[2, 3, 6, 8],
        Some(vec![2, 3, 4, 8]),
    );
    exact(&crop, std::slice::from_ref(&x), "crop of whole rows");
    // Columns 1..7: rows of 6, not a multiple of 4.
    let cols = single(
        Op::Crop { offset: [0, 1] },
        &[2, 3, 6, 8],
        Some(vec![2, 3, 6, 6]),
    );
    exact(&cols, std::slice::from_ref(&x), "crop of columns");
    let reshape = single(Op::Reshape, &[2, 3, 6, 8], Some(vec![2, 144]));
    exact(&reshape, std::slice::from_ref(&x), "reshape");
    let mut g = Graph::default();
    let a = g.add_value("a", vec![2, 3, 6, 8]);
    let b = g.add_value("b", vec![2, 5, 6, 8]);
    g.inputs.extend([a, b]);
    let y = g
        .add_node("cat", Op::Concat { axis: 1 }, vec![a, b, a], "y")
        .expect("concat");
    g.outputs.push(y);
    exact(
        &g,
        &[x.clone(), random(&[2, 5, 6, 8], 43)],
        "channel concat",
    );
}

/// The depthwise kernel's 3-wide stride-1 path (row inputs loaded once for
/// all three taps) on widths that are not whole 4-pixel blocks, both pads.
#[test]
fn depthwise_3x3_rows_match_cpu() {
    for (hw, pads, dil) in [
        ([7, 9], [1; 4], [1, 1]),
        ([5, 6], [0, 1, 2, 0], [1, 1]),
        ([6, 11], [1; 4], [2, 1]),
    ] {
        let p = ConvProblem {
            n: 1,
            group: 6,
            cg: 1,
            mg: 1,
            hw,
            k: [3, 3],
            stride: [1, 1],
            dil,
            pads,
            bias: true,
            residual: false,
            act: 2,
            seed: 11,
        };
        let (g, inputs) = conv_graph(&p);
        for wg in [32, 64] {
            check(
                &g,
                &inputs,
                Some(ConvChoice {
                    variant: ConvVariant::Grouped,
                    wg,
                }),
                &format!("{p:?}"),
            );
        }
    }
}

#[test]
fn an_unknown_adapter_is_an_error_not_a_skip() {
    let err = GpuExecutor::new(GpuOptions {
        adapter: Some("no-such-adapter-xyz".into()),
        no_autotune: true,
        ..GpuOptions::default()
    })
    .err()
    .expect("a missing adapter must fail");
    assert!(err.to_string().contains("no adapter"), "{err}");
}

#[test]
fn integer_nearest_upsampling_matches_cpu() {
    // The one-invocation-per-input-pixel path: integer factors whose
    // nearest rule reads `o / factor` (TF's UpSampling2D, ONNX half_pixel
    // with round_prefer_floor), odd extents, several planes.
    let cases = [
        ((2, 2), CoordTransform::Asymmetric, NearestMode::Floor),
        ((3, 1), CoordTransform::Asymmetric, NearestMode::Floor),
        (
            (1, 2),
            CoordTransform::HalfPixel,
            NearestMode::RoundPreferFloor,
        ),
        (
            (2, 3),
            CoordTransform::HalfPixel,
            NearestMode::RoundPreferFloor,
        ),
    ];
    for (k, ((fy, fx), coord, nm)) in cases.into_iter().enumerate() {
        let shape = [2, 3, 5, 7];
        let out = vec![2, 3, 5 * fy, 7 * fx];
        let op = Op::Resize {
            mode: ResizeMode::Nearest(nm),
            coord,
            scales: [fy as f32, fx as f32],
        };
        let g = single(op, &shape, Some(out));
        let x = random(&shape, 40 + k as u64);
        let want = cpu::CpuExecutor
            .run(&g, std::slice::from_ref(&x))
            .expect("cpu");
        let got = gpu().run(&g, &[x]).expect("gpu");
        assert_eq!(got[0].data(), want[0].data(), "×{fy}×{fx} {coord:?} {nm:?}");
    }
}

#[test]
fn instance_norm_matches_cpu_on_planes_larger_than_a_workgroup() {
    for shape in [[2, 3, 17, 23], [1, 5, 1, 1], [1, 2, 64, 64]] {
        let c = shape[1];
        let op = Op::InstanceNorm {
            scale: Arc::new((0..c).map(|i| 0.5 + i as f32).collect()),
            bias: Arc::new((0..c).map(|i| i as f32 * -0.25).collect()),
            epsilon: 1e-5,
        };
        let x = random(&shape, 11);
        check(
            &single(op, &shape, None),
            std::slice::from_ref(&x),
            None,
            "instancenorm",
        );
    }
}

/// NaN goes through Relu and Clip on both executors, as ONNX (numpy's
/// maximum and clip) has it; `max`/`min` made it 0, a bound, or -inf for a
/// Clip without bounds, so a NaN input gave a plausible-looking output.
#[test]
fn relu_and_clip_keep_nan_on_both_executors() {
    let inf = f32::INFINITY;
    let xs = [f32::NAN, -1.0, 0.5, 3.0, -inf, inf];
    let x = Tensor::new(vec![1, 1, 1, xs.len()], xs.to_vec()).expect("tensor");
    for (act, want) in [
        (Activation::Relu, [f32::NAN, 0.0, 0.5, 3.0, 0.0, inf]),
        (
            Activation::Clip {
                min: -inf,
                max: inf,
            },
            xs,
        ),
        (
            Activation::Clip {
                min: -2.0,
                max: 2.0,
            },
            [f32::NAN, -1.0, 0.5, 2.0, -2.0, 2.0],
        ),
        // min > max: everything (but NaN) is max, as numpy's clip has it.
        (
            Activation::Clip { min: 1.0, max: 0.0 },
            [f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0],
        ),
    ] {
        let g = single(Op::Activation(act.clone()), x.shape(), None);
        assert_both(&g, &x, &want, &format!("{act:?}"));
    }
}

/// The bit patterns of a tensor's values, to compare executors exactly.
fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// Asserts each output of `g` on `x` is `want`, NaN where `want` is NaN,
/// on both executors, and that the two agree bit for bit.
fn assert_both(g: &Graph, x: &Tensor, want: &[f32], what: &str) {
    let cpu = cpu::run(g, std::slice::from_ref(x)).expect("cpu");
    let got = gpu().run(g, std::slice::from_ref(x)).expect("gpu");
    for (name, out) in [("cpu", &cpu[0]), ("gpu", &got[0])] {
        assert_eq!(out.data().len(), want.len(), "{name} {what}: length");
        for (i, (&o, &w)) in out.data().iter().zip(want).enumerate() {
            assert!(
                o == w || (o.is_nan() && w.is_nan()),
                "{name} {what}: element {i}: {o}, want {w}"
            );
        }
    }
    assert_eq!(bits(&got[0]), bits(&cpu[0]), "{what}: gpu against cpu bits");
}

/// A NaN input propagates through every max and min, as numpy's maximum
/// and the warning `infer` gives about NaN inputs say: `f32::max` and WGSL's
/// `max` dropped it (Max, Min, MaxPool, ReduceMax/Min and global max pool
/// gave 0 or a neighbour's value), and the GPU's HardSigmoid made it 0
/// where the CPU's kept it.
#[test]
fn max_min_and_hard_sigmoid_keep_nan_on_both_executors() {
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    // Two channels of a 2×3 map; NaN first in one window, last in another.
    let xs = vec![nan, 1.0, 2.0, -inf, 0.5, 3.0, 4.0, -1.0, 0.0, 2.0, 1.0, nan];
    let x = Tensor::new(vec![1, 2, 2, 3], xs.clone()).expect("tensor");
    let pool = Op::Pool(Pool {
        kind: PoolKind::Max,
        kernel: [2, 2],
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        ceil_mode: false,
    });
    assert_both(
        &single(pool, x.shape(), None),
        &x,
        &[nan, 3.0, 4.0, nan],
        "maxpool",
    );
    assert_both(
        &single(Op::GlobalPool(PoolKind::Max), x.shape(), None),
        &x,
        &[nan, nan],
        "global max",
    );
    assert_both(
        &single(Op::ChannelReduce(ReduceKind::Max), x.shape(), None),
        &x,
        &[nan, 1.0, 2.0, 2.0, 1.0, nan],
        "reduce max",
    );
    assert_both(
        &single(Op::ChannelReduce(ReduceKind::Min), x.shape(), None),
        &x,
        &[nan, -1.0, 0.0, -inf, 0.5, nan],
        "reduce min",
    );
    // The index of the first NaN, as numpy's argmax and argmin give.
    assert_both(
        &single(Op::ChannelReduce(ReduceKind::ArgMax), x.shape(), None),
        &x,
        &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        "argmax",
    );
    assert_both(
        &single(Op::ChannelReduce(ReduceKind::ArgMin), x.shape(), None),
        &x,
        &[0.0, 1.0, 1.0, 0.0, 0.0, 1.0],
        "argmin",
    );
    for (kind, want) in [
        (
            BinaryKind::Max,
            [nan, 1.0, 2.0, 0.0, 0.5, 3.0, 4.0, 0.0, 0.0, 2.0, 1.0, nan],
        ),
        (
            BinaryKind::Min,
            [nan, 0.0, 0.0, -inf, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, nan],
        ),
    ] {
        let mut g = Graph::default();
        let a = g.add_value("x", x.shape().to_vec());
        g.inputs.push(a);
        let zero = g.add_constant("zero", Tensor::scalar(0.0));
        let y = g
            .add_node(
                "bin",
                Op::Binary {
                    kind,
                    activation: Activation::Identity,
                },
                vec![a, zero],
                "y",
            )
            .expect("binary");
        g.outputs.push(y);
        assert_both(&g, &x, &want, &format!("{kind:?}"));
    }
    let hs = Op::Activation(Activation::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    });
    let mut want: Vec<f32> = xs.iter().map(|v| (0.2 * v + 0.5).clamp(0.0, 1.0)).collect();
    want[0] = nan;
    assert_both(&single(hs, x.shape(), None), &x, &want, "hardsigmoid");
}

/// The ops `Op::same_bits_everywhere` says give the same bits on either
/// executor do, on random inputs: `tessera run` warns about a block tiled
/// across a CPU and a GPU node only when it holds some other op. (A
/// convolution is not among them: lavapipe splits WGSL's `fma` and would
/// pass, a GPU that fuses it would not.)
#[test]
fn ops_said_to_give_the_same_bits_everywhere_do() {
    let shape = [1, 8, 19, 23];
    let x = random(&shape, 3);
    let check_bits = |g: &Graph, op: &Op| {
        assert!(op.same_bits_everywhere(), "{}", op.name());
        let cpu = cpu::run(g, std::slice::from_ref(&x)).expect("cpu");
        let gpu = gpu().run(g, std::slice::from_ref(&x)).expect("gpu");
        assert_eq!(bits(&gpu[0]), bits(&cpu[0]), "{}", op.name());
    };
    let unary = [
        Op::Activation(Activation::LeakyRelu { alpha: 0.1 }),
        Op::Activation(Activation::Clip {
            min: -0.5,
            max: 0.5,
        }),
        Op::Pool(Pool {
            kind: PoolKind::Max,
            kernel: [3, 3],
            strides: [2, 2],
            pads: [1; 4],
            dilations: [1, 1],
            ceil_mode: false,
        }),
        Op::ChannelReduce(ReduceKind::Max),
        Op::Resize {
            mode: ResizeMode::Nearest(NearestMode::RoundPreferFloor),
            coord: CoordTransform::HalfPixel,
            scales: [1.5, 2.0],
        },
    ];
    for op in unary {
        let out = match &op {
            Op::Resize { .. } => Some(vec![1, 8, 28, 46]),
            _ => None,
        };
        check_bits(&single(op.clone(), &shape, out), &op);
    }
    for kind in [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul] {
        let op = Op::Binary {
            kind,
            activation: Activation::Relu,
        };
        let mut g = Graph::default();
        let a = g.add_value("x", shape.to_vec());
        g.inputs.push(a);
        let per_channel = g.add_constant("b", random(&[1, 8, 1, 1], 4));
        let y = g
            .add_node("bin", op.clone(), vec![a, per_channel], "y")
            .expect("binary");
        g.outputs.push(y);
        check_bits(&g, &op);
    }
    // And the ops they are not said of.
    for op in [
        Op::Activation(Activation::Sigmoid),
        Op::Binary {
            kind: BinaryKind::Div,
            activation: Activation::Identity,
        },
        Op::GlobalPool(PoolKind::Average {
            count_include_pad: false,
        }),
        Op::Dense {
            weight: Arc::new(random(&[4, 2], 5)),
            bias: None,
            activation: Activation::Relu,
        },
    ] {
        assert!(!op.same_bits_everywhere(), "{}", op.name());
    }
}

#[test]
fn softplus_and_mish_stay_finite_where_exp_overflows() {
    let xs = [-100.0f32, -1.0, 0.0, 1.0, 20.0, 80.0, 90.0, 100.0];
    let x = Tensor::new(vec![1, 1, 1, xs.len()], xs.to_vec()).expect("tensor");
    for (act, f) in [
        (
            Activation::Softplus,
            (|v: f64| v.exp().ln_1p()) as fn(f64) -> f64,
        ),
        (Activation::Mish, |v: f64| v * v.exp().ln_1p().tanh()),
    ] {
        let g = single(Op::Activation(act.clone()), x.shape(), None);
        let cpu = cpu::run(&g, std::slice::from_ref(&x)).expect("cpu");
        for (got, &v) in cpu[0].data().iter().zip(&xs) {
            let want = f(f64::from(v));
            assert!(
                (f64::from(*got) - want).abs() <= 1e-5 * (want.abs() + 1.0),
                "{act:?}({v}): {got} vs {want}"
            );
        }
        check(&g, std::slice::from_ref(&x), None, "softplus/mish");
    }
}

#[test]
fn transcendental_activations_keep_relative_accuracy_in_tails_and_near_zero() {
    accuracy_common::check_activations(gpu(), 1e-5);
}

#[test]
fn layer_and_instance_norm_of_a_map_offset_by_1000_match_f64() {
    accuracy_common::check_norms_of_offset_maps(gpu(), 5e-5);
}

#[test]
fn layer_norm_matches_cpu_from_every_axis() {
    let shape = [2, 3, 5, 7];
    let x = random(&shape, 13);
    for axis in 1..4 {
        let len: usize = shape[axis..].iter().product();
        let op = Op::LayerNorm {
            axis,
            scale: Arc::new((0..len).map(|i| 0.5 + 0.01 * i as f32).collect()),
            bias: Arc::new((0..len).map(|i| i as f32 * -0.02).collect()),
            epsilon: 1e-5,
        };
        check(
            &single(op, &shape, None),
            std::slice::from_ref(&x),
            None,
            "layernorm",
        );
    }
}

/// Weights over the adapter's binding limit are refused as unsupported, with
/// the layer named: a finer grid (which a limit error asks for) cannot
/// shrink them.
#[test]
fn weights_over_the_binding_limit_name_the_layer_and_are_not_a_limit() {
    let limits = &gpu().context().limits;
    let max = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    let k = usize::try_from(max / 16 + 1).expect("fits usize");
    let op = Op::Dense {
        weight: Arc::new(Tensor::new(vec![k, 4], vec![0.0; k * 4]).expect("weight")),
        bias: None,
        activation: Activation::Identity,
    };
    let g = single(op, &[1, k], None);
    let e = gpu()
        .run(&g, &[Tensor::new(vec![1, k], vec![0.0; k]).expect("input")])
        .expect_err("weights over the limit");
    assert!(
        matches!(e, tile_engine::Error::Unsupported(_)),
        "not Unsupported: {e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("node node (dense)") && text.contains("weights of"),
        "{text}"
    );
}

/// Weights are cached on the GPU by their `Arc`'s address: those of a graph
/// nobody holds any more are dropped, or a daemon that evicts models (or
/// loads many) would keep every one's weights in GPU memory for good.
#[test]
fn weights_of_a_dropped_graph_leave_the_gpu() {
    let exec = GpuExecutor::new(GpuOptions {
        no_autotune: true,
        ..GpuOptions::default()
    })
    .expect("GPU tests need an adapter (e.g. lavapipe with WGPU_BACKEND=vulkan)");
    let x = random(&[1, 3, 11, 13], 42);
    let g = small_model();
    exec.run(&g, std::slice::from_ref(&x)).expect("run");
    let held = exec.weights_uploaded();
    assert!(held > 0);
    // A copy shares the weights: nothing new, nothing dropped.
    let copy = g.clone();
    drop(g);
    exec.run(&copy, std::slice::from_ref(&x)).expect("copy");
    assert_eq!(exec.weights_uploaded(), held);
    drop(copy);
    // The same model built again has weights of its own: the old ones go.
    let again = small_model();
    exec.run(&again, std::slice::from_ref(&x)).expect("again");
    assert_eq!(exec.weights_uploaded(), held);
}
