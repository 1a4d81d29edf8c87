//! Turns the ordered layer calls into IR nodes.
//!
//! Layout rule: a rank-4 Keras tensor (NHWC) is an NCHW value in the IR;
//! tensors of every other rank keep Keras's axis order. Layers that change
//! rank across that boundary (Flatten, Reshape) insert the Transpose that
//! keeps Keras's element order, so Dense weights are used as stored.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::config::{Act, Cfg};
use super::conv;
use super::topology::{Call, TensorRef, Topology, Writer};
use super::weights::Weights;
use crate::error::{Error, Result};
use crate::ir::{
    Activation, BinaryKind, CoordTransform, DepthToSpaceMode, Graph, NearestMode, Op, PoolKind,
    ResizeMode, ValueId,
};
use crate::tensor::Tensor;

/// Graph under construction, with the Keras tensor → IR value map.
pub(crate) struct Builder<'w> {
    /// The graph built so far.
    pub graph: Graph,
    weights: &'w Weights,
    values: HashMap<TensorRef, ValueId>,
    /// [`Topology::var_paths`].
    var_paths: &'w HashMap<String, String>,
}

/// Builds the IR graph. `input_shape` (IR layout) overrides the single input's declared shape.
pub(crate) fn build(
    topo: &Topology,
    weights: &Weights,
    input_shape: Option<&[usize]>,
) -> Result<Graph> {
    if input_shape.is_some() && topo.inputs.len() != 1 {
        let names: Vec<&str> = topo.inputs.iter().map(|r| r.layer.as_str()).collect();
        return Err(Error::InvalidInput(format!(
            "the model has {} inputs ({}); tessera feeds models with exactly one",
            names.len(),
            names.join(", ")
        )));
    }
    let mut b = Builder {
        graph: Graph::default(),
        weights,
        values: HashMap::new(),
        var_paths: &topo.var_paths,
    };
    for call in &topo.calls {
        let out = b.call(call, topo, input_shape)?;
        b.values.insert(
            TensorRef {
                layer: call.layer.clone(),
                node: call.node,
                tensor: 0,
            },
            out,
        );
    }
    for r in &topo.outputs {
        let v = b.value(r)?;
        b.graph.outputs.push(v);
    }
    b.graph.validate()?;
    Ok(b.graph)
}

/// A layer's weight as the TF.js converter names a Keras 3 `.keras`
/// model's variables: `<path>/vars/<i>` (`path` from
/// [`Topology::var_paths`]), by position, in the order Keras 3 creates
/// them: a kernel (depthwise first, then pointwise) and then a bias; a batch
/// norm's gamma and beta (each only where the layer has it) and then its
/// moving mean and variance; a PReLU's alpha. `None` when the layer has no
/// such variables.
fn keras3_var<'w>(
    weights: &'w Weights,
    path: &str,
    layer: &str,
    param: &str,
) -> Result<Option<&'w Tensor>> {
    let prefix = format!("{path}/vars/");
    let mut vars: Vec<(usize, &str)> = weights
        .keys()
        .filter_map(|k| {
            let i = k.strip_prefix(&prefix)?.parse::<usize>().ok()?;
            Some((i, k.as_str()))
        })
        .collect();
    if vars.is_empty() {
        return Ok(None);
    }
    vars.sort_unstable();
    let n = vars.len();
    if vars.iter().enumerate().any(|(j, (i, _))| *i != j) {
        return Err(Error::Malformed(format!(
            "layer {layer}'s variables in the weights manifest ({path}/vars/…) are not vars/0..{}",
            n - 1
        )));
    }
    let index = match param {
        // A layer of one variable (a kernel alone, an alpha, a custom
        // layer's scale) holds it at 0 whatever its name, unless the name
        // is one Keras 3 always creates after another.
        "bias" | "pointwise_kernel" | "moving_mean" | "moving_variance" if n == 1 => None,
        _ if n == 1 => Some(0),
        "kernel" | "depthwise_kernel" | "alpha" | "gamma" | "mean" => Some(0),
        // A Normalization layer's mean, variance and (int) count.
        "variance" => Some(1),
        "pointwise_kernel" => Some(1),
        "bias" | "moving_variance" => n.checked_sub(1),
        "moving_mean" => n.checked_sub(2),
        "beta" => n.checked_sub(3),
        _ => None,
    };
    let Some(key) = index.and_then(|i| vars.get(i)).map(|(_, k)| *k) else {
        return Err(Error::Malformed(format!(
            "weight {layer}/{param} is missing from the weights manifest (the layer has {n} Keras 3 variables)"
        )));
    };
    Ok(weights.get(key))
}

