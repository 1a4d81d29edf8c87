//! Lowering: each IR node becomes one or more kernel dispatches with their
//! parameters, buffers and thread counts. Weights are packed and uploaded
//! here (once, through the weight cache).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::kernels::{PipelineKey, Shader};
use super::resources::{Uploader, WeightCache};
use crate::error::{Error, Result};
use crate::ir::{
    Activation, BinaryKind, BorderMode, CoordTransform, DepthToSpaceMode, Graph, Node, Op,
    PoolKind, ReduceKind, ResizeMode, ValueId,
};
use crate::tensor::Tensor;

/// A buffer bound to one slot of a dispatch.
#[derive(Clone)]
pub enum Buf {
    /// Nothing: a 16-byte placeholder is bound.
    None,
    /// The storage of a graph value (after aliasing).
    Value(ValueId),
    /// A weight or constant buffer.
    Gpu(Arc<wgpu::Buffer>),
    /// Weights as a texture: bound at the texture binding, with a
    /// placeholder buffer in this slot.
    Tex(Arc<wgpu::TextureView>),
}

/// One kernel launch.
pub struct Dispatch {
    /// Which pipeline.
    pub key: PipelineKey,
    /// The uniform parameters, as 32-bit words (f32 as bits).
    pub params: Vec<u32>,
    /// Bindings 1..=6: src, weights, bias, slopes, residual, dst.
    pub bufs: [Buf; 6],
    /// Invocations to launch.
    pub threads: u32,
}

/// Which convolution kernel a layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConvVariant {
    /// One output per invocation.
    Naive,
    /// 4 output channels x 4 pixels per invocation.
    Block,
    /// 8 output channels x 8 pixels per invocation.
    Block8,
    /// Block8 reading its weights from a texture: on llvmpipe a texel fetch
    /// is one 16-byte load per lane, a storage-buffer vec4 four scalar
    /// loads per lane, each behind a branch.
    Block8Texture,
    /// Depthwise / grouped: 4 pixels of one channel per invocation.
    Grouped,
}

/// A layer's kernel choice: the variant and its workgroup size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvChoice {
    /// The kernel.
    pub variant: ConvVariant,
    /// Invocations per workgroup.
    pub wg: u32,
}

impl ConvChoice {
    /// The choice without tuning: register-blocked where it applies, the
    /// larger block first.
    pub fn default_for(conv: &crate::ir::Conv) -> Self {
        let variant = if block8_applies(conv) && texture_fits(conv) {
            ConvVariant::Block8Texture
        } else if block8_applies(conv) {
            ConvVariant::Block8
        } else if block_applies(conv) {
            ConvVariant::Block
        } else {
            ConvVariant::Grouped
        };
        Self { variant, wg: 64 }
    }

    /// Whether this kernel can run `conv`.
    pub fn applies(&self, conv: &crate::ir::Conv) -> bool {
        match self.variant {
            ConvVariant::Block => block_applies(conv),
            ConvVariant::Block8 => block8_applies(conv),
            ConvVariant::Block8Texture => block8_applies(conv) && texture_fits(conv),
            ConvVariant::Naive | ConvVariant::Grouped => true,
        }
    }

    /// The candidates autotuning times for this conv.
    pub fn candidates(conv: &crate::ir::Conv) -> Vec<Self> {
        let mut out = Vec::new();
        if block8_applies(conv) {
            if texture_fits(conv) {
                out.extend([32, 64].map(|wg| Self {
                    variant: ConvVariant::Block8Texture,
                    wg,
                }));
            }
            out.extend([32, 64].map(|wg| Self {
                variant: ConvVariant::Block8,
                wg,
            }));
        }
        if block_applies(conv) {
            out.extend([32, 64, 128].map(|wg| Self {
                variant: ConvVariant::Block,
                wg,
            }));
        }
        if conv.group > 1 {
            out.extend([64, 128].map(|wg| Self {
                variant: ConvVariant::Grouped,
                wg,
            }));
        }
        out.push(Self {
            variant: ConvVariant::Naive,
            wg: 64,
        });
        out
    }
}

/// The block kernel needs whole 4-channel blocks inside a group.
fn block_applies(conv: &crate::ir::Conv) -> bool {
    let m = conv.weight.shape().first().copied().unwrap_or(0);
    conv.group == 1 || (conv.group > 0 && (m / conv.group).is_multiple_of(4))
}

/// The 8x8 block kernel needs whole 8-channel blocks inside a group.
fn block8_applies(conv: &crate::ir::Conv) -> bool {
    let m = conv.weight.shape().first().copied().unwrap_or(0);
    conv.group == 1 || (conv.group > 0 && (m / conv.group).is_multiple_of(8))
}

/// Largest weight texture side the kernels ask for (lavapipe and most
/// desktop GPUs offer 16384). An adapter that grants less runs a layer
/// whose weights do not fit as Block8 from a buffer, with the same bits.
pub const WEIGHT_TEXTURE_DIM: usize = 16384;

/// The texture kernel holds the packed weights, `[C/group * KH * KW]` rows
/// of `ceil(M/4)` texels, in one 2-D texture.
fn texture_fits(conv: &crate::ir::Conv) -> bool {
    let s = conv.weight.shape();
    s.len() == 4
        && s[1] * s[2] * s[3] <= WEIGHT_TEXTURE_DIM
        && s[0].div_ceil(4) <= WEIGHT_TEXTURE_DIM
}

/// The per-layer key of a kernel choice: node name and op parameters, never
/// the spatial extent or pads, so a tile's copy of a node gets the same choice.
pub fn layer_key(graph: &Graph, node: &Node) -> String {
    match &node.op {
        Op::Conv(c) => {
            let w = c.weight.shape();
            let cin = node
                .inputs
                .first()
                .map_or(0, |&v| graph.shape(v).get(1).copied().unwrap_or(0));
            format!(
                "{}|conv|c{cin}|w{w:?}|s{:?}|d{:?}|g{}|a{}|r{}",
                node.name,
                c.strides,
                c.dilations,
                c.group,
                act_params(&c.activation).0,
                node.inputs.len() > 1
            )
        }
        op => format!("{}|{}", node.name, op.name()),
    }
}

struct P(Vec<u32>);

