//! Ops that exporters emit for shape arithmetic only (rounding, comparisons,
//! boolean logic, `Where`, `Mod`: what `torch.div(..., rounding_mode='floor')`
//! or `F.interpolate(scale_factor=...)` trace into when sizes are dynamic),
//! folded whenever their inputs are constants and refused on a feature map;
//! and `Expand`, which also broadcasts a runtime map.

use super::attrs::NodeCtx;
use super::fold;
use super::importer::{Importer, Slot};
use super::ops_math::binary_op;
use super::value::{ConstValue, Data};
use crate::error::Result;
use crate::ir::BinaryKind;

/// The constant inputs of `ctx`, or an error naming the op as shape-only.
fn const_inputs(
    imp: &Importer,
    ctx: &NodeCtx<'_>,
    n: usize,
) -> Result<Vec<std::sync::Arc<ConstValue>>> {
    (0..n)
        .map(|i| {
            let name = ctx.req_input(i)?;
            imp.konst(name).ok_or_else(|| {
                ctx.unsupported(
                    "only on constants (the shape arithmetic exporters emit), not on a feature map",
                )
            })
        })
        .collect()
}

/// The broadcast shape of two folded operands, charged to the folding
/// budget before anything of that size is allocated.
pub(crate) fn folded_shape(
    imp: &mut Importer,
    ctx: &NodeCtx<'_>,
    a: &[usize],
    b: &[usize],
) -> Result<Vec<usize>> {
    let shape = fold::broadcast_shape(a, b)
        .ok_or_else(|| ctx.malformed(format!("cannot broadcast {a:?} with {b:?}")))?;
    imp.charge(crate::tensor::checked_numel(&shape)?)?;
    Ok(shape)
}

/// `Floor`, `Ceil`, `Round` (half to even), `Not` of a constant.
pub(crate) fn unary(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let [x] = const_inputs(imp, ctx, 1)?
        .try_into()
        .map_err(|_| ctx.malformed("one input"))?;
    imp.charge(x.numel())?;
    let data = match (&x.data, ctx.op) {
        (Data::I64(v), "Not") => Data::I64(v.iter().map(|&b| i64::from(b == 0)).collect()),
        // Rounding an integer leaves it as it is.
        (Data::I64(v), _) => Data::I64(v.clone()),
        (Data::F32(v), "Floor") => Data::F32(v.iter().map(|x| x.floor()).collect()),
        (Data::F32(v), "Ceil") => Data::F32(v.iter().map(|x| x.ceil()).collect()),
        (Data::F32(v), "Round") => Data::F32(v.iter().map(|x| x.round_ties_even()).collect()),
        (Data::F32(v), _) => Data::I64(v.iter().map(|&b| i64::from(b == 0.0)).collect()),
    };
    imp.bind_const(
        ctx,
        ConstValue {
            shape: x.shape.clone(),
            data,
        },
    )
}

/// Comparisons (`Equal`, `Less`, `LessOrEqual`, `Greater`,
/// `GreaterOrEqual`), logic (`And`, `Or`, `Xor`) and `Mod` of two
/// constants, with broadcasting; booleans are 0/1 integers.
pub(crate) fn binary(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let [a, b] = const_inputs(imp, ctx, 2)?
        .try_into()
        .map_err(|_| ctx.malformed("two inputs"))?;
    let shape = folded_shape(imp, ctx, &a.shape, &b.shape)?;
    let ia = fold::broadcast_indices(&shape, &a.shape);
    let ib = fold::broadcast_indices(&shape, &b.shape);
    let pairs = ia.iter().zip(&ib);
    let data = match (&a.data, &b.data, ctx.op) {
        (Data::I64(x), Data::I64(y), "Mod") => {
            let fmod = ctx.int("fmod", 0)? != 0;
            let v = pairs
                .map(|(&i, &j)| {
                    let (p, q) = (x[i], y[j]);
                    let r = p.checked_rem(q)?;
                    // fmod = 0 takes the divisor's sign, as Python's %.
                    Some(if !fmod && r != 0 && (r < 0) != (q < 0) {
                        r + q
                    } else {
                        r
                    })
                })
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| ctx.malformed("integer Mod by zero or overflowing"))?;
            Data::I64(v)
        }
        (_, _, "Mod") => {
            let fmod = ctx.int("fmod", 0)? != 0;
            let (x, y) = (a.to_f32(), b.to_f32());
            let v = pairs.map(|(&i, &j)| {
                let (p, q) = (x[i], y[j]);
                let r = p % q;
                // fmod = 0 takes the divisor's sign, as numpy's mod.
                if !fmod && r != 0.0 && (r < 0.0) != (q < 0.0) {
                    r + q
                } else {
                    r
                }
            });
            Data::F32(v.collect())
        }
        (Data::I64(x), Data::I64(y), op) => {
            let f = cmp_or_logic(op);
            let v = pairs.map(|(&i, &j)| i64::from(f(Some(x[i].cmp(&y[j])), x[i] != 0, y[j] != 0)));
            Data::I64(v.collect())
        }
        (_, _, op) => {
            let f = cmp_or_logic(op);
            let (x, y) = (a.to_f32(), b.to_f32());
            let v = pairs
                .map(|(&i, &j)| i64::from(f(x[i].partial_cmp(&y[j]), x[i] != 0.0, y[j] != 0.0)));
            Data::I64(v.collect())
        }
    };
    imp.bind_const(ctx, ConstValue { shape, data })
}

