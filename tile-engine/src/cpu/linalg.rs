//! Dense layers and general matrix products. Every output element sums its
//! `k` terms in ascending order, starting from zero; the bias follows.

use rayon::prelude::*;

use super::elementwise::{Odometer, activate, broadcast_strides};
use crate::error::Result;
use crate::ir::Activation;
use crate::tensor::Tensor;

/// `out[r, :] = sum_k a[r, k] * b[k, :]` for row-major `a: [rows, k]`, `b: [k, cols]`.
fn matmul_block(a: &[f32], b: &[f32], out: &mut [f32], k: usize, cols: usize) {
    if cols == 0 {
        return;
    }
    for (a_row, out_row) in a.chunks(k.max(1)).zip(out.chunks_mut(cols)) {
        for (kk, &av) in a_row.iter().enumerate().take(k) {
            let b_row = &b[kk * cols..(kk + 1) * cols];
            for (o, &bv) in out_row.iter_mut().zip(b_row) {
                *o += av * bv;
            }
        }
    }
}

/// `activation(x · W + b)` for `x: [N, K]`, `W: [K, M]`.
pub(super) fn dense(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&[f32]>,
    activation: &Activation,
) -> Result<Tensor> {
    let (n, k) = (x.shape()[0], x.shape()[1]);
    let m = weight.shape()[1];
    let mut out = vec![0.0f32; n * m];
    if m > 0 {
        out.par_chunks_mut(m).enumerate().for_each(|(r, row)| {
            matmul_block(&x.data()[r * k..(r + 1) * k], weight.data(), row, k, m);
            if let Some(b) = bias {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        });
    }
    activate(activation, &[n, m], &mut out);
    Tensor::new(vec![n, m], out)
}

/// Numpy `matmul`: rank-1 operands are promoted (and the promoted axis
/// dropped from the result), batch axes broadcast.
pub(super) fn matmul(a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let a_shape: Vec<usize> = if a.shape().len() == 1 {
        vec![1, a.shape()[0]]
    } else {
        a.shape().to_vec()
    };
    let b_shape: Vec<usize> = if b.shape().len() == 1 {
        vec![b.shape()[0], 1]
    } else {
        b.shape().to_vec()
    };
    let (ar, br) = (a_shape.len(), b_shape.len());
    let (rows, k, cols) = (a_shape[ar - 2], a_shape[ar - 1], b_shape[br - 1]);
    let batch = crate::ir::broadcast(&a_shape[..ar - 2], &b_shape[..br - 2])
        .map_err(crate::error::Error::Shape)?;
    let sa = broadcast_strides(&a_shape[..ar - 2], &batch);
    let sb = broadcast_strides(&b_shape[..br - 2], &batch);
    let block = rows * cols;
    let mut out = vec![0.0f32; batch.iter().product::<usize>() * block];
    if block > 0 {
        out.par_chunks_mut(block).enumerate().for_each(|(i, o)| {
            let idx = Odometer::coords(&batch, i);
            let ao: usize = idx.iter().zip(&sa).map(|(c, s)| c * s).sum();
            let bo: usize = idx.iter().zip(&sb).map(|(c, s)| c * s).sum();
            let a_blk = &a.data()[ao * rows * k..][..rows * k];
            let b_blk = &b.data()[bo * k * cols..][..k * cols];
            matmul_block(a_blk, b_blk, o, k, cols);
        });
    }
    Tensor::new(out_shape.to_vec(), out)
}
