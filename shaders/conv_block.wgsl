// Register-blocked convolution (implicit GEMM with direct loads): each
// invocation computes 4 output channels x 4 consecutive output pixels of one
// row, so every input value loaded feeds 4 FMAs and every weight vector 4.
// Kernel size, stride and dilation are pipeline constants, so the inner
// loops unroll and a 1x1 stride-1 conv becomes a plain GEMM.
// Needs (M / group) % 4 == 0 or group == 1; weights packed as
// [C/group * KH * KW][ceil(M/4)] vec4, zero-padded past M.
// Accumulation order: input channel, kernel row, kernel column, for every
// output element alike (padding contributes an exact 0 * w).

override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override DH: u32 = 1u;
override DW: u32 = 1u;

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    m: u32, oh: u32, ow: u32, pt: u32,
    pl: u32, group: u32, m4: u32, ow4: u32,
    oc_total: u32, oc_off: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;

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
    // Pixel blocks vary fastest: neighbouring invocations share weights.
    let pb = i % blocks;
    let mb = (i / blocks) % p.m4;
    let n = i / (blocks * p.m4);
    if n >= p.n {
        return;
    }
    let oy = pb / p.ow4;
    let ox0 = (pb % p.ow4) * 4u;
    let cg = p.c / p.group;
    let g = (mb * 4u) / (p.m / p.group);
    let hw = p.h * p.w;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var wi = mb;
    for (var ci = 0u; ci < cg; ci++) {
        let cbase = (n * p.c + g * cg + ci) * hw;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = i32(oy * SH + ky * DH) - i32(p.pt);
            let row_ok = iy >= 0 && iy < i32(p.h);
            let rbase = cbase + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
            for (var kx = 0u; kx < KW; kx++) {
                let wv = wt[wi];
                wi += p.m4;
                let ix = i32(ox0 * SW + kx * DW) - i32(p.pl);
                a0 = fma(wv, vec4<f32>(load_x(rbase, row_ok, ix)), a0);
                a1 = fma(wv, vec4<f32>(load_x(rbase, row_ok, ix + i32(SW))), a1);
                a2 = fma(wv, vec4<f32>(load_x(rbase, row_ok, ix + 2 * i32(SW))), a2);
                a3 = fma(wv, vec4<f32>(load_x(rbase, row_ok, ix + 3 * i32(SW))), a3);
            }
        }
    }
    let plane = p.oh * p.ow;
    var acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var j = 0u; j < 4u; j++) {
        let ox = ox0 + j;
        if ox >= p.ow {
            break;
        }
        for (var k = 0u; k < 4u; k++) {
            let m = mb * 4u + k;
            if m < p.m {
                store_nchw(acc[j][k], n, m, p.m, oy * p.ow + ox, plane,
                           p.oc_total, p.oc_off, p.alpha, p.beta);
            }
        }
    }
}
