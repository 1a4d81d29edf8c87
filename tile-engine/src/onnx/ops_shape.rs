//! Shape-changing ops and the shape subgraphs exporters emit (Shape, Gather,
//! Cast, Slice, ConstantOfShape, Range, Concat of ints): folded to constants
//! whenever their inputs are known; Reshape-like ops on runtime values become
//! one IR `Reshape`.

use std::sync::Arc;

use super::attrs::NodeCtx;
use super::fold;
use super::importer::{Importer, Slot};
use super::value::{ConstValue, Data, MAX_RANK, decode_tensor, dims_to_shape};
use crate::error::Result;
use crate::ir::{Op, Pool, PoolKind, ValueId};
use crate::onnx::proto::tensor_proto::DataType;
use crate::tensor::checked_numel;

/// Dropout and Identity: the output is another name for the input.
pub(crate) fn identity(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let slot = imp.slot(ctx, ctx.req_input(0)?)?;
    let out = ctx.output()?;
    imp.bind(ctx, out, slot)
}

/// `Constant` with any of its value attributes.
pub(crate) fn constant(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let c = if let Some(t) = ctx.tensor("value") {
        decode_tensor(t)?
    } else if ctx.has("value_float") {
        ConstValue::f32(vec![], vec![ctx.float("value_float", 0.0)?])
    } else if let Some(v) = ctx.floats("value_floats") {
        ConstValue::f32(vec![v.len()], v.to_vec())
    } else if let Some(v) = ctx.int_opt("value_int")? {
        ConstValue::i64(vec![], vec![v])
    } else if let Some(v) = ctx.ints("value_ints") {
        ConstValue::i64(vec![v.len()], v.to_vec())
    } else {
        return Err(ctx.unsupported("only tensor, float(s) and int(s) values are supported"));
    };
    imp.bind_const(ctx, c)
}

/// `Shape` (with opset-15 start/end): always known, shapes are static.
pub(crate) fn shape(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let s = imp.shape_of(ctx, ctx.req_input(0)?)?;
    let r = s.len() as i64;
    let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) } as usize;
    let start = clamp(ctx.int("start", 0)?);
    let end = clamp(ctx.int("end", r)?);
    let dims: Vec<i64> = s
        .get(start..end.max(start))
        .unwrap_or_default()
        .iter()
        .map(|&d| d as i64)
        .collect();
    imp.charge(dims.len())?;
    imp.bind_const(ctx, ConstValue::i64(vec![dims.len()], dims))
}

/// `Gather` on constants (the shape subgraph case).
pub(crate) fn gather(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let data = imp.req_const(ctx, 0, "the data")?;
    let idx = imp.req_const(ctx, 1, "the indices")?;
    if !idx.is_int() {
        return Err(ctx.malformed("indices must be integers"));
    }
    let r = data.shape.len();
    if r == 0 {
        return Err(ctx.malformed("cannot gather from a scalar"));
    }
    let axis = ctx.axis(ctx.int("axis", 0)?, r)?;
    let dim = data.shape[axis];
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let mut out_shape = data.shape[..axis].to_vec();
    out_shape.extend_from_slice(&idx.shape);
    out_shape.extend_from_slice(&data.shape[axis + 1..]);
    if out_shape.len() > MAX_RANK {
        return Err(ctx.malformed("result rank too large"));
    }
    let n = checked_numel(&out_shape)?;
    imp.charge(n)?;
    let mut flat = Vec::with_capacity(n);
    let ids = idx.to_i64();
    let d = dim as i64;
    for o in 0..outer {
        for &i in &ids {
            let i = if i < 0 { i + d } else { i };
            if !(0..d).contains(&i) {
                return Err(ctx.malformed(format!("index {i} out of range for {dim}")));
            }
            let base = (o * dim + i as usize) * inner;
            flat.extend(base..base + inner);
        }
    }
    let out = ConstValue {
        shape: out_shape,
        data: fold::pick(&data.data, &flat),
    };
    imp.bind_const(ctx, out)
}

