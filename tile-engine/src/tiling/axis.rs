//! Receptive-field arithmetic along one spatial axis.
//!
//! Every op a fused block may hold acts on H and W independently, so the
//! geometry is worked out per axis: which input indices an output range needs
//! ([`AxisMap::need`]), how far an output range must grow so that the per-tile
//! op is well formed ([`AxisMap::expand`]), and the pads the per-tile copy of
//! the op gets ([`AxisMap::local`]).

use super::region::Span;
use crate::error::{Error, Result};

/// How one output axis of an op depends on the same axis of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AxisMap {
    /// Output index `o` reads input index `o` (elementwise ops, concat, residuals).
    Identity,
    /// A conv/pool window: output `o` reads `o*stride - pad_begin + k*dilation`, `k < kernel`.
    Window {
        kernel: usize,
        stride: usize,
        pad_begin: usize,
        pad_end: usize,
        dilation: usize,
        ceil_mode: bool,
    },
    /// A transposed conv: input `x` writes `x*stride - pad_begin + k*dilation`.
    Transposed {
        kernel: usize,
        stride: usize,
        pad_begin: usize,
        dilation: usize,
    },
    /// Constant padding: output `o` reads input `o - begin`.
    Pad { begin: usize },
    /// A crop: output `o` reads input `o + offset`.
    Crop { offset: usize },
    /// Nearest upsampling by an integer factor (also DepthToSpace): output `o` reads `o / factor`.
    Upsample { factor: usize },
}

/// The per-tile copy's parameters along one axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LocalAxis {
    /// Padding before the tile's first input index.
    pub pad_begin: usize,
    /// Padding after the tile's last input index.
    pub pad_end: usize,
    /// Extra output rows/cols of a transposed conv.
    pub output_padding: usize,
}

fn to_i(v: usize) -> i64 {
    v as i64
}

fn clamp_span(start: i64, end: i64, len: usize) -> Span {
    let s = start.clamp(0, to_i(len)) as usize;
    let e = end.clamp(0, to_i(len)) as usize;
    Span::new(s, e.max(s))
}

impl AxisMap {
    fn eff(kernel: usize, dilation: usize) -> i64 {
        to_i(dilation * (kernel - 1) + 1)
    }

    /// Grows `out` until the op can compute it from a non-empty input range
    /// laid out the way the executor expects: aligned to the upsampling
    /// factor, and not lying wholly in padding. The consumer crops the excess.
    pub(crate) fn expand(&self, out: Span, in_len: usize, out_len: usize) -> Result<Span> {
        let mut o = out;
        match *self {
            AxisMap::Identity | AxisMap::Crop { .. } => {}
            AxisMap::Window { .. } | AxisMap::Transposed { .. } | AxisMap::Pad { .. } => {
                while self.need(o, in_len).is_empty() && o.end < out_len {
                    o.end += 1;
                }
                while self.need(o, in_len).is_empty() && o.start > 0 {
                    o.start -= 1;
                }
                // A ceil_mode window hanging past the end pad: with the end pad
                // capped (see `local`) a tile holding only that window would be
                // shorter than the window, so it also computes its predecessors.
                while o.start > 0 && self.too_short(o, in_len) {
                    o.start -= 1;
                }
            }
            AxisMap::Upsample { factor } => {
                o.start = o.start / factor * factor;
                o.end = (o.end.div_ceil(factor) * factor).min(out_len);
            }
        }
        if self.need(o, in_len).is_empty() {
            return Err(Error::Unsupported(format!(
                "output range {}..{} reads no input index (every window lies in padding)",
                out.start, out.end
            )));
        }
        Ok(o)
    }

    /// True when the per-tile padded extent of a window op would be shorter
    /// than one window (only possible at a `ceil_mode` far border).
    fn too_short(&self, out: Span, in_len: usize) -> bool {
        let AxisMap::Window {
            kernel, dilation, ..
        } = *self
        else {
            return false;
        };
        let inp = self.need(out, in_len);
        match self.local(out, inp, in_len) {
            Ok(l) => (inp.len() + l.pad_begin + l.pad_end) < Self::eff(kernel, dilation) as usize,
            Err(_) => false,
        }
    }

    /// The input indices that output range `out` reads, clipped to `[0, in_len)`.
    pub(crate) fn need(&self, out: Span, in_len: usize) -> Span {
        if out.is_empty() {
            return Span::default();
        }
        let (o0, o1) = (to_i(out.start), to_i(out.end));
        match *self {
            AxisMap::Identity => clamp_span(o0, o1, in_len),
            AxisMap::Window {
                kernel,
                stride,
                pad_begin,
                dilation,
                ..
            } => {
                let s = to_i(stride);
                let start = o0 * s - to_i(pad_begin);
                let end = (o1 - 1) * s - to_i(pad_begin) + Self::eff(kernel, dilation);
                clamp_span(start, end, in_len)
            }
            AxisMap::Transposed {
                kernel,
                stride,
                pad_begin,
                dilation,
            } => {
                let s = to_i(stride);
                let reach = to_i(dilation * (kernel - 1));
                let x0 = (o0 + to_i(pad_begin) - reach).div_euclid(s);
                let x1 = (o1 - 1 + to_i(pad_begin)).div_euclid(s) + 1;
                clamp_span(x0, x1, in_len)
            }
            AxisMap::Pad { begin } => clamp_span(o0 - to_i(begin), o1 - to_i(begin), in_len),
            AxisMap::Crop { offset } => clamp_span(o0 + to_i(offset), o1 + to_i(offset), in_len),
            AxisMap::Upsample { factor } => clamp_span(
                o0 / to_i(factor),
                o1.div_euclid(to_i(factor)) + i64::from(o1 % to_i(factor) != 0),
                in_len,
            ),
        }
    }

