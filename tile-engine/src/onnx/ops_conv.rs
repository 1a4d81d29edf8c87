//! Windowed ops: Conv, ConvTranspose, MaxPool/AveragePool, global pooling
//! and the reductions that map onto it or run across channels.
//! `auto_pad`, `output_shape` and 1-D variants are resolved here so the IR
//! only ever sees explicit 2-D geometry.

use std::sync::Arc;

use super::attrs::NodeCtx;
use super::importer::Importer;
use super::value::ConstValue;
use crate::error::Result;
use crate::ir::{Activation, Conv, ConvTranspose, Op, Pool, PoolKind, ReduceKind, ValueId};
use crate::tensor::Tensor;

/// How `auto_pad` asks for padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AutoPad {
    /// Explicit `pads`.
    NotSet,
    /// Output `ceil(in / stride)`, the odd pixel at the end.
    SameUpper,
    /// Output `ceil(in / stride)`, the odd pixel at the start.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    fn read(ctx: &NodeCtx<'_>) -> Result<Self> {
        match ctx.string("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "" => Ok(AutoPad::NotSet),
            "SAME_UPPER" => Ok(AutoPad::SameUpper),
            "SAME_LOWER" => Ok(AutoPad::SameLower),
            "VALID" => Ok(AutoPad::Valid),
            other => Err(ctx.malformed(format!("unknown auto_pad '{other}'"))),
        }
    }
}

/// Begin/end padding of one axis for SAME auto-padding of a conv or pool.
pub(crate) fn same_pads(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    mode: AutoPad,
) -> (usize, usize) {
    let out = input.div_ceil(stride.max(1));
    let eff = dilation * kernel.saturating_sub(1) + 1;
    let total = ((out.saturating_sub(1)) * stride + eff).saturating_sub(input);
    match mode {
        AutoPad::SameLower => (total - total / 2, total / 2),
        _ => (total / 2, total - total / 2),
    }
}

/// Resolved 2-D window geometry.
struct Window {
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
}

/// Reads strides, dilations, pads and auto_pad for `spatial` (1 or 2) axes and
/// resolves them to explicit 2-D values (a 1-D op gets H = 1).
fn window(
    ctx: &NodeCtx<'_>,
    in_spatial: &[usize],
    kernel: &[usize],
    with_dilations: bool,
) -> Result<Window> {
    let sp = in_spatial.len();
    let list = |name: &str, default: usize| -> Result<Vec<usize>> {
        match ctx.ints(name) {
            Some(v) if !v.is_empty() => ctx.sizes(name, v, sp),
            _ => Ok(vec![default; sp]),
        }
    };
    let strides = list("strides", 1)?;
    let dilations = if with_dilations {
        list("dilations", 1)?
    } else {
        vec![1; sp]
    };
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(ctx.malformed("strides and dilations must be positive"));
    }
    let mut begin = vec![0; sp];
    let mut end = vec![0; sp];
    match AutoPad::read(ctx)? {
        AutoPad::NotSet => {
            if let Some(p) = ctx.ints("pads").filter(|p| !p.is_empty()) {
                let p = ctx.sizes("pads", p, 2 * sp)?;
                begin.copy_from_slice(&p[..sp]);
                end.copy_from_slice(&p[sp..]);
            }
        }
        AutoPad::Valid => {}
        mode => {
            for i in 0..sp {
                (begin[i], end[i]) =
                    same_pads(in_spatial[i], kernel[i], strides[i], dilations[i], mode);
            }
        }
    }
    Ok(if sp == 1 {
        Window {
            strides: [1, strides[0]],
            dilations: [1, dilations[0]],
            pads: [0, begin[0], 0, end[0]],
        }
    } else {
        Window {
            strides: [strides[0], strides[1]],
            dilations: [dilations[0], dilations[1]],
            pads: [begin[0], begin[1], end[0], end[1]],
        }
    })
}

/// Number of spatial axes of a windowed op's input (1 or 2), refusing others.
fn spatial_rank(ctx: &NodeCtx<'_>, shape: &[usize]) -> Result<usize> {
    match shape.len() {
        3 => Ok(1),
        4 => Ok(2),
        r => Err(ctx.unsupported(format!(
            "only 1-D and 2-D inputs (NCL / NCHW) are supported, got rank {r}"
        ))),
    }
}

