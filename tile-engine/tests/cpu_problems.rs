//! Property tests, tract-style: each problem is a struct of op parameters
//! whose reference answer is computed by a second, naive formulation written
//! here (direct nested loops in f64, a scatter for transposed convolution, an
//! explicitly padded map for pooling, ONNX's edge-padded neighbour lookup for
//! resize), compared with the CPU executor at rtol 1e-4 / atol 1e-5.

use std::sync::Arc;

use proptest::prelude::*;
use tile_engine::cpu;
use tile_engine::ir::{
    Activation, BinaryKind, Conv, ConvTranspose, CoordTransform, NearestMode, Pool, PoolKind,
    ResizeMode,
};
use tile_engine::{Graph, Op, Tensor};

/// Deterministic pseudo-random values in [-1, 1) from a seed (SplitMix64).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), values(seed, n)).expect("shape matches data")
}

/// Runs a one-node graph over runtime inputs of the given tensors.
fn run_op(op: Op, inputs: &[Tensor], out_shape: Option<Vec<usize>>) -> Result<Tensor, String> {
    let mut g = Graph::default();
    let ids: Vec<usize> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_value(format!("in{i}"), t.shape().to_vec()))
        .collect();
    g.inputs = ids.clone();
    let y = match out_shape {
        Some(s) => g.add_node_with_shape("n", op, ids, "y", s),
        None => g.add_node("n", op, ids, "y"),
    }
    .map_err(|e| e.to_string())?;
    g.outputs.push(y);
    let mut out = cpu::run(&g, inputs).map_err(|e| e.to_string())?;
    Ok(out.remove(0))
}

/// Asserts `got` matches the f64 reference within rtol 1e-4 / atol 1e-5.
fn assert_close(got: &Tensor, want_shape: &[usize], want: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want_shape);
    prop_assert_eq!(got.numel(), want.len());
    for (i, (&g, &w)) in got.data().iter().zip(want).enumerate() {
        let tol = 1e-5 + 1e-4 * w.abs();
        prop_assert!(
            (f64::from(g) - w).abs() <= tol
                || (g.is_infinite() && w.is_infinite() && (g > 0.0) == (w > 0.0)),
            "element {}: got {}, want {}",
            i,
            g,
            w
        );
    }
    Ok(())
}

/// Output length of a window along one axis, restated from the ONNX spec
/// (with ceil_mode the span may be negative: the first window overhangs).
fn out_len(len: usize, k: usize, s: usize, p0: usize, p1: usize, d: usize, ceil: bool) -> usize {
    let eff = d * (k - 1) + 1;
    let span = (len + p0 + p1) as f64 - eff as f64;
    let span = span / s as f64;
    let mut o = (if ceil { span.ceil() } else { span.floor() }) as i64 as usize + 1;
    if ceil && (o - 1) * s >= len + p0 {
        o -= 1;
    }
    o
}

/// Grows `len` so the padded input holds at least one dilated window.
fn fit(len: usize, k: usize, d: usize, p0: usize, p1: usize) -> usize {
    len.max((d * (k - 1) + 1).saturating_sub(p0 + p1)).max(1)
}

/// Grows `len` as [`fit`] does, but a ceil_mode window may overhang the
/// padded input's end by up to `s − 1`, the first one included.
fn fit_pool(len: usize, k: usize, d: usize, p0: usize, p1: usize, s: usize, ceil: bool) -> usize {
    let slack = if ceil { s - 1 } else { 0 };
    len.max((d * (k - 1) + 1).saturating_sub(p0 + p1 + slack))
        .max(1)
}

#[derive(Debug, Clone)]
struct ConvProblem {
    n: usize,
    group: usize,
    ci_per_group: usize,
    co_per_group: usize,
    hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    bias: bool,
    residual: bool,
    relu: bool,
    seed: u64,
}

impl ConvProblem {
    fn input_shape(&self) -> [usize; 4] {
        let h = fit(
            self.hw[0],
            self.kernel[0],
            self.dilations[0],
            self.pads[0],
            self.pads[2],
        );
        let w = fit(
            self.hw[1],
            self.kernel[1],
            self.dilations[1],
            self.pads[1],
            self.pads[3],
        );
        [self.n, self.group * self.ci_per_group, h, w]
    }

