//! The CPU reference executor: plain, obviously-correct Rust for every op; the oracle for the GPU kernels.
//!
//! Determinism is an invariant here, because tiling compares tiled runs with
//! untiled ones bit for bit: every output element is accumulated in an order
//! fixed by the op's parameters alone (the tap order `(ci, ky, kx)` for
//! convolutions, `k` ascending for matrix products, ascending positions for
//! reductions), never by the element's position or the tensor's extent. Taps
//! that fall into padding are skipped, never added as zeros. Parallelism only
//! splits work between whole output planes or rows, so it cannot change any
//! element's summation order.
//!
//! Conventions where ONNX leaves a corner undefined: a max-pool window with no
//! in-bounds tap yields `-inf`; an average-pool window with nothing to count
//! yields `0`.

mod conv;
mod elementwise;
mod layout;
mod linalg;
mod norm;
mod pool;
mod resize;
pub(crate) use resize::{cubic_taps, nearest_taps};

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::ir::{Activation, Graph, Node, Op};
use crate::tensor::Tensor;

/// The CPU reference executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuExecutor;

impl crate::Executor for CpuExecutor {
    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn run(&self, graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        run(graph, inputs)
    }

    fn run_until(
        &self,
        graph: &Graph,
        inputs: &[Tensor],
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Vec<Tensor>> {
        run_checked(graph, inputs, keep_going)
    }
}

/// Runs `graph` on the CPU with one tensor per graph input; returns one tensor per graph output.
///
/// Intermediate tensors are dropped as soon as their last consumer has run,
/// so peak memory follows the graph's widest cut, not its total size.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    run_checked(graph, inputs, &|| true)
}

/// [`run`], asking `keep_going` before each op and giving up with
/// [`Error::Cancelled`] when it says false.
fn run_checked(
    graph: &Graph,
    inputs: &[Tensor],
    keep_going: &dyn Fn() -> bool,
) -> Result<Vec<Tensor>> {
    graph.validate()?;
    graph.check_inputs(inputs)?;

    let n_values = graph.values.len();
    let mut last_use: Vec<Option<usize>> = vec![None; n_values];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &v in &node.inputs {
            last_use[v] = Some(i);
        }
    }
    let mut is_output = vec![false; n_values];
    for &o in &graph.outputs {
        is_output[o] = true;
    }

    let mut slots: Vec<Option<Cow<'_, Tensor>>> = (0..n_values).map(|_| None).collect();
    for (&v, t) in &graph.constants {
        slots[v] = Some(Cow::Borrowed(t.as_ref()));
    }
    for (&v, t) in graph.inputs.iter().zip(inputs) {
        slots[v] = Some(Cow::Borrowed(t));
    }

    for (i, node) in graph.nodes.iter().enumerate() {
        if !keep_going() {
            return Err(Error::Cancelled);
        }
        let out = {
            let ins = node
                .inputs
                .iter()
                .map(|&v| {
                    slots[v].as_deref().ok_or_else(|| {
                        Error::Malformed(format!(
                            "node {} reads value {} that is not available",
                            node.name, graph.values[v].name
                        ))
                    })
                })
                .collect::<Result<Vec<&Tensor>>>()?;
            eval_op(&node.op, &ins, graph.shape(node.output)).map_err(|e| in_node(e, node))?
        };
        if last_use[node.output].is_some() || is_output[node.output] {
            slots[node.output] = Some(Cow::Owned(out));
        }
        for &v in &node.inputs {
            if last_use[v] == Some(i) && !is_output[v] {
                slots[v] = None;
            }
        }
    }

    graph
        .outputs
        .iter()
        .map(|&o| {
            slots[o]
                .as_ref()
                .map(|t| t.as_ref().clone())
                .ok_or_else(|| {
                    Error::Malformed(format!(
                        "graph output {} was never produced",
                        graph.values[o].name
                    ))
                })
        })
        .collect()
}

/// Prefixes an error with the node that raised it.
fn in_node(e: Error, node: &Node) -> Error {
    let at = |m: String| format!("node {} ({}): {m}", node.name, node.op.name());
    match e {
        Error::Malformed(m) => Error::Malformed(at(m)),
        Error::Unsupported(m) => Error::Unsupported(at(m)),
        Error::Shape(m) => Error::Shape(at(m)),
        Error::InvalidInput(m) => Error::InvalidInput(at(m)),
        Error::Limit(m) => Error::Limit(at(m)),
        other => other,
    }
}