/// The input as an NCHW value: a 1-D NCL input gets H = 1.
fn lift_input(imp: &mut Importer, ctx: &NodeCtx<'_>, x: &str) -> Result<ValueId> {
    let v = imp.runtime(ctx, x)?;
    let s = imp.graph.shape(v).to_vec();
    if s.len() == 4 {
        return Ok(v);
    }
    let out = ctx.output()?;
    imp.reshape(
        format!("{}/to2d", ctx.name),
        v,
        format!("{out}/in2d"),
        vec![s[0], s[1], 1, s[2]],
    )
}

/// Emits `op` on the NCHW input and, for a lifted 1-D op, reshapes back to NCL.
fn emit_lifted(
    imp: &mut Importer,
    ctx: &NodeCtx<'_>,
    op: Op,
    x4: ValueId,
    lifted: bool,
) -> Result<()> {
    if !lifted {
        return imp.emit_out(ctx, op, vec![x4]);
    }
    let out = ctx.output()?;
    let y4 = imp.emit(ctx.name.clone(), op, vec![x4], format!("{out}/2d"))?;
    let s = imp.graph.shape(y4).to_vec();
    let y = imp.reshape(
        format!("{}/to1d", ctx.name),
        y4,
        out.to_string(),
        vec![s[0], s[1], s[3]],
    )?;
    imp.bind_out(ctx, y)
}

/// A weight as a 4-D tensor (1-D kernels get kh = 1).
fn weight_2d(ctx: &NodeCtx<'_>, w: &ConstValue, sp: usize) -> Result<Tensor> {
    let s = &w.shape;
    if s.len() != sp + 2 || s.contains(&0) {
        return Err(ctx.malformed(format!("weight shape {s:?} does not fit a {sp}-D op")));
    }
    let shape = if sp == 1 {
        vec![s[0], s[1], 1, s[2]]
    } else {
        s.clone()
    };
    Tensor::new(shape, w.to_f32())
}

fn bias(imp: &Importer, ctx: &NodeCtx<'_>) -> Result<Option<Arc<Vec<f32>>>> {
    Ok(imp
        .opt_const(ctx, 2, "the bias")?
        .map(|b| Arc::new(b.to_f32())))
}

fn group(ctx: &NodeCtx<'_>) -> Result<usize> {
    let g = ctx.size("group", ctx.int("group", 1)?)?;
    if g == 0 {
        return Err(ctx.malformed("group 0"));
    }
    Ok(g)
}

/// `Conv` → `Op::Conv` (1-D convs lifted to 2-D).
pub(crate) fn conv(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let x = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, x)?;
    let sp = spatial_rank(ctx, &xs)?;
    let w = imp.req_const(ctx, 1, "the weight")?;
    let weight = weight_2d(ctx, &w, sp)?;
    let kernel = &w.shape[2..];
    if let Some(ks) = ctx.ints("kernel_shape").filter(|k| !k.is_empty())
        && ctx.sizes("kernel_shape", ks, sp)? != kernel
    {
        return Err(ctx.malformed(format!(
            "kernel_shape {ks:?} differs from the weight's {kernel:?}"
        )));
    }
    let win = window(ctx, &xs[2..], kernel, true)?;
    let op = Op::Conv(Conv {
        weight: Arc::new(weight),
        bias: bias(imp, ctx)?,
        strides: win.strides,
        pads: win.pads,
        dilations: win.dilations,
        group: group(ctx)?,
        activation: Activation::Identity,
    });
    let x4 = lift_input(imp, ctx, x)?;
    emit_lifted(imp, ctx, op, x4, sp == 1)
}

