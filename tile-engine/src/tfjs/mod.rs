//! TF.js / Keras layers-model import (model.json + weight shards) into the IR.
//!
//! Reads `format: "layers-model"` files as written by the TF.js converter
//! and by `tf.LayersModel.save`: Functional and Sequential topologies,
//! weight shards per the weights manifest (float32, or the converter's
//! uint8 / uint16 / float16 quantisation, dequantised at load as TF.js
//! does; other dtypes are refused). Keras's channels_last
//! maps to NCHW: a rank-4 Keras tensor `[N, H, W, C]` is the IR value
//! `[N, C, H, W]`, kernels go from HWIO to OIHW, and Flatten/Reshape keep
//! Keras's element order so Dense weights are used as stored. Tensors of
//! other ranks keep Keras's axis order.
//!
//! Graph shapes are static: a model declaring `[null, null, null, 3]` needs
//! an input shape (`[1, 3, H, W]`, IR layout) from the caller; an unknown
//! batch dimension alone defaults to 1.

mod build;
mod config;
mod conv;
mod topology;
mod weights;

use std::path::Path;

use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::ir::Graph;

/// Largest model.json accepted (the topology only; weights live in shards).
pub const MAX_MODEL_JSON_BYTES: usize = 64 << 20;

/// Loads `model.json` and the shards beside it, with the input shape the model declares.
pub fn load_dir(model_json: &Path) -> Result<Graph> {
    load_path(model_json, None)
}

/// Loads `model.json` and the shards beside it, with input shape `input_shape`
/// (IR layout: `[N, C, H, W]` for an image input).
pub fn load_dir_with_input(model_json: &Path, input_shape: &[usize]) -> Result<Graph> {
    load_path(model_json, Some(input_shape))
}

/// Loads a model from memory; `shards` returns a shard's bytes by its manifest path.
pub fn load_from_memory(
    model_json: &[u8],
    shards: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Graph> {
    load_from_memory_with_input(model_json, shards, None)
}

/// Like [`load_from_memory`], with an optional input shape (IR layout).
pub fn load_from_memory_with_input(
    model_json: &[u8],
    shards: &dyn Fn(&str) -> Option<Vec<u8>>,
    input_shape: Option<&[usize]>,
) -> Result<Graph> {
    let mut fetch = |p: &str| -> Result<Vec<u8>> {
        shards(p).ok_or_else(|| Error::Malformed(format!("weight shard {p} is missing")))
    };
    load(model_json, &mut fetch, input_shape)
}

/// The shape a layers model's single input declares (IR layout, `None`
/// for an open dimension), or `None` when the file does not say (not
/// readable, not a layers model, several inputs).
pub fn declared_input_dims(model_json: &[u8]) -> Option<Vec<Option<usize>>> {
    let root: Json = serde_json::from_slice(model_json).ok()?;
    let topo = topology::parse(root.get("modelTopology")?).ok()?;
    let [input] = topo.inputs.as_slice() else {
        return None;
    };
    let call = topo
        .calls
        .iter()
        .find(|c| c.layer == input.layer && c.class == "InputLayer")?;
    build::declared_dims(&call.config)
}

fn load_path(model_json: &Path, input_shape: Option<&[usize]>) -> Result<Graph> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| Error::Io { path, error }
    };
    let len = std::fs::metadata(model_json).map_err(io(model_json))?.len();
    if len > MAX_MODEL_JSON_BYTES as u64 {
        return Err(Error::Limit(format!(
            "{}: {len} bytes is larger than the {MAX_MODEL_JSON_BYTES} allowed for model.json",
            model_json.display()
        )));
    }
    let json = std::fs::read(model_json).map_err(io(model_json))?;
    let dir = model_json.parent().unwrap_or(Path::new("."));
    let mut fetch = |p: &str| -> Result<Vec<u8>> {
        weights::check_relative(p)?;
        let path = dir.join(p);
        match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Malformed(format!(
                "weight shard {} is missing",
                path.display()
            ))),
            Err(e) => Err(io(&path)(e)),
        }
    };
    load(&json, &mut fetch, input_shape)
}

fn load(
    model_json: &[u8],
    fetch: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
    input_shape: Option<&[usize]>,
) -> Result<Graph> {
    if model_json.len() > MAX_MODEL_JSON_BYTES {
        return Err(Error::Limit(format!(
            "model.json of {} bytes is larger than the {MAX_MODEL_JSON_BYTES} allowed",
            model_json.len()
        )));
    }
    let root: Json = serde_json::from_slice(model_json)
        .map_err(|e| Error::Malformed(format!("model.json is not valid JSON: {e}")))?;
    match root.get("format").and_then(Json::as_str) {
        Some("layers-model") | None => {}
        Some(f) => {
            return Err(Error::Unsupported(format!(
                "model.json format {f:?}; only layers-model is supported (graph models are not)"
            )));
        }
    }
    let topology = root
        .get("modelTopology")
        .ok_or_else(|| Error::Malformed("model.json has no modelTopology".into()))?;
    let manifest = root
        .get("weightsManifest")
        .ok_or_else(|| Error::Malformed("model.json has no weightsManifest".into()))?;
    let topo = topology::parse(topology)?;
    let weights = weights::load(manifest, fetch)?;
    build::build(&topo, &weights, input_shape)
}