impl P {
    fn u(mut self, v: usize) -> Result<Self> {
        self.0
            .push(u32::try_from(v).map_err(|_| Error::Limit(format!("{v} exceeds 32 bits")))?);
        Ok(self)
    }
    fn us(mut self, vs: &[usize]) -> Result<Self> {
        for &v in vs {
            self = self.u(v)?;
        }
        Ok(self)
    }
    fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    fn done(mut self) -> Vec<u32> {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self.0
    }
}

fn threads(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Limit(format!("{n} invocations exceed 32 bits")))
}

/// (ACT code, alpha, beta, slopes).
fn act_params(a: &Activation) -> (u32, f32, f32, Option<Arc<Vec<f32>>>) {
    match a {
        Activation::Identity => (0, 0.0, 0.0, None),
        Activation::Relu => (1, 0.0, 0.0, None),
        Activation::LeakyRelu { alpha } => (2, *alpha, 0.0, None),
        // One shared slope is a leaky ReLU (same arithmetic). The shader's
        // `arrayLength == 1` broadcast cannot see it: weight buffers are at
        // least 16 bytes, so a 1-slope buffer reports 4 elements.
        Activation::PRelu { slope } if slope.len() == 1 => (2, slope[0], 0.0, None),
        Activation::PRelu { slope } => (3, 0.0, 0.0, Some(slope.clone())),
        Activation::Sigmoid => (4, 0.0, 0.0, None),
        Activation::Tanh => (5, 0.0, 0.0, None),
        Activation::Clip { min, max } => (6, *min, *max, None),
        Activation::HardSigmoid { alpha, beta } => (7, *alpha, *beta, None),
        Activation::HardSwish => (8, 0.0, 0.0, None),
        Activation::Elu { alpha } => (9, *alpha, 0.0, None),
        Activation::Selu { alpha, gamma } => (10, *alpha, *gamma, None),
        Activation::Softplus => (11, 0.0, 0.0, None),
        Activation::Erf => (12, 0.0, 0.0, None),
        Activation::Gelu { tanh: false } => (13, 0.0, 0.0, None),
        Activation::Gelu { tanh: true } => (14, 0.0, 0.0, None),
        Activation::Mish => (15, 0.0, 0.0, None),
        Activation::Abs => (16, 0.0, 0.0, None),
        Activation::Neg => (17, 0.0, 0.0, None),
        Activation::Exp => (18, 0.0, 0.0, None),
        Activation::Log => (19, 0.0, 0.0, None),
        Activation::Sqrt => (20, 0.0, 0.0, None),
        Activation::Reciprocal => (21, 0.0, 0.0, None),
    }
}

fn nchw(s: &[usize], what: &str) -> Result<[usize; 4]> {
    match s {
        [n, c, h, w] => Ok([*n, *c, *h, *w]),
        _ => Err(Error::Shape(format!("{what}: expected NCHW, got {s:?}"))),
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Right-aligns up to 8 (dims, a strides, b strides) into 24 words.
fn nd_words(dims: &[usize], a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if dims.len() > 8 {
        return Err(Error::Unsupported(format!("rank {} above 8", dims.len())));
    }
    let (dims, a, b) = collapse(dims, a, b);
    let pad = 8 - dims.len();
    let mut out = vec![1; pad];
    out.extend_from_slice(&dims);
    for s in [&a, &b] {
        out.extend(std::iter::repeat_n(0, pad));
        out.extend_from_slice(s);
    }
    Ok(out)
}

/// The same index space with size-1 dims dropped and each dim merged into
/// its inner neighbour where both stride lists are contiguous across them
/// (an NCHW crop becomes [N*C, H, W], a whole copy one dim). The kernels
/// pay two integer divisions per dim per element, which llvmpipe runs lane
/// by lane; the loop ends once the remaining index is 0, so leading dims
/// cost nothing.
fn collapse(dims: &[usize], a: &[usize], b: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    // Built innermost first, reversed at the end.
    let (mut d, mut sa, mut sb): (Vec<usize>, Vec<usize>, Vec<usize>) =
        (Vec::new(), Vec::new(), Vec::new());
    for i in (0..dims.len()).rev() {
        if dims[i] == 1 {
            continue;
        }
        if let (Some(&dl), Some(&al), Some(&bl)) = (d.last(), sa.last(), sb.last())
            && a[i] == al * dl
            && b[i] == bl * dl
        {
            let k = d.len() - 1;
            d[k] *= dims[i];
            continue;
        }
        d.push(dims[i]);
        sa.push(a[i]);
        sb.push(b[i]);
    }
    d.reverse();
    sa.reverse();
    sb.reverse();
    (d, sa, sb)
}

/// Strides for reading a crop of shape `shape` inside its source of shape
/// `src` (same rank), broadcast to `out` like [`broadcast_strides`].
fn view_strides(shape: &[usize], src: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(src);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                st[i - off]
            }
        })
        .collect()
}

/// Strides of `shape` broadcast to `out` (right-aligned, 0 where broadcast).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    view_strides(shape, shape, out)
}

/// Packs `[M, Cg, kh, kw]` into `[Cg*kh*kw][ceil(M/4)]` vec4 (zero-padded).
fn pack_conv_block(w: &Tensor) -> Vec<f32> {
    let s = w.shape();
    let (m, k) = (s[0], s[1] * s[2] * s[3]);
    let m4 = m.div_ceil(4);
    let mut out = vec![0.0; k * m4 * 4];
    for (mi, row) in w.data().chunks_exact(k.max(1)).enumerate() {
        for (ki, &v) in row.iter().enumerate() {
            out[ki * m4 * 4 + mi] = v;
        }
    }
    out
}

/// Packs a dense `[K, M]` into `[K][ceil(M/4)]` vec4 (zero-padded).
fn pack_dense(w: &Tensor) -> Vec<f32> {
    let s = w.shape();
    let (k, m) = (s[0], s[1]);
    let m4 = m.div_ceil(4);
    let mut out = vec![0.0; k * m4 * 4];
    for (ki, row) in w.data().chunks_exact(m.max(1)).enumerate() {
        out[ki * m4 * 4..ki * m4 * 4 + m].copy_from_slice(row);
    }
    out
}

/// Lowers nodes of one graph.
pub struct Lowerer<'a> {
    /// The graph.
    pub graph: &'a Graph,
    /// Uploads.
    pub up: Uploader<'a>,
    /// Weight cache.
    pub weights: &'a mut WeightCache,
    /// Values written in place into a Concat's output: value -> (concat output, channel offset).
    pub alias: &'a HashMap<ValueId, (ValueId, usize)>,
    /// Crops never materialised: their binary consumers read the source.
    pub views: &'a HashMap<ValueId, CropView>,
}

