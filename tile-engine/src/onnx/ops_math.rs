//! Arithmetic ops: Gemm/MatMul, activations, BatchNormalization, Instance-
//! and GroupNormalization, broadcast binaries, Pow, Softmax and LogSoftmax,
//! LRN, Pad, Resize/Upsample, DepthToSpace.

use std::sync::Arc;

use super::attrs::NodeCtx;
use super::fold;
use super::importer::{Importer, Slot};
use super::ops_logic::folded_shape;
use super::value::ConstValue;
use crate::error::{Error, Result};
use crate::ir::{
    Activation, BinaryKind, BorderMode, Conv, CoordTransform, DepthToSpaceMode, NearestMode, Op,
    ResizeMode, ValueId,
};
use crate::tensor::Tensor;

/// Binds the node's output to `v`, giving a value created by this node the
/// node's output name (intermediate steps were emitted under derived names).
fn finish(imp: &mut Importer, ctx: &NodeCtx<'_>, v: ValueId, first_new: ValueId) -> Result<()> {
    if v >= first_new {
        imp.graph.values[v].name = ctx.output()?.to_string();
    }
    imp.bind_out(ctx, v)
}

/// Transposes a constant matrix `[r, c]` to `[c, r]`, scaled by `alpha`.
fn transposed(m: &[f32], r: usize, c: usize, alpha: f32) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = alpha * m[i * c + j];
        }
    }
    out
}