/// `ConvTranspose` → `Op::ConvTranspose`, with `output_shape` and `auto_pad`
/// turned into explicit pads and output padding.
pub(crate) fn conv_transpose(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let x = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, x)?;
    let sp = spatial_rank(ctx, &xs)?;
    let w = imp.req_const(ctx, 1, "the weight")?;
    let weight = weight_2d(ctx, &w, sp)?;
    let kernel = w.shape[2..].to_vec();
    let list = |name: &str, default: usize| -> Result<Vec<usize>> {
        match ctx.ints(name) {
            Some(v) if !v.is_empty() => ctx.sizes(name, v, sp),
            _ => Ok(vec![default; sp]),
        }
    };
    let strides = list("strides", 1)?;
    let dilations = list("dilations", 1)?;
    let mut out_pad = list("output_padding", 0)?;
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(ctx.malformed("strides and dilations must be positive"));
    }
    let auto = AutoPad::read(ctx)?;
    let inp = &xs[2..];
    if inp.contains(&0) {
        return Err(ctx.malformed("empty input"));
    }
    // The requested output size, from output_shape or SAME auto-padding.
    let target: Option<Vec<usize>> = match ctx.ints("output_shape").filter(|v| !v.is_empty()) {
        Some(os) => {
            let os = if os.len() == sp + 2 { &os[2..] } else { os };
            Some(ctx.sizes("output_shape", os, sp)?)
        }
        None if matches!(auto, AutoPad::SameUpper | AutoPad::SameLower) => {
            Some(inp.iter().zip(&strides).map(|(i, s)| i * s).collect())
        }
        None => None,
    };
    let mut begin = vec![0; sp];
    let mut end = vec![0; sp];
    match (target, auto) {
        (Some(t), _) => {
            for i in 0..sp {
                let full = strides[i] * (inp[i] - 1)
                    + out_pad[i]
                    + (kernel[i].saturating_sub(1)) * dilations[i]
                    + 1;
                if full >= t[i] {
                    let total = full - t[i];
                    (begin[i], end[i]) = if auto == AutoPad::SameUpper {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                } else {
                    // A larger requested output than the full transposed
                    // conv: the extra rows only get the bias.
                    out_pad[i] += t[i] - full;
                }
            }
        }
        (None, AutoPad::Valid) => {}
        (None, _) => {
            if let Some(p) = ctx.ints("pads").filter(|p| !p.is_empty()) {
                let p = ctx.sizes("pads", p, 2 * sp)?;
                begin.copy_from_slice(&p[..sp]);
                end.copy_from_slice(&p[sp..]);
            }
        }
    }
    let two = |v: &[usize], fill: usize| if sp == 1 { [fill, v[0]] } else { [v[0], v[1]] };
    let op = Op::ConvTranspose(ConvTranspose {
        weight: Arc::new(weight),
        bias: bias(imp, ctx)?,
        strides: two(&strides, 1),
        pads: if sp == 1 {
            [0, begin[0], 0, end[0]]
        } else {
            [begin[0], begin[1], end[0], end[1]]
        },
        dilations: two(&dilations, 1),
        output_padding: two(&out_pad, 0),
        group: group(ctx)?,
        activation: Activation::Identity,
    });
    let x4 = lift_input(imp, ctx, x)?;
    emit_lifted(imp, ctx, op, x4, sp == 1)
}

/// `MaxPool` / `AveragePool` → `Op::Pool`.
pub(crate) fn pool(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    imp.only_first_output(ctx)?;
    let x = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, x)?;
    let sp = spatial_rank(ctx, &xs)?;
    let ks = ctx
        .ints("kernel_shape")
        .ok_or_else(|| ctx.malformed("missing kernel_shape"))?;
    let kernel = ctx.sizes("kernel_shape", ks, sp)?;
    if kernel.contains(&0) {
        return Err(ctx.malformed("kernel size 0"));
    }
    let win = window(ctx, &xs[2..], &kernel, true)?;
    let kind = if ctx.op == "MaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Average {
            count_include_pad: ctx.int("count_include_pad", 0)? != 0,
        }
    };
    let op = Op::Pool(Pool {
        kind,
        kernel: if sp == 1 {
            [1, kernel[0]]
        } else {
            [kernel[0], kernel[1]]
        },
        strides: win.strides,
        pads: win.pads,
        dilations: win.dilations,
        ceil_mode: ctx.int("ceil_mode", 0)? != 0,
    });
    let x4 = lift_input(imp, ctx, x)?;
    emit_lifted(imp, ctx, op, x4, sp == 1)
}

/// `GlobalAveragePool` / `GlobalMaxPool` → `Op::GlobalPool`.
pub(crate) fn global_pool(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let x = imp.runtime(ctx, ctx.req_input(0)?)?;
    let kind = if ctx.op == "GlobalMaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Average {
            count_include_pad: false,
        }
    };
    imp.emit_out(ctx, Op::GlobalPool(kind), vec![x])
}