/// The predicate of a comparison or logic op, from the ordering of its
/// operands (`None` when one is NaN: every comparison is then false) and
/// their truth values.
fn cmp_or_logic(op: &str) -> fn(Option<std::cmp::Ordering>, bool, bool) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op {
        "Equal" => |o, _, _| o == Some(Equal),
        "Less" => |o, _, _| o == Some(Less),
        "LessOrEqual" => |o, _, _| matches!(o, Some(Less | Equal)),
        "Greater" => |o, _, _| o == Some(Greater),
        "GreaterOrEqual" => |o, _, _| matches!(o, Some(Greater | Equal)),
        "And" => |_, a, b| a && b,
        "Or" => |_, a, b| a || b,
        _ => |_, a, b| a != b,
    }
}

/// `Where(cond, x, y)` of constants, with broadcasting over all three.
pub(crate) fn where_(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let [c, x, y] = const_inputs(imp, ctx, 3)?
        .try_into()
        .map_err(|_| ctx.malformed("three inputs"))?;
    let bad = || {
        ctx.malformed(format!(
            "cannot broadcast {:?}, {:?} and {:?}",
            c.shape, x.shape, y.shape
        ))
    };
    let shape = fold::broadcast_shape(&c.shape, &x.shape).ok_or_else(bad)?;
    let shape = fold::broadcast_shape(&shape, &y.shape).ok_or_else(bad)?;
    imp.charge(crate::tensor::checked_numel(&shape)?)?;
    let (ic, ix, iy) = (
        fold::broadcast_indices(&shape, &c.shape),
        fold::broadcast_indices(&shape, &x.shape),
        fold::broadcast_indices(&shape, &y.shape),
    );
    let cond: Vec<bool> = c.to_f32().iter().map(|&v| v != 0.0).collect();
    let pick = |k: usize| cond[ic[k]];
    let data = match (&x.data, &y.data) {
        (Data::I64(a), Data::I64(b)) => Data::I64(
            (0..ic.len())
                .map(|k| if pick(k) { a[ix[k]] } else { b[iy[k]] })
                .collect(),
        ),
        _ => {
            let (a, b) = (x.to_f32(), y.to_f32());
            Data::F32(
                (0..ic.len())
                    .map(|k| if pick(k) { a[ix[k]] } else { b[iy[k]] })
                    .collect(),
            )
        }
    };
    imp.bind_const(ctx, ConstValue { shape, data })
}