/// `Cast`: folds constants; on runtime values only a cast to float is a no-op.
pub(crate) fn cast(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let to = if imp.opset < 6 {
        // Cast-1 names the type as a string ("FLOAT").
        let s = ctx.string("to", "")?;
        DataType::from_str_name(&s)
            .ok_or_else(|| ctx.malformed(format!("unknown target type '{s}'")))?
    } else {
        let to = ctx
            .int_opt("to")?
            .ok_or_else(|| ctx.malformed("missing attribute 'to'"))?;
        i32::try_from(to)
            .ok()
            .and_then(|t| DataType::try_from(t).ok())
            .ok_or_else(|| ctx.malformed(format!("unknown target type {to}")))?
    };
    let to_float = matches!(
        to,
        DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16
    );
    let to_int = matches!(
        to,
        DataType::Int8
            | DataType::Uint8
            | DataType::Int16
            | DataType::Uint16
            | DataType::Int32
            | DataType::Uint32
            | DataType::Int64
            | DataType::Uint64
            | DataType::Bool
    );
    let input = ctx.req_input(0)?;
    match imp.slot(ctx, input)? {
        Slot::Const(c) => {
            imp.charge(c.numel())?;
            let data = if to_float {
                Data::F32(c.to_f32())
            } else if to == DataType::Bool {
                Data::I64(c.to_f32().iter().map(|&x| i64::from(x != 0.0)).collect())
            } else if to_int {
                Data::I64(c.to_i64())
            } else {
                return Err(ctx.unsupported(format!("cast to {}", to.as_str_name())));
            };
            imp.bind_const(
                ctx,
                ConstValue {
                    shape: c.shape.clone(),
                    data,
                },
            )
        }
        Slot::Runtime(v) if to_float => imp.bind_out(ctx, v),
        Slot::Runtime(_) => {
            Err(ctx.unsupported(format!("cast of a runtime tensor to {}", to.as_str_name())))
        }
    }
}

/// Per-axis `(start, step, len)` of a Slice after ONNX's clamping rules.
fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> (i64, i64, usize) {
    let d = dim as i64;
    if d == 0 {
        return (0, step, 0);
    }
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (norm(start), norm(end));
    // i128: a step near i64::MAX must not overflow the length arithmetic.
    let (s, len) = if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        let len = if e > s {
            (i128::from(e - s) + i128::from(step) - 1) / i128::from(step)
        } else {
            0
        };
        (s, len)
    } else {
        let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        let neg = -i128::from(step);
        let len = if s > e {
            (i128::from(s - e) + neg - 1) / neg
        } else {
            0
        };
        (s, len)
    };
    (s, step, len as usize)
}

