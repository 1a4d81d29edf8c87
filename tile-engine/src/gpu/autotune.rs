//! Per-layer kernel choices: timed once per layer key on this adapter,
//! remembered for the process (so every tile of a layer gets the same
//! kernel) and cached in a JSON file keyed by adapter and layer key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::lower::ConvChoice;

/// The default cache file's name. Versioned: bump it when the candidate set
/// changes, or layers tuned before a new kernel existed keep the old choice.
const CACHE_FILE: &str = "autotune-v2.json";

/// The default cache file: `$XDG_CACHE_HOME/tessera/autotune-v2.json`, else
/// `$HOME/.cache/tessera/autotune-v2.json`, else `.autotune-cache/autotune-v2.json`.
pub fn default_cache_path() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        });
    match base {
        Some(b) => b.join("tessera").join(CACHE_FILE),
        None => PathBuf::from(".autotune-cache").join(CACHE_FILE),
    }
}

type TuneFile = BTreeMap<String, BTreeMap<String, ConvChoice>>;

/// Choices for one adapter.
pub struct Autotuner {
    path: Option<PathBuf>,
    adapter: String,
    memo: HashMap<String, ConvChoice>,
}

impl Autotuner {
    /// Loads the choices recorded for `adapter` from `path` (a missing or
    /// unreadable file starts empty: the cache is an optimisation only).
    pub fn new(path: Option<PathBuf>, adapter: String) -> Self {
        let memo = path
            .as_deref()
            .map(|p| {
                read(p)
                    .remove(&adapter)
                    .unwrap_or_default()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        Self {
            path,
            adapter,
            memo,
        }
    }

    /// The cache file the choices are written to (`None`: kept in memory only).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The recorded choice for a layer key.
    pub fn get(&self, key: &str) -> Option<ConvChoice> {
        self.memo.get(key).copied()
    }

    /// Records a choice and writes the cache file.
    pub fn put(&mut self, key: String, choice: ConvChoice) {
        self.memo.insert(key.clone(), choice);
        let Some(path) = &self.path else { return };
        let mut file = read(path);
        file.entry(self.adapter.clone())
            .or_default()
            .insert(key, choice);
        if let Err(e) = write(path, &file) {
            tracing::warn!("autotune cache {}: {e}", path.display());
        }
    }
}

fn read(path: &Path) -> TuneFile {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!("ignoring autotune cache {}: {e}", path.display());
            TuneFile::new()
        }),
        Err(_) => TuneFile::new(),
    }
}

fn write(path: &Path, file: &TuneFile) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}
