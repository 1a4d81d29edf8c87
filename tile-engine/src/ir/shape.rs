//! Shape inference: the output shape of each op from its input shapes.

use super::op::{BorderMode, Op, Pool};

type R<T> = std::result::Result<T, String>;

fn nchw(s: &[usize], what: &str) -> R<[usize; 4]> {
    match s {
        [n, c, h, w] => Ok([*n, *c, *h, *w]),
        _ => Err(format!("{what} must be rank 4 (NCHW), got {s:?}")),
    }
}

fn arity(inputs: &[&[usize]], n: usize) -> R<()> {
    if inputs.len() != n {
        return Err(format!("expects {n} inputs, got {}", inputs.len()));
    }
    Ok(())
}

/// Output length of a conv/pool window along one axis.
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    pad_begin: usize,
    pad_end: usize,
    dilation: usize,
    ceil_mode: bool,
) -> R<usize> {
    if stride == 0 || dilation == 0 || kernel == 0 {
        return Err("kernel, stride and dilation must be positive".into());
    }
    let eff = dilation
        .checked_mul(kernel - 1)
        .and_then(|e| e.checked_add(1))
        .ok_or("kernel × dilation overflows")?;
    let padded = input
        .checked_add(pad_begin)
        .and_then(|p| p.checked_add(pad_end))
        .ok_or("padded input overflows")?;
    // With ceil_mode a window may overhang the padded input's end, the
    // first one included: ONNX and PyTorch give one output for a 3-wide
    // window, stride 2, over 2 values (out = ceil((2 − 3) / 2) + 1).
    let reach = if ceil_mode {
        padded
            .checked_add(stride - 1)
            .ok_or("padded input overflows")?
    } else {
        padded
    };
    if reach < eff {
        return Err(if ceil_mode {
            format!(
                "window {eff} overhangs padded input {padded} by more than stride {stride} less one"
            )
        } else {
            format!("window {eff} larger than padded input {padded}")
        });
    }
    let span = padded.saturating_sub(eff);
    let mut out = if ceil_mode {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    // ONNX/PyTorch: with ceil_mode the last window must start inside the input or left pad.
    if ceil_mode && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Ok(out)
}

/// Numpy broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("cannot broadcast {a:?} with {b:?}")),
        };
    }
    Ok(out)
}

fn pool_out(p: &Pool, x: [usize; 4]) -> R<Vec<usize>> {
    let oh = window_out(
        x[2],
        p.kernel[0],
        p.strides[0],
        p.pads[0],
        p.pads[2],
        p.dilations[0],
        p.ceil_mode,
    )?;
    let ow = window_out(
        x[3],
        p.kernel[1],
        p.strides[1],
        p.pads[1],
        p.pads[3],
        p.dilations[1],
        p.ceil_mode,
    )?;
    Ok(vec![x[0], x[1], oh, ow])
}

