// MatMul of two runtime tensors with numpy batch broadcasting: one output
// element per invocation. Batch dims (up to 4, outermost first) come with
// per-operand element strides (0 where broadcast).

struct Params {
    rows: u32, k: u32, cols: u32, batch: u32,
    bdims: vec4<u32>,
    astr: vec4<u32>,
    bstr: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    let mat = p.rows * p.cols;
    if i >= p.batch * mat {
        return;
    }
    let col = i % p.cols;
    let row = (i / p.cols) % p.rows;
    var bi = i / mat;
    var aoff = 0u;
    var boff = 0u;
    for (var d = 3; d >= 0; d--) {
        let e = bi % p.bdims[d];
        bi = bi / p.bdims[d];
        aoff += e * p.astr[d];
        boff += e * p.bstr[d];
    }
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        acc = fma(a[aoff + row * p.k + k], b[boff + k * p.cols + col], acc);
    }
    dst[i] = acc;
}
