// Naive convolution: one output element per invocation, direct loads.
// The benchmark baseline and the fallback for any conv (groups, dilation).
// Accumulation order: input channel, then kernel row, then kernel column.

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    m: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, pt: u32,
    pl: u32, dh: u32, dw: u32, group: u32,
    oc_total: u32, oc_off: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
// [M, C/group, kh, kw]
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
    let g = m / (p.m / p.group);
    var acc = 0.0;
    for (var ci = 0u; ci < cg; ci++) {
        let cbase = (n * p.c + g * cg + ci) * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.sh + ky * p.dh) - i32(p.pt);
            if iy < 0 || iy >= i32(p.h) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pl);
                if ix < 0 || ix >= i32(p.w) {
                    continue;
                }
                let wv = wt[((m * cg + ci) * p.kh + ky) * p.kw + kx];
                acc = fma(src[cbase + u32(iy) * p.w + u32(ix)], wv, acc);
            }
        }
    }
    store_nchw(acc, n, m, p.m, pix, plane, p.oc_total, p.oc_off, p.alpha, p.beta);
}
