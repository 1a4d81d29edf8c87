// Dense layer y = act(x . W + b), x [N, K], W packed as [K][ceil(M/4)] vec4.
// `gemv` (batch 1): one invocation per 4 outputs. `gemm` (batches): one
// invocation per 4 rows x 4 outputs, sharing each weight vector across rows.
// Both accumulate over k in order with one FMA per step, so an element's
// value does not depend on the variant or on the batch size.

struct Params {
    n: u32, k: u32, m: u32, m4: u32,
    alpha: f32, beta: f32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;

fn store4(acc: vec4<f32>, row: u32, mb: u32) {
    for (var j = 0u; j < 4u; j++) {
        let m = mb * 4u + j;
        if m < p.m {
            store_nchw(acc[j], row, m, p.m, 0u, 1u, p.m, 0u, p.alpha, p.beta);
        }
    }
}

@compute @workgroup_size(WG)
fn gemv(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    let mb = i % p.m4;
    let row = i / p.m4;
    if row >= p.n {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        acc = fma(vec4<f32>(src[row * p.k + k]), wt[k * p.m4 + mb], acc);
    }
    store4(acc, row, mb);
}

@compute @workgroup_size(WG)
fn gemm(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    let mb = i % p.m4;
    let r0 = (i / p.m4) * 4u;
    if r0 >= p.n {
        return;
    }
    // Rows past N read row N-1 (in bounds) and are not stored.
    let r1 = min(r0 + 1u, p.n - 1u);
    let r2 = min(r0 + 2u, p.n - 1u);
    let r3 = min(r0 + 3u, p.n - 1u);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let wv = wt[k * p.m4 + mb];
        a0 = fma(vec4<f32>(src[r0 * p.k + k]), wv, a0);
        a1 = fma(vec4<f32>(src[r1 * p.k + k]), wv, a1);
        a2 = fma(vec4<f32>(src[r2 * p.k + k]), wv, a2);
        a3 = fma(vec4<f32>(src[r3 * p.k + k]), wv, a3);
    }
    store4(a0, r0, mb);
    if r0 + 1u < p.n { store4(a1, r0 + 1u, mb); }
    if r0 + 2u < p.n { store4(a2, r0 + 2u, mb); }
    if r0 + 3u < p.n { store4(a3, r0 + 3u, mb); }
}
