//! Operator definitions. Every op is normalised at import: attributes are
//! resolved to explicit values (pads as numbers, never `auto_pad`), so
//! executors implement one meaning per op.

use std::sync::Arc;

use crate::tensor::Tensor;

/// An elementwise activation, standalone or fused into a producer's store.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    /// `x`
    Identity,
    /// `max(x, 0)`
    Relu,
    /// `x < 0 ? alpha * x : x`
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `x < 0 ? slope[c] * x : x`, slope broadcast per channel (dim 1) or scalar (len 1).
    PRelu {
        /// Per-channel (or single) slopes.
        slope: Arc<Vec<f32>>,
    },
    /// `1 / (1 + exp(-x))`
    Sigmoid,
    /// `tanh(x)`
    Tanh,
    /// `min(max(x, min), max)`
    Clip {
        /// Lower bound (`-inf` when absent).
        min: f32,
        /// Upper bound (`+inf` when absent).
        max: f32,
    },
    /// `max(0, min(1, alpha * x + beta))`
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 1/2))`
    HardSwish,
    /// `x < 0 ? alpha * (exp(x) - 1) : x`
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
    /// `gamma * (x <= 0 ? alpha * exp(x) - alpha : x)`
    Selu {
        /// Scale of the negative part.
        alpha: f32,
        /// Overall scale.
        gamma: f32,
    },
    /// `ln(exp(x) + 1)`, computed as `max(x, 0) + ln_1p(exp(-|x|))` so
    /// that it does not overflow above x ≈ 88 and keeps its relative
    /// accuracy below x ≈ -17, where `1 + exp(x)` rounds to 1.
    Softplus,
    /// The error function: its Taylor series for |x| < 0.5, else Abramowitz
    /// and Stegun 7.1.26 (|error| < 1.5e-7; WGSL has no `erf`, and both
    /// executors use these formulas).
    Erf,
    /// `x / 2 * (1 + erf(x / sqrt 2))`, or with `tanh` its tanh approximation
    /// `x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`.
    Gelu {
        /// The tanh approximation.
        tanh: bool,
    },
    /// `x * tanh(ln(1 + exp(x)))`
    Mish,
    /// `|x|`
    Abs,
    /// `-x`
    Neg,
    /// `exp(x)`
    Exp,
    /// `ln(x)`
    Log,
    /// `sqrt(x)`
    Sqrt,
    /// `1 / x`
    Reciprocal,
}

/// `max(a, b)` where a NaN operand wins (numpy's rule; `f32::max` and
/// WGSL's `max` drop it): the NaN itself is returned, so the GPU kernels,
/// which select the same operand, give the same bits.
pub(crate) fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() {
        a
    } else if b.is_nan() {
        b
    } else {
        a.max(b)
    }
}

/// `min(a, b)` where a NaN operand wins, as [`max_nan`].
pub(crate) fn min_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() {
        a
    } else if b.is_nan() {
        b
    } else {
        a.min(b)
    }
}

/// `ln(1 + exp(x))` without overflow. `ln_1p` keeps the tail for very
/// negative x, where `1 + exp(x)` rounds to 1 (WGSL has no `log1p`; the
/// kernels sum its series instead).
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Below this |x|, `erf` sums its Taylor series: A&S 7.1.26's absolute error
/// (up to 1.5e-7) is a large relative error near 0, while the series through
/// x^11 is off by less than its next term (1.5e-8 at 0.5).
const ERF_SERIES_BELOW: f32 = 0.5;

/// `erf(x)`, the formula the WGSL kernels use.
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    if a < ERF_SERIES_BELOW {
        // 2/sqrt(pi) * (-1)^n / (n! (2n + 1)), n = 0..=5.
        let x2 = x * x;
        let p = -0.000_854_832_7 * x2 + 0.005_223_978;
        let p = p * x2 - 0.026_866_172;
        let p = p * x2 + 0.112_837_92;
        let p = p * x2 - 0.376_126_38;
        let p = p * x2 + std::f32::consts::FRAC_2_SQRT_PI;
        return x * p;
    }
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-a * a).exp();
    if x < 0.0 { -y } else { y }
}

impl Activation {
    /// Whether every executor computes it with the same bits: only
    /// comparisons, selects and one multiplication by a constant, no
    /// transcendental function, division or square root (whose accuracy
    /// WGSL leaves to the GPU).
    pub fn same_bits_everywhere(&self) -> bool {
        matches!(
            self,
            Activation::Identity
                | Activation::Relu
                | Activation::LeakyRelu { .. }
                | Activation::PRelu { .. }
                | Activation::Clip { .. }
                | Activation::Abs
                | Activation::Neg
        )
    }

    /// Applies the activation to one value of channel `c`.
    pub fn apply(&self, x: f32, c: usize) -> f32 {
        match self {
            Activation::Identity => x,
            // Not `x.max(0.0)`, which turns NaN into 0: ONNX, numpy and
            // the GPU kernel keep it (as LeakyRelu and PRelu do here).
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Activation::PRelu { slope } => {
                let s = if slope.len() == 1 { slope[0] } else { slope[c] };
                if x < 0.0 { s * x } else { x }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            // NaN stays NaN (`max`/`min` alone would give a bound, or -inf
            // for a Clip without bounds); min > max gives max, as ONNX has it.
            Activation::Clip { min, max } => {
                if x.is_nan() {
                    x
                } else {
                    x.max(*min).min(*max)
                }
            }
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            // exp_m1: `exp(x) - 1` cancels near 0 (3–13 % off at |x| ≈ 1e-6).
            Activation::Elu { alpha } => {
                if x < 0.0 {
                    alpha * x.exp_m1()
                } else {
                    x
                }
            }
            Activation::Selu { alpha, gamma } => {
                if x <= 0.0 {
                    gamma * (alpha * x.exp_m1())
                } else {
                    gamma * x
                }
            }
            Activation::Softplus => softplus(x),
            Activation::Erf => erf(x),
            Activation::Gelu { tanh: false } => {
                0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
            }
            Activation::Gelu { tanh: true } => {
                0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
            }
            Activation::Mish => x * softplus(x).tanh(),
            Activation::Abs => x.abs(),
            Activation::Neg => -x,
            Activation::Exp => x.exp(),
            Activation::Log => x.ln(),
            Activation::Sqrt => x.sqrt(),
            Activation::Reciprocal => 1.0 / x,
        }
    }

    /// True for the identity activation.
    pub fn is_identity(&self) -> bool {
        matches!(self, Activation::Identity)
    }
}

/// 2-D convolution (also 1-D models lifted to 2-D at import), NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    /// Kernel `[M, C/group, kh, kw]`.
    pub weight: Arc<Tensor>,
    /// Bias `[M]`, if any.
    pub bias: Option<Arc<Vec<f32>>>,
    /// `[sh, sw]`.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`, explicit (auto_pad resolved at import).
    pub pads: [usize; 4],
    /// `[dh, dw]`.
    pub dilations: [usize; 2],
    /// Number of groups (C for depthwise).
    pub group: usize,
    /// Activation applied after bias and the optional residual.
    pub activation: Activation,
}

