//! Data movement: concatenation, transposition, padding, cropping, DepthToSpace.

use super::elementwise::Odometer;
use crate::error::Result;
use crate::ir::{BorderMode, DepthToSpaceMode};
use crate::tensor::Tensor;

/// Concatenation along `axis`.
pub(super) fn concat(inputs: &[&Tensor], axis: usize, out_shape: &[usize]) -> Result<Tensor> {
    let outer: usize = out_shape[..axis].iter().product();
    let inner: usize = out_shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for o in 0..outer {
        for t in inputs {
            let chunk = t.shape()[axis] * inner;
            out.extend_from_slice(&t.data()[o * chunk..(o + 1) * chunk]);
        }
    }
    Tensor::new(out_shape.to_vec(), out)
}

/// Axis permutation: `out.dim(i) = in.dim(perm[i])`.
pub(super) fn transpose(x: &Tensor, perm: &[usize], out_shape: &[usize]) -> Result<Tensor> {
    let in_shape = x.shape();
    let mut in_strides = vec![1usize; in_shape.len()];
    for i in (0..in_shape.len().saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * in_shape[i + 1];
    }
    // Stride in the input of a step along each output axis.
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n > 0 {
        let rank = out_shape.len();
        let inner = out_shape.last().copied().unwrap_or(1);
        let inner_stride = strides.last().copied().unwrap_or(0);
        let outer_shape = &out_shape[..rank.saturating_sub(1)];
        let xd = x.data();
        for r in 0..n / inner {
            let idx = Odometer::coords(outer_shape, r);
            let base: usize = idx.iter().zip(&strides).map(|(c, s)| c * s).sum();
            out.extend((0..inner).map(|j| xd[base + j * inner_stride]));
        }
    }
    Tensor::new(out_shape.to_vec(), out)
}

/// Constant padding of H and W by `[top, left, bottom, right]`.
pub(super) fn pad(x: &Tensor, pads: [usize; 4], value: f32, out_shape: &[usize]) -> Result<Tensor> {
    let s = x.shape();
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = vec![value; out_shape.iter().product()];
    for p in 0..s[0] * s[1] {
        for y in 0..h {
            let src = &x.data()[(p * h + y) * w..][..w];
            let dst = (p * oh + y + pads[0]) * ow + pads[1];
            out[dst..dst + w].copy_from_slice(src);
        }
    }
    Tensor::new(out_shape.to_vec(), out)
}

/// Reflect or edge padding of H and W.
pub(super) fn border_pad(
    x: &Tensor,
    pads: [usize; 4],
    mode: BorderMode,
    out_shape: &[usize],
) -> Result<Tensor> {
    let s = x.shape();
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for p in 0..s[0] * s[1] {
        for oy in 0..oh {
            let iy = border_index(oy as i64 - pads[0] as i64, h, mode);
            for ox in 0..ow {
                let ix = border_index(ox as i64 - pads[1] as i64, w, mode);
                out.push(x.data()[(p * h + iy) * w + ix]);
            }
        }
    }
    Tensor::new(out_shape.to_vec(), out)
}

/// The input index a padded position `i` of an axis of length `n` reads
/// (shape inference guarantees a reflect pad < n, an edge pad n ≥ 1).
fn border_index(i: i64, n: usize, mode: BorderMode) -> usize {
    let n = n as i64;
    let j = match mode {
        BorderMode::Reflect if i < 0 => -i,
        BorderMode::Reflect if i >= n => 2 * n - 2 - i,
        BorderMode::Edge => i.clamp(0, n - 1),
        BorderMode::Reflect => i,
    };
    j.clamp(0, n - 1) as usize
}

/// Spatial crop: `out[n, c, y, x] = in[n, c, y + offset[0], x + offset[1]]`.
pub(super) fn crop(x: &Tensor, offset: [usize; 2], out_shape: &[usize]) -> Result<Tensor> {
    let s = x.shape();
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for p in 0..s[0] * s[1] {
        for y in 0..oh {
            let src = (p * h + y + offset[0]) * w + offset[1];
            out.extend_from_slice(&x.data()[src..src + ow]);
        }
    }
    Tensor::new(out_shape.to_vec(), out)
}

/// Channels `start .. start + len` of an NCHW map.
pub(super) fn channel_slice(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let s = x.shape();
    let (c, plane) = (s[1], s[2] * s[3]);
    let mut out = Vec::with_capacity(s[0] * len * plane);
    for n in 0..s[0] {
        let from = (n * c + start) * plane;
        out.extend_from_slice(&x.data()[from..from + len * plane]);
    }
    Tensor::new(vec![s[0], len, s[2], s[3]], out)
}

/// DepthToSpace: DCR reads channel `(i * b + j) * C' + c`, CRD reads `c * b² + i * b + j`
/// for output `(c, y * b + i, x * b + j)`.
pub(super) fn depth_to_space(
    x: &Tensor,
    b: usize,
    mode: DepthToSpaceMode,
    out_shape: &[usize],
) -> Result<Tensor> {
    let s = x.shape();
    let (cin, h, w) = (s[1], s[2], s[3]);
    let (cout, oh, ow) = (out_shape[1], out_shape[2], out_shape[3]);
    let xd = x.data();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for n in 0..s[0] {
        for c in 0..cout {
            for oy in 0..oh {
                let (y, i) = (oy / b, oy % b);
                for ox in 0..ow {
                    let (xx, j) = (ox / b, ox % b);
                    let ch = match mode {
                        DepthToSpaceMode::Dcr => (i * b + j) * cout + c,
                        DepthToSpaceMode::Crd => c * b * b + i * b + j,
                    };
                    out.push(xd[((n * cin + ch) * h + y) * w + xx]);
                }
            }
        }
    }
    Tensor::new(out_shape.to_vec(), out)
}
