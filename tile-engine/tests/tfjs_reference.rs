//! Imported TF.js models give TF.js's own outputs on the CPU executor.
//!
//! The fixtures in `tests/tfjs_fixtures/` were written by `gen.js` there
//! (tfjs-layers 4.11 on its CPU backend): random weights, one random input
//! and the output TF.js computed for it, both in Keras layout (NHWC).

use std::path::PathBuf;

use serde::Deserialize;
use tile_engine::{Graph, Tensor, tfjs};

#[derive(Deserialize)]
struct Io {
    input_shape: Vec<usize>,
    input: Vec<f32>,
    output_shape: Vec<usize>,
    output: Vec<f32>,
}

fn fixture(name: &str) -> (PathBuf, Io) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tfjs_fixtures")
        .join(name);
    let io = std::fs::read(dir.join("io.json")).expect("read io.json");
    let io: Io = serde_json::from_slice(&io).expect("parse io.json");
    (dir.join("model.json"), io)
}

/// NHWC `[n, h, w, c]` data → NCHW.
fn nhwc_to_nchw(shape: &[usize], data: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let [n, h, w, c] = [shape[0], shape[1], shape[2], shape[3]];
    let mut out = vec![0.0; data.len()];
    for b in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    out[((b * c + ch) * h + y) * w + x] = data[((b * h + y) * w + x) * c + ch];
                }
            }
        }
    }
    (vec![n, c, h, w], out)
}

fn ir_layout(shape: &[usize], data: &[f32]) -> (Vec<usize>, Vec<f32>) {
    if shape.len() == 4 {
        nhwc_to_nchw(shape, data)
    } else {
        (shape.to_vec(), data.to_vec())
    }
}

/// Runs `graph` on the CPU executor; the place to add executors to compare.
fn run_cpu(graph: &Graph, input: Tensor) -> Tensor {
    let out = tile_engine::cpu::run(graph, &[input]).expect("cpu run");
    assert_eq!(out.len(), 1);
    out.into_iter().next().expect("one output")
}

fn check(name: &str) {
    let (model, io) = fixture(name);
    let (in_shape, in_data) = ir_layout(&io.input_shape, &io.input);
    let graph = tfjs::load_dir_with_input(&model, &in_shape).expect("import");
    let got = run_cpu(&graph, Tensor::new(in_shape, in_data).expect("input"));
    let (want_shape, want) = ir_layout(&io.output_shape, &io.output);
    assert_eq!(got.shape(), want_shape.as_slice(), "{name}: output shape");
    let mut worst = 0.0f32;
    for (g, w) in got.data().iter().zip(&want) {
        worst = worst.max((g - w).abs() / (1.0 + w.abs()));
    }
    assert!(worst <= 1e-4, "{name}: worst relative error {worst}");
}

#[test]
fn functional_dag_matches_tfjs() {
    // Strided/dilated same and valid convs, depthwise ×2, batch norm, add,
    // PReLU, LeakyReLU, concat, max/avg pooling with same padding,
    // nearest upsampling, zero padding, cropping, ReLU(6), sigmoid/tanh.
    check("dag");
}

#[test]
fn sequential_classifier_matches_tfjs() {
    // Conv, pool, Flatten in NHWC order, Dense + relu, Dropout, Dense + softmax.
    check("classifier");
}

#[test]
fn separable_global_pool_reshape_heads_match_tfjs() {
    // SeparableConv2D, global avg/max pooling, Dense, Reshape to a map, Flatten, softmax.
    check("heads");
}

#[test]
fn upscalerjs_custom_layers_transposed_convs_and_bilinear_match_tfjs() {
    // UpscalerJS's MultiplyBeta and PixelShuffle2x (registered as its ESRGAN
    // models register them), Conv2DTranspose "same" with odd and even
    // kernels, UpSampling2D bilinear, concat.
    check("upscaler");
}

#[test]
fn valid_transposed_conv_narrower_than_its_stride_matches_tfjs() {
    // Conv2DTranspose "valid" with a kernel below the stride (the output
    // grows by the stride, past the full transposed conv), then bilinear
    // up-sampling by 3×2.
    check("deconv_valid");
}

#[test]
fn keras_bilinear_upsampling_and_a_transposed_conv_match_keras() {
    // Written by Keras 2 (tf_keras 2.15 through the TF.js converter, with
    // the output Keras's `predict` gave): Keras up-samples with half-pixel
    // centres, where a file TF.js saved does not (`upscaler`).
    check("keras_bilinear");
}

#[test]
fn a_keras3_model_converted_from_dot_keras_matches_keras() {
    // Written by Keras 3 (3.15, `model.save("….keras")` through the TF.js
    // converter 4.22, with Keras's `predict`; `gen_keras3.py`): the
    // converter names its weights by position under Keras 3's own layer
    // paths (`layers/batch_normalization_1/vars/3`), not `bn/moving_variance`;
    // every such model failed with "weight conv/kernel is missing". Two
    // convs and two batch norms (one without a beta) test the numbering.
    check("keras3");
}