/// `Gemm`: `alpha * A' B' + beta * C`. A constant B becomes `Op::Dense`
/// (weight `[K, N]`, a row-broadcast C folded into its bias); otherwise a
/// MatMul with the scaling and addition as separate binaries.
pub(crate) fn gemm(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let first_new = imp.graph.values.len();
    let (a, b) = (ctx.req_input(0)?, ctx.req_input(1)?);
    let alpha = ctx.float("alpha", 1.0)?;
    let beta = ctx.float("beta", 1.0)?;
    let ta = ctx.int("transA", 0)? != 0;
    let tb = ctx.int("transB", 0)? != 0;
    let (sa, sb) = (imp.shape_of(ctx, a)?, imp.shape_of(ctx, b)?);
    let (&[a0, a1], &[b0, b1]) = (sa.as_slice(), sb.as_slice()) else {
        return Err(ctx.malformed(format!("A {sa:?} and B {sb:?} must be matrices")));
    };
    let (m, k) = if ta { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if tb { (b1, b0) } else { (b0, b1) };
    if k != kb {
        return Err(Error::Shape(format!(
            "{} (Gemm): A' is [{m}, {k}] but B' is [{kb}, {n}]",
            ctx.who()
        )));
    }
    let out = ctx.output()?.to_string();
    let mut cur = imp.runtime(ctx, a)?;
    if ta {
        cur = imp.emit(
            format!("{}/transA", ctx.name),
            Op::Transpose { perm: vec![1, 0] },
            vec![cur],
            format!("{out}/transA"),
        )?;
    }
    let c_slot = match ctx.input(2) {
        Some(c) if beta != 0.0 => Some(imp.slot(ctx, c)?),
        _ => None,
    };
    let c_const = match &c_slot {
        Some(Slot::Const(c)) => Some(c.clone()),
        _ => None,
    };
    if let Some(bc) = imp.konst(b) {
        imp.charge(bc.numel())?;
        let bv = bc.to_f32();
        let w = if tb {
            transposed(&bv, b0, b1, alpha)
        } else {
            bv.iter().map(|&x| alpha * x).collect()
        };
        // A C that is one value or one row folds into the Dense bias.
        let row_bias = c_const
            .as_ref()
            .filter(|c| c.numel() == 1 || (c.numel() == n && c.shape.last() == Some(&n)));
        let bias = row_bias.map(|c| {
            let v = c.to_f32();
            Arc::new(
                (0..n)
                    .map(|j| beta * v[if v.len() == 1 { 0 } else { j }])
                    .collect(),
            )
        });
        let folded_c = bias.is_some();
        let op = Op::Dense {
            weight: Arc::new(Tensor::new(vec![k, n], w)?),
            bias,
            activation: Activation::Identity,
        };
        cur = imp.emit(ctx.name.clone(), op, vec![cur], format!("{out}/dense"))?;
        if folded_c || c_slot.is_none() {
            return finish(imp, ctx, cur, first_new);
        }
    } else {
        let mut bv = imp.runtime(ctx, b)?;
        if tb {
            bv = imp.emit(
                format!("{}/transB", ctx.name),
                Op::Transpose { perm: vec![1, 0] },
                vec![bv],
                format!("{out}/transB"),
            )?;
        }
        cur = imp.emit(
            ctx.name.clone(),
            Op::MatMul,
            vec![cur, bv],
            format!("{out}/matmul"),
        )?;
        if alpha != 1.0 {
            let s = imp.add_const(format!("{out}/alpha"), ConstValue::f32(vec![], vec![alpha]))?;
            cur = imp.emit(
                format!("{}/alpha", ctx.name),
                binary_op(BinaryKind::Mul),
                vec![cur, s],
                format!("{out}/scaled"),
            )?;
        }
    }
    if let Some(slot) = c_slot {
        let cv = match slot {
            Slot::Const(c) => {
                let scaled = ConstValue::f32(
                    c.shape.clone(),
                    c.to_f32().iter().map(|&x| beta * x).collect(),
                );
                imp.add_const(format!("{out}/c"), scaled)?
            }
            Slot::Runtime(v) if beta == 1.0 => v,
            Slot::Runtime(_) => {
                return Err(ctx.unsupported("a runtime C with beta != 1"));
            }
        };
        cur = imp.emit(
            format!("{}/addC", ctx.name),
            binary_op(BinaryKind::Add),
            vec![cur, cv],
            format!("{out}/addC"),
        )?;
    }
    finish(imp, ctx, cur, first_new)
}

pub(crate) fn binary_op(kind: BinaryKind) -> Op {
    Op::Binary {
        kind,
        activation: Activation::Identity,
    }
}

/// `MatMul`: a constant rank-2 right side becomes `Op::Dense` (leading
/// dimensions of the left side flattened around it); otherwise `Op::MatMul`.
pub(crate) fn matmul(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let first_new = imp.graph.values.len();
    let (a, b) = (ctx.req_input(0)?, ctx.req_input(1)?);
    let sa = imp.shape_of(ctx, a)?;
    let out = ctx.output()?.to_string();
    if let Some(bc) = imp.konst(b).filter(|c| c.shape.len() == 2) {
        let (k, n) = (bc.shape[0], bc.shape[1]);
        if sa.last() != Some(&k) {
            return Err(Error::Shape(format!(
                "{} (MatMul): {sa:?} × {:?}",
                ctx.who(),
                bc.shape
            )));
        }
        let rows: usize = sa[..sa.len() - 1].iter().product();
        let x = imp.runtime(ctx, a)?;
        let x2 = imp.reshape(
            format!("{}/to2d", ctx.name),
            x,
            format!("{out}/2d"),
            vec![rows, k],
        )?;
        let op = Op::Dense {
            weight: Arc::new(bc.to_tensor()?),
            bias: None,
            activation: Activation::Identity,
        };
        let y2 = imp.emit(ctx.name.clone(), op, vec![x2], format!("{out}/dense"))?;
        let mut shape = sa[..sa.len() - 1].to_vec();
        shape.push(n);
        let y = imp.reshape(format!("{}/back", ctx.name), y2, format!("{out}/nd"), shape)?;
        return finish(imp, ctx, y, first_new);
    }
    let (x, w) = (imp.runtime(ctx, a)?, imp.runtime(ctx, b)?);
    imp.emit_out(ctx, Op::MatMul, vec![x, w])
}

/// A scalar bound from a constant input (Clip ≥ 11).
fn scalar_input(imp: &Importer, ctx: &NodeCtx<'_>, i: usize, what: &str) -> Result<Option<f32>> {
    match imp.opt_const(ctx, i, what)? {
        None => Ok(None),
        Some(c) => c
            .scalar_f32()
            .map(Some)
            .ok_or_else(|| ctx.malformed(format!("{what} must be a scalar"))),
    }
}

/// PRelu slopes as a per-channel (or single) vector, when they broadcast that way.
fn prelu_slope(ctx: &NodeCtx<'_>, x: &[usize], slope: &ConstValue) -> Result<Vec<f32>> {
    let v = slope.to_f32();
    if v.len() == 1 {
        return Ok(v);
    }
    // Right-align the slope's shape with the input's: only axis 1 may exceed 1.
    let r = x.len();
    let s = &slope.shape;
    let per_channel = r >= 2
        && s.len() <= r
        && s.iter().enumerate().all(|(i, &d)| {
            let axis = i + r - s.len();
            d == 1 || (axis == 1 && d == x[1])
        })
        && v.len() == x[1];
    if !per_channel {
        return Err(ctx.unsupported(format!(
            "slope of shape {s:?} for input {x:?}: only a scalar or per-channel slope is supported"
        )));
    }
    Ok(v)
}

/// PRelu whose slope is neither scalar nor per channel (or computed at run
/// time): `relu(x) + slope * min(x, 0)` as broadcast binaries.
fn prelu_broadcast(imp: &mut Importer, ctx: &NodeCtx<'_>, x_name: &str) -> Result<()> {
    let first_new = imp.graph.values.len();
    let out = ctx.output()?.to_string();
    let x = imp.runtime(ctx, x_name)?;
    let slope = imp.runtime(ctx, ctx.req_input(1)?)?;
    let zero = imp.add_const(format!("{out}/zero"), ConstValue::f32(vec![], vec![0.0]))?;
    let n = &ctx.name;
    let pos = imp.emit(
        format!("{n}/relu"),
        Op::Activation(Activation::Relu),
        vec![x],
        format!("{out}/pos"),
    )?;
    let neg = imp.emit(
        format!("{n}/neg"),
        binary_op(BinaryKind::Min),
        vec![x, zero],
        format!("{out}/neg"),
    )?;
    let scaled = imp.emit(
        format!("{n}/scale"),
        binary_op(BinaryKind::Mul),
        vec![neg, slope],
        format!("{out}/scaled"),
    )?;
    let y = imp.emit(
        n.clone(),
        binary_op(BinaryKind::Add),
        vec![pos, scaled],
        format!("{out}/sum"),
    )?;
    if imp.graph.shape(y) != imp.graph.shape(x) {
        return Err(ctx.malformed("slope does not broadcast onto the input"));
    }
    finish(imp, ctx, y, first_new)
}

/// Elementwise activations → `Op::Activation`.
pub(crate) fn activation(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let x_name = ctx.req_input(0)?;
    let act = match ctx.op {
        "Relu" => Activation::Relu,
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        "HardSwish" => Activation::HardSwish,
        "Softplus" => Activation::Softplus,
        "Erf" => Activation::Erf,
        "Mish" => Activation::Mish,
        "Abs" => Activation::Abs,
        "Neg" => Activation::Neg,
        "Exp" => Activation::Exp,
        "Log" => Activation::Log,
        "Sqrt" => Activation::Sqrt,
        "Reciprocal" => Activation::Reciprocal,
        "Gelu" => match ctx.string("approximate", "none")?.as_str() {
            "none" => Activation::Gelu { tanh: false },
            "tanh" => Activation::Gelu { tanh: true },
            other => return Err(ctx.unsupported(format!("approximate '{other}'"))),
        },
        "Elu" => Activation::Elu {
            alpha: ctx.float("alpha", 1.0)?,
        },
        "Selu" => Activation::Selu {
            alpha: ctx.float("alpha", 1.673_263_2)?,
            gamma: ctx.float("gamma", 1.050_701)?,
        },
        "LeakyRelu" => Activation::LeakyRelu {
            alpha: ctx.float("alpha", 0.01)?,
        },
        "HardSigmoid" => Activation::HardSigmoid {
            alpha: ctx.float("alpha", 0.2)?,
            beta: ctx.float("beta", 0.5)?,
        },
        "Clip" if imp.opset < 11 => Activation::Clip {
            min: ctx.float("min", f32::MIN)?,
            max: ctx.float("max", f32::MAX)?,
        },
        "Clip" => Activation::Clip {
            min: scalar_input(imp, ctx, 1, "min")?.unwrap_or(f32::NEG_INFINITY),
            max: scalar_input(imp, ctx, 2, "max")?.unwrap_or(f32::INFINITY),
        },
        _ => {
            let xs = imp.shape_of(ctx, x_name)?;
            let slope = match imp.konst(ctx.req_input(1)?) {
                // Before opset 7 a slope of C values was per channel.
                Some(s) if imp.opset < 7 && xs.len() >= 2 && s.numel() == xs[1] => s.to_f32(),
                Some(s) => match prelu_slope(ctx, &xs, &s) {
                    Ok(v) => v,
                    Err(_) => return prelu_broadcast(imp, ctx, x_name),
                },
                None => return prelu_broadcast(imp, ctx, x_name),
            };
            Activation::PRelu {
                slope: Arc::new(slope),
            }
        }
    };
    let x = imp.runtime(ctx, x_name)?;
    imp.emit_out(ctx, Op::Activation(act), vec![x])
}

/// `BatchNormalization` (inference) → `Op::ChannelAffine`.
pub(crate) fn batch_norm(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    if imp.opset < 9 && ctx.int("spatial", 1)? == 0 {
        return Err(ctx.unsupported("spatial = 0"));
    }
    if ctx.int("training_mode", 0)? != 0 {
        return Err(ctx.unsupported("training mode"));
    }
    let x_name = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, x_name)?;
    let c = *xs
        .get(1)
        .ok_or_else(|| ctx.malformed(format!("input {xs:?} has no channel axis")))?;
    let eps = f64::from(ctx.float("epsilon", 1e-5)?);
    let mut params = Vec::new();
    for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
        let p = imp.req_const(ctx, i, what)?.to_f32();
        if p.len() != c {
            return Err(ctx.malformed(format!("{what} has {} values for {c} channels", p.len())));
        }
        params.push(p);
    }
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|j| {
            let a = f64::from(params[0][j]) / (f64::from(params[3][j]) + eps).sqrt();
            let b = f64::from(params[1][j]) - f64::from(params[2][j]) * a;
            (a as f32, b as f32)
        })
        .unzip();
    let x = imp.runtime(ctx, x_name)?;
    let op = Op::ChannelAffine {
        scale: Arc::new(scale),
        shift: Arc::new(shift),
    };
    imp.emit_out(ctx, op, vec![x])
}

