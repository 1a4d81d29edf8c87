//! Convolution and transposed convolution.
//!
//! Both accumulate every output element over the taps in `(ci, ky, kx)`
//! order, skipping taps that land in padding, starting from zero; bias, the
//! residual and the activation follow in that order. The loops run whole
//! output rows per tap so the innermost loop walks contiguous memory.

use rayon::prelude::*;

use crate::error::Result;
use crate::ir::{Conv, ConvTranspose};
use crate::tensor::Tensor;

/// Output positions `o` in `0..out_len` whose input position `o * stride + offset`
/// lies in `0..in_len`, as a half-open range.
pub(super) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    offset: isize,
) -> (usize, usize) {
    let s = stride as isize;
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + s - 1) / s
    };
    let last = in_len as isize - 1 - offset;
    let hi = if last < 0 {
        0
    } else {
        (last / s + 1).min(out_len as isize)
    };
    let lo = lo as usize;
    let hi = hi.max(0) as usize;
    (lo.min(hi), hi)
}

/// `dims4` of a shape already checked to be rank 4.
fn dims4(s: &[usize]) -> [usize; 4] {
    let mut d = [0; 4];
    for (o, i) in d.iter_mut().zip(s) {
        *o = *i;
    }
    d
}

/// Direct convolution, see the module doc for the summation order.
pub(super) fn conv(
    c: &Conv,
    x: &Tensor,
    residual: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let [_, ci_total, h, w] = dims4(x.shape());
    let [_, cg, kh, kw] = dims4(c.weight.shape());
    let [_, m_total, oh, ow] = dims4(out_shape);
    let [sh, sw] = c.strides;
    let [dh, dw] = c.dilations;
    let (pt, pl) = (c.pads[0] as isize, c.pads[1] as isize);
    let mg = m_total / c.group.max(1);
    let weight = c.weight.data();
    let xd = x.data();
    let plane = oh * ow;
    let mut out = vec![0.0f32; out_shape.iter().product()];
    if plane == 0 {
        return Tensor::new(out_shape.to_vec(), out);
    }
    // Valid output-x range and input-x offset per kx: they depend on kx only.
    let x_ranges: Vec<(usize, usize, isize)> = (0..kw)
        .map(|kx| {
            let off = (kx * dw) as isize - pl;
            let (lo, hi) = valid_range(ow, w, sw, off);
            (lo, hi, off)
        })
        .collect();
    let taps = cg * kh * kw;

    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(p, out_plane)| {
            let (n, m) = (p / m_total, p % m_total);
            let g = m / mg.max(1);
            let w_m = &weight[m * taps..(m + 1) * taps];
            for oy in 0..oh {
                let row = &mut out_plane[oy * ow..(oy + 1) * ow];
                for ci in 0..cg {
                    let cin = g * cg + ci;
                    let in_plane = &xd[(n * ci_total + cin) * h * w..][..h * w];
                    for ky in 0..kh {
                        let iy = (oy * sh + ky * dh) as isize - pt;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let in_row = &in_plane[iy as usize * w..][..w];
                        let w_row = &w_m[(ci * kh + ky) * kw..][..kw];
                        for (&wv, &(lo, hi, off)) in w_row.iter().zip(&x_ranges) {
                            if lo >= hi {
                                continue;
                            }
                            // lo * sw + off >= 0 by construction of the range.
                            let start = (lo * sw) as isize + off;
                            let start = start as usize;
                            if sw == 1 {
                                let src = &in_row[start..start + (hi - lo)];
                                for (o, &i) in row[lo..hi].iter_mut().zip(src) {
                                    *o += wv * i;
                                }
                            } else {
                                for (k, o) in row[lo..hi].iter_mut().enumerate() {
                                    *o += wv * in_row[start + k * sw];
                                }
                            }
                        }
                    }
                }
                let res_row = residual.map(|r| &r.data()[p * plane + oy * ow..][..ow]);
                epilogue(
                    row,
                    m,
                    c.bias.as_deref().map(Vec::as_slice),
                    res_row,
                    &c.activation,
                );
            }
        });
    Tensor::new(out_shape.to_vec(), out)
}

/// `act(acc + bias + residual)` for one output row of channel `m`.
fn epilogue(
    row: &mut [f32],
    m: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: &crate::ir::Activation,
) {
    if let Some(b) = bias {
        let b = b[m];
        row.iter_mut().for_each(|v| *v += b);
    }
    if let Some(r) = residual {
        row.iter_mut().zip(r).for_each(|(v, r)| *v += r);
    }
    if !act.is_identity() {
        row.iter_mut().for_each(|v| *v = act.apply(*v, m));
    }
}

/// Transposed convolution. Written as a scatter from input rows, but each
/// output element still receives its terms in `(ci, ky, kx)` order: for a
/// fixed tap, at most one input position maps onto a given output position.
pub(super) fn conv_transpose(c: &ConvTranspose, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let [_, ci_total, h, w] = dims4(x.shape());
    let [_, mg, kh, kw] = dims4(c.weight.shape());
    let [_, m_total, oh, ow] = dims4(out_shape);
    let [sh, sw] = c.strides;
    let [dh, dw] = c.dilations;
    let (pt, pl) = (c.pads[0] as isize, c.pads[1] as isize);
    let cg = ci_total / c.group.max(1);
    let weight = c.weight.data();
    let xd = x.data();
    let plane = oh * ow;
    let mut out = vec![0.0f32; out_shape.iter().product()];
    if plane == 0 {
        return Tensor::new(out_shape.to_vec(), out);
    }
    // For each kx: the input-x range landing inside the output, and its offset.
    let x_ranges: Vec<(usize, usize, isize)> = (0..kw)
        .map(|kx| {
            let off = (kx * dw) as isize - pl;
            let (lo, hi) = valid_range(w, ow, sw, off);
            (lo, hi, off)
        })
        .collect();

    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(p, out_plane)| {
            let (n, m) = (p / m_total, p % m_total);
            let (g, mm) = (m / mg.max(1), m % mg.max(1));
            for ci in 0..cg {
                let cin = g * cg + ci;
                let in_plane = &xd[(n * ci_total + cin) * h * w..][..h * w];
                let w_k = &weight[(cin * mg + mm) * kh * kw..][..kh * kw];
                for ky in 0..kh {
                    let w_row = &w_k[ky * kw..][..kw];
                    for iy in 0..h {
                        let oy = (iy * sh + ky * dh) as isize - pt;
                        if oy < 0 || oy >= oh as isize {
                            continue;
                        }
                        let out_row = &mut out_plane[oy as usize * ow..][..ow];
                        let in_row = &in_plane[iy * w..][..w];
                        for (&wv, &(lo, hi, off)) in w_row.iter().zip(&x_ranges) {
                            for (ix, &xv) in in_row.iter().enumerate().take(hi).skip(lo) {
                                let ox = ((ix * sw) as isize + off) as usize;
                                out_row[ox] += wv * xv;
                            }
                        }
                    }
                }
            }
            for oy in 0..oh {
                let row = &mut out_plane[oy * ow..(oy + 1) * ow];
                epilogue(
                    row,
                    m,
                    c.bias.as_deref().map(Vec::as_slice),
                    None,
                    &c.activation,
                );
            }
        });
    Tensor::new(out_shape.to_vec(), out)
}
