//! Identity removal and fusion of activations and residual Adds into their producers.

use super::rewrite::{merge_into_producer, only_feeds};
use crate::error::Result;
use crate::ir::{Activation, BinaryKind, Graph, Op};

/// Whether node `op` with these input/output shapes does nothing.
fn is_identity(op: &Op, in_shape: &[usize], out_shape: &[usize]) -> bool {
    match op {
        Op::Activation(a) => a.is_identity(),
        Op::Reshape => in_shape == out_shape,
        _ => false,
    }
}

/// Removes `Activation(Identity)` and Reshapes to the same shape. Readers
/// are rewired to the input; when the removed node wrote a graph output, its
/// producer writes that output instead (or the node stays, if the input is a
/// graph input, a constant, or read elsewhere).
pub fn remove_identities(graph: &mut Graph) -> Result<()> {
    'search: loop {
        let producers = graph.producers();
        let consumers = graph.consumers();
        for j in 0..graph.nodes.len() {
            let node = &graph.nodes[j];
            let [v] = node.inputs[..] else { continue };
            let u = node.output;
            if !is_identity(&node.op, graph.shape(v), graph.shape(u)) {
                continue;
            }
            if graph.outputs.contains(&u) {
                match producers[v] {
                    Some(p) if only_feeds(graph, &consumers, v, j) => {
                        merge_into_producer(graph, p, j, false);
                        continue 'search;
                    }
                    _ => continue,
                }
            }
            for n in &mut graph.nodes {
                for i in &mut n.inputs {
                    if *i == u {
                        *i = v;
                    }
                }
            }
            graph.nodes.remove(j);
            continue 'search;
        }
        return Ok(());
    }
}

/// The fused activation slot of an op that has one, if it is still free.
fn free_activation(op: &mut Op) -> Option<&mut Activation> {
    let a = match op {
        Op::Conv(c) => &mut c.activation,
        Op::ConvTranspose(c) => &mut c.activation,
        Op::Dense { activation, .. } | Op::Binary { activation, .. } => activation,
        _ => return None,
    };
    a.is_identity().then_some(a)
}

/// Fuses an `Activation` into the Conv, ConvTranspose, Dense or Binary that
/// produces its input, when that producer has no activation yet and its
/// output has no other reader.
pub fn fuse_activations(graph: &mut Graph) -> Result<()> {
    'search: loop {
        let producers = graph.producers();
        let consumers = graph.consumers();
        for j in 0..graph.nodes.len() {
            let node = &graph.nodes[j];
            let (Op::Activation(act), [v]) = (&node.op, &node.inputs[..]) else {
                continue;
            };
            let Some(p) = producers[*v] else { continue };
            if !only_feeds(graph, &consumers, *v, j) {
                continue;
            }
            let act = act.clone();
            let mut op = graph.nodes[p].op.clone();
            let Some(slot) = free_activation(&mut op) else {
                continue;
            };
            *slot = act;
            graph.nodes[p].op = op;
            merge_into_producer(graph, p, j, false);
            continue 'search;
        }
        return Ok(());
    }
}

/// Fuses `Add(conv(x), r)` (either operand order) into the Conv's residual
/// input when `r` has the conv output's shape, the conv has no activation
/// and no residual yet, and its output has no other reader. The Add's own
/// activation moves to the conv, which computes `act(conv(x) + bias + r)`.
/// The fused conv moves to the Add's position when `r` is produced after it.
pub fn fuse_residual_add(graph: &mut Graph) -> Result<()> {
    'search: loop {
        let producers = graph.producers();
        let consumers = graph.consumers();
        for j in 0..graph.nodes.len() {
            let node = &graph.nodes[j];
            let Op::Binary {
                kind: BinaryKind::Add,
                activation,
            } = &node.op
            else {
                continue;
            };
            let [a, b] = node.inputs[..] else { continue };
            if a == b {
                continue;
            }
            for (v, r) in [(a, b), (b, a)] {
                let Some(p) = producers[v] else { continue };
                let conv_ok = matches!(&graph.nodes[p].op,
                    Op::Conv(c) if c.activation.is_identity() && graph.nodes[p].inputs.len() == 1);
                if !conv_ok
                    || !only_feeds(graph, &consumers, v, j)
                    || graph.shape(r) != graph.shape(v)
                    || graph.shape(node.output) != graph.shape(v)
                {
                    continue;
                }
                let move_down = producers[r].is_some_and(|pr| pr > p);
                let activation = activation.clone();
                if let Op::Conv(c) = &mut graph.nodes[p].op {
                    c.activation = activation;
                }
                graph.nodes[p].inputs.push(r);
                merge_into_producer(graph, p, j, move_down);
                continue 'search;
            }
        }
        return Ok(());
    }
}
