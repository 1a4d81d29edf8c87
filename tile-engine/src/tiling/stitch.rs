//! Cutting tile inputs out of NCHW maps and pasting tile outputs back.

use super::region::Region;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn nchw(t: &Tensor) -> Result<[usize; 4]> {
    match t.shape() {
        [n, c, h, w] => Ok([*n, *c, *h, *w]),
        s => Err(Error::Shape(format!("expected an NCHW map, got {s:?}"))),
    }
}

/// Copies `region` of every plane of an NCHW map into a new tensor.
pub fn slice_region(t: &Tensor, region: Region) -> Result<Tensor> {
    let [n, c, h, w] = nchw(t)?;
    if region.rows.end > h
        || region.cols.end > w
        || region.rows.is_empty()
        || region.cols.is_empty()
    {
        return Err(Error::Shape(format!(
            "region {region} outside (or empty in) a {h}×{w} map"
        )));
    }
    let (rh, rw) = (region.rows.len(), region.cols.len());
    let mut out = Vec::with_capacity(n * c * rh * rw);
    for plane in t.data().chunks_exact(h * w) {
        for y in region.rows.start..region.rows.end {
            out.extend_from_slice(&plane[y * w + region.cols.start..y * w + region.cols.end]);
        }
    }
    Tensor::new(vec![n, c, rh, rw], out)
}

/// Writes `src` (a tile's output) into `region` of `dst`, plane by plane.
pub fn paste_region(dst: &mut Tensor, src: &Tensor, region: Region) -> Result<()> {
    let [n, c, h, w] = nchw(dst)?;
    let [sn, sc, sh, sw] = nchw(src)?;
    if sn != n
        || sc != c
        || sh != region.rows.len()
        || sw != region.cols.len()
        || region.rows.end > h
        || region.cols.end > w
    {
        return Err(Error::Shape(format!(
            "tile {:?} does not fit {region} of {:?}",
            src.shape(),
            dst.shape()
        )));
    }
    let data = dst.data_mut();
    for (p, tile_plane) in src.data().chunks_exact(sh * sw).enumerate() {
        let plane = &mut data[p * h * w..(p + 1) * h * w];
        for (y, row) in tile_plane.chunks_exact(sw).enumerate() {
            let at = (region.rows.start + y) * w + region.cols.start;
            plane[at..at + sw].copy_from_slice(row);
        }
    }
    Ok(())
}
