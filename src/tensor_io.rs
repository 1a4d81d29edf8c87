//! Reading and writing tensors as `.npy` (float32, any shape) and `.png`
//! (an image as a `[1, C, H, W]` float tensor).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use tile_engine::Tensor;

/// How PNG pixels map to floats: `value = byte / 255 * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelRange {
    /// 1.0 maps bytes to [0, 1] (the default); 255.0 keeps [0, 255].
    pub scale: f32,
}

impl Default for PixelRange {
    fn default() -> Self {
        Self { scale: 1.0 }
    }
}

/// The kind of tensor file, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// NumPy `.npy`.
    Npy,
    /// PNG image.
    Png,
}

/// Picks the format from a path's extension.
pub fn format_of(path: &Path) -> Result<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("npy") => Ok(Format::Npy),
        Some("png") => Ok(Format::Png),
        _ => bail!("{}: expected a .npy or .png file", path.display()),
    }
}

/// Reads a float32 `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    npy_from_bytes(&bytes).with_context(|| format!("{}", path.display()))
}

/// Parses `.npy` bytes holding float32 values in C order.
pub fn npy_from_bytes(bytes: &[u8]) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(bytes).context("not a valid .npy file")?;
    let dtype = npy.dtype();
    // Either byte order: npyz reads big-endian floats into native ones.
    let float32 = matches!(&dtype, npyz::DType::Plain(t)
        if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4);
    ensure!(
        float32,
        "expected float32 ('<f4') data, found dtype {} (save it with `a.astype(numpy.float32)`)",
        dtype.descr()
    );
    let fortran = npy.order() == npyz::Order::Fortran;
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).context("dimension too large"))
        .collect::<Result<_>>()?;
    let numel = tile_engine::tensor::checked_numel(&shape)?;
    // The header's shape is untrusted: check it against the bytes actually present.
    ensure!(
        numel.checked_mul(4).is_some_and(|n| n <= bytes.len()),
        "header declares {numel} values but the file holds {} bytes",
        bytes.len()
    );
    let data: Vec<f32> = npy.into_vec().context("truncated .npy data")?;
    let data = if fortran {
        fortran_to_c(&shape, &data)
    } else {
        data
    };
    Ok(Tensor::new(shape, data)?)
}