/// Transposed 2-D convolution, NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose {
    /// Kernel `[C, M/group, kh, kw]` (ONNX layout).
    pub weight: Arc<Tensor>,
    /// Bias `[M]`, if any.
    pub bias: Option<Arc<Vec<f32>>>,
    /// `[sh, sw]`.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`, explicit (output_shape / auto_pad resolved at import).
    pub pads: [usize; 4],
    /// `[dh, dw]`.
    pub dilations: [usize; 2],
    /// `[oph, opw]` extra rows/cols at the bottom/right.
    pub output_padding: [usize; 2],
    /// Number of groups.
    pub group: usize,
    /// Fused activation.
    pub activation: Activation,
}

/// Max or average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum over the window (padding never wins).
    Max,
    /// Mean over the window.
    Average {
        /// Divide by the full kernel area (true) or by the in-bounds count (false).
        count_include_pad: bool,
    },
}

/// How a reduction across channels combines its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// The sum divided by the channel count.
    Mean,
    /// The largest value.
    Max,
    /// The smallest value.
    Min,
    /// The sum.
    Sum,
    /// The square root of the sum of squares.
    L2,
    /// The channel index of the first largest value, as a float.
    ArgMax,
    /// The channel index of the first smallest value, as a float.
    ArgMin,
}

/// Windowed 2-D pooling, NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// `[dh, dw]` (MaxPool only; 1 otherwise).
    pub dilations: [usize; 2],
    /// Output size rounds up; windows starting in the padding-free range only.
    pub ceil_mode: bool,
}

/// Elementwise binary ops with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`
    Max,
    /// `min(a, b)`
    Min,
}

impl BinaryKind {
    /// Applies the op.
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryKind::Add => a + b,
            BinaryKind::Sub => a - b,
            BinaryKind::Mul => a * b,
            BinaryKind::Div => a / b,
            BinaryKind::Max => max_nan(a, b),
            BinaryKind::Min => min_nan(a, b),
        }
    }
}

/// How output coordinates map to input coordinates in Resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordTransform {
    /// `(x + 0.5) / scale - 0.5`
    HalfPixel,
    /// Like half_pixel, but 0 when the output length is 1.
    PytorchHalfPixel,
    /// `x * (in - 1) / (out - 1)`
    AlignCorners,
    /// `x / scale`
    Asymmetric,
}

