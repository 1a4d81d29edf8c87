//! FLOP and byte counts per node: what the planner's cost model consumes.

use super::graph::{Graph, NodeId};
use super::op::{Op, PoolKind, ResizeMode};

/// Op classes the profiler keeps separate throughput estimates for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpClass {
    /// Conv with a kernel larger than 1×1 (and ConvTranspose).
    Conv3x3,
    /// Pointwise conv.
    Conv1x1,
    /// Depthwise / grouped conv.
    Depthwise,
    /// Windowed and global pooling.
    Pool,
    /// Dense and MatMul.
    Dense,
    /// Everything memory-bound: activations, binary ops, concat, reshape, softmax…
    Elementwise,
}

/// Work and traffic of one node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpCost {
    /// Class for the throughput lookup.
    pub class: OpClass,
    /// Floating-point operations (a multiply-add counts 2).
    pub flops: u64,
    /// Bytes of the node's output tensor.
    pub output_bytes: u64,
    /// Bytes read from runtime inputs.
    pub input_bytes: u64,
    /// Bytes of weights the op owns.
    pub weight_bytes: u64,
}

fn prod(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

impl Graph {
    /// Cost of one node.
    pub fn node_cost(&self, id: NodeId) -> OpCost {
        let n = &self.nodes[id];
        let out = prod(self.shape(n.output));
        let input_bytes: u64 = n.inputs.iter().map(|&i| prod(self.shape(i)) * 4).sum();
        let (class, flops, weights) = match &n.op {
            Op::Conv(c) => {
                let w = c.weight.shape();
                let k = prod(&w[1..]);
                let class = if c.group > 1 {
                    OpClass::Depthwise
                } else if w[2] * w[3] == 1 {
                    OpClass::Conv1x1
                } else {
                    OpClass::Conv3x3
                };
                (
                    class,
                    2 * out * k,
                    prod(w) + c.bias.as_ref().map_or(0, |b| b.len() as u64),
                )
            }
            Op::ConvTranspose(c) => {
                let w = c.weight.shape();
                let x = prod(self.shape(n.inputs[0]));
                (OpClass::Conv3x3, 2 * x * prod(&w[1..]), prod(w))
            }
            Op::Pool(p) => {
                let k = (p.kernel[0] * p.kernel[1]) as u64;
                (OpClass::Pool, out * k, 0)
            }
            Op::GlobalPool(PoolKind::Max | PoolKind::Average { .. }) => {
                (OpClass::Pool, prod(self.shape(n.inputs[0])), 0)
            }
            Op::ChannelReduce(_) => (OpClass::Elementwise, prod(self.shape(n.inputs[0])), 0),
            Op::Dense { weight, .. } => {
                let k = weight.shape()[0] as u64;
                (OpClass::Dense, 2 * out * k, prod(weight.shape()))
            }
            Op::MatMul => {
                let a = self.shape(n.inputs[0]);
                let k = *a.last().unwrap_or(&1) as u64;
                (OpClass::Dense, 2 * out * k, 0)
            }
            Op::Lrn { size, .. } => (OpClass::Elementwise, out * (*size as u64 + 4), 0),
            Op::Softmax { .. } | Op::LogSoftmax { .. } => (OpClass::Elementwise, out * 4, 0),
            Op::Resize {
                mode: ResizeMode::Cubic { .. },
                ..
            } => (OpClass::Elementwise, out * 16, 0),
            Op::Resize { .. } => (OpClass::Elementwise, out * 4, 0),
            _ => (OpClass::Elementwise, out, 0),
        };
        OpCost {
            class,
            flops,
            output_bytes: out * 4,
            input_bytes,
            weight_bytes: weights * 4,
        }
    }

    /// Total FLOPs of the model.
    pub fn total_flops(&self) -> u64 {
        (0..self.nodes.len()).map(|i| self.node_cost(i).flops).sum()
    }
}
