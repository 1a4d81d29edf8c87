//! Paths and scratch folders the CLI tests share.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A small ResNet exported from PyTorch (input `[1, 3, 64, 64]`, ten logits).
pub const RESNET8: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/models/resnet8.onnx"
);
/// An input for [`RESNET8`] at the shape it declares.
pub const RESNET8_INPUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/models/resnet8.input.npy"
);

/// `name` in a scratch folder of `test`'s own under the target directory.
pub fn scratch(test: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// Writes `values` as a float32 `.npy` tensor of `shape` at `path`.
pub fn write_f32_npy(path: &Path, shape: &[u64], values: impl IntoIterator<Item = f32>) {
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(shape)
        .writer(std::fs::File::create(path).expect("create"))
        .begin_nd()
        .expect("writer");
    w.extend(values).expect("write");
    w.finish().expect("finish");
}
