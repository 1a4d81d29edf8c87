//! Hand-computed checks of the CPU executor, one or more per op, and of its
//! input validation and memory behaviour.

mod accuracy_common;

use std::sync::Arc;

use tile_engine::cpu::{self, CpuExecutor};
use tile_engine::ir::{
    Activation, BinaryKind, Conv, ConvTranspose, CoordTransform, DepthToSpaceMode, NearestMode,
    Pool, PoolKind, ResizeMode,
};
use tile_engine::{Error, Executor, Graph, Op, Tensor};

type R = Result<(), Error>;

fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), data.to_vec()).expect("test tensor")
}

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    t(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
}

/// A graph with one input of `shape` and one node `op` (output shape inferred or stated).
fn single(op: Op, shape: &[usize], out: Option<&[usize]>) -> Result<Graph, Error> {
    let mut g = Graph::default();
    let x = g.add_value("x", shape.to_vec());
    g.inputs.push(x);
    let y = match out {
        Some(s) => g.add_node_with_shape("n", op, vec![x], "y", s.to_vec())?,
        None => g.add_node("n", op, vec![x], "y")?,
    };
    g.outputs.push(y);
    Ok(g)
}

fn run1(op: Op, x: Tensor, out: Option<&[usize]>) -> Result<Tensor, Error> {
    let g = single(op, x.shape(), out)?;
    let mut ys = cpu::run(&g, &[x])?;
    Ok(ys.remove(0))
}

fn conv_op(weight: Tensor, bias: Option<Vec<f32>>) -> Conv {
    Conv {
        weight: Arc::new(weight),
        bias: bias.map(Arc::new),
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        group: 1,
        activation: Activation::Identity,
    }
}

#[test]
fn conv_3x3_with_padding_and_bias() -> R {
    // All-ones 3x3 kernel on a 3x3 iota with pad 1: each output is the sum of its 3x3 neighbourhood.
    let mut c = conv_op(Tensor::full(vec![1, 1, 3, 3], 1.0), Some(vec![0.5]));
    c.pads = [1, 1, 1, 1];
    let y = run1(Op::Conv(c), iota(&[1, 1, 3, 3]), None)?;
    let want = [8., 15., 12., 21., 36., 27., 20., 33., 24.].map(|v| v + 0.5);
    assert_eq!(y.shape(), &[1, 1, 3, 3]);
    assert_eq!(y.data(), &want);
    Ok(())
}

#[test]
fn conv_stride_dilation_group_relu() -> R {
    // Two groups, each a single 2x2 dilated kernel with stride 2 on 5x5 maps.
    let w = t(&[2, 1, 2, 2], &[1., 0., 0., -1., -1., 0., 0., 1.]);
    let mut c = conv_op(w, None);
    c.strides = [2, 2];
    c.dilations = [2, 2];
    c.group = 2;
    c.activation = Activation::Relu;
    let y = run1(Op::Conv(c), iota(&[1, 2, 5, 5]), None)?;
    // out[0] = x[y,x] - x[y+2,x+2] = -12 -> relu 0; out[1] = +12.
    assert_eq!(y.shape(), &[1, 2, 2, 2]);
    assert_eq!(y.data(), &[0., 0., 0., 0., 12., 12., 12., 12.]);
    Ok(())
}

#[test]
fn conv_fused_residual_before_activation() -> R {
    let c = Conv {
        activation: Activation::Relu,
        ..conv_op(t(&[1, 1, 1, 1], &[2.0]), Some(vec![1.0]))
    };
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 1, 1, 3]);
    let r = g.add_value("r", vec![1, 1, 1, 3]);
    g.inputs = vec![x, r];
    let y = g.add_node("c", Op::Conv(c), vec![x, r], "y")?;
    g.outputs.push(y);
    let out = cpu::run(
        &g,
        &[
            t(&[1, 1, 1, 3], &[1., 2., 3.]),
            t(&[1, 1, 1, 3], &[-10., 0., 1.]),
        ],
    )?;
    // relu(2x + 1 + r)
    assert_eq!(out[0].data(), &[0., 5., 8.]);
    Ok(())
}

