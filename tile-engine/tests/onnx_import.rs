//! Import tests: each builds a small model with the generated prost structs
//! and checks the IR the importer makes of it.

mod onnx_support;

use onnx_support::*;
use tile_engine::ir::{Activation, CoordTransform, NearestMode, Op, PoolKind, ResizeMode};
use tile_engine::onnx::load_bytes;
use tile_engine::{Error, Graph};

/// The message of a model the importer refuses as unsupported.
fn unsupported(m: &tile_engine::onnx::proto::ModelProto) -> String {
    match load_bytes(&bytes(m)) {
        Err(Error::Unsupported(e)) => e,
        other => panic!("not refused as unsupported: {other:?}"),
    }
}

fn load(m: &tile_engine::onnx::proto::ModelProto) -> Graph {
    match load_bytes(&bytes(m)) {
        Ok(g) => g,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

/// A one-node model over one float input.
fn one_node(
    opset: i64,
    n: tile_engine::onnx::proto::NodeProto,
    inits: Vec<tile_engine::onnx::proto::TensorProto>,
    x: &[i64],
) -> tile_engine::onnx::proto::ModelProto {
    let out = n.output[0].clone();
    model(
        opset,
        vec![n],
        inits,
        vec![vis("x", x)],
        vec![vi(&out, &[])],
    )
}

fn single(
    opset: i64,
    n: tile_engine::onnx::proto::NodeProto,
    inits: Vec<tile_engine::onnx::proto::TensorProto>,
    x: &[i64],
) -> Vec<u8> {
    bytes(&one_node(opset, n, inits, x))
}

fn load_single(
    opset: i64,
    n: tile_engine::onnx::proto::NodeProto,
    inits: Vec<tile_engine::onnx::proto::TensorProto>,
    x: &[i64],
) -> Graph {
    match load_bytes(&single(opset, n, inits, x)) {
        Ok(g) => g,
        Err(e) => panic!("import failed: {e}"),
    }
}

#[test]
fn small_cnn_imports_with_folded_flatten() {
    let g = load(&small_cnn());
    // Initializers listed as inputs are constants: one runtime input.
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.shape(g.inputs[0]), &[1, 3, 16, 16]);
    // Shape → Gather → Unsqueeze → Concat folded: only the Reshape remains.
    assert_eq!(
        ops(&g),
        vec![
            "conv",
            "channelaffine",
            "activation",
            "maxpool",
            "conv",
            "binary",
            "globalpool",
            "reshape",
            "dense",
            "softmax"
        ]
    );
    assert_eq!(g.shape(g.outputs[0]), &[1, 10]);
    assert_eq!(g.values[g.outputs[0]].name, "prob");
    // SAME_UPPER, in 16, k 3, s 2 → out 8, one pixel of padding at the end.
    let Op::Conv(c) = &g.nodes[0].op else {
        panic!("not a conv")
    };
    assert_eq!(c.pads, [0, 0, 1, 1]);
    assert_eq!(c.strides, [2, 2]);
    assert_eq!(g.nodes[0].name, "conv1");
    // BatchNorm: scale / sqrt(var + eps), shift = b - mean * that.
    let Op::ChannelAffine { scale, shift } = &g.nodes[1].op else {
        panic!("not an affine")
    };
    let s1 = 0.5 / (2.0f64 + 1e-5).sqrt();
    assert!((f64::from(scale[1]) - s1).abs() < 1e-6);
    assert!((f64::from(shift[1]) - (0.2 - 0.1 * s1)).abs() < 1e-6);
    // The unused initializer is gone; no constant survives (all went into ops).
    assert!(g.values.iter().all(|v| v.name != "unused"));
    assert!(g.constants.is_empty());
}

#[test]
fn gemm_with_trans_b_alpha_beta_becomes_dense() {
    // B is [N=3, K=2] with transB: weight must be alpha * B^T = [K, N].
    let b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let n = node(
        "Gemm",
        "fc",
        &["x", "B", "C"],
        &["y"],
        vec![
            attr("transB", A::I(1)),
            attr("alpha", A::F(2.0)),
            attr("beta", A::F(0.5)),
        ],
    );
    let g = load_single(
        13,
        n,
        vec![tf("B", &[3, 2], &b), tf("C", &[3], &[10.0, 20.0, 30.0])],
        &[4, 2],
    );
    assert_eq!(ops(&g), vec!["dense"]);
    let Op::Dense { weight, bias, .. } = &g.nodes[0].op else {
        panic!("not dense")
    };
    assert_eq!(weight.shape(), &[2, 3]);
    assert_eq!(weight.data(), &[2.0, 6.0, 10.0, 4.0, 8.0, 12.0]);
    assert_eq!(
        bias.as_deref().map(Vec::as_slice),
        Some(&[5.0, 10.0, 15.0][..])
    );
    assert_eq!(g.shape(g.outputs[0]), &[4, 3]);
}

#[test]
fn gemm_with_full_c_and_runtime_b() {
    // C of shape [M, N] cannot be a bias: Dense + Add of beta * C.
    let n = node(
        "Gemm",
        "fc",
        &["x", "B", "C"],
        &["y"],
        vec![attr("beta", A::F(2.0))],
    );
    let g = load_single(
        13,
        n,
        vec![
            tf("B", &[2, 2], &[1.0; 4]),
            tf("C", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
        ],
        &[2, 2],
    );
    assert_eq!(ops(&g), vec!["dense", "binary"]);
    let c = &g.constants[&g.nodes[1].inputs[1]];
    assert_eq!(c.data(), &[2.0, 4.0, 6.0, 8.0]);
    // Runtime B: MatMul with transposes.
    let m = model(
        13,
        vec![node(
            "Gemm",
            "g",
            &["a", "b"],
            &["y"],
            vec![attr("transA", A::I(1))],
        )],
        vec![],
        vec![vis("a", &[3, 2]), vis("b", &[3, 4])],
        vec![vis("y", &[2, 4])],
    );
    let g = load(&m);
    assert_eq!(ops(&g), vec!["transpose", "matmul"]);
}

#[test]
fn matmul_with_constant_rank2_right_side_is_dense() {
    let n = node("MatMul", "mm", &["x", "W"], &["y"], vec![]);
    let g = load_single(13, n, vec![tf("W", &[4, 5], &weights(20, 9))], &[2, 3, 4]);
    // [2, 3, 4] flattened to [6, 4] around the dense and back.
    assert_eq!(ops(&g), vec!["reshape", "dense", "reshape"]);
    assert_eq!(g.shape(g.outputs[0]), &[2, 3, 5]);
    assert_eq!(g.values[g.outputs[0]].name, "y");
}

#[test]
fn softmax_legacy_coerces_to_2d() {
    let sm = || node("Softmax", "sm", &["x"], &["y"], vec![attr("axis", A::I(1))]);
    let g = load_single(11, sm(), vec![], &[2, 3, 4]);
    assert_eq!(ops(&g), vec!["reshape", "softmax", "reshape"]);
    assert_eq!(g.shape(g.nodes[0].output), &[2, 12]);
    assert_eq!(g.nodes[1].op, Op::Softmax { axis: 1 });
    assert_eq!(g.shape(g.outputs[0]), &[2, 3, 4]);
    // Opset 13: along the axis itself.
    let g = load_single(13, sm(), vec![], &[2, 3, 4]);
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.nodes[0].op, Op::Softmax { axis: 1 });
    // Legacy on the last axis needs no reshape.
    let n = node(
        "Softmax",
        "sm",
        &["x"],
        &["y"],
        vec![attr("axis", A::I(-1))],
    );
    let g = load_single(11, n, vec![], &[2, 3, 4]);
    assert_eq!(g.nodes[0].op, Op::Softmax { axis: 2 });
    // LogSoftmax follows the same rules.
    let lsm = || {
        node(
            "LogSoftmax",
            "lsm",
            &["x"],
            &["y"],
            vec![attr("axis", A::I(1))],
        )
    };
    let g = load_single(11, lsm(), vec![], &[2, 3, 4]);
    assert_eq!(ops(&g), vec!["reshape", "logsoftmax", "reshape"]);
    assert_eq!(g.nodes[1].op, Op::LogSoftmax { axis: 1 });
    let g = load_single(13, lsm(), vec![], &[2, 3, 4]);
    assert_eq!(g.nodes[0].op, Op::LogSoftmax { axis: 1 });
}

#[test]
fn reshape_zero_and_minus_one() {
    let n = node("Reshape", "r", &["x", "s"], &["y"], vec![]);
    let g = load_single(13, n, vec![ti("s", &[3], &[0, -1, 2])], &[2, 3, 4]);
    assert_eq!(g.shape(g.outputs[0]), &[2, 6, 2]);
    // allowzero: a literal 0 dimension; [2,3,4] cannot become [0, 24].
    let n = node(
        "Reshape",
        "r",
        &["x", "s"],
        &["y"],
        vec![attr("allowzero", A::I(1))],
    );
    let r = load_bytes(&single(14, n, vec![ti("s", &[2], &[0, 24])], &[2, 3, 4]));
    assert!(matches!(r, Err(Error::Malformed(_))), "{r:?}");
    // Two -1 are refused.
    let n = node("Reshape", "r", &["x", "s"], &["y"], vec![]);
    let r = load_bytes(&single(13, n, vec![ti("s", &[2], &[-1, -1])], &[2, 3, 4]));
    assert!(r.is_err());
}

#[test]
fn squeeze_unsqueeze_attr_and_input_forms() {
    let n = node(
        "Unsqueeze",
        "u",
        &["x"],
        &["y"],
        vec![attr("axes", A::Is(vec![0, -1]))],
    );
    let g = load_single(11, n, vec![], &[3, 4]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 3, 4, 1]);
    let n = node("Squeeze", "s", &["x", "a"], &["y"], vec![]);
    let g = load_single(13, n, vec![ti("a", &[1], &[2])], &[3, 4, 1]);
    assert_eq!(g.shape(g.outputs[0]), &[3, 4]);
    assert_eq!(ops(&g), vec!["reshape"]);
}

