//! The autotune cache: a fresh executor tunes every conv layer and writes
//! its choices to the JSON file; a second executor reads them back (same
//! choices, bit-identical output) instead of tuning again, which a third
//! executor proves by picking up choices edited into the file.
//!
//! Needs a GPU adapter (lavapipe in CI: `WGPU_BACKEND=vulkan`). Without one
//! the test fails with the adapter error; it never skips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tile_engine::gpu::{ConvChoice, GpuExecutor, GpuOptions};
use tile_engine::ir::{Activation, Conv, Graph, Op};
use tile_engine::{Executor, Tensor, cpu};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn conv(m: usize, c: usize, k: usize, group: usize, seed: u64) -> Op {
    let shape = vec![m, c / group, k, k];
    let n = shape.iter().product();
    Op::Conv(Conv {
        weight: Arc::new(Tensor::new(shape, values(n, seed)).expect("weight shape")),
        bias: Some(Arc::new(values(m, seed + 1))),
        strides: [1, 1],
        pads: [k / 2; 4],
        dilations: [1, 1],
        group,
        activation: Activation::Relu,
    })
}

/// A 3×3 conv, a depthwise 3×3 conv and a 1×1 conv: one layer per kernel family.
fn model() -> Graph {
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 8, 12, 12]);
    g.inputs.push(x);
    let a = g
        .add_node("c3x3", conv(8, 8, 3, 1, 1), vec![x], "a")
        .expect("c3x3");
    let b = g
        .add_node("dw", conv(8, 8, 3, 8, 3), vec![a], "b")
        .expect("dw");
    let c = g
        .add_node("c1x1", conv(16, 8, 1, 1, 5), vec![b], "c")
        .expect("c1x1");
    g.outputs.push(c);
    g
}

fn executor(path: &Path) -> GpuExecutor {
    GpuExecutor::new(GpuOptions {
        cache_path: Some(path.to_path_buf()),
        ..GpuOptions::default()
    })
    .unwrap_or_else(|e| {
        panic!("GPU tests need an adapter (e.g. lavapipe with WGPU_BACKEND=vulkan): {e}")
    })
}

fn choices(gpu: &GpuExecutor, g: &Graph) -> Vec<ConvChoice> {
    g.nodes
        .iter()
        .map(|n| {
            gpu.conv_choice(g, n)
                .expect("conv_choice")
                .expect("every node is a conv")
        })
        .collect()
}

type CacheFile = BTreeMap<String, BTreeMap<String, ConvChoice>>;

fn read_cache(path: &Path) -> CacheFile {
    let bytes = std::fs::read(path).expect("the autotune cache file was written");
    serde_json::from_slice(&bytes).expect("the autotune cache is JSON of adapter -> key -> choice")
}

/// Removes the test's directory on drop, pass or fail.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn autotune_choices_are_written_and_read_back() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("tessera-autotune-test-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let path = dir.0.join("autotune.json");
    let g = model();
    let x = Tensor::new(vec![1, 8, 12, 12], values(8 * 144, 42)).expect("input shape");
    let inputs = std::slice::from_ref(&x);

    let first = executor(&path);
    let tuned = choices(&first, &g);
    let out1 = first.run(&g, inputs).expect("first run");
    let adapter = first.adapter_info();
    drop(first);

    // The file holds exactly one choice per conv layer, under this adapter.
    let file = read_cache(&path);
    assert_eq!(
        file.keys().collect::<Vec<_>>(),
        vec![&adapter],
        "one adapter entry"
    );
    let entries = &file[&adapter];
    assert_eq!(entries.len(), g.nodes.len(), "entries: {entries:?}");
    for (node, want) in g.nodes.iter().zip(&tuned) {
        let (_, got) = entries
            .iter()
            .find(|(k, _)| k.starts_with(&format!("{}|conv|", node.name)))
            .unwrap_or_else(|| panic!("no cache entry for {}: {entries:?}", node.name));
        assert_eq!(got, want, "{}", node.name);
    }

    // A second executor reads the same choices and computes the same bits.
    let second = executor(&path);
    assert_eq!(choices(&second, &g), tuned);
    let out2 = second.run(&g, inputs).expect("second run");
    assert_eq!(out1.len(), 1);
    assert_eq!(out1[0].shape(), out2[0].shape());
    assert!(
        out1[0]
            .data()
            .iter()
            .zip(out2[0].data())
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the warm-cache executor's output differs from the first executor's"
    );
    drop(second);

    // Choices edited into the file win over tuning: it is really read.
    let mut edited = file.clone();
    let mut expected = Vec::new();
    for (node, was) in g.nodes.iter().zip(&tuned) {
        let Op::Conv(c) = &node.op else {
            unreachable!("every node is a conv")
        };
        let other = ConvChoice::candidates(c)
            .into_iter()
            .find(|cand| cand != was)
            .expect("every conv has at least two candidates");
        for (k, v) in edited.get_mut(&adapter).expect("adapter entry") {
            if k.starts_with(&format!("{}|conv|", node.name)) {
                *v = other;
            }
        }
        expected.push(other);
    }
    std::fs::write(&path, serde_json::to_vec(&edited).expect("serialize")).expect("rewrite cache");
    let third = executor(&path);
    assert_eq!(choices(&third, &g), expected);
    // And the edited kernels still compute the model.
    let got = third.run(&g, inputs).expect("third run");
    let want = cpu::run(&g, inputs).expect("cpu run");
    let scale = want[0].data().iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = got[0]
        .data()
        .iter()
        .zip(want[0].data())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 1e-4 * scale,
        "GPU vs CPU error {err} (scale {scale})"
    );
}
