//! Elementwise ops: activations, broadcasting binary ops, per-channel affine.

use rayon::prelude::*;

use crate::error::Result;
use crate::ir::{Activation, BinaryKind};
use crate::tensor::Tensor;

/// Element strides of `shape` read as if broadcast to `out` (numpy rules,
/// right-aligned): broadcast axes get stride 0. `shape` must broadcast to `out`.
pub(super) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let mut acc = 1;
    for (i, &d) in shape.iter().enumerate().rev() {
        let o = out.len() - shape.len() + i;
        strides[o] = if d == 1 { 0 } else { acc };
        acc *= d;
    }
    strides
}

/// Row-major coordinate helpers.
pub(super) struct Odometer;

impl Odometer {
    /// The coordinates of flat index `i` in `shape`.
    pub(super) fn coords(shape: &[usize], mut i: usize) -> Vec<usize> {
        let mut c = vec![0; shape.len()];
        for (ci, &d) in c.iter_mut().zip(shape).rev() {
            if d > 0 {
                *ci = i % d;
                i /= d;
            }
        }
        c
    }
}

/// Channel axis of a tensor for per-channel parameters: axis 1, or none below rank 2.
fn channels_and_inner(shape: &[usize], len: usize) -> (usize, usize) {
    if shape.len() >= 2 {
        (shape[1], shape[2..].iter().product())
    } else {
        (1, len)
    }
}

/// Applies `act` in place to a tensor of `shape` (PRelu slopes per axis-1 channel).
pub(super) fn activate(act: &Activation, shape: &[usize], data: &mut [f32]) {
    if act.is_identity() {
        return;
    }
    let (channels, inner) = channels_and_inner(shape, data.len());
    if inner == 0 || channels == 0 {
        return;
    }
    data.par_chunks_mut(inner)
        .with_min_len((4096 / inner).max(1))
        .enumerate()
        .for_each(|(i, plane)| {
            let c = i % channels;
            plane.iter_mut().for_each(|v| *v = act.apply(*v, c));
        });
}

/// `activation(a op b)` with numpy broadcasting to `out_shape`.
pub(super) fn binary(
    kind: BinaryKind,
    activation: &Activation,
    a: &Tensor,
    b: &Tensor,
    out_shape: &[usize],
) -> Result<Tensor> {
    let n: usize = out_shape.iter().product();
    let mut out = vec![0.0f32; n];
    if a.shape() == out_shape && b.shape() == out_shape {
        out.par_iter_mut()
            .with_min_len(4096)
            .zip(a.data().par_iter().zip(b.data()))
            .for_each(|(o, (&x, &y))| *o = kind.apply(x, y));
    } else if n > 0 {
        let rank = out_shape.len();
        let sa = broadcast_strides(a.shape(), out_shape);
        let sb = broadcast_strides(b.shape(), out_shape);
        let inner = out_shape.last().copied().unwrap_or(1).max(1);
        let (ia, ib) = (
            sa.last().copied().unwrap_or(0),
            sb.last().copied().unwrap_or(0),
        );
        let outer_shape = &out_shape[..rank.saturating_sub(1)];
        let (ad, bd) = (a.data(), b.data());
        out.par_chunks_mut(inner)
            .with_min_len((4096 / inner).max(1))
            .enumerate()
            .for_each(|(r, row)| {
                let idx = Odometer::coords(outer_shape, r);
                let ao: usize = idx.iter().zip(&sa).map(|(c, s)| c * s).sum();
                let bo: usize = idx.iter().zip(&sb).map(|(c, s)| c * s).sum();
                for (j, o) in row.iter_mut().enumerate() {
                    *o = kind.apply(ad[ao + j * ia], bd[bo + j * ib]);
                }
            });
    }
    activate(activation, out_shape, &mut out);
    Tensor::new(out_shape.to_vec(), out)
}

/// `x * scale[c] + shift[c]` over axis-1 channels.
pub(super) fn channel_affine(x: &Tensor, scale: &[f32], shift: &[f32]) -> Tensor {
    let mut y = x.clone();
    let (channels, inner) = channels_and_inner(x.shape(), x.numel());
    if inner > 0 && channels > 0 {
        y.data_mut()
            .par_chunks_mut(inner)
            .with_min_len((4096 / inner).max(1))
            .enumerate()
            .for_each(|(i, plane)| {
                let c = i % channels;
                let (s, t) = (scale[c], shift[c]);
                plane.iter_mut().for_each(|v| *v = *v * s + t);
            });
    }
    y
}
