//! Folding per-channel affine maps into the weights and bias of the
//! convolution or dense layer that produces their input.

use std::sync::Arc;

use super::rewrite::{merge_into_producer, only_feeds};
use crate::error::Result;
use crate::ir::{Activation, BinaryKind, Graph, NodeId, Op};
use crate::tensor::Tensor;

/// A per-output-channel map `y = scale[m] * x + shift[m]` to fold into a producer.
struct Affine {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// Whether `op` is a conv / transposed conv / dense layer that an affine map
/// on its output can be folded into: no activation yet and no fused residual
/// (the residual would not be scaled).
fn foldable_producer(op: &Op, n_inputs: usize) -> bool {
    match op {
        Op::Conv(c) => n_inputs == 1 && c.activation.is_identity(),
        Op::ConvTranspose(c) => c.activation.is_identity(),
        Op::Dense { activation, .. } => activation.is_identity(),
        _ => false,
    }
}

/// Number of output channels of a foldable producer.
fn out_channels(op: &Op) -> usize {
    match op {
        Op::Conv(c) => c.weight.shape()[0],
        Op::ConvTranspose(c) => c.weight.shape()[1] * c.group,
        Op::Dense { weight, .. } => weight.shape()[1],
        _ => 0,
    }
}

/// Rewrites `op`'s weights and bias so it computes `scale[m] * op(x) + shift[m]`.
fn apply_affine(op: &mut Op, a: &Affine) -> Result<()> {
    let new_bias = |bias: &Option<Arc<Vec<f32>>>| -> Arc<Vec<f32>> {
        Arc::new(
            (0..a.scale.len())
                .map(|m| bias.as_ref().map_or(0.0, |b| b[m]) * a.scale[m] + a.shift[m])
                .collect(),
        )
    };
    match op {
        Op::Conv(c) => {
            let per_m: usize = c.weight.shape()[1..].iter().product();
            let mut w = c.weight.data().to_vec();
            for (i, v) in w.iter_mut().enumerate() {
                *v *= a.scale[i / per_m.max(1)];
            }
            c.weight = Arc::new(Tensor::new(c.weight.shape().to_vec(), w)?);
            c.bias = Some(new_bias(&c.bias));
        }
        Op::ConvTranspose(c) => {
            // Weight [C, M/g, kh, kw]: input channel cin of group g feeds outputs g*M/g + mm.
            let s = c.weight.shape().to_vec();
            let (cin, mg, k) = (s[0], s[1], s[2] * s[3]);
            let cg = cin / c.group.max(1);
            let mut w = c.weight.data().to_vec();
            for ci in 0..cin {
                let g = ci / cg.max(1);
                for mm in 0..mg {
                    let scale = a.scale[g * mg + mm];
                    w[(ci * mg + mm) * k..][..k]
                        .iter_mut()
                        .for_each(|v| *v *= scale);
                }
            }
            c.weight = Arc::new(Tensor::new(s, w)?);
            c.bias = Some(new_bias(&c.bias));
        }
        Op::Dense { weight, bias, .. } => {
            let m = weight.shape()[1];
            let mut w = weight.data().to_vec();
            for (i, v) in w.iter_mut().enumerate() {
                *v *= a.scale[i % m.max(1)];
            }
            *weight = Arc::new(Tensor::new(weight.shape().to_vec(), w)?);
            *bias = Some(new_bias(bias));
        }
        _ => {}
    }
    Ok(())
}

/// Finds the first (producer, consumer, affine, activation) that `extract`
/// recognises and that may be folded, applies it, and repeats.
fn fold_with(
    graph: &mut Graph,
    extract: impl Fn(&Graph, NodeId, usize) -> Option<(usize, Affine, Activation)>,
) -> Result<()> {
    'search: loop {
        let producers = graph.producers();
        let consumers = graph.consumers();
        for j in 0..graph.nodes.len() {
            // `extract` returns which input of node j is the folded-into value.
            for (slot, &v) in graph.nodes[j].inputs.iter().enumerate() {
                let Some(p) = producers[v] else { continue };
                let pn = &graph.nodes[p];
                if !foldable_producer(&pn.op, pn.inputs.len())
                    || !only_feeds(graph, &consumers, v, j)
                {
                    continue;
                }
                let channels = out_channels(&pn.op);
                let Some((want_slot, affine, act)) = extract(graph, j, channels) else {
                    continue;
                };
                if want_slot != slot
                    || affine.scale.len() != channels
                    || graph.shape(graph.nodes[j].output) != graph.shape(v)
                {
                    continue;
                }
                let mut op = graph.nodes[p].op.clone();
                apply_affine(&mut op, &affine)?;
                set_activation(&mut op, act);
                graph.nodes[p].op = op;
                merge_into_producer(graph, p, j, false);
                continue 'search;
            }
        }
        return Ok(());
    }
}