    fn output_shape(&self) -> [usize; 4] {
        let [n, _, h, w] = self.input_shape();
        [
            n,
            self.group * self.co_per_group,
            out_len(
                h,
                self.kernel[0],
                self.strides[0],
                self.pads[0],
                self.pads[2],
                self.dilations[0],
                false,
            ),
            out_len(
                w,
                self.kernel[1],
                self.strides[1],
                self.pads[1],
                self.pads[3],
                self.dilations[1],
                false,
            ),
        ]
    }

    /// Direct nested loops over (n, m, oy, ox, ci, ky, kx) in f64.
    fn reference(&self, x: &Tensor, w: &Tensor, b: &[f32], r: &Tensor) -> Vec<f64> {
        let [n, c, h, wd] = self.input_shape();
        let [_, m, oh, ow] = self.output_shape();
        let (cg, mg) = (self.ci_per_group, self.co_per_group);
        let [kh, kw] = self.kernel;
        let mut out = Vec::new();
        for bn in 0..n {
            for (om, &bias) in b.iter().enumerate().take(m) {
                let g = om / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = if self.bias { f64::from(bias) } else { 0.0 };
                        for ci in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * self.strides[0] + ky * self.dilations[0]) as i64
                                        - self.pads[0] as i64;
                                    let ix = (ox * self.strides[1] + kx * self.dilations[1]) as i64
                                        - self.pads[1] as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                        continue;
                                    }
                                    let xv = x.data()[((bn * c + g * cg + ci) * h + iy as usize)
                                        * wd
                                        + ix as usize];
                                    let wv = w.data()[((om * cg + ci) * kh + ky) * kw + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        if self.residual {
                            acc += f64::from(r.data()[((bn * m + om) * oh + oy) * ow + ox]);
                        }
                        out.push(if self.relu { acc.max(0.0) } else { acc });
                    }
                }
            }
        }
        out
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let xs = self.input_shape();
        let os = self.output_shape();
        let (m, cg) = (os[1], self.ci_per_group);
        let x = tensor(&xs, self.seed);
        let w = tensor(&[m, cg, self.kernel[0], self.kernel[1]], self.seed ^ 1);
        let b = values(self.seed ^ 2, m);
        let r = tensor(&os, self.seed ^ 3);
        let op = Op::Conv(Conv {
            weight: Arc::new(w.clone()),
            bias: self.bias.then(|| Arc::new(b.clone())),
            strides: self.strides,
            pads: self.pads,
            dilations: self.dilations,
            group: self.group,
            activation: if self.relu {
                Activation::Relu
            } else {
                Activation::Identity
            },
        });
        let inputs = if self.residual {
            vec![x.clone(), r.clone()]
        } else {
            vec![x.clone()]
        };
        let got = run_op(op, &inputs, None).map_err(TestCaseError::fail)?;
        assert_close(&got, &os, &self.reference(&x, &w, &b, &r))
    }
}

