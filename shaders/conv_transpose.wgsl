// Transposed convolution as a gather: one output element per invocation
// visits the input pixels whose scatter would reach it.
// Weights in the ONNX layout [C, M/group, kh, kw].
// Accumulation order: input channel of the group, kernel row, kernel column.

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    m: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, pt: u32,
    pl: u32, dh: u32, dw: u32, group: u32,
    oc_total: u32, oc_off: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    let plane = p.oh * p.ow;
    if i >= p.n * p.m * plane {
        return;
    }
    let pix = i % plane;
    let ox = pix % p.ow;
    let oy = pix / p.ow;
    let m = (i / plane) % p.m;
    let n = i / (plane * p.m);
    let cg = p.c / p.group;
    let mg = p.m / p.group;
    let g = m / mg;
    let mi = m - g * mg;
    var acc = 0.0;
    for (var ci = 0u; ci < cg; ci++) {
        let c = g * cg + ci;
        let cbase = (n * p.c + c) * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let ty = i32(oy + p.pt) - i32(ky * p.dh);
            if ty < 0 || ty % i32(p.sh) != 0 {
                continue;
            }
            let iy = u32(ty) / p.sh;
            if iy >= p.h {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx++) {
                let tx = i32(ox + p.pl) - i32(kx * p.dw);
                if tx < 0 || tx % i32(p.sw) != 0 {
                    continue;
                }
                let ix = u32(tx) / p.sw;
                if ix >= p.w {
                    continue;
                }
                let wv = wt[((c * mg + mi) * p.kh + ky) * p.kw + kx];
                acc = fma(src[cbase + iy * p.w + ix], wv, acc);
            }
        }
    }
    store_nchw(acc, n, m, p.m, pix, plane, p.oc_total, p.oc_off, p.alpha, p.beta);
}
