//! Tiled == untiled, bit for bit, on the GPU executor: the properties of
//! `tiling_props.rs` with fewer cases (lavapipe is slow).
//!
//! Without an adapter this test fails with the executor's error: it never
//! skips. Autotune is off so the run does not depend on timing noise; the
//! kernel choice is per node either way.

mod tiling_common;

use tile_engine::Executor;
use tile_engine::gpu::{GpuExecutor, GpuOptions};
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