/// `Expand` to a constant shape (numpy broadcasting both ways): folded for
/// a constant; a runtime map is broadcast by adding zeros of the expanded
/// axes' sizes (`x + 0` is `x`), so it stays a plain binary op.
pub(crate) fn expand(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let input = ctx.req_input(0)?;
    let target: Vec<i64> = imp.req_const(ctx, 1, "shape")?.to_i64();
    let target = super::value::dims_to_shape(&target, "Expand shape")?;
    let xs = imp.shape_of(ctx, input)?;
    let shape = fold::broadcast_shape(&xs, &target)
        .ok_or_else(|| ctx.malformed(format!("cannot expand {xs:?} to {target:?}")))?;
    let n = crate::tensor::checked_numel(&shape)?;
    match imp.slot(ctx, input)? {
        Slot::Const(c) => {
            imp.charge(n)?;
            let idx = fold::broadcast_indices(&shape, &c.shape);
            let data = fold::pick(&c.data, &idx);
            imp.bind_const(ctx, ConstValue { shape, data })
        }
        Slot::Runtime(x) => {
            if shape == xs {
                return imp.bind_out(ctx, x);
            }
            // Zeros sized only along the axes the input grows on: -0.0,
            // which x + -0.0 leaves as it is, -0.0 included (+0.0 does not).
            let pad = shape.len() - xs.len();
            let zeros_shape: Vec<usize> = shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match i.checked_sub(pad).map(|j| xs[j]) {
                    Some(1) | None => d,
                    Some(_) => 1,
                })
                .collect();
            let count = crate::tensor::checked_numel(&zeros_shape)?;
            imp.charge(count)?;
            let zeros = imp.add_const(
                format!("{}/zeros", ctx.output()?),
                ConstValue::f32(zeros_shape, vec![-0.0; count]),
            )?;
            imp.emit_out(ctx, binary_op(BinaryKind::Add), vec![x, zeros])
        }
    }
}

/// `Tile`: folded for a constant. Otherwise each repeated axis of size 1
/// is broadcast (exporters write nearest up-sampling as a `Tile` of an
/// unsqueezed axis) and each other repeated axis is concatenated from
/// copies; the values are copied, never computed.
pub(crate) fn tile(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    let input = ctx.req_input(0)?;
    let xs = imp.shape_of(ctx, input)?;
    let repeats = imp.req_const(ctx, 1, "repeats")?.to_i64();
    if repeats.len() != xs.len() {
        return Err(ctx.malformed(format!(
            "{} repeats for a rank-{} input",
            repeats.len(),
            xs.len()
        )));
    }
    let repeats = repeats
        .iter()
        .map(|&r| match usize::try_from(r) {
            Ok(0) => Err(ctx.unsupported("a repeat of 0 (an empty tensor)")),
            Ok(r) => Ok(r),
            Err(_) => Err(ctx.malformed(format!("repeat {r} is negative"))),
        })
        .collect::<Result<Vec<usize>>>()?;
    let shape = xs
        .iter()
        .zip(&repeats)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| ctx.malformed("the tiled shape overflows"))?;
    let n = crate::tensor::checked_numel(&shape)?;
    match imp.slot(ctx, input)? {
        Slot::Const(c) => {
            imp.charge(n)?;
            let (out_strides, in_strides) = (fold::strides(&shape), fold::strides(&xs));
            let idx: Vec<usize> = (0..n)
                .map(|i| {
                    (0..shape.len())
                        .map(|a| (i / out_strides[a] % shape[a]) % xs[a] * in_strides[a])
                        .sum()
                })
                .collect();
            let data = fold::pick(&c.data, &idx);
            imp.bind_const(ctx, ConstValue { shape, data })
        }
        Slot::Runtime(mut x) => {
            let out = ctx.output()?.to_string();
            let mut now = xs.clone();
            for (a, &r) in repeats.iter().enumerate() {
                if r > 1 && xs[a] != 1 {
                    x = imp.emit(
                        format!("{}/axis{a}", ctx.name),
                        crate::ir::Op::Concat { axis: a },
                        vec![x; r],
                        format!("{out}/axis{a}"),
                    )?;
                    now[a] *= r;
                }
            }
            if now == shape {
                return imp.bind_out(ctx, x);
            }
            // -0.0 sized only along the broadcast axes, as `Expand` does.
            let zeros_shape: Vec<usize> = (0..shape.len())
                .map(|a| if now[a] == shape[a] { 1 } else { shape[a] })
                .collect();
            let count = crate::tensor::checked_numel(&zeros_shape)?;
            imp.charge(count)?;
            let zeros = imp.add_const(
                format!("{out}/zeros"),
                ConstValue::f32(zeros_shape, vec![-0.0; count]),
            )?;
            imp.emit_out(ctx, binary_op(BinaryKind::Add), vec![x, zeros])
        }
    }
}