/// A crop read in place: element (n, c, y, x) of the crop is element
/// `base + n*s0 + c*s1 + y*s2 + x` of `src`, whose NCHW shape is `src_shape`.
#[derive(Debug, Clone)]
pub struct CropView {
    /// The cropped value.
    pub src: ValueId,
    /// Offset of the crop's first element in `src`.
    pub base: usize,
    /// Shape of `src`.
    pub src_shape: Vec<usize>,
}

impl Lowerer<'_> {
    fn buf_of(&mut self, v: ValueId) -> Result<Buf> {
        match self.graph.constants.get(&v) {
            Some(t) => Ok(Buf::Gpu(
                self.weights
                    .tensor(&self.up, t, "raw", |t| t.data().to_vec())?,
            )),
            None => Ok(Buf::Value(v)),
        }
    }

    fn slope(&mut self, s: &Option<Arc<Vec<f32>>>) -> Result<Buf> {
        Ok(match s {
            Some(s) => Buf::Gpu(self.weights.vec(&self.up, s)?),
            None => Buf::None,
        })
    }

    /// (dst value, total channels, channel offset) of a node's output.
    fn target(&self, node: &Node, channels: usize) -> (ValueId, usize, usize) {
        match self.alias.get(&node.output) {
            Some(&(cv, off)) => (
                cv,
                self.graph.shape(cv).get(1).copied().unwrap_or(channels),
                off,
            ),
            None => (node.output, channels, 0),
        }
    }

    /// The dispatches of `node`; `conv` is the layer's kernel choice for convs.
    pub fn lower(&mut self, node: &Node, conv: Option<ConvChoice>) -> Result<Vec<Dispatch>> {
        let g = self.graph;
        let ins: Vec<&[usize]> = node.inputs.iter().map(|&v| g.shape(v)).collect();
        let out = g.shape(node.output).to_vec();
        let first = *node
            .inputs
            .first()
            .ok_or_else(|| Error::Malformed(format!("node {} has no inputs", node.name)))?;
        let one = |shader,
                   entry,
                   params,
                   src: Buf,
                   dst: ValueId,
                   t: usize,
                   consts|
         -> Result<Vec<Dispatch>> {
            Ok(vec![Dispatch {
                key: PipelineKey::new(shader, entry, consts),
                params,
                bufs: [
                    src,
                    Buf::None,
                    Buf::None,
                    Buf::None,
                    Buf::None,
                    Buf::Value(dst),
                ],
                threads: threads(t)?,
            }])
        };
        match &node.op {
            Op::Conv(c) => {
                let choice = conv.unwrap_or_else(|| ConvChoice::default_for(c));
                self.conv(node, c, choice, &ins, &out)
            }
            Op::ConvTranspose(c) => {
                let [n, ci, h, w] = nchw(ins[0], "input")?;
                let [_, m, oh, ow] = nchw(&out, "output")?;
                let ws = c.weight.shape();
                let (act, alpha, beta, slope) = act_params(&c.activation);
                let (dst, oct, ocoff) = self.target(node, m);
                let params = P(vec![])
                    .us(&[
                        n,
                        ci,
                        h,
                        w,
                        m,
                        oh,
                        ow,
                        ws[2],
                        ws[3],
                        c.strides[0],
                        c.strides[1],
                    ])?
                    .us(&[
                        c.pads[0],
                        c.pads[1],
                        c.dilations[0],
                        c.dilations[1],
                        c.group,
                        oct,
                        ocoff,
                    ])?
                    .f(alpha)
                    .f(beta)
                    .done();
                let wt = self
                    .weights
                    .tensor(&self.up, &c.weight, "raw", |t| t.data().to_vec())?;
                let bias = match &c.bias {
                    Some(b) => Buf::Gpu(self.weights.vec(&self.up, b)?),
                    None => Buf::None,
                };
                Ok(vec![Dispatch {
                    key: PipelineKey::new(
                        Shader::ConvTranspose,
                        "main",
                        vec![
                            ("WG", 64),
                            ("ACT", act),
                            ("HAS_BIAS", u32::from(c.bias.is_some())),
                        ],
                    ),
                    params,
                    bufs: [
                        Buf::Value(first),
                        Buf::Gpu(wt),
                        bias,
                        self.slope(&slope)?,
                        Buf::None,
                        Buf::Value(dst),
                    ],
                    threads: threads(n * m * oh * ow)?,
                }])
            }
            Op::Pool(p) => {
                let [n, ch, h, w] = nchw(ins[0], "input")?;
                let [_, _, oh, ow] = nchw(&out, "output")?;
                let (dst, oct, ocoff) = self.target(node, ch);
                let (entry, include_pad) = match p.kind {
                    PoolKind::Max => ("max_pool", false),
                    PoolKind::Average { count_include_pad } => ("avg_pool", count_include_pad),
                };
                let params = P(vec![])
                    .us(&[
                        n,
                        ch,
                        h,
                        w,
                        oh,
                        ow,
                        p.kernel[0],
                        p.kernel[1],
                        p.strides[0],
                        p.strides[1],
                    ])?
                    .us(&[
                        p.pads[0],
                        p.pads[1],
                        p.dilations[0],
                        p.dilations[1],
                        p.pads[2],
                        p.pads[3],
                    ])?
                    .us(&[usize::from(include_pad), oct, ocoff])?
                    .done();
                one(
                    Shader::Pool,
                    entry,
                    params,
                    Buf::Value(first),
                    dst,
                    n * ch * oh * ow,
                    vec![("WG", 64)],
                )
            }
            Op::ChannelReduce(kind) => {
                let s = ins[0];
                let (n, ch, plane) = (s[0], s[1], s[2..].iter().product::<usize>());
                let (dst, oct, ocoff) = self.target(node, 1);
                let kind = match kind {
                    ReduceKind::Mean => 0,
                    ReduceKind::Max => 1,
                    ReduceKind::Min => 2,
                    ReduceKind::Sum => 3,
                    ReduceKind::L2 => 4,
                    ReduceKind::ArgMax => 5,
                    ReduceKind::ArgMin => 6,
                };
                let params = P(vec![])
                    .us(&[
                        n, ch, plane, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, oct, ocoff,
                    ])?
                    .done();
                one(
                    Shader::Pool,
                    "channel_reduce",
                    params,
                    Buf::Value(first),
                    dst,
                    n * plane,
                    vec![("WG", 64), ("KIND", kind)],
                )
            }
            Op::GlobalPool(kind) => {
                let s = ins[0];
                if s.len() < 2 {
                    return Err(Error::Shape(format!("global pool of {s:?}")));
                }
                let (n, ch, hw) = (s[0], s[1], s[2..].iter().product::<usize>());
                let (dst, oct, ocoff) = self.target(node, ch);
                let entry = match kind {
                    PoolKind::Max => "global_max",
                    PoolKind::Average { .. } => "global_avg",
                };
                let params = P(vec![])
                    .us(&[
                        n, ch, hw, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, oct, ocoff,
                    ])?
                    .done();
                one(
                    Shader::Pool,
                    entry,
                    params,
                    Buf::Value(first),
                    dst,
                    n * ch,
                    vec![("WG", 64)],
                )
            }
            Op::Dense {
                weight,
                bias,
                activation,
            } => {
                let (n, k) = match ins[0] {
                    [n, k] => (*n, *k),
                    s => return Err(Error::Shape(format!("dense input {s:?}"))),
                };
                let m = weight.shape().get(1).copied().unwrap_or(0);
                let m4 = m.div_ceil(4);
                let (act, alpha, beta, slope) = act_params(activation);
                let params = P(vec![]).us(&[n, k, m, m4])?.f(alpha).f(beta).done();
                let wt = self
                    .weights
                    .tensor(&self.up, weight, "dense4", pack_dense)?;
                let bias_buf = match bias {
                    Some(b) => Buf::Gpu(self.weights.vec(&self.up, b)?),
                    None => Buf::None,
                };
                let (entry, t) = if n == 1 {
                    ("gemv", m4)
                } else {
                    ("gemm", n.div_ceil(4) * m4)
                };
                Ok(vec![Dispatch {
                    key: PipelineKey::new(
                        Shader::Dense,
                        entry,
                        vec![
                            ("WG", 64),
                            ("ACT", act),
                            ("HAS_BIAS", u32::from(bias.is_some())),
                        ],
                    ),
                    params,
                    bufs: [
                        Buf::Value(first),
                        Buf::Gpu(wt),
                        bias_buf,
                        self.slope(&slope)?,
                        Buf::None,
                        Buf::Value(node.output),
                    ],
                    threads: threads(t)?,
                }])
            }
            Op::MatMul => {
                let (a, b) = (ins[0], ins[1]);
                let a2: Vec<usize> = if a.len() == 1 {
                    vec![1, a[0]]
                } else {
                    a.to_vec()
                };
                let b2: Vec<usize> = if b.len() == 1 {
                    vec![b[0], 1]
                } else {
                    b.to_vec()
                };
                let (ar, br) = (a2.len(), b2.len());
                let (rows, k, cols) = (a2[ar - 2], a2[ar - 1], b2[br - 1]);
                let ab = &a2[..ar - 2];
                let bb = &b2[..br - 2];
                let rank = ab.len().max(bb.len());
                if rank > 4 {
                    return Err(Error::Unsupported(format!(
                        "MatMul with {rank} batch dims (max 4)"
                    )));
                }
                let pad = |s: &[usize]| -> Vec<usize> {
                    let mut v = vec![1; rank - s.len()];
                    v.extend_from_slice(s);
                    v
                };
                let (pa, pb) = (pad(ab), pad(bb));
                let bdims: Vec<usize> = pa.iter().zip(&pb).map(|(x, y)| (*x).max(*y)).collect();
                let bstr = |p: &[usize], mat: usize| -> Vec<usize> {
                    let st = strides(p);
                    p.iter()
                        .zip(st)
                        .map(|(&d, s)| if d == 1 { 0 } else { s * mat })
                        .collect()
                };
                let (sa, sb) = (bstr(&pa, rows * k), bstr(&pb, k * cols));
                let fill = |v: &[usize], f: usize| -> Vec<usize> {
                    let mut w = vec![f; 4 - rank];
                    w.extend_from_slice(v);
                    w
                };
                let mut words = vec![rows, k, cols, bdims.iter().product()];
                words.extend(fill(&bdims, 1));
                words.extend(fill(&sa, 0));
                words.extend(fill(&sb, 0));
                let params = P(vec![]).us(&words)?.done();
                let total = out.iter().product::<usize>();
                Ok(vec![Dispatch {
                    key: PipelineKey::new(Shader::MatMul, "main", vec![("WG", 64)]),
                    params,
                    bufs: [
                        self.buf_of(first)?,
                        self.buf_of(node.inputs[1])?,
                        Buf::None,
                        Buf::None,
                        Buf::None,
                        Buf::Value(node.output),
                    ],
                    threads: threads(total)?,
                }])
            }
            Op::Activation(a) => {
                let (act, alpha, beta, slope) = act_params(a);
                let (inner, ch) = channel_layout(&out);
                let total = out.iter().product::<usize>();
                let params = elementwise_params(total, inner, ch, alpha, beta, &[0; 24])?;
                Ok(vec![Dispatch {
                    key: PipelineKey::new(
                        Shader::Elementwise,
                        "activation",
                        vec![("WG", 64), ("ACT", act)],
                    ),
                    params,
                    bufs: [
                        self.buf_of(first)?,
                        Buf::None,
                        Buf::None,
                        self.slope(&slope)?,
                        Buf::None,
                        Buf::Value(node.output),
                    ],
                    threads: threads(total)?,
                }])
            }
            Op::ChannelAffine { scale, shift } => {
                let (inner, ch) = channel_layout(&out);
                let total = out.iter().product::<usize>();
                let params = elementwise_params(total, inner, ch, 0.0, 0.0, &[0; 24])?;
                self.paired(
                    PipelineKey::new(Shader::Elementwise, "affine", vec![("WG", 64)]),
                    params,
                    first,
                    [scale, shift],
                    node.output,
                    total,
                )
            }
            Op::Binary { kind, activation } => {
                let (act, alpha, beta, slope) = act_params(activation);
                let (inner, ch) = channel_layout(&out);
                let total = out.iter().product::<usize>();
                // An operand that is a tile's crop is read where it lies.
                let operand = |k: usize| -> (ValueId, usize, Vec<usize>) {
                    let v = node.inputs[k];
                    match self.views.get(&v) {
                        Some(view) => (
                            view.src,
                            view.base,
                            view_strides(ins[k], &view.src_shape, &out),
                        ),
                        None => (v, 0, broadcast_strides(ins[k], &out)),
                    }
                };
                let ((a, abase, astr), (b, bbase, bstr)) = (operand(0), operand(1));
                let words = nd_words(&out, &astr, &bstr)?;
                let params = P(vec![])
                    .us(&[total, inner.max(1), ch.max(1), 0])?
                    .f(alpha)
                    .f(beta)
                    .us(&[abase, bbase])?
                    .us(&words)?
                    .done();
                let op = match kind {
                    BinaryKind::Add => 0,
                    BinaryKind::Sub => 1,
                    BinaryKind::Mul => 2,
                    BinaryKind::Div => 3,
                    BinaryKind::Max => 4,
                    BinaryKind::Min => 5,
                };
                Ok(vec![Dispatch {
                    key: PipelineKey::new(
                        Shader::Elementwise,
                        "binary",
                        vec![("WG", 64), ("ACT", act), ("OP", op)],
                    ),
                    params,
                    bufs: [
                        self.buf_of(a)?,
                        self.buf_of(b)?,
                        Buf::None,
                        self.slope(&slope)?,
                        Buf::None,
                        Buf::Value(node.output),
                    ],
                    threads: threads(total)?,
                }])
            }
            Op::Concat { axis } => {
                let ost = strides(&out);
                let mut offset = 0;
                let mut ds = Vec::new();
                for (&v, s) in node.inputs.iter().zip(&ins) {
                    let here = offset;
                    offset += s[*axis];
                    if self.alias.get(&v).is_some_and(|&(cv, _)| cv == node.output) {
                        continue;
                    }
                    let words = nd_words(s, &strides(s), &ost)?;
                    let total = s.iter().product::<usize>();
                    ds.push(strided_copy(
                        self.buf_of(v)?,
                        node.output,
                        total,
                        [0, here * ost[*axis]],
                        &words,
                    )?);
                }
                Ok(ds)
            }
            Op::Reshape => {
                // Aliased by the executor when possible; a copy otherwise.
                let total = out.iter().product::<usize>();
                let words = nd_words(&[total], &[1], &[1])?;
                Ok(vec![strided_copy(
                    self.buf_of(first)?,
                    node.output,
                    total,
                    [0, 0],
                    &words,
                )?])
            }
            Op::Transpose { perm } => {
                let ist = strides(ins[0]);
                let sst: Vec<usize> = perm.iter().map(|&p| ist[p]).collect();
                let words = nd_words(&out, &sst, &strides(&out))?;
                let total = out.iter().product::<usize>();
                Ok(vec![strided_copy(
                    self.buf_of(first)?,
                    node.output,
                    total,
                    [0, 0],
                    &words,
                )?])
            }
            Op::Crop { offset } => {
                let [_, _, _, w] = nchw(ins[0], "input")?;
                let [n, c, oh, ow] = nchw(&out, "output")?;
                // A tile's crop that feeds a channel concat writes straight
                // into its slice of the concat's buffer (one copy, not two).
                let (dst, oct, ocoff) = self.target(node, c);
                let words = nd_words(&out, &strides(ins[0]), &strides(&[n, oct, oh, ow]))?;
                let total = out.iter().product::<usize>();
                Ok(vec![strided_copy(
                    self.buf_of(first)?,
                    dst,
                    total,
                    [offset[0] * w + offset[1], ocoff * oh * ow],
                    &words,
                )?])
            }
            Op::ChannelSlice { start, .. } => {
                let [_, _, h, w] = nchw(ins[0], "input")?;
                let words = nd_words(&out, &strides(ins[0]), &strides(&out))?;
                let total = out.iter().product::<usize>();
                Ok(vec![strided_copy(
                    self.buf_of(first)?,
                    node.output,
                    total,
                    [start * h * w, 0],
                    &words,
                )?])
            }
            Op::DepthToSpace { blocksize, mode } => {
                let [n, ch, h, w] = nchw(ins[0], "input")?;
                let b = *blocksize;
                let c2 = ch / (b * b);
                let hw = h * w;
                let dims = [n, c2, h, b, w, b];
                let sst = match mode {
                    DepthToSpaceMode::Dcr => [ch * hw, hw, w, b * c2 * hw, 1, c2 * hw],
                    DepthToSpaceMode::Crd => [ch * hw, b * b * hw, w, b * hw, 1, hw],
                };
                let words = nd_words(&dims, &sst, &strides(&dims))?;
                let total = out.iter().product::<usize>();
                Ok(vec![strided_copy(
                    self.buf_of(first)?,
                    node.output,
                    total,
                    [0, 0],
                    &words,
                )?])
            }
            Op::Pad { pads, value } => self.pad(
                node,
                first,
                [ins[0], &out],
                *pads,
                value.to_bits() as usize,
                PipelineKey::new(Shader::Copy, "pad", vec![("WG", 64)]),
            ),
            Op::BorderPad { pads, mode } => {
                let reflect = u32::from(*mode == BorderMode::Reflect);
                let consts = vec![("WG", 64), ("REFLECT", reflect)];
                self.pad(
                    node,
                    first,
                    [ins[0], &out],
                    *pads,
                    0,
                    PipelineKey::new(Shader::Copy, "border_pad", consts),
                )
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                let log = u32::from(matches!(node.op, Op::LogSoftmax { .. }));
                let s = ins[0];
                let outer: usize = s[..*axis].iter().product();
                let inner: usize = s[*axis + 1..].iter().product();
                let params = P(vec![]).us(&[outer, s[*axis], inner])?.done();
                one(
                    Shader::Softmax,
                    "main",
                    params,
                    self.buf_of(first)?,
                    node.output,
                    outer * inner,
                    vec![("WG", 64), ("LOG", log)],
                )
            }
            Op::LayerNorm {
                axis,
                scale,
                bias,
                epsilon,
            } => {
                let len: usize = ins[0][*axis..].iter().product();
                let rows: usize = ins[0][..*axis].iter().product();
                let params = P(vec![]).us(&[rows, len, 1])?.f(*epsilon).done();
                self.paired(
                    PipelineKey::new(Shader::Softmax, "layer_norm", vec![("WG", 64)]),
                    params,
                    first,
                    [scale, bias],
                    node.output,
                    rows,
                )
            }
            Op::InstanceNorm {
                scale,
                bias,
                epsilon,
            } => {
                let [n, ch, h, w] = nchw(ins[0], "input")?;
                let planes = n * ch;
                let params = P(vec![]).us(&[planes, h * w, ch])?.f(*epsilon).done();
                // One workgroup of 64 per plane (the kernel's reduction size).
                self.paired(
                    PipelineKey::new(Shader::Softmax, "instance_norm", vec![("WG", 64)]),
                    params,
                    first,
                    [scale, bias],
                    node.output,
                    planes * 64,
                )
            }
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => {
                let [n, ch, h, w] = nchw(ins[0], "input")?;
                let params = P(vec![])
                    .us(&[n, ch, h * w, *size])?
                    .f(*alpha)
                    .f(*beta)
                    .f(*bias)
                    .done();
                one(
                    Shader::Lrn,
                    "main",
                    params,
                    self.buf_of(first)?,
                    node.output,
                    n * ch * h * w,
                    vec![("WG", 64)],
                )
            }
            Op::Resize {
                mode,
                coord,
                scales,
            } => {
                let [n, ch, h, w] = nchw(ins[0], "input")?;
                let [_, _, oh, ow] = nchw(&out, "output")?;
                if let ResizeMode::Nearest(nm) = mode
                    && h > 0
                    && w > 0
                    && oh.is_multiple_of(h)
                    && ow.is_multiple_of(w)
                    && scales[0] == (oh / h) as f32
                    && scales[1] == (ow / w) as f32
                    && crate::tiling::nearest_is_floor(*coord, *nm, oh / h)
                    && crate::tiling::nearest_is_floor(*coord, *nm, ow / w)
                {
                    let params = P(vec![])
                        .us(&[n * ch, h, w, oh, ow, 0, 0, 0])?
                        .f(scales[0])
                        .f(scales[1])
                        .us(&[oh / h, ow / w])?
                        .done();
                    return one(
                        Shader::Resize,
                        "nearest_up",
                        params,
                        self.buf_of(first)?,
                        node.output,
                        n * ch * h * w,
                        vec![("WG", 64)],
                    );
                }
                let linear = match mode {
                    ResizeMode::Nearest(_) => 0,
                    ResizeMode::Linear => 1,
                    ResizeMode::Cubic { .. } => 2,
                };
                let coord_code = match coord {
                    CoordTransform::HalfPixel => 0,
                    CoordTransform::PytorchHalfPixel => 1,
                    CoordTransform::AlignCorners => 2,
                    CoordTransform::Asymmetric => 3,
                };
                let params = P(vec![])
                    .us(&[n * ch, h, w, oh, ow, linear, coord_code, 0])?
                    .f(scales[0])
                    .f(scales[1])
                    .done();
                let mut ds = one(
                    Shader::Resize,
                    "main",
                    params,
                    self.buf_of(first)?,
                    node.output,
                    n * ch * oh * ow,
                    vec![("WG", 64)],
                )?;
                if let ResizeMode::Nearest(nm) = mode {
                    // Rows then columns: the source index of each output
                    // index, as the CPU executor computes it.
                    let taps: Vec<u32> = crate::cpu::nearest_taps(*coord, *nm, scales[0], h, oh)
                        .into_iter()
                        .chain(crate::cpu::nearest_taps(*coord, *nm, scales[1], w, ow))
                        .map(|i| {
                            u32::try_from(i).map_err(|_| Error::Limit(format!("resize index {i}")))
                        })
                        .collect::<Result<_>>()?;
                    for d in &mut ds {
                        d.bufs[1] = Buf::Gpu(self.weights.table(&self.up, &taps)?);
                    }
                }
                if let ResizeMode::Cubic { a, exclude_outside } = mode {
                    // Four source indices per output row, then per column,
                    // then their weights' bits in the same order.
                    let rows =
                        crate::cpu::cubic_taps(*coord, *a, *exclude_outside, scales[0], h, oh);
                    let cols =
                        crate::cpu::cubic_taps(*coord, *a, *exclude_outside, scales[1], w, ow);
                    let both = || rows.iter().chain(&cols);
                    let mut taps = Vec::with_capacity(8 * (oh + ow));
                    for (idx, _) in both() {
                        for &i in idx {
                            taps.push(
                                u32::try_from(i)
                                    .map_err(|_| Error::Limit(format!("resize index {i}")))?,
                            );
                        }
                    }
                    taps.extend(both().flat_map(|(_, wt)| wt.map(f32::to_bits)));
                    for d in &mut ds {
                        d.bufs[1] = Buf::Gpu(self.weights.table(&self.up, &taps)?);
                    }
                }
                Ok(ds)
            }
        }
    }

    /// One dispatch reading `src` and a per-channel pair of weight vectors
    /// (uploaded once, as one buffer: the first, then the second).
    fn paired(
        &mut self,
        key: PipelineKey,
        params: Vec<u32>,
        src: ValueId,
        pair: [&Arc<Vec<f32>>; 2],
        dst: ValueId,
        invocations: usize,
    ) -> Result<Vec<Dispatch>> {
        let wt = self.weights.pair(&self.up, pair[0], pair[1])?;
        Ok(vec![Dispatch {
            key,
            params,
            bufs: [
                self.buf_of(src)?,
                Buf::Gpu(wt),
                Buf::None,
                Buf::None,
                Buf::None,
                Buf::Value(dst),
            ],
            threads: threads(invocations)?,
        }])
    }

    /// A `copy.wgsl` padding kernel (`pad` or `border_pad`) from `src` of
    /// shape `shapes[0]` into `node`'s output of shape `shapes[1]`; `fill`
    /// is the constant's bits.
    fn pad(
        &mut self,
        node: &Node,
        src: ValueId,
        shapes: [&[usize]; 2],
        pads: [usize; 4],
        fill: usize,
        key: PipelineKey,
    ) -> Result<Vec<Dispatch>> {
        let [n, ch, h, w] = nchw(shapes[0], "input")?;
        let [_, _, oh, ow] = nchw(shapes[1], "output")?;
        let total = shapes[1].iter().product::<usize>();
        let q = [n * ch, h, w, oh, ow, pads[0], pads[1], fill];
        Ok(vec![Dispatch {
            key,
            params: copy_params(total, 0, 0, q, &[1; 24])?,
            bufs: [
                self.buf_of(src)?,
                Buf::None,
                Buf::None,
                Buf::None,
                Buf::None,
                Buf::Value(node.output),
            ],
            threads: threads(total)?,
        }])
    }

    fn conv(
        &mut self,
        node: &Node,
        c: &crate::ir::Conv,
        choice: ConvChoice,
        ins: &[&[usize]],
        out: &[usize],
    ) -> Result<Vec<Dispatch>> {
        let [n, ci, h, w] = nchw(ins[0], "input")?;
        let [_, m, oh, ow] = nchw(out, "output")?;
        let ws = c.weight.shape();
        let (kh, kw) = (ws[2], ws[3]);
        let (act, alpha, beta, slope) = act_params(&c.activation);
        let (dst, oct, ocoff) = self.target(node, m);
        let has_res = node.inputs.len() > 1;
        let mut consts = vec![
            ("WG", choice.wg),
            ("ACT", act),
            ("HAS_BIAS", u32::from(c.bias.is_some())),
            ("HAS_RES", u32::from(has_res)),
        ];
        let geometry = |consts: &mut Vec<(&'static str, u32)>| -> Result<()> {
            for (k, v) in [
                ("KH", kh),
                ("KW", kw),
                ("SH", c.strides[0]),
                ("SW", c.strides[1]),
                ("DH", c.dilations[0]),
                ("DW", c.dilations[1]),
            ] {
                consts.push((
                    k,
                    u32::try_from(v).map_err(|_| Error::Limit(format!("{k} = {v}")))?,
                ));
            }
            Ok(())
        };
        let (pt, pl) = (c.pads[0], c.pads[1]);
        let ow4 = ow.div_ceil(4);
        let (shader, params, wt, t) = match choice.variant {
            ConvVariant::Naive => (
                Shader::ConvNaive,
                P(vec![])
                    .us(&[
                        n,
                        ci,
                        h,
                        w,
                        m,
                        oh,
                        ow,
                        kh,
                        kw,
                        c.strides[0],
                        c.strides[1],
                        pt,
                        pl,
                    ])?
                    .us(&[c.dilations[0], c.dilations[1], c.group, oct, ocoff])?
                    .f(alpha)
                    .f(beta)
                    .done(),
                Buf::Gpu(
                    self.weights
                        .tensor(&self.up, &c.weight, "raw", |t| t.data().to_vec())?,
                ),
                n * m * oh * ow,
            ),
            ConvVariant::Block => {
                if !block_applies(c) {
                    return Err(Error::Unsupported(format!(
                        "node {}: block conv needs 4-channel groups",
                        node.name
                    )));
                }
                geometry(&mut consts)?;
                let m4 = m.div_ceil(4);
                (
                    Shader::ConvBlock,
                    P(vec![])
                        .us(&[n, ci, h, w, m, oh, ow, pt, pl, c.group, m4, ow4, oct, ocoff])?
                        .f(alpha)
                        .f(beta)
                        .done(),
                    Buf::Gpu(
                        self.weights
                            .tensor(&self.up, &c.weight, "conv4", pack_conv_block)?,
                    ),
                    n * m4 * oh * ow4,
                )
            }
            ConvVariant::Block8 | ConvVariant::Block8Texture => {
                if !block8_applies(c) {
                    return Err(Error::Unsupported(format!(
                        "node {}: block8 conv needs 8-channel groups",
                        node.name
                    )));
                }
                // Weights larger than the adapter's texture limit run the
                // same kernel from a buffer: same accumulation order, same bits.
                let side = usize::try_from(self.up.max_texture).unwrap_or(usize::MAX);
                let texture = choice.variant == ConvVariant::Block8Texture
                    && texture_fits(c)
                    && ws[1] * kh * kw <= side
                    && m.div_ceil(4) <= side;
                geometry(&mut consts)?;
                consts.push(("WTEX", u32::from(texture)));
                let m4 = m.div_ceil(4);
                let wg = usize::try_from(choice.wg.max(1))
                    .map_err(|_| Error::Limit(format!("WG = {}", choice.wg)))?;
                let ow8 = ow.div_ceil(8);
                (
                    Shader::ConvBlock8,
                    P(vec![])
                        .us(&[n, ci, h, w, m, oh, ow, pt, pl, c.group, m4, ow8, oct, ocoff])?
                        .f(alpha)
                        .f(beta)
                        .done(),
                    if texture {
                        Buf::Tex(
                            self.weights
                                .texture(&self.up, &c.weight, m4, pack_conv_block)?,
                        )
                    } else {
                        Buf::Gpu(self.weights.tensor(
                            &self.up,
                            &c.weight,
                            "conv4",
                            pack_conv_block,
                        )?)
                    },
                    // Whole workgroups per (image, channel block pair): the
                    // shader keeps the weight addresses workgroup-uniform.
                    n * m4.div_ceil(2) * (oh * ow8).div_ceil(wg) * wg,
                )
            }
            ConvVariant::Grouped => {
                geometry(&mut consts)?;
                (
                    Shader::ConvDw,
                    P(vec![])
                        .us(&[n, ci, h, w, m, oh, ow, pt, pl, c.group, ow4, 0, oct, ocoff])?
                        .f(alpha)
                        .f(beta)
                        .done(),
                    Buf::Gpu(
                        self.weights
                            .tensor(&self.up, &c.weight, "raw", |t| t.data().to_vec())?,
                    ),
                    n * m * oh * ow4,
                )
            }
        };
        let bias = match &c.bias {
            Some(b) => Buf::Gpu(self.weights.vec(&self.up, b)?),
            None => Buf::None,
        };
        let res = if has_res {
            self.buf_of(node.inputs[1])?
        } else {
            Buf::None
        };
        Ok(vec![Dispatch {
            key: PipelineKey::new(shader, "main", consts),
            params,
            bufs: [
                self.buf_of(node.inputs[0])?,
                wt,
                bias,
                self.slope(&slope)?,
                res,
                Buf::Value(dst),
            ],
            threads: threads(t)?,
        }])
    }
}