/// `ReduceMean` / `ReduceMax` over every axis after C (H and W of an NCHW
/// map, or the last axis of `[N, C, L]`): a global pool, reshaped to
/// `[N, C]` without `keepdims` (squeeze-and-excitation blocks and classifier
/// heads exported from PyTorch use these for `x.mean((2, 3))`); over other
/// axes that keep the batch, the same after a transpose.
/// `ReduceMean`, `ReduceMax`, `ReduceMin`, `ReduceSum` and `ReduceL2` over
/// the channel axis alone (`x.mean(1, keepdim=True)` in spatial attention,
/// channels-first layer norms, `F.normalize`) become [`Op::ChannelReduce`].
/// Other axes are not supported.
pub(crate) fn reduce(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let input = ctx.req_input(0)?;
    let shape = imp.shape_of(ctx, input)?;
    // Opset 18 moved `axes` from an attribute to an optional input
    // (ReduceSum already at opset 13).
    let axes_input = if ctx.op == "ReduceSum" { 13 } else { 18 };
    let axes: Option<Vec<i64>> = if imp.opset >= axes_input {
        imp.opt_const(ctx, 1, "axes")?.map(|c| c.to_i64())
    } else {
        ctx.ints("axes").map(<[i64]>::to_vec)
    };
    let keepdims = ctx.int("keepdims", 1)? != 0;
    let axes = match axes {
        Some(a) if !a.is_empty() => a,
        // No axes: the identity where the node says so, else every axis.
        _ if ctx.int("noop_with_empty_axes", 0)? != 0 => {
            let slot = imp.slot(ctx, input)?;
            return imp.bind(ctx, ctx.output()?, slot);
        }
        _ => {
            return Err(ctx.unsupported(
                "it reduces over every axis (no axes given); only a reduction over C (axis 1), or (ReduceMean and ReduceMax) over axes that keep the batch, is supported",
            ));
        }
    };
    let mut axes = axes
        .iter()
        .map(|&a| ctx.axis(a, shape.len()))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    if axes == [1] && shape.len() >= 2 {
        let kind = match ctx.op {
            "ReduceMean" => ReduceKind::Mean,
            "ReduceMax" => ReduceKind::Max,
            "ReduceMin" => ReduceKind::Min,
            "ReduceL2" => ReduceKind::L2,
            _ => ReduceKind::Sum,
        };
        return channel_reduce(imp, ctx, input, kind, keepdims);
    }
    // Every axis after N and C: a global pool ([N, C, L] of a flattened
    // map, `x.view(b, c, -1).mean(-1)`, is pooled as [N, C, L, 1]).
    let trailing = shape.len() >= 3 && axes == (2..shape.len()).collect::<Vec<_>>();
    let spatial = matches!(ctx.op, "ReduceMean" | "ReduceMax");
    let batch_kept = shape.len() >= 3 && !axes.contains(&0);
    if !spatial || !(trailing || batch_kept) {
        return Err(ctx.unsupported(format!(
            "only a reduction over C, or (ReduceMean and ReduceMax) over axes that keep the batch, is supported, not axes {axes:?} of a rank-{} tensor",
            shape.len()
        )));
    }
    let mut x = imp.runtime(ctx, input)?;
    let kind = if ctx.op == "ReduceMax" {
        PoolKind::Max
    } else {
        PoolKind::Average {
            count_include_pad: false,
        }
    };
    let out = ctx.output()?.to_string();
    if !trailing {
        // Other axes (a channels-last map's H and W, as TF exports a
        // squeeze-and-excitation's `mean((1, 2))`): moved last, flattened
        // to one plane, pooled, and shaped as ONNX says.
        let kept: Vec<usize> = (1..shape.len()).filter(|a| !axes.contains(a)).collect();
        let perm: Vec<usize> = std::iter::once(0)
            .chain(kept.iter().copied())
            .chain(axes.iter().copied())
            .collect();
        let moved = imp.emit(
            format!("{}/move", ctx.name),
            Op::Transpose { perm },
            vec![x],
            format!("{out}/moved"),
        )?;
        let k = kept.iter().map(|&a| shape[a]).product();
        let r = axes.iter().map(|&a| shape[a]).product();
        let map = vec![shape[0], k, r, 1];
        let map = imp.reshape(
            format!("{}/map", ctx.name),
            moved,
            format!("{out}/map"),
            map,
        )?;
        let pooled = imp.emit(
            ctx.name.clone(),
            Op::GlobalPool(kind),
            vec![map],
            format!("{out}/pooled"),
        )?;
        let want: Vec<usize> = (0..shape.len())
            .filter_map(|a| match (axes.contains(&a), keepdims) {
                (false, _) => Some(shape[a]),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let v = imp.reshape(format!("{}/shape", ctx.name), pooled, out, want)?;
        return imp.bind_out(ctx, v);
    }
    if shape.len() != 4 {
        let plane = shape[2..].iter().product();
        let map = vec![shape[0], shape[1], plane, 1];
        x = imp.reshape(format!("{}/map", ctx.name), x, format!("{out}/map"), map)?;
    }
    let mut want = shape[..2].to_vec();
    if keepdims {
        want.resize(shape.len(), 1);
    }
    if want.len() == 4 {
        return imp.emit_out(ctx, Op::GlobalPool(kind), vec![x]);
    }
    let pooled = imp.emit(
        ctx.name.clone(),
        Op::GlobalPool(kind),
        vec![x],
        format!("{out}/pooled"),
    )?;
    let v = imp.reshape(format!("{}/squeeze", ctx.name), pooled, out, want)?;
    imp.bind_out(ctx, v)
}

/// [`Op::ChannelReduce`] of `input`, without its channel axis unless `keepdims`.
fn channel_reduce(
    imp: &mut Importer,
    ctx: &NodeCtx<'_>,
    input: &str,
    kind: ReduceKind,
    keepdims: bool,
) -> Result<()> {
    let shape = imp.shape_of(ctx, input)?;
    let x = imp.runtime(ctx, input)?;
    if keepdims {
        return imp.emit_out(ctx, Op::ChannelReduce(kind), vec![x]);
    }
    let out = ctx.output()?.to_string();
    let reduced = imp.emit(
        ctx.name.clone(),
        Op::ChannelReduce(kind),
        vec![x],
        format!("{out}/reduced"),
    )?;
    let mut squeezed = shape;
    squeezed.remove(1);
    let v = imp.reshape(format!("{}/squeeze", ctx.name), reduced, out, squeezed)?;
    imp.bind_out(ctx, v)
}

/// `ArgMax` / `ArgMin` across the channels (a segmentation head's class
/// map): [`Op::ChannelReduce`], the index as a float32 (tessera's tensors
/// are float32; ONNX's are int64 with the same values). The first index
/// wins ties, and a NaN never wins (numpy picks the first NaN);
/// `select_last_index` and other axes are refused.
pub(crate) fn arg(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let input = ctx.req_input(0)?;
    let shape = imp.shape_of(ctx, input)?;
    let axis = ctx.axis(ctx.int("axis", 0)?, shape.len())?;
    if axis != 1 || shape.len() < 2 {
        return Err(ctx.unsupported(format!(
            "only across the channels (axis 1) is supported, not axis {axis} of a rank-{} tensor",
            shape.len()
        )));
    }
    if ctx.int("select_last_index", 0)? != 0 {
        return Err(ctx.unsupported("select_last_index = 1"));
    }
    let kind = if ctx.op == "ArgMax" {
        ReduceKind::ArgMax
    } else {
        ReduceKind::ArgMin
    };
    let keepdims = ctx.int("keepdims", 1)? != 0;
    channel_reduce(imp, ctx, input, kind, keepdims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_splits_the_odd_pixel() {
        // in 5, k 3, s 2: out 3, total pad = (3-1)*2 + 3 - 5 = 2.
        assert_eq!(same_pads(5, 3, 2, 1, AutoPad::SameUpper), (1, 1));
        // in 4, k 3, s 2: out 2, total = 2 + 3 - 4 = 1.
        assert_eq!(same_pads(4, 3, 2, 1, AutoPad::SameUpper), (0, 1));
        assert_eq!(same_pads(4, 3, 2, 1, AutoPad::SameLower), (1, 0));
        // k 4 (even), s 1: total 3.
        assert_eq!(same_pads(7, 4, 1, 1, AutoPad::SameUpper), (1, 2));
        assert_eq!(same_pads(7, 4, 1, 1, AutoPad::SameLower), (2, 1));
        // dilation 2 makes the effective kernel 5: total 4.
        assert_eq!(same_pads(6, 3, 1, 2, AutoPad::SameUpper), (2, 2));
        // Large stride: no padding needed.
        assert_eq!(same_pads(8, 2, 2, 1, AutoPad::SameUpper), (0, 0));
    }
}