impl Builder<'_> {
    fn value(&self, r: &TensorRef) -> Result<ValueId> {
        self.values.get(r).copied().ok_or_else(|| {
            Error::Malformed(format!("tensor of layer {} is never produced", r.layer))
        })
    }

    /// Shape of an IR value.
    pub fn shape(&self, v: ValueId) -> Vec<usize> {
        self.graph.shape(v).to_vec()
    }

    /// Looks up weight `param` of `layer`: `layer/param`, or a unique
    /// `…/layer/param` (exporters prefix the model name on nested scopes),
    /// or the Keras 3 name of the same variable (see [`keras3_var`]).
    pub fn weight(&self, layer: &str, param: &str) -> Result<&Tensor> {
        let key = format!("{layer}/{param}");
        if let Some(t) = self.weights.get(&key) {
            return Ok(t);
        }
        if let Some(t) = self
            .var_paths
            .get(layer)
            .map(|path| keras3_var(self.weights, path, layer, param))
            .transpose()?
            .flatten()
        {
            return Ok(t);
        }
        let suffix = format!("/{key}");
        let mut found = self
            .weights
            .iter()
            .filter(|(k, _)| k.ends_with(&suffix) || k.trim_end_matches(":0") == key);
        match (found.next(), found.next()) {
            (Some((_, t)), None) => Ok(t),
            (Some(_), Some(_)) => Err(Error::Malformed(format!(
                "weight {key} is ambiguous in the manifest"
            ))),
            _ => Err(Error::Malformed(format!(
                "weight {key} is missing from the weights manifest"
            ))),
        }
    }

    /// Adds a node with an inferred output shape.
    pub fn node(&mut self, name: &str, op: Op, inputs: Vec<ValueId>) -> Result<ValueId> {
        self.graph.add_node(name, op, inputs, name)
    }

    /// Adds a node whose output shape is stated.
    pub fn node_shaped(
        &mut self,
        name: &str,
        op: Op,
        input: ValueId,
        shape: Vec<usize>,
    ) -> Result<ValueId> {
        self.graph
            .add_node_with_shape(name, op, vec![input], name, shape)
    }

    /// Applies a Keras activation to `x` as a separate node (or returns `x` for linear).
    pub fn activate(&mut self, name: &str, x: ValueId, act: Act) -> Result<ValueId> {
        match act {
            Act::Elementwise(Activation::Identity) => Ok(x),
            Act::Elementwise(a) => self.node(name, Op::Activation(a), vec![x]),
            Act::Softmax => {
                let axis = channel_axis(self.graph.shape(x).len());
                self.node(name, Op::Softmax { axis }, vec![x])
            }
            Act::Swish => {
                let s = self.node(
                    &format!("{name}/sigmoid"),
                    Op::Activation(Activation::Sigmoid),
                    vec![x],
                )?;
                self.node(name, binary(BinaryKind::Mul), vec![x, s])
            }
        }
    }

    fn call(
        &mut self,
        call: &Call,
        topo: &Topology,
        input_shape: Option<&[usize]>,
    ) -> Result<ValueId> {
        let name = if call.node == 0 {
            call.layer.clone()
        } else {
            format!("{}_{}", call.layer, call.node)
        };
        let cfg = Cfg {
            layer: &call.layer,
            class: &call.class,
            json: &call.config,
            writer: topo.writer,
        };
        if call.class == "InputLayer" {
            let is_model_input = topo.inputs.iter().any(|r| r.layer == call.layer);
            if !is_model_input {
                return Err(Error::Malformed(format!(
                    "InputLayer {} is not among the model's input_layers",
                    call.layer
                )));
            }
            let shape = input_shape_of(&cfg, input_shape)?;
            let v = self.graph.add_value(name, shape);
            self.graph.inputs.push(v);
            return Ok(v);
        }
        let mut inputs: Vec<ValueId> = call
            .inputs
            .iter()
            .map(|r| self.value(r))
            .collect::<Result<_>>()?;
        // Keras 3 writes `x + 3.0` as an Add of a tensor and a number: the
        // number becomes a constant operand in its place.
        let merge = ["Add", "Multiply", "Maximum", "Minimum", "Subtract"];
        if merge.contains(&call.class.as_str()) {
            // A sum or product is the same bits in any order: its number
            // goes last (`3.0 + x` as `x + 3.0`); other ops keep the order.
            let commutes = matches!(call.class.as_str(), "Add" | "Multiply");
            for &(at, v) in &call.numbers {
                let k = self
                    .graph
                    .add_constant(format!("{name}/arg{at}"), Tensor::scalar(v));
                let at = if commutes {
                    inputs.len()
                } else {
                    at.min(inputs.len())
                };
                inputs.insert(at, k);
            }
        }
        let inputs = inputs;
        let one = || -> Result<ValueId> {
            match inputs.as_slice() {
                [x] => Ok(*x),
                _ => Err(Error::Malformed(format!(
                    "layer {} ({}) takes one input, got {}",
                    call.layer,
                    call.class,
                    inputs.len()
                ))),
            }
        };
        match call.class.as_str() {
            "Conv2D" | "Convolution2D" => conv::conv2d(self, &cfg, &name, one()?),
            "DepthwiseConv2D" => conv::depthwise(self, &cfg, &name, one()?),
            "SeparableConv2D" | "SeparableConvolution2D" => {
                conv::separable(self, &cfg, &name, one()?)
            }
            "Conv2DTranspose" | "Convolution2DTranspose" => {
                conv::conv2d_transpose(self, &cfg, &name, one()?)
            }
            // UpscalerJS's ESRGAN models register two custom layers:
            // MultiplyBeta (x · 0.2) and PixelShuffle{N}x (TF's
            // depth_to_space by N, matched with the unknown classes below).
            // Its classes ignore the layer config (`beta`, `scale`), so the
            // constants are taken as it runs them.
            "MultiplyBeta" => {
                let x = one()?;
                self.scale(&name, x, 0.2)
            }
            "MaxPooling2D" | "MaxPool2D" => conv::pool(self, &cfg, &name, one()?, PoolKind::Max),
            "AveragePooling2D" | "AvgPool2D" => conv::pool(
                self,
                &cfg,
                &name,
                one()?,
                PoolKind::Average {
                    count_include_pad: false,
                },
            ),
            "GlobalAveragePooling2D" | "GlobalAvgPool2D" => conv::global_pool(
                self,
                &cfg,
                &name,
                one()?,
                PoolKind::Average {
                    count_include_pad: false,
                },
            ),
            "GlobalMaxPooling2D" | "GlobalMaxPool2D" => {
                conv::global_pool(self, &cfg, &name, one()?, PoolKind::Max)
            }
            "ZeroPadding2D" => {
                cfg.channels_last()?;
                let pads = cfg.pads("padding")?;
                let x = one()?;
                self.node(&name, Op::Pad { pads, value: 0.0 }, vec![x])
            }
            "Cropping2D" => conv::crop(self, &cfg, &name, one()?),
            "UpSampling2D" => upsample(self, &cfg, &name, one()?),
            "Dense" => dense(self, &cfg, &name, one()?),
            "Activation" => {
                let act = cfg.activation()?;
                let x = one()?;
                self.activate(&name, x, act)
            }
            "ReLU" => relu(self, &cfg, &name, one()?),
            "LeakyReLU" => {
                // Keras 2 / TF.js call it alpha (default 0.3); Keras 3 negative_slope.
                let alpha = if cfg.has("negative_slope") {
                    cfg.f32_or("negative_slope", 0.3)?
                } else {
                    cfg.f32_or("alpha", 0.3)?
                };
                let x = one()?;
                self.node(
                    &name,
                    Op::Activation(Activation::LeakyRelu { alpha }),
                    vec![x],
                )
            }
            "PReLU" => prelu(self, &call.layer, &name, one()?),
            "Softmax" => {
                let x = one()?;
                let rank = self.graph.shape(x).len();
                let axis = ir_axis(rank, cfg.i64_or("axis", -1)?, &call.layer)?;
                self.node(&name, Op::Softmax { axis }, vec![x])
            }
            "Add" => self.merge(&name, &inputs, BinaryKind::Add),
            "Multiply" => self.merge(&name, &inputs, BinaryKind::Mul),
            "Maximum" => self.merge(&name, &inputs, BinaryKind::Max),
            "Minimum" => self.merge(&name, &inputs, BinaryKind::Min),
            "Subtract" => match inputs.as_slice() {
                [a, b] => self.node(&name, binary(BinaryKind::Sub), vec![*a, *b]),
                _ => Err(Error::Malformed(format!(
                    "layer {}: Subtract takes two inputs",
                    call.layer
                ))),
            },
            "Average" => {
                let sum = self.merge(&format!("{name}/sum"), &inputs, BinaryKind::Add)?;
                self.scale(&name, sum, 1.0 / inputs.len() as f32)
            }
            "Concatenate" => {
                let first = *inputs.first().ok_or_else(|| {
                    Error::Malformed(format!("layer {}: Concatenate without inputs", call.layer))
                })?;
                let rank = self.graph.shape(first).len();
                let axis = ir_axis(rank, cfg.i64_or("axis", -1)?, &call.layer)?;
                self.graph
                    .add_node(name.as_str(), Op::Concat { axis }, inputs, name.as_str())
            }
            "BatchNormalization" => batch_norm(self, &cfg, &name, one()?),
            "Rescaling" => rescaling(self, &cfg, &name, one()?),
            "Normalization" => normalization(self, &cfg, &name, one()?),
            "Flatten" => {
                let x = one()?;
                let s = self.shape(x);
                if s.len() <= 2 {
                    return Ok(x);
                }
                let n = s[0];
                let rest = crate::tensor::checked_numel(&s[1..])?;
                let x = self.in_keras_order(&name, x)?;
                self.node_shaped(&name, Op::Reshape, x, vec![n, rest])
            }
            "Reshape" => reshape(self, &cfg, &name, one()?),
            // Inference-time identities.
            "Dropout"
            | "SpatialDropout1D"
            | "SpatialDropout2D"
            | "GaussianDropout"
            | "GaussianNoise"
            | "AlphaDropout"
            | "ActivityRegularization" => one(),
            "Functional" | "Model" | "Sequential" => Err(Error::Unsupported(format!(
                "layer {} is a nested model; flatten it before export",
                call.layer
            ))),
            other => match pixel_shuffle_scale(other) {
                Some(scale) => {
                    let x = one()?;
                    depth_to_space(self, &cfg, &name, x, scale)
                }
                None => Err(Error::Unsupported(format!(
                    "layer {} has class {other}, which the TF.js importer does not implement",
                    call.layer
                ))),
            },
        }
    }

    /// `x · k` for a constant `k`.
    fn scale(&mut self, name: &str, x: ValueId, k: f32) -> Result<ValueId> {
        let k = self
            .graph
            .add_constant(format!("{name}/scale"), Tensor::scalar(k));
        self.node(name, binary(BinaryKind::Mul), vec![x, k])
    }

    /// Folds an n-ary merge into a chain of binary nodes; the last one gets `name`.
    fn merge(&mut self, name: &str, inputs: &[ValueId], kind: BinaryKind) -> Result<ValueId> {
        let (&first, rest) = inputs
            .split_first()
            .filter(|(_, rest)| !rest.is_empty())
            .ok_or_else(|| Error::Malformed(format!("merge layer {name} needs two inputs")))?;
        let mut acc = first;
        for (i, &x) in rest.iter().enumerate() {
            let n = if i + 1 == rest.len() {
                name.to_string()
            } else {
                format!("{name}/{i}")
            };
            acc = self.node(&n, binary(kind), vec![acc, x])?;
        }
        Ok(acc)
    }

    /// For a rank-4 value, a Transpose to Keras's NHWC order; other ranks unchanged.
    fn in_keras_order(&mut self, name: &str, x: ValueId) -> Result<ValueId> {
        if self.graph.shape(x).len() != 4 {
            return Ok(x);
        }
        self.node(
            &format!("{name}/to_nhwc"),
            Op::Transpose {
                perm: vec![0, 2, 3, 1],
            },
            vec![x],
        )
    }
}

