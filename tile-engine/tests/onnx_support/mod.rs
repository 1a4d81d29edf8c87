//! Builders for small ONNX models, encoded with the generated prost structs.

#![allow(dead_code)]

use prost::Message;
use tile_engine::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// A float32 tensor value-info with the given dims (None = symbolic).
pub fn vi(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value as D;
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| tensor_shape_proto::Dimension {
                            value: Some(match d {
                                Some(v) => D::DimValue(*v),
                                None => D::DimParam("batch".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A value-info with static dims.
pub fn vis(name: &str, dims: &[i64]) -> ValueInfoProto {
    vi(name, &dims.iter().map(|&d| Some(d)).collect::<Vec<_>>())
}

/// A float tensor stored as raw little-endian bytes.
pub fn tf(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// A float tensor stored in `float_data`.
pub fn tf_typed(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: v.to_vec(),
        ..Default::default()
    }
}

/// An int64 tensor in `int64_data`.
pub fn ti(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

pub enum A {
    I(i64),
    F(f32),
    S(&'static str),
    Is(Vec<i64>),
    Fs(Vec<f32>),
    T(Box<TensorProto>),
}

pub fn attr(name: &str, a: A) -> AttributeProto {
    let mut p = AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    let ty = match a {
        A::I(v) => {
            p.i = Some(v);
            AttributeType::Int
        }
        A::F(v) => {
            p.f = Some(v);
            AttributeType::Float
        }
        A::S(v) => {
            p.s = Some(v.as_bytes().to_vec());
            AttributeType::String
        }
        A::Is(v) => {
            p.ints = v;
            AttributeType::Ints
        }
        A::Fs(v) => {
            p.floats = v;
            AttributeType::Floats
        }
        A::T(t) => {
            p.t = Some(*t);
            AttributeType::Tensor
        }
    };
    p.r#type = Some(ty as i32);
    p
}

pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    ModelProto {
        ir_version: Some(if opset < 9 { 3 } else { 7 }),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("tessera-tests".into()),
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn bytes(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// Deterministic pseudo-random weights.
pub fn weights(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// A small CNN: Conv(SAME_UPPER, stride 2) → BatchNorm → Relu → MaxPool →
/// residual Add → GlobalAveragePool → PyTorch-style flatten (Shape, Gather,
/// Unsqueeze, Concat, Reshape) → Gemm(transB) → Softmax. Opset 11, with the
/// initializers also listed as graph inputs (as old exporters do).
pub fn small_cnn() -> ModelProto {
    let c = 4i64;
    let inits = vec![
        tf("w", &[c, 3, 3, 3], &weights((c * 27) as usize, 1)),
        tf("b", &[c], &weights(c as usize, 2)),
        tf("bn_s", &[c], &[1.0, 0.5, 2.0, 1.5]),
        tf("bn_b", &[c], &[0.1, 0.2, 0.3, 0.4]),
        tf("bn_m", &[c], &[0.0, 0.1, -0.1, 0.2]),
        tf("bn_v", &[c], &[1.0, 2.0, 0.5, 1.0]),
        tf("w2", &[c, c, 3, 3], &weights((c * c * 9) as usize, 3)),
        tf("fc_w", &[10, c], &weights((10 * c) as usize, 4)),
        tf_typed("fc_b", &[10], &weights(10, 5)),
        ti("zero", &[], &[0]),
        ti("minus1", &[1], &[-1]),
        tf("unused", &[3], &[1.0, 2.0, 3.0]),
    ];
    let mut inputs = vec![vi("x", &[None, Some(3), Some(16), Some(16)])];
    inputs.extend(inits.iter().map(|t| {
        let dims: Vec<i64> = t.dims.clone();
        let mut v = vis(t.name.as_deref().unwrap_or(""), &dims);
        if t.data_type == Some(DataType::Int64 as i32)
            && let Some(type_proto::Value::TensorType(tt)) =
                v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            tt.elem_type = Some(DataType::Int64 as i32);
        }
        v
    }));
    let nodes = vec![
        node(
            "Conv",
            "conv1",
            &["x", "w", "b"],
            &["c1"],
            vec![
                attr("kernel_shape", A::Is(vec![3, 3])),
                attr("strides", A::Is(vec![2, 2])),
                attr("auto_pad", A::S("SAME_UPPER")),
            ],
        ),
        node(
            "BatchNormalization",
            "bn1",
            &["c1", "bn_s", "bn_b", "bn_m", "bn_v"],
            &["n1"],
            vec![attr("epsilon", A::F(1e-5))],
        ),
        node("Relu", "relu1", &["n1"], &["r1"], vec![]),
        node(
            "MaxPool",
            "pool1",
            &["r1"],
            &["p1"],
            vec![
                attr("kernel_shape", A::Is(vec![3, 3])),
                attr("strides", A::Is(vec![1, 1])),
                attr("pads", A::Is(vec![1, 1, 1, 1])),
            ],
        ),
        node(
            "Conv",
            "conv2",
            &["p1", "w2"],
            &["c2"],
            vec![attr("pads", A::Is(vec![1, 1, 1, 1]))],
        ),
        node("Add", "res", &["c2", "r1"], &["a1"], vec![]),
        node("Dropout", "drop", &["a1"], &["d1"], vec![]),
        node("GlobalAveragePool", "gap", &["d1"], &["g1"], vec![]),
        node("Shape", "shape", &["g1"], &["s1"], vec![]),
        node("Gather", "gather", &["s1", "zero"], &["s2"], vec![]),
        node(
            "Unsqueeze",
            "unsq",
            &["s2"],
            &["s3"],
            vec![attr("axes", A::Is(vec![0]))],
        ),
        node(
            "Concat",
            "cat",
            &["s3", "minus1"],
            &["s4"],
            vec![attr("axis", A::I(0))],
        ),
        node("Reshape", "flat", &["g1", "s4"], &["f1"], vec![]),
        node(
            "Gemm",
            "fc",
            &["f1", "fc_w", "fc_b"],
            &["logits"],
            vec![attr("transB", A::I(1))],
        ),
        node(
            "Softmax",
            "sm",
            &["logits"],
            &["prob"],
            vec![attr("axis", A::I(1))],
        ),
    ];
    model(
        11,
        nodes,
        inits,
        inputs,
        vec![vi("prob", &[None, Some(10)])],
    )
}