#[test]
fn resize_scales_versus_sizes() {
    let n = node(
        "Resize",
        "r",
        &["x", "", "sc"],
        &["y"],
        vec![attr("mode", A::S("nearest"))],
    );
    let g = load_single(
        13,
        n,
        vec![tf("sc", &[4], &[1.0, 1.0, 2.0, 2.5])],
        &[1, 2, 3, 4],
    );
    assert_eq!(g.shape(g.outputs[0]), &[1, 2, 6, 10]);
    // onnxruntime's output size: the product in float32 (60 · 1.1666666 is
    // 70.0 there, 69.99999 in float64), as a PyTorch `scale_factor=7/6` means.
    let n7 = node("Resize", "r", &["x", "", "sc"], &["y"], vec![]);
    let sc = [1.0, 1.0, 1.0, 7.0 / 6.0];
    let g7 = load_single(13, n7, vec![tf("sc", &[4], &sc)], &[1, 1, 1, 60]);
    assert_eq!(g7.shape(g7.outputs[0]), &[1, 1, 1, 70]);
    assert_eq!(
        g.nodes[0].op,
        Op::Resize {
            mode: ResizeMode::Nearest(NearestMode::RoundPreferFloor),
            coord: CoordTransform::HalfPixel,
            scales: [2.0, 2.5],
        }
    );
    let n = node(
        "Resize",
        "r",
        &["x", "", "", "sz"],
        &["y"],
        vec![
            attr("mode", A::S("linear")),
            attr("coordinate_transformation_mode", A::S("align_corners")),
        ],
    );
    let g = load_single(13, n, vec![ti("sz", &[4], &[1, 2, 4, 7])], &[1, 2, 3, 5]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 2, 4, 7]);
    assert_eq!(
        g.nodes[0].op,
        Op::Resize {
            mode: ResizeMode::Linear,
            coord: CoordTransform::AlignCorners,
            scales: [4.0 / 3.0, 7.0 / 5.0],
        }
    );
    // Upsample (opset 7): attribute scales, asymmetric + floor.
    let n = node(
        "Upsample",
        "u",
        &["x"],
        &["y"],
        vec![attr("scales", A::Fs(vec![1.0, 1.0, 2.0, 3.0]))],
    );
    let g = load_single(7, n, vec![], &[1, 1, 2, 2]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 1, 4, 6]);
    assert!(matches!(
        g.nodes[0].op,
        Op::Resize {
            mode: ResizeMode::Nearest(NearestMode::Floor),
            coord: CoordTransform::Asymmetric,
            ..
        }
    ));
}

#[test]
fn conv_auto_pad_same_lower_and_1d_lift() {
    let n = node(
        "Conv",
        "c",
        &["x", "w"],
        &["y"],
        vec![
            attr("auto_pad", A::S("SAME_LOWER")),
            attr("strides", A::Is(vec![2])),
        ],
    );
    let g = load_single(
        13,
        n,
        vec![tf("w", &[2, 3, 4], &weights(24, 3))],
        &[1, 3, 9],
    );
    assert_eq!(ops(&g), vec!["reshape", "conv", "reshape"]);
    let Op::Conv(c) = &g.nodes[1].op else {
        panic!()
    };
    // in 9, k 4, s 2 → out 5, total pad (5-1)*2 + 4 - 9 = 3, the larger half first.
    assert_eq!(c.pads, [0, 2, 0, 1]);
    assert_eq!(c.weight.shape(), &[2, 3, 1, 4]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 2, 5]);
}

#[test]
fn depthwise_conv_and_pools() {
    let nodes = vec![
        node(
            "Conv",
            "dw",
            &["x", "w"],
            &["c"],
            vec![
                attr("group", A::I(4)),
                attr("pads", A::Is(vec![1, 1, 1, 1])),
            ],
        ),
        node(
            "AveragePool",
            "ap",
            &["c"],
            &["a"],
            vec![
                attr("kernel_shape", A::Is(vec![2, 2])),
                attr("strides", A::Is(vec![2, 2])),
                attr("ceil_mode", A::I(1)),
                attr("count_include_pad", A::I(1)),
            ],
        ),
        node("GlobalMaxPool", "gmp", &["a"], &["y"], vec![]),
    ];
    let m = model(
        12,
        nodes,
        vec![tf("w", &[4, 1, 3, 3], &weights(36, 1))],
        vec![vis("x", &[1, 4, 7, 7])],
        vec![vis("y", &[1, 4, 1, 1])],
    );
    let g = load(&m);
    assert_eq!(ops(&g), vec!["dwconv", "avgpool", "globalpool"]);
    let Op::Pool(p) = &g.nodes[1].op else {
        panic!()
    };
    assert!(p.ceil_mode);
    assert_eq!(
        p.kind,
        PoolKind::Average {
            count_include_pad: true
        }
    );
    // 7 → ceil((7 - 2) / 2) + 1 = 4.
    assert_eq!(g.shape(g.nodes[1].output), &[1, 4, 4, 4]);
}

#[test]
fn activations_and_clip_forms() {
    let n = node(
        "Clip",
        "c",
        &["x"],
        &["y"],
        vec![attr("min", A::F(0.0)), attr("max", A::F(6.0))],
    );
    let g = load_single(9, n, vec![], &[1, 3]);
    assert_eq!(
        g.nodes[0].op,
        Op::Activation(Activation::Clip { min: 0.0, max: 6.0 })
    );
    let n = node("Clip", "c", &["x", "", "mx"], &["y"], vec![]);
    let g = load_single(13, n, vec![tf("mx", &[], &[6.0])], &[1, 3]);
    assert_eq!(
        g.nodes[0].op,
        Op::Activation(Activation::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0
        })
    );
    let n = node("PRelu", "p", &["x", "s"], &["y"], vec![]);
    let g = load_single(
        13,
        n,
        vec![tf("s", &[3, 1, 1], &[0.1, 0.2, 0.3])],
        &[1, 3, 2, 2],
    );
    assert!(
        matches!(&g.nodes[0].op, Op::Activation(Activation::PRelu { slope }) if slope.len() == 3)
    );
    // A [3] slope on an NCHW input broadcasts along W: not per channel, so
    // it becomes relu(x) + slope * min(x, 0) in binaries.
    let n = node("PRelu", "p", &["x", "s"], &["y"], vec![]);
    let g = load_single(13, n, vec![tf("s", &[3], &[0.1, 0.2, 0.3])], &[1, 3, 2, 3]);
    assert_eq!(ops(&g), vec!["activation", "binary", "binary", "binary"]);
    // A slope that does not broadcast onto the input is an error.
    let n = node("PRelu", "p", &["x", "s"], &["y"], vec![]);
    let r = load_bytes(&single(
        13,
        n,
        vec![tf("s", &[2], &[0.1, 0.2])],
        &[1, 3, 2, 3],
    ));
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn variadic_sum_becomes_a_chain_and_constants_fold() {
    let m = model(
        13,
        vec![
            node("Add", "k", &["c1", "c2"], &["k"], vec![]),
            node("Sum", "s", &["x", "x", "k"], &["y"], vec![]),
        ],
        vec![tf("c1", &[1], &[1.0]), tf("c2", &[3], &[1.0, 2.0, 3.0])],
        vec![vis("x", &[2, 3])],
        vec![vis("y", &[2, 3])],
    );
    let g = load(&m);
    assert_eq!(ops(&g), vec!["binary", "binary"]);
    let k = &g.constants[&g.nodes[1].inputs[1]];
    assert_eq!(k.data(), &[2.0, 3.0, 4.0]);
    assert_eq!(g.values[g.outputs[0]].name, "y");
}

/// `Mean` is the sum times `1/n`, as onnxruntime computes it (a division
/// by 3 differs in the last bit), folded when its inputs are constants;
/// MaxPool's indices output is dropped when nothing reads it and refused,
/// by name, when something does.
#[test]
fn mean_times_one_over_n_and_unread_pool_indices() {
    let pool = |outs: &[&str]| {
        node(
            "MaxPool",
            "mp",
            &["x"],
            outs,
            vec![
                attr("kernel_shape", A::Is(vec![2, 2])),
                attr("strides", A::Is(vec![1, 1])),
            ],
        )
    };
    let m = |outputs: Vec<tile_engine::onnx::proto::ValueInfoProto>| {
        model(
            13,
            vec![
                pool(&["p", "idx"]),
                node("Mean", "k", &["c", "c"], &["k"], vec![]),
                node("Mean", "mean", &["p", "x2", "k"], &["y"], vec![]),
            ],
            vec![
                tf("c", &[1], &[0.7]),
                tf(
                    "x2",
                    &[1, 2, 2, 2],
                    &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
                ),
            ],
            vec![vis("x", &[1, 2, 3, 3])],
            outputs,
        )
    };
    let g = load(&m(vec![vis("y", &[1, 2, 2, 2])]));
    assert_eq!(ops(&g), vec!["maxpool", "binary", "binary", "binary"]);
    let x: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin()).collect();
    let y = tile_engine::cpu::run(
        &g,
        &[tile_engine::Tensor::new(vec![1, 2, 3, 3], x.clone()).expect("x")],
    )
    .expect("runs");
    let x2 = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
    let k = (0.7f32 + 0.7) * 0.5;
    for (i, got) in y[0].data().iter().enumerate() {
        let (c, r, col) = (i / 4, i / 2 % 2, i % 2);
        let at = |dr: usize, dc: usize| x[c * 9 + (r + dr) * 3 + col + dc];
        let p = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
        let want = (p + x2[i] + k) * (1.0 / 3.0f32);
        assert_eq!(got.to_bits(), want.to_bits(), "at {i}: {got} vs {want}");
    }
    let e = unsupported(&m(vec![vis("y", &[1, 2, 2, 2]), vis("idx", &[1, 2, 2, 2])]));
    assert!(
        e.contains("only the first output") && e.contains("idx"),
        "{e}"
    );
}