#[test]
fn conv_transpose_stride_2() -> R {
    // 1 -> 1 channel, 2x2 kernel of ones, stride 2: every input pixel becomes a 2x2 block.
    let c = ConvTranspose {
        weight: Arc::new(Tensor::full(vec![1, 1, 2, 2], 1.0)),
        bias: Some(Arc::new(vec![0.25])),
        strides: [2, 2],
        pads: [0; 4],
        dilations: [1, 1],
        output_padding: [0, 0],
        group: 1,
        activation: Activation::Identity,
    };
    let y = run1(Op::ConvTranspose(c), iota(&[1, 1, 2, 2]), None)?;
    assert_eq!(y.shape(), &[1, 1, 4, 4]);
    let want = [
        0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.,
    ]
    .map(|v| v + 0.25);
    assert_eq!(y.data(), &want);
    Ok(())
}

#[test]
fn conv_transpose_overlapping_taps_with_pads() -> R {
    // 1-D along W: x = [1, 2], k = [1, 10, 100], stride 1, pad 1 each side.
    // Full output: [1, 12, 120, 200]; with pads 1/1 -> [12, 120].
    let c = ConvTranspose {
        weight: Arc::new(t(&[1, 1, 1, 3], &[1., 10., 100.])),
        bias: None,
        strides: [1, 1],
        pads: [0, 1, 0, 1],
        dilations: [1, 1],
        output_padding: [0, 0],
        group: 1,
        activation: Activation::Identity,
    };
    let y = run1(Op::ConvTranspose(c), t(&[1, 1, 1, 2], &[1., 2.]), None)?;
    assert_eq!(y.data(), &[12., 120.]);
    Ok(())
}

fn pool(kind: PoolKind, k: usize, s: usize, pads: [usize; 4], ceil_mode: bool) -> Op {
    Op::Pool(Pool {
        kind,
        kernel: [k, k],
        strides: [s, s],
        pads,
        dilations: [1, 1],
        ceil_mode,
    })
}

#[test]
fn max_pool_padding_never_wins() -> R {
    let x = t(&[1, 1, 2, 2], &[-4., -3., -2., -1.]);
    let y = run1(pool(PoolKind::Max, 2, 1, [1, 1, 1, 1], false), x, None)?;
    assert_eq!(y.shape(), &[1, 1, 3, 3]);
    assert_eq!(y.data(), &[-4., -3., -3., -2., -1., -1., -2., -1., -1.]);
    Ok(())
}

#[test]
fn average_pool_count_include_pad_and_ceil_mode() -> R {
    // 1x3 row [1, 2, 3] as a 3x3 map's first row of a 3x3 iota; kernel 2, stride 2, ceil_mode:
    // output 2x2; the last window hangs past the input and is not counted.
    let x = iota(&[1, 1, 3, 3]);
    let excl = run1(
        pool(
            PoolKind::Average {
                count_include_pad: false,
            },
            2,
            2,
            [0; 4],
            true,
        ),
        x.clone(),
        None,
    )?;
    assert_eq!(excl.data(), &[2., 3.5, 6.5, 8.]);
    // count_include_pad with no pads: the overhang is still not counted.
    let incl = run1(
        pool(
            PoolKind::Average {
                count_include_pad: true,
            },
            2,
            2,
            [0; 4],
            true,
        ),
        x.clone(),
        None,
    )?;
    assert_eq!(incl.data(), &[2., 3.5, 6.5, 8.]);
    // pad 1 on top/left only: the padded taps count, the ceil overhang does not.
    let incl_pad = run1(
        pool(
            PoolKind::Average {
                count_include_pad: true,
            },
            2,
            2,
            [1, 1, 0, 0],
            true,
        ),
        x,
        None,
    )?;
    assert_eq!(incl_pad.shape(), &[1, 1, 2, 2]);
    assert_eq!(incl_pad.data(), &[0. / 4., 3. / 4., 9. / 4., 24. / 4.]);
    Ok(())
}

