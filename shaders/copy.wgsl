// Data movement, one output element per invocation (four in `strided4`).
// `strided`: dst[dbase + sum e_d * dstr_d] = src[sbase + sum e_d * sstr_d]
// over an index space of up to 8 dims: transpose, crop, depth-to-space,
// a concat input copied into its slice, and reshape copies.
// `pad`: constant padding of an NCHW map; `border_pad`: reflect (REFLECT)
// or edge padding.

struct Params {
    total: u32, sbase: u32, dbase: u32, _p0: u32,
    // pad: n*c, h, w, oh | ow, pt, pl, fill (bits)
    q0: vec4<u32>,
    q1: vec4<u32>,
    dims: array<vec4<u32>, 2>,
    sstr: array<vec4<u32>, 2>,
    dstr: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;

// Source and destination offsets of element `i` of the index space.
fn offsets(i: u32) -> vec2<u32> {
    var rest = i;
    var si = p.sbase;
    var di = p.dbase;
    // Dims are collapsed and right-aligned by the executor: once the
    // remaining index is 0 every outer dim contributes 0.
    for (var d = 7; d >= 0 && rest != 0u; d--) {
        let q = d / 4;
        let r = d % 4;
        let n = p.dims[q][r];
        let next = rest / n;
        let e = rest - next * n;
        rest = next;
        si += e * p.sstr[q][r];
        di += e * p.dstr[q][r];
    }
    return vec2<u32>(si, di);
}

@compute @workgroup_size(WG)
fn strided(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.total {
        return;
    }
    let o = offsets(i);
    dst[o.y] = src[o.x];
}

// `strided` for 4 consecutive elements per invocation: the executor picks
// it when the innermost dim is a multiple of 4 and contiguous in both
// buffers, so the 4 lie in one row of both and share the index arithmetic.
@compute @workgroup_size(WG)
fn strided4(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg) * 4u;
    if i >= p.total {
        return;
    }
    let o = offsets(i);
    dst[o.y] = src[o.x];
    dst[o.y + 1u] = src[o.x + 1u];
    dst[o.y + 2u] = src[o.x + 2u];
    dst[o.y + 3u] = src[o.x + 3u];
}

// Output element `i` of a padded map: (plane, input row, input column),
// the row and column before any border rule (negative in the top/left pad).
fn pad_source(i: u32) -> vec3<i32> {
    let oh = p.q0.w;
    let ow = p.q1.x;
    let ox = i % ow;
    let oy = (i / ow) % oh;
    return vec3<i32>(i32(i / (ow * oh)), i32(oy) - i32(p.q1.y), i32(ox) - i32(p.q1.z));
}

@compute @workgroup_size(WG)
fn pad(@builtin(global_invocation_id) gid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.total {
        return;
    }
    let h = i32(p.q0.y);
    let w = i32(p.q0.z);
    let s = pad_source(i);
    var v = bitcast<f32>(p.q1.w);
    if s.y >= 0 && s.y < h && s.z >= 0 && s.z < w {
        v = src[u32((s.x * h + s.y) * w + s.z)];
    }
    dst[i] = v;
}

// Reflect (mirrored without the edge) or edge padding; 1 = reflect.
override REFLECT: u32 = 0u;

// The input index a padded position `i` of an axis of length `n` reads.
fn border_index(i: i32, n: i32) -> u32 {
    var j = i;
    if REFLECT == 1u {
        if j < 0 {
            j = -j;
        }
        if j >= n {
            j = 2 * n - 2 - j;
        }
    }
    return u32(clamp(j, 0, n - 1));
}

@compute @workgroup_size(WG)
fn border_pad(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.total {
        return;
    }
    let h = p.q0.y;
    let w = p.q0.z;
    let s = pad_source(i);
    let iy = border_index(s.y, i32(h));
    let ix = border_index(s.z, i32(w));
    dst[i] = src[(u32(s.x) * h + iy) * w + ix];
}