#[test]
fn pad_dropout_identity_and_depth_to_space() {
    let m = model(
        13,
        vec![
            node("Pad", "p", &["x", "pads", "v"], &["p"], vec![]),
            node("Identity", "i", &["p"], &["i"], vec![]),
            node("Dropout", "d", &["i"], &["d"], vec![]),
            node(
                "DepthToSpace",
                "ds",
                &["d"],
                &["y"],
                vec![attr("blocksize", A::I(2)), attr("mode", A::S("CRD"))],
            ),
        ],
        vec![
            ti("pads", &[8], &[0, 0, 1, 2, 0, 0, 3, 4]),
            tf("v", &[], &[-1.0]),
        ],
        vec![vis("x", &[1, 8, 2, 2])],
        vec![vis("y", &[1, 2, 12, 16])],
    );
    let g = load(&m);
    assert_eq!(ops(&g), vec!["pad", "depthtospace"]);
    assert_eq!(
        g.nodes[0].op,
        Op::Pad {
            pads: [1, 2, 3, 4],
            value: -1.0
        }
    );
    // Padding the batch axis is refused with the op and node named.
    let n = node("Pad", "padc", &["x", "pads"], &["y"], vec![]);
    let r = load_bytes(&single(
        13,
        n,
        vec![ti("pads", &[8], &[1, 0, 0, 0, 0, 0, 0, 0])],
        &[1, 2, 2, 2],
    ));
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("op 'Pad' (node 'padc')"), "{e}");

    // An output that is an Identity of another tensor keeps the model's
    // name for it (an error about it named the inner tensor, "p").
    let m = model(
        13,
        vec![
            node("Pad", "p", &["x", "pads", "v"], &["p"], vec![]),
            node("Identity", "i", &["p"], &["y"], vec![]),
        ],
        vec![
            ti("pads", &[8], &[0, 0, 1, 2, 0, 0, 3, 4]),
            tf("v", &[], &[-1.0]),
        ],
        vec![vis("x", &[1, 8, 2, 2])],
        vec![vis("y", &[1, 8, 6, 8])],
    );
    let g = load(&m);
    assert_eq!(g.values[g.outputs[0]].name, "y");
}

#[test]
fn conv_transpose_output_shape_resolved() {
    let n = node(
        "ConvTranspose",
        "ct",
        &["x", "w"],
        &["y"],
        vec![
            attr("strides", A::Is(vec![3, 2])),
            attr("output_shape", A::Is(vec![10, 8])),
        ],
    );
    let g = load_single(
        13,
        n,
        vec![tf("w", &[1, 2, 3, 3], &weights(18, 2))],
        &[1, 1, 3, 3],
    );
    // Full output: H 3*2+3 = 9 < 10 → one row of output padding; W 2*2+3 = 7 < 8 → one column.
    let Op::ConvTranspose(c) = &g.nodes[0].op else {
        panic!()
    };
    assert_eq!(c.output_padding, [1, 1]);
    assert_eq!(c.pads, [0, 0, 0, 0]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 2, 10, 8]);
    let n = node(
        "ConvTranspose",
        "ct",
        &["x", "w"],
        &["y"],
        vec![
            attr("strides", A::Is(vec![2, 2])),
            attr("auto_pad", A::S("SAME_UPPER")),
        ],
    );
    let g = load_single(
        13,
        n,
        vec![tf("w", &[1, 2, 3, 3], &weights(18, 2))],
        &[1, 1, 3, 3],
    );
    // Full 7, target 6: total 1 → SAME_UPPER puts it at the end.
    let Op::ConvTranspose(c) = &g.nodes[0].op else {
        panic!()
    };
    assert_eq!(c.pads, [0, 0, 1, 1]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 2, 6, 6]);
}

#[test]
fn shape_subgraph_with_slice_cast_and_constant_of_shape() {
    // Shape(x)[2:] → Cast → Mul 2 → Concat([1, 3], ·) → Resize sizes.
    let m = model(
        13,
        vec![
            node("Shape", "sh", &["x"], &["s"], vec![]),
            node("Slice", "sl", &["s", "st", "en"], &["hw"], vec![]),
            node("Cast", "ca", &["hw"], &["hwf"], vec![attr("to", A::I(1))]),
            node("Mul", "mu", &["hwf", "two"], &["hw2f"], vec![]),
            node("Cast", "cb", &["hw2f"], &["hw2"], vec![attr("to", A::I(7))]),
            node(
                "Concat",
                "cc",
                &["nc", "hw2"],
                &["sizes"],
                vec![attr("axis", A::I(0))],
            ),
            node("Resize", "rs", &["x", "", "", "sizes"], &["y"], vec![]),
            node(
                "ConstantOfShape",
                "cos",
                &["nc"],
                &["ones"],
                vec![attr("value", A::T(Box::new(tf("v", &[1], &[1.0]))))],
            ),
            node("Range", "rg", &["r0", "r1", "r2"], &["rng"], vec![]),
        ],
        vec![
            ti("st", &[1], &[2]),
            ti("en", &[1], &[i64::MAX]),
            tf("two", &[], &[2.0]),
            ti("nc", &[2], &[1, 3]),
            ti("r0", &[], &[0]),
            ti("r1", &[], &[7]),
            ti("r2", &[], &[3]),
        ],
        vec![vis("x", &[1, 3, 4, 5])],
        vec![
            vis("y", &[1, 3, 8, 10]),
            vis("ones", &[1, 3]),
            vis("rng", &[3]),
        ],
    );
    let g = load(&m);
    assert_eq!(ops(&g), vec!["resize"]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 3, 8, 10]);
    // Constant outputs are materialised as graph constants.
    assert_eq!(g.constants[&g.outputs[1]].data(), &[1.0, 1.0, 1.0]);
    assert_eq!(g.constants[&g.outputs[2]].data(), &[0.0, 3.0, 6.0]);
}

#[test]
fn runtime_spatial_slice_is_a_crop() {
    let n = node("Slice", "sl", &["x", "st", "en", "ax"], &["y"], vec![]);
    let g = load_single(
        13,
        n,
        vec![
            ti("st", &[2], &[1, -3]),
            ti("en", &[2], &[3, 100]),
            ti("ax", &[2], &[2, 3]),
        ],
        &[1, 2, 5, 6],
    );
    assert_eq!(g.nodes[0].op, Op::Crop { offset: [1, 3] });
    assert_eq!(g.shape(g.outputs[0]), &[1, 2, 2, 3]);
}