/// Add/Sub/Mul/Div/Max/Min/Sum/Mean → `Op::Binary` (variadic forms as a
/// chain; Mean the sum times `1/n`, as onnxruntime computes it); folded when
/// every input is constant.
pub(crate) fn binary(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let first_new = imp.graph.values.len();
    let kind = match ctx.op {
        "Add" | "Sum" | "Mean" => BinaryKind::Add,
        "Sub" => BinaryKind::Sub,
        "Mul" => BinaryKind::Mul,
        "Div" => BinaryKind::Div,
        "Max" => BinaryKind::Max,
        _ => BinaryKind::Min,
    };
    let names: Vec<&str> = ctx
        .node
        .input
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    let variadic = matches!(ctx.op, "Sum" | "Max" | "Min" | "Mean");
    // onnxruntime multiplies the sum by 1/n (ONNX's reference divides, which
    // differs in the last bit for n = 3).
    let mean = (ctx.op == "Mean" && names.len() > 1).then(|| 1.0 / names.len() as f32);
    if names.is_empty() || (!variadic && names.len() != 2) {
        return Err(ctx.malformed(format!("expects 2 inputs, got {}", names.len())));
    }
    let consts: Option<Vec<Arc<ConstValue>>> = names.iter().map(|n| imp.konst(n)).collect();
    if let Some(cs) = consts {
        let mut acc = (*cs[0]).clone();
        for c in &cs[1..] {
            folded_shape(imp, ctx, &acc.shape, &c.shape)?;
            acc = fold::binary(kind, &acc, c)
                .ok_or_else(|| ctx.malformed("integer overflow or division by zero"))?;
        }
        if let Some(k) = mean {
            let k = ConstValue::f32(vec![], vec![k]);
            let sum = ConstValue::f32(acc.shape.clone(), acc.to_f32());
            acc = fold::binary(BinaryKind::Mul, &sum, &k)
                .ok_or_else(|| ctx.malformed("a mean that does not fold"))?;
        }
        return imp.bind_const(ctx, acc);
    }
    let out = ctx.output()?.to_string();
    let mut cur = imp.runtime(ctx, names[0])?;
    for (i, n) in names.iter().enumerate().skip(1) {
        let mut rhs = imp.runtime(ctx, n)?;
        if imp.opset < 7 {
            rhs = legacy_broadcast(imp, ctx, cur, rhs)?;
        }
        let last = i + 1 == names.len() && mean.is_none();
        let node_name = if last {
            ctx.name.clone()
        } else {
            format!("{}/{i}", ctx.name)
        };
        cur = imp.emit(
            node_name,
            binary_op(kind),
            vec![cur, rhs],
            format!("{out}/{i}"),
        )?;
    }
    if let Some(k) = mean {
        let k = imp.add_const(format!("{out}/1/n"), ConstValue::f32(vec![], vec![k]))?;
        cur = imp.emit(
            ctx.name.clone(),
            binary_op(BinaryKind::Mul),
            vec![cur, k],
            out.clone(),
        )?;
    }
    finish(imp, ctx, cur, first_new)
}