/// Reorders values stored in Fortran (column-major) order into C order:
/// NumPy writes a transposed or `asfortranarray` array that way.
fn fortran_to_c(shape: &[usize], data: &[f32]) -> Vec<f32> {
    // Column-major strides: the first axis varies fastest.
    let mut strides = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        strides[k] = strides[k - 1] * shape[k - 1];
    }
    let mut index = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(data.len());
    for _ in 0..data.len() {
        let at: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(data[at]);
        // Next C-order index: the last axis varies fastest.
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

/// Writes a tensor as float32 `.npy`.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    use npyz::WriterBuilder;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.extend(t.data().iter().copied())
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.finish()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Decodes PNG bytes into a `[1, 3, H, W]` tensor (RGB; alpha dropped, grey
/// expanded; 16-bit images at full precision). Decoding (with its
/// image-size limits) is the default model's; only the range differs.
pub fn png_to_tensor(bytes: &[u8], range: PixelRange) -> Result<Tensor> {
    scaled(bytes, range, |b, top| {
        if top == 255.0 {
            tile_engine::default_model::png_to_tensor(b)
        } else {
            tile_engine::default_model::png_to_unit_tensor(b)
        }
    })
}

/// A PNG decoded by `decode(bytes, top)` into `[0, range.scale]`: [0, 255]
/// and [0, 1] each come from one division of the stored integer; any other
/// scale multiplies the [0, 1] values.
fn scaled(
    bytes: &[u8],
    range: PixelRange,
    decode: impl Fn(&[u8], f32) -> tile_engine::Result<Tensor>,
) -> Result<Tensor> {
    if range.scale == 255.0 {
        return Ok(decode(bytes, 255.0)?);
    }
    let mut t = decode(bytes, 1.0)?;
    if range.scale != 1.0 {
        t.data_mut().iter_mut().for_each(|v| *v *= range.scale);
    }
    Ok(t)
}

/// Decodes PNG bytes into a `[1, 4, H, W]` RGBA tensor (alpha at the top
/// of the range where the image has none), scaled as [`png_to_tensor`].
pub fn png_to_rgba_tensor(bytes: &[u8], range: PixelRange) -> Result<Tensor> {
    scaled(bytes, range, tile_engine::default_model::png_to_rgba_tensor)
}

/// Checks that a tensor of `shape` can be written as a PNG, `[1, C, H, W]`
/// with C = 1 (grey) or 3 (RGB), and returns `[C, H, W]`.
pub fn check_png_shape(shape: &[usize]) -> Result<[usize; 3]> {
    let &[1, c, h, w] = shape else {
        bail!("an image output must be [1, C, H, W], got {shape:?}; write it as .npy");
    };
    ensure!(
        c == 1 || c == 3,
        "an image output needs 1 or 3 channels, got {c}; write it as .npy"
    );
    Ok([c, h, w])
}

/// Encodes a `[1, C, H, W]` tensor as a grey (C = 1) or RGB (C = 3) PNG,
/// clamping and rounding each value.
pub fn tensor_to_png(t: &Tensor, range: PixelRange) -> Result<Vec<u8>> {
    let [c, h, w] = check_png_shape(t.shape())?;
    let d = t.data();
    let px = |ch: usize, y: usize, x: usize| {
        let v = d[ch * h * w + y * w + x] / range.scale * 255.0;
        v.round().clamp(0.0, 255.0) as u8
    };
    let mut out = Vec::new();
    let mut cursor = std::io::Cursor::new(&mut out);
    if c == 1 {
        image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
            image::Luma([px(0, y as usize, x as usize)])
        })
        .write_to(&mut cursor, image::ImageFormat::Png)
    } else {
        image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let (y, x) = (y as usize, x as usize);
            image::Rgb([px(0, y, x), px(1, y, x), px(2, y, x)])
        })
        .write_to(&mut cursor, image::ImageFormat::Png)
    }
    .context("PNG encoding failed")?;
    Ok(out)
}

/// Reads a tensor from `.npy` or `.png`.
pub fn read_tensor(path: &Path, range: PixelRange) -> Result<Tensor> {
    match format_of(path)? {
        Format::Npy => read_npy(path),
        Format::Png => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            png_to_tensor(&bytes, range).with_context(|| format!("{}", path.display()))
        }
    }
}

