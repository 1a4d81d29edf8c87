// Softmax over one axis: one invocation per (outer, inner) position makes
// three ordered passes (max, sum of exp, normalise) along the axis; with
// LOG = 1 the last pass writes its logarithm, x - max - log(sum), which
// stays finite where exp(x - max) / sum underflows.
// `layer_norm`: one invocation per row (outer = rows, len = row length,
// eps bits) makes three ordered passes.
// `instance_norm`: one workgroup of 64 per (image, channel) plane reduces
// its mean and variance in workgroup memory, then normalises
// (params: outer = planes, len = plane size, inner = channels, eps bits).
// Both sum x - x0, x0 the row's first value, not x: in a row far from 0
// (1000 + noise) x - x0 is exact and small, so the f32 sums keep the noise
// that a running sum of x rounds off, and the mean is never rounded to one
// f32 near 1000 (the CPU sums in f64 instead).

override LOG: u32 = 0u;

struct Params {
    outer: u32, len: u32, inner: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
// instance_norm, layer_norm: scales, then biases.
@group(0) @binding(2) var<storage, read> wt: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.outer * p.inner {
        return;
    }
    let base = (i / p.inner) * p.len * p.inner + i % p.inner;
    var mx = -bitcast<f32>(0x7f800000u);
    for (var k = 0u; k < p.len; k++) {
        mx = max(mx, src[base + k * p.inner]);
    }
    var sum = 0.0;
    for (var k = 0u; k < p.len; k++) {
        sum += exp(src[base + k * p.inner] - mx);
    }
    if LOG == 1u {
        let ln_sum = log(sum);
        for (var k = 0u; k < p.len; k++) {
            dst[base + k * p.inner] = (src[base + k * p.inner] - mx) - ln_sum;
        }
        return;
    }
    for (var k = 0u; k < p.len; k++) {
        dst[base + k * p.inner] = exp(src[base + k * p.inner] - mx) / sum;
    }
}

var<workgroup> part: array<f32, 64>;

// Sum of `part` over the workgroup, left in part[0].
fn reduce64(li: u32) {
    for (var off = 32u; off > 0u; off = off >> 1u) {
        if li < off {
            part[li] += part[li + off];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(64)
fn instance_norm(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) li: u32,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = wid.x + wid.y * nwg.x;
    if plane >= p.outer {
        return;
    }
    let base = plane * p.len;
    let x0 = src[base];
    var s = 0.0;
    for (var k = li; k < p.len; k += 64u) {
        s += src[base + k] - x0;
    }
    part[li] = s;
    workgroupBarrier();
    reduce64(li);
    let m = part[0] / f32(p.len);
    workgroupBarrier();
    var v = 0.0;
    for (var k = li; k < p.len; k += 64u) {
        let d = (src[base + k] - x0) - m;
        v += d * d;
    }
    part[li] = v;
    workgroupBarrier();
    reduce64(li);
    let inv = 1.0 / sqrt(part[0] / f32(p.len) + bitcast<f32>(p._p0));
    let c = plane % p.inner;
    for (var k = li; k < p.len; k += 64u) {
        dst[base + k] = ((src[base + k] - x0) - m) * inv * wt[c] + wt[p.inner + c];
    }
}

@compute @workgroup_size(WG)
fn layer_norm(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.outer {
        return;
    }
    let base = i * p.len;
    let x0 = src[base];
    var s = 0.0;
    for (var k = 0u; k < p.len; k++) {
        s += src[base + k] - x0;
    }
    let m = s / f32(p.len);
    var v = 0.0;
    for (var k = 0u; k < p.len; k++) {
        let d = (src[base + k] - x0) - m;
        v += d * d;
    }
    let inv = 1.0 / sqrt(v / f32(p.len) + bitcast<f32>(p._p0));
    for (var k = 0u; k < p.len; k++) {
        dst[base + k] = ((src[base + k] - x0) - m) * inv * wt[k] + wt[p.len + k];
    }
}
