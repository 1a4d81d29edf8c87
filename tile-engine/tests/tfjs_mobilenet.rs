//! A real TF.js classifier with a dense tail (nsfwjs's MobileNetV2,
//! uint8-quantised weights) gives TF.js's own outputs on the CPU executor.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Value as Json, json};
use tile_engine::{Graph, Tensor, tfjs};

#[derive(Deserialize)]
struct Io {
    dense_2: Vec<f32>,
    output: Vec<f32>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tfjs_fixtures/nsfw_mobilenet_v2")
}

/// The synthetic input TF.js saw (see io.json), as NCHW.
fn input() -> Tensor {
    let (h, w) = (224usize, 224usize);
    let mut d = vec![0.0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = (y * 7 + x * 13 + c * 29 + ((x * y) >> 3)) % 256;
                d[(c * h + y) * w + x] = v as f32 / 255.0;
            }
        }
    }
    Tensor::new(vec![1, 3, h, w], d).expect("input")
}

/// Loads the model with its outputs rewired to `dense_2` and the softmax.
fn graph() -> Graph {
    let mut model: Json =
        serde_json::from_slice(&std::fs::read(dir().join("model.json")).expect("read"))
            .expect("json");
    model["modelTopology"]["model_config"]["config"]["output_layers"] =
        json!([["dense_2", 0, 0], ["dense_3", 0, 0]]);
    let shard = std::fs::read(dir().join("group1-shard1of1.bin")).expect("shard");
    let bytes = serde_json::to_vec(&model).expect("json");
    tfjs::load_from_memory(&bytes, &|p: &str| {
        (p == "group1-shard1of1.bin").then(|| shard.clone())
    })
    .expect("import")
}

#[test]
fn mobilenet_v2_classifier_matches_tfjs() {
    let io: Io = serde_json::from_slice(&std::fs::read(dir().join("io.json")).expect("io"))
        .expect("io.json");
    let g = graph();
    assert_eq!(g.shape(g.inputs[0]), &[1, 3, 224, 224]);
    let out = tile_engine::cpu::run(&g, &[input()]).expect("cpu run");
    assert_eq!(out[0].shape(), &[1, 128]);
    assert_eq!(out[1].shape(), &[1, 5]);
    let scale = io.dense_2.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (got, want)) in out[0].data().iter().zip(&io.dense_2).enumerate() {
        assert!(
            (got - want).abs() <= 1e-3 * scale,
            "dense_2[{i}]: {got} vs TF.js {want}"
        );
    }
    for (i, (got, want)) in out[1].data().iter().zip(&io.output).enumerate() {
        assert!((got - want).abs() <= 1e-4, "p[{i}]: {got} vs TF.js {want}");
    }
}
