//! Float64 references for the accuracy checks shared by the CPU and GPU
//! tests: transcendental activations where a naive f32 formula loses its
//! relative accuracy (tails, values near 0).

#![allow(dead_code)]

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
/// rounds to 0; near 0 a tanh taken as `(e^2x - 1) / (e^2x + 1)` and A&S
/// 7.1.26's erf are far off relatively.
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
