//! A model as it travels to node daemons: its source files and the input
//! shape it is instantiated for, encoded as one byte string whose SHA-256
//! names it. Coordinator and nodes build the graph from the same bundle the
//! same way, so graph node ids agree and jobs can name nodes by id.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tile_engine::{Graph, default_model};

use super::ClusterError;
use crate::model::{self, ModelKind};

/// Source format of a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One `.onnx` file.
    Onnx,
    /// A TF.js layers model: `model.json` first, then its shards by manifest path.
    Tfjs,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: Format,
    input_shape: Vec<usize>,
    files: Vec<(String, u64)>,
}

/// A model and the input shape it runs at.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    /// Source format.
    pub format: Format,
    /// Input shape the graph is built for.
    pub input_shape: Vec<usize>,
    /// Files: name and bytes.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Largest manifest accepted when decoding (names and lengths only).
const MAX_MANIFEST: usize = 1 << 20;

impl Bundle {
    /// The bundle for a `--model` argument (`default`, an `.onnx` file, a
    /// TF.js `model.json`) at `input_shape`.
    pub fn from_spec(spec: &str, input_shape: &[usize]) -> anyhow::Result<Bundle> {
        use anyhow::Context;
        let (format, files) = match model::kind_of(spec)? {
            ModelKind::Default => (
                Format::Tfjs,
                vec![
                    ("model.json".to_string(), default_model::MODEL_JSON.to_vec()),
                    (
                        default_model::WEIGHTS_NAME.to_string(),
                        default_model::WEIGHTS.to_vec(),
                    ),
                ],
            ),
            ModelKind::Onnx => {
                let bytes = std::fs::read(spec).with_context(|| format!("cannot read {spec}"))?;
                (Format::Onnx, vec![("model.onnx".to_string(), bytes)])
            }
            ModelKind::Tfjs => {
                let json = std::fs::read(spec).with_context(|| format!("cannot read {spec}"))?;
                let dir = Path::new(spec).parent().unwrap_or(Path::new("."));
                let mut files = vec![("model.json".to_string(), json.clone())];
                for shard in manifest_paths(&json).with_context(|| spec.to_string())? {
                    let p = dir.join(&shard);
                    let bytes = std::fs::read(&p)
                        .with_context(|| format!("cannot read weight shard {}", p.display()))?;
                    files.push((shard, bytes));
                }
                (Format::Tfjs, files)
            }
        };
        Ok(Bundle {
            format,
            input_shape: input_shape.to_vec(),
            files,
        })
    }

    /// One byte string: little-endian u32 manifest length, JSON manifest, file bytes.
    pub fn encode(&self) -> Vec<u8> {
        let manifest = Manifest {
            format: self.format,
            input_shape: self.input_shape.clone(),
            files: self
                .files
                .iter()
                .map(|(n, b)| (n.clone(), b.len() as u64))
                .collect(),
        };
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(&manifest).unwrap_or_default();
        let total: usize = self.files.iter().map(|(_, b)| b.len()).sum();
        let mut out = Vec::with_capacity(4 + json.len() + total);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        for (_, b) in &self.files {
            out.extend_from_slice(b);
        }
        out
    }

    /// Inverse of [`Bundle::encode`]; every length is checked against the input.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, ClusterError> {
        let bad = |m: &str| ClusterError::Model(format!("model bundle: {m}"));
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("truncated"))?;
        let mlen = u32::from_le_bytes(len_bytes) as usize;
        if mlen > MAX_MANIFEST || 4 + mlen > bytes.len() {
            return Err(bad("manifest length out of range"));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes[4..4 + mlen])
            .map_err(|e| bad(&format!("manifest: {e}")))?;
        let mut at = 4 + mlen;
        let mut files = Vec::with_capacity(manifest.files.len().min(64));
        for (name, len) in manifest.files {
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| at.checked_add(l))
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| bad(&format!("file {name} runs past the end")))?;
            files.push((name, bytes[at..end].to_vec()));
            at = end;
        }
        if at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(Bundle {
            format: manifest.format,
            input_shape: manifest.input_shape,
            files,
        })
    }

    /// The optimised graph, built exactly as `tessera infer` builds it.
    pub fn graph(&self) -> Result<Graph, ClusterError> {
        let err = |e: tile_engine::Error| ClusterError::Model(e.to_string());
        let mut graph = match self.format {
            Format::Onnx => {
                let (_, bytes) = self
                    .files
                    .first()
                    .ok_or_else(|| ClusterError::Model("empty ONNX bundle".into()))?;
                tile_engine::onnx::load_bytes_for_input(bytes, &self.input_shape).map_err(err)?
            }
            Format::Tfjs => {
                let (_, json) = self
                    .files
                    .first()
                    .ok_or_else(|| ClusterError::Model("empty TF.js bundle".into()))?;
                let shards = |p: &str| {
                    self.files
                        .iter()
                        .skip(1)
                        .find(|(n, _)| n == p)
                        .map(|(_, b)| b.clone())
                };
                tile_engine::tfjs::load_from_memory_with_input(
                    json,
                    &shards,
                    Some(&self.input_shape),
                )
                .map_err(err)?
            }
        };
        tile_engine::passes::optimize(&mut graph).map_err(err)?;
        if let Some(&v) = graph.inputs.first()
            && graph.shape(v) != self.input_shape.as_slice()
        {
            return Err(ClusterError::Model(format!(
                "the model takes {:?}, the bundle says {:?}",
                graph.shape(v),
                self.input_shape
            )));
        }
        Ok(graph)
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn hash(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Shard paths a TF.js `model.json` lists in its weights manifest.
fn manifest_paths(json: &[u8]) -> anyhow::Result<Vec<String>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Model {
        #[serde(default)]
        weights_manifest: Vec<Group>,
    }
    #[derive(Deserialize)]
    struct Group {
        paths: Vec<String>,
    }
    let m: Model = serde_json::from_slice(json)?;
    Ok(m.weights_manifest
        .into_iter()
        .flat_map(|g| g.paths)
        .collect())
}
