//! Fused blocks: which nodes may be tiled, and how each node's output axes
//! depend on its inputs'.

use std::collections::HashSet;

use super::axis::AxisMap;
use crate::error::{Error, Result};
use crate::ir::{CoordTransform, Graph, NearestMode, NodeId, Op, ResizeMode, ValueId};

/// How one input of a node enters a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputGeom {
    /// A map sliced per tile: one [`AxisMap`] for rows, one for columns.
    Map([AxisMap; 2]),
    /// A broadcast operand (`[C,1,1]`, a scalar…) passed whole to every tile.
    Whole,
}

/// The spatial dependence of one node on each of its inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeGeom {
    /// One entry per node input.
    pub inputs: Vec<InputGeom>,
}

impl NodeGeom {
    /// The axis maps of the first sliced input: the one that decides how far
    /// the node's output range must grow ([`AxisMap::expand`]).
    pub(crate) fn primary(&self) -> Option<(usize, [AxisMap; 2])> {
        self.inputs.iter().enumerate().find_map(|(i, g)| match g {
            InputGeom::Map(m) => Some((i, *m)),
            InputGeom::Whole => None,
        })
    }
}

fn hw(shape: &[usize]) -> Option<[usize; 2]> {
    match shape {
        [_, _, h, w] => Some([*h, *w]),
        _ => None,
    }
}

fn same(maps: AxisMap) -> InputGeom {
    InputGeom::Map([maps, maps])
}

/// True when a nearest Resize by integer `factor` reads input `o / factor`
/// for output `o`, which is what makes it tileable: the rule then commutes
/// with shifting a tile by a multiple of `factor`. Evaluated with the same
/// f32 arithmetic as the CPU executor.
pub(crate) fn nearest_is_floor(coord: CoordTransform, mode: NearestMode, factor: usize) -> bool {
    let scale = factor as f32;
    let in_len = 64usize;
    (0..4 * factor).all(|o| {
        let xf = o as f32;
        let x = match coord {
            CoordTransform::HalfPixel | CoordTransform::PytorchHalfPixel => {
                (xf + 0.5) / scale - 0.5
            }
            CoordTransform::Asymmetric => xf / scale,
            CoordTransform::AlignCorners => return false,
        };
        let x0 = x.floor();
        let r = x - x0;
        let up = match mode {
            NearestMode::RoundPreferFloor => r > 0.5,
            NearestMode::RoundPreferCeil => r >= 0.5,
            NearestMode::Floor => false,
            NearestMode::Ceil => r > 0.0,
        };
        let src = (x0 as i64 + i64::from(up)).clamp(0, in_len as i64 - 1);
        src == (o / factor) as i64
    })
}

/// How `node` of `graph` depends on its inputs spatially, or `None` when it
/// cannot be tiled (it needs the whole map, or is a variant tiling does not handle).
pub(crate) fn node_geom(graph: &Graph, node: NodeId) -> Option<NodeGeom> {
    let n = graph.nodes.get(node)?;
    let out = graph.shape(n.output);
    let [oh, ow] = hw(out)?;
    // The first map input: a binary's constant may come first (`1 - x`).
    let [ih, iw] = n.inputs.iter().find_map(|&i| hw(graph.shape(i)))?;
    let window =
        |kernel: [usize; 2], strides: [usize; 2], pads: [usize; 4], dil: [usize; 2], ceil: bool| {
            let ax = |a: usize| AxisMap::Window {
                kernel: kernel[a],
                stride: strides[a],
                pad_begin: pads[a],
                pad_end: pads[a + 2],
                dilation: dil[a],
                ceil_mode: ceil,
            };
            InputGeom::Map([ax(0), ax(1)])
        };
    let inputs = match &n.op {
        Op::Conv(c) => {
            let w = c.weight.shape();
            let mut v = vec![window([w[2], w[3]], c.strides, c.pads, c.dilations, false)];
            if n.inputs.len() == 2 {
                v.push(same(AxisMap::Identity));
            }
            v
        }
        Op::ConvTranspose(c) => {
            let w = c.weight.shape();
            let ax = |a: usize| AxisMap::Transposed {
                kernel: w[2 + a],
                stride: c.strides[a],
                pad_begin: c.pads[a],
                dilation: c.dilations[a],
            };
            vec![InputGeom::Map([ax(0), ax(1)])]
        }
        Op::Pool(p) => vec![window(
            p.kernel,
            p.strides,
            p.pads,
            p.dilations,
            p.ceil_mode,
        )],
        Op::Activation(_) | Op::ChannelAffine { .. } | Op::Lrn { .. } | Op::ChannelSlice { .. } => {
            vec![same(AxisMap::Identity)]
        }
        Op::Softmax { axis: 1 } | Op::LogSoftmax { axis: 1 } | Op::ChannelReduce(_) => {
            vec![same(AxisMap::Identity)]
        }
        Op::Concat { axis: 1 } => {
            for &i in &n.inputs {
                if hw(graph.shape(i))? != [oh, ow] {
                    return None;
                }
            }
            vec![same(AxisMap::Identity); n.inputs.len()]
        }
        Op::Binary { .. } => {
            let mut v = Vec::new();
            for &i in &n.inputs {
                let s = graph.shape(i);
                if hw(s) == Some([oh, ow]) {
                    v.push(same(AxisMap::Identity));
                } else if s.is_empty() || s == [1] || s.len() >= 2 && s[s.len() - 2..] == [1, 1] {
                    v.push(InputGeom::Whole);
                } else {
                    return None;
                }
            }
            // A rank-1 `[C]` operand broadcasts along W, not channels: it
            // stays unsupported (not Whole). A broadcast operand produced
            // inside the block is rejected by `Block::new`.
            v
        }
        Op::Pad { pads, .. } => {
            let ax = |a: usize| AxisMap::Pad { begin: pads[a] };
            vec![InputGeom::Map([ax(0), ax(1)])]
        }
        Op::Crop { offset } => {
            let ax = |a: usize| AxisMap::Crop { offset: offset[a] };
            vec![InputGeom::Map([ax(0), ax(1)])]
        }
        Op::Resize {
            mode: ResizeMode::Nearest(nm),
            coord,
            scales,
        } => {
            let mut f = [0usize; 2];
            for (a, (i, o)) in [(ih, oh), (iw, ow)].into_iter().enumerate() {
                if i == 0 || o % i != 0 {
                    return None;
                }
                f[a] = o / i;
                if scales[a] != f[a] as f32 || !nearest_is_floor(*coord, *nm, f[a]) {
                    return None;
                }
            }
            vec![InputGeom::Map([
                AxisMap::Upsample { factor: f[0] },
                AxisMap::Upsample { factor: f[1] },
            ])]
        }
        Op::DepthToSpace { blocksize, .. } => {
            vec![same(AxisMap::Upsample { factor: *blocksize })]
        }
        _ => return None,
    };
    if inputs.len() != n.inputs.len() {
        return None;
    }
    // Some input must be a sliced map: the first one drives the output's
    // extent (`NodeGeom::primary`).
    if !inputs.iter().any(|g| matches!(g, InputGeom::Map(_))) {
        return None;
    }
    // An axis on which no output reads any input (every window lies in
    // padding) cannot be cut into tiles that each read something: run whole.
    for (g, &v) in inputs.iter().zip(&n.inputs) {
        if let (InputGeom::Map(m), Some([h, w])) = (g, hw(graph.shape(v)))
            && (m[0].need(super::region::Span::new(0, oh), h).is_empty()
                || m[1].need(super::region::Span::new(0, ow), w).is_empty())
        {
            return None;
        }
    }
    Some(NodeGeom { inputs })
}

