//! Synthetic models for tests and benchmarks: chains of 3×3 convolutions and
//! random DAGs, built directly as [`ModelDag`]s (no weights allocated).

use tile_engine::ir::OpClass;

use crate::dag::{DagOp, DagTensor, Geometry, ModelDag};
use crate::error::Result;

/// Channels of every synthetic feature map.
const CHANNELS: f64 = 8.0;

fn map(name: String, hw: usize, producer: Option<usize>) -> DagTensor {
    DagTensor {
        name,
        bytes: CHANNELS * (hw * hw) as f64 * 4.0,
        elements: CHANNELS * (hw * hw) as f64,
        hw: Some([hw, hw]),
        producer,
        consumers: Vec::new(),
        is_output: false,
    }
}

/// A chain of `k`×`k` convolutions (8 → 8 channels, "same" padding, stride
/// 2 where the next size halves); `sizes[0]` is the input size, `sizes[i]` op `i-1`'s output.
pub fn chain(sizes: &[usize], k: usize) -> ModelDag {
    chain_with(sizes, k, CHANNELS)
}

/// [`chain`] with `channels` channels in every map.
pub fn chain_with(sizes: &[usize], k: usize, channels: f64) -> ModelDag {
    let map = |name: String, hw: usize, producer| DagTensor {
        bytes: channels * (hw * hw) as f64 * 4.0,
        elements: channels * (hw * hw) as f64,
        ..map(name, hw, producer)
    };
    let mut tensors = vec![map("input".into(), sizes[0], None)];
    let mut ops = Vec::new();
    for (i, w) in sizes.windows(2).enumerate() {
        let stride = if w[1] * 2 <= w[0] { 2 } else { 1 };
        tensors.push(map(format!("t{i}"), w[1], Some(i)));
        ops.push(DagOp {
            name: format!("conv{i}"),
            class: OpClass::Conv3x3,
            flops: 2.0 * channels * channels * (k * k) as f64 * (w[1] * w[1]) as f64,
            inputs: vec![i],
            output: i + 1,
            geometry: Geometry::Window {
                extent: [k, k],
                stride: [stride, stride],
                pad: [k / 2, k / 2],
            },
        });
    }
    if let Some(last) = tensors.last_mut() {
        last.is_output = true;
    }
    // Parts are consistent by construction.
    ModelDag::new(ops, tensors).unwrap_or_default()
}

/// A small deterministic generator (SplitMix64), so the library needs no `rand`.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// A random DAG of `n` ops: each op reads the previous op's output and, with
/// some probability, one or two earlier tensors (residual / concat style
/// joins, multi-consumer tensors). FLOPs span three decades, tensor sizes
/// two, so cuts at different places win. Spatial sizes are all equal so
/// every op is tileable as a 3×3 window or pointwise op.
pub fn random_dag(rng: &mut SplitMix, n: usize) -> Result<ModelDag> {
    let hw = 16;
    let mut tensors = vec![DagTensor {
        bytes: 4096.0 * (1.0 + 30.0 * rng.unit()),
        ..map("input".into(), hw, None)
    }];
    let mut ops = Vec::new();
    let classes = [
        OpClass::Conv3x3,
        OpClass::Conv1x1,
        OpClass::Depthwise,
        OpClass::Elementwise,
    ];
    for i in 0..n {
        let mut inputs = vec![tensors.len() - 1];
        for _ in 0..2 {
            if rng.unit() < 0.35 {
                let t = rng.below(tensors.len());
                if !inputs.contains(&t) {
                    inputs.push(t);
                }
            }
        }
        let class = classes[rng.below(classes.len())];
        let geometry = if class == OpClass::Elementwise || class == OpClass::Conv1x1 {
            Geometry::Pointwise
        } else {
            Geometry::Window {
                extent: [3, 3],
                stride: [1, 1],
                pad: [1, 1],
            }
        };
        tensors.push(DagTensor {
            bytes: 1024.0 * 10f64.powf(2.0 * rng.unit()),
            ..map(format!("t{i}"), hw, Some(i))
        });
        ops.push(DagOp {
            name: format!("op{i}"),
            class,
            flops: 1e6 * 10f64.powf(3.0 * rng.unit()),
            inputs,
            output: tensors.len() - 1,
            geometry,
        });
    }
    if let Some(last) = tensors.last_mut() {
        last.is_output = true;
    }
    ModelDag::new(ops, tensors)
}

/// A random cluster: one device, `edges` edge nodes, one cloud node, every
/// link the planner may use, throughputs and bandwidths spread over a decade or two.
pub fn random_cluster(rng: &mut SplitMix, edges: usize) -> crate::cluster::Cluster {
    use crate::cluster::{Backend, Cluster, LinkSpec, NodeSpec, Tier};
    let node = |name: String, tier, gflops| NodeSpec {
        name,
        tier,
        address: "127.0.0.1:0".into(),
        backend: Backend::Gpu,
        gflops,
    };
    let mut nodes = vec![node("device".into(), Tier::Device, 1.0 + 9.0 * rng.unit())];
    for e in 0..edges {
        nodes.push(node(
            format!("edge{e}"),
            Tier::Edge,
            10.0 + 90.0 * rng.unit(),
        ));
    }
    nodes.push(node(
        "cloud".into(),
        Tier::Cloud,
        100.0 + 900.0 * rng.unit(),
    ));
    let mut link = |from: &str, to: String, mbps: f64, ms: f64| LinkSpec {
        from: from.into(),
        to,
        bandwidth_mbps: mbps * (0.3 + 1.4 * rng.unit()),
        delay_ms: ms,
        jitter_ms: 0.0,
        loss: 0.0,
    };
    let mut links = Vec::new();
    for e in 0..edges {
        links.push(link("device", format!("edge{e}"), 100.0, 5.0));
        links.push(link("cloud", format!("edge{e}"), 50.0, 30.0));
        for f in e + 1..edges {
            links.push(link(&format!("edge{e}"), format!("edge{f}"), 1000.0, 1.0));
        }
    }
    Cluster { nodes, links }
}