#[test]
fn global_pools() -> R {
    let x = iota(&[1, 2, 2, 2]);
    let avg = run1(
        Op::GlobalPool(PoolKind::Average {
            count_include_pad: false,
        }),
        x.clone(),
        None,
    )?;
    assert_eq!(avg.data(), &[1.5, 5.5]);
    let max = run1(Op::GlobalPool(PoolKind::Max), x, None)?;
    assert_eq!(max.shape(), &[1, 2, 1, 1]);
    assert_eq!(max.data(), &[3., 7.]);
    Ok(())
}

#[test]
fn dense_with_bias_and_activation() -> R {
    let op = Op::Dense {
        weight: Arc::new(t(&[3, 2], &[1., 2., 3., 4., 5., 6.])),
        bias: Some(Arc::new(vec![-100., 1.])),
        activation: Activation::LeakyRelu { alpha: 0.5 },
    };
    let y = run1(op, t(&[1, 3], &[1., 1., 1.]), None)?;
    // [9, 12] + bias = [-91, 13] -> leaky [-45.5, 13]
    assert_eq!(y.data(), &[-45.5, 13.]);
    Ok(())
}

fn two_inputs(op: Op, a: Tensor, b: Tensor) -> Result<Tensor, Error> {
    let mut g = Graph::default();
    let x = g.add_value("a", a.shape().to_vec());
    let y = g.add_value("b", b.shape().to_vec());
    g.inputs = vec![x, y];
    let z = g.add_node("n", op, vec![x, y], "z")?;
    g.outputs.push(z);
    Ok(cpu::run(&g, &[a, b])?.remove(0))
}

#[test]
fn matmul_broadcast_and_rank1() -> R {
    // [2, 1, 2, 3] x [3] -> [2, 1, 2]
    let y = two_inputs(Op::MatMul, iota(&[2, 1, 2, 3]), t(&[3], &[1., 0., -1.]))?;
    assert_eq!(y.shape(), &[2, 1, 2]);
    assert_eq!(y.data(), &[-2., -2., -2., -2.]);
    // [2] x [2, 2, 3]: a promoted to [1, 2], batch 2 -> [2, 3]
    let y = two_inputs(Op::MatMul, t(&[2], &[1., 1.]), iota(&[2, 2, 3]))?;
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(y.data(), &[3., 5., 7., 15., 17., 19.]);
    // batch broadcast [1, 2, 2] x [3, 2, 1]
    let y = two_inputs(
        Op::MatMul,
        t(&[1, 2, 2], &[1., 2., 3., 4.]),
        iota(&[3, 2, 1]),
    )?;
    assert_eq!(y.shape(), &[3, 2, 1]);
    assert_eq!(y.data(), &[2., 4., 8., 18., 14., 32.]);
    Ok(())
}

#[test]
fn binary_broadcasting_and_fused_activation() -> R {
    let op = Op::Binary {
        kind: BinaryKind::Sub,
        activation: Activation::Relu,
    };
    let y = two_inputs(op, iota(&[1, 2, 1, 3]), t(&[2, 1], &[1., 4.]))?;
    assert_eq!(y.shape(), &[1, 2, 2, 3]);
    assert_eq!(y.data(), &[0., 0., 1., 0., 0., 0., 2., 3., 4., 0., 0., 1.]);
    let op = Op::Binary {
        kind: BinaryKind::Max,
        activation: Activation::Identity,
    };
    let y = two_inputs(op, t(&[3], &[1., 5., 2.]), Tensor::scalar(3.))?;
    assert_eq!(y.data(), &[3., 5., 3.]);
    Ok(())
}