/// Rounding rule for nearest-neighbour Resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    /// Round half down.
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// Floor.
    Floor,
    /// Ceil.
    Ceil,
}

/// Interpolation of Resize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    /// Nearest neighbour with a rounding rule.
    Nearest(NearestMode),
    /// Bilinear over H and W.
    Linear,
    /// Bicubic over H and W (Keys' kernel), four taps per axis.
    Cubic {
        /// The kernel's `a` (ONNX `cubic_coeff_a`: -0.75, as PyTorch).
        a: f32,
        /// Taps outside the map weigh 0 and the rest are renormalised,
        /// instead of reading the edge pixel.
        exclude_outside: bool,
    },
}

/// Channel order of DepthToSpace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepthToSpaceMode {
    /// Depth-column-row (the ONNX default).
    Dcr,
    /// Column-row-depth (PixelShuffle).
    Crd,
}

/// Where [`Op::BorderPad`] reads a padded position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BorderMode {
    /// Mirrored without repeating the edge (`-1` reads `1`).
    Reflect,
    /// The nearest edge element.
    Edge,
}

/// One operator. Inputs and outputs are the owning [`crate::ir::Node`]'s value lists.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Convolution. Inputs: `[x]` or `[x, residual]`; with a residual the
    /// store is `activation(conv(x) + bias + residual)` (a fused residual Add).
    Conv(Conv),
    /// Transposed convolution. Inputs: `[x]`.
    ConvTranspose(ConvTranspose),
    /// Max / average pooling. Inputs: `[x]`.
    Pool(Pool),
    /// Global max / average pooling to `[N, C, 1, 1]`. Inputs: `[x]`.
    GlobalPool(PoolKind),
    /// Reduction across the channels of each position, `[N, C, …]` to
    /// `[N, 1, …]`, in ascending channel order. Inputs: `[x]`.
    ChannelReduce(ReduceKind),
    /// Dense layer `y = activation(x · W + b)` for `x: [N, K]`, `W: [K, M]`.
    /// (Gemm with a constant B and MatMul with a constant rank-2 right side.)
    Dense {
        /// `[K, M]`.
        weight: Arc<Tensor>,
        /// `[M]`, if any.
        bias: Option<Arc<Vec<f32>>>,
        /// Fused activation.
        activation: Activation,
    },
    /// General numpy-style matrix product of two runtime tensors. Inputs: `[a, b]`.
    MatMul,
    /// Elementwise activation. Inputs: `[x]`.
    Activation(Activation),
    /// Elementwise binary op with broadcasting, then an activation.
    /// Inputs: `[a, b]` (either may be a graph constant).
    Binary {
        /// The op.
        kind: BinaryKind,
        /// Fused activation applied to the result.
        activation: Activation,
    },
    /// Per-channel `x * scale[c] + shift[c]` (an unfolded BatchNormalization).
    ChannelAffine {
        /// `[C]`.
        scale: Arc<Vec<f32>>,
        /// `[C]`.
        shift: Arc<Vec<f32>>,
    },
    /// Concatenation along `axis` (non-negative). Inputs: any number.
    Concat {
        /// Axis.
        axis: usize,
    },
    /// Any shape change that keeps row-major order (Flatten, Reshape,
    /// Squeeze, Unsqueeze after folding). The target is the output value's shape.
    Reshape,
    /// Axis permutation (rank ≤ 5).
    Transpose {
        /// `out.dim(i) = in.dim(perm[i])`.
        perm: Vec<usize>,
    },
    /// Softmax over `axis` (ONNX ≥ 13 meaning; earlier opsets are
    /// rewritten at import to Reshape + Softmax + Reshape).
    Softmax {
        /// Axis (non-negative).
        axis: usize,
    },
    /// Log of the softmax over `axis`, as `x - max - ln(Σ exp(x - max))`
    /// (finite where the softmax itself underflows to 0).
    LogSoftmax {
        /// Axis (non-negative).
        axis: usize,
    },
    /// Local response normalisation across channels.
    Lrn {
        /// Window size (channels).
        size: usize,
        /// Scale.
        alpha: f32,
        /// Exponent.
        beta: f32,
        /// Additive bias.
        bias: f32,
    },
    /// Instance normalisation of an NCHW map: each (image, channel) plane
    /// to zero mean and unit variance, then `scale[c] * x + bias[c]` (a
    /// statistic of the whole plane: never tiled).
    InstanceNorm {
        /// Per-channel scale.
        scale: Arc<Vec<f32>>,
        /// Per-channel bias.
        bias: Arc<Vec<f32>>,
        /// Added to the variance.
        epsilon: f32,
    },
    /// Layer normalisation over the trailing dims from `axis` on: each
    /// row of those dims to zero mean and unit variance, then
    /// `scale[k] * x + bias[k]` (statistics of whole rows: never tiled).
    LayerNorm {
        /// First normalised dim.
        axis: usize,
        /// Scale per element of a row.
        scale: Arc<Vec<f32>>,
        /// Bias per element of a row.
        bias: Arc<Vec<f32>>,
        /// Added to the variance.
        epsilon: f32,
    },
    /// Constant padding of an NCHW map (only H and W padded after import).
    Pad {
        /// `[top, left, bottom, right]`.
        pads: [usize; 4],
        /// Fill value.
        value: f32,
    },
    /// Reflect or edge padding of H and W of an NCHW map (not tiled: a
    /// tile's border would mirror its own rows, not the map's).
    BorderPad {
        /// `[top, left, bottom, right]`.
        pads: [usize; 4],
        /// What a padded position reads.
        mode: BorderMode,
    },
    /// Resize / Upsample over H and W of an NCHW map; the output size is the output value's shape.
    Resize {
        /// Interpolation.
        mode: ResizeMode,
        /// Coordinate transform.
        coord: CoordTransform,
        /// `[scale_h, scale_w]` used by the coordinate transform.
        scales: [f32; 2],
    },
    /// Spatial crop of an NCHW map: `out[n, c, y, x] = in[n, c, y + offset[0], x + offset[1]]`,
    /// output extent stated by the output value's shape. Tiling inserts it where
    /// a DAG branch needs less of a map than its sibling computed.
    Crop {
        /// `[top, left]` offset into the input.
        offset: [usize; 2],
    },
    /// DepthToSpace.
    DepthToSpace {
        /// Block size.
        blocksize: usize,
        /// Channel order.
        mode: DepthToSpaceMode,
    },
    /// Channels `start .. start + len` of an NCHW map (ONNX Split and Slice
    /// along the channels).
    ChannelSlice {
        /// First channel.
        start: usize,
        /// Number of channels.
        len: usize,
    },
}

