// Memory-bound elementwise ops, one element per invocation:
// a standalone activation, a per-channel affine (unfolded BatchNorm) and a
// binary op with numpy broadcasting (rank up to 8, right-aligned).
// The channel of element i (for PRelu slopes and the affine) is (i / inner) % c.

// Binary op: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min.
override OP: u32 = 0u;

struct Params {
    total: u32, inner: u32, c: u32, _p0: u32,
    // abase, bbase: where each operand starts in its buffer (a tile's crop
    // is read in place by a binary op).
    alpha: f32, beta: f32, abase: u32, bbase: u32,
    // Output dims, then each operand's element strides (0 where broadcast).
    dims: array<vec4<u32>, 2>,
    astr: array<vec4<u32>, 2>,
    bstr: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
// Affine: scale[c] then shift[c]. Binary: the second operand.
@group(0) @binding(2) var<storage, read> wt: array<f32>;

fn channel(i: u32) -> u32 {
    return (i / p.inner) % p.c;
}

@compute @workgroup_size(WG)
fn activation(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.total {
        return;
    }
    dst[i] = activate(src[i], channel(i), p.alpha, p.beta);
}

@compute @workgroup_size(WG)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.total {
        return;
    }
    let c = channel(i);
    dst[i] = fma(src[i], wt[c], wt[p.c + c]);
}

fn binop(a: f32, b: f32) -> f32 {
    switch OP {
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return max_nan(a, b); }
        case 5u: { return min_nan(a, b); }
        default: { return a + b; }
    }
}

@compute @workgroup_size(WG)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if i >= p.total {
        return;
    }
    var rest = i;
    var ai = p.abase;
    var bi = p.bbase;
    // Dims are collapsed and right-aligned by the executor: once the
    // remaining index is 0 every outer dim contributes 0.
    for (var d = 7; d >= 0 && rest != 0u; d--) {
        let q = d / 4;
        let r = d % 4;
        let n = p.dims[q][r];
        let next = rest / n;
        let e = rest - next * n;
        rest = next;
        ai += e * p.astr[q][r];
        bi += e * p.bstr[q][r];
    }
    dst[i] = activate(binop(src[ai], wt[bi]), channel(i), p.alpha, p.beta);
}
