//! Resize over H and W: nearest neighbour, bilinear and bicubic.
//!
//! Coordinates are computed in f32 (as the GPU kernels do). Source positions
//! outside the input are clamped to the edge, as ONNX's reference
//! implementation does by edge-padding its input.

use rayon::prelude::*;

use crate::error::Result;
use crate::ir::{CoordTransform, NearestMode, ResizeMode};
use crate::tensor::Tensor;

/// Input coordinate of output position `x` along one axis.
fn source_coord(coord: CoordTransform, x: usize, scale: f32, in_len: usize, out_len: usize) -> f32 {
    let xf = x as f32;
    match coord {
        CoordTransform::HalfPixel => (xf + 0.5) / scale - 0.5,
        CoordTransform::PytorchHalfPixel => {
            if out_len > 1 {
                (xf + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        // Divided by the output length less one, as onnxruntime and
        // PyTorch do. ONNX's reference implementation divides by the
        // unrounded `in_len * scale - 1`, which differs when `in_len *
        // scale` is not whole; models come from PyTorch and are checked
        // against onnxruntime, so tessera follows those two.
        CoordTransform::AlignCorners => {
            if out_len > 1 {
                xf * (in_len - 1) as f32 / (out_len - 1) as f32
            } else {
                0.0
            }
        }
        CoordTransform::Asymmetric => xf / scale,
    }
}

/// Clamps a possibly out-of-range index to `0..len`.
fn clamp(i: i64, len: usize) -> usize {
    i.clamp(0, len as i64 - 1).max(0) as usize
}

/// Per output position along one axis: the two source indices and the weight of the second.
fn linear_taps(
    coord: CoordTransform,
    scale: f32,
    in_len: usize,
    out_len: usize,
) -> Vec<(usize, usize, f32)> {
    (0..out_len)
        .map(|o| {
            let x = source_coord(coord, o, scale, in_len, out_len);
            let x0 = x.floor();
            let r = x - x0;
            let i0 = x0 as i64;
            (clamp(i0, in_len), clamp(i0 + 1, in_len), r)
        })
        .collect()
}

/// Per output position along one axis: the nearest source index under
/// `mode`. The GPU executor reads this same table, so both pick the same
/// pixels whatever a GPU's division rounds (NVIDIA's `/` is not exactly
/// rounded, and half-pixel ties such as 3.5 / 3.5 - 0.5 fell the other way).
pub(crate) fn nearest_taps(
    coord: CoordTransform,
    mode: NearestMode,
    scale: f32,
    in_len: usize,
    out_len: usize,
) -> Vec<usize> {
    (0..out_len)
        .map(|o| {
            let x = source_coord(coord, o, scale, in_len, out_len);
            let x0 = x.floor();
            let r = x - x0;
            let up = match mode {
                NearestMode::RoundPreferFloor => r > 0.5,
                NearestMode::RoundPreferCeil => r >= 0.5,
                NearestMode::Floor => false,
                NearestMode::Ceil => r > 0.0,
            };
            clamp(x0 as i64 + i64::from(up), in_len)
        })
        .collect()
}

/// Per output position along one axis: the four source indices of a cubic
/// resize (clamped to the map, as edge padding reads them) and their
/// weights, Keys' kernel with parameter `a` as ONNX defines it. With
/// `exclude_outside`, taps outside the map weigh 0 and the rest are scaled
/// to sum to 1. The GPU executor reads this same table.
pub(crate) fn cubic_taps(
    coord: CoordTransform,
    a: f32,
    exclude_outside: bool,
    scale: f32,
    in_len: usize,
    out_len: usize,
) -> Vec<([usize; 4], [f32; 4])> {
    (0..out_len)
        .map(|o| {
            let x = source_coord(coord, o, scale, in_len, out_len);
            let x0 = x.floor();
            let r = x - x0;
            let (r1, s) = (r + 1.0, 1.0 - r);
            let s1 = s + 1.0;
            let mut w = [
                ((a * r1 - 5.0 * a) * r1 + 8.0 * a) * r1 - 4.0 * a,
                ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
                ((a * s1 - 5.0 * a) * s1 + 8.0 * a) * s1 - 4.0 * a,
            ];
            let first = x0 as i64 - 1;
            if exclude_outside {
                for (k, wk) in w.iter_mut().enumerate() {
                    let i = first + k as i64;
                    if i < 0 || i >= in_len as i64 {
                        *wk = 0.0;
                    }
                }
                let sum: f32 = w.iter().sum();
                if sum != 0.0 {
                    for wk in &mut w {
                        *wk /= sum;
                    }
                }
            }
            let idx = [0, 1, 2, 3].map(|k| clamp(first + k, in_len));
            (idx, w)
        })
        .collect()
}

/// Resizes an NCHW map to `out_shape`'s H and W.
pub(super) fn resize(
    x: &Tensor,
    mode: ResizeMode,
    coord: CoordTransform,
    scales: [f32; 2],
    out_shape: &[usize],
) -> Result<Tensor> {
    let s = x.shape();
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let plane = oh * ow;
    let mut out = vec![0.0f32; out_shape.iter().product()];
    if plane == 0 || h == 0 || w == 0 {
        return Tensor::new(out_shape.to_vec(), out);
    }
    let xd = x.data();
    match mode {
        ResizeMode::Nearest(nm) => {
            let ys = nearest_taps(coord, nm, scales[0], h, oh);
            let xs = nearest_taps(coord, nm, scales[1], w, ow);
            out.par_chunks_mut(plane).enumerate().for_each(|(p, o)| {
                let src = &xd[p * h * w..][..h * w];
                for (oy, &iy) in ys.iter().enumerate() {
                    for (ox, &ix) in xs.iter().enumerate() {
                        o[oy * ow + ox] = src[iy * w + ix];
                    }
                }
            });
        }
        ResizeMode::Linear => {
            let ys = linear_taps(coord, scales[0], h, oh);
            let xs = linear_taps(coord, scales[1], w, ow);
            out.par_chunks_mut(plane).enumerate().for_each(|(p, o)| {
                let src = &xd[p * h * w..][..h * w];
                for (oy, &(y0, y1, ry)) in ys.iter().enumerate() {
                    for (ox, &(x0, x1, rx)) in xs.iter().enumerate() {
                        // Along W first, then H, like ONNX's reference.
                        let top = src[y0 * w + x0] * (1.0 - rx) + src[y0 * w + x1] * rx;
                        let bottom = src[y1 * w + x0] * (1.0 - rx) + src[y1 * w + x1] * rx;
                        o[oy * ow + ox] = top * (1.0 - ry) + bottom * ry;
                    }
                }
            });
        }
        ResizeMode::Cubic { a, exclude_outside } => {
            let ys = cubic_taps(coord, a, exclude_outside, scales[0], h, oh);
            let xs = cubic_taps(coord, a, exclude_outside, scales[1], w, ow);
            out.par_chunks_mut(plane).enumerate().for_each(|(p, o)| {
                let src = &xd[p * h * w..][..h * w];
                for (oy, (yi, wy)) in ys.iter().enumerate() {
                    for (ox, (xi, wx)) in xs.iter().enumerate() {
                        // Along W first, then H, each in ascending tap order.
                        let mut acc = 0.0f32;
                        for (&y, &vy) in yi.iter().zip(wy) {
                            let row = &src[y * w..][..w];
                            let mut line = 0.0f32;
                            for (&x, &vx) in xi.iter().zip(wx) {
                                line += row[x] * vx;
                            }
                            acc += line * vy;
                        }
                        o[oy * ow + ox] = acc;
                    }
                }
            });
        }
    }
    Tensor::new(out_shape.to_vec(), out)
}