/// An elementwise binary op with no fused activation.
fn binary(kind: BinaryKind) -> Op {
    Op::Binary {
        kind,
        activation: Activation::Identity,
    }
}

/// The channel axis of an IR value of this rank (Keras's last axis).
fn channel_axis(rank: usize) -> usize {
    if rank == 4 { 1 } else { rank.saturating_sub(1) }
}

/// Maps a Keras axis (may be negative) of a rank-`rank` tensor to the IR axis.
pub(crate) fn ir_axis(rank: usize, axis: i64, layer: &str) -> Result<usize> {
    let r = i64::try_from(rank).map_err(|_| Error::Malformed("rank".into()))?;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&a) {
        return Err(Error::Malformed(format!(
            "layer {layer}: axis {axis} out of range for rank {rank}"
        )));
    }
    let a = a as usize;
    Ok(if rank == 4 { [0, 2, 3, 1][a] } else { a })
}

/// The shape an InputLayer's config declares (`batch_input_shape`, Keras
/// 3's `batch_shape`), in IR order (NHWC → NCHW), `None` for an open
/// dimension.
pub(crate) fn declared_dims(config: &Json) -> Option<Vec<Option<usize>>> {
    let declared = config
        .get("batch_input_shape")
        .or_else(|| config.get("batch_shape"))?
        .as_array()?;
    let dims: Vec<Option<usize>> = declared
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect();
    Some(match dims.as_slice() {
        [n, h, w, c] => vec![*n, *c, *h, *w],
        _ => dims,
    })
}

