//! The embedded default model: UpscalerJS's RDN ×2 super-resolution network
//! (`@upscalerjs/default-model@1.0.0`, MIT, © Kevin Scott), with its sample
//! input and the authors' reference output, so demos and tests need no download.
//!
//! Pixel convention (from the package's model definition and
//! `upscaler@1.0.0`'s post-processing):
//! - input `[1, 3, H, W]`: the image's R, G, B as float32 in `[0, 255]`
//!   (alpha dropped, no normalisation);
//! - output `[1, 3, 2H, 2W]` in the same range; to get 8-bit pixels, clip to
//!   `[0, 255]` and round to nearest, ties to even (what a browser's
//!   `Uint8ClampedArray` store does). [`tensor_to_png`] does exactly that.
//!
//! The files are vendored under `assets/default-model/` (see its README).

use std::collections::HashMap;
use std::io::Cursor;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::tensor::{Tensor, checked_numel};

/// The model's `model.json` (TF.js layers model, Keras 2.10).
pub const MODEL_JSON: &[u8] = include_bytes!("../../assets/default-model/model.json");
/// The model's single float32 weight shard.
pub const WEIGHTS: &[u8] = include_bytes!("../../assets/default-model/group1-shard1of1.bin");
/// Shard file name the manifest refers to.
pub const WEIGHTS_NAME: &str = "group1-shard1of1.bin";
/// The package's licence text (MIT).
pub const LICENSE: &str = include_str!("../../assets/default-model/LICENSE");
/// Upscaling factor of the model.
pub const SCALE: usize = 2;

const FIXTURE_PNG: &[u8] = include_bytes!("../../assets/default-model/fixture.png");
const REFERENCE_PNG: &[u8] = include_bytes!("../../assets/default-model/result.png");

/// Largest image side accepted when decoding a PNG (guards allocations from untrusted files).
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// The model as an IR graph for an input of `input_hw` = `[H, W]` pixels
/// (input `[1, 3, H, W]`, output `[1, 3, 2H, 2W]`).
pub fn graph(input_hw: [usize; 2]) -> Result<Graph> {
    let [h, w] = input_hw;
    if h == 0 || w == 0 {
        return Err(Error::InvalidInput(format!(
            "input size {h}×{w} must be positive"
        )));
    }
    let shards = |p: &str| (p == WEIGHTS_NAME).then(|| WEIGHTS.to_vec());
    crate::tfjs::load_from_memory_with_input(MODEL_JSON, &shards, Some(&[1, 3, h, w]))
}

/// The package's 128×128 sample input (RGBA PNG, alpha 255).
pub fn fixture_png() -> &'static [u8] {
    FIXTURE_PNG
}

/// The package's 256×256 reference output for [`fixture_png`] (RGBA PNG, alpha 255).
pub fn reference_png() -> &'static [u8] {
    REFERENCE_PNG
}

/// Decodes a PNG (any colour type) into 8-bit RGB: `(width, height, rgb bytes)`.
pub fn decode_rgb8(png: &[u8]) -> Result<(u32, u32, Vec<u8>)> {
    let rgb = decode(png)?.into_rgb8();
    Ok((rgb.width(), rgb.height(), rgb.into_raw()))
}

/// Decodes a PNG into a `[1, 3, H, W]` tensor in `[0, 255]`: an 8-bit
/// image's bytes as they are, a 16-bit one's values over 257 (its full
/// precision, where 8-bit decoding would round it away).
pub fn png_to_tensor(png: &[u8]) -> Result<Tensor> {
    png_in_range(png, 255.0)
}

/// Decodes a PNG into a `[1, 3, H, W]` tensor in `[0, 1]`: an 8-bit
/// image's bytes over 255, a 16-bit one's values over 65535, each rounded
/// once (over 257 and then over 255 left a quarter of 16-bit values 1 ULP off).
pub fn png_to_unit_tensor(png: &[u8]) -> Result<Tensor> {
    png_in_range(png, 1.0)
}

/// Decodes a PNG into a `[1, 4, H, W]` RGBA tensor in `[0, top]` (alpha
/// `top` where the image has none), for a model that takes four channels:
/// each value one division of the stored integer, as [`png_in_range`].
pub fn png_to_rgba_tensor(png: &[u8], top: f32) -> Result<Tensor> {
    png_planes(png, top, 4)
}

/// Whether a PNG has pixels that are not fully opaque, read in the
/// image's own buffer (a converted copy of a large image is gigabytes).
pub fn png_is_transparent(png: &[u8]) -> Result<bool> {
    use image::DynamicImage as D;
    Ok(match decode(png)? {
        D::ImageRgba8(b) => b.pixels().any(|p| p[3] != u8::MAX),
        D::ImageLumaA8(b) => b.pixels().any(|p| p[1] != u8::MAX),
        D::ImageRgba16(b) => b.pixels().any(|p| p[3] != u16::MAX),
        D::ImageLumaA16(b) => b.pixels().any(|p| p[1] != u16::MAX),
        _ => false,
    })
}

/// A PNG's pixels scaled to `[0, top]` with `top` 255 or 1: either way each
/// value is one division of the stored integer, so it is the nearest f32.
fn png_in_range(png: &[u8], top: f32) -> Result<Tensor> {
    png_planes(png, top, 3)
}

