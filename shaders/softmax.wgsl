// Softmax over one axis: one invocation per (outer, inner) position makes
// three ordered passes (max, sum of exp, normalise) along the axis.

struct Params {
    outer: u32, len: u32, inner: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;

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
    for (var k = 0u; k < p.len; k++) {
        dst[base + k * p.inner] = exp(src[base + k * p.inner] - mx) / sum;
    }
}
