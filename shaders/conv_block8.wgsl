// Register-blocked convolution, 8 output channels x 8 consecutive output
// pixels of one row per invocation (two vec4 channel blocks): every input
// value loaded feeds 8 FMAs and every weight vector 8. On llvmpipe this beats
// the 4x4 kernel (conv_block.wgsl) by about 1.5x: the loads, gathers one lane
// at a time, cost more than the FMAs, so the block is sized to cut loads.
// Kernel size, stride and dilation are pipeline constants. A 3-wide stride-1
// kernel (the common 3x3) reads each input row window (10 columns) once and
// reuses it for all three taps, a 5-wide one a 12-column window for its
// five; other shapes load per tap.
// Each (image, channel block pair) gets whole workgroups of pixel blocks, so
// the channel blocks, and with them the weight addresses, are uniform across
// a workgroup. Invocations past the last pixel block return at once: a
// narrow tile's last workgroup is mostly such invocations, and computing a
// clamped block for them cost a row strip 5-10 % over the whole map's rate
// per FLOP on lavapipe (whose SIMD lanes skip a chunk whose lanes all left).
// Needs (M / group) % 8 == 0 or group == 1 (channels past M are computed
// from a clamped weight block and not stored); weights packed as for
// conv_block.wgsl: [C/group * KH * KW][ceil(M/4)] vec4, zero-padded past M.
// Accumulation order: input channel, kernel row, kernel column, for every
// output element alike (padding contributes an exact 0 * w), the same as
// conv_block.wgsl and independent of the tensor extent.

override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override DH: u32 = 1u;
override DW: u32 = 1u;

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    m: u32, oh: u32, ow: u32, pt: u32,
    pl: u32, group: u32, m4: u32, owb: u32,
    oc_total: u32, oc_off: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
// The same packed weights as a texture, column = channel block, row = tap.
// llvmpipe fetches a texel as one 16-byte load per lane; a storage vec4 in
// a loop costs four scalar loads per lane, each behind a branch and a
// bounds check, and on a 3x3 64->64 layer those weight loads were about
// two thirds of the kernel's time.
@group(0) @binding(7) var wtex: texture_2d<f32>;
override WTEX: bool = false;

fn wload(col: u32, row: u32) -> vec4<f32> {
    if WTEX {
        return textureLoad(wtex, vec2<u32>(col, row), 0);
    }
    return wt[row * p.m4 + col];
}