/// `Pow` by a constant scalar exponent, rewritten into the ops that compute
/// it exactly or to within an ulp: 1 (identity), 2 and 3 (products, as
/// numpy squares), 0.5 (`Sqrt`), -1 (`Reciprocal`), -0.5 (both). These are
/// what exported models use (variances, RMS and L2 norms); a general power
/// needs `exp(b·ln a)`, which is wrong for negative bases, so it is refused.
/// (Via `Sqrt`, `(-0)^0.5` is -0 and `(-inf)^0.5` NaN, as numpy's fast path
/// gives, where C's `pow` gives +0 and +inf.) Constants are folded with `powf`.
pub(crate) fn pow(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let first_new = imp.graph.values.len();
    let x_name = ctx.req_input(0)?;
    let e = imp.req_const(ctx, 1, "exponent")?;
    if let Some(base) = imp.konst(x_name) {
        let shape = folded_shape(imp, ctx, &base.shape, &e.shape)?;
        let (ib, ie) = (
            fold::broadcast_indices(&shape, &base.shape),
            fold::broadcast_indices(&shape, &e.shape),
        );
        let (b, p) = (base.to_f32(), e.to_f32());
        let v = ib.iter().zip(&ie).map(|(&i, &j)| b[i].powf(p[j])).collect();
        return imp.bind_const(ctx, ConstValue::f32(shape, v));
    }
    let xs = imp.shape_of(ctx, x_name)?;
    let exponent = match e.to_f32().as_slice() {
        [v] if e.shape.len() <= xs.len() => *v,
        [_] => {
            return Err(ctx.unsupported(format!(
                "an exponent of rank {} would raise the rank-{} input's rank",
                e.shape.len(),
                xs.len()
            )));
        }
        _ => {
            return Err(ctx.unsupported(format!(
                "only a scalar exponent is supported, not one of shape {:?}",
                e.shape
            )));
        }
    };
    let x = imp.runtime(ctx, x_name)?;
    let out = ctx.output()?.to_string();
    let act = |imp: &mut Importer, a: Activation, v: ValueId, tag: &str| {
        imp.emit(
            format!("{}/{tag}", ctx.name),
            Op::Activation(a),
            vec![v],
            format!("{out}/{tag}"),
        )
    };
    let mul = |imp: &mut Importer, a: ValueId, b: ValueId, tag: &str| {
        imp.emit(
            format!("{}/{tag}", ctx.name),
            binary_op(BinaryKind::Mul),
            vec![a, b],
            format!("{out}/{tag}"),
        )
    };
    let y = match exponent {
        1.0 => x,
        2.0 => mul(imp, x, x, "square")?,
        3.0 => {
            let sq = mul(imp, x, x, "square")?;
            mul(imp, sq, x, "cube")?
        }
        0.5 => act(imp, Activation::Sqrt, x, "sqrt")?,
        -1.0 => act(imp, Activation::Reciprocal, x, "reciprocal")?,
        -0.5 => {
            let r = act(imp, Activation::Sqrt, x, "sqrt")?;
            act(imp, Activation::Reciprocal, r, "reciprocal")?
        }
        other => {
            return Err(ctx.unsupported(format!(
                "exponent {other}; only 0.5, -0.5, 1, -1, 2 and 3 are supported"
            )));
        }
    };
    if y == x {
        return imp.bind_out(ctx, x);
    }
    finish(imp, ctx, y, first_new)
}

/// Opset < 7 `broadcast = 1` with `axis`: B's dims line up with A's from
/// `axis` on, not from the end. Trailing ones make that numpy broadcasting.
fn legacy_broadcast(
    imp: &mut Importer,
    ctx: &NodeCtx<'_>,
    a: ValueId,
    b: ValueId,
) -> Result<ValueId> {
    let Some(axis) = ctx.int_opt("axis")? else {
        return Ok(b);
    };
    if ctx.int("broadcast", 0)? == 0 {
        return Ok(b);
    }
    let (ra, sb) = (imp.graph.shape(a).len(), imp.graph.shape(b).to_vec());
    let axis = ctx.axis(axis, ra)?;
    if axis + sb.len() > ra {
        return Err(ctx.malformed(format!(
            "B of rank {} does not fit at axis {axis}",
            sb.len()
        )));
    }
    let mut shape = sb;
    shape.resize(ra - axis, 1);
    let out = ctx.output()?;
    imp.reshape(
        format!("{}/bcast", ctx.name),
        b,
        format!("{out}/bcast"),
        shape,
    )
}

/// `Softmax` and `LogSoftmax` (`log`): opset ≥ 13 along one axis; earlier
/// opsets flatten to 2-D at `axis` first (Reshape + Softmax(axis 1) + Reshape).
pub(crate) fn softmax(imp: &mut Importer, ctx: &NodeCtx<'_>, log: bool) -> Result<()> {
    let op = |axis| {
        if log {
            Op::LogSoftmax { axis }
        } else {
            Op::Softmax { axis }
        }
    };
    let first_new = imp.graph.values.len();
    let x = imp.runtime(ctx, ctx.req_input(0)?)?;
    let xs = imp.graph.shape(x).to_vec();
    let r = xs.len();
    let legacy = imp.opset < 13;
    let axis = ctx.axis(ctx.int("axis", if legacy { 1 } else { -1 })?, r)?;
    if !legacy || axis + 1 == r {
        // Coercing to 2-D at the last axis is a no-op.
        return imp.emit_out(ctx, op(axis), vec![x]);
    }
    let out = ctx.output()?.to_string();
    let rows: usize = xs[..axis].iter().product();
    let cols: usize = xs[axis..].iter().product();
    let x2 = imp.reshape(
        format!("{}/to2d", ctx.name),
        x,
        format!("{out}/2d"),
        vec![rows, cols],
    )?;
    let y2 = imp.emit(
        ctx.name.clone(),
        op(1),
        vec![x2],
        format!("{out}/softmax2d"),
    )?;
    let y = imp.reshape(format!("{}/back", ctx.name), y2, format!("{out}/nd"), xs)?;
    finish(imp, ctx, y, first_new)
}

