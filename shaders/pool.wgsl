// Windowed and global pooling, one output element per invocation, NCHW.
// Both walk the dilated window. Max pooling starts from -inf over in-bounds
// taps only (padding never wins); average pooling divides by the in-bounds
// count, or with count_include_pad by the taps inside the padded input (the
// PyTorch/ONNX rule).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, pt: u32, pl: u32,
    dh: u32, dw: u32, pb: u32, pr: u32,
    include_pad: u32, oc_total: u32, oc_off: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;

@compute @workgroup_size(WG)
fn max_pool(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    let plane = p.oh * p.ow;
    if i >= p.n * p.c * plane {
        return;
    }
    let pix = i % plane;
    let ox = pix % p.ow;
    let oy = pix / p.ow;
    let nc = i / plane;
    let base = nc * p.h * p.w;
    var acc = -bitcast<f32>(0x7f800000u);
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
            acc = max_nan(acc, src[base + u32(iy) * p.w + u32(ix)]);
        }
    }
    store_nchw(acc, nc / p.c, nc % p.c, p.c, pix, plane, p.oc_total, p.oc_off, 0.0, 0.0);
}

@compute @workgroup_size(WG)
fn avg_pool(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    let plane = p.oh * p.ow;
    if i >= p.n * p.c * plane {
        return;
    }
    let pix = i % plane;
    let ox = pix % p.ow;
    let oy = pix / p.ow;
    let nc = i / plane;
    let base = nc * p.h * p.w;
    // Taps walk the dilated window in (ky, kx) order, as the CPU reference
    // does, so the sum rounds identically. With count_include_pad a tap
    // counts when it lies inside the padded extent [-pad_begin, len + pad_end):
    // the part of a ceil_mode window past the end padding never counts.
    let ylo = -i32(p.pt);
    let yhi = i32(p.h + p.pb);
    let xlo = -i32(p.pl);
    let xhi = i32(p.w + p.pr);
    var acc = 0.0;
    var count = 0u;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.sh + ky * p.dh) - i32(p.pt);
        let y_in = iy >= 0 && iy < i32(p.h);
        let y_pad = iy >= ylo && iy < yhi;
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pl);
            if y_in && ix >= 0 && ix < i32(p.w) {
                acc += src[base + u32(iy) * p.w + u32(ix)];
                count += 1u;
            } else if p.include_pad != 0u && y_pad && ix >= xlo && ix < xhi {
                count += 1u;
            }
        }
    }
    store_nchw(acc / f32(max(count, 1u)), nc / p.c, nc % p.c, p.c, pix, plane,
               p.oc_total, p.oc_off, 0.0, 0.0);
}

// Reduction across channels: one invocation per (n, position), channels in
// ascending order; KIND 0 mean, 1 max, 2 min, 3 sum, 4 L2 norm, 5 argmax,
// 6 argmin (the first index, as a float) (params: n, c, h = the plane's size).
override KIND: u32 = 0u;

@compute @workgroup_size(WG)
fn channel_reduce(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    let plane = p.h;
    if i >= p.n * plane {
        return;
    }
    let b = i / plane;
    let pix = i % plane;
    let base = b * p.c * plane + pix;
    var acc = src[base];
    var best = acc;
    var index = 0u;
    if KIND == 4u {
        acc = acc * acc;
    }
    for (var k = 1u; k < p.c; k++) {
        let v = src[base + k * plane];
        if KIND == 1u {
            acc = max_nan(acc, v);
        } else if KIND == 2u {
            acc = min_nan(acc, v);
        } else if KIND == 4u {
            acc += v * v;
        } else if KIND == 5u {
            // The first NaN wins, as numpy's argmax has it.
            if !is_nan(best) && (v > best || is_nan(v)) {
                best = v;
                index = k;
            }
        } else if KIND == 6u {
            if !is_nan(best) && (v < best || is_nan(v)) {
                best = v;
                index = k;
            }
        } else {
            acc += v;
        }
    }
    if KIND == 0u {
        acc = acc / f32(p.c);
    } else if KIND == 4u {
        acc = sqrt(acc);
    } else if KIND >= 5u {
        acc = f32(index);
    }
    store_nchw(acc, b, 0u, 1u, pix, plane, p.oc_total, p.oc_off, 0.0, 0.0);
}

// Global pooling: one invocation per (n, c), reducing the plane in row-major order.
@compute @workgroup_size(WG)
fn global_max(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let nc = flat_id(gid, nwg);
    if nc >= p.n * p.c {
        return;
    }
    let hw = p.h * p.w;
    var acc = -bitcast<f32>(0x7f800000u);
    for (var k = 0u; k < hw; k++) {
        acc = max_nan(acc, src[nc * hw + k]);
    }
    store_nchw(acc, nc / p.c, nc % p.c, p.c, 0u, 1u, p.oc_total, p.oc_off, 0.0, 0.0);
}

@compute @workgroup_size(WG)
fn global_avg(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let nc = flat_id(gid, nwg);
    if nc >= p.n * p.c {
        return;
    }
    let hw = p.h * p.w;
    var acc = 0.0;
    for (var k = 0u; k < hw; k++) {
        acc += src[nc * hw + k];
    }
    store_nchw(acc / f32(hw), nc / p.c, nc % p.c, p.c, 0u, 1u, p.oc_total, p.oc_off, 0.0, 0.0);
}
