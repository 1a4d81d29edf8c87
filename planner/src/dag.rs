//! The planner's view of a model: a DAG of ops with FLOPs, op class, tensor
//! bytes and the spatial geometry that tiling needs. Built from the engine's
//! [`Graph`] (via its `node_cost`), or directly (tests, benchmarks).

use tile_engine::ir::{Graph, Op, OpClass};

use crate::error::{Error, Result};

/// Index of an op in [`ModelDag::ops`] (topological order).
pub type OpIdx = usize;
/// Index of a tensor in [`ModelDag::tensors`].
pub type TensorIdx = usize;

/// How an op's output rows/columns depend on its input rows/columns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Geometry {
    /// A sliding window (conv, pool): output `o` reads input
    /// `[o*stride - pad, o*stride - pad + extent)` per axis (`extent` includes dilation).
    Window {
        /// Effective window extent `(k-1)*dilation + 1`, `[h, w]`.
        extent: [usize; 2],
        /// `[sh, sw]`.
        stride: [usize; 2],
        /// Padding before, `[top, left]`.
        pad: [usize; 2],
    },
    /// A transposed conv: output `o` reads the inputs `x` with
    /// `x*stride - pad + k` = `o` for some `k` in `[0, extent)`.
    Transposed {
        /// Effective kernel extent `(k-1)*dilation + 1`, `[h, w]`.
        extent: [usize; 2],
        /// `[sh, sw]`.
        stride: [usize; 2],
        /// Padding before, `[top, left]`.
        pad: [usize; 2],
    },
    /// A crop: output `o` reads input `o + offset`.
    Shift {
        /// `[top, left]`.
        offset: [usize; 2],
    },
    /// Output pixel `(y, x)` reads only the input pixel at the same relative
    /// position (activations, affine, channel concat; integer nearest
    /// up-sampling and DepthToSpace, whose input is smaller).
    Pointwise,
    /// Mixes spatial positions globally (dense, global pool, reshape, …): cannot be tiled.
    Global,
}

/// One op.
#[derive(Clone, Debug, PartialEq)]
pub struct DagOp {
    /// Name for reports.
    pub name: String,
    /// Op class for throughput lookups.
    pub class: OpClass,
    /// FLOPs of the whole op (untiled).
    pub flops: f64,
    /// Runtime input tensors (constants excluded).
    pub inputs: Vec<TensorIdx>,
    /// Output tensor.
    pub output: TensorIdx,
    /// Spatial dependence, for halos.
    pub geometry: Geometry,
}

impl DagOp {
    /// True if the op can run on a spatial tile.
    pub fn tileable(&self) -> bool {
        self.geometry != Geometry::Global
    }
}

/// One runtime tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct DagTensor {
    /// Name for reports.
    pub name: String,
    /// Size in bytes (as it crosses a link: a model input may travel as
    /// bytes, see the coordinator's `expect_inputs`).
    pub bytes: f64,
    /// Elements (f32 on an executor, whatever `bytes` says).
    pub elements: f64,
    /// `[H, W]` for NCHW maps, `None` otherwise.
    pub hw: Option<[usize; 2]>,
    /// Producing op; `None` for model inputs (which start on the device).
    pub producer: Option<OpIdx>,
    /// Ops reading it, ascending.
    pub consumers: Vec<OpIdx>,
    /// True for a model output.
    pub is_output: bool,
}

/// A model as the planner sees it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ModelDag {
    /// Ops in topological order.
    pub ops: Vec<DagOp>,
    /// Runtime tensors.
    pub tensors: Vec<DagTensor>,
}

impl ModelDag {
    /// Builds the DAG from the engine's graph. Constants and op weights are
    /// assumed deployed on every node, so they never cross a cut.
    pub fn from_graph(graph: &Graph) -> Result<ModelDag> {
        if graph.nodes.is_empty() {
            return Err(Error::Model("the graph has no nodes".into()));
        }
        let mut map = vec![None; graph.values.len()];
        let consumers = graph.consumers();
        let mut tensors = Vec::new();
        let add = |v: usize, producer: Option<OpIdx>, tensors: &mut Vec<DagTensor>| {
            let shape = graph.shape(v);
            let elements = shape.iter().map(|&d| d as f64).product::<f64>();
            tensors.push(DagTensor {
                name: graph.values[v].name.clone(),
                bytes: elements * 4.0,
                elements,
                hw: (shape.len() == 4).then(|| [shape[2], shape[3]]),
                producer,
                consumers: Vec::new(),
                is_output: graph.outputs.contains(&v),
            });
            tensors.len() - 1
        };
        for &v in &graph.inputs {
            if v >= graph.values.len() {
                return Err(Error::Model(format!("graph input id {v} out of range")));
            }
            map[v] = Some(add(v, None, &mut tensors));
        }
        let mut ops = Vec::with_capacity(graph.nodes.len());
        for (i, n) in graph.nodes.iter().enumerate() {
            let mut inputs = Vec::new();
            for &v in &n.inputs {
                if graph.constants.contains_key(&v) {
                    continue;
                }
                let t = map.get(v).copied().flatten().ok_or_else(|| {
                    Error::Model(format!(
                        "node {} reads a value that is not produced before it",
                        n.name
                    ))
                })?;
                if !inputs.contains(&t) {
                    inputs.push(t);
                }
            }
            if n.output >= graph.values.len() {
                return Err(Error::Model(format!(
                    "node {} output id out of range",
                    n.name
                )));
            }
            let out = add(n.output, Some(i), &mut tensors);
            map[n.output] = Some(out);
            let cost = graph.node_cost(i);
            ops.push(DagOp {
                name: n.name.clone(),
                class: cost.class,
                flops: cost.flops as f64,
                inputs,
                output: out,
                geometry: geometry(graph, i, &consumers),
            });
        }
        ModelDag::new(ops, tensors)
    }