#[test]
fn bad_models_give_named_errors() {
    // Unsupported op: names the op and the node.
    let n = node("NonMaxSuppression", "nms_3", &["x"], &["y"], vec![]);
    let e = load_bytes(&single(13, n, vec![], &[1, 4]))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("unsupported: op 'NonMaxSuppression' (node 'nms_3')")
    );
    // A node the file leaves unnamed is named by its position, not by a
    // made-up name no viewer of the file shows.
    let n = node("NonMaxSuppression", "", &["x"], &["y"], vec![]);
    let e = load_bytes(&single(13, n, vec![], &[1, 4]))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("unsupported: op 'NonMaxSuppression' (unnamed node #0 of the graph, counted from 0)")
    );
    // So is it in the graph builder's shape errors.
    let n = node("Add", "", &["x", "k"], &["y"], vec![]);
    let e = load_bytes(&single(
        13,
        n,
        vec![tf("k", &[3], &[1.0, 2.0, 3.0])],
        &[1, 4],
    ))
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("unnamed node #0 of the graph") && !e.contains("Add_0"),
        "{e}"
    );
    // Truncated file: malformed.
    let full = bytes(&small_cnn());
    assert!(matches!(
        load_bytes(&full[..full.len() / 2]),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(
        load_bytes(b"not an onnx file"),
        Err(Error::Malformed(_))
    ));
    // External data.
    let mut w = tf("W", &[2, 2], &[]);
    w.raw_data = None;
    w.data_location = Some(1);
    let n = node("MatMul", "mm", &["x", "W"], &["y"], vec![]);
    let e = load_bytes(&single(13, n, vec![w], &[1, 2]))
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("external")));
    // A symbolic non-batch dimension.
    let m = model(
        13,
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![],
        vec![vi("x", &[Some(1), None])],
        vec![vi("y", &[])],
    );
    let e = load_bytes(&bytes(&m)).err().map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("symbolic")));
    // A weight whose declared dims exceed its data is refused before allocating.
    let n = node("MatMul", "mm", &["x", "W"], &["y"], vec![]);
    let r = load_bytes(&single(
        13,
        n,
        vec![tf("W", &[1 << 20, 1 << 20], &[1.0])],
        &[1, 2],
    ));
    assert!(matches!(r, Err(Error::Malformed(_))), "{r:?}");
    // ConstantOfShape asking for 2^40 elements exceeds the folding budget.
    let m = model(
        13,
        vec![
            node("ConstantOfShape", "big", &["s"], &["z"], vec![]),
            node("Add", "a", &["x", "z"], &["y"], vec![]),
        ],
        vec![ti("s", &[2], &[1 << 20, 1 << 20])],
        vec![vis("x", &[1])],
        vec![vi("y", &[])],
    );
    assert!(matches!(load_bytes(&bytes(&m)), Err(Error::Limit(_))));
    // Opset outside the range.
    let n = node("Relu", "r", &["x"], &["y"], vec![]);
    assert!(matches!(
        load_bytes(&single(26, n, vec![], &[1])),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn legacy_forms_before_opset_7() {
    // Opset 6 Add with broadcast = 1, axis = 1: B [3] lines up with A's axis 1.
    let n = node(
        "Add",
        "a",
        &["x", "b"],
        &["y"],
        vec![attr("broadcast", A::I(1)), attr("axis", A::I(1))],
    );
    let g = load_single(6, n, vec![tf("b", &[3], &[1.0, 2.0, 3.0])], &[2, 3, 4, 5]);
    assert_eq!(ops(&g), vec!["reshape", "binary"]);
    assert_eq!(g.shape(g.nodes[0].output), &[3, 1, 1]);
    assert_eq!(g.shape(g.outputs[0]), &[2, 3, 4, 5]);
    // Opset 6 PRelu: a slope of C values is per channel.
    let n = node("PRelu", "p", &["x", "s"], &["y"], vec![]);
    let g = load_single(6, n, vec![tf("s", &[3], &[0.1, 0.2, 0.3])], &[2, 3, 4]);
    assert!(
        matches!(&g.nodes[0].op, Op::Activation(Activation::PRelu { slope }) if slope.len() == 3)
    );
    // Opset 16: the same slope broadcasts along the last axis → binaries.
    let n = node("PRelu", "p", &["x", "s"], &["y"], vec![]);
    let g = load_single(16, n, vec![tf("s", &[5], &[0.1; 5])], &[3, 4, 5]);
    assert_eq!(ops(&g), vec!["activation", "binary", "binary", "binary"]);
    assert_eq!(g.values[g.outputs[0]].name, "y");
}

#[test]
fn rank6_pixel_shuffle_transpose_is_lowered() {
    let n = node(
        "Transpose",
        "t",
        &["x"],
        &["y"],
        vec![attr("perm", A::Is(vec![0, 1, 4, 2, 5, 3]))],
    );
    let g = load_single(13, n, vec![], &[1, 3, 2, 2, 4, 5]);
    assert_eq!(ops(&g), vec!["reshape", "transpose", "reshape"]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 3, 4, 2, 5, 2]);
}

#[test]
fn a_wrong_output_annotation_yields_to_the_computed_shape() {
    // ceil_mode with a window that would start in the bottom padding: the
    // last row is dropped (7 rows, pads 1, k 2, s 2 → 4), as onnxruntime
    // computes; `onnx.shape_inference` annotates 5.
    let n = node(
        "MaxPool",
        "mp",
        &["x"],
        &["y"],
        vec![
            attr("kernel_shape", A::Is(vec![2, 2])),
            attr("strides", A::Is(vec![2, 2])),
            attr("pads", A::Is(vec![1, 1, 1, 1])),
            attr("ceil_mode", A::I(1)),
        ],
    );
    let m = model(
        13,
        vec![n],
        vec![],
        vec![vis("x", &[1, 2, 7, 8])],
        vec![vis("y", &[1, 2, 5, 5])],
    );
    let g = load(&m);
    assert_eq!(g.shape(g.outputs[0]), &[1, 2, 4, 5]);
}

#[test]
fn a_mean_or_max_over_h_and_w_is_a_global_pool() {
    let x: Vec<f32> = (0..2 * 3 * 4).map(|i| (i * 7 % 11) as f32).collect();
    let input = tile_engine::Tensor::new(vec![1, 2, 3, 4], x.clone()).expect("tensor");
    let mean = |c: usize| x[c * 12..(c + 1) * 12].iter().sum::<f32>() / 12.0;
    let max = |c: usize| {
        x[c * 12..(c + 1) * 12]
            .iter()
            .copied()
            .fold(f32::MIN, f32::max)
    };
    // (op, opset, axes as attribute or input, keepdims, expected ops, shape, values)
    type Case = (
        &'static str,
        i64,
        bool,
        i64,
        Vec<&'static str>,
        Vec<usize>,
        Vec<f32>,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("ReduceMean", 13, false, 1, vec!["globalpool"], vec![1, 2, 1, 1], vec![mean(0), mean(1)]),
        ("ReduceMean", 13, false, 0, vec!["globalpool", "reshape"], vec![1, 2], vec![mean(0), mean(1)]),
        ("ReduceMean", 18, true, 1, vec!["globalpool"], vec![1, 2, 1, 1], vec![mean(0), mean(1)]),
        ("ReduceMax", 13, false, 0, vec!["globalpool", "reshape"], vec![1, 2], vec![max(0), max(1)]),
    ];
    for (op, opset, axes_input, keepdims, want_ops, want_shape, want) in cases {
        let (inputs, attrs, inits) = if axes_input {
            (
                vec!["x", "axes"],
                vec![attr("keepdims", A::I(keepdims))],
                vec![ti("axes", &[2], &[-1, 2])],
            )
        } else {
            (
                vec!["x"],
                vec![
                    attr("axes", A::Is(vec![-1, 2])),
                    attr("keepdims", A::I(keepdims)),
                ],
                vec![],
            )
        };
        let n = node(op, "r", &inputs, &["y"], attrs);
        let g = load(&model(
            opset,
            vec![n],
            inits,
            vec![vis("x", &[1, 2, 3, 4])],
            vec![vi("y", &[])],
        ));
        assert_eq!(ops(&g), want_ops, "{op} opset {opset} keepdims {keepdims}");
        assert_eq!(g.shape(g.outputs[0]), want_shape.as_slice());
        let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
        let got = y[0].data();
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{op}: {got:?} vs {want:?}"
            );
        }
    }
    // Over other axes that keep the batch (a channels-last map's H and W,
    // as TF exports a squeeze-and-excitation; here C and H of NCHW): the
    // axes are moved last and pooled, for each remaining position.
    let at = |c: usize, h: usize, w: usize| x[c * 12 + h * 4 + w];
    let over_c_h = |w: usize, f: fn(f32, f32) -> f32, init: f32| {
        (0..2)
            .flat_map(|c| (0..3).map(move |h| (c, h)))
            .fold(init, |a, (c, h)| f(a, at(c, h, w)))
    };
    for (op, keepdims, shape) in [
        ("ReduceMean", 1, vec![1, 1, 1, 4]),
        ("ReduceMax", 0, vec![1, 4]),
    ] {
        let n = node(
            op,
            "r",
            &["x"],
            &["y"],
            vec![
                attr("axes", A::Is(vec![1, -2])),
                attr("keepdims", A::I(keepdims)),
            ],
        );
        let g = load(&model(
            13,
            vec![n],
            vec![],
            vec![vis("x", &[1, 2, 3, 4])],
            vec![vi("y", &[])],
        ));
        assert_eq!(g.shape(g.outputs[0]), shape.as_slice(), "{op}");
        let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
        let want: Vec<f32> = (0..4)
            .map(|w| match op {
                "ReduceMean" => over_c_h(w, |a, b| a + b, 0.0) / 6.0,
                _ => over_c_h(w, f32::max, f32::MIN),
            })
            .collect();
        let got = y[0].data();
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{op}: {got:?} vs {want:?}"
            );
        }
    }
    // Over the batch it is refused by name, not mis-imported.
    let n = node(
        "ReduceMean",
        "r",
        &["x"],
        &["y"],
        vec![attr("axes", A::Is(vec![0, 2]))],
    );
    let m = model(
        13,
        vec![n],
        vec![],
        vec![vis("x", &[1, 2, 3, 4])],
        vec![vi("y", &[])],
    );
    let e = unsupported(&m);
    assert!(e.contains("ReduceMean") && e.contains("axes [0, 2]"), "{e}");
}

#[test]
fn a_symbolic_batch_takes_the_batch_asked_for_and_a_fixed_one_stays() {
    // Flatten keeps the batch: its output shape shows the batch used.
    let m = |x: tile_engine::onnx::proto::ValueInfoProto| {
        bytes(&model(
            13,
            vec![node("Flatten", "f", &["x"], &["y"], vec![])],
            vec![],
            vec![x],
            vec![vi("y", &[])],
        ))
    };
    let symbolic = m(vi("x", &[None, Some(2), Some(3), Some(4)]));
    let g = tile_engine::onnx::load_bytes_for_input(&symbolic, &[3, 2, 3, 4]).expect("batch 3");
    assert_eq!(g.shape(g.inputs[0]), &[3, 2, 3, 4]);
    assert_eq!(g.shape(g.outputs[0]), &[3, 24]);
    let g = load_bytes(&symbolic).expect("default batch");
    assert_eq!(g.shape(g.inputs[0]), &[1, 2, 3, 4]);
    let fixed = m(vis("x", &[1, 2, 3, 4]));
    let g = tile_engine::onnx::load_bytes_for_input(&fixed, &[3, 2, 3, 4]).expect("fixed");
    assert_eq!(g.shape(g.inputs[0]), &[1, 2, 3, 4]);
}