/// The IR shape of an InputLayer: declared shape (NHWC → NCHW), with
/// `override_shape` filling unknown dimensions and checked against known ones.
fn input_shape_of(cfg: &Cfg<'_>, override_shape: Option<&[usize]>) -> Result<Vec<usize>> {
    let dims = declared_dims(cfg.json).ok_or_else(|| {
        Error::Malformed(format!("input {} declares no batch_input_shape", cfg.layer))
    })?;
    if let Some(d) = dims.iter().flatten().find(|&&d| d > crate::ir::MAX_DIM) {
        return Err(Error::Malformed(format!(
            "input {} declares a size of {d}, over the limit of {}",
            cfg.layer,
            crate::ir::MAX_DIM
        )));
    }
    let show = || {
        dims.iter()
            .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match override_shape {
        Some(given) => {
            let fits = given.len() == dims.len()
                && given
                    .iter()
                    .zip(&dims)
                    .all(|(g, d)| *g > 0 && d.is_none_or(|d| d == *g));
            if !fits {
                return Err(Error::InvalidInput(format!(
                    "input shape {given:?} does not fit input {} of shape [{}] (IR layout{})",
                    cfg.layer,
                    show(),
                    if dims.len() == 4 { ", NCHW" } else { "" }
                )));
            }
            Ok(given.to_vec())
        }
        None => dims
            .iter()
            .enumerate()
            .map(|(i, d)| match (i, d) {
                (_, Some(d)) => Ok(*d),
                (0, None) => Ok(1),
                _ => Err(Error::InvalidInput(format!(
                    "input {} has shape [{}] with unknown dimensions; give an input shape",
                    cfg.layer,
                    show()
                ))),
            })
            .collect(),
    }
}

fn dense(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId) -> Result<ValueId> {
    let s = b.shape(x);
    if s.len() != 2 {
        return Err(Error::Unsupported(format!(
            "layer {}: Dense on a rank-{} tensor (only [batch, features] is supported)",
            cfg.layer,
            s.len()
        )));
    }
    let weight = Arc::new(b.weight(cfg.layer, "kernel")?.clone());
    let bias = if cfg.bool_or("use_bias", true)? {
        Some(Arc::new(b.weight(cfg.layer, "bias")?.data().to_vec()))
    } else {
        None
    };
    let act = cfg.activation()?;
    let (fused, after) = split_act(act);
    let op = Op::Dense {
        weight,
        bias,
        activation: fused,
    };
    match after {
        None => b.node(name, op, vec![x]),
        Some(a) => {
            let y = b.node(&format!("{name}/dense"), op, vec![x])?;
            b.activate(name, y, a)
        }
    }
}

/// Splits a Keras activation into the part fused into the producer and a separate op.
pub(crate) fn split_act(act: Act) -> (Activation, Option<Act>) {
    match act {
        Act::Elementwise(a) => (a, None),
        act @ (Act::Softmax | Act::Swish) => (Activation::Identity, Some(act)),
    }
}

fn relu(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId) -> Result<ValueId> {
    let max = cfg.f32_or("max_value", f32::INFINITY)?;
    let slope = cfg.f32_or("negative_slope", 0.0)?;
    let threshold = cfg.f32_or("threshold", 0.0)?;
    let act = match (slope == 0.0, max.is_finite(), threshold == 0.0) {
        (true, false, true) => Activation::Relu,
        (true, true, true) => Activation::Clip { min: 0.0, max },
        (false, false, true) => Activation::LeakyRelu { alpha: slope },
        _ => {
            return Err(Error::Unsupported(format!(
                "layer {}: ReLU with max_value {max}, negative_slope {slope}, threshold {threshold}",
                cfg.layer
            )));
        }
    };
    b.node(name, Op::Activation(act), vec![x])
}

fn prelu(b: &mut Builder<'_>, layer: &str, name: &str, x: ValueId) -> Result<ValueId> {
    let alpha = b.weight(layer, "alpha")?;
    let s = b.shape(x);
    let channels = s.get(channel_axis(s.len())).copied().unwrap_or(1);
    // Keras stores alpha over the non-batch axes (NHWC order); the IR holds
    // one slope per channel, so every other axis must be shared.
    let a_shape = alpha.shape();
    let last = a_shape.last().copied().unwrap_or(1);
    let others_shared = a_shape.iter().rev().skip(1).all(|&d| d == 1);
    if !others_shared || (last != channels && last != 1) {
        return Err(Error::Unsupported(format!(
            "layer {layer}: PReLU alpha of shape {a_shape:?} is not per-channel \
             (set shared_axes to the spatial axes)"
        )));
    }
    let slope = Arc::new(alpha.data().to_vec());
    b.node(name, Op::Activation(Activation::PRelu { slope }), vec![x])
}

fn batch_norm(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId) -> Result<ValueId> {
    let s = b.shape(x);
    let axis = ir_axis(s.len(), cfg.i64_or("axis", -1)?, cfg.layer)?;
    if axis != 1 {
        return Err(Error::Unsupported(format!(
            "layer {}: BatchNormalization over a non-channel axis",
            cfg.layer
        )));
    }
    let c = s[1];
    let eps = cfg.f32_or("epsilon", 1e-3)?;
    let mean = b.weight(cfg.layer, "moving_mean")?.data().to_vec();
    let var = b.weight(cfg.layer, "moving_variance")?.data().to_vec();
    let gamma = if cfg.bool_or("scale", true)? {
        b.weight(cfg.layer, "gamma")?.data().to_vec()
    } else {
        vec![1.0; c]
    };
    let beta = if cfg.bool_or("center", true)? {
        b.weight(cfg.layer, "beta")?.data().to_vec()
    } else {
        vec![0.0; c]
    };
    if [mean.len(), var.len(), gamma.len(), beta.len()] != [c; 4] {
        return Err(Error::Shape(format!(
            "layer {}: BatchNormalization parameters do not have {c} channels",
            cfg.layer
        )));
    }
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let shift: Vec<f32> = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((be, m), s)| be - m * s)
        .collect();
    b.node(
        name,
        Op::ChannelAffine {
            scale: Arc::new(scale),
            shift: Arc::new(shift),
        },
        vec![x],
    )
}