fn load_x(rbase: u32, row_ok: bool, ix: i32) -> f32 {
    let ok = row_ok && ix >= 0 && ix < i32(p.w);
    let v = src[rbase + u32(clamp(ix, 0, i32(p.w) - 1))];
    return select(0.0, v, ok);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let blocks = p.oh * p.owb;
    let wpp = (blocks + WG - 1u) / WG;
    let mbs = (p.m4 + 1u) / 2u;
    let wgi = wid.x + wid.y * nwg.x;
    let mb = ((wgi / wpp) % mbs) * 2u;
    let n = wgi / (wpp * mbs);
    if n >= p.n {
        return;
    }
    let pb = (wgi % wpp) * WG + lid;
    if pb >= blocks {
        return;
    }
    let oy = pb / p.owb;
    let ox0 = (pb % p.owb) * 8u;
    let cg = p.c / p.group;
    let g = (mb * 4u) / (p.m / p.group);
    let hw = p.h * p.w;
    let m4 = p.m4;

    var a0_0 = vec4<f32>(0.0);
    var a0_1 = vec4<f32>(0.0);
    var a0_2 = vec4<f32>(0.0);
    var a0_3 = vec4<f32>(0.0);
    var a0_4 = vec4<f32>(0.0);
    var a0_5 = vec4<f32>(0.0);
    var a0_6 = vec4<f32>(0.0);
    var a0_7 = vec4<f32>(0.0);
    var a1_0 = vec4<f32>(0.0);
    var a1_1 = vec4<f32>(0.0);
    var a1_2 = vec4<f32>(0.0);
    var a1_3 = vec4<f32>(0.0);
    var a1_4 = vec4<f32>(0.0);
    var a1_5 = vec4<f32>(0.0);
    var a1_6 = vec4<f32>(0.0);
    var a1_7 = vec4<f32>(0.0);
    let col0 = min(mb + 0u, m4 - 1u);
    let col1 = min(mb + 1u, m4 - 1u);
    var wr = 0u;
    let ix0 = i32(ox0 * SW) - i32(p.pl);
    if KW == 3u && SW == 1u && DW == 1u {
        // Column clamps and masks depend only on the pixel, not the channel.
        let wl = i32(p.w) - 1;
        let c0 = u32(clamp(ix0 + 0, 0, wl));
        let k0 = ix0 + 0 >= 0 && ix0 + 0 <= wl;
        let c1 = u32(clamp(ix0 + 1, 0, wl));
        let k1 = ix0 + 1 >= 0 && ix0 + 1 <= wl;
        let c2 = u32(clamp(ix0 + 2, 0, wl));
        let k2 = ix0 + 2 >= 0 && ix0 + 2 <= wl;
        let c3 = u32(clamp(ix0 + 3, 0, wl));
        let k3 = ix0 + 3 >= 0 && ix0 + 3 <= wl;
        let c4 = u32(clamp(ix0 + 4, 0, wl));
        let k4 = ix0 + 4 >= 0 && ix0 + 4 <= wl;
        let c5 = u32(clamp(ix0 + 5, 0, wl));
        let k5 = ix0 + 5 >= 0 && ix0 + 5 <= wl;
        let c6 = u32(clamp(ix0 + 6, 0, wl));
        let k6 = ix0 + 6 >= 0 && ix0 + 6 <= wl;
        let c7 = u32(clamp(ix0 + 7, 0, wl));
        let k7 = ix0 + 7 >= 0 && ix0 + 7 <= wl;
        let c8 = u32(clamp(ix0 + 8, 0, wl));
        let k8 = ix0 + 8 >= 0 && ix0 + 8 <= wl;
        let c9 = u32(clamp(ix0 + 9, 0, wl));
        let k9 = ix0 + 9 >= 0 && ix0 + 9 <= wl;
        for (var ci = 0u; ci < cg; ci++) {
            let cbase = (n * p.c + g * cg + ci) * hw;
            for (var ky = 0u; ky < KH; ky++) {
                let iy = i32(oy * SH + ky * DH) - i32(p.pt);
                let row_ok = iy >= 0 && iy < i32(p.h);
                let rb = cbase + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
                let x0 = vec4<f32>(select(0.0, src[rb + c0], row_ok && k0));
                let x1 = vec4<f32>(select(0.0, src[rb + c1], row_ok && k1));
                let x2 = vec4<f32>(select(0.0, src[rb + c2], row_ok && k2));
                let x3 = vec4<f32>(select(0.0, src[rb + c3], row_ok && k3));
                let x4 = vec4<f32>(select(0.0, src[rb + c4], row_ok && k4));
                let x5 = vec4<f32>(select(0.0, src[rb + c5], row_ok && k5));
                let x6 = vec4<f32>(select(0.0, src[rb + c6], row_ok && k6));
                let x7 = vec4<f32>(select(0.0, src[rb + c7], row_ok && k7));
                let x8 = vec4<f32>(select(0.0, src[rb + c8], row_ok && k8));
                let x9 = vec4<f32>(select(0.0, src[rb + c9], row_ok && k9));
                let w0_0 = wload(col0, wr + 0u);
                let w0_1 = wload(col0, wr + 1u);
                let w0_2 = wload(col0, wr + 2u);
                let w1_0 = wload(col1, wr + 0u);
                let w1_1 = wload(col1, wr + 1u);
                let w1_2 = wload(col1, wr + 2u);
                wr += 3u;
                a0_0 = fma(w0_0, x0, a0_0);
                a0_1 = fma(w0_0, x1, a0_1);
                a0_2 = fma(w0_0, x2, a0_2);
                a0_3 = fma(w0_0, x3, a0_3);
                a0_4 = fma(w0_0, x4, a0_4);
                a0_5 = fma(w0_0, x5, a0_5);
                a0_6 = fma(w0_0, x6, a0_6);
                a0_7 = fma(w0_0, x7, a0_7);
                a1_0 = fma(w1_0, x0, a1_0);
                a1_1 = fma(w1_0, x1, a1_1);
                a1_2 = fma(w1_0, x2, a1_2);
                a1_3 = fma(w1_0, x3, a1_3);
                a1_4 = fma(w1_0, x4, a1_4);
                a1_5 = fma(w1_0, x5, a1_5);
                a1_6 = fma(w1_0, x6, a1_6);
                a1_7 = fma(w1_0, x7, a1_7);
                a0_0 = fma(w0_1, x1, a0_0);
                a0_1 = fma(w0_1, x2, a0_1);
                a0_2 = fma(w0_1, x3, a0_2);
                a0_3 = fma(w0_1, x4, a0_3);
                a0_4 = fma(w0_1, x5, a0_4);
                a0_5 = fma(w0_1, x6, a0_5);
                a0_6 = fma(w0_1, x7, a0_6);
                a0_7 = fma(w0_1, x8, a0_7);
                a1_0 = fma(w1_1, x1, a1_0);
                a1_1 = fma(w1_1, x2, a1_1);
                a1_2 = fma(w1_1, x3, a1_2);
                a1_3 = fma(w1_1, x4, a1_3);
                a1_4 = fma(w1_1, x5, a1_4);
                a1_5 = fma(w1_1, x6, a1_5);
                a1_6 = fma(w1_1, x7, a1_6);
                a1_7 = fma(w1_1, x8, a1_7);
                a0_0 = fma(w0_2, x2, a0_0);
                a0_1 = fma(w0_2, x3, a0_1);
                a0_2 = fma(w0_2, x4, a0_2);
                a0_3 = fma(w0_2, x5, a0_3);
                a0_4 = fma(w0_2, x6, a0_4);
                a0_5 = fma(w0_2, x7, a0_5);
                a0_6 = fma(w0_2, x8, a0_6);
                a0_7 = fma(w0_2, x9, a0_7);
                a1_0 = fma(w1_2, x2, a1_0);
                a1_1 = fma(w1_2, x3, a1_1);
                a1_2 = fma(w1_2, x4, a1_2);
                a1_3 = fma(w1_2, x5, a1_3);
                a1_4 = fma(w1_2, x6, a1_4);
                a1_5 = fma(w1_2, x7, a1_5);
                a1_6 = fma(w1_2, x8, a1_6);
                a1_7 = fma(w1_2, x9, a1_7);
            }
        }
    } else if KW == 5u && SW == 1u && DW == 1u {
        // The same for a 5-wide kernel (UPN1 of the default model): a
        // 12-column window feeds all five taps, 12 loads per row instead of 40.
        let wl = i32(p.w) - 1;
        let c0 = u32(clamp(ix0 + 0, 0, wl));
        let k0 = ix0 + 0 >= 0 && ix0 + 0 <= wl;
        let c1 = u32(clamp(ix0 + 1, 0, wl));
        let k1 = ix0 + 1 >= 0 && ix0 + 1 <= wl;
        let c2 = u32(clamp(ix0 + 2, 0, wl));
        let k2 = ix0 + 2 >= 0 && ix0 + 2 <= wl;
        let c3 = u32(clamp(ix0 + 3, 0, wl));
        let k3 = ix0 + 3 >= 0 && ix0 + 3 <= wl;
        let c4 = u32(clamp(ix0 + 4, 0, wl));
        let k4 = ix0 + 4 >= 0 && ix0 + 4 <= wl;
        let c5 = u32(clamp(ix0 + 5, 0, wl));
        let k5 = ix0 + 5 >= 0 && ix0 + 5 <= wl;
        let c6 = u32(clamp(ix0 + 6, 0, wl));
        let k6 = ix0 + 6 >= 0 && ix0 + 6 <= wl;
        let c7 = u32(clamp(ix0 + 7, 0, wl));
        let k7 = ix0 + 7 >= 0 && ix0 + 7 <= wl;
        let c8 = u32(clamp(ix0 + 8, 0, wl));
        let k8 = ix0 + 8 >= 0 && ix0 + 8 <= wl;
        let c9 = u32(clamp(ix0 + 9, 0, wl));
        let k9 = ix0 + 9 >= 0 && ix0 + 9 <= wl;
        let c10 = u32(clamp(ix0 + 10, 0, wl));
        let k10 = ix0 + 10 >= 0 && ix0 + 10 <= wl;
        let c11 = u32(clamp(ix0 + 11, 0, wl));
        let k11 = ix0 + 11 >= 0 && ix0 + 11 <= wl;
        for (var ci = 0u; ci < cg; ci++) {
            let cbase = (n * p.c + g * cg + ci) * hw;
            for (var ky = 0u; ky < KH; ky++) {
                let iy = i32(oy * SH + ky * DH) - i32(p.pt);
                let row_ok = iy >= 0 && iy < i32(p.h);
                let rb = cbase + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
                let x0 = vec4<f32>(select(0.0, src[rb + c0], row_ok && k0));
                let x1 = vec4<f32>(select(0.0, src[rb + c1], row_ok && k1));
                let x2 = vec4<f32>(select(0.0, src[rb + c2], row_ok && k2));
                let x3 = vec4<f32>(select(0.0, src[rb + c3], row_ok && k3));
                let x4 = vec4<f32>(select(0.0, src[rb + c4], row_ok && k4));
                let x5 = vec4<f32>(select(0.0, src[rb + c5], row_ok && k5));
                let x6 = vec4<f32>(select(0.0, src[rb + c6], row_ok && k6));
                let x7 = vec4<f32>(select(0.0, src[rb + c7], row_ok && k7));
                let x8 = vec4<f32>(select(0.0, src[rb + c8], row_ok && k8));
                let x9 = vec4<f32>(select(0.0, src[rb + c9], row_ok && k9));
                let x10 = vec4<f32>(select(0.0, src[rb + c10], row_ok && k10));
                let x11 = vec4<f32>(select(0.0, src[rb + c11], row_ok && k11));
                let w0_0 = wload(col0, wr + 0u);
                let w1_0 = wload(col1, wr + 0u);
                let w0_1 = wload(col0, wr + 1u);
                let w1_1 = wload(col1, wr + 1u);
                let w0_2 = wload(col0, wr + 2u);
                let w1_2 = wload(col1, wr + 2u);
                let w0_3 = wload(col0, wr + 3u);
                let w1_3 = wload(col1, wr + 3u);
                let w0_4 = wload(col0, wr + 4u);
                let w1_4 = wload(col1, wr + 4u);
                wr += 5u;
                a0_0 = fma(w0_0, x0, a0_0);
                a0_1 = fma(w0_0, x1, a0_1);
                a0_2 = fma(w0_0, x2, a0_2);
                a0_3 = fma(w0_0, x3, a0_3);
                a0_4 = fma(w0_0, x4, a0_4);
                a0_5 = fma(w0_0, x5, a0_5);
                a0_6 = fma(w0_0, x6, a0_6);
                a0_7 = fma(w0_0, x7, a0_7);
                a1_0 = fma(w1_0, x0, a1_0);
                a1_1 = fma(w1_0, x1, a1_1);
                a1_2 = fma(w1_0, x2, a1_2);
                a1_3 = fma(w1_0, x3, a1_3);
                a1_4 = fma(w1_0, x4, a1_4);
                a1_5 = fma(w1_0, x5, a1_5);
                a1_6 = fma(w1_0, x6, a1_6);
                a1_7 = fma(w1_0, x7, a1_7);
                a0_0 = fma(w0_1, x1, a0_0);
                a0_1 = fma(w0_1, x2, a0_1);
                a0_2 = fma(w0_1, x3, a0_2);
                a0_3 = fma(w0_1, x4, a0_3);
                a0_4 = fma(w0_1, x5, a0_4);
                a0_5 = fma(w0_1, x6, a0_5);
                a0_6 = fma(w0_1, x7, a0_6);
                a0_7 = fma(w0_1, x8, a0_7);
                a1_0 = fma(w1_1, x1, a1_0);
                a1_1 = fma(w1_1, x2, a1_1);
                a1_2 = fma(w1_1, x3, a1_2);
                a1_3 = fma(w1_1, x4, a1_3);
                a1_4 = fma(w1_1, x5, a1_4);
                a1_5 = fma(w1_1, x6, a1_5);
                a1_6 = fma(w1_1, x7, a1_6);
                a1_7 = fma(w1_1, x8, a1_7);
                a0_0 = fma(w0_2, x2, a0_0);
                a0_1 = fma(w0_2, x3, a0_1);
                a0_2 = fma(w0_2, x4, a0_2);
                a0_3 = fma(w0_2, x5, a0_3);
                a0_4 = fma(w0_2, x6, a0_4);
                a0_5 = fma(w0_2, x7, a0_5);
                a0_6 = fma(w0_2, x8, a0_6);
                a0_7 = fma(w0_2, x9, a0_7);
                a1_0 = fma(w1_2, x2, a1_0);
                a1_1 = fma(w1_2, x3, a1_1);
                a1_2 = fma(w1_2, x4, a1_2);
                a1_3 = fma(w1_2, x5, a1_3);
                a1_4 = fma(w1_2, x6, a1_4);
                a1_5 = fma(w1_2, x7, a1_5);
                a1_6 = fma(w1_2, x8, a1_6);
                a1_7 = fma(w1_2, x9, a1_7);
                a0_0 = fma(w0_3, x3, a0_0);
                a0_1 = fma(w0_3, x4, a0_1);
                a0_2 = fma(w0_3, x5, a0_2);
                a0_3 = fma(w0_3, x6, a0_3);
                a0_4 = fma(w0_3, x7, a0_4);
                a0_5 = fma(w0_3, x8, a0_5);
                a0_6 = fma(w0_3, x9, a0_6);
                a0_7 = fma(w0_3, x10, a0_7);
                a1_0 = fma(w1_3, x3, a1_0);
                a1_1 = fma(w1_3, x4, a1_1);
                a1_2 = fma(w1_3, x5, a1_2);
                a1_3 = fma(w1_3, x6, a1_3);
                a1_4 = fma(w1_3, x7, a1_4);
                a1_5 = fma(w1_3, x8, a1_5);
                a1_6 = fma(w1_3, x9, a1_6);
                a1_7 = fma(w1_3, x10, a1_7);
                a0_0 = fma(w0_4, x4, a0_0);
                a0_1 = fma(w0_4, x5, a0_1);
                a0_2 = fma(w0_4, x6, a0_2);
                a0_3 = fma(w0_4, x7, a0_3);
                a0_4 = fma(w0_4, x8, a0_4);
                a0_5 = fma(w0_4, x9, a0_5);
                a0_6 = fma(w0_4, x10, a0_6);
                a0_7 = fma(w0_4, x11, a0_7);
                a1_0 = fma(w1_4, x4, a1_0);
                a1_1 = fma(w1_4, x5, a1_1);
                a1_2 = fma(w1_4, x6, a1_2);
                a1_3 = fma(w1_4, x7, a1_3);
                a1_4 = fma(w1_4, x8, a1_4);
                a1_5 = fma(w1_4, x9, a1_5);
                a1_6 = fma(w1_4, x10, a1_6);
                a1_7 = fma(w1_4, x11, a1_7);
            }
        }
    } else {
        for (var ci = 0u; ci < cg; ci++) {
            let cbase = (n * p.c + g * cg + ci) * hw;
            for (var ky = 0u; ky < KH; ky++) {
                let iy = i32(oy * SH + ky * DH) - i32(p.pt);
                let row_ok = iy >= 0 && iy < i32(p.h);
                let rbase = cbase + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
                for (var kx = 0u; kx < KW; kx++) {
                    let ix = ix0 + i32(kx * DW);
                    let x0 = vec4<f32>(load_x(rbase, row_ok, ix + 0 * i32(SW)));
                    let x1 = vec4<f32>(load_x(rbase, row_ok, ix + 1 * i32(SW)));
                    let x2 = vec4<f32>(load_x(rbase, row_ok, ix + 2 * i32(SW)));
                    let x3 = vec4<f32>(load_x(rbase, row_ok, ix + 3 * i32(SW)));
                    let x4 = vec4<f32>(load_x(rbase, row_ok, ix + 4 * i32(SW)));
                    let x5 = vec4<f32>(load_x(rbase, row_ok, ix + 5 * i32(SW)));
                    let x6 = vec4<f32>(load_x(rbase, row_ok, ix + 6 * i32(SW)));
                    let x7 = vec4<f32>(load_x(rbase, row_ok, ix + 7 * i32(SW)));
                    let w0 = wload(col0, wr);
                    a0_0 = fma(w0, x0, a0_0);
                    a0_1 = fma(w0, x1, a0_1);
                    a0_2 = fma(w0, x2, a0_2);
                    a0_3 = fma(w0, x3, a0_3);
                    a0_4 = fma(w0, x4, a0_4);
                    a0_5 = fma(w0, x5, a0_5);
                    a0_6 = fma(w0, x6, a0_6);
                    a0_7 = fma(w0, x7, a0_7);
                    let w1 = wload(col1, wr);
                    wr += 1u;
                    a1_0 = fma(w1, x0, a1_0);
                    a1_1 = fma(w1, x1, a1_1);
                    a1_2 = fma(w1, x2, a1_2);
                    a1_3 = fma(w1, x3, a1_3);
                    a1_4 = fma(w1, x4, a1_4);
                    a1_5 = fma(w1, x5, a1_5);
                    a1_6 = fma(w1, x6, a1_6);
                    a1_7 = fma(w1, x7, a1_7);
                }
            }
        }
    }
    let plane = p.oh * p.ow;
    var acc0 = array<vec4<f32>, 8>(a0_0, a0_1, a0_2, a0_3, a0_4, a0_5, a0_6, a0_7);
    var acc1 = array<vec4<f32>, 8>(a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7);
    for (var j = 0u; j < 8u; j++) {
        let ox = ox0 + j;
        if ox >= p.ow {
            break;
        }
        for (var q = 0u; q < 4u; q++) {
            let m = (mb + 0u) * 4u + q;
            if m < p.m {
                store_nchw(acc0[j][q], n, m, p.m, oy * p.ow + ox, plane,
                           p.oc_total, p.oc_off, p.alpha, p.beta);
            }
        }
        for (var q = 0u; q < 4u; q++) {
            let m = (mb + 1u) * 4u + q;
            if m < p.m {
                store_nchw(acc1[j][q], n, m, p.m, oy * p.ow + ox, plane,
                           p.oc_total, p.oc_off, p.alpha, p.beta);
            }
        }
    }
}