/// `LayerNormalization` (opset 17) → `Op::LayerNorm`; scale and bias must
/// be constants of the normalised dims' shape (a scalar broadcasts).
pub(crate) fn layer_norm(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(ctx.unsupported("the Mean and InvStdDev outputs (training)"));
    }
    let x_name = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, x_name)?;
    let axis = ctx.axis(ctx.int("axis", -1)?, xs.len())?;
    let len: usize = xs[axis..].iter().product();
    let widen = |v: Vec<f32>, what: &str| -> Result<Vec<f32>> {
        match v.len() {
            n if n == len => Ok(v),
            1 => Ok(vec![v[0]; len]),
            n => Err(ctx.unsupported(format!(
                "{what} of {n} values for rows of {len} (only the full shape or a scalar)"
            ))),
        }
    };
    let scale = widen(imp.req_const(ctx, 1, "Scale")?.to_f32(), "Scale")?;
    let bias = match ctx.input(2) {
        Some(_) => widen(imp.req_const(ctx, 2, "B")?.to_f32(), "B")?,
        None => vec![0.0; len],
    };
    let op = Op::LayerNorm {
        axis,
        scale: Arc::new(scale),
        bias: Arc::new(bias),
        epsilon: ctx.float("epsilon", 1e-5)?,
    };
    let x = imp.runtime(ctx, x_name)?;
    imp.emit_out(ctx, op, vec![x])
}

/// The shape of a normalisation's input: channels and at least one axis after them.
fn planes_input(imp: &Importer, ctx: &NodeCtx<'_>, x_name: &str) -> Result<Vec<usize>> {
    let xs = imp.shape_of(ctx, x_name)?;
    if xs.len() < 3 {
        return Err(ctx.unsupported(format!(
            "only an input with channels and at least one spatial axis is supported, not {xs:?}"
        )));
    }
    Ok(xs)
}

/// `InstanceNormalization` of an NCHW map → `Op::InstanceNorm`.
pub(crate) fn instance_norm(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let first_new = imp.graph.values.len();
    let x_name = ctx.req_input(0)?;
    let xs = planes_input(imp, ctx, x_name)?;
    let scale = imp.req_const(ctx, 1, "scale")?.to_f32();
    let bias = imp.req_const(ctx, 2, "B")?.to_f32();
    if scale.len() != xs[1] || bias.len() != xs[1] {
        return Err(ctx.malformed(format!(
            "{} scales and {} biases for {} channels",
            scale.len(),
            bias.len(),
            xs[1]
        )));
    }
    let epsilon = ctx.float("epsilon", 1e-5)?;
    let x = imp.runtime(ctx, x_name)?;
    let y = normalise_planes(imp, ctx, x, scale, bias, epsilon)?;
    finish(imp, ctx, y, first_new)
}

/// `Op::InstanceNorm` of each `[n, c]` plane of `x` (any rank ≥ 3: the
/// trailing axes are one plane, as ONNX defines it), as a rank-4 map.
/// PyTorch exports `GroupNorm` before opset 18 as a Reshape to
/// `[N, groups, -1]` and an InstanceNormalization of that rank-3 tensor.
fn normalise_planes(
    imp: &mut Importer,
    ctx: &NodeCtx<'_>,
    x: ValueId,
    scale: Vec<f32>,
    bias: Vec<f32>,
    epsilon: f32,
) -> Result<ValueId> {
    let xs = imp.graph.shape(x).to_vec();
    let out = ctx.output()?.to_string();
    let plane: usize = xs[2..].iter().product();
    let nchw = vec![xs[0], xs[1], plane, 1];
    let flat = if xs.len() == 4 {
        x
    } else {
        imp.reshape(
            format!("{}/planes", ctx.name),
            x,
            format!("{out}/planes"),
            nchw,
        )?
    };
    let op = Op::InstanceNorm {
        scale: Arc::new(scale),
        bias: Arc::new(bias),
        epsilon,
    };
    let y = imp.emit(ctx.name.clone(), op, vec![flat], format!("{out}/norm"))?;
    imp.reshape(format!("{}/back", ctx.name), y, format!("{out}/shaped"), xs)
}