#[test]
fn reductions_over_channels_become_channel_reduce() {
    use tile_engine::ir::ReduceKind;
    // x[0, c, i] = c * 10 + i - 7 over 3 channels and 2×2 positions.
    let x: Vec<f32> = (0..3)
        .flat_map(|c| (0..4).map(move |i| (c * 10 + i) as f32 - 7.0))
        .collect();
    let input = tile_engine::Tensor::new(vec![1, 3, 2, 2], x.clone()).expect("input");
    let at = |c: usize, i: usize| x[c * 4 + i];
    let over = |f: fn(f32, f32) -> f32| -> Vec<f32> {
        (0..4).map(|i| f(f(at(0, i), at(1, i)), at(2, i))).collect()
    };
    let sum = over(|a, b| a + b);
    /// (op, opset, axes as an input, keepdims, kind, output shape, values)
    type Case = (
        &'static str,
        i64,
        bool,
        i64,
        ReduceKind,
        Vec<usize>,
        Vec<f32>,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("ReduceMean", 13, false, 1, ReduceKind::Mean, vec![1, 1, 2, 2], sum.iter().map(|s| s / 3.0).collect()),
        ("ReduceMax", 18, true, 1, ReduceKind::Max, vec![1, 1, 2, 2], over(f32::max)),
        ("ReduceMin", 13, false, 0, ReduceKind::Min, vec![1, 2, 2], over(f32::min)),
        ("ReduceSum", 13, true, 1, ReduceKind::Sum, vec![1, 1, 2, 2], sum.clone()),
        ("ReduceSum", 11, false, 0, ReduceKind::Sum, vec![1, 2, 2], sum.clone()),
    ];
    for (op, opset, axes_input, keepdims, kind, want_shape, want) in cases {
        let keep = attr("keepdims", A::I(keepdims));
        let (inputs, attrs, inits) = if axes_input {
            (vec!["x", "axes"], vec![keep], vec![ti("axes", &[1], &[-3])])
        } else {
            (vec!["x"], vec![attr("axes", A::Is(vec![1])), keep], vec![])
        };
        let g = load(&model(
            opset,
            vec![node(op, "r", &inputs, &["y"], attrs)],
            inits,
            vec![vis("x", &[1, 3, 2, 2])],
            vec![vi("y", &[])],
        ));
        assert_eq!(g.nodes[0].op, Op::ChannelReduce(kind), "{op}");
        assert_eq!(g.shape(g.outputs[0]), want_shape.as_slice(), "{op}");
        let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
        assert_eq!(y[0].data(), want.as_slice(), "{op} opset {opset}");
    }
    // ReduceL2 (F.normalize's norm), ArgMax and ArgMin across channels.
    let l2: Vec<f32> = (0..4)
        .map(|i| (at(0, i) * at(0, i) + at(1, i) * at(1, i) + at(2, i) * at(2, i)).sqrt())
        .collect();
    for (op, attrs, kind, want) in [
        (
            "ReduceL2",
            vec![attr("axes", A::Is(vec![1]))],
            ReduceKind::L2,
            l2,
        ),
        (
            "ArgMax",
            vec![attr("axis", A::I(1))],
            ReduceKind::ArgMax,
            vec![2.0; 4],
        ),
        (
            "ArgMin",
            vec![attr("axis", A::I(-3))],
            ReduceKind::ArgMin,
            vec![0.0; 4],
        ),
    ] {
        let g = load(&one_node(
            13,
            node(op, "r", &["x"], &["y"], attrs),
            vec![],
            &[1, 3, 2, 2],
        ));
        assert_eq!(g.nodes[0].op, Op::ChannelReduce(kind), "{op}");
        let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
        assert_eq!(y[0].data(), want.as_slice(), "{op}");
    }
    // Ties go to the first index; ArgMax keepdims = 0 drops the channel axis.
    let tie = tile_engine::Tensor::new(vec![1, 3, 1, 1], vec![5.0, 7.0, 7.0]).expect("tie");
    let g = load(&one_node(
        13,
        node(
            "ArgMax",
            "a",
            &["x"],
            &["y"],
            vec![attr("axis", A::I(1)), attr("keepdims", A::I(0))],
        ),
        vec![],
        &[1, 3, 1, 1],
    ));
    assert_eq!(g.shape(g.outputs[0]), &[1, 1, 1]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&tie)).expect("run");
    assert_eq!(y[0].data(), [1.0]);
    // A mean over a flattened map's last axis ([N, C, L]) is a global pool.
    let g = load(&one_node(
        13,
        node(
            "ReduceMean",
            "m",
            &["x"],
            &["y"],
            vec![attr("axes", A::Is(vec![-1])), attr("keepdims", A::I(0))],
        ),
        vec![],
        &[1, 3, 4],
    ));
    assert_eq!(g.shape(g.outputs[0]), &[1, 3]);
    let flat = tile_engine::Tensor::new(vec![1, 3, 4], x.clone()).expect("flat");
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&flat)).expect("run");
    let means: Vec<f32> = (0..3)
        .map(|c| (0..4).map(|i| at(c, i)).sum::<f32>() / 4.0)
        .collect();
    assert_eq!(y[0].data(), means.as_slice());
    // No axes: the identity with noop_with_empty_axes, else refused as a
    // reduction over every axis.
    for (noop, want) in [(1, Ok(())), (0, Err("every axis"))] {
        let m = model(
            13,
            vec![
                node(
                    "ReduceSum",
                    "r",
                    &["x"],
                    &["s"],
                    vec![attr("noop_with_empty_axes", A::I(noop))],
                ),
                node("Relu", "relu", &["s"], &["y"], vec![]),
            ],
            vec![],
            vec![vis("x", &[1, 3, 2, 2])],
            vec![vi("y", &[])],
        );
        match (load_bytes(&bytes(&m)), want) {
            (Ok(g), Ok(())) => assert_eq!(ops(&g), vec!["activation"]),
            (Err(Error::Unsupported(e)), Err(w)) => assert!(e.contains(w), "{e}"),
            (other, _) => panic!("noop {noop}: {other:?}"),
        }
    }
}

