//! Convolution, pooling and cropping layers: Keras HWIO kernels become
//! OIHW, and `padding: "same"` becomes explicit pads as TF computes them.

use std::sync::Arc;

use super::build::{Builder, split_act};
use super::config::Cfg;
use crate::error::{Error, Result};
use crate::ir::{Activation, Conv, ConvTranspose, Op, Pool, PoolKind, ValueId};
use crate::tensor::Tensor;

/// Pads `[begin, end]` along one axis for TF's `padding`.
///
/// TF "same": output `ceil(in / stride)`, total padding
/// `max((out - 1) * stride + effective_kernel - in, 0)`, the odd pixel at
/// the end (bottom/right).
pub(crate) fn tf_pads(
    padding: &str,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Result<[usize; 2]> {
    match padding {
        "valid" => Ok([0, 0]),
        "same" => {
            let eff = dilation * (kernel - 1) + 1;
            let out = input.div_ceil(stride);
            let total = ((out.max(1) - 1) * stride + eff).saturating_sub(input);
            Ok([total / 2, total - total / 2])
        }
        other => Err(Error::Unsupported(format!("padding {other}"))),
    }
}

struct Window {
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
}

/// Reads kernel/stride/dilation/padding and resolves the pads for input `x`.
fn window(
    b: &Builder<'_>,
    cfg: &Cfg<'_>,
    x: ValueId,
    kernel: [usize; 2],
    default_strides: [usize; 2],
) -> Result<Window> {
    cfg.channels_last()?;
    let s = b.shape(x);
    if s.len() != 4 {
        return Err(Error::Shape(format!(
            "layer {}: input {s:?} is not a rank-4 feature map",
            cfg.layer
        )));
    }
    let strides = cfg.pair_or("strides", Some(default_strides))?;
    let dilations = cfg.pair_or("dilation_rate", Some([1, 1]))?;
    let padding = cfg.str_or("padding", "valid")?;
    let wrap = |e: Error| match e {
        Error::Unsupported(m) => Error::Unsupported(format!("layer {}: {m}", cfg.layer)),
        e => e,
    };
    let [top, bottom] =
        tf_pads(padding, s[2], kernel[0], strides[0], dilations[0]).map_err(wrap)?;
    let [left, right] =
        tf_pads(padding, s[3], kernel[1], strides[1], dilations[1]).map_err(wrap)?;
    Ok(Window {
        kernel,
        strides,
        dilations,
        pads: [top, left, bottom, right],
    })
}

fn kernel_dims(w: &Tensor, layer: &str) -> Result<[usize; 4]> {
    match w.shape() {
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        s => Err(Error::Shape(format!(
            "layer {layer}: kernel shape {s:?} is not rank 4"
        ))),
    }
}

/// HWIO `[kh, kw, i, o]` → OIHW `[o, i, kh, kw]`.
fn hwio_to_oihw(w: &Tensor) -> Result<Tensor> {
    let [kh, kw, ci, co] = kernel_dims(w, "?")?;
    let src = w.data();
    let mut out = vec![0.0; src.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..ci {
                for o in 0..co {
                    out[((o * ci + i) * kh + y) * kw + x] = src[((y * kw + x) * ci + i) * co + o];
                }
            }
        }
    }
    Tensor::new(vec![co, ci, kh, kw], out)
}

fn bias(b: &Builder<'_>, cfg: &Cfg<'_>, channels: usize) -> Result<Option<Arc<Vec<f32>>>> {
    if !cfg.bool_or("use_bias", true)? {
        return Ok(None);
    }
    let bias = b.weight(cfg.layer, "bias")?;
    if bias.numel() != channels {
        return Err(Error::Shape(format!(
            "layer {}: bias has {} values for {channels} channels",
            cfg.layer,
            bias.numel()
        )));
    }
    Ok(Some(Arc::new(bias.data().to_vec())))
}