/// `GroupNormalization` (opsets 18 and 21): each group of `C / num_groups`
/// channels normalised together, then a per-channel affine. Opset 18 gives
/// one scale and bias per group, opset 21 one per channel.
pub(crate) fn group_norm(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let first_new = imp.graph.values.len();
    let x_name = ctx.req_input(0)?;
    let xs = planes_input(imp, ctx, x_name)?;
    let groups = ctx
        .int_opt("num_groups")?
        .ok_or_else(|| ctx.malformed("missing attribute 'num_groups'"))?;
    let c = xs[1];
    let groups = match usize::try_from(groups) {
        Ok(g) if g > 0 && c % g == 0 => g,
        _ => {
            return Err(ctx.malformed(format!("num_groups {groups} does not divide {c} channels")));
        }
    };
    let scale = imp.req_const(ctx, 1, "scale")?.to_f32();
    let bias = imp.req_const(ctx, 2, "bias")?.to_f32();
    let per = if scale.len() == c && bias.len() == c {
        1
    } else if scale.len() == groups && bias.len() == groups && imp.opset < 21 {
        c / groups
    } else {
        return Err(ctx.malformed(format!(
            "{} scales and {} biases for {c} channels in {groups} groups",
            scale.len(),
            bias.len()
        )));
    };
    let epsilon = ctx.float("epsilon", 1e-5)?;
    let out = ctx.output()?.to_string();
    let x = imp.runtime(ctx, x_name)?;
    let mut grouped = vec![xs[0], groups, c / groups];
    grouped.extend_from_slice(&xs[2..]);
    let g = imp.reshape(
        format!("{}/groups", ctx.name),
        x,
        format!("{out}/groups"),
        grouped,
    )?;
    let ones = vec![1.0; groups];
    let zeros = vec![0.0; groups];
    let normed = normalise_planes(imp, ctx, g, ones, zeros, epsilon)?;
    let back = imp.reshape(
        format!("{}/channels", ctx.name),
        normed,
        format!("{out}/channels"),
        xs,
    )?;
    let expand = |v: Vec<f32>| (0..c).map(|ch| v[ch / per]).collect::<Vec<_>>();
    let op = Op::ChannelAffine {
        scale: Arc::new(expand(scale)),
        shift: Arc::new(expand(bias)),
    };
    let y = imp.emit(
        format!("{}/affine", ctx.name),
        op,
        vec![back],
        format!("{out}/affine"),
    )?;
    finish(imp, ctx, y, first_new)
}

/// `LRN` → `Op::Lrn`.
pub(crate) fn lrn(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let size = ctx
        .int_opt("size")?
        .ok_or_else(|| ctx.malformed("missing attribute 'size'"))?;
    let op = Op::Lrn {
        size: ctx.size("size", size)?,
        alpha: ctx.float("alpha", 1e-4)?,
        beta: ctx.float("beta", 0.75)?,
        bias: ctx.float("bias", 1.0)?,
    };
    let x = imp.runtime(ctx, ctx.req_input(0)?)?;
    imp.emit_out(ctx, op, vec![x])
}

/// `Pad` of an NCHW map: H and W → `Op::Pad` (constant mode) or
/// `Op::BorderPad` (reflect, edge); constant channels → a 1×1 conv (see
/// [`pad_channels`]); negative pads of H and W → a `Crop` after the padding.
pub(crate) fn pad(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let mode = ctx.string("mode", "constant")?;
    let border = match mode.as_str() {
        "constant" => None,
        "reflect" => Some(BorderMode::Reflect),
        "edge" => Some(BorderMode::Edge),
        _ => {
            return Err(ctx.unsupported(format!(
                "mode '{mode}' (only 'constant', 'reflect' and 'edge')"
            )));
        }
    };
    let x_name = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, x_name)?;
    let r = xs.len();
    let (raw, value, axes) = if imp.opset < 11 {
        let attr = if imp.opset < 2 { "paddings" } else { "pads" };
        let p = ctx
            .ints(attr)
            .ok_or_else(|| ctx.malformed(format!("missing attribute '{attr}'")))?
            .to_vec();
        (p, ctx.float("value", 0.0)?, None)
    } else {
        let p = imp.req_const(ctx, 1, "pads")?.to_i64();
        let v = scalar_input(imp, ctx, 2, "constant_value")?.unwrap_or(0.0);
        let axes = imp.opt_const(ctx, 3, "axes")?.map(|c| c.to_i64());
        (p, v, axes)
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| ctx.axis(a, r))
            .collect::<Result<Vec<_>>>()?,
        None => (0..r).collect(),
    };
    let na = axes.len();
    if raw.len() != 2 * na {
        return Err(ctx.malformed(format!("{} pads for {na} axes", raw.len())));
    }
    let mut begin = vec![0i64; r];
    let mut end = vec![0i64; r];
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = raw[i];
        end[a] = raw[na + i];
    }
    // Negative pads of H and W crop. Padding first and cropping after gives
    // what the reference (which crops first) gives for every valid model.
    // `[top, left, bottom, right]` rows and columns cropped.
    let mut crop = [0usize; 4];
    if r == 4 {
        for (k, a) in [(0, 2), (1, 3)] {
            let neg = |p: i64| ctx.size("pad", p.checked_neg().unwrap_or(i64::MAX));
            if begin[a] < 0 {
                crop[k] = neg(begin[a])?;
                begin[a] = 0;
            }
            if end[a] < 0 {
                crop[k + 2] = neg(end[a])?;
                end[a] = 0;
            }
        }
    }
    if begin.iter().chain(&end).any(|&p| p < 0) {
        return Err(ctx.unsupported("negative pads of an axis other than H and W"));
    }
    let first_new = imp.graph.values.len();
    let mut x = imp.runtime(ctx, x_name)?;
    if begin.iter().chain(&end).all(|&p| p == 0) && crop == [0; 4] {
        return imp.bind_out(ctx, x);
    }
    let channels = r == 4 && (begin[1] != 0 || end[1] != 0);
    if r != 4 || begin[0] != 0 || end[0] != 0 || (channels && border.is_some()) {
        return Err(ctx.unsupported(
            "only padding H and W (any mode) or C (constant) of a rank-4 (NCHW) map is supported",
        ));
    }
    let out = ctx.output()?.to_string();
    if channels {
        let (before, after) = (ctx.size("pad", begin[1])?, ctx.size("pad", end[1])?);
        x = pad_channels(imp, ctx, x, [before, after], value, &out)?;
    }
    let pads = [
        ctx.size("pad", begin[2])?,
        ctx.size("pad", begin[3])?,
        ctx.size("pad", end[2])?,
        ctx.size("pad", end[3])?,
    ];
    if pads != [0; 4] {
        let op = match border {
            None => Op::Pad { pads, value },
            Some(mode) => Op::BorderPad { pads, mode },
        };
        x = imp.emit(ctx.name.clone(), op, vec![x], format!("{out}/hw"))?;
    }
    if crop != [0; 4] {
        let mut s = imp.graph.shape(x).to_vec();
        for (a, (b, e)) in [(2, (crop[0], crop[2])), (3, (crop[1], crop[3]))] {
            s[a] = s[a]
                .checked_sub(b + e)
                .filter(|&n| n > 0)
                .ok_or_else(|| ctx.malformed(format!("negative pads remove all of axis {a}")))?;
        }
        let op = Op::Crop {
            offset: [crop[0], crop[1]],
        };
        x = imp.emit_shaped(
            format!("{}/crop", ctx.name),
            op,
            vec![x],
            format!("{out}/crop"),
            s,
        )?;
    }
    finish(imp, ctx, x, first_new)
}

