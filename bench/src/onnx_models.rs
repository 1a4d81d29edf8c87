//! Small VGG-like and ResNet-like models written as ONNX files (through the
//! engine's own protobuf types), so the cluster benchmark can send them to
//! node daemons like any user model. Weights are seeded pseudo-random with a
//! He-style scale.

use std::path::Path;

use anyhow::{Context, Result};
use prost::Message;
use tile_engine::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};

const FLOAT: i32 = 1;

struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    seed: u64,
    n: usize,
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    }
}

impl Builder {
    fn new() -> Self {
        Builder {
            nodes: Vec::new(),
            inits: Vec::new(),
            seed: 0x2545_F491_4F6C_DD1D,
            n: 0,
        }
    }

    fn rand(&mut self) -> f32 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn init(&mut self, dims: &[i64], scale: f32) -> String {
        self.n += 1;
        let name = format!("w{}", self.n);
        let len: i64 = dims.iter().product();
        let data = (0..len).map(|_| self.rand() * scale).collect();
        self.inits.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(FLOAT),
            float_data: data,
            name: Some(name.clone()),
            ..Default::default()
        });
        name
    }

    fn node(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<AttributeProto>) -> String {
        self.n += 1;
        let out = format!("{}_{}", op.to_lowercase(), self.n);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: Some(out.clone()),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn conv(&mut self, x: &str, cin: i64, cout: i64, k: i64, stride: i64) -> String {
        let scale = (6.0 / (cin * k * k) as f32).sqrt();
        let w = self.init(&[cout, cin, k, k], scale);
        let b = self.init(&[cout], 0.05);
        let p = k / 2;
        self.node(
            "Conv",
            vec![x.into(), w, b],
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[stride, stride]),
                ints("pads", &[p, p, p, p]),
            ],
        )
    }

    fn relu(&mut self, x: &str) -> String {
        self.node("Relu", vec![x.into()], Vec::new())
    }

    fn head(&mut self, x: &str, c: i64, classes: i64) -> String {
        let g = self.node("GlobalAveragePool", vec![x.into()], Vec::new());
        let f = self.node("Flatten", vec![g], Vec::new());
        let w = self.init(&[classes, c], (1.0 / c as f32).sqrt());
        let b = self.init(&[classes], 0.01);
        self.node(
            "Gemm",
            vec![f, w, b],
            vec![AttributeProto {
                name: Some("transB".into()),
                r#type: Some(2),
                i: Some(1),
                ..Default::default()
            }],
        )
    }

    fn finish(self, input: &str, hw: i64, output: &str, classes: i64) -> ModelProto {
        let vi = |name: &str, dims: &[i64]| ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(FLOAT),
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| tensor_shape_proto::Dimension {
                                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            producer_name: Some("tessera bench".into()),
            graph: Some(GraphProto {
                node: self.nodes,
                name: Some("bench".into()),
                initializer: self.inits,
                input: vec![vi(input, &[1, 3, hw, hw])],
                output: vec![vi(output, &[1, classes])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A VGG-16-like stack (3×3 convs and max-pools, halved widths) with a
/// global-pool + dense head, for an `hw`×`hw` RGB input.
pub fn vgg_like(hw: i64) -> ModelProto {
    let mut b = Builder::new();
    let mut x = "input".to_string();
    let mut c = 3;
    for &w in &[32, 32, 0, 64, 64, 0, 128, 128, 128, 0, 256, 256, 256] {
        if w == 0 {
            x = b.node(
                "MaxPool",
                vec![x],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            );
            continue;
        }
        let y = b.conv(&x, c, w, 3, 1);
        x = b.relu(&y);
        c = w;
    }
    let out = b.head(&x, c, 100);
    b.finish("input", hw, &out, 100)
}

/// A ResNet-like model: a strided stem, basic residual blocks over three
/// stages (convs, Add, Relu; 1×1 strided projections), global pool, dense.
pub fn resnet_like(hw: i64) -> ModelProto {
    let mut b = Builder::new();
    let stem = b.conv("input", 3, 32, 3, 2);
    let mut x = b.relu(&stem);
    let mut c = 32;
    for (stage, &w) in [32i64, 64, 128].iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let skip = if stride == 2 || c != w {
                b.conv(&x, c, w, 1, stride)
            } else {
                x.clone()
            };
            let y = b.conv(&x, c, w, 3, stride);
            let y = b.relu(&y);
            let y = b.conv(&y, w, w, 3, 1);
            let s = b.node("Add", vec![y, skip], Vec::new());
            x = b.relu(&s);
            c = w;
        }
    }
    let out = b.head(&x, c, 100);
    b.finish("input", hw, &out, 100)
}

/// Writes a model to `path`.
pub fn write(model: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, model.encode_to_vec())
        .with_context(|| format!("cannot write {}", path.display()))
}