#[test]
fn activations_prelu_per_channel() -> R {
    let op = Op::Activation(Activation::PRelu {
        slope: Arc::new(vec![0.5, 2.0]),
    });
    let y = run1(op, t(&[1, 2, 1, 2], &[-2., 2., -2., 2.]), None)?;
    assert_eq!(y.data(), &[-1., 2., -4., 2.]);
    let y = run1(
        Op::Activation(Activation::HardSwish),
        t(&[3], &[-4., 0., 6.]),
        None,
    )?;
    assert_eq!(y.data(), &[-0., 0., 6.]);
    Ok(())
}

#[test]
fn channel_affine() -> R {
    let op = Op::ChannelAffine {
        scale: Arc::new(vec![2., -1.]),
        shift: Arc::new(vec![1., 0.5]),
    };
    let y = run1(op, iota(&[1, 2, 1, 2]), None)?;
    assert_eq!(y.data(), &[1., 3., -1.5, -2.5]);
    Ok(())
}

#[test]
fn concat_on_inner_axis() -> R {
    let y = two_inputs(
        Op::Concat { axis: 1 },
        iota(&[2, 1, 2]),
        t(&[2, 2, 2], &[9.; 8]),
    )?;
    assert_eq!(y.shape(), &[2, 3, 2]);
    assert_eq!(y.data(), &[0., 1., 9., 9., 9., 9., 2., 3., 9., 9., 9., 9.]);
    Ok(())
}

#[test]
fn reshape_transpose_rank5_channel_shuffle() -> R {
    // ShuffleNet: [1, 4, 1, 1] -> [1, 2, 2, 1, 1] -> perm (0, 2, 1, 3, 4) -> [1, 4, 1, 1].
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 4, 1, 1]);
    g.inputs.push(x);
    let a = g.add_node_with_shape("r1", Op::Reshape, vec![x], "a", vec![1, 2, 2, 1, 1])?;
    let b = g.add_node(
        "t",
        Op::Transpose {
            perm: vec![0, 2, 1, 3, 4],
        },
        vec![a],
        "b",
    )?;
    let c = g.add_node_with_shape("r2", Op::Reshape, vec![b], "c", vec![1, 4, 1, 1])?;
    g.outputs.push(c);
    let y = cpu::run(&g, &[iota(&[1, 4, 1, 1])])?;
    assert_eq!(y[0].data(), &[0., 2., 1., 3.]);
    let y = run1(Op::Transpose { perm: vec![1, 0] }, iota(&[2, 3]), None)?;
    assert_eq!(y.data(), &[0., 3., 1., 4., 2., 5.]);
    Ok(())
}

#[test]
fn softmax_is_max_subtracted() -> R {
    let y = run1(
        Op::Softmax { axis: 1 },
        t(&[2, 2], &[1000., 1000., 0., 3f32.ln()]),
        None,
    )?;
    assert_eq!(y.data()[..2], [0.5, 0.5]);
    assert!((y.data()[2] - 0.25).abs() < 1e-6 && (y.data()[3] - 0.75).abs() < 1e-6);
    Ok(())
}

#[test]
fn log_softmax_stays_finite_where_the_softmax_underflows() -> R {
    let x = [0f32, -200., 1000., 1000., 0., 3f32.ln()];
    let y = run1(Op::LogSoftmax { axis: 1 }, t(&[3, 2], &x), None)?;
    // exp(-200) underflows f32, so log(softmax) would be -inf.
    let ln2 = 2f32.ln();
    let want = [0., -200., -ln2, -ln2, -(4f32.ln()), 3f32.ln() - 4f32.ln()];
    for (got, want) in y.data().iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{:?}", y.data());
    }
    Ok(())
}

#[test]
fn transcendental_activations_keep_relative_accuracy_in_tails_and_near_zero() {
    accuracy_common::check_activations(&CpuExecutor, 1e-5);
}

#[test]
fn layer_and_instance_norm_of_a_map_offset_by_1000_match_f64() {
    accuracy_common::check_norms_of_offset_maps(&CpuExecutor, 1e-5);
}