/// A strided copy of `total` elements over the index space `words` (see
/// [`nd_words`]) from `src` to `dst`, starting at `base` = [source,
/// destination] offsets. Where the innermost dim is a multiple of 4 and
/// contiguous in both buffers, one invocation moves 4 elements
/// (`strided4`): the index arithmetic, two integer divisions per dim that
/// llvmpipe runs lane by lane, is paid once per 4 elements.
fn strided_copy(
    src: Buf,
    dst: ValueId,
    total: usize,
    base: [usize; 2],
    words: &[usize],
) -> Result<Dispatch> {
    let by4 = words.len() == 24 && words[7].is_multiple_of(4) && words[15] == 1 && words[23] == 1;
    let (entry, invocations) = if by4 {
        ("strided4", total / 4)
    } else {
        ("strided", total)
    };
    Ok(Dispatch {
        key: PipelineKey::new(Shader::Copy, entry, vec![("WG", 64)]),
        params: copy_params(total, base[0], base[1], [0; 8], words)?,
        bufs: [
            src,
            Buf::None,
            Buf::None,
            Buf::None,
            Buf::None,
            Buf::Value(dst),
        ],
        threads: threads(invocations)?,
    })
}

/// Fewest elements per contiguous run, and most runs, for which a strided
/// copy is recorded as buffer copies instead of a shader dispatch.
const MIN_RUN: usize = 256;
const MAX_RUNS: usize = 1024;