fn conv_problem() -> impl Strategy<Value = ConvProblem> {
    (
        (
            1usize..=2,
            prop_oneof![Just(1usize), Just(2), Just(3)],
            1usize..=3,
            1usize..=3,
        ),
        ([1usize..=9, 1usize..=9], [1usize..=4, 1usize..=4]),
        (
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
            [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (n, group, cig, cog),
                (hw, kernel),
                (strides, dilations, pads),
                (bias, residual, relu, depthwise, seed),
            )| {
                // Depthwise: one input and one output channel per group.
                let (cig, cog) = if depthwise { (1, 1) } else { (cig, cog) };
                ConvProblem {
                    n,
                    group,
                    ci_per_group: cig,
                    co_per_group: cog,
                    hw,
                    kernel,
                    strides,
                    dilations,
                    pads,
                    bias,
                    residual,
                    relu,
                    seed,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct ConvTransposeProblem {
    group: usize,
    ci_per_group: usize,
    co_per_group: usize,
    hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    output_padding: [usize; 2],
    bias: bool,
    seed: u64,
}

impl ConvTransposeProblem {
    fn full_len(&self, axis: usize) -> usize {
        self.strides[axis] * (self.hw[axis] - 1)
            + self.output_padding[axis]
            + (self.kernel[axis] - 1) * self.dilations[axis]
            + 1
    }

    fn output_shape(&self) -> Option<[usize; 4]> {
        let oh = self
            .full_len(0)
            .checked_sub(self.pads[0] + self.pads[2])
            .filter(|&v| v > 0)?;
        let ow = self
            .full_len(1)
            .checked_sub(self.pads[1] + self.pads[3])
            .filter(|&v| v > 0)?;
        Some([1, self.group * self.co_per_group, oh, ow])
    }

    /// Scatter: every input pixel adds `x * w` to each output position its taps reach.
    fn reference(&self, x: &Tensor, w: &Tensor, b: &[f32]) -> Vec<f64> {
        let Some([_, m, oh, ow]) = self.output_shape() else {
            return Vec::new();
        };
        let (cg, mg) = (self.ci_per_group, self.co_per_group);
        let [h, wd] = self.hw;
        let [kh, kw] = self.kernel;
        let mut out = vec![0.0f64; m * oh * ow];
        for cin in 0..self.group * cg {
            let g = cin / cg;
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = f64::from(x.data()[(cin * h + iy) * wd + ix]);
                    for mm in 0..mg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy = (iy * self.strides[0] + ky * self.dilations[0]) as i64
                                    - self.pads[0] as i64;
                                let ox = (ix * self.strides[1] + kx * self.dilations[1]) as i64
                                    - self.pads[1] as i64;
                                if oy < 0 || ox < 0 || oy >= oh as i64 || ox >= ow as i64 {
                                    continue;
                                }
                                let wv = f64::from(w.data()[((cin * mg + mm) * kh + ky) * kw + kx]);
                                out[((g * mg + mm) * oh + oy as usize) * ow + ox as usize] +=
                                    xv * wv;
                            }
                        }
                    }
                }
            }
        }
        if self.bias {
            for (i, v) in out.iter_mut().enumerate() {
                *v += f64::from(b[i / (oh * ow)]);
            }
        }
        out
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let Some(os) = self.output_shape() else {
            return Ok(());
        };
        let c = self.group * self.ci_per_group;
        let x = tensor(&[1, c, self.hw[0], self.hw[1]], self.seed);
        let w = tensor(
            &[c, self.co_per_group, self.kernel[0], self.kernel[1]],
            self.seed ^ 1,
        );
        let b = values(self.seed ^ 2, os[1]);
        let op = Op::ConvTranspose(ConvTranspose {
            weight: Arc::new(w.clone()),
            bias: self.bias.then(|| Arc::new(b.clone())),
            strides: self.strides,
            pads: self.pads,
            dilations: self.dilations,
            output_padding: self.output_padding,
            group: self.group,
            activation: Activation::Identity,
        });
        let got = run_op(op, std::slice::from_ref(&x), None).map_err(TestCaseError::fail)?;
        assert_close(&got, &os, &self.reference(&x, &w, &b))
    }
}

