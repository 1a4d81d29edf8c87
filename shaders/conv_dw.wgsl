// Depthwise / grouped convolution: each invocation computes 4 consecutive
// output pixels of one output channel, looping over that channel's group
// (one input channel for depthwise). Kernel geometry is pipeline constants.
// Weights in the IR layout [M, C/group, KH, KW].
// Accumulation order: input channel of the group, kernel row, kernel column.

override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override DH: u32 = 1u;
override DW: u32 = 1u;

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    m: u32, oh: u32, ow: u32, pt: u32,
    pl: u32, group: u32, ow4: u32, _pad: u32,
    oc_total: u32, oc_off: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;

fn load_x(rbase: u32, row_ok: bool, ix: i32) -> f32 {
    let ok = row_ok && ix >= 0 && ix < i32(p.w);
    let v = src[rbase + u32(clamp(ix, 0, i32(p.w) - 1))];
    return select(0.0, v, ok);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    let blocks = p.oh * p.ow4;
    let pb = i % blocks;
    let m = (i / blocks) % p.m;
    let n = i / (blocks * p.m);
    if n >= p.n {
        return;
    }
    let oy = pb / p.ow4;
    let ox0 = (pb % p.ow4) * 4u;
    let cg = p.c / p.group;
    let g = m / (p.m / p.group);
    let hw = p.h * p.w;
    var acc = vec4<f32>(0.0);
    for (var ci = 0u; ci < cg; ci++) {
        let cbase = (n * p.c + g * cg + ci) * hw;
        let wbase = (m * cg + ci) * KH * KW;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = i32(oy * SH + ky * DH) - i32(p.pt);
            let row_ok = iy >= 0 && iy < i32(p.h);
            let rbase = cbase + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
            if KW == 3u && SW == 1u && DW == 1u {
                // The common 3-wide stride-1 kernel: the row's 6 inputs are
                // loaded once for all three taps (12 loads before). Same
                // order of FMAs as the loop below, so the same bits.
                let ix = i32(ox0) - i32(p.pl);
                let x0 = load_x(rbase, row_ok, ix);
                let x1 = load_x(rbase, row_ok, ix + 1);
                let x2 = load_x(rbase, row_ok, ix + 2);
                let x3 = load_x(rbase, row_ok, ix + 3);
                let x4 = load_x(rbase, row_ok, ix + 4);
                let x5 = load_x(rbase, row_ok, ix + 5);
                let wr = wbase + ky * 3u;
                acc = fma(vec4<f32>(x0, x1, x2, x3), vec4<f32>(wt[wr]), acc);
                acc = fma(vec4<f32>(x1, x2, x3, x4), vec4<f32>(wt[wr + 1u]), acc);
                acc = fma(vec4<f32>(x2, x3, x4, x5), vec4<f32>(wt[wr + 2u]), acc);
                continue;
            }
            for (var kx = 0u; kx < KW; kx++) {
                let wv = wt[wbase + ky * KW + kx];
                let ix = i32(ox0 * SW + kx * DW) - i32(p.pl);
                let xs = vec4<f32>(load_x(rbase, row_ok, ix),
                                   load_x(rbase, row_ok, ix + i32(SW)),
                                   load_x(rbase, row_ok, ix + 2 * i32(SW)),
                                   load_x(rbase, row_ok, ix + 3 * i32(SW)));
                acc = fma(xs, vec4<f32>(wv), acc);
            }
        }
    }
    let plane = p.oh * p.ow;
    for (var j = 0u; j < 4u; j++) {
        let ox = ox0 + j;
        if ox < p.ow {
            store_nchw(acc[j], n, m, p.m, oy * p.ow + ox, plane,
                       p.oc_total, p.oc_off, p.alpha, p.beta);
        }
    }
}