/// Infers the output shape of `op` applied to inputs of `inputs` shapes.
/// Ops whose output is stated explicitly (Reshape, Resize) are rejected here.
pub fn infer(op: &Op, inputs: &[&[usize]]) -> R<Vec<usize>> {
    match op {
        Op::Conv(c) => {
            if inputs.is_empty() || inputs.len() > 2 {
                return Err(format!("expects 1 or 2 inputs, got {}", inputs.len()));
            }
            let x = nchw(inputs[0], "input")?;
            let w = nchw(c.weight.shape(), "weight")?;
            if c.group == 0 || x[1] % c.group != 0 || w[0] % c.group != 0 || w[1] * c.group != x[1]
            {
                return Err(format!(
                    "input channels {} / weight {w:?} / group {}",
                    x[1], c.group
                ));
            }
            if let Some(b) = &c.bias
                && b.len() != w[0]
            {
                return Err(format!(
                    "bias has {} values for {} output channels",
                    b.len(),
                    w[0]
                ));
            }
            let oh = window_out(
                x[2],
                w[2],
                c.strides[0],
                c.pads[0],
                c.pads[2],
                c.dilations[0],
                false,
            )?;
            let ow = window_out(
                x[3],
                w[3],
                c.strides[1],
                c.pads[1],
                c.pads[3],
                c.dilations[1],
                false,
            )?;
            let out = vec![x[0], w[0], oh, ow];
            if inputs.len() == 2 && inputs[1] != out.as_slice() {
                return Err(format!(
                    "residual {:?} differs from output {out:?}",
                    inputs[1]
                ));
            }
            Ok(out)
        }
        Op::ConvTranspose(c) => {
            arity(inputs, 1)?;
            let x = nchw(inputs[0], "input")?;
            let w = nchw(c.weight.shape(), "weight")?;
            if c.group == 0 || w[0] != x[1] || x[1] % c.group != 0 {
                return Err(format!(
                    "input channels {} / weight {w:?} / group {}",
                    x[1], c.group
                ));
            }
            let m = w[1] * c.group;
            let dim = |i: usize, k: usize, a: usize| -> R<usize> {
                let full =
                    c.strides[a] * (i - 1) + c.output_padding[a] + (k - 1) * c.dilations[a] + 1;
                full.checked_sub(c.pads[a] + c.pads[a + 2])
                    .filter(|&v| v > 0)
                    .ok_or_else(|| "pads larger than the output".to_string())
            };
            if x[2] == 0 || x[3] == 0 {
                return Err("empty input".into());
            }
            Ok(vec![x[0], m, dim(x[2], w[2], 0)?, dim(x[3], w[3], 1)?])
        }
        Op::Pool(p) => {
            arity(inputs, 1)?;
            pool_out(p, nchw(inputs[0], "input")?)
        }
        Op::GlobalPool(_) => {
            arity(inputs, 1)?;
            let x = inputs[0];
            if x.len() < 3 {
                return Err(format!("needs rank ≥ 3, got {x:?}"));
            }
            let mut out = x[..2].to_vec();
            out.extend(std::iter::repeat_n(1, x.len() - 2));
            Ok(out)
        }
        Op::ChannelReduce(_) => {
            arity(inputs, 1)?;
            let x = inputs[0];
            if x.len() < 2 || x[1] == 0 {
                return Err(format!("needs rank ≥ 2 and channels, got {x:?}"));
            }
            let mut out = x.to_vec();
            out[1] = 1;
            Ok(out)
        }
        Op::Dense { weight, bias, .. } => {
            arity(inputs, 1)?;
            let [k, m] = match weight.shape() {
                [k, m] => [*k, *m],
                s => return Err(format!("weight must be [K, M], got {s:?}")),
            };
            let x = inputs[0];
            if x.len() != 2 || x[1] != k {
                return Err(format!("input {x:?} does not match weight [{k}, {m}]"));
            }
            if let Some(b) = bias
                && b.len() != m
            {
                return Err(format!("bias has {} values for {m} outputs", b.len()));
            }
            Ok(vec![x[0], m])
        }
        Op::MatMul => {
            arity(inputs, 2)?;
            let (a, b) = (inputs[0], inputs[1]);
            if a.is_empty() || b.is_empty() {
                return Err("MatMul of a scalar".into());
            }
            let a2: Vec<usize> = if a.len() == 1 {
                vec![1, a[0]]
            } else {
                a.to_vec()
            };
            let b2: Vec<usize> = if b.len() == 1 {
                vec![b[0], 1]
            } else {
                b.to_vec()
            };
            let (ar, br) = (a2.len(), b2.len());
            if a2[ar - 1] != b2[br - 2] {
                return Err(format!("inner dimensions differ: {a:?} × {b:?}"));
            }
            let mut out = broadcast(&a2[..ar - 2], &b2[..br - 2])?;
            if a.len() > 1 {
                out.push(a2[ar - 2]);
            }
            if b.len() > 1 {
                out.push(b2[br - 1]);
            }
            Ok(out)
        }
        Op::Activation(_) => {
            arity(inputs, 1)?;
            Ok(inputs[0].to_vec())
        }
        Op::Binary { .. } => {
            arity(inputs, 2)?;
            broadcast(inputs[0], inputs[1])
        }
        Op::ChannelAffine { scale, shift } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            if x.len() < 2 || scale.len() != x[1] || shift.len() != x[1] {
                return Err(format!("{} scales for input {x:?}", scale.len()));
            }
            Ok(x.to_vec())
        }
        Op::Concat { axis } => {
            let first = inputs.first().ok_or("needs at least one input")?;
            if *axis >= first.len() {
                return Err(format!("axis {axis} out of range for {first:?}"));
            }
            let mut out = first.to_vec();
            out[*axis] = 0;
            for s in inputs {
                if s.len() != first.len()
                    || s.iter()
                        .zip(first.iter())
                        .enumerate()
                        .any(|(i, (a, b))| i != *axis && a != b)
                {
                    return Err(format!(
                        "cannot concatenate {first:?} and {s:?} on axis {axis}"
                    ));
                }
                out[*axis] += s[*axis];
            }
            Ok(out)
        }
        Op::Transpose { perm } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            let mut seen = vec![false; x.len()];
            if perm.len() != x.len()
                || perm
                    .iter()
                    .any(|&p| p >= x.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!("perm {perm:?} invalid for {x:?}"));
            }
            Ok(perm.iter().map(|&p| x[p]).collect())
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            arity(inputs, 1)?;
            if *axis >= inputs[0].len() {
                return Err(format!("axis {axis} out of range for {:?}", inputs[0]));
            }
            Ok(inputs[0].to_vec())
        }
        Op::LayerNorm {
            axis, scale, bias, ..
        } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            let len: usize = x.get(*axis..).map_or(0, |d| d.iter().product());
            if *axis >= x.len() || len == 0 || scale.len() != len || bias.len() != len {
                return Err(format!(
                    "layer norm from axis {axis} of {x:?} with {} scales and {} biases",
                    scale.len(),
                    bias.len()
                ));
            }
            Ok(x.to_vec())
        }
        Op::InstanceNorm { scale, bias, .. } => {
            arity(inputs, 1)?;
            let x = nchw(inputs[0], "input")?;
            if scale.len() != x[1] || bias.len() != x[1] || x[2] * x[3] == 0 {
                return Err(format!(
                    "{} scales and {} biases for {:?}",
                    scale.len(),
                    bias.len(),
                    inputs[0]
                ));
            }
            Ok(inputs[0].to_vec())
        }
        Op::Lrn { size, .. } => {
            arity(inputs, 1)?;
            if *size == 0 {
                return Err("size must be positive".into());
            }
            nchw(inputs[0], "input")?;
            Ok(inputs[0].to_vec())
        }
        Op::BorderPad { pads, mode } => {
            arity(inputs, 1)?;
            let x = nchw(inputs[0], "input")?;
            // Reflect mirrors without the edge: a pad must be shorter than the axis.
            let limit = |d: usize| match mode {
                BorderMode::Reflect => d.saturating_sub(1),
                BorderMode::Edge => usize::MAX * usize::from(d > 0),
            };
            if pads[0].max(pads[2]) > limit(x[2]) || pads[1].max(pads[3]) > limit(x[3]) {
                return Err(format!("{mode:?} pads {pads:?} do not fit {:?}", inputs[0]));
            }
            padded(x, pads)
        }
        Op::Pad { pads, .. } => {
            arity(inputs, 1)?;
            let x = nchw(inputs[0], "input")?;
            padded(x, pads)
        }
        Op::DepthToSpace { blocksize, .. } => {
            arity(inputs, 1)?;
            let x = nchw(inputs[0], "input")?;
            let b = *blocksize;
            if b == 0 || x[1] % (b * b) != 0 {
                return Err(format!(
                    "channels {} not divisible by blocksize² {}",
                    x[1],
                    b * b
                ));
            }
            Ok(vec![x[0], x[1] / (b * b), x[2] * b, x[3] * b])
        }
        Op::ChannelSlice { start, len } => {
            arity(inputs, 1)?;
            let x = nchw(inputs[0], "input")?;
            if *len == 0 || start + len > x[1] {
                return Err(format!(
                    "channels {start}..{} outside the {} of {:?}",
                    start + len,
                    x[1],
                    inputs[0]
                ));
            }
            Ok(vec![x[0], *len, x[2], x[3]])
        }
        Op::Reshape | Op::Resize { .. } | Op::Crop { .. } => {
            Err("output shape must be given explicitly".into())
        }
    }
}