/// Writes a tensor to `.npy` or `.png`.
pub fn write_tensor(path: &Path, t: &Tensor, range: PixelRange) -> Result<()> {
    match format_of(path)? {
        Format::Npy => write_npy(path, t),
        Format::Png => {
            let bytes = tensor_to_png(t, range)?;
            std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_keeps_shape_and_bits() {
        let dir = std::env::temp_dir().join(format!("tessera-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join("t.npy");
        let t = Tensor::new(
            vec![1, 2, 3],
            vec![0.5, -1.0, f32::MIN_POSITIVE, 3.25, 1e30, -0.0],
        )
        .expect("tensor");
        write_npy(&p, &t).expect("write");
        let back = read_npy(&p).expect("read");
        assert_eq!(back.shape(), t.shape());
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&t));
    }

    #[test]
    fn fortran_ordered_npy_is_read_in_c_order() {
        use npyz::WriterBuilder;
        // Value 100·i + 10·j + k at index (i, j, k), stored first axis fastest.
        let shape = [2u64, 3, 4];
        let mut stored = Vec::new();
        for k in 0..4 {
            for j in 0..3 {
                for i in 0..2 {
                    stored.push((100 * i + 10 * j + k) as f32);
                }
            }
        }
        let mut buf = Vec::new();
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .order(npyz::Order::Fortran)
            .shape(&shape)
            .writer(&mut buf)
            .begin_nd()
            .expect("writer");
        w.extend(stored).expect("extend");
        w.finish().expect("finish");
        let t = npy_from_bytes(&buf).expect("read");
        assert_eq!(t.shape(), &[2, 3, 4]);
        let c_order: Vec<f32> = (0..2)
            .flat_map(|i| {
                (0..3).flat_map(move |j| (0..4).map(move |k| (100 * i + 10 * j + k) as f32))
            })
            .collect();
        assert_eq!(t.data(), c_order.as_slice());
    }

    #[test]
    fn npy_with_wrong_dtype_is_refused() {
        use npyz::WriterBuilder;
        let mut buf = Vec::new();
        let mut w = npyz::WriteOptions::<f64>::new()
            .default_dtype()
            .shape(&[2])
            .writer(&mut buf)
            .begin_nd()
            .expect("writer");
        w.extend([1.0f64, 2.0]).expect("extend");
        w.finish().expect("finish");
        let err = npy_from_bytes(&buf).expect_err("f64 must be refused");
        assert!(format!("{err:#}").contains("float32"), "{err:#}");
    }

    #[test]
    fn npy_header_larger_than_file_is_refused_before_allocating() {
        let t = Tensor::new(vec![4], vec![1.0; 4]).expect("tensor");
        let dir = std::env::temp_dir().join(format!("tessera-npy2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join("t.npy");
        write_npy(&p, &t).expect("write");
        let bytes = std::fs::read(&p).expect("read");
        // Declare 4e12 values (16 TB) in a header of unchanged length by
        // spending the header's padding spaces on the extra digits.
        let find = |needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle);
        let at = find(b"(4, )").expect("shape in header");
        let end = find(b"\n").expect("end of header");
        let extra = "000000000000";
        let mut forged = bytes[..at + 2].to_vec();
        forged.extend_from_slice(extra.as_bytes());
        forged.extend_from_slice(&bytes[at + 2..end - extra.len()]);
        forged.extend_from_slice(&bytes[end..]);
        assert_eq!(forged.len(), bytes.len());
        let err = npy_from_bytes(&forged).expect_err("a 16 TB header must be refused");
        assert!(format!("{err:#}").contains("declares"), "{err:#}");
    }

    #[test]
    fn a_big_endian_float32_npy_reads_as_its_values() {
        let values = [1.5f32, -0.25, 3.0e-5, f32::MAX, 0.0, -7.0];
        let npy = |descr: &str| {
            // Magic, version 1.0, header length, header padded to 64 with a newline.
            let mut h =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2, 3), }}");
            while (10 + h.len() + 1) % 64 != 0 {
                h.push(' ');
            }
            h.push('\n');
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
            bytes.extend_from_slice(h.as_bytes());
            for v in values {
                bytes.extend_from_slice(&v.to_be_bytes());
            }
            bytes
        };
        let t = npy_from_bytes(&npy(">f4")).expect("big-endian float32");
        assert_eq!(t.shape(), [2, 3]);
        assert_eq!(t.data(), values);
        let e = npy_from_bytes(&npy(">i4")).expect_err("int32 is refused");
        assert!(format!("{e:#}").contains("expected float32"), "{e:#}");
    }

    #[test]
    fn png_round_trip_is_exact_on_bytes() {
        let mut data = vec![0f32; 3 * 2 * 3];
        for (i, v) in data.iter_mut().enumerate() {
            *v = (i * 13 % 256) as f32 / 255.0;
        }
        let t = Tensor::new(vec![1, 3, 2, 3], data).expect("tensor");
        let png = tensor_to_png(&t, PixelRange::default()).expect("encode");
        let back = png_to_tensor(&png, PixelRange::default()).expect("decode");
        assert_eq!(back, t);
    }
}