fn conv_transpose_problem() -> impl Strategy<Value = ConvTransposeProblem> {
    (
        (1usize..=3, 1usize..=3, 1usize..=3),
        ([1usize..=6, 1usize..=6], [1usize..=4, 1usize..=4]),
        (
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        ),
        ([0usize..=2, 0usize..=2], any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((group, cig, cog), (hw, kernel), (strides, dilations, pads), (op, bias, seed))| {
                // ONNX: output_padding must be smaller than the stride (or the dilation).
                let output_padding = [op[0] % strides[0], op[1] % strides[1]];
                ConvTransposeProblem {
                    group,
                    ci_per_group: cig,
                    co_per_group: cog,
                    hw,
                    kernel,
                    strides,
                    dilations,
                    pads,
                    output_padding,
                    bias,
                    seed,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct PoolProblem {
    kind: PoolKind,
    channels: usize,
    hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    ceil_mode: bool,
    seed: u64,
}

impl PoolProblem {
    fn input_shape(&self) -> [usize; 4] {
        let h = fit_pool(
            self.hw[0],
            self.kernel[0],
            self.dilations[0],
            self.pads[0],
            self.pads[2],
            self.strides[0],
            self.ceil_mode,
        );
        let w = fit_pool(
            self.hw[1],
            self.kernel[1],
            self.dilations[1],
            self.pads[1],
            self.pads[3],
            self.strides[1],
            self.ceil_mode,
        );
        [1, self.channels, h, w]
    }

    fn output_shape(&self) -> [usize; 4] {
        let [n, c, h, w] = self.input_shape();
        [
            n,
            c,
            out_len(
                h,
                self.kernel[0],
                self.strides[0],
                self.pads[0],
                self.pads[2],
                self.dilations[0],
                self.ceil_mode,
            ),
            out_len(
                w,
                self.kernel[1],
                self.strides[1],
                self.pads[1],
                self.pads[3],
                self.dilations[1],
                self.ceil_mode,
            ),
        ]
    }

    /// Pools over an explicitly padded copy of each plane: cells are `Real(v)`
    /// or `Pad`; positions past the padded extent (a ceil-mode overhang) do not exist.
    fn reference(&self, x: &Tensor) -> Vec<f64> {
        let [_, c, h, w] = self.input_shape();
        let [_, _, oh, ow] = self.output_shape();
        let (ph, pw) = (
            h + self.pads[0] + self.pads[2],
            w + self.pads[1] + self.pads[3],
        );
        let mut out = Vec::new();
        for ch in 0..c {
            let padded: Vec<Option<f64>> = (0..ph * pw)
                .map(|i| {
                    let (y, xx) = (i / pw, i % pw);
                    let (y, xx) = (
                        y as i64 - self.pads[0] as i64,
                        xx as i64 - self.pads[1] as i64,
                    );
                    (y >= 0 && xx >= 0 && y < h as i64 && xx < w as i64)
                        .then(|| f64::from(x.data()[(ch * h + y as usize) * w + xx as usize]))
                })
                .collect();
            for oy in 0..oh {
                for ox in 0..ow {
                    let cells: Vec<Option<f64>> = (0..self.kernel[0])
                        .flat_map(|ky| (0..self.kernel[1]).map(move |kx| (ky, kx)))
                        .filter_map(|(ky, kx)| {
                            let y = oy * self.strides[0] + ky * self.dilations[0];
                            let xx = ox * self.strides[1] + kx * self.dilations[1];
                            (y < ph && xx < pw).then(|| padded[y * pw + xx])
                        })
                        .collect();
                    let real: Vec<f64> = cells.iter().flatten().copied().collect();
                    out.push(match self.kind {
                        PoolKind::Max => real.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        PoolKind::Average { count_include_pad } => {
                            let count = if count_include_pad {
                                cells.len()
                            } else {
                                real.len()
                            };
                            if count == 0 {
                                0.0
                            } else {
                                real.iter().sum::<f64>() / count as f64
                            }
                        }
                    });
                }
            }
        }
        out
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let x = tensor(&self.input_shape(), self.seed);
        let op = Op::Pool(Pool {
            kind: self.kind,
            kernel: self.kernel,
            strides: self.strides,
            pads: self.pads,
            dilations: self.dilations,
            ceil_mode: self.ceil_mode,
        });
        let got = run_op(op, std::slice::from_ref(&x), None).map_err(TestCaseError::fail)?;
        assert_close(&got, &self.output_shape(), &self.reference(&x))
    }
}

fn pool_problem() -> impl Strategy<Value = PoolProblem> {
    (
        prop_oneof![
            Just(PoolKind::Max),
            Just(PoolKind::Average {
                count_include_pad: false
            }),
            Just(PoolKind::Average {
                count_include_pad: true
            }),
        ],
        (
            1usize..=3,
            [1usize..=9, 1usize..=9],
            [1usize..=4, 1usize..=4],
        ),
        (
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
            [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
        ),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(kind, (channels, hw, kernel), (strides, dilations, pads), (ceil_mode, seed))| {
                // ONNX requires each pad to be smaller than the kernel.
                let pads = [
                    pads[0] % kernel[0],
                    pads[1] % kernel[1],
                    pads[2] % kernel[0],
                    pads[3] % kernel[1],
                ];
                PoolProblem {
                    kind,
                    channels,
                    hw,
                    kernel,
                    strides,
                    dilations,
                    pads,
                    ceil_mode,
                    seed,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct ResizeProblem {
    mode: ResizeMode,
    coord: CoordTransform,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    seed: u64,
}

impl ResizeProblem {
    fn scales(&self) -> [f32; 2] {
        [
            self.out_hw[0] as f32 / self.in_hw[0] as f32,
            self.out_hw[1] as f32 / self.in_hw[1] as f32,
        ]
    }

    /// ONNX's reference: the source coordinate (computed in f32, the
    /// executor's stated precision), the two neighbours of an edge-padded
    /// row, and coefficients `[1 - r, r]` (linear) or one-hot (nearest), or
    /// Keys' four taps (cubic), interpolating W first, then H.
    fn interp_1d(&self, data: &[f64], o: usize, axis: usize) -> f64 {
        let (in_len, out_len) = (self.in_hw[axis], self.out_hw[axis]);
        let scale = self.scales()[axis];
        let of = o as f32;
        let x: f32 = match self.coord {
            CoordTransform::HalfPixel => (of + 0.5) / scale - 0.5,
            CoordTransform::PytorchHalfPixel if out_len > 1 => (of + 0.5) / scale - 0.5,
            CoordTransform::PytorchHalfPixel => 0.0,
            CoordTransform::AlignCorners if out_len > 1 => {
                of * (in_len - 1) as f32 / (out_len - 1) as f32
            }
            CoordTransform::AlignCorners => 0.0,
            CoordTransform::Asymmetric => of / scale,
        };
        let x0 = x.floor();
        let ratio = f64::from(x - x0);
        // Edge padding by 2 on each side, as the reference's np.pad(mode="edge").
        let at = |i: i64| data[(i.clamp(0, in_len as i64 - 1)) as usize];
        let (p0, p1) = (at(x0 as i64), at(x0 as i64 + 1));
        let coeffs = match self.mode {
            // Keys' kernel over taps x0 - 1 … x0 + 2, in f64 (the
            // reference's `_cubic_coeffs`), with its exclude_outside rule.
            ResizeMode::Cubic { a, exclude_outside } => {
                let a = f64::from(a);
                let kernel = |d: f64| {
                    let d = d.abs();
                    if d <= 1.0 {
                        ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
                    } else if d < 2.0 {
                        ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let first = x0 as i64 - 1;
                let mut w: Vec<f64> = (0..4).map(|k| kernel(ratio + 1.0 - k as f64)).collect();
                if exclude_outside {
                    for (k, wk) in w.iter_mut().enumerate() {
                        let i = first + k as i64;
                        if i < 0 || i >= in_len as i64 {
                            *wk = 0.0;
                        }
                    }
                    let sum: f64 = w.iter().sum();
                    w.iter_mut().for_each(|wk| *wk /= sum);
                }
                return (0..4).map(|k| w[k] * at(first + k as i64)).sum();
            }
            ResizeMode::Linear => [1.0 - ratio, ratio],
            ResizeMode::Nearest(m) => {
                let up = match m {
                    NearestMode::RoundPreferFloor => ratio > 0.5,
                    NearestMode::RoundPreferCeil => ratio >= 0.5,
                    NearestMode::Floor => false,
                    NearestMode::Ceil => ratio > 0.0,
                };
                if up { [0.0, 1.0] } else { [1.0, 0.0] }
            }
        };
        coeffs[0] * p0 + coeffs[1] * p1
    }

    fn reference(&self, x: &Tensor) -> Vec<f64> {
        let [h, w] = self.in_hw;
        let [oh, ow] = self.out_hw;
        let mut out = Vec::new();
        for plane in x.data().chunks(h * w) {
            for oy in 0..oh {
                for ox in 0..ow {
                    let rows: Vec<f64> = (0..h)
                        .map(|y| {
                            let row: Vec<f64> = plane[y * w..(y + 1) * w]
                                .iter()
                                .map(|&v| f64::from(v))
                                .collect();
                            self.interp_1d(&row, ox, 1)
                        })
                        .collect();
                    out.push(self.interp_1d(&rows, oy, 0));
                }
            }
        }
        out
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let x = tensor(&[1, 2, self.in_hw[0], self.in_hw[1]], self.seed);
        let os = vec![1, 2, self.out_hw[0], self.out_hw[1]];
        let op = Op::Resize {
            mode: self.mode,
            coord: self.coord,
            scales: self.scales(),
        };
        let got =
            run_op(op, std::slice::from_ref(&x), Some(os.clone())).map_err(TestCaseError::fail)?;
        assert_close(&got, &os, &self.reference(&x))
    }
}

fn resize_problem() -> impl Strategy<Value = ResizeProblem> {
    (
        prop_oneof![
            Just(ResizeMode::Linear),
            Just(ResizeMode::Nearest(NearestMode::RoundPreferFloor)),
            Just(ResizeMode::Nearest(NearestMode::RoundPreferCeil)),
            Just(ResizeMode::Nearest(NearestMode::Floor)),
            Just(ResizeMode::Nearest(NearestMode::Ceil)),
            Just(ResizeMode::Cubic {
                a: -0.75,
                exclude_outside: false
            }),
            Just(ResizeMode::Cubic {
                a: -0.5,
                exclude_outside: true
            }),
        ],
        prop_oneof![
            Just(CoordTransform::HalfPixel),
            Just(CoordTransform::PytorchHalfPixel),
            Just(CoordTransform::AlignCorners),
            Just(CoordTransform::Asymmetric),
        ],
        [1usize..=6, 1usize..=6],
        [1usize..=13, 1usize..=13],
        any::<u64>(),
    )
        .prop_map(|(mode, coord, in_hw, out_hw, seed)| ResizeProblem {
            mode,
            coord,
            in_hw,
            out_hw,
            seed,
        })
}

#[derive(Debug, Clone)]
struct BroadcastProblem {
    kind: BinaryKind,
    a: Vec<usize>,
    b: Vec<usize>,
    seed: u64,
}

impl BroadcastProblem {
    /// Expands both operands to the full output shape by explicit index
    /// arithmetic on each element's coordinates, then applies the op.
    fn reference(&self, a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f64>) {
        let rank = self.a.len().max(self.b.len());
        let dim = |s: &[usize], i: usize| {
            if i + s.len() >= rank {
                s[i + s.len() - rank]
            } else {
                1
            }
        };
        let out: Vec<usize> = (0..rank)
            .map(|i| dim(&self.a, i).max(dim(&self.b, i)))
            .collect();
        let read = |t: &Tensor, s: &[usize], coords: &[usize]| -> f64 {
            let mut off = 0;
            for (i, &c) in coords.iter().enumerate() {
                let d = dim(s, i);
                off = off * d + if d == 1 { 0 } else { c };
            }
            f64::from(t.data()[off])
        };
        let n: usize = out.iter().product();
        let vals = (0..n)
            .map(|mut flat| {
                let mut coords = vec![0; rank];
                for i in (0..rank).rev() {
                    coords[i] = flat % out[i];
                    flat /= out[i];
                }
                let (x, y) = (read(a, &self.a, &coords), read(b, &self.b, &coords));
                match self.kind {
                    BinaryKind::Add => x + y,
                    BinaryKind::Sub => x - y,
                    BinaryKind::Mul => x * y,
                    BinaryKind::Div => x / y,
                    BinaryKind::Max => x.max(y),
                    BinaryKind::Min => x.min(y),
                }
            })
            .collect();
        (out, vals)
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let a = tensor(&self.a, self.seed);
        // Keep divisors away from zero so the relative tolerance is meaningful.
        let b = Tensor::new(
            self.b.clone(),
            values(self.seed ^ 1, self.b.iter().product())
                .iter()
                .map(|v| v + 2.0 * v.signum() + 0.5)
                .collect(),
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let op = Op::Binary {
            kind: self.kind,
            activation: Activation::Identity,
        };
        let got = run_op(op, &[a.clone(), b.clone()], None).map_err(TestCaseError::fail)?;
        let (shape, want) = self.reference(&a, &b);
        assert_close(&got, &shape, &want)
    }
}

fn broadcast_problem() -> impl Strategy<Value = BroadcastProblem> {
    (
        prop_oneof![
            Just(BinaryKind::Add),
            Just(BinaryKind::Sub),
            Just(BinaryKind::Mul),
            Just(BinaryKind::Div),
            Just(BinaryKind::Max),
            Just(BinaryKind::Min),
        ],
        proptest::collection::vec((1usize..=4, 0u8..4), 0..=5),
        0usize..=5,
        any::<u64>(),
    )
        .prop_map(|(kind, dims, drop_b, seed)| {
            // Per axis: 0 -> both full, 1 -> a broadcast, 2 -> b broadcast, 3 -> both 1.
            let a: Vec<usize> = dims
                .iter()
                .map(|&(d, m)| if m == 1 || m == 3 { 1 } else { d })
                .collect();
            let b: Vec<usize> = dims
                .iter()
                .map(|&(d, m)| if m == 2 || m == 3 { 1 } else { d })
                .collect();
            // b may also have fewer leading axes (right-aligned broadcasting).
            let b = b[drop_b.min(b.len())..].to_vec();
            BroadcastProblem { kind, a, b, seed }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn conv_matches_direct_loops(p in conv_problem()) {
        p.check()?;
    }

    #[test]
    fn conv_transpose_matches_scatter(p in conv_transpose_problem()) {
        p.check()?;
    }

    #[test]
    fn pool_matches_padded_map(p in pool_problem()) {
        p.check()?;
    }

    #[test]
    fn resize_matches_onnx_reference(p in resize_problem()) {
        p.check()?;
    }

    #[test]
    fn binary_broadcasting_matches_expanded(p in broadcast_problem()) {
        p.check()?;
    }
}
