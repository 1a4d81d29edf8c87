//! Windowed and global pooling.
//!
//! Average pooling sums the in-bounds taps in `(ky, kx)` order and divides
//! once. With `count_include_pad` the divisor counts the taps inside the
//! padded extent `[-pad_begin, len + pad_end)`: the part of a `ceil_mode`
//! window that hangs past the end padding is never counted (ONNX/PyTorch).

use rayon::prelude::*;

use crate::error::Result;
use crate::ir::{Pool, PoolKind, ReduceKind, max_nan, min_nan};
use crate::tensor::Tensor;

/// One axis of a pooling window: in-bounds tap positions and the divisor count.
struct Axis {
    len: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: isize,
    pad_end: isize,
}

impl Axis {
    /// Input position of tap `k` of window `o` (may lie in padding).
    fn pos(&self, o: usize, k: usize) -> isize {
        (o * self.stride + k * self.dilation) as isize - self.pad_begin
    }

    fn in_bounds(&self, p: isize) -> bool {
        p >= 0 && p < self.len as isize
    }

    fn in_padded(&self, p: isize) -> bool {
        p >= -self.pad_begin && p < self.len as isize + self.pad_end
    }
}

/// Max or average pooling over H and W.
pub(super) fn pool(p: &Pool, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let s = x.shape();
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let ay = Axis {
        len: h,
        kernel: p.kernel[0],
        stride: p.strides[0],
        dilation: p.dilations[0],
        pad_begin: p.pads[0] as isize,
        pad_end: p.pads[2] as isize,
    };
    let ax = Axis {
        len: w,
        kernel: p.kernel[1],
        stride: p.strides[1],
        dilation: p.dilations[1],
        pad_begin: p.pads[1] as isize,
        pad_end: p.pads[3] as isize,
    };
    let xd = x.data();
    let mut out = vec![0.0f32; out_shape.iter().product()];
    let plane = oh * ow;
    if plane == 0 {
        return Tensor::new(out_shape.to_vec(), out);
    }
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(pi, out_plane)| {
            let in_plane = &xd[pi * h * w..][..h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    out_plane[oy * ow + ox] = window(p.kind, &ay, &ax, oy, ox, in_plane, w);
                }
            }
        });
    Tensor::new(out_shape.to_vec(), out)
}

/// The pooled value of window `(oy, ox)`.
fn window(
    kind: PoolKind,
    ay: &Axis,
    ax: &Axis,
    oy: usize,
    ox: usize,
    plane: &[f32],
    w: usize,
) -> f32 {
    match kind {
        PoolKind::Max => {
            let mut m = f32::NEG_INFINITY;
            for ky in 0..ay.kernel {
                let iy = ay.pos(oy, ky);
                if !ay.in_bounds(iy) {
                    continue;
                }
                for kx in 0..ax.kernel {
                    let ix = ax.pos(ox, kx);
                    if ax.in_bounds(ix) {
                        m = max_nan(m, plane[iy as usize * w + ix as usize]);
                    }
                }
            }
            m
        }
        PoolKind::Average { count_include_pad } => {
            let mut sum = 0.0f32;
            let mut count = 0usize;
            for ky in 0..ay.kernel {
                let iy = ay.pos(oy, ky);
                for kx in 0..ax.kernel {
                    let ix = ax.pos(ox, kx);
                    if ay.in_bounds(iy) && ax.in_bounds(ix) {
                        sum += plane[iy as usize * w + ix as usize];
                        count += 1;
                    } else if count_include_pad && ay.in_padded(iy) && ax.in_padded(ix) {
                        count += 1;
                    }
                }
            }
            if count == 0 { 0.0 } else { sum / count as f32 }
        }
    }
}

/// Reduction across channels at each position, channels in ascending order
/// (a mean is the sum divided by the count, as the GPU kernel computes it).
pub(super) fn channel_reduce(kind: ReduceKind, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let s = x.shape();
    let (n, c) = (s[0], s[1]);
    let plane: usize = s[2..].iter().product();
    let xd = x.data();
    let mut out = vec![0.0f32; n * plane];
    for (i, o) in out.iter_mut().enumerate() {
        let (b, p) = (i / plane, i % plane);
        let at = |k: usize| xd[(b * c + k) * plane + p];
        let rest = 1..c;
        // The first index whose value `better` beats every earlier one.
        let arg = |better: fn(f32, f32) -> bool| {
            let (mut best, mut index) = (at(0), 0);
            for k in 1..c {
                if better(at(k), best) {
                    (best, index) = (at(k), k);
                }
            }
            index as f32
        };
        *o = match kind {
            ReduceKind::Max => rest.fold(at(0), |m, k| max_nan(m, at(k))),
            ReduceKind::Min => rest.fold(at(0), |m, k| min_nan(m, at(k))),
            ReduceKind::Sum => rest.fold(at(0), |a, k| a + at(k)),
            ReduceKind::Mean => rest.fold(at(0), |a, k| a + at(k)) / c as f32,
            ReduceKind::L2 => rest.fold(at(0) * at(0), |a, k| a + at(k) * at(k)).sqrt(),
            // The first NaN wins, as numpy's argmax and argmin have it.
            ReduceKind::ArgMax => arg(|v, best| !best.is_nan() && (v > best || v.is_nan())),
            ReduceKind::ArgMin => arg(|v, best| !best.is_nan() && (v < best || v.is_nan())),
        };
    }
    Tensor::new(out_shape.to_vec(), out)
}

/// Global max / average over every axis after the first two.
pub(super) fn global_pool(kind: PoolKind, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let s = x.shape();
    let inner: usize = s[2..].iter().product();
    let xd = x.data();
    let planes = s[0] * s[1];
    let out: Vec<f32> = (0..planes)
        .into_par_iter()
        .map(|p| {
            let v = &xd[p * inner..(p + 1) * inner];
            match kind {
                PoolKind::Max => v.iter().fold(f32::NEG_INFINITY, |m, &x| max_nan(m, x)),
                PoolKind::Average { .. } => {
                    if inner == 0 {
                        0.0
                    } else {
                        v.iter().fold(0.0f32, |a, &x| a + x) / inner as f32
                    }
                }
            }
        })
        .collect();
    Tensor::new(out_shape.to_vec(), out)
}