impl Dispatch {
    /// A strided copy whose innermost dim is contiguous in both buffers, as
    /// `(source, destination, length)` element runs: lavapipe moves those
    /// with `memcpy`, several times faster than a copy shader moves them
    /// (a tile's crops and concats, a whole map's concat inputs). `None`
    /// for any other dispatch, or runs too short or too many to pay.
    pub fn copy_runs(&self) -> Option<Vec<[usize; 3]>> {
        if self.key.shader != Shader::Copy || !matches!(self.key.entry, "strided" | "strided4") {
            return None;
        }
        // The words `copy_params` wrote: total, bases, a spare word, 8 words
        // for the pad kernel, then dims, source strides and destination
        // strides, 8 each.
        let p = &self.params;
        let (total, sbase, dbase) = (
            *p.first()? as usize,
            *p.get(1)? as usize,
            *p.get(2)? as usize,
        );
        let nd = p.get(12..36)?;
        let (dims, sstr, dstr) = (&nd[..8], &nd[8..16], &nd[16..]);
        let run = dims[7] as usize;
        if total == 0 || run < MIN_RUN || sstr[7] != 1 || dstr[7] != 1 || total % run != 0 {
            return None;
        }
        let count = total / run;
        if count > MAX_RUNS {
            return None;
        }
        let mut runs = Vec::with_capacity(count);
        for k in 0..count {
            let (mut rest, mut s, mut d) = (k, sbase, dbase);
            for i in (0..7).rev() {
                let n = dims[i] as usize;
                let e = rest % n.max(1);
                rest /= n.max(1);
                s += e * sstr[i] as usize;
                d += e * dstr[i] as usize;
            }
            runs.push([s, d, run]);
        }
        Some(runs)
    }
}