/// Evaluates one op on its input tensors; `out_shape` is the output value's
/// shape (it states the target of Reshape, Resize and Crop, and is checked
/// against shape inference for every other op).
pub fn eval_op(op: &Op, inputs: &[&Tensor], out_shape: &[usize]) -> Result<Tensor> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    crate::ir::check_explicit(op, &shapes, out_shape).map_err(Error::Shape)?;
    check_op_params(op, out_shape)?;
    let missing = || Error::Shape(format!("{} is missing an input", op.name()));
    let x = *inputs.first().ok_or_else(missing)?;
    match op {
        Op::Conv(c) => conv::conv(c, x, inputs.get(1).copied(), out_shape),
        Op::ConvTranspose(c) => conv::conv_transpose(c, x, out_shape),
        Op::Pool(p) => pool::pool(p, x, out_shape),
        Op::GlobalPool(kind) => pool::global_pool(*kind, x, out_shape),
        Op::ChannelReduce(kind) => pool::channel_reduce(*kind, x, out_shape),
        Op::Dense {
            weight,
            bias,
            activation,
        } => linalg::dense(x, weight, bias.as_deref().map(Vec::as_slice), activation),
        Op::MatMul => linalg::matmul(x, inputs.get(1).ok_or_else(missing)?, out_shape),
        Op::Activation(a) => {
            let mut y = x.clone();
            elementwise::activate(a, out_shape, y.data_mut());
            Ok(y)
        }
        Op::Binary { kind, activation } => elementwise::binary(
            *kind,
            activation,
            x,
            inputs.get(1).ok_or_else(missing)?,
            out_shape,
        ),
        Op::ChannelAffine { scale, shift } => Ok(elementwise::channel_affine(x, scale, shift)),
        Op::Concat { axis } => layout::concat(inputs, *axis, out_shape),
        Op::Reshape => Tensor::new(out_shape.to_vec(), x.data().to_vec()),
        Op::Transpose { perm } => layout::transpose(x, perm, out_shape),
        Op::Softmax { axis } => Ok(norm::softmax(x, *axis, false)),
        Op::LogSoftmax { axis } => Ok(norm::softmax(x, *axis, true)),
        Op::InstanceNorm {
            scale,
            bias,
            epsilon,
        } => Ok(norm::instance_norm(x, scale, bias, *epsilon)),
        Op::LayerNorm {
            axis,
            scale,
            bias,
            epsilon,
        } => Ok(norm::layer_norm(x, *axis, scale, bias, *epsilon)),
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => Ok(norm::lrn(x, *size, *alpha, *beta, *bias)),
        Op::Pad { pads, value } => layout::pad(x, *pads, *value, out_shape),
        Op::BorderPad { pads, mode } => layout::border_pad(x, *pads, *mode, out_shape),
        Op::Resize {
            mode,
            coord,
            scales,
        } => resize::resize(x, *mode, *coord, *scales, out_shape),
        Op::Crop { offset } => layout::crop(x, *offset, out_shape),
        Op::ChannelSlice { start, len } => layout::channel_slice(x, *start, *len),
        Op::DepthToSpace { blocksize, mode } => {
            layout::depth_to_space(x, *blocksize, *mode, out_shape)
        }
    }
}

/// Checks what shape inference leaves to the executor: per-channel parameter
/// lengths that only matter when values are computed.
fn check_op_params(op: &Op, out_shape: &[usize]) -> Result<()> {
    let out_channels = out_shape.get(1).copied().unwrap_or(1);
    match op {
        Op::Conv(c) => check_activation(&c.activation, out_channels),
        Op::ConvTranspose(c) => {
            if let Some(b) = c.bias.as_ref().filter(|b| b.len() != out_channels) {
                return Err(Error::Shape(format!(
                    "bias has {} values for {out_channels} output channels",
                    b.len()
                )));
            }
            check_activation(&c.activation, out_channels)
        }
        Op::Dense { activation, .. }
        | Op::Binary { activation, .. }
        | Op::Activation(activation) => check_activation(activation, out_channels),
        Op::Resize {
            mode: _,
            coord,
            scales,
        } => {
            let needs_scale = !matches!(coord, crate::ir::CoordTransform::AlignCorners);
            if needs_scale && scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(Error::Unsupported(format!(
                    "resize scales {scales:?} must be positive and finite"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A PRelu slope must be a single value or one per channel.
fn check_activation(a: &Activation, channels: usize) -> Result<()> {
    match a {
        Activation::PRelu { slope } if slope.len() != 1 && slope.len() != channels => {
            Err(Error::Shape(format!(
                "PRelu has {} slopes for {channels} channels",
                slope.len()
            )))
        }
        _ => Ok(()),
    }
}