/// A PNG as `[1, channels, H, W]` planes of its RGB (3) or RGBA (4) values
/// over `top`, each one division of the stored 8- or 16-bit integer.
fn png_planes(png: &[u8], top: f32, channels: usize) -> Result<Tensor> {
    let img = decode(png)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = checked_numel(&[h, w])?;
    let wide = img.color().bytes_per_pixel() != img.color().channel_count();
    let data = match (wide, channels) {
        (false, 3) => planes(img.into_rgb8().as_raw(), 3, plane, 255.0 / top)?,
        (false, _) => planes(img.into_rgba8().as_raw(), 4, plane, 255.0 / top)?,
        (true, 3) => planes(img.into_rgb16().as_raw(), 3, plane, 65535.0 / top)?,
        (true, _) => planes(img.into_rgba16().as_raw(), 4, plane, 65535.0 / top)?,
    };
    Tensor::new(vec![1, channels, h, w], data)
}

/// Interleaved pixels of `channels` values to planes, each value over `div`.
fn planes<T: Copy + Into<f32>>(
    raw: &[T],
    channels: usize,
    plane: usize,
    div: f32,
) -> Result<Vec<f32>> {
    let mut data = vec![0.0f32; checked_numel(&[plane, channels])?];
    for (i, px) in raw.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            data[c * plane + i] = v.into() / div;
        }
    }
    Ok(data)
}

/// Decodes a PNG under the size limits.
fn decode(png: &[u8]) -> Result<image::DynamicImage> {
    let mut reader = image::ImageReader::with_format(Cursor::new(png), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| Error::InvalidInput(format!("cannot decode PNG: {e}")))
}

/// The sample image as a `[1, 3, side, side]` input in `[0, 255]`: the
/// embedded fixture itself at its own size (128), else Catmull-Rom resampled
/// (whole byte values still, as any photo a user sends would be).
pub fn sample_input(side: usize) -> Result<Tensor> {
    let (w, h, rgb) = decode_rgb8(FIXTURE_PNG)?;
    let s = u32::try_from(side)
        .ok()
        .filter(|s| (1..=MAX_IMAGE_SIDE).contains(s))
        .ok_or_else(|| Error::InvalidInput(format!("sample image side {side} is out of range")))?;
    if (w, h) == (s, s) {
        return rgb8_to_tensor(side, side, &rgb);
    }
    let img = image::RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| Error::InvalidInput("sample image size".into()))?;
    let img = image::imageops::resize(&img, s, s, image::imageops::FilterType::CatmullRom);
    rgb8_to_tensor(side, side, img.as_raw())
}

/// Interleaved 8-bit RGB (row-major, `h * w * 3` bytes) to `[1, 3, H, W]` in `[0, 255]`.
pub fn rgb8_to_tensor(w: usize, h: usize, rgb: &[u8]) -> Result<Tensor> {
    let plane = checked_numel(&[h, w])?;
    if checked_numel(&[plane, 3])? != rgb.len() {
        return Err(Error::InvalidInput(format!(
            "{} bytes are not a {w}×{h} RGB image",
            rgb.len()
        )));
    }
    let mut data = vec![0.0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * plane + i] = f32::from(px[c]);
        }
    }
    Tensor::new(vec![1, 3, h, w], data)
}

/// `[1, 3, H, W]` in `[0, 255]` to interleaved 8-bit RGB: clipped, rounded to
/// nearest with ties to even (the package's post-processing). NaN becomes 0.
pub fn tensor_to_rgb8(t: &Tensor) -> Result<(usize, usize, Vec<u8>)> {
    let (h, w) = match t.shape() {
        [1, 3, h, w] => (*h, *w),
        s => {
            return Err(Error::InvalidInput(format!(
                "an RGB image tensor is [1, 3, H, W], got {s:?}"
            )));
        }
    };
    let plane = h * w;
    let d = t.data();
    let mut rgb = vec![0u8; 3 * plane];
    for i in 0..plane {
        for c in 0..3 {
            rgb[3 * i + c] = to_u8(d[c * plane + i]);
        }
    }
    Ok((w, h, rgb))
}

/// One value to a byte as a `Uint8ClampedArray` store does it.
pub fn to_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        // Clamped to [0, 255] first, so the cast cannot truncate.
        v.clamp(0.0, 255.0).round_ties_even() as u8
    }
}

/// Encodes `[1, 3, H, W]` (range `[0, 255]`) as an 8-bit RGB PNG.
pub fn tensor_to_png(t: &Tensor) -> Result<Vec<u8>> {
    let (w, h, rgb) = tensor_to_rgb8(t)?;
    let (w, h) = (
        u32::try_from(w).map_err(|_| Error::Limit("image width".into()))?,
        u32::try_from(h).map_err(|_| Error::Limit("image height".into()))?,
    );
    let img = image::RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| Error::InvalidInput("image buffer size".into()))?;
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| Error::InvalidInput(format!("cannot encode PNG: {e}")))?;
    Ok(out)
}

/// The embedded shards by manifest path, for callers that load the model
/// with their own options through [`crate::tfjs::load_from_memory_with_input`].
pub fn shards() -> HashMap<&'static str, &'static [u8]> {
    HashMap::from([(WEIGHTS_NAME, WEIGHTS)])
}
