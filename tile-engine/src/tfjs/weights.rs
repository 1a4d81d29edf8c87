//! The weights manifest of a TF.js model and the binary shards it points to.
//!
//! Each manifest group names its shard files in order; their bytes,
//! concatenated, hold the group's weights back to back in manifest order.

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::tensor::{Tensor, checked_numel};

/// One weight as the Keras layer declared it: shape in Keras layout (HWIO for conv kernels).
pub(crate) type Weights = HashMap<String, Tensor>;

/// How a weight's values are stored in the shard.
#[derive(Clone, Copy)]
enum Storage {
    /// Little-endian float32.
    F32,
    /// TF.js affine quantisation: `value = q * scale + min`, q an unsigned byte.
    U8 { scale: f64, min: f64 },
    /// As `U8` with little-endian u16 codes.
    U16 { scale: f64, min: f64 },
    /// Little-endian IEEE half floats.
    F16,
    /// Little-endian int32 (a preprocessing layer's counter, say): read as
    /// the nearest f32, so a model that holds one is refused for the layer
    /// the importer lacks rather than for the dtype of one of its weights.
    I32,
    /// One byte per value, 0 or 1.
    Bool,
}

impl Storage {
    fn width(self) -> usize {
        match self {
            Storage::F32 | Storage::I32 => 4,
            Storage::U8 { .. } | Storage::Bool => 1,
            Storage::U16 { .. } | Storage::F16 => 2,
        }
    }

    fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Storage::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            // Computed in double precision, as TF.js does in JavaScript.
            Storage::U8 { scale, min } => bytes
                .iter()
                .map(|&q| (f64::from(q) * scale + min) as f32)
                .collect(),
            Storage::U16 { scale, min } => bytes
                .chunks_exact(2)
                .map(|c| (f64::from(u16::from_le_bytes([c[0], c[1]])) * scale + min) as f32)
                .collect(),
            Storage::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Storage::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            Storage::Bool => bytes.iter().map(|&b| f32::from(u8::from(b != 0))).collect(),
        }
    }
}

/// IEEE 754 binary16 → binary32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

struct Entry {
    name: String,
    shape: Vec<usize>,
    storage: Storage,
}

impl Entry {
    fn bytes(&self) -> Result<usize> {
        checked_numel(&self.shape)?
            .checked_mul(self.storage.width())
            .ok_or_else(|| Error::Limit(format!("weight {} is too large", self.name)))
    }
}

/// Reads every group of `manifest`, fetching shard files through `fetch`,
/// and returns the weights by manifest name.
pub(crate) fn load(
    manifest: &Json,
    fetch: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
) -> Result<Weights> {
    let groups = manifest
        .as_array()
        .ok_or_else(|| Error::Malformed("weightsManifest is not a list".into()))?;
    let mut weights = Weights::new();
    for (gi, group) in groups.iter().enumerate() {
        let paths = group
            .get("paths")
            .and_then(Json::as_array)
            .ok_or_else(|| Error::Malformed(format!("weightsManifest[{gi}] has no paths")))?;
        let entries = group
            .get("weights")
            .and_then(Json::as_array)
            .ok_or_else(|| Error::Malformed(format!("weightsManifest[{gi}] has no weights")))?;
        let entries = entries
            .iter()
            .map(parse_entry)
            .collect::<Result<Vec<_>>>()?;
        let needed = entries.iter().try_fold(0usize, |acc, e| {
            acc.checked_add(e.bytes()?)
                .ok_or_else(|| Error::Limit(format!("weight {} is too large", e.name)))
        })?;
        let mut bytes = Vec::new();
        for p in paths {
            let p = p.as_str().ok_or_else(|| {
                Error::Malformed(format!("weightsManifest[{gi}]: a path is not a string"))
            })?;
            let shard = fetch(p)?;
            if bytes.len() + shard.len() > needed {
                return Err(wrong_size(gi, paths, needed, bytes.len() + shard.len()));
            }
            bytes.extend_from_slice(&shard);
        }
        if bytes.len() != needed {
            return Err(wrong_size(gi, paths, needed, bytes.len()));
        }
        let mut offset = 0;
        for e in entries {
            let len = e.bytes()?;
            let data = e.storage.decode(&bytes[offset..offset + len]);
            offset += len;
            let t = Tensor::new(e.shape, data)?;
            if weights.insert(e.name.clone(), t).is_some() {
                return Err(Error::Malformed(format!(
                    "weight {} appears twice in the manifest",
                    e.name
                )));
            }
        }
    }
    Ok(weights)
}

fn wrong_size(gi: usize, paths: &[Json], needed: usize, got: usize) -> Error {
    let names: Vec<&str> = paths.iter().filter_map(Json::as_str).collect();
    Error::Malformed(format!(
        "weight group {gi} ({}) holds {got}{} bytes, its manifest needs exactly {needed}",
        names.join(", "),
        if got > needed { " or more" } else { "" }
    ))
}

fn parse_entry(w: &Json) -> Result<Entry> {
    let name = w
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| Error::Malformed("a weight in the manifest has no name".into()))?
        .to_string();
    let dtype = w.get("dtype").and_then(Json::as_str).unwrap_or("float32");
    let plain = match dtype {
        "float32" => Storage::F32,
        "int32" => Storage::I32,
        "bool" => Storage::Bool,
        _ => {
            return Err(Error::Unsupported(format!(
                "weight {name} has dtype {dtype}; supported: float32, int32, bool"
            )));
        }
    };
    let storage = match w.get("quantization") {
        None | Some(Json::Null) => plain,
        Some(_) if dtype != "float32" => {
            return Err(Error::Unsupported(format!(
                "weight {name} is a quantised {dtype}; only float32 weights are quantised"
            )));
        }
        Some(q) => {
            let qtype = q.get("dtype").and_then(Json::as_str).unwrap_or("?");
            let num = |k: &str| {
                q.get(k).and_then(Json::as_f64).ok_or_else(|| {
                    Error::Malformed(format!("weight {name}: quantization has no {k}"))
                })
            };
            match qtype {
                "uint8" => Storage::U8 {
                    scale: num("scale")?,
                    min: num("min")?,
                },
                "uint16" => Storage::U16 {
                    scale: num("scale")?,
                    min: num("min")?,
                },
                "float16" => Storage::F16,
                other => {
                    return Err(Error::Unsupported(format!(
                        "weight {name} is quantised to {other}; supported: uint8, uint16, float16"
                    )));
                }
            }
        }
    };
    let shape = w
        .get("shape")
        .and_then(Json::as_array)
        .ok_or_else(|| Error::Malformed(format!("weight {name} has no shape")))?
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| Error::Malformed(format!("weight {name}: bad dimension {d}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Entry {
        name,
        shape,
        storage,
    })
}

/// Rejects shard paths that could escape the model's folder: the manifest is untrusted.
pub(crate) fn check_relative(path: &str) -> Result<()> {
    let p = std::path::Path::new(path);
    let escapes = p.is_absolute()
        || path.starts_with('/')
        || path.starts_with('\\')
        || p.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if escapes || path.is_empty() {
        return Err(Error::Malformed(format!(
            "shard path {path:?} must be relative to the model folder"
        )));
    }
    Ok(())
}