    /// Builds a DAG from parts: fills in consumers and checks ids and topological order.
    pub fn new(ops: Vec<DagOp>, mut tensors: Vec<DagTensor>) -> Result<ModelDag> {
        for t in &mut tensors {
            t.consumers.clear();
        }
        for (i, op) in ops.iter().enumerate() {
            let out = tensors
                .get(op.output)
                .ok_or_else(|| Error::Model(format!("op {}: output id out of range", op.name)))?;
            if out.producer != Some(i) {
                return Err(Error::Model(format!(
                    "op {}: output's producer mismatch",
                    op.name
                )));
            }
            if !(op.flops.is_finite() && op.flops >= 0.0) {
                return Err(Error::Model(format!("op {}: bad FLOP count", op.name)));
            }
            for &t in &op.inputs {
                let tensor = tensors.get_mut(t).ok_or_else(|| {
                    Error::Model(format!("op {}: input id out of range", op.name))
                })?;
                if tensor.producer.is_some_and(|p| p >= i) {
                    return Err(Error::Model(format!(
                        "op {}: not in topological order",
                        op.name
                    )));
                }
                if !tensor.consumers.contains(&i) {
                    tensor.consumers.push(i);
                }
            }
        }
        Ok(ModelDag { ops, tensors })
    }

    /// Total FLOPs.
    pub fn total_flops(&self) -> f64 {
        self.ops.iter().map(|o| o.flops).sum()
    }
}

fn geometry(graph: &Graph, i: usize, consumers: &[Vec<usize>]) -> Geometry {
    let g = op_geometry(graph, i);
    // The engine has the last word (a rank-1 operand, maps of two sizes in
    // one Concat): an op it would not tile is no tileable op here either.
    if g != Geometry::Global && !tile_engine::tiling::is_tileable(graph, i) {
        return Geometry::Global;
    }
    // Nor does it tile a block that makes a 1×1 map another op of it
    // broadcasts over a larger one (a pooled branch expanded back, as in
    // DeepLab's head): such an op runs whole before the block. A block
    // the planner tiled with it ran whole on the coordinator.
    let hw = |v: usize| match graph.shape(v) {
        [_, _, h, w] => Some([*h, *w]),
        _ => None,
    };
    let out = graph.nodes[i].output;
    if hw(out) == Some([1, 1])
        && consumers[out]
            .iter()
            .any(|&c| hw(graph.nodes[c].output).is_some_and(|d| d != [1, 1]))
    {
        return Geometry::Global;
    }
    g
}

/// What an output position of op `i` reads, by its kind alone.
fn op_geometry(graph: &Graph, i: usize) -> Geometry {
    let n = &graph.nodes[i];
    let out = graph.shape(n.output);
    let spatial_in = n
        .inputs
        .iter()
        .filter(|v| !graph.constants.contains_key(v))
        .all(|&v| graph.shape(v).len() == 4);
    if out.len() != 4 || !spatial_in {
        return Geometry::Global;
    }
    let window = |k: [usize; 2], s: [usize; 2], d: [usize; 2], p: [usize; 4]| Geometry::Window {
        extent: [(k[0] - 1) * d[0] + 1, (k[1] - 1) * d[1] + 1],
        stride: s,
        pad: [p[0], p[1]],
    };
    match &n.op {
        Op::Conv(c) => {
            let w = c.weight.shape();
            window([w[2].max(1), w[3].max(1)], c.strides, c.dilations, c.pads)
        }
        Op::Pool(p) => window(p.kernel, p.strides, p.dilations, p.pads),
        // TF exports pad explicitly before each strided conv: these tile as
        // the engine tiles them, or every such conv would end a block.
        Op::Pad { pads, .. } => window([1, 1], [1, 1], [1, 1], *pads),
        Op::Crop { offset } => Geometry::Shift { offset: *offset },
        Op::ConvTranspose(c) => {
            let w = c.weight.shape();
            let k = [w[2].max(1), w[3].max(1)];
            Geometry::Transposed {
                extent: [
                    (k[0] - 1) * c.dilations[0] + 1,
                    (k[1] - 1) * c.dilations[1] + 1,
                ],
                stride: c.strides,
                pad: [c.pads[0], c.pads[1]],
            }
        }
        Op::Activation(_) | Op::ChannelAffine { .. } | Op::Lrn { .. } | Op::ChannelSlice { .. } => {
            Geometry::Pointwise
        }
        Op::Binary { .. } => Geometry::Pointwise,
        Op::Concat { axis: 1 } => Geometry::Pointwise,
        // Across the channels of each position: the tiler fuses these too.
        Op::ChannelReduce(_) | Op::Softmax { axis: 1 } | Op::LogSoftmax { axis: 1 } => {
            Geometry::Pointwise
        }
        // Integer nearest up-sampling reads input `o / factor` for output
        // `o`: pointwise between maps of different sizes, which the halo
        // model scales by. The engine decides which resizes are exact.
        Op::Resize { .. } | Op::DepthToSpace { .. } => Geometry::Pointwise,
        _ => Geometry::Global,
    }
}