#[test]
fn pow_by_a_constant_scalar_becomes_products_or_roots() {
    let input =
        tile_engine::Tensor::new(vec![1, 1, 1, 4], vec![0.25, 2.0, 9.0, -3.0]).expect("input");
    let cases: Vec<(f32, Vec<&str>, Vec<f32>)> = vec![
        (2.0, vec!["binary"], vec![0.0625, 4.0, 81.0, 9.0]),
        (
            3.0,
            vec!["binary", "binary"],
            vec![0.015625, 8.0, 729.0, -27.0],
        ),
        (
            0.5,
            vec!["activation"],
            vec![0.5, 2f32.sqrt(), 3.0, f32::NAN],
        ),
        (
            -1.0,
            vec!["activation"],
            vec![4.0, 0.5, 1.0 / 9.0, -1.0 / 3.0],
        ),
        (
            -0.5,
            vec!["activation", "activation"],
            vec![2.0, 2f32.sqrt().recip(), 1.0 / 3.0, f32::NAN],
        ),
        (1.0, vec![], vec![0.25, 2.0, 9.0, -3.0]),
    ];
    for (e, want_ops, want) in cases {
        let g = load(&one_node(
            13,
            node("Pow", "p", &["x", "e"], &["y"], vec![]),
            vec![tf("e", &[], &[e])],
            &[1, 1, 1, 4],
        ));
        assert_eq!(ops(&g), want_ops, "exponent {e}");
        let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
        for (a, b) in y[0].data().iter().zip(&want) {
            assert!(
                (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "exponent {e}: {:?} vs {want:?}",
                y[0].data()
            );
        }
    }
    // A power of a constant is folded, whatever the exponent: here a conv
    // weight squared and then raised to 1.5, which must stay a weight.
    let m = model(
        13,
        vec![
            node("Pow", "sq", &["w", "two"], &["w2"], vec![]),
            node("Pow", "p15", &["w2", "e"], &["w3"], vec![]),
            node("Conv", "c", &["x", "w3"], &["y"], vec![]),
        ],
        vec![
            tf("w", &[1, 1, 1, 1], &[-2.0]),
            tf("two", &[], &[2.0]),
            tf("e", &[], &[1.5]),
        ],
        vec![vis("x", &[1, 1, 1, 4])],
        vec![vi("y", &[])],
    );
    let g = load(&m);
    assert_eq!(ops(&g), vec!["conv"]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    assert_eq!(y[0].data(), [2.0, 16.0, 72.0, -24.0]);
    // A one-element exponent of higher rank would raise the output's rank.
    let m = one_node(
        13,
        node("Pow", "p", &["x", "e"], &["y"], vec![]),
        vec![tf("e", &[1, 1, 1, 1, 1], &[2.0])],
        &[1, 1, 1, 4],
    );
    let e = unsupported(&m);
    assert!(e.contains("raise the rank-4"), "{e}");
    // Any other power is refused by name.
    let m = one_node(
        13,
        node("Pow", "p", &["x", "e"], &["y"], vec![]),
        vec![tf("e", &[], &[1.5])],
        &[1, 1, 1, 4],
    );
    let e = unsupported(&m);
    assert!(e.contains("Pow") && e.contains("1.5"), "{e}");
}

/// The values of a model whose output is folded to a constant by the importer.
fn folded(
    nodes: Vec<tile_engine::onnx::proto::NodeProto>,
    inits: Vec<tile_engine::onnx::proto::TensorProto>,
) -> Vec<f32> {
    // A runtime input the graph never reads: the output is all constants.
    let g = load(&model(
        13,
        nodes,
        inits,
        vec![vis("unused", &[1])],
        vec![vi("y", &[])],
    ));
    let t = g
        .constants
        .get(&g.outputs[0])
        .expect("the output is a folded constant");
    t.data().to_vec()
}

#[test]
fn shape_arithmetic_rounds_compares_and_selects_on_constants() {
    let halves = || vec![tf("x", &[5], &[-1.5, -0.5, 0.5, 1.5, 2.5])];
    let un = |op: &str| folded(vec![node(op, "u", &["x"], &["y"], vec![])], halves());
    assert_eq!(un("Floor"), [-2.0, -1.0, 0.0, 1.0, 2.0]);
    assert_eq!(un("Ceil"), [-1.0, -0.0, 1.0, 2.0, 3.0]);
    // Round: half to even, as ONNX (and numpy) define it.
    assert_eq!(un("Round"), [-2.0, -0.0, 0.0, 2.0, 2.0]);
    // Mod: the divisor's sign by default, the dividend's with fmod = 1.
    let modulo = |fmod, inputs| {
        folded(
            vec![node(
                "Mod",
                "m",
                &["a", "b"],
                &["y"],
                vec![attr("fmod", A::I(fmod))],
            )],
            inputs,
        )
    };
    let ints = || {
        vec![
            ti("a", &[4], &[7, -7, 7, -7]),
            ti("b", &[4], &[3, 3, -3, -3]),
        ]
    };
    assert_eq!(modulo(0, ints()), [1.0, 2.0, -2.0, -1.0]);
    assert_eq!(modulo(1, ints()), [1.0, -1.0, 1.0, -1.0]);
    // Floats follow the same two rules (numpy's mod and C's fmod).
    let floats = || vec![tf("a", &[2], &[5.5, -5.5]), tf("b", &[1], &[2.0])];
    assert_eq!(modulo(0, floats()), [1.5, 0.5]);
    assert_eq!(modulo(1, floats()), [1.5, -1.5]);
    // Comparisons broadcast and give 0/1; Where picks by them:
    // Where(Less(a, b), a, b) is the smaller of each pair.
    let pairs = || vec![ti("a", &[3], &[1, 5, 3]), ti("b", &[1], &[3])];
    let cmp = |op: &str| folded(vec![node(op, "c", &["a", "b"], &["y"], vec![])], pairs());
    assert_eq!(cmp("Less"), [1.0, 0.0, 0.0]);
    assert_eq!(cmp("LessOrEqual"), [1.0, 0.0, 1.0]);
    assert_eq!(cmp("Greater"), [0.0, 1.0, 0.0]);
    assert_eq!(cmp("GreaterOrEqual"), [0.0, 1.0, 1.0]);
    assert_eq!(cmp("Equal"), [0.0, 0.0, 1.0]);
    let min = folded(
        vec![
            node("Less", "l", &["a", "b"], &["c"], vec![]),
            node("Not", "n", &["c"], &["nc"], vec![]),
            node("Xor", "x", &["c", "nc"], &["all"], vec![]),
            node("And", "and", &["all", "c"], &["c2"], vec![]),
            node("Where", "w", &["c2", "a", "b"], &["y"], vec![]),
        ],
        pairs(),
    );
    assert_eq!(min, [1.0, 3.0, 3.0]);
    // On a feature map they are refused by name.
    let m = one_node(
        13,
        node("Floor", "f", &["x"], &["y"], vec![]),
        vec![],
        &[1, 2, 3, 4],
    );
    let e = unsupported(&m);
    assert!(e.contains("Floor") && e.contains("constants"), "{e}");
}

#[test]
fn hostile_sizes_in_the_rewritten_ops_are_refused_without_a_panic() {
    let one = |n, inits, x: &[i64]| load_bytes(&single(13, n, inits, x));
    let s2d = |b: i64| {
        node(
            "SpaceToDepth",
            "s",
            &["x"],
            &["y"],
            vec![attr("blocksize", A::I(b))],
        )
    };
    // An empty map, and a blocksize that would emit 2·b² nodes.
    assert!(one(s2d(2), vec![], &[1, 1, 0, 4]).is_err());
    assert!(one(s2d(1 << 12), vec![], &[1, 1, 4096, 4096]).is_err());
    // A pad whose negation overflows.
    let pad = node("Pad", "p", &["x", "pads"], &["y"], vec![]);
    let pads = vec![ti("pads", &[8], &[0, 0, i64::MIN, 0, 0, 0, 0, 0])];
    assert!(one(pad, pads, &[1, 1, 4, 4]).is_err());
    // An Expand far beyond what the file justifies.
    let e = node("Expand", "e", &["x", "s"], &["y"], vec![]);
    let s = vec![ti("s", &[4], &[1, 1, 1 << 20, 1 << 20])];
    assert!(one(e, s, &[1, 1, 1, 1]).is_err());
}

#[test]
fn expand_broadcasts_a_runtime_map() {
    // [1, 1, 2, 2] to [1, 3, 2, 2] (F.normalize's norm expanded to x).
    let m = one_node(
        13,
        node("Expand", "e", &["x", "s"], &["y"], vec![]),
        vec![ti("s", &[4], &[1, 3, 2, 2])],
        &[1, 1, 2, 2],
    );
    let g = load(&m);
    assert_eq!(g.shape(g.outputs[0]), &[1, 3, 2, 2]);
    let input = tile_engine::Tensor::new(vec![1, 1, 2, 2], vec![1.0, -2.0, 3.0, -0.0]).expect("x");
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    // The bits, -0.0 included, as onnxruntime copies them.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(y[0].data()), bits(&[1.0, -2.0, 3.0, -0.0].repeat(3)));
    // Expanding to the same shape is the identity.
    let m = one_node(
        13,
        node("Expand", "e", &["x", "s"], &["y"], vec![]),
        vec![ti("s", &[2], &[2, 1])],
        &[1, 1, 2, 2],
    );
    assert!(load(&m).nodes.is_empty());
}

/// `Tile` copies: a size-1 axis is broadcast (how tf2onnx writes Keras 3's
/// nearest `UpSampling2D`: unsqueeze, tile, reshape), another axis is
/// concatenated from copies, and a constant is folded.
#[test]
fn tile_repeats_a_map_bit_for_bit() {
    let x: Vec<f32> = vec![1.0, -0.0, 2.5, -3.0, 4.0, f32::NAN];
    let input = tile_engine::Tensor::new(vec![1, 2, 1, 3], x.clone()).expect("x");
    let m = one_node(
        13,
        node("Tile", "t", &["x", "r"], &["y"], vec![]),
        vec![ti("r", &[4], &[1, 2, 2, 1])],
        &[1, 2, 1, 3],
    );
    let g = load(&m);
    assert_eq!(g.shape(g.outputs[0]), &[1, 4, 2, 3]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    // y[0, c, h, w] = x[0, c % 2, 0, w].
    let want: Vec<u32> = (0..4)
        .flat_map(|c| (0..2).flat_map(move |_| (0..3).map(move |w| (c % 2) * 3 + w)))
        .map(|i| x[i].to_bits())
        .collect();
    let got: Vec<u32> = y[0].data().iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want);
    // A constant input is folded: only the Add is left.
    let m = model(
        13,
        vec![
            node("Tile", "t", &["c", "r"], &["k"], vec![]),
            node("Add", "a", &["x", "k"], &["y"], vec![]),
        ],
        vec![tf("c", &[1, 2], &[7.0, 8.0]), ti("r", &[2], &[2, 2])],
        vec![vis("x", &[2, 4])],
        vec![vi("y", &[])],
    );
    let g = load(&m);
    assert_eq!(ops(&g), ["binary"]);
    let x = tile_engine::Tensor::new(vec![2, 4], vec![0.0; 8]).expect("x");
    let y = tile_engine::cpu::run(&g, &[x]).expect("run");
    assert_eq!(y[0].data(), [7.0, 8.0, 7.0, 8.0, 7.0, 8.0, 7.0, 8.0]);
    // A zero repeat is refused by name.
    let m = one_node(
        13,
        node("Tile", "t", &["x", "r"], &["y"], vec![]),
        vec![ti("r", &[4], &[1, 0, 1, 1])],
        &[1, 2, 1, 3],
    );
    assert!(unsupported(&m).contains("a repeat of 0"));
}

#[test]
fn a_float16_model_runs_in_float32() {
    use tile_engine::onnx::proto::{tensor_proto::DataType, type_proto};
    // Input and output declared float16, with the Casts a mixed-precision
    // export puts around a float32 op: they are no-ops here.
    let mut x = vis("x", &[1, 2, 2, 2]);
    if let Some(type_proto::Value::TensorType(t)) = x.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(DataType::Float16 as i32);
    }
    let m = model(
        13,
        vec![
            node(
                "Cast",
                "up",
                &["x"],
                &["x32"],
                vec![attr("to", A::I(DataType::Float as i64))],
            ),
            node("Relu", "relu", &["x32"], &["r"], vec![]),
            node(
                "Cast",
                "down",
                &["r"],
                &["y"],
                vec![attr("to", A::I(DataType::Float16 as i64))],
            ),
        ],
        vec![],
        vec![x],
        vec![vi("y", &[])],
    );
    let g = load(&m);
    assert_eq!(ops(&g), vec!["activation"]);
    let input = tile_engine::Tensor::new(
        vec![1, 2, 2, 2],
        vec![-1.0, 2.0, -3.0, 4.0, 0.5, -0.5, 1e-9, 7.0],
    )
    .expect("input");
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    assert_eq!(y[0].data(), [0.0, 2.0, 0.0, 4.0, 0.5, 0.0, 1e-9, 7.0]);
    // An integer input is still refused, with its type named.
    let mut i = vis("x", &[1, 2]);
    if let Some(type_proto::Value::TensorType(t)) = i.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(DataType::Int64 as i32);
    }
    let m = model(
        13,
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![],
        vec![i],
        vec![vi("y", &[])],
    );
    let e = unsupported(&m);
    assert!(e.contains("INT64"), "{e}");
}