/// Per-channel values for a value of shape `shape` (all ones but its
/// channel axis, or a scalar where one value serves all), from a Keras
/// layer's parameter.
fn per_channel(layer: &str, what: &str, v: &[f32], shape: &[usize]) -> Result<Tensor> {
    let axis = channel_axis(shape.len());
    let c = shape.get(axis).copied().unwrap_or(1);
    match v.len() {
        1 => Ok(Tensor::scalar(v[0])),
        n if n == c => {
            let mut dims = vec![1; shape.len()];
            dims[axis] = c;
            Tensor::new(dims, v.to_vec())
        }
        n => Err(Error::Shape(format!(
            "layer {layer}: {what} has {n} values for {c} channels"
        ))),
    }
}

/// `layer(x) = x · scale + offset`, as Keras computes it (two roundings).
fn rescaling(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId) -> Result<ValueId> {
    let shape = b.shape(x);
    let scale = cfg.f32s("scale")?.unwrap_or_else(|| vec![1.0]);
    let offset = cfg.f32s("offset")?.unwrap_or_else(|| vec![0.0]);
    let scale = per_channel(cfg.layer, "scale", &scale, &shape)?;
    let offset = per_channel(cfg.layer, "offset", &offset, &shape)?;
    let k = b.graph.add_constant(format!("{name}/scale"), scale);
    let y = b.node(&format!("{name}/mul"), binary(BinaryKind::Mul), vec![x, k])?;
    let k = b.graph.add_constant(format!("{name}/offset"), offset);
    b.node(name, binary(BinaryKind::Add), vec![y, k])
}