/// Adds a conv node named `name` (fusing elementwise activations; softmax follows as its own node).
fn emit(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId, conv: Conv) -> Result<ValueId> {
    emit_op(b, cfg, name, x, "conv", |activation| {
        Op::Conv(Conv { activation, ..conv })
    })
}

/// Adds the node `make` builds with the fused part of the layer's
/// activation; an activation that cannot fuse (softmax) follows as its own
/// node, the op's then named `name/suffix`.
fn emit_op(
    b: &mut Builder<'_>,
    cfg: &Cfg<'_>,
    name: &str,
    x: ValueId,
    suffix: &str,
    make: impl FnOnce(Activation) -> Op,
) -> Result<ValueId> {
    let (fused, after) = split_act(cfg.activation()?);
    let op = make(fused);
    match after {
        None => b.node(name, op, vec![x]),
        Some(a) => {
            let y = b.node(&format!("{name}/{suffix}"), op, vec![x])?;
            b.activate(name, y, a)
        }
    }
}

/// Conv2D (with groups and dilation).
pub(crate) fn conv2d(
    b: &mut Builder<'_>,
    cfg: &Cfg<'_>,
    name: &str,
    x: ValueId,
) -> Result<ValueId> {
    let kernel = b.weight(cfg.layer, "kernel")?;
    let [kh, kw, _, co] = kernel_dims(kernel, cfg.layer)?;
    let weight = hwio_to_oihw(kernel)?;
    let w = window(b, cfg, x, [kh, kw], [1, 1])?;
    let conv = Conv {
        weight: Arc::new(weight),
        bias: bias(b, cfg, co)?,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        group: cfg.usize_or("groups", 1)?,
        activation: Activation::Identity,
    };
    emit(b, cfg, name, x, conv)
}

/// Conv2DTranspose: Keras kernel `[kh, kw, out, in]` → `[in, out, kh, kw]`,
/// and the output length TF.js and Keras give it (`same`: `in · stride`;
/// `valid`: `in · stride + max(k − stride, 0)`), resolved into pads
/// (the odd pixel cropped at the bottom/right, as TF's gradient of a "same"
/// conv) or into output padding where it exceeds the full transposed conv.
pub(crate) fn conv2d_transpose(
    b: &mut Builder<'_>,
    cfg: &Cfg<'_>,
    name: &str,
    x: ValueId,
) -> Result<ValueId> {
    cfg.channels_last()?;
    if cfg.has("output_padding") {
        return Err(Error::Unsupported(format!(
            "layer {}: Conv2DTranspose with output_padding",
            cfg.layer
        )));
    }
    let kernel = b.weight(cfg.layer, "kernel")?;
    let [kh, kw, co, ci] = kernel_dims(kernel, cfg.layer)?;
    let s = b.shape(x);
    if s.len() != 4 || s[1] != ci {
        return Err(Error::Shape(format!(
            "layer {}: a kernel for {ci} input channels on an input {s:?}",
            cfg.layer
        )));
    }
    let strides = cfg.pair_or("strides", Some([1, 1]))?;
    let dilations = cfg.pair_or("dilation_rate", Some([1, 1]))?;
    let padding = cfg.str_or("padding", "valid")?;
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(Error::Malformed(format!(
            "layer {}: strides and dilation_rate must be positive",
            cfg.layer
        )));
    }
    let mut pads = [0; 4];
    let mut output_padding = [0; 2];
    for (axis, k) in [kh, kw].into_iter().enumerate() {
        let (input, stride) = (s[2 + axis], strides[axis]);
        if input == 0 || k == 0 {
            return Err(Error::Shape(format!(
                "layer {}: an empty input {s:?} or kernel {kh}x{kw}",
                cfg.layer
            )));
        }
        // Sizes from the file: overflow is an error, not a wrap.
        let too_large = || Error::Limit(format!("layer {}: transposed conv size", cfg.layer));
        let eff = dilations[axis]
            .checked_mul(k - 1)
            .and_then(|e| e.checked_add(1))
            .ok_or_else(too_large)?;
        let scaled = input.checked_mul(stride).ok_or_else(too_large)?;
        let target = match padding {
            "same" => scaled,
            "valid" => scaled
                .checked_add(eff.saturating_sub(stride))
                .ok_or_else(too_large)?,
            other => {
                return Err(Error::Unsupported(format!(
                    "layer {}: padding {other}",
                    cfg.layer
                )));
            }
        };
        let full = (input - 1)
            .checked_mul(stride)
            .and_then(|f| f.checked_add(eff))
            .ok_or_else(too_large)?;
        if full >= target {
            let total = full - target;
            pads[axis] = total / 2;
            pads[axis + 2] = total - total / 2;
        } else {
            output_padding[axis] = target - full;
        }
    }
    // `[kh, kw, out, in]` → `[in, out, kh, kw]` is the HWIO → OIHW
    // permutation with the two channel axes read the other way round.
    let weight = Arc::new(hwio_to_oihw(kernel)?);
    let bias = bias(b, cfg, co)?;
    emit_op(b, cfg, name, x, "deconv", |activation| {
        Op::ConvTranspose(ConvTranspose {
            weight,
            bias,
            strides,
            pads,
            dilations,
            output_padding,
            group: 1,
            activation,
        })
    })
}