/// Checks a caller-stated output shape for ops that take one.
pub fn check_explicit(op: &Op, inputs: &[&[usize]], out: &[usize]) -> R<()> {
    match op {
        Op::Reshape => {
            arity(inputs, 1)?;
            let a: usize = inputs[0].iter().product();
            let b: usize = out.iter().product();
            if a != b {
                return Err(format!("cannot reshape {:?} to {out:?}", inputs[0]));
            }
            Ok(())
        }
        Op::Resize { .. } => {
            arity(inputs, 1)?;
            let x = nchw(inputs[0], "input")?;
            let o = nchw(out, "output")?;
            if x[0] != o[0] || x[1] != o[1] || o[2] == 0 || o[3] == 0 {
                return Err(format!("resize {:?} to {out:?} changes N or C", inputs[0]));
            }
            Ok(())
        }
        Op::Crop { offset } => {
            arity(inputs, 1)?;
            let x = nchw(inputs[0], "input")?;
            let o = nchw(out, "output")?;
            let inside = |axis: usize| {
                offset[axis]
                    .checked_add(o[axis + 2])
                    .is_some_and(|end| end <= x[axis + 2])
            };
            if x[0] != o[0] || x[1] != o[1] || !inside(0) || !inside(1) {
                return Err(format!(
                    "crop {out:?} at {offset:?} outside {:?}",
                    inputs[0]
                ));
            }
            Ok(())
        }
        _ => {
            let inferred = infer(op, inputs)?;
            if inferred != out {
                return Err(format!(
                    "stated shape {out:?} differs from inferred {inferred:?}"
                ));
            }
            Ok(())
        }
    }
}