/// Constant channels before and after those of `x` (the CIFAR ResNets'
/// "option A" shortcut, `F.pad` over C): a 1×1 conv whose weights copy each
/// channel to its new place (`1·x + Σ 0·others` is `x` exactly for finite
/// maps) and whose bias is the pad value on the new channels. It is
/// spatially local, so it tiles with the layers around it.
fn pad_channels(
    imp: &mut Importer,
    ctx: &NodeCtx<'_>,
    x: ValueId,
    [before, after]: [usize; 2],
    value: f32,
    out: &str,
) -> Result<ValueId> {
    let c = imp.graph.shape(x)[1];
    let total = before + c + after;
    imp.charge(total * c)?;
    let mut weight = vec![0.0f32; total * c];
    for k in 0..c {
        weight[(before + k) * c + k] = 1.0;
    }
    let bias = (value != 0.0).then(|| {
        Arc::new(
            (0..total)
                .map(|o| {
                    if (before..before + c).contains(&o) {
                        0.0
                    } else {
                        value
                    }
                })
                .collect(),
        )
    });
    let op = Op::Conv(Conv {
        weight: Arc::new(Tensor::new(vec![total, c, 1, 1], weight)?),
        bias,
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        group: 1,
        activation: Activation::Identity,
    });
    imp.emit(
        format!("{}/channels", ctx.name),
        op,
        vec![x],
        format!("{out}/channels"),
    )
}

/// `Resize` (opset 10, 11, 13+) and `Upsample` (7–9) of H and W → `Op::Resize`.
pub(crate) fn resize(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let x_name = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, x_name)?;
    if xs.len() != 4 {
        return Err(ctx.unsupported(format!("only NCHW inputs, got rank {}", xs.len())));
    }
    let legacy = ctx.op == "Upsample" || imp.opset < 11;
    let nonempty = |c: Option<Arc<ConstValue>>| c.filter(|c| c.numel() > 0);
    let (scales, sizes) = if ctx.op == "Upsample" && imp.opset < 9 {
        let s = ctx
            .floats("scales")
            .ok_or_else(|| ctx.malformed("missing attribute 'scales'"))?;
        (Some(s.to_vec()), None)
    } else if legacy {
        (Some(imp.req_const(ctx, 1, "scales")?.to_f32()), None)
    } else {
        let s = nonempty(imp.opt_const(ctx, 2, "scales")?).map(|c| c.to_f32());
        let z = nonempty(imp.opt_const(ctx, 3, "sizes")?).map(|c| c.to_i64());
        (s, z)
    };
    // Opset 18 `axes`: scales/sizes name only some axes.
    let axes: Vec<usize> = match ctx.ints("axes") {
        Some(a) => a
            .iter()
            .map(|&a| ctx.axis(a, 4))
            .collect::<Result<Vec<_>>>()?,
        None => (0..4).collect(),
    };
    let mut full_scales = [1f32; 4];
    let mut out = xs.clone();
    match (scales, sizes) {
        (_, Some(z)) => {
            if z.len() != axes.len() {
                return Err(ctx.malformed(format!("{} sizes for {} axes", z.len(), axes.len())));
            }
            let policy = ctx.string("keep_aspect_ratio_policy", "stretch")?;
            let ratios = axes
                .iter()
                .zip(&z)
                .map(|(&a, &s)| Ok(ctx.size("size", s)? as f64 / xs[a] as f64))
                .collect::<Result<Vec<f64>>>()?;
            // not_larger / not_smaller: one scale for all axes, sizes rounded half up.
            let common = match policy.as_str() {
                "stretch" => None,
                "not_larger" => ratios.iter().copied().reduce(f64::min),
                "not_smaller" => ratios.iter().copied().reduce(f64::max),
                other => {
                    return Err(ctx.unsupported(format!("keep_aspect_ratio_policy '{other}'")));
                }
            };
            for (&a, &s) in axes.iter().zip(&z) {
                match common {
                    None => {
                        out[a] = ctx.size("size", s)?;
                        full_scales[a] = out[a] as f32 / xs[a] as f32;
                    }
                    Some(c) => {
                        let o = (c * xs[a] as f64 + 0.5).floor();
                        if !(0.0..=super::attrs::MAX_DIM as f64).contains(&o) {
                            return Err(ctx.malformed("size out of range"));
                        }
                        out[a] = o as usize;
                        full_scales[a] = c as f32;
                    }
                }
            }
        }
        (Some(s), None) => {
            if s.len() != axes.len() {
                return Err(ctx.malformed(format!("{} scales for {} axes", s.len(), axes.len())));
            }
            for (&a, &f) in axes.iter().zip(&s) {
                if !(f.is_finite() && f > 0.0) {
                    return Err(ctx.malformed(format!("scale {f}")));
                }
                // The product in float32, as onnxruntime takes it: a
                // PyTorch `scale_factor=7/6` on 60 pixels is 70.0 there
                // (69 in float64, as ONNX's shape inference has it).
                let o = f64::from((xs[a] as f32 * f).floor());
                if o > super::attrs::MAX_DIM as f64 {
                    return Err(ctx.malformed(format!("scale {f} makes the output too large")));
                }
                out[a] = o as usize;
                full_scales[a] = f;
            }
        }
        (None, None) => return Err(ctx.malformed("neither scales nor sizes given")),
    }
    if out[0] != xs[0] || out[1] != xs[1] {
        return Err(ctx.unsupported("resizing N or C"));
    }
    if ctx.int("antialias", 0)? != 0 {
        return Err(ctx.unsupported("antialias"));
    }
    let mode_s = ctx.string("mode", "nearest")?;
    let nearest = if legacy {
        NearestMode::Floor
    } else {
        match ctx.string("nearest_mode", "round_prefer_floor")?.as_str() {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            other => return Err(ctx.unsupported(format!("nearest_mode '{other}'"))),
        }
    };
    let mode = match mode_s.as_str() {
        "nearest" => ResizeMode::Nearest(nearest),
        "linear" | "bilinear" => ResizeMode::Linear,
        "cubic" if !legacy => ResizeMode::Cubic {
            a: ctx.float("cubic_coeff_a", -0.75)?,
            exclude_outside: ctx.int("exclude_outside", 0)? != 0,
        },
        other => return Err(ctx.unsupported(format!("mode '{other}'"))),
    };
    if ctx.int("exclude_outside", 0)? != 0 && !matches!(mode, ResizeMode::Cubic { .. }) {
        return Err(ctx.unsupported("exclude_outside outside cubic mode"));
    }
    let coord = if legacy {
        CoordTransform::Asymmetric
    } else {
        match ctx
            .string("coordinate_transformation_mode", "half_pixel")?
            .as_str()
        {
            "half_pixel" => CoordTransform::HalfPixel,
            "pytorch_half_pixel" => CoordTransform::PytorchHalfPixel,
            "align_corners" => CoordTransform::AlignCorners,
            "asymmetric" => CoordTransform::Asymmetric,
            other => {
                return Err(ctx.unsupported(format!("coordinate_transformation_mode '{other}'")));
            }
        }
    };
    let x = imp.runtime(ctx, x_name)?;
    if out == xs && full_scales[2] == 1.0 && full_scales[3] == 1.0 {
        return imp.bind_out(ctx, x);
    }
    let op = Op::Resize {
        mode,
        coord,
        scales: [full_scales[2], full_scales[3]],
    };
    let name = ctx.output()?.to_string();
    let y = imp.emit_shaped(ctx.name.clone(), op, vec![x], name, out)?;
    imp.bind_out(ctx, y)
}