/// (inner, channels) for "channel = (i / inner) % channels" (dim 1).
fn channel_layout(shape: &[usize]) -> (usize, usize) {
    if shape.len() >= 2 {
        (shape[2..].iter().product(), shape[1])
    } else {
        (1, 1)
    }
}

fn elementwise_params(
    total: usize,
    inner: usize,
    c: usize,
    alpha: f32,
    beta: f32,
    nd: &[usize],
) -> Result<Vec<u32>> {
    Ok(P(vec![])
        .us(&[total, inner.max(1), c.max(1), 0])?
        .f(alpha)
        .f(beta)
        .us(&[0, 0])?
        .us(nd)?
        .done())
}

fn copy_params(
    total: usize,
    sbase: usize,
    dbase: usize,
    q: [usize; 8],
    nd: &[usize],
) -> Result<Vec<u32>> {
    P(vec![])
        .us(&[total, sbase, dbase, 0])?
        .us(&q)?
        .us(nd)
        .map(P::done)
}

#[cfg(test)]
mod tests {
    use super::{Buf, collapse, nd_words, strided_copy};

    #[test]
    fn index_spaces_collapse_to_their_fewest_dims() {
        // A crop of rows 2..28 of a [1, 64, 30, 128] map: rows and columns
        // are contiguous in both buffers, channels are not.
        let (d, a, b) = collapse(
            &[1, 64, 26, 128],
            &[245_760, 3840, 128, 1],
            &[212_992, 3328, 128, 1],
        );
        assert_eq!((d, a, b), (vec![64, 3328], vec![3840, 1], vec![3328, 1]));
        // A plain copy is one dim.
        let (d, a, b) = collapse(&[2, 3, 4], &[12, 4, 1], &[12, 4, 1]);
        assert_eq!((d, a, b), (vec![24], vec![1], vec![1]));
        // Broadcasting keeps the dims whose strides break the pattern.
        let (d, a, b) = collapse(&[2, 3, 4], &[12, 4, 1], &[0, 0, 1]);
        assert_eq!((d, a, b), (vec![6, 4], vec![4, 1], vec![0, 1]));
        // Everything of extent 1: no dims at all (index 0 only).
        let (d, _, _) = collapse(&[1, 1], &[1, 1], &[1, 1]);
        assert!(d.is_empty());
    }

