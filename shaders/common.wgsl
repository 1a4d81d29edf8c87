// Prepended to every kernel file by the executor (and by the naga test):
// the shared bindings, the activation epilogue and the dispatch index.
//
// Binding convention of every kernel (one bind group layout for all):
//   0 uniform params (declared by the kernel), 1 src (kernel), 2 weights (kernel),
//   3 bias, 4 PRelu slopes, 5 residual, 6 dst (declared here).

// Invocations per workgroup (1-D); tuned per layer.
override WG: u32 = 64u;
// Activation: 0 identity, 1 relu, 2 leaky relu, 3 prelu, 4 sigmoid, 5 tanh,
// 6 clip, 7 hard sigmoid, 8 hard swish, 9 elu, 10 selu, 11 softplus, 12 erf,
// 13 gelu, 14 gelu (tanh approximation), 15 mish, 16 abs, 17 neg, 18 exp,
// 19 log, 20 sqrt, 21 reciprocal.
override ACT: u32 = 0u;
// Fused bias add in the store.
override HAS_BIAS: bool = false;
// Fused residual add in the store (`act(acc + bias + residual)`).
override HAS_RES: bool = false;

@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> slope: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;

// From the bits: WGSL lets a compiler assume there is no NaN, and GL's
// folds a comparison with one (Relu of NaN gave 0 on llvmpipe's GL).
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// max and min where a NaN operand wins, as the CPU executor's max_nan and
// min_nan (WGSL's max and min may drop it).
fn max_nan(a: f32, b: f32) -> f32 {
    return select(select(max(a, b), b, is_nan(b)), a, is_nan(a));
}

fn min_nan(a: f32, b: f32) -> f32 {
    return select(select(min(a, b), b, is_nan(b)), a, is_nan(a));
}

fn activate(x: f32, c: u32, alpha: f32, beta: f32) -> f32 {
    switch ACT {
        // NaN passes through as ONNX says (max/min would drop it).
        case 1u: { return select(select(x, 0.0, x < 0.0), x, is_nan(x)); }
        case 2u: { return select(x, alpha * x, x < 0.0); }
        case 3u: {
            let n = arrayLength(&slope);
            let s = slope[select(c, 0u, n == 1u)];
            return select(x, s * x, x < 0.0);
        }
        case 4u: { return 1.0 / (1.0 + exp(-x)); }
        case 5u: { return tanh_small(x); }
        case 6u: { return select(min(max(x, alpha), beta), x, is_nan(x)); }
        case 7u: {
            let v = alpha * x + beta;
            return select(clamp(v, 0.0, 1.0), v, is_nan(v));
        }
        case 8u: { return x * clamp(x / 6.0 + 0.5, 0.0, 1.0); }
        case 9u: { return select(x, alpha * expm1(x), x < 0.0); }
        case 10u: { return select(beta * x, beta * (alpha * expm1(x)), x <= 0.0); }
        case 11u: { return softplus(x); }
        case 12u: { return erf_approx(x); }
        case 13u: { return 0.5 * x * (1.0 + erf_approx(x * 0.70710677)); }
        case 14u: { return 0.5 * x * (1.0 + tanh_small(0.7978846 * (x + 0.044715 * x * x * x))); }
        case 15u: { return x * tanh_small(softplus(x)); }
        case 16u: { return abs(x); }
        case 17u: { return -x; }
        case 18u: { return exp(x); }
        case 19u: { return log(x); }
        case 20u: { return sqrt(x); }
        case 21u: { return 1.0 / x; }
        default: { return x; }
    }
}

// e^x - 1. WGSL has no expm1, and exp(x) - 1.0 cancels near 0 (3-13 %
// off at |x| = 1e-6): below |x| = 0.5 its Taylor series through x^10
// (the rest < 2e-11 relative), above it the plain difference.
fn expm1(x: f32) -> f32 {
    if (abs(x) < 0.5) {
        var t = 1.0 + x / 10.0;
        t = 1.0 + x / 9.0 * t;
        t = 1.0 + x / 8.0 * t;
        t = 1.0 + x / 7.0 * t;
        t = 1.0 + x / 6.0 * t;
        t = 1.0 + x / 5.0 * t;
        t = 1.0 + x / 4.0 * t;
        t = 1.0 + x / 3.0 * t;
        t = 1.0 + x / 2.0 * t;
        return x * t;
    }
    return exp(x) - 1.0;
}

// ln(1 + exp(x)) without overflow above x ≈ 88. WGSL has no log1p, and
// log(1.0 + y) drops y once 1 + y rounds to 1 (0 below x ≈ -17), so
// ln(1 + y) for y = exp(-|x|) in (0, 1] is taken as 2 atanh(s) with
// s = y / (2 + y) <= 1/3, summed through s^13 (the rest < 1.5e-8 relative).
fn softplus(x: f32) -> f32 {
    let y = exp(-abs(x));
    let s = y / (2.0 + y);
    let s2 = s * s;
    let p = 1.0 + s2 * (0.33333334 + s2 * (0.2 + s2 * (0.14285715 + s2 * (0.11111111
        + s2 * (0.09090909 + s2 * 0.07692308)))));
    return max(x, 0.0) + 2.0 * s * p;
}

// A builtin tanh computed as (e^2x - 1) / (e^2x + 1) loses its relative
// accuracy near 0 (7 % at 1e-6 on lavapipe); below 0.3 the odd Taylor series
// through x^9 is within 5e-8 relative. The CPU uses Rust's tanh.
fn tanh_small(x: f32) -> f32 {
    if abs(x) >= 0.3 {
        return tanh(x);
    }
    let x2 = x * x;
    return x * (1.0 + x2 * (-0.33333334 + x2 * (0.13333334 + x2 * (-0.053968254
        + x2 * 0.021869488))));
}

// erf as on the CPU: the Taylor series below |x| = 0.5 (A&S's absolute
// error is a large relative one near 0), else Abramowitz and Stegun 7.1.26
// (|error| < 1.5e-7).
fn erf_approx(x: f32) -> f32 {
    let a = abs(x);
    if a < 0.5 {
        let x2 = x * x;
        var q = -0.0008548327 * x2 + 0.005223978;
        q = q * x2 - 0.026866172;
        q = q * x2 + 0.11283792;
        q = q * x2 - 0.37612638;
        q = q * x2 + 1.1283792;
        return x * q;
    }
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.2548296 + t * (-0.28449674 + t * (1.4214138 + t * (-1.4531521 + t * 1.0614054))));
    let y = 1.0 - poly * exp(-a * a);
    return select(y, -y, x < 0.0);
}

// The store of every producing kernel: bias, residual, activation, and a
// write into channel `oc_off + m` of a map with `oc_total` channels (so a
// Concat consumer's buffer is written in place).
fn store_nchw(acc: f32, n: u32, m: u32, m_total: u32, pix: u32, plane: u32,
              oc_total: u32, oc_off: u32, alpha: f32, beta: f32) {
    var v = acc;
    if HAS_BIAS {
        v = v + bias[m];
    }
    if HAS_RES {
        v = v + res[(n * m_total + m) * plane + pix];
    }
    dst[(n * oc_total + oc_off + m) * plane + pix] = activate(v, m, alpha, beta);
}

// Dispatches are 2-D when one dimension would exceed the workgroup-count limit.
fn flat_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}