/// Largest `SpaceToDepth` blocksize imported.
const MAX_SPACE_TO_DEPTH_BLOCK: usize = 8;

/// `SpaceToDepth` (YOLOv2's reorg): the `b × b` phases of the map, each a
/// crop and a 1×1 max pool of stride `b` (which picks exactly), then
/// concatenated on C in row-major phase order, as ONNX orders the output
/// channels (`(dy·b + dx)·C + c`). Each piece tiles like any pool.
pub(crate) fn space_to_depth(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let first_new = imp.graph.values.len();
    let b = ctx
        .int_opt("blocksize")?
        .ok_or_else(|| ctx.malformed("missing attribute 'blocksize'"))?;
    let b = ctx.size("blocksize", b)?;
    let x_name = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, x_name)?;
    let [_, _, h, w] = xs[..] else {
        return Err(ctx.unsupported(format!("only an NCHW map is supported, not {xs:?}")));
    };
    if b == 0 || h == 0 || w == 0 || h % b != 0 || w % b != 0 {
        return Err(ctx.malformed(format!("blocksize {b} does not divide {h}×{w}")));
    }
    // b² phases become 2·b² nodes: keep that proportionate to a real model
    // (YOLOv2's reorg uses 2).
    if b > MAX_SPACE_TO_DEPTH_BLOCK {
        return Err(ctx.unsupported(format!(
            "blocksize {b}; at most {MAX_SPACE_TO_DEPTH_BLOCK} is supported"
        )));
    }
    let x = imp.runtime(ctx, x_name)?;
    if b == 1 {
        return imp.bind_out(ctx, x);
    }
    let out = ctx.output()?.to_string();
    let (oh, ow) = (h / b, w / b);
    let mut phases = Vec::with_capacity(b * b);
    for dy in 0..b {
        for dx in 0..b {
            phases.push(super::ops_shape::strided_pick(
                imp,
                &format!("{}/phase{dy}_{dx}", ctx.name),
                x,
                [dy, dx],
                [b, b],
                [oh, ow],
                format!("{out}/phase{dy}_{dx}"),
            )?);
        }
    }
    let y = imp.emit(
        ctx.name.clone(),
        Op::Concat { axis: 1 },
        phases,
        format!("{out}/concat"),
    )?;
    finish(imp, ctx, y, first_new)
}

/// `DepthToSpace` → `Op::DepthToSpace`.
pub(crate) fn depth_to_space(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let b = ctx
        .int_opt("blocksize")?
        .ok_or_else(|| ctx.malformed("missing attribute 'blocksize'"))?;
    let mode = match ctx.string("mode", "DCR")?.as_str() {
        "DCR" => DepthToSpaceMode::Dcr,
        "CRD" => DepthToSpaceMode::Crd,
        other => return Err(ctx.malformed(format!("unknown mode '{other}'"))),
    };
    let op = Op::DepthToSpace {
        blocksize: ctx.size("blocksize", b)?,
        mode,
    };
    let x = imp.runtime(ctx, ctx.req_input(0)?)?;
    imp.emit_out(ctx, op, vec![x])
}
