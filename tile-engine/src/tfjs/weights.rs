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

struct Entry {
    name: String,
    shape: Vec<usize>,
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
            checked_numel(&e.shape)?
                .checked_mul(4)
                .and_then(|b| acc.checked_add(b))
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
            let n = checked_numel(&e.shape)?;
            let data: Vec<f32> = bytes[offset..offset + 4 * n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            offset += 4 * n;
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
    if let Some(q) = w.get("quantization") {
        let dtype = q.get("dtype").and_then(Json::as_str).unwrap_or("?");
        return Err(Error::Unsupported(format!(
            "weight {name} is quantised to {dtype}; only float32 weights are supported \
             (re-export the model without --quantize)"
        )));
    }
    let dtype = w.get("dtype").and_then(Json::as_str).unwrap_or("float32");
    if dtype != "float32" {
        return Err(Error::Unsupported(format!(
            "weight {name} has dtype {dtype}; only float32 weights are supported"
        )));
    }
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
    Ok(Entry { name, shape })
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