/// `Slice`: folds constants; on runtime NCHW maps an H/W slice becomes a
/// `Crop`, followed where a step is above 1 by a 1×1 max pool of that stride
/// (which picks each strided element exactly: YOLOv5's Focus layer and
/// other space-to-depth rewrites slice `x[..., ::2, ::2]`).
pub(crate) fn slice(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let input = ctx.req_input(0)?;
    let shape = imp.shape_of(ctx, input)?;
    let r = shape.len();
    let (starts, ends, axes, steps) = if imp.opset < 10 {
        let starts = ctx.ints("starts").unwrap_or_default().to_vec();
        let ends = ctx.ints("ends").unwrap_or_default().to_vec();
        let axes = ctx.ints("axes").map(<[i64]>::to_vec);
        (starts, ends, axes, None)
    } else {
        let starts = imp.req_const(ctx, 1, "starts")?.to_i64();
        let ends = imp.req_const(ctx, 2, "ends")?.to_i64();
        let axes = imp.opt_const(ctx, 3, "axes")?.map(|c| c.to_i64());
        let steps = imp.opt_const(ctx, 4, "steps")?.map(|c| c.to_i64());
        (starts, ends, axes, steps)
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(ctx.malformed("starts, ends, axes and steps differ in length"));
    }
    let mut per_axis: Vec<(i64, i64, usize)> = shape.iter().map(|&d| (0, 1, d)).collect();
    let mut seen = vec![false; r];
    for i in 0..starts.len() {
        let a = ctx.axis(axes[i], r)?;
        if std::mem::replace(&mut seen[a], true) {
            return Err(ctx.malformed(format!("axis {a} sliced twice")));
        }
        if steps[i] == 0 {
            return Err(ctx.malformed("step 0"));
        }
        per_axis[a] = slice_axis(shape[a], starts[i], ends[i], steps[i]);
    }
    let out_shape: Vec<usize> = per_axis.iter().map(|p| p.2).collect();
    match imp.slot(ctx, input)? {
        Slot::Const(c) => {
            let n = checked_numel(&out_shape)?;
            imp.charge(n)?;
            let st = fold::strides(&shape);
            let offset: i64 = per_axis.iter().zip(&st).map(|(p, &s)| p.0 * s as i64).sum();
            let step: Vec<i64> = per_axis
                .iter()
                .zip(&st)
                .map(|(p, &s)| p.1 * s as i64)
                .collect();
            let idx = if n == 0 {
                Vec::new()
            } else {
                fold::strided(&out_shape, offset, &step)
            };
            let out = ConstValue {
                shape: out_shape,
                data: fold::pick(&c.data, &idx),
            };
            imp.bind_const(ctx, out)
        }
        Slot::Runtime(v) => {
            // The same shape is the identity only when no axis is reversed.
            if out_shape == shape && per_axis.iter().all(|p| p.1 > 0 || p.2 <= 1) {
                return imp.bind_out(ctx, v);
            }
            let whole = |a: usize| per_axis[a].0 == 0 && per_axis[a].2 == shape[a];
            let channels_only = r == 4 && whole(0) && whole(2) && whole(3) && per_axis[1].1 == 1;
            if channels_only {
                let op = Op::ChannelSlice {
                    start: per_axis[1].0 as usize,
                    len: per_axis[1].2,
                };
                return imp.emit_out(ctx, op, vec![v]);
            }
            let spatial_only =
                r == 4 && whole(0) && whole(1) && per_axis[2..].iter().all(|p| p.1 > 0 && p.2 > 0);
            if !spatial_only {
                return Err(ctx.unsupported(
                    "slicing a runtime tensor is supported only along C with step 1, or along H and W with a positive step, of an NCHW map",
                ));
            }
            let out = ctx.output()?.to_string();
            let [(top, sh, h), (left, sw, w)] = [per_axis[2], per_axis[3]];
            let y = strided_pick(
                imp,
                &ctx.name,
                v,
                [top as usize, left as usize],
                [sh as usize, sw as usize],
                [h, w],
                out,
            )?;
            imp.bind_out(ctx, y)
        }
    }
}

/// Rows `top, top + step, …` and columns `left, left + step, …` of the NCHW
/// map `x`, `hw` of each, as value `out`: a `Crop` to the span from the first
/// picked pixel to the last, then (for a step above 1) a 1×1 max pool of that
/// stride, which picks each element exactly and tiles like any pool.
pub(crate) fn strided_pick(
    imp: &mut Importer,
    node: &str,
    x: ValueId,
    [top, left]: [usize; 2],
    step: [usize; 2],
    [h, w]: [usize; 2],
    out: String,
) -> Result<ValueId> {
    let shape = imp.graph.shape(x).to_vec();
    if h == 0 || w == 0 {
        return Err(crate::error::Error::Unsupported(format!(
            "node '{node}': an empty {h}×{w} slice of a map"
        )));
    }
    let span = [(h - 1) * step[0] + 1, (w - 1) * step[1] + 1];
    let mut y = x;
    if [top, left] != [0, 0] || span[..] != shape[2..] {
        let mut crop_shape = shape.clone();
        crop_shape[2..].copy_from_slice(&span);
        let op = Op::Crop {
            offset: [top, left],
        };
        let name = if step == [1, 1] {
            out.clone()
        } else {
            format!("{out}/crop")
        };
        y = imp.emit_shaped(node.to_string(), op, vec![x], name, crop_shape)?;
    }
    if step != [1, 1] {
        let op = Op::Pool(Pool {
            kind: PoolKind::Max,
            kernel: [1, 1],
            strides: step,
            pads: [0; 4],
            dilations: [1, 1],
            ceil_mode: false,
        });
        let mut out_shape = shape;
        out_shape[2..].copy_from_slice(&[h, w]);
        y = imp.emit_shaped(format!("{node}/stride"), op, vec![y], out, out_shape)?;
    }
    Ok(y)
}