/// An NCHW shape grown by `[top, left, bottom, right]` pads.
fn padded(x: [usize; 4], pads: &[usize; 4]) -> R<Vec<usize>> {
    let grow = |d: usize, a: usize, b: usize| {
        d.checked_add(a)
            .and_then(|d| d.checked_add(b))
            .ok_or_else(|| format!("pads {pads:?} overflow the map {x:?}"))
    };
    Ok(vec![
        x[0],
        x[1],
        grow(x[2], pads[0], pads[2])?,
        grow(x[3], pads[1], pads[3])?,
    ])
}

#[cfg(test)]
mod tests {
    use super::window_out;

    #[test]
    fn a_ceil_mode_window_may_overhang_a_map_smaller_than_itself() {
        // onnxruntime and PyTorch: MaxPool(3, stride 2, ceil_mode) over 2
        // values gives one output; over 1 value none, which is an error.
        assert_eq!(window_out(2, 3, 2, 0, 0, 1, true), Ok(1));
        assert_eq!(window_out(1, 2, 2, 0, 0, 1, true), Ok(1));
        assert!(window_out(1, 3, 2, 0, 0, 1, true).is_err());
        assert!(window_out(2, 3, 2, 0, 0, 1, false).is_err());
        assert_eq!(window_out(5, 3, 2, 0, 0, 1, true), Ok(2));
        assert_eq!(window_out(5, 3, 2, 0, 0, 1, false), Ok(2));
        assert_eq!(window_out(6, 3, 2, 0, 0, 1, true), Ok(3));
    }
}
