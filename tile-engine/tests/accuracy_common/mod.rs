//! Float64 references for the accuracy checks shared by the CPU and GPU
//! tests: transcendental activations where a naive f32 formula loses its
//! relative accuracy (tails, values near 0), and normalisations of maps whose
//! mean is far from 0.

#![allow(dead_code)]

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tile_engine::ir::Activation;
use tile_engine::{Executor, Graph, Op, Tensor};

/// `erf` in f64 by its Taylor series, which converges for every x; for
/// |x| <= 2 the cancellation costs under two of f64's sixteen digits.
pub fn erf64(x: f64) -> f64 {
    let x2 = x * x;
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x2 / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-18 * sum.abs() {
            break;
        }
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

fn softplus64(v: f64) -> f64 {
    v.exp().ln_1p()
}

/// An activation, its f64 reference, and the inputs to check it at.
pub struct ActivationCase {
    pub act: Activation,
    pub reference: fn(f64) -> f64,
    pub xs: Vec<f32>,
}

/// The inputs where f32 shortcuts fail: below x ≈ -17 `ln(1 + exp(x))`
/// rounds to 0; near 0 a tanh taken as `(e^2x - 1) / (e^2x + 1)`, A&S
/// 7.1.26's erf and Elu's or Selu's `exp(x) - 1` are far off relatively.
pub fn activation_cases() -> Vec<ActivationCase> {
    let case = |act, reference: fn(f64) -> f64, xs: &[f32]| ActivationCase {
        act,
        reference,
        xs: xs.to_vec(),
    };
    vec![
        case(
            Activation::Softplus,
            softplus64,
            &[-30.0, -20.0, -17.0, -1e-3, 0.3, 2.0, 20.0],
        ),
        case(
            Activation::Mish,
            |v| v * softplus64(v).tanh(),
            &[-30.0, -20.0, -17.0, -2.0, 1e-6, 1e-3, 2.0],
        ),
        case(
            Activation::Tanh,
            f64::tanh,
            &[1e-6, -1e-6, 1e-3, -0.1, 0.3, -0.35, 2.0],
        ),
        case(
            Activation::Erf,
            erf64,
            &[1e-6, -1e-6, 1e-3, 0.3, -0.49, 0.5, 2.0],
        ),
        case(
            Activation::Elu { alpha: 0.7 },
            |v| {
                if v < 0.0 {
                    0.7f32 as f64 * v.exp_m1()
                } else {
                    v
                }
            },
            &[-1e-6, -1e-3, -0.3, -0.49, -0.5, -2.0, 0.5],
        ),
        case(
            Activation::Selu {
                alpha: 1.673_263_2,
                gamma: 1.050_701,
            },
            |v| {
                let (a, g) = (1.673_263_2f32 as f64, 1.050_701f32 as f64);
                if v <= 0.0 { g * a * v.exp_m1() } else { g * v }
            },
            &[-1e-6, -1e-3, -0.3, -0.49, -0.5, -2.0, 0.5],
        ),
        case(
            Activation::Gelu { tanh: false },
            |v| 0.5 * v * (1.0 + erf64(v * std::f64::consts::FRAC_1_SQRT_2)),
            &[1e-6, 1e-3, 0.3, -0.6, 2.0, -2.0],
        ),
    ]
}

/// Runs every case of `activation_cases` on `exec` and checks each value's
/// relative error against the f64 reference, naming every value off.
pub fn check_activations(exec: &dyn Executor, rtol: f64) {
    let mut off = Vec::new();
    for ActivationCase { act, reference, xs } in activation_cases() {
        let mut g = Graph::default();
        let x = g.add_value("x", vec![1, 1, 1, xs.len()]);
        g.inputs.push(x);
        let y = g
            .add_node("n", Op::Activation(act.clone()), vec![x], "y")
            .expect("valid graph");
        g.outputs.push(y);
        let input = Tensor::new(vec![1, 1, 1, xs.len()], xs.clone()).expect("tensor");
        let got = exec.run(&g, &[input]).expect("run");
        for (&got, &v) in got[0].data().iter().zip(&xs) {
            let want = reference(f64::from(v));
            let rel = (f64::from(got) - want).abs() / want.abs();
            if rel > rtol {
                off.push(format!(
                    "{act:?}({v}): {got} vs {want:e} (relative {rel:.2e})"
                ));
            }
        }
    }
    assert!(off.is_empty(), "{}", off.join("\n"));
}

/// `1000 + noise` in [-1.7, 1.7): an f32 running sum of such a row rounds
/// off much of the noise.
pub fn offset_map(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| 1000.0 + rng.random_range(-1.7f32..1.7))
        .collect();
    Tensor::new(shape.to_vec(), data).expect("shape matches data")
}

/// `(x - mean) / sqrt(var + eps) * scale[k] + bias[k]` in f64 over rows of
/// `len` values, with `k` the row (cycling through `scale`) when `by_row`
/// (instance norm), else the position in the row (layer norm).
pub fn normalise64(
    x: &[f32],
    len: usize,
    by_row: bool,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks(len).enumerate() {
        let n = len as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let k = if by_row { r % scale.len() } else { i };
            out.push((f64::from(v) - mean) * inv * f64::from(scale[k]) + f64::from(bias[k]));
        }
    }
    out
}

/// LayerNorm over the last three axes and InstanceNorm of an offset map on
/// `exec`, each against the f64 reference within `atol`.
pub fn check_norms_of_offset_maps(exec: &dyn Executor, atol: f64) {
    let shape = [2, 4, 16, 20];
    let x = offset_map(&shape, 5);
    let len = 4 * 16 * 20;
    let layer = Op::LayerNorm {
        axis: 1,
        scale: Arc::new((0..len).map(|i| 0.5 + 0.001 * i as f32).collect()),
        bias: Arc::new((0..len).map(|i| i as f32 * -0.001).collect()),
        epsilon: 1e-5,
    };
    let instance = Op::InstanceNorm {
        scale: Arc::new(vec![0.5, 1.0, 1.5, 2.0]),
        bias: Arc::new(vec![0.0, -0.25, 0.5, 1.0]),
        epsilon: 1e-5,
    };
    let mut off = Vec::new();
    for op in [layer, instance] {
        let (rows, by_row, scale, bias, eps) = match &op {
            Op::LayerNorm {
                scale,
                bias,
                epsilon,
                ..
            } => (len, false, scale.clone(), bias.clone(), *epsilon),
            Op::InstanceNorm {
                scale,
                bias,
                epsilon,
            } => (16 * 20, true, scale.clone(), bias.clone(), *epsilon),
            _ => unreachable!("only norms above"),
        };
        let want = normalise64(x.data(), rows, by_row, &scale, &bias, eps);
        let mut g = Graph::default();
        let xv = g.add_value("x", shape.to_vec());
        g.inputs.push(xv);
        let y = g.add_node("n", op.clone(), vec![xv], "y").expect("graph");
        g.outputs.push(y);
        let got = exec.run(&g, std::slice::from_ref(&x)).expect("run");
        let err = got[0]
            .data()
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        if err > atol {
            off.push(format!("{}: max error {err:.2e}", op.name()));
        }
    }
    assert!(off.is_empty(), "{}", off.join("\n"));
}
