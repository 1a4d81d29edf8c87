// Local response normalisation across channels (ONNX): the window holds
// channels c - floor((size-1)/2) ..= c + ceil((size-1)/2), summed in order.

struct Params {
    n: u32, c: u32, hw: u32, size: u32,
    alpha: f32, beta: f32, bias: f32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.n * p.c * p.hw {
        return;
    }
    let pix = i % p.hw;
    let c = (i / p.hw) % p.c;
    let n = i / (p.hw * p.c);
    let lo = i32(c) - i32((p.size - 1u) / 2u);
    let hi = i32(c) + i32(p.size / 2u);
    var sum = 0.0;
    for (var k = max(lo, 0); k <= min(hi, i32(p.c) - 1); k++) {
        let v = src[(n * p.c + u32(k)) * p.hw + pix];
        sum = fma(v, v, sum);
    }
    let d = pow(p.bias + p.alpha / f32(p.size) * sum, p.beta);
    dst[i] = src[i] / d;
}
