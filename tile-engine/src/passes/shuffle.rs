//! A chain of reshapes and transposes that moves each value where a
//! depth-to-space puts it (PyTorch's pixel shuffle as its exporters write
//! it: reshape to rank 6, transpose, reshape back) becomes one
//! `Op::DepthToSpace`, which tiles with the layers around it; the chain ran
//! whole between fused blocks.

use super::rewrite::only_feeds;
use crate::error::Result;
use crate::ir::{DepthToSpaceMode, Graph, NodeId, Op};

/// Most elements whose positions are checked one by one; a larger map's
/// chain is left as it is.
const MAX_CHECKED: usize = 1 << 24;

/// Rewrites every such chain; its nodes go (the last keeps its output).
pub fn depth_to_space_chains(graph: &mut Graph) -> Result<()> {
    let producers = graph.producers();
    let consumers = graph.consumers();
    let moves = |n: NodeId| {
        matches!(graph.nodes[n].op, Op::Reshape | Op::Transpose { .. })
            && graph.nodes[n].inputs.len() == 1
    };
    let mut rewrites = Vec::new();
    for end in (0..graph.nodes.len()).filter(|&n| moves(n)) {
        // From the chain's last node back, each earlier node feeding only the next.
        let mut chain = vec![end];
        loop {
            let next = chain[chain.len() - 1];
            let v = graph.nodes[next].inputs[0];
            match producers[v] {
                Some(p) if moves(p) && only_feeds(graph, &consumers, v, next) => chain.push(p),
                _ => break,
            }
        }
        chain.reverse();
        // The longest tail of the chain that is a depth-to-space.
        let found = (0..chain.len().saturating_sub(1))
            .find_map(|start| depth_to_space(graph, &chain[start..]).map(|m| (start, m)));
        if let Some((start, (blocksize, mode))) = found {
            rewrites.push((end, graph.nodes[chain[start]].inputs[0], blocksize, mode));
        }
    }
    // Each rewrite keeps the value it replaces, so they stand together: an
    // end inside another's rewritten tail is left unread and pruned, and
    // two shuffles in a row each become one.
    let rewrote = !rewrites.is_empty();
    for (end, x, blocksize, mode) in rewrites {
        graph.nodes[end].op = Op::DepthToSpace { blocksize, mode };
        graph.nodes[end].inputs = vec![x];
    }
    if rewrote {
        graph.prune();
    }
    Ok(())
}

/// The block size and mode of the depth-to-space `chain` (graph order)
/// performs on its 4-D input, if it performs one.
fn depth_to_space(graph: &Graph, chain: &[NodeId]) -> Option<(usize, DepthToSpaceMode)> {
    let xs = graph.shape(graph.nodes[chain[0]].inputs[0]);
    let ys = graph.shape(graph.nodes[*chain.last()?].output);
    let (&[n, cin, h, w], &[n2, cout, oh, ow]) = (xs, ys) else {
        return None;
    };
    let r = oh.checked_div(h)?;
    let numel = ys.iter().product::<usize>();
    if n != n2 || r < 2 || oh != h * r || ow != w * r || cin != cout * r * r || numel > MAX_CHECKED
    {
        return None;
    }
    // Where each output element comes from: back through the chain, a
    // transpose permuting the index, a reshape keeping the flat one.
    let source = |mut o: usize| {
        for &id in chain.iter().rev() {
            let node = &graph.nodes[id];
            if let Op::Transpose { perm } = &node.op {
                let (so, si) = (graph.shape(node.output), graph.shape(node.inputs[0]));
                let mut idx = vec![0; so.len()];
                for (k, &d) in so.iter().enumerate().rev() {
                    idx[k] = o % d;
                    o /= d;
                }
                let mut at = vec![0; si.len()];
                for (k, &p) in perm.iter().enumerate() {
                    at[p] = idx[k];
                }
                o = at.iter().zip(si).fold(0, |acc, (&i, &d)| acc * d + i);
            }
        }
        o
    };
    [DepthToSpaceMode::Crd, DepthToSpaceMode::Dcr]
        .into_iter()
        .find(|&mode| {
            (0..numel).all(|o| {
                let (ox, oy) = (o % ow, o / ow % oh);
                let (c, b) = (o / (ow * oh) % cout, o / (ow * oh * cout));
                let (i, j) = (oy % r, ox % r);
                let ch = match mode {
                    DepthToSpaceMode::Crd => c * r * r + i * r + j,
                    DepthToSpaceMode::Dcr => (i * r + j) * cout + c,
                };
                source(o) == ((b * cin + ch) * h + oy / r) * w + ox / r
            })
        })
        .map(|mode| (r, mode))
}