/// True when `node` can be part of a fused block.
pub fn is_tileable(graph: &Graph, node: NodeId) -> bool {
    node_geom(graph, node).is_some()
}

/// A fused block: nodes run together on each tile, in topological order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The block's nodes, ascending (hence topological).
    pub nodes: Vec<NodeId>,
    /// Runtime values the block reads from outside (graph inputs or earlier
    /// segments' outputs), in first-use order. Constants are not listed.
    pub inputs: Vec<ValueId>,
    /// Values the block produces that are read after it or are graph outputs.
    /// All have the same H×W: the map the grid cuts.
    pub outputs: Vec<ValueId>,
}

impl Block {
    /// Checks that `nodes` form a fused block of `graph` and works out its
    /// inputs and outputs. Fails when a node is not tileable, a broadcast
    /// operand is produced inside the block, or the outputs differ in H×W.
    pub fn new(graph: &Graph, mut nodes: Vec<NodeId>) -> Result<Block> {
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.is_empty() {
            return Err(Error::InvalidInput("empty fused block".into()));
        }
        let members: HashSet<NodeId> = nodes.iter().copied().collect();
        let producers = graph.producers();
        let consumers = graph.consumers();
        let mut produced = HashSet::new();
        let mut inputs = Vec::new();
        for &id in &nodes {
            let n = graph
                .nodes
                .get(id)
                .ok_or_else(|| Error::InvalidInput(format!("node {id} out of range")))?;
            let geom = node_geom(graph, id).ok_or_else(|| {
                Error::Unsupported(format!("node {} ({}) cannot be tiled", n.name, n.op.name()))
            })?;
            for (&v, g) in n.inputs.iter().zip(&geom.inputs) {
                let inside = producers[v].is_some_and(|p| members.contains(&p));
                if inside && *g == InputGeom::Whole {
                    return Err(Error::Unsupported(format!(
                        "node {} broadcasts a map produced inside its block",
                        n.name
                    )));
                }
                if !inside && !graph.constants.contains_key(&v) && !inputs.contains(&v) {
                    inputs.push(v);
                }
            }
            produced.insert(n.output);
        }
        let mut outputs = Vec::new();
        for &id in &nodes {
            let v = graph.nodes[id].output;
            let escapes =
                graph.outputs.contains(&v) || consumers[v].iter().any(|c| !members.contains(c));
            if escapes {
                outputs.push(v);
            }
        }
        let Some(&first) = outputs.first() else {
            return Err(Error::InvalidInput("fused block has no output".into()));
        };
        let size = hw(graph.shape(first));
        for &o in &outputs {
            if hw(graph.shape(o)) != size {
                return Err(Error::Unsupported(format!(
                    "fused block outputs {} {:?} and {} {:?} differ in size",
                    graph.values[first].name,
                    graph.shape(first),
                    graph.values[o].name,
                    graph.shape(o)
                )));
            }
        }
        Ok(Block {
            nodes,
            inputs,
            outputs,
        })
    }

    /// H×W of the block's output map(s).
    pub fn output_hw(&self, graph: &Graph) -> [usize; 2] {
        self.outputs
            .first()
            .and_then(|&o| hw(graph.shape(o)))
            .unwrap_or([0, 0])
    }

    /// Untiled FLOPs of the block's nodes.
    pub fn flops(&self, graph: &Graph) -> u64 {
        self.nodes.iter().map(|&n| graph.node_cost(n).flops).sum()
    }

    /// Names of the first and last node, for reports.
    pub fn span_names(&self, graph: &Graph) -> (String, String) {
        let name = |i: Option<&NodeId>| i.map_or(String::new(), |&i| graph.nodes[i].name.clone());
        (name(self.nodes.first()), name(self.nodes.last()))
    }
}