    #[test]
    fn long_contiguous_copies_become_buffer_runs_and_short_ones_stay_shaders() {
        // Rows 2..28 of a [1, 64, 30, 128] map into channels 4.. of a
        // 68-channel concat: one run of 26 rows per channel.
        let words = nd_words(
            &[1, 64, 26, 128],
            &[245_760, 3840, 128, 1],
            &[226_304, 3328, 128, 1],
        )
        .expect("rank 4");
        let total = 64 * 26 * 128;
        let d = strided_copy(Buf::None, 0, total, [2 * 128, 4 * 3328], &words).expect("copy");
        let runs = d.copy_runs().expect("long rows are runs");
        assert_eq!(runs.len(), 64);
        assert_eq!(runs[0], [256, 4 * 3328, 3328]);
        assert_eq!(runs[63], [63 * 3840 + 256, 67 * 3328, 3328]);
        assert_eq!(runs.iter().map(|r| r[2]).sum::<usize>(), total);
        // Columns 1..9 of each row: runs of 8 elements are left to the shader.
        let words =
            nd_words(&[1, 4, 16, 8], &[2048, 512, 32, 1], &[512, 128, 8, 1]).expect("rank 4");
        let d = strided_copy(Buf::None, 0, 4 * 16 * 8, [1, 0], &words).expect("copy");
        assert_eq!(d.copy_runs(), None);
        // A transpose (innermost stride not 1) is never a run.
        let words = nd_words(&[64, 512], &[1, 64], &[512, 1]).expect("rank 2");
        let d = strided_copy(Buf::None, 0, 64 * 512, [0, 0], &words).expect("copy");
        assert_eq!(d.copy_runs(), None);
    }
}
