// Resize over H and W of an NCHW map (nearest, bilinear or bicubic), one
// output element per invocation, with the ONNX coordinate transforms.

struct Params {
    nc: u32, h: u32, w: u32, oh: u32,
    ow: u32, linear: u32, coord: u32, _p2: u32,
    scale_h: f32, scale_w: f32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;

// coord: 0 half_pixel, 1 pytorch_half_pixel, 2 align_corners, 3 asymmetric.
fn source_coord(x: u32, scale: f32, in_len: u32, out_len: u32) -> f32 {
    let xf = f32(x);
    switch p.coord {
        case 1u: {
            return select(0.0, (xf + 0.5) / scale - 0.5, out_len > 1u);
        }
        case 2u: {
            // Over the output length less one, as onnxruntime and PyTorch
            // (see source_coord in cpu/resize.rs).
            return select(0.0, xf * f32(in_len - 1u) / f32(max(out_len, 2u) - 1u), out_len > 1u);
        }
        case 3u: { return xf / scale; }
        default: { return (xf + 0.5) / scale - 0.5; }
    }
}

// Nearest: the source row of each output row, then the source column of
// each output column, computed on the host exactly as the CPU executor does
// (a GPU's `/` need not round exactly, and a half-pixel tie such as
// 3.5 / 3.5 - 0.5 then picks the other pixel).
@group(0) @binding(2) var<storage, read> taps: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.nc * p.oh * p.ow {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let base = (i / (p.ow * p.oh)) * p.h * p.w;
    if p.linear == 0u {
        dst[i] = src[base + taps[oy] * p.w + taps[p.oh + ox]];
        return;
    }
    if p.linear == 2u {
        // Bicubic: four source rows and columns with their weights, from
        // the host's table (indices, rows then columns; then weights):
        // along W first, then H, in ascending tap order, as the CPU does.
        let weights = 4u * (p.oh + p.ow);
        var acc = 0.0;
        for (var ky = 0u; ky < 4u; ky++) {
            let ty = 4u * oy + ky;
            let row = base + taps[ty] * p.w;
            var line = 0.0;
            for (var kx = 0u; kx < 4u; kx++) {
                let tx = 4u * (p.oh + ox) + kx;
                line += src[row + taps[tx]] * bitcast<f32>(taps[weights + tx]);
            }
            acc += line * bitcast<f32>(taps[weights + ty]);
        }
        dst[i] = acc;
        return;
    }
    let sy = source_coord(oy, p.scale_h, p.h, p.oh);
    let sx = source_coord(ox, p.scale_w, p.w, p.ow);
    let cy = clamp(sy, 0.0, f32(p.h - 1u));
    let cx = clamp(sx, 0.0, f32(p.w - 1u));
    let y0 = u32(floor(cy));
    let x0 = u32(floor(cx));
    let y1 = min(y0 + 1u, p.h - 1u);
    let x1 = min(x0 + 1u, p.w - 1u);
    let fy = cy - f32(y0);
    let fx = cx - f32(x0);
    let top = mix(src[base + y0 * p.w + x0], src[base + y0 * p.w + x1], fx);
    let bot = mix(src[base + y1 * p.w + x0], src[base + y1 * p.w + x1], fx);
    dst[i] = mix(top, bot, fy);
}

// Nearest up-sampling by integer factors where output `o` reads input
// `o / factor` (every exact case tiles use; `_p0`, `_p1` hold the factors):
// one invocation per input pixel writes its factor×factor block, so the
// index arithmetic (integer divisions, which llvmpipe runs lane by lane)
// is paid once per input pixel instead of per output pixel.
@compute @workgroup_size(WG)
fn nearest_up(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.nc * p.h * p.w {
        return;
    }
    let x = i % p.w;
    let row = i / p.w;
    let y = row % p.h;
    let plane = row / p.h;
    let v = src[i];
    let fy = p._p0;
    let fx = p._p1;
    var o = (plane * p.oh + y * fy) * p.ow + x * fx;
    for (var dy = 0u; dy < fy; dy++) {
        for (var dx = 0u; dx < fx; dx++) {
            dst[o + dx] = v;
        }
        o += p.ow;
    }
}
