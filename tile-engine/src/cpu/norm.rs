//! Normalisations: softmax and local response normalisation.

use crate::tensor::Tensor;

/// Softmax over `axis`, max-subtracted; sums run in ascending position.
/// With `log`, its logarithm as `x - max - ln(sum)`.
pub(super) fn softmax(x: &Tensor, axis: usize, log: bool) -> Tensor {
    let s = x.shape();
    let len = s[axis];
    let inner: usize = s[axis + 1..].iter().product();
    let outer: usize = s[..axis].iter().product();
    let mut y = x.clone();
    let d = y.data_mut();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let max = (0..len).fold(f32::NEG_INFINITY, |m, k| m.max(d[at(k)]));
            let mut sum = 0.0f32;
            if log {
                for k in 0..len {
                    sum += (d[at(k)] - max).exp();
                }
                let ln_sum = sum.ln();
                for k in 0..len {
                    d[at(k)] = (d[at(k)] - max) - ln_sum;
                }
            } else {
                for k in 0..len {
                    let e = (d[at(k)] - max).exp();
                    d[at(k)] = e;
                    sum += e;
                }
                for k in 0..len {
                    d[at(k)] /= sum;
                }
            }
        }
    }
    y
}

/// ONNX LRN: `x / (bias + alpha / size * square_sum)^beta`, the square sum over
/// channels `[c - floor((size-1)/2), c + ceil((size-1)/2)]` clipped to the tensor.
pub(super) fn lrn(x: &Tensor, size: usize, alpha: f32, beta: f32, bias: f32) -> Tensor {
    let s = x.shape();
    let (n, c, plane) = (s[0], s[1], s[2] * s[3]);
    let before = (size - 1) / 2;
    let after = (size - 1).div_ceil(2);
    let scale = alpha / size as f32;
    let xd = x.data();
    let mut out = vec![0.0f32; xd.len()];
    for b in 0..n {
        for ch in 0..c {
            let lo = ch.saturating_sub(before);
            let hi = (ch + after).min(c - 1);
            for p in 0..plane {
                let at = |k: usize| (b * c + k) * plane + p;
                let mut sq = 0.0f32;
                for k in lo..=hi {
                    sq += xd[at(k)] * xd[at(k)];
                }
                out[at(ch)] = xd[at(ch)] / (bias + scale * sq).powf(beta);
            }
        }
    }
    // The output has exactly the input's shape.
    let mut y = x.clone();
    y.data_mut().copy_from_slice(&out);
    y
}

/// Mean and `1 / sqrt(variance + epsilon)` of `row`, summed in f64: an f32
/// running sum of a row whose mean is far from 0 (1000 + noise) rounds off
/// much of the noise, and every output inherits that error.
fn moments(row: &[f32], epsilon: f32) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean) * (f64::from(v) - mean))
        .sum::<f64>()
        / n;
    (mean, 1.0 / (var + f64::from(epsilon)).sqrt())
}

/// `(v - mean) * inv * scale + bias`, rounded to f32 once.
fn normalise(v: f32, (mean, inv): (f64, f64), scale: f32, bias: f32) -> f32 {
    ((f64::from(v) - mean) * inv * f64::from(scale) + f64::from(bias)) as f32
}

/// Instance normalisation of an NCHW map: per plane, `(x - mean) /
/// sqrt(var + epsilon) * scale[c] + bias[c]`.
pub(super) fn instance_norm(x: &Tensor, scale: &[f32], bias: &[f32], epsilon: f32) -> Tensor {
    let s = x.shape();
    let (c, hw) = (s[1], s[2] * s[3]);
    let mut y = x.clone();
    for (p, plane) in y.data_mut().chunks_mut(hw.max(1)).enumerate() {
        let ch = p % c;
        let m = moments(plane, epsilon);
        for v in plane {
            *v = normalise(*v, m, scale[ch], bias[ch]);
        }
    }
    y
}

/// Layer normalisation over the dims from `axis` on: per row, `(x - mean)
/// / sqrt(var + epsilon) * scale[k] + bias[k]`.
pub(super) fn layer_norm(
    x: &Tensor,
    axis: usize,
    scale: &[f32],
    bias: &[f32],
    epsilon: f32,
) -> Tensor {
    let len: usize = x.shape()[axis..].iter().product();
    let mut y = x.clone();
    for row in y.data_mut().chunks_mut(len.max(1)) {
        let m = moments(row, epsilon);
        for (k, v) in row.iter_mut().enumerate() {
            *v = normalise(*v, m, scale[k], bias[k]);
        }
    }
    y
}