/// `Split` of a runtime NCHW map along C (into channel slices) or along H
/// or W (into crops); sizes from the `split` attribute (opset < 13) or
/// input, else `num_outputs` (opset 18) or one part per output, equal but
/// for a smaller last one.
pub(crate) fn split(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let input = ctx.req_input(0)?;
    let shape = imp.shape_of(ctx, input)?;
    let axis = ctx.axis(ctx.int("axis", 0)?, shape.len())?;
    let outs: Vec<&str> = ctx.node.output.iter().map(String::as_str).collect();
    if outs.is_empty() {
        return Err(ctx.malformed("has no output"));
    }
    let given: Option<Vec<i64>> = if imp.opset < 13 {
        ctx.ints("split").map(<[i64]>::to_vec)
    } else {
        imp.opt_const(ctx, 1, "split")?.map(|c| c.to_i64())
    };
    let d = shape[axis];
    let sizes: Vec<usize> = match given {
        Some(s) => {
            if s.len() != outs.len() || s.iter().any(|&x| x < 0) {
                return Err(ctx.malformed(format!(
                    "split {s:?} does not give one size ≥ 0 per output ({})",
                    outs.len()
                )));
            }
            s.iter().map(|&x| x as usize).collect()
        }
        None => {
            let k = outs.len();
            let part = d.div_ceil(k);
            (0..k)
                .map(|i| part.min(d.saturating_sub(i * part)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != d {
        return Err(ctx.malformed(format!(
            "parts {sizes:?} do not add up to dimension {axis} ({d})"
        )));
    }
    let x = match imp.slot(ctx, input)? {
        Slot::Runtime(v) if shape.len() == 4 && (1..=3).contains(&axis) => v,
        _ => {
            return Err(
                ctx.unsupported("only a split of a runtime NCHW map along C, H or W is supported")
            );
        }
    };
    let mut start = 0;
    for (i, (&name, &len)) in outs.iter().zip(&sizes).enumerate() {
        let here = start;
        start += len;
        if name.is_empty() {
            continue;
        }
        if len == 0 {
            return Err(ctx.unsupported(format!("output {i} would be empty")));
        }
        let node_name = format!("{}/{i}", ctx.name);
        let v = if axis == 1 {
            imp.emit(
                node_name,
                Op::ChannelSlice { start: here, len },
                vec![x],
                name.to_string(),
            )?
        } else {
            let mut out_shape = shape.clone();
            out_shape[axis] = len;
            let offset = if axis == 2 { [here, 0] } else { [0, here] };
            imp.emit_shaped(
                node_name,
                Op::Crop { offset },
                vec![x],
                name.to_string(),
                out_shape,
            )?
        };
        imp.bind(ctx, name, Slot::Runtime(v))?;
    }
    Ok(())
}

/// `ConstantOfShape`.
pub(crate) fn constant_of_shape(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let dims = imp.req_const(ctx, 0, "the shape")?.to_i64();
    let shape = dims_to_shape(&dims, &ctx.name)?;
    let n = checked_numel(&shape)?;
    let fill = match ctx.tensor("value") {
        Some(t) => decode_tensor(t)?,
        None => ConstValue::f32(vec![1], vec![0.0]),
    };
    if fill.numel() != 1 {
        return Err(ctx.malformed("value must hold one element"));
    }
    imp.charge(n)?;
    let data = match &fill.data {
        Data::F32(v) => Data::F32(vec![v[0]; n]),
        Data::I64(v) => Data::I64(vec![v[0]; n]),
    };
    imp.bind_const(ctx, ConstValue { shape, data })
}

/// `Range` on constant scalars.
pub(crate) fn range(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let start = imp.req_const(ctx, 0, "start")?;
    let limit = imp.req_const(ctx, 1, "limit")?;
    let delta = imp.req_const(ctx, 2, "delta")?;
    if [&start, &limit, &delta].iter().any(|c| c.numel() != 1) {
        return Err(ctx.malformed("start, limit and delta must be scalars"));
    }
    let all_int = start.is_int() && limit.is_int() && delta.is_int();
    let (s, l, d) = (start.to_f32()[0], limit.to_f32()[0], delta.to_f32()[0]);
    let n = if all_int {
        let (s, l, d) = (
            start.to_i64()[0] as i128,
            limit.to_i64()[0] as i128,
            delta.to_i64()[0] as i128,
        );
        if d == 0 {
            return Err(ctx.malformed("delta 0"));
        }
        let span = l - s;
        let q = span / d + i128::from(span % d != 0 && (span < 0) == (d < 0));
        q.max(0)
    } else {
        if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
            return Err(ctx.malformed("delta 0 or non-finite bounds"));
        }
        (((l - s) / d).ceil() as f64).max(0.0) as i128
    };
    let n = usize::try_from(n).map_err(|_| ctx.malformed("range too long"))?;
    imp.charge(n)?;
    let c = if all_int {
        let (s, d) = (start.to_i64()[0], delta.to_i64()[0]);
        let v = (0..n as i64)
            .map(|i| i.checked_mul(d).and_then(|x| x.checked_add(s)))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| ctx.malformed("range overflows"))?;
        ConstValue::i64(vec![n], v)
    } else {
        ConstValue::f32(vec![n], (0..n).map(|i| s + i as f32 * d).collect())
    };
    imp.bind_const(ctx, c)
}

/// `Concat`: folded when every input is constant, else an IR `Concat`.
pub(crate) fn concat(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let names: Vec<&str> = ctx
        .node
        .input
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    let first = names.first().ok_or_else(|| ctx.malformed("no inputs"))?;
    let rank = imp.shape_of(ctx, first)?.len();
    // Before opset 4 the axis was optional, defaulting to 1.
    let axis_attr = match ctx.int_opt("axis")? {
        Some(a) => a,
        None if imp.opset < 4 => 1,
        None => return Err(ctx.malformed("missing attribute 'axis'")),
    };
    let axis = ctx.axis(axis_attr, rank)?;
    let slots = names
        .iter()
        .map(|n| imp.slot(ctx, n))
        .collect::<Result<Vec<_>>>()?;
    let consts: Option<Vec<Arc<ConstValue>>> = slots
        .iter()
        .map(|s| match s {
            Slot::Const(c) => Some(c.clone()),
            Slot::Runtime(_) => None,
        })
        .collect();
    if let Some(cs) = consts {
        let mut out_shape = cs[0].shape.clone();
        out_shape[axis] = 0;
        for c in &cs {
            let fits = c.shape.len() == rank
                && c.shape
                    .iter()
                    .zip(&cs[0].shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !fits {
                return Err(ctx.malformed(format!(
                    "cannot concatenate {:?} and {:?} on axis {axis}",
                    cs[0].shape, c.shape
                )));
            }
            out_shape[axis] += c.shape[axis];
        }
        let n = checked_numel(&out_shape)?;
        imp.charge(n)?;
        let outer: usize = out_shape[..axis].iter().product();
        let all_int = cs.iter().all(|c| c.is_int());
        let chunk = |c: &ConstValue| c.shape[axis..].iter().product::<usize>();
        let data = if all_int {
            let parts: Vec<Vec<i64>> = cs.iter().map(|c| c.to_i64()).collect();
            let mut v = Vec::with_capacity(n);
            for o in 0..outer {
                for (c, p) in cs.iter().zip(&parts) {
                    let k = chunk(c);
                    v.extend_from_slice(&p[o * k..(o + 1) * k]);
                }
            }
            Data::I64(v)
        } else {
            let parts: Vec<Vec<f32>> = cs.iter().map(|c| c.to_f32()).collect();
            let mut v = Vec::with_capacity(n);
            for o in 0..outer {
                for (c, p) in cs.iter().zip(&parts) {
                    let k = chunk(c);
                    v.extend_from_slice(&p[o * k..(o + 1) * k]);
                }
            }
            Data::F32(v)
        };
        return imp.bind_const(
            ctx,
            ConstValue {
                shape: out_shape,
                data,
            },
        );
    }
    let mut inputs = Vec::new();
    for n in &names {
        // Empty inputs (size 0 along the axis) contribute nothing.
        if imp.shape_of(ctx, n)?.contains(&0) {
            continue;
        }
        inputs.push(imp.runtime(ctx, n)?);
    }
    match inputs.as_slice() {
        [] => Err(ctx.unsupported("all inputs are empty")),
        [one] => imp.bind_out(ctx, *one),
        _ => imp.emit_out(ctx, Op::Concat { axis }, inputs),
    }
}

/// Output shape of Flatten, Reshape, Squeeze or Unsqueeze.
fn reshape_target(imp: &Importer, ctx: &NodeCtx<'_>, input: &[usize]) -> Result<Vec<usize>> {
    let r = input.len();
    let shape = match ctx.op {
        "Flatten" => {
            let a = ctx.int("axis", 1)?;
            let a = if a < 0 { a + r as i64 } else { a };
            if !(0..=r as i64).contains(&a) {
                return Err(ctx.malformed(format!("axis {a} out of range for rank {r}")));
            }
            let a = a as usize;
            vec![input[..a].iter().product(), input[a..].iter().product()]
        }
        "Reshape" => {
            let target = if imp.opset < 5 {
                ctx.ints("shape").unwrap_or_default().to_vec()
            } else {
                imp.req_const(ctx, 1, "the target shape")?.to_i64()
            };
            if target.len() > MAX_RANK {
                return Err(ctx.malformed("target rank too large"));
            }
            let allow_zero = ctx.int("allowzero", 0)? != 0;
            let mut out = Vec::with_capacity(target.len());
            let mut infer = None;
            for (i, &t) in target.iter().enumerate() {
                out.push(match t {
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        1
                    }
                    0 if !allow_zero => *input.get(i).ok_or_else(|| {
                        ctx.malformed(format!(
                            "0 at position {i} copies a dimension the input lacks"
                        ))
                    })?,
                    t if t >= 0 => usize::try_from(t).map_err(|_| ctx.malformed("dimension"))?,
                    _ => return Err(ctx.malformed(format!("invalid target shape {target:?}"))),
                });
            }
            let total = checked_numel(input)?;
            if let Some(i) = infer {
                let known = checked_numel(&out)?;
                if known == 0 || total % known != 0 {
                    return Err(ctx.malformed(format!("cannot reshape {input:?} to {target:?}")));
                }
                out[i] = total / known;
            }
            out
        }
        "Squeeze" => {
            let axes = if imp.opset < 13 {
                ctx.ints("axes").map(<[i64]>::to_vec)
            } else {
                imp.opt_const(ctx, 1, "axes")?.map(|c| c.to_i64())
            };
            match axes {
                None => input.iter().copied().filter(|&d| d != 1).collect(),
                Some(axes) => {
                    let mut drop = vec![false; r];
                    for a in axes {
                        let a = ctx.axis(a, r)?;
                        if input[a] != 1 {
                            return Err(
                                ctx.malformed(format!("cannot squeeze axis {a} of {input:?}"))
                            );
                        }
                        drop[a] = true;
                    }
                    input
                        .iter()
                        .zip(&drop)
                        .filter(|(_, d)| !**d)
                        .map(|(&s, _)| s)
                        .collect()
                }
            }
        }
        _ => {
            // Unsqueeze: axes index the output.
            let axes = if imp.opset < 13 {
                ctx.ints("axes").map(<[i64]>::to_vec)
            } else {
                imp.opt_const(ctx, 1, "axes")?.map(|c| c.to_i64())
            }
            .ok_or_else(|| ctx.malformed("missing axes"))?;
            let out_rank = r + axes.len();
            if out_rank > MAX_RANK {
                return Err(ctx.malformed("result rank too large"));
            }
            let mut ones = vec![false; out_rank];
            for a in axes {
                let a = ctx.axis(a, out_rank)?;
                if std::mem::replace(&mut ones[a], true) {
                    return Err(ctx.malformed(format!("axis {a} repeated")));
                }
            }
            let mut it = input.iter();
            ones.iter()
                .map(|&one| if one { Some(1) } else { it.next().copied() })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| ctx.malformed("axes inconsistent with input rank"))?
        }
    };
    if checked_numel(&shape)? != checked_numel(input)? {
        return Err(ctx.malformed(format!("cannot reshape {input:?} to {shape:?}")));
    }
    Ok(shape)
}

/// Flatten, Reshape, Squeeze, Unsqueeze: one IR `Reshape` (or a folded constant).
pub(crate) fn reshape_like(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let input = ctx.req_input(0)?;
    let in_shape = imp.shape_of(ctx, input)?;
    let target = reshape_target(imp, ctx, &in_shape)?;
    match imp.slot(ctx, input)? {
        Slot::Const(c) => {
            imp.charge(c.numel())?;
            imp.bind_const(ctx, c.reshaped(target))
        }
        Slot::Runtime(v) => {
            let out = ctx.output()?.to_string();
            let o = imp.reshape(ctx.name.clone(), v, out, target)?;
            imp.bind_out(ctx, o)
        }
    }
}

/// Rewrites a transpose as one over fewer axes: size-1 axes dropped and runs
/// of input axes that stay adjacent and in order merged. Returns the merged
/// input shape and the permutation over it.
pub(crate) fn merge_axes(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = perm.iter().copied().filter(|&p| shape[p] != 1).collect();
    // Groups of input axes, in output order.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &p in &kept {
        match groups.last_mut() {
            Some(g) if g.last().is_some_and(|&l| next_kept(shape, l) == Some(p)) => g.push(p),
            _ => groups.push(vec![p]),
        }
    }
    let mut by_input: Vec<usize> = (0..groups.len()).collect();
    by_input.sort_by_key(|&g| groups[g][0]);
    let merged: Vec<usize> = by_input
        .iter()
        .map(|&g| groups[g].iter().map(|&a| shape[a]).product())
        .collect();
    // Output group i is merged input axis rank_of[i].
    let mut rank_of = vec![0; groups.len()];
    for (pos, &g) in by_input.iter().enumerate() {
        rank_of[g] = pos;
    }
    (merged, rank_of)
}

