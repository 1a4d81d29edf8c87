//! Graph surgery shared by the passes.

use crate::ir::{Graph, NodeId, ValueId};

/// Whether `v` is read only by `node` (exactly one consumer) and is not a graph output.
pub(super) fn only_feeds(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
    v: ValueId,
    node: NodeId,
) -> bool {
    consumers[v].as_slice() == [node] && !graph.outputs.contains(&v)
}

/// Merges node `consumer` into node `producer`: the producer now writes the
/// consumer's output value (so names of graph outputs survive), and the
/// consumer is removed. The producer's old output must have had no other
/// reader. The merged node takes the consumer's position when `move_down`
/// (needed when the consumer read a value produced after the producer),
/// otherwise it stays in the producer's position.
pub(super) fn merge_into_producer(
    graph: &mut Graph,
    producer: NodeId,
    consumer: NodeId,
    move_down: bool,
) {
    let out = graph.nodes[consumer].output;
    graph.nodes[producer].output = out;
    if move_down {
        let merged = graph.nodes[producer].clone();
        graph.nodes[consumer] = merged;
        graph.nodes.remove(producer);
    } else {
        graph.nodes.remove(consumer);
    }
}