    /// Parameters of the per-tile op that computes exactly `out` from exactly
    /// `inp` (= `self.need(out)`), where the untiled input has `in_len` indices.
    ///
    /// Windows keep the map border's padding only where the tile touches the
    /// border (partially, when only part of the pad is reached); interior tile
    /// edges get zero padding because the halo holds the real neighbours. At
    /// the far border of a `ceil_mode` pool the end pad stays capped at the
    /// untiled one, so `count_include_pad` divisors and the output count match.
    pub(crate) fn local(&self, out: Span, inp: Span, in_len: usize) -> Result<LocalAxis> {
        let (o0, o1) = (to_i(out.start), to_i(out.end));
        let (i0, i1) = (to_i(inp.start), to_i(inp.end));
        let nonneg = |v: i64, what: &str| -> Result<usize> {
            usize::try_from(v).map_err(|_| {
                Error::Shape(format!(
                    "tile geometry: negative {what} ({v}) for output {o0}..{o1}, input {i0}..{i1}"
                ))
            })
        };
        let mut l = LocalAxis::default();
        match *self {
            AxisMap::Identity | AxisMap::Crop { .. } | AxisMap::Upsample { .. } => {}
            AxisMap::Window {
                kernel,
                stride,
                pad_begin,
                pad_end,
                dilation,
                ..
            } => {
                let s = to_i(stride);
                let start = o0 * s - to_i(pad_begin);
                let end = (o1 - 1) * s - to_i(pad_begin) + Self::eff(kernel, dilation);
                l.pad_begin = nonneg(i0 - start, "begin pad")?;
                l.pad_end = nonneg(end - i1, "end pad")?;
                if inp.end == in_len {
                    l.pad_end = l.pad_end.min(pad_end);
                }
            }
            AxisMap::Transposed {
                kernel,
                stride,
                pad_begin,
                dilation,
            } => {
                let s = to_i(stride);
                l.pad_begin = nonneg(o0 + to_i(pad_begin) - i0 * s, "begin pad")?;
                let natural = (i1 - i0 - 1) * s + to_i(dilation * (kernel - 1)) + 1;
                let end = natural - to_i(l.pad_begin) - (o1 - o0);
                if end >= 0 {
                    l.pad_end = nonneg(end, "end pad")?;
                } else {
                    l.output_padding = nonneg(-end, "output padding")?;
                }
            }
            AxisMap::Pad { begin } => {
                l.pad_begin = nonneg(i0 + to_i(begin) - o0, "begin pad")?;
                l.pad_end = nonneg(o1 - i1 - to_i(begin), "end pad")?;
            }
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(kernel: usize, stride: usize, pb: usize, pe: usize, dilation: usize) -> AxisMap {
        AxisMap::Window {
            kernel,
            stride,
            pad_begin: pb,
            pad_end: pe,
            dilation,
            ceil_mode: false,
        }
    }

    #[test]
    fn conv3x3_pad1_interior_and_border() {
        let m = win(3, 1, 1, 1, 1);
        assert_eq!(m.need(Span::new(0, 4), 8), Span::new(0, 5));
        assert_eq!(m.need(Span::new(4, 8), 8), Span::new(3, 8));
        let top = m.local(Span::new(0, 4), Span::new(0, 5), 8).expect("local");
        assert_eq!((top.pad_begin, top.pad_end), (1, 0));
        let bottom = m.local(Span::new(4, 8), Span::new(3, 8), 8).expect("local");
        assert_eq!((bottom.pad_begin, bottom.pad_end), (0, 1));
    }

    #[test]
    fn partial_pad_when_window_hangs_over_border() {
        // kernel 7, pad 3: output row 1 still reaches two rows into the top pad.
        let m = win(7, 1, 3, 3, 1);
        let inp = m.need(Span::new(1, 3), 10);
        assert_eq!(inp, Span::new(0, 6));
        let l = m.local(Span::new(1, 3), inp, 10).expect("local");
        assert_eq!((l.pad_begin, l.pad_end), (2, 0));
    }

    #[test]
    fn window_in_padding_expands() {
        // kernel 1, pad 2: output rows 0 and 1 read only padding.
        let m = win(1, 1, 2, 0, 1);
        let o = m.expand(Span::new(0, 1), 4, 6).expect("expand");
        assert_eq!(o, Span::new(0, 3));
        assert_eq!(m.need(o, 4), Span::new(0, 1));
    }

    #[test]
    fn upsample_aligns() {
        let m = AxisMap::Upsample { factor: 2 };
        let o = m.expand(Span::new(3, 6), 5, 10).expect("expand");
        assert_eq!(o, Span::new(2, 6));
        assert_eq!(m.need(o, 5), Span::new(1, 3));
    }
}