/// Sets the fused activation of a conv / transposed conv / dense op.
fn set_activation(op: &mut Op, act: Activation) {
    match op {
        Op::Conv(c) => c.activation = act,
        Op::ConvTranspose(c) => c.activation = act,
        Op::Dense { activation, .. } => *activation = act,
        _ => {}
    }
}

/// Folds `ChannelAffine` (an unfolded BatchNormalization) into a preceding
/// Conv, ConvTranspose or Dense whose output it alone reads.
pub fn fold_channel_affine(graph: &mut Graph) -> Result<()> {
    fold_with(graph, |g, j, _| match &g.nodes[j].op {
        Op::ChannelAffine { scale, shift } => Some((
            0,
            Affine {
                scale: scale.to_vec(),
                shift: shift.to_vec(),
            },
            Activation::Identity,
        )),
        _ => None,
    })
}

/// The per-channel values of a constant operand broadcast against an output
/// of rank `rank` with `channels` channels on axis 1: its shape, right-aligned
/// to `rank`, must be all ones except possibly axis 1. A `[C]` constant is
/// *not* per-channel for a rank-4 map (numpy aligns it with W).
fn per_channel(t: &Tensor, rank: usize, channels: usize) -> Option<Vec<f32>> {
    let s = t.shape();
    if s.len() > rank || rank < 2 {
        return None;
    }
    let lead = rank - s.len();
    let mut n = 1;
    for (i, &d) in s.iter().enumerate() {
        let axis = lead + i;
        if axis != 1 && d != 1 {
            return None;
        }
        if axis == 1 {
            n = d;
        }
    }
    match n {
        1 => Some(vec![t.data()[0]; channels]),
        n if n == channels => Some(t.data().to_vec()),
        _ => None,
    }
}

/// Folds a `Binary` Mul/Add/Sub/Div of a conv (or transposed conv, or dense)
/// output with a per-channel constant into the producer's weights and bias
/// (the Unsqueeze/Mul/Add chains some converters emit for BatchNorm). The
/// Binary's fused activation moves to the producer.
pub fn fold_per_channel_binary(graph: &mut Graph) -> Result<()> {
    fold_with(graph, |g, j, channels| {
        let node = &g.nodes[j];
        let Op::Binary { kind, activation } = &node.op else {
            return None;
        };
        let [a, b] = node.inputs[..] else { return None };
        let rank = g.shape(node.output).len();
        // Which operand is the constant; the other is the folded-into value.
        let (slot, k, const_first) = if let Some(t) = g.constants.get(&b) {
            (0, per_channel(t, rank, channels)?, false)
        } else if let Some(t) = g.constants.get(&a) {
            (1, per_channel(t, rank, channels)?, true)
        } else {
            return None;
        };
        let ones = vec![1.0; channels];
        let zeros = vec![0.0; channels];
        let affine = match (kind, const_first) {
            (BinaryKind::Mul, _) => Affine {
                scale: k,
                shift: zeros,
            },
            (BinaryKind::Add, _) => Affine {
                scale: ones,
                shift: k,
            },
            (BinaryKind::Sub, false) => Affine {
                scale: ones,
                shift: k.iter().map(|v| -v).collect(),
            },
            (BinaryKind::Sub, true) => Affine {
                scale: vec![-1.0; channels],
                shift: k,
            },
            (BinaryKind::Div, false) if k.iter().all(|v| *v != 0.0 && v.is_finite()) => Affine {
                scale: k.iter().map(|v| 1.0 / v).collect(),
                shift: zeros,
            },
            _ => return None,
        };
        Some((slot, affine, activation.clone()))
    })
}