/// Keras's `Normalization`: `(x − mean) / max(√variance, 1e-7)` over the
/// channels (or `mean + x · max(√variance, 1e-7)` with `invert`), the
/// mean and variance from its config or its weights.
fn normalization(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId) -> Result<ValueId> {
    let s = b.shape(x);
    // `axis=None` (written `[]`) is one mean and variance for the whole
    // tensor, which `per_channel` takes as a scalar.
    let whole = matches!(cfg.json.get("axis"), Some(serde_json::Value::Array(a)) if a.is_empty());
    if !whole && ir_axis(s.len(), cfg.i64_or("axis", -1)?, cfg.layer)? != channel_axis(s.len()) {
        return Err(Error::Unsupported(format!(
            "layer {}: Normalization over a non-channel axis",
            cfg.layer
        )));
    }
    let given = (cfg.f32s("mean")?, cfg.f32s("variance")?);
    let (mean, var) = match given {
        (Some(m), Some(v)) => (m, v),
        _ => (
            b.weight(cfg.layer, "mean")?.data().to_vec(),
            b.weight(cfg.layer, "variance")?.data().to_vec(),
        ),
    };
    // Keras's backend epsilon, the floor of the standard deviation (a NaN
    // stays NaN, as in its `maximum`).
    let sd: Vec<f32> = var
        .iter()
        .map(|v| if v.is_nan() { *v } else { v.sqrt().max(1e-7) })
        .collect();
    if whole && (mean.len(), sd.len()) != (1, 1) {
        return Err(Error::Shape(format!(
            "layer {}: Normalization over the whole tensor with {} means and {} variances",
            cfg.layer,
            mean.len(),
            sd.len()
        )));
    }
    let mean = per_channel(cfg.layer, "mean", &mean, &s)?;
    let sd = per_channel(cfg.layer, "variance", &sd, &s)?;
    let m = b.graph.add_constant(format!("{name}/mean"), mean);
    let d = b.graph.add_constant(format!("{name}/sd"), sd);
    if cfg.bool_or("invert", false)? {
        let y = b.node(&format!("{name}/mul"), binary(BinaryKind::Mul), vec![x, d])?;
        // `mean + x · sd` as `x · sd + mean`: a sum is the same bits.
        b.node(name, binary(BinaryKind::Add), vec![y, m])
    } else {
        let y = b.node(&format!("{name}/sub"), binary(BinaryKind::Sub), vec![x, m])?;
        b.node(name, binary(BinaryKind::Div), vec![y, d])
    }
}