/// Depthwise kernel `[kh, kw, C, mult]` → `[C * mult, 1, kh, kw]`; TF puts
/// output channel `c * mult + m`.
fn depthwise_weight(k: &Tensor, layer: &str) -> Result<Tensor> {
    let [kh, kw, c, m] = kernel_dims(k, layer)?;
    let src = k.data();
    let mut out = vec![0.0; src.len()];
    for y in 0..kh {
        for x in 0..kw {
            for ci in 0..c {
                for mi in 0..m {
                    out[((ci * m + mi) * kh + y) * kw + x] = src[((y * kw + x) * c + ci) * m + mi];
                }
            }
        }
    }
    Tensor::new(vec![c * m, 1, kh, kw], out)
}

fn depthwise_conv(b: &Builder<'_>, cfg: &Cfg<'_>, x: ValueId) -> Result<(Conv, usize)> {
    // Keras 3 names a DepthwiseConv2D's kernel `kernel`.
    let k = b
        .weight(cfg.layer, "depthwise_kernel")
        .or_else(|e| b.weight(cfg.layer, "kernel").map_err(|_| e))?;
    let [kh, kw, c, m] = kernel_dims(k, cfg.layer)?;
    let channels = b.shape(x).get(1).copied().unwrap_or(0);
    if c != channels {
        return Err(Error::Shape(format!(
            "layer {}: depthwise kernel for {c} channels on an input with {channels}",
            cfg.layer
        )));
    }
    let w = window(b, cfg, x, [kh, kw], [1, 1])?;
    let conv = Conv {
        weight: Arc::new(depthwise_weight(k, cfg.layer)?),
        bias: None,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        group: c,
        activation: Activation::Identity,
    };
    Ok((conv, c * m))
}

/// DepthwiseConv2D.
pub(crate) fn depthwise(
    b: &mut Builder<'_>,
    cfg: &Cfg<'_>,
    name: &str,
    x: ValueId,
) -> Result<ValueId> {
    let (mut conv, out_channels) = depthwise_conv(b, cfg, x)?;
    conv.bias = bias(b, cfg, out_channels)?;
    emit(b, cfg, name, x, conv)
}

/// SeparableConv2D: a depthwise conv, then a 1×1 conv holding bias and activation.
pub(crate) fn separable(
    b: &mut Builder<'_>,
    cfg: &Cfg<'_>,
    name: &str,
    x: ValueId,
) -> Result<ValueId> {
    let (dw, _) = depthwise_conv(b, cfg, x)?;
    let y = b.node(&format!("{name}/depthwise"), Op::Conv(dw), vec![x])?;
    let pk = b.weight(cfg.layer, "pointwise_kernel")?;
    let [_, _, _, co] = kernel_dims(pk, cfg.layer)?;
    let pw = Conv {
        weight: Arc::new(hwio_to_oihw(pk)?),
        bias: bias(b, cfg, co)?,
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        group: 1,
        activation: Activation::Identity,
    };
    emit(b, cfg, name, y, pw)
}