#[test]
fn lrn_onnx_window() -> R {
    // size 2: window [c, c + 1].
    let op = Op::Lrn {
        size: 2,
        alpha: 2.0,
        beta: 1.0,
        bias: 1.0,
    };
    let y = run1(op, t(&[1, 3, 1, 1], &[1., 2., 3.]), None)?;
    // c0: 1 / (1 + 1 * (1 + 4)) ; c1: 2 / (1 + 4 + 9) ; c2: 3 / (1 + 9)
    assert_eq!(y.data(), &[1. / 6., 2. / 14., 3. / 10.]);
    Ok(())
}

#[test]
fn pad_and_crop() -> R {
    let y = run1(
        Op::Pad {
            pads: [1, 0, 0, 2],
            value: -1.,
        },
        iota(&[1, 1, 1, 2]),
        None,
    )?;
    assert_eq!(y.shape(), &[1, 1, 2, 4]);
    assert_eq!(y.data(), &[-1., -1., -1., -1., 0., 1., -1., -1.]);
    let y = run1(
        Op::Crop { offset: [1, 1] },
        iota(&[1, 1, 3, 3]),
        Some(&[1, 1, 2, 1]),
    )?;
    assert_eq!(y.data(), &[4., 7.]);
    Ok(())
}

#[test]
fn depth_to_space_modes() -> R {
    let x = iota(&[1, 4, 1, 1]);
    let dcr = run1(
        Op::DepthToSpace {
            blocksize: 2,
            mode: DepthToSpaceMode::Dcr,
        },
        x.clone(),
        None,
    )?;
    assert_eq!(dcr.data(), &[0., 1., 2., 3.]);
    let x = iota(&[1, 8, 1, 1]);
    let dcr = run1(
        Op::DepthToSpace {
            blocksize: 2,
            mode: DepthToSpaceMode::Dcr,
        },
        x.clone(),
        None,
    )?;
    assert_eq!(dcr.shape(), &[1, 2, 2, 2]);
    assert_eq!(dcr.data(), &[0., 2., 4., 6., 1., 3., 5., 7.]);
    let crd = run1(
        Op::DepthToSpace {
            blocksize: 2,
            mode: DepthToSpaceMode::Crd,
        },
        x,
        None,
    )?;
    assert_eq!(crd.data(), &[0., 1., 2., 3., 4., 5., 6., 7.]);
    Ok(())
}

#[test]
fn resize_nearest_and_linear() -> R {
    let x = t(&[1, 1, 1, 2], &[0., 10.]);
    let near = Op::Resize {
        mode: ResizeMode::Nearest(NearestMode::RoundPreferFloor),
        coord: CoordTransform::Asymmetric,
        scales: [1., 2.],
    };
    let y = run1(near, x.clone(), Some(&[1, 1, 1, 4]))?;
    assert_eq!(y.data(), &[0., 0., 10., 10.]);
    let lin = Op::Resize {
        mode: ResizeMode::Linear,
        coord: CoordTransform::HalfPixel,
        scales: [1., 2.],
    };
    let y = run1(lin, x.clone(), Some(&[1, 1, 1, 4]))?;
    // source x: -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    assert_eq!(y.data(), &[0., 2.5, 7.5, 10.]);
    let ac = Op::Resize {
        mode: ResizeMode::Linear,
        coord: CoordTransform::AlignCorners,
        scales: [1., 1.5],
    };
    let y = run1(ac, x, Some(&[1, 1, 1, 3]))?;
    assert_eq!(y.data(), &[0., 5., 10.]);
    Ok(())
}