/// The next input axis after `a` that is not of size 1.
fn next_kept(shape: &[usize], a: usize) -> Option<usize> {
    (a + 1..shape.len()).find(|&b| shape[b] != 1)
}

/// `Transpose`: folded on constants, else an IR `Transpose` (rank ≤ 5).
pub(crate) fn transpose(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let input = ctx.req_input(0)?;
    let shape = imp.shape_of(ctx, input)?;
    let r = shape.len();
    let perm: Vec<usize> = match ctx.ints("perm") {
        Some(p) => p
            .iter()
            .map(|&a| ctx.axis(a, r))
            .collect::<Result<Vec<_>>>()?,
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
        return Err(ctx.malformed(format!("perm {perm:?} invalid for rank {r}")));
    }
    match imp.slot(ctx, input)? {
        Slot::Const(c) => {
            imp.charge(c.numel())?;
            let st = fold::strides(&shape);
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let step: Vec<i64> = perm.iter().map(|&p| st[p] as i64).collect();
            let idx = fold::strided(&out_shape, 0, &step);
            imp.bind_const(
                ctx,
                ConstValue {
                    shape: out_shape,
                    data: fold::pick(&c.data, &idx),
                },
            )
        }
        Slot::Runtime(v) => {
            if perm.iter().enumerate().all(|(i, &p)| i == p) {
                return imp.bind_out(ctx, v);
            }
            if r <= 5 {
                return imp.emit_out(ctx, Op::Transpose { perm }, vec![v]);
            }
            // Rank 6+ (PixelShuffle's reshape-transpose): merge axes that
            // stay adjacent and drop size-1 axes, then transpose at rank ≤ 5.
            let (merged, mperm) = merge_axes(&shape, &perm);
            if mperm.len() > 5 {
                return Err(ctx.unsupported(format!(
                    "transpose of rank {r} that does not reduce to rank 5"
                )));
            }
            let out = ctx.output()?.to_string();
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let x = imp.reshape(
                format!("{}/merge", ctx.name),
                v,
                format!("{out}/merged"),
                merged,
            )?;
            let t = if mperm.iter().enumerate().all(|(i, &p)| i == p) {
                x
            } else {
                imp.emit(
                    ctx.name.clone(),
                    Op::Transpose { perm: mperm },
                    vec![x],
                    format!("{out}/t"),
                )?
            };
            let y = imp.reshape(format!("{}/split", ctx.name), t, out, out_shape)?;
            imp.bind_out(ctx, y)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_axes;

    #[test]
    fn pixel_shuffle_transpose_merges_to_rank_5() {
        // [N, C, r, r, H, W] → perm [0, 1, 4, 2, 5, 3]: N and C stay together.
        let (shape, perm) = merge_axes(&[2, 3, 2, 2, 4, 5], &[0, 1, 4, 2, 5, 3]);
        assert_eq!(shape, vec![6, 2, 2, 4, 5]);
        assert_eq!(perm, vec![0, 3, 1, 4, 2]);
        // Size-1 axes vanish; a full run merges to an identity.
        let (shape, perm) = merge_axes(&[1, 3, 1, 4], &[2, 0, 1, 3]);
        assert_eq!(shape, vec![12]);
        assert_eq!(perm, vec![0]);
    }
}
