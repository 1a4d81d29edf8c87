//! Tiled == untiled, bit for bit, on the GPU executor: the properties of
//! `tiling_props.rs` with fewer cases (lavapipe is slow).
//!
//! Without an adapter this test fails with the executor's error: it never
//! skips. Autotune is off so the run does not depend on timing noise; the
//! kernel choice is per node either way.

mod tiling_common;

use tile_engine::gpu::{GpuExecutor, GpuOptions};
use tile_engine::{Executor, Tensor};
use tiling_common::check_case;

/// The executor under test.
fn gpu_executor() -> Box<dyn Executor> {
    let options = GpuOptions {
        no_autotune: true,
        ..GpuOptions::default()
    };
    match GpuExecutor::new(options) {
        Ok(e) => Box::new(e),
        Err(e) => {
            panic!("no GPU adapter for the tiling test (install lavapipe or set WGPU_BACKEND): {e}")
        }
    }
}

#[test]
fn gpu_tiled_equals_untiled_bit_for_bit() {
    let exec = gpu_executor();
    for seed in 0..12u64 {
        check_case(exec.as_ref(), seed, seed % 2 == 1);
    }
}

/// An imported TF.js model (transposed convs, bilinear up-sampling,
/// UpscalerJS's MultiplyBeta and PixelShuffle layers) on the GPU: TF.js's
/// output within rounding, and every grid bit for bit the untiled run.
#[test]
fn gpu_upscaler_layers_match_tfjs_and_tile_bit_for_bit() {
    use tile_engine::tiling::{Grid, TiledOptions, run_tiled};

    #[derive(serde::Deserialize)]
    struct Io {
        input: Vec<f32>,
        output: Vec<f32>,
    }
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tfjs_fixtures/upscaler");
    let io: Io = serde_json::from_slice(&std::fs::read(dir.join("io.json")).expect("read io.json"))
        .expect("parse io.json");
    // The fixture's input is NHWC [1, 6, 7, 3] and its output [1, 24, 28, 3].
    let nchw = |data: &[f32], [h, w, c]: [usize; 3]| -> Vec<f32> {
        let mut out = vec![0.0; data.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    out[(ch * h + y) * w + x] = data[(y * w + x) * c + ch];
                }
            }
        }
        out
    };
    let graph = tile_engine::tfjs::load_dir_with_input(&dir.join("model.json"), &[1, 3, 6, 7])
        .expect("import");
    let input = Tensor::new(vec![1, 3, 6, 7], nchw(&io.input, [6, 7, 3])).expect("input");
    let exec = gpu_executor();
    let whole = exec
        .run(&graph, std::slice::from_ref(&input))
        .expect("gpu run");
    let want = nchw(&io.output, [24, 28, 3]);
    let worst = whole[0]
        .data()
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "worst relative error against TF.js: {worst}");
    for (rows, cols) in [(2, 2), (3, 1), (1, 3)] {
        let grid = Grid::uniform(rows, cols);
        let tiled = run_tiled(
            exec.as_ref(),
            &graph,
            std::slice::from_ref(&input),
            &grid,
            &TiledOptions::default(),
        )
        .expect("tiled run");
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&tiled[0]), bits(&whole[0]), "grid {rows}x{cols}");
    }
}