/// MaxPooling2D / AveragePooling2D (TF excludes padding from averages).
pub(crate) fn pool(
    b: &mut Builder<'_>,
    cfg: &Cfg<'_>,
    name: &str,
    x: ValueId,
    kind: PoolKind,
) -> Result<ValueId> {
    let kernel = cfg.pair_or("pool_size", Some([2, 2]))?;
    // Keras pooling strides default to the pool size.
    let w = window(b, cfg, x, kernel, kernel)?;
    let op = Op::Pool(Pool {
        kind,
        kernel: w.kernel,
        strides: w.strides,
        pads: w.pads,
        dilations: [1, 1],
        ceil_mode: false,
    });
    b.node(name, op, vec![x])
}

/// GlobalAveragePooling2D / GlobalMaxPooling2D: `[N, C]` unless `keepdims`.
pub(crate) fn global_pool(
    b: &mut Builder<'_>,
    cfg: &Cfg<'_>,
    name: &str,
    x: ValueId,
    kind: PoolKind,
) -> Result<ValueId> {
    cfg.channels_last()?;
    let s = b.shape(x);
    if s.len() != 4 {
        return Err(Error::Shape(format!(
            "layer {}: input {s:?} is not a rank-4 feature map",
            cfg.layer
        )));
    }
    if cfg.bool_or("keepdims", false)? {
        return b.node(name, Op::GlobalPool(kind), vec![x]);
    }
    let y = b.node(&format!("{name}/pool"), Op::GlobalPool(kind), vec![x])?;
    b.node_shaped(name, Op::Reshape, y, vec![s[0], s[1]])
}

/// Cropping2D as a Crop with the stated output extent.
pub(crate) fn crop(b: &mut Builder<'_>, cfg: &Cfg<'_>, name: &str, x: ValueId) -> Result<ValueId> {
    cfg.channels_last()?;
    let [t, l, bo, r] = cfg.pads("cropping")?;
    let s = b.shape(x);
    let dims = (s.len() == 4)
        .then(|| Some((s[2].checked_sub(t + bo)?, s[3].checked_sub(l + r)?)))
        .flatten()
        .filter(|&(h, w)| h > 0 && w > 0);
    let (h, w) = dims.ok_or_else(|| {
        Error::Shape(format!(
            "layer {}: cropping {:?} does not fit input {s:?}",
            cfg.layer,
            [t, l, bo, r]
        ))
    })?;
    b.node_shaped(name, Op::Crop { offset: [t, l] }, x, vec![s[0], s[1], h, w])
}

#[cfg(test)]
mod tests {
    use super::tf_pads;

    #[test]
    fn same_pads_match_tf() {
        // (input, kernel, stride, dilation) → [begin, end], as tf.nn.conv2d pads.
        let cases = [
            ((5, 3, 1, 1), [1, 1]),
            ((4, 3, 2, 1), [0, 1]),
            ((5, 3, 2, 1), [1, 1]),
            ((6, 2, 2, 1), [0, 0]),
            ((5, 2, 2, 1), [0, 1]),
            ((7, 3, 1, 2), [2, 2]),
            ((4, 1, 3, 1), [0, 0]),
            ((2, 5, 1, 1), [2, 2]),
        ];
        for ((i, k, s, d), want) in cases {
            assert_eq!(
                tf_pads("same", i, k, s, d).ok(),
                Some(want),
                "{i} {k} {s} {d}"
            );
        }
        assert_eq!(tf_pads("valid", 9, 3, 2, 1).ok(), Some([0, 0]));
        assert!(tf_pads("causal", 9, 3, 1, 1).is_err());
    }
}