#[test]
fn wrong_input_shape_names_the_input() -> R {
    let g = single(Op::Activation(Activation::Relu), &[1, 3, 4, 4], None)?;
    let err = CpuExecutor.run(&g, &[Tensor::zeros(vec![1, 3, 4, 5])]);
    let msg = match err {
        Err(Error::InvalidInput(m)) => m,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    assert!(
        msg.contains('x') && msg.contains("[1, 3, 4, 4]") && msg.contains("[1, 3, 4, 5]"),
        "{msg}"
    );
    assert!(matches!(
        CpuExecutor.run(&g, &[]),
        Err(Error::InvalidInput(_))
    ));
    Ok(())
}

#[test]
fn bad_prelu_slope_is_an_error_not_a_panic() -> R {
    let op = Op::Activation(Activation::PRelu {
        slope: Arc::new(vec![1., 2., 3.]),
    });
    let g = single(op, &[1, 2, 1, 1], None)?;
    assert!(matches!(
        cpu::run(&g, &[Tensor::zeros(vec![1, 2, 1, 1])]),
        Err(Error::Shape(_))
    ));
    Ok(())
}

#[test]
fn graph_output_that_is_also_consumed_survives() -> R {
    // x -> relu -> a (output) -> neg -> b (output); a is consumed and still returned.
    let mut g = Graph::default();
    let x = g.add_value("x", vec![2]);
    g.inputs.push(x);
    let a = g.add_node("relu", Op::Activation(Activation::Relu), vec![x], "a")?;
    let m = g.add_constant("m", Tensor::scalar(-1.));
    let b = g.add_node(
        "neg",
        Op::Binary {
            kind: BinaryKind::Mul,
            activation: Activation::Identity,
        },
        vec![a, m],
        "b",
    )?;
    g.outputs = vec![a, b, x];
    let y = cpu::run(&g, &[t(&[2], &[-1., 2.])])?;
    assert_eq!(y[0].data(), &[0., 2.]);
    assert_eq!(y[1].data(), &[-0., -2.]);
    assert_eq!(y[2].data(), &[-1., 2.]);
    Ok(())
}

/// Throughput of a 64->64 3x3 conv on a 128x128 map (the super-resolution
/// demo's shape). Ignored by default: a measurement, not a check. Run with
/// `cargo test -p tile-engine --release --test cpu_ops -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run explicitly in release"]
fn conv_throughput_128x128() -> R {
    let mut c = conv_op(Tensor::full(vec![64, 64, 3, 3], 0.01), Some(vec![0.0; 64]));
    c.pads = [1; 4];
    let g = single(Op::Conv(c), &[1, 64, 128, 128], None)?;
    let x = Tensor::full(vec![1, 64, 128, 128], 1.0);
    let flops = 2.0 * 64.0 * 64.0 * 9.0 * 128.0 * 128.0;
    cpu::run(&g, std::slice::from_ref(&x))?;
    let runs = 5;
    let start = std::time::Instant::now();
    for _ in 0..runs {
        cpu::run(&g, std::slice::from_ref(&x))?;
    }
    let secs = start.elapsed().as_secs_f64() / f64::from(runs);
    println!(
        "conv 64->64 3x3 128x128: {:.1} ms, {:.2} GFLOP/s",
        secs * 1e3,
        flops / secs / 1e9
    );
    Ok(())
}

/// A run whose result is no longer wanted stops at the next op: a node
/// freed of an abandoned request's tile serves the next one at once.
#[test]
fn run_until_stops_between_ops_once_told_to() -> R {
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 1, 2, 2]);
    g.inputs.push(x);
    let a = g.add_node("a", Op::Activation(Activation::Relu), vec![x], "a")?;
    let b = g.add_node("b", Op::Activation(Activation::Relu), vec![a], "b")?;
    g.outputs.push(b);
    let input = iota(&[1, 1, 2, 2]);
    let asked = std::cell::Cell::new(0);
    // Yes before the first op, no before the second.
    let keep_going = || {
        asked.set(asked.get() + 1);
        asked.get() < 2
    };
    let e = CpuExecutor
        .run_until(&g, std::slice::from_ref(&input), &keep_going)
        .expect_err("told to stop");
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert_eq!(asked.get(), 2);
    let all = CpuExecutor.run_until(&g, std::slice::from_ref(&input), &|| true)?;
    assert_eq!(all, CpuExecutor.run(&g, &[input])?);
    Ok(())
}