impl Op {
    /// Whether the CPU and GPU executors give it the same bits (subnormals
    /// aside, which a GPU may flush): one rounded sum, difference or product
    /// with the activations of [`Activation::same_bits_everywhere`], maxima,
    /// and data movement. Not a convolution or a dense layer: the GPU
    /// kernels accumulate with WGSL `fma`, fused on most GPUs (lavapipe
    /// splits it, so there the bits agree) where the CPU rounds twice; nor an
    /// average, a division, a norm, a softmax or an interpolation.
    pub fn same_bits_everywhere(&self) -> bool {
        match self {
            Op::Binary { kind, activation } => {
                !matches!(kind, BinaryKind::Div) && activation.same_bits_everywhere()
            }
            Op::Activation(a) => a.same_bits_everywhere(),
            Op::Pool(Pool {
                kind: PoolKind::Max,
                ..
            })
            | Op::GlobalPool(PoolKind::Max)
            | Op::ChannelReduce(ReduceKind::Max | ReduceKind::Min)
            | Op::Concat { .. }
            | Op::Reshape
            | Op::Transpose { .. }
            | Op::Pad { .. }
            | Op::BorderPad { .. }
            | Op::Crop { .. }
            | Op::DepthToSpace { .. }
            | Op::ChannelSlice { .. } => true,
            // Nearest source pixels are computed on the host for both.
            Op::Resize { mode, .. } => matches!(mode, ResizeMode::Nearest(_)),
            _ => false,
        }
    }

    /// A short lowercase name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(c) if c.group > 1 && c.group == c.weight.shape()[0] => "dwconv",
            Op::Conv(_) => "conv",
            Op::ConvTranspose(_) => "convtranspose",
            Op::Pool(Pool {
                kind: PoolKind::Max,
                ..
            }) => "maxpool",
            Op::Pool(_) => "avgpool",
            Op::GlobalPool(_) => "globalpool",
            Op::ChannelReduce(_) => "channelreduce",
            Op::Dense { .. } => "dense",
            Op::MatMul => "matmul",
            Op::Activation(_) => "activation",
            Op::Binary { .. } => "binary",
            Op::ChannelAffine { .. } => "channelaffine",
            Op::Concat { .. } => "concat",
            Op::Reshape => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "logsoftmax",
            Op::Lrn { .. } => "lrn",
            Op::InstanceNorm { .. } => "instancenorm",
            Op::LayerNorm { .. } => "layernorm",
            Op::Pad { .. } => "pad",
            Op::BorderPad { .. } => "borderpad",
            Op::Resize { .. } => "resize",
            Op::Crop { .. } => "crop",
            Op::DepthToSpace { .. } => "depthtospace",
            Op::ChannelSlice { .. } => "channelslice",
        }
    }
}