#[test]
fn symbolic_height_and_width_take_the_input_size() {
    // The small CNN (global pool, then a reshape whose target a folded
    // Shape subgraph computes) with batch, height and width left open.
    let mut m = small_cnn();
    let g = m.graph.as_mut().expect("graph");
    let x = g
        .input
        .iter_mut()
        .find(|v| v.name.as_deref() == Some("x"))
        .expect("x");
    *x = vi("x", &[None, Some(3), None, None]);
    let open = bytes(&m);
    let g = tile_engine::onnx::load_bytes_for_input(&open, &[2, 3, 20, 12]).expect("20x12");
    assert_eq!(g.shape(g.inputs[0]), &[2, 3, 20, 12]);
    assert_eq!(g.shape(g.outputs[0]), &[2, 10]);
    // The same numbers as the model declared at that size.
    *m.graph
        .as_mut()
        .and_then(|g| g.input.iter_mut().find(|v| v.name.as_deref() == Some("x")))
        .expect("x") = vis("x", &[2, 3, 20, 12]);
    let fixed = tile_engine::onnx::load_bytes(&bytes(&m)).expect("fixed");
    let input =
        tile_engine::Tensor::new(vec![2, 3, 20, 12], weights(2 * 3 * 20 * 12, 9)).expect("input");
    let run = |g: &Graph| tile_engine::cpu::run(g, std::slice::from_ref(&input)).expect("run");
    assert_eq!(run(&g)[0].data(), run(&fixed)[0].data());
    // Without an input, an open height has no size; an input of another
    // rank is refused with the shape the model declares.
    match tile_engine::onnx::load_bytes_for_input(&open, &[]) {
        Err(Error::Unsupported(e)) => {
            assert!(
                e.contains("dimension 2 is symbolic") && e.contains("rank 4"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    match tile_engine::onnx::load_bytes_for_input(&open, &[1, 3, 20]) {
        Err(Error::InvalidInput(e)) => assert!(
            e.contains(", 3, ") && e.contains("(rank 4)") && e.contains("[1, 3, 20] (rank 3)"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    match tile_engine::onnx::load_bytes_for_input(&open, &[1, 3, 0, 5]) {
        Err(Error::InvalidInput(e)) => assert!(e.contains("dimension 2 would be 0"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Planning without an input: batch 1, a 224×224 image.
    assert_eq!(
        tile_engine::onnx::planning_shape(&open),
        Some(vec![1, 3, 224, 224])
    );
    assert_eq!(
        tile_engine::onnx::planning_shape(&bytes(&m)),
        Some(vec![2, 3, 20, 12])
    );
}

#[test]
fn split_and_slice_of_a_runtime_map_cut_channels_or_rows() {
    let x: Vec<f32> = (0..6 * 4 * 3).map(|i| i as f32).collect();
    let input = tile_engine::Tensor::new(vec![1, 6, 4, 3], x.clone()).expect("tensor");
    let plane = 12;
    // Split along C at opset 13 (sizes as an input): two channel slices.
    let n = node(
        "Split",
        "s",
        &["x", "sizes"],
        &["a", "b"],
        vec![attr("axis", A::I(1))],
    );
    let m = model(
        13,
        vec![n, node("Add", "y", &["a", "b"], &["y"], vec![])],
        vec![ti("sizes", &[2], &[3, 3])],
        vec![vis("x", &[1, 6, 4, 3])],
        vec![vi("y", &[])],
    );
    let g = load(&m);
    assert_eq!(ops(&g), vec!["channelslice", "channelslice", "binary"]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    let want: Vec<f32> = (0..3 * plane).map(|i| x[i] + x[i + 3 * plane]).collect();
    assert_eq!(y[0].data(), want.as_slice());
    // One node over x [1, 6, 4, 3] whose output y is the graph's.
    let one = |opset, n, inits| {
        model(
            opset,
            vec![n],
            inits,
            vec![vis("x", &[1, 6, 4, 3])],
            vec![vi("y", &[])],
        )
    };
    // An opset-11 Split into a and y, sizes as an attribute.
    let split11 = |axis: i64, sizes: Vec<i64>| {
        let attrs = vec![attr("axis", A::I(axis)), attr("split", A::Is(sizes))];
        one(11, node("Split", "s", &["x"], &["a", "y"], attrs), vec![])
    };
    // Split along H into unequal parts: crops.
    let g = load(&split11(2, vec![1, 3]));
    assert_eq!(g.shape(g.outputs[0]), &[1, 6, 3, 3]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    let want: Vec<f32> = (0..6)
        .flat_map(|c| x[c * plane + 3..(c + 1) * plane].to_vec())
        .collect();
    assert_eq!(y[0].data(), want.as_slice());
    // Slice of channels 1..4: one channel slice.
    let n = node("Slice", "s", &["x", "st", "en", "ax"], &["y"], vec![]);
    let bounds = vec![
        ti("st", &[1], &[1]),
        ti("en", &[1], &[4]),
        ti("ax", &[1], &[1]),
    ];
    let g = load(&one(13, n, bounds));
    assert_eq!(ops(&g), vec!["channelslice"]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    assert_eq!(y[0].data(), &x[plane..4 * plane]);
    // Parts that do not add up are a malformed model, not a panic.
    let m = split11(1, vec![2, 2]);
    assert!(matches!(load_bytes(&bytes(&m)), Err(Error::Malformed(_))));
}

#[test]
fn strided_spatial_slices_pick_every_step_th_pixel() {
    // YOLOv5's Focus: the four 2×2 phases of x, concatenated on C; plus an
    // odd crop with steps 3 and 2 that ends before the map does.
    let (c, h, w) = (2usize, 8usize, 6usize);
    let x: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
    let input = tile_engine::Tensor::new(vec![1, c, h, w], x.clone()).expect("input");
    let at = |ch: usize, y: usize, xx: usize| x[(ch * h + y) * w + xx];
    let phase = |i: usize, dy: i64, dx: i64| {
        (
            node(
                "Slice",
                &format!("s{i}"),
                &["x", &format!("st{i}"), "en", "ax", "sp"],
                &[&format!("p{i}")],
                vec![],
            ),
            ti(&format!("st{i}"), &[2], &[dy, dx]),
        )
    };
    let (mut nodes, mut inits) = (Vec::new(), Vec::new());
    for (i, (dy, dx)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
        let (n, st) = phase(i, dy, dx);
        nodes.push(n);
        inits.push(st);
    }
    nodes.push(node(
        "Concat",
        "cat",
        &["p0", "p1", "p2", "p3"],
        &["y"],
        vec![attr("axis", A::I(1))],
    ));
    inits.extend([
        ti("en", &[2], &[i64::MAX, i64::MAX]),
        ti("ax", &[2], &[2, 3]),
        ti("sp", &[2], &[2, 2]),
    ]);
    let g = load(&model(
        13,
        nodes,
        inits,
        vec![vis("x", &[1, c as i64, h as i64, w as i64])],
        vec![vi("y", &[])],
    ));
    assert_eq!(g.shape(g.outputs[0]), &[1, 4 * c, 4, 3]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    let mut want = Vec::new();
    for (dy, dx) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        for ch in 0..c {
            for yy in (dy..h).step_by(2) {
                for xx in (dx..w).step_by(2) {
                    want.push(at(ch, yy, xx));
                }
            }
        }
    }
    assert_eq!(y[0].data(), want.as_slice());
    // Rows 1, 4 (1..6 by 3) and columns 2, 4 (2..5 by 2).
    let n = node("Slice", "s", &["x", "st", "en", "ax", "sp"], &["y"], vec![]);
    let inits = vec![
        ti("st", &[2], &[1, 2]),
        ti("en", &[2], &[6, 5]),
        ti("ax", &[2], &[2, 3]),
        ti("sp", &[2], &[3, 2]),
    ];
    let g = load(&model(
        13,
        vec![n],
        inits,
        vec![vis("x", &[1, c as i64, h as i64, w as i64])],
        vec![vi("y", &[])],
    ));
    assert_eq!(ops(&g), vec!["crop", "maxpool"]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    let want: Vec<f32> = (0..c)
        .flat_map(|ch| {
            [1, 4]
                .into_iter()
                .flat_map(move |yy| [2, 4].map(|xx| at(ch, yy, xx)))
        })
        .collect();
    assert_eq!(y[0].data(), want.as_slice());
}

#[test]
fn constant_pads_of_channels_copy_the_map_exactly() {
    // F.pad over C and H: one channel before, two after, one row below.
    let x: Vec<f32> = (0..8).map(|i| i as f32 * 1.7 - 5.0).collect();
    let input = tile_engine::Tensor::new(vec![1, 2, 2, 2], x.clone()).expect("input");
    let pad = |mode: &'static str| {
        one_node(
            13,
            node(
                "Pad",
                "p",
                &["x", "pads", "v"],
                &["y"],
                vec![attr("mode", A::S(mode))],
            ),
            vec![
                ti("pads", &[8], &[0, 1, 0, 0, 0, 2, 1, 0]),
                tf("v", &[], &[0.5]),
            ],
            &[1, 2, 2, 2],
        )
    };
    let g = load(&pad("constant"));
    assert_eq!(g.shape(g.outputs[0]), &[1, 5, 3, 2]);
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run");
    let mut want = vec![0.5f32; 5 * 3 * 2];
    for c in 0..2 {
        for i in 0..4 {
            want[(c + 1) * 6 + i] = x[c * 4 + i];
        }
    }
    assert_eq!(y[0].data(), want.as_slice());
    // Negative pads crop after the positive ones pad: edge-pad two rows at
    // the bottom, then drop the top row and the last column.
    let m = one_node(
        13,
        node(
            "Pad",
            "p",
            &["x", "pads"],
            &["y"],
            vec![attr("mode", A::S("edge"))],
        ),
        vec![ti("pads", &[8], &[0, 0, -1, 0, 0, 0, 2, -1])],
        &[1, 1, 4, 3],
    );
    let g = load(&m);
    assert_eq!(g.shape(g.outputs[0]), &[1, 1, 5, 2]);
    let x43: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let t = tile_engine::Tensor::new(vec![1, 1, 4, 3], x43).expect("x");
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&t)).expect("run");
    // Rows 1, 2, 3, then row 3 twice more; columns 0 and 1.
    let want = [3.0, 4.0, 6.0, 7.0, 9.0, 10.0, 9.0, 10.0, 9.0, 10.0];
    assert_eq!(y[0].data(), want);
    // Reflecting channels has no meaning for a map: refused by name.
    let e = unsupported(&pad("reflect"));
    assert!(e.contains("Pad") && e.contains("C (constant)"), "{e}");
}

#[test]
fn a_slice_that_reverses_the_channels_is_not_the_identity() {
    let n = node("Slice", "s", &["x", "st", "en", "ax", "sp"], &["y"], vec![]);
    let m = model(
        13,
        vec![n],
        vec![
            ti("st", &[1], &[-1]),
            ti("en", &[1], &[-100]),
            ti("ax", &[1], &[1]),
            ti("sp", &[1], &[-1]),
        ],
        vec![vis("x", &[1, 6, 4, 3])],
        vec![vi("y", &[])],
    );
    // Not supported at run time: refused by name rather than passed through.
    let e = unsupported(&m);
    assert!(e.contains("Slice"), "{e}");
}

#[test]
fn pytorchs_group_norm_export_equals_group_normalization() {
    // torch.nn.GroupNorm(2, 4) before opset 18: Reshape to [N, 2, -1],
    // InstanceNormalization of that rank-3 tensor, Reshape back, Mul, Add.
    let (gamma, beta) = ([0.5f32, -1.0, 2.0, 1.5], [0.1f32, 0.2, -0.3, 0.0]);
    let decomposed = model(
        13,
        vec![
            node("Reshape", "r1", &["x", "s1"], &["g"], vec![]),
            node(
                "InstanceNormalization",
                "in",
                &["g", "one", "zero"],
                &["n"],
                vec![],
            ),
            node("Reshape", "r2", &["n", "s2"], &["b"], vec![]),
            node("Mul", "mul", &["b", "gamma"], &["m"], vec![]),
            node("Add", "add", &["m", "beta"], &["y"], vec![]),
        ],
        vec![
            ti("s1", &[3], &[0, 2, -1]),
            tf("one", &[2], &[1.0, 1.0]),
            tf("zero", &[2], &[0.0, 0.0]),
            ti("s2", &[4], &[1, 4, 3, 5]),
            tf("gamma", &[4, 1, 1], &gamma),
            tf("beta", &[4, 1, 1], &beta),
        ],
        vec![vis("x", &[1, 4, 3, 5])],
        vec![vi("y", &[])],
    );
    let opset21 = one_node(
        21,
        node(
            "GroupNormalization",
            "gn",
            &["x", "gamma", "beta"],
            &["y"],
            vec![attr("num_groups", A::I(2))],
        ),
        vec![tf("gamma", &[4], &gamma), tf("beta", &[4], &beta)],
        &[1, 4, 3, 5],
    );
    let input = tile_engine::Tensor::new(vec![1, 4, 3, 5], weights(60, 11)).expect("input");
    let run = |m| {
        let g = load(&m);
        tile_engine::cpu::run(&g, std::slice::from_ref(&input)).expect("run")
    };
    let (a, b) = (run(decomposed), run(opset21));
    assert_eq!(a[0].shape(), &[1, 4, 3, 5]);
    for (x, y) in a[0].data().iter().zip(b[0].data()) {
        assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
    }
    // Each group of two channels has mean 0 and variance 1 before the affine.
    let plane = 15;
    for g in 0..2 {
        let v: Vec<f64> = (0..2 * plane)
            .map(|i| {
                let ch = 2 * g + i / plane;
                f64::from((b[0].data()[ch * plane + i % plane] - beta[ch]) / gamma[ch])
            })
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
            "group {g}: {mean} {var}"
        );
    }
}

#[test]
fn normalisations_with_parameters_of_the_wrong_length_are_refused() {
    let x = vis("x", &[1, 3, 4, 5]);
    let y = vi("y", &[]);
    // InstanceNormalization: one scale and bias per channel.
    let n = node(
        "InstanceNormalization",
        "n",
        &["x", "s", "b"],
        &["y"],
        vec![],
    );
    let inits = vec![tf("s", &[2], &[1.0, 1.0]), tf("b", &[3], &[0.0; 3])];
    let m = model(13, vec![n], inits, vec![x.clone()], vec![y.clone()]);
    assert!(matches!(load_bytes(&bytes(&m)), Err(Error::Malformed(_))));
    // LayerNormalization over the last axis: 5 values (or one), not 3.
    let n = node("LayerNormalization", "n", &["x", "s"], &["y"], vec![]);
    let m = model(
        17,
        vec![n],
        vec![tf("s", &[3], &[1.0; 3])],
        vec![x.clone()],
        vec![y.clone()],
    );
    assert!(matches!(load_bytes(&bytes(&m)), Err(Error::Unsupported(_))));
    // A scalar scale broadcasts; a missing bias is zero.
    let n = node("LayerNormalization", "n", &["x", "s"], &["y"], vec![]);
    let g = load(&model(
        17,
        vec![n],
        vec![tf("s", &[1], &[2.0])],
        vec![x],
        vec![y],
    ));
    let Op::LayerNorm {
        axis, scale, bias, ..
    } = &g.nodes[0].op
    else {
        panic!("{:?}", g.nodes[0].op)
    };
    assert_eq!(
        (*axis, scale.as_slice(), bias.as_slice()),
        (3, &[2.0; 5][..], &[0.0; 5][..])
    );
}

/// PyTorch's pixel shuffle as its exporters write it (reshape to rank 6,
/// transpose, reshape back; CRD, and the DCR order too) becomes one
/// DepthToSpace after the passes, with the same bits, and then tiles: the
/// chain ran whole between fused blocks.
#[test]
fn an_exported_pixel_shuffle_becomes_depth_to_space_and_tiles() {
    use tile_engine::tiling::{FusionOptions, Grid, TiledOptions, run_tiled};
    for (split, perm, mode) in [
        (vec![1, 3, 2, 2, 5, 6], vec![0, 1, 4, 2, 5, 3], "crd"),
        (vec![1, 2, 2, 3, 5, 6], vec![0, 3, 4, 1, 5, 2], "dcr"),
    ] {
        let m = model(
            13,
            vec![
                node(
                    "Conv",
                    "c1",
                    &["x", "w1"],
                    &["a"],
                    vec![attr("pads", A::Is(vec![1; 4]))],
                ),
                node("Reshape", "r1", &["a", "s6"], &["b"], vec![]),
                node(
                    "Transpose",
                    "t",
                    &["b"],
                    &["c"],
                    vec![attr("perm", A::Is(perm))],
                ),
                node("Reshape", "r2", &["c", "s4"], &["d"], vec![]),
                node(
                    "Conv",
                    "c2",
                    &["d", "w2"],
                    &["y"],
                    vec![attr("pads", A::Is(vec![1; 4]))],
                ),
            ],
            vec![
                tf("w1", &[12, 3, 3, 3], &weights(324, 3)),
                tf("w2", &[2, 3, 3, 3], &weights(54, 4)),
                ti("s6", &[6], &split),
                ti("s4", &[4], &[1, 3, 10, 12]),
            ],
            vec![vis("x", &[1, 3, 5, 6])],
            vec![vis("y", &[1, 2, 10, 12])],
        );
        let g = load(&m);
        let mut opt = g.clone();
        tile_engine::passes::optimize(&mut opt).expect("passes");
        assert_eq!(ops(&opt), vec!["conv", "depthtospace", "conv"], "{mode}");
        let x = tile_engine::Tensor::new(
            vec![1, 3, 5, 6],
            (0..90).map(|i| (i as f32 * 0.37).sin()).collect(),
        )
        .expect("x");
        let want = tile_engine::cpu::run(&g, std::slice::from_ref(&x)).expect("chain");
        let got = tile_engine::cpu::run(&opt, std::slice::from_ref(&x)).expect("d2s");
        let bits = |t: &[tile_engine::Tensor]| -> Vec<u32> {
            t[0].data().iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&got), bits(&want), "{mode}");
        let opts = TiledOptions {
            fusion: FusionOptions::fixed(usize::MAX),
            clamp_grid: true,
        };
        let tiled = run_tiled(
            &tile_engine::cpu::CpuExecutor,
            &opt,
            std::slice::from_ref(&x),
            &Grid::uniform(3, 2),
            &opts,
        )
        .expect("tiled");
        assert_eq!(bits(&tiled), bits(&want), "{mode} tiled");
    }
}

/// Two exported pixel shuffles in a row each become a DepthToSpace (the
/// second's chain began where the first's ended, and the first was left).
#[test]
fn two_exported_pixel_shuffles_in_a_row_both_become_depth_to_space() {
    let mut nodes = vec![node(
        "Conv",
        "c1",
        &["x", "w1"],
        &["a"],
        vec![attr("pads", A::Is(vec![1; 4]))],
    )];
    let mut inits = vec![tf("w1", &[48, 3, 3, 3], &weights(1296, 5))];
    for (i, from, to, c, h, w) in [(1, "a", "m", 12, 5, 6), (2, "m", "y", 3, 10, 12)] {
        let (sa, sb, a, b) = (
            format!("s{i}a"),
            format!("s{i}b"),
            format!("a{i}"),
            format!("b{i}"),
        );
        nodes.push(node(
            "Reshape",
            &format!("r{i}a"),
            &[from, &sa],
            &[&a],
            vec![],
        ));
        nodes.push(node(
            "Transpose",
            &format!("t{i}"),
            &[&a],
            &[&b],
            vec![attr("perm", A::Is(vec![0, 1, 4, 2, 5, 3]))],
        ));
        nodes.push(node(
            "Reshape",
            &format!("r{i}b"),
            &[&b, &sb],
            &[to],
            vec![],
        ));
        inits.push(ti(&sa, &[6], &[1, c, 2, 2, h, w]));
        inits.push(ti(&sb, &[4], &[1, c, 2 * h, 2 * w]));
    }
    let m = model(
        13,
        nodes,
        inits,
        vec![vis("x", &[1, 3, 5, 6])],
        vec![vis("y", &[1, 3, 20, 24])],
    );
    let g = load(&m);
    let mut opt = g.clone();
    tile_engine::passes::optimize(&mut opt).expect("passes");
    assert_eq!(ops(&opt), vec!["conv", "depthtospace", "depthtospace"]);
    let x = tile_engine::Tensor::new(vec![1, 3, 5, 6], (0..90).map(|i| i as f32 * 0.1).collect())
        .expect("x");
    let want = tile_engine::cpu::run(&g, std::slice::from_ref(&x)).expect("chains");
    let got = tile_engine::cpu::run(&opt, std::slice::from_ref(&x)).expect("d2s");
    assert_eq!(got[0].data(), want[0].data());
}