/// The scale of UpscalerJS's `PixelShuffle{N}x` layer class, from its name.
fn pixel_shuffle_scale(class: &str) -> Option<usize> {
    class
        .strip_prefix("PixelShuffle")?
        .strip_suffix('x')?
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// TF's `depth_to_space` (NHWC): output channel `c` of the block's pixel
/// `(i, j)` is input channel `(i · scale + j) · C_out + c`, ONNX's DCR order.
fn depth_to_space(
    b: &mut Builder<'_>,
    cfg: &Cfg<'_>,
    name: &str,
    x: ValueId,
    scale: usize,
) -> Result<ValueId> {
    let s = b.shape(x);
    let fits = scale
        .checked_mul(scale)
        .is_some_and(|block| block > 0 && s.len() == 4 && s[1].is_multiple_of(block));
    if !fits {
        return Err(Error::Shape(format!(
            "layer {}: depth_to_space by {scale} of an input {s:?} (channels must divide by the scale squared)",
            cfg.layer
        )));
    }
    b.node(
        name,
        Op::DepthToSpace {
            blocksize: scale,
            mode: DepthToSpaceMode::Dcr,
        },
        vec![x],
    )
}

fn upsample(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId) -> Result<ValueId> {
    cfg.channels_last()?;
    let size = cfg.pair_or("size", Some([2, 2]))?;
    // TF.js runs UpSampling2D as resizeNearestNeighbor / resizeBilinear
    // without aligned corners or half-pixel centres (src = dst / size);
    // Keras as tf.image.resize, with half-pixel centres. For nearest at a
    // whole factor both are floor(dst / size).
    let (mode, coord) = match cfg.str_or("interpolation", "nearest")? {
        "nearest" => (
            ResizeMode::Nearest(NearestMode::Floor),
            CoordTransform::Asymmetric,
        ),
        "bilinear" if cfg.writer == Writer::TfJs => {
            (ResizeMode::Linear, CoordTransform::Asymmetric)
        }
        "bilinear" => (ResizeMode::Linear, CoordTransform::HalfPixel),
        other => {
            return Err(Error::Unsupported(format!(
                "layer {}: UpSampling2D interpolation {other} (nearest and bilinear are supported)",
                cfg.layer
            )));
        }
    };
    let s = b.shape(x);
    if s.len() != 4 {
        return Err(Error::Shape(format!(
            "layer {}: UpSampling2D input {s:?} is not rank 4",
            cfg.layer
        )));
    }
    let out = vec![
        s[0],
        s[1],
        s[2].checked_mul(size[0])
            .ok_or_else(|| Error::Limit("upsampled height".into()))?,
        s[3].checked_mul(size[1])
            .ok_or_else(|| Error::Limit("upsampled width".into()))?,
    ];
    let op = Op::Resize {
        mode,
        coord,
        scales: [size[0] as f32, size[1] as f32],
    };
    b.node_shaped(name, op, x, out)
}

fn reshape(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId) -> Result<ValueId> {
    let s = b.shape(x);
    let n = s.first().copied().unwrap_or(1);
    let total = crate::tensor::checked_numel(s.get(1..).unwrap_or(&[]))?;
    let target = cfg
        .json
        .get("target_shape")
        .and_then(Json::as_array)
        .ok_or_else(|| Error::Malformed(format!("layer {}: no target_shape", cfg.layer)))?;
    let mut dims: Vec<Option<usize>> = target
        .iter()
        .map(|d| {
            if d.is_null() || d.as_i64() == Some(-1) {
                return Ok(None);
            }
            // An entry counts elements (a flattening reshape's is H·W·C),
            // so only the product's overflow is checked, below.
            d.as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::Malformed(format!(
                        "layer {}: target_shape entry {d} is not -1 or a size",
                        cfg.layer
                    ))
                })
        })
        .collect::<Result<_>>()?;
    let known = dims
        .iter()
        .flatten()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .unwrap_or(0);
    let unknown = dims.iter().filter(|d| d.is_none()).count();
    if unknown > 1 || known == 0 || (unknown == 1 && !total.is_multiple_of(known)) {
        return Err(Error::Shape(format!(
            "layer {}: cannot reshape {total} values to {target:?}",
            cfg.layer
        )));
    }
    for d in dims.iter_mut() {
        d.get_or_insert(total / known);
    }
    let mut keras: Vec<usize> = vec![n];
    keras.extend(dims.into_iter().flatten());
    let x = b.in_keras_order(name, x)?;
    if keras.len() != 4 {
        return b.node_shaped(name, Op::Reshape, x, keras);
    }
    let y = b.node_shaped(&format!("{name}/nhwc"), Op::Reshape, x, keras)?;
    b.node(
        name,
        Op::Transpose {
            perm: vec![0, 3, 1, 2],
        },
        vec![y],
    )
}
