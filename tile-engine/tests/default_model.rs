//! The embedded default model reproduces the package authors' result.png
//! from fixture.png: ≥ 99% of 8-bit channel values within ±1, none off by more than 2.
//!
//! Each executor is one line in [`executors`]; tiled runs and the GPU
//! executor add their entries there.

use std::sync::OnceLock;
use std::time::Instant;

use tile_engine::gpu::{GpuExecutor, GpuOptions};
use tile_engine::tiling::{Grid, TiledOptions, run_tiled};
use tile_engine::{Executor, Graph, Result, Tensor, default_model};

type Run = fn(&Graph, &[Tensor]) -> Result<Vec<Tensor>>;

fn cpu(g: &Graph, x: &[Tensor]) -> Result<Vec<Tensor>> {
    tile_engine::cpu::run(g, x)
}

/// One GPU executor per test binary (adapter creation is slow); no autotune,
/// so the test does not depend on timing noise. Fails, never skips, without an adapter.
fn gpu_executor() -> &'static GpuExecutor {
    static GPU: OnceLock<GpuExecutor> = OnceLock::new();
    GPU.get_or_init(|| {
        let options = GpuOptions {
            no_autotune: true,
            ..GpuOptions::default()
        };
        match GpuExecutor::new(options) {
            Ok(e) => e,
            Err(e) => panic!("no GPU adapter (install lavapipe or set WGPU_BACKEND): {e}"),
        }
    })
}

fn gpu(g: &Graph, x: &[Tensor]) -> Result<Vec<Tensor>> {
    gpu_executor().run(g, x)
}

fn tiled(exec: &dyn Executor, g: &Graph, x: &[Tensor], grid: &str) -> Result<Vec<Tensor>> {
    run_tiled(exec, g, x, &Grid::parse(grid)?, &TiledOptions::default())
}

fn cpu_3x3(g: &Graph, x: &[Tensor]) -> Result<Vec<Tensor>> {
    tiled(&tile_engine::cpu::CpuExecutor, g, x, "3x3")
}

fn gpu_3x3(g: &Graph, x: &[Tensor]) -> Result<Vec<Tensor>> {
    tiled(gpu_executor(), g, x, "3x3")
}

/// Executors checked against the reference image, by name.
fn executors() -> Vec<(&'static str, Run)> {
    vec![
        ("cpu", cpu),
        ("cpu 3x3", cpu_3x3),
        ("gpu", gpu),
        ("gpu 3x3", gpu_3x3),
    ]
}

fn bits(t: &[Tensor]) -> Vec<u32> {
    t.iter()
        .flat_map(|t| t.data().iter().map(|v| v.to_bits()))
        .collect()
}

/// The whole network is one tileable DAG block (dense concatenations,
/// residual adds): 2×2 and 3×3 grids give the untiled floats bit for bit on
/// each executor.
#[test]
fn tiled_output_is_bit_identical_to_untiled_on_each_executor() {
    let input = default_model::png_to_tensor(default_model::fixture_png()).expect("fixture");
    let mut graph = default_model::graph([128, 128]).expect("graph");
    tile_engine::passes::optimize(&mut graph).expect("optimize");
    let cpu_exec = tile_engine::cpu::CpuExecutor;
    let execs: [(&str, &dyn Executor); 2] = [("cpu", &cpu_exec), ("gpu", gpu_executor())];
    for (name, exec) in execs {
        let whole = bits(
            &exec
                .run(&graph, std::slice::from_ref(&input))
                .expect("untiled"),
        );
        for grid in ["2x2", "3x3"] {
            let t = tiled(exec, &graph, std::slice::from_ref(&input), grid).expect("tiled");
            assert!(bits(&t) == whole, "{name}: grid {grid} changed the output");
        }
    }
}

struct Agreement {
    within_1: f64,
    max_diff: u8,
}

fn compare(got: &[u8], want: &[u8]) -> Agreement {
    assert_eq!(got.len(), want.len());
    let diffs = got.iter().zip(want).map(|(a, b)| a.abs_diff(*b));
    let (mut ok, mut max) = (0usize, 0u8);
    for d in diffs {
        ok += usize::from(d <= 1);
        max = max.max(d);
    }
    Agreement {
        within_1: ok as f64 / got.len() as f64,
        max_diff: max,
    }
}

/// Runs `run` on the `[y0, x0, h, w]` window of the fixture and compares the
/// upscaled window with the same region of result.png. The model's
/// receptive field reaches past a crop's edge, so a crop is compared only
/// `margin` output pixels inside its border.
fn check_region(name: &str, run: Run, window: [usize; 4], margin: usize) {
    let (fw, _fh, rgb) = default_model::decode_rgb8(default_model::fixture_png()).expect("fixture");
    let (rw, _rh, reference) =
        default_model::decode_rgb8(default_model::reference_png()).expect("reference");
    let (fw, rw) = (fw as usize, rw as usize);
    let [y0, x0, h, w] = window;
    let mut crop = Vec::with_capacity(h * w * 3);
    for y in y0..y0 + h {
        crop.extend_from_slice(&rgb[3 * (y * fw + x0)..3 * (y * fw + x0 + w)]);
    }
    let input = default_model::rgb8_to_tensor(w, h, &crop).expect("input");
    let graph = default_model::graph([h, w]).expect("graph");
    let start = Instant::now();
    let out = run(&graph, &[input]).expect("run");
    let secs = start.elapsed().as_secs_f64();
    let (ow, oh, got) = default_model::tensor_to_rgb8(&out[0]).expect("output image");
    assert_eq!((ow, oh), (2 * w, 2 * h));
    let (mut g, mut r) = (Vec::new(), Vec::new());
    for y in margin..oh - margin {
        g.extend_from_slice(&got[3 * (y * ow + margin)..3 * (y * ow + ow - margin)]);
        let ry = 2 * y0 + y;
        let rx = 2 * x0 + margin;
        r.extend_from_slice(&reference[3 * (ry * rw + rx)..3 * (ry * rw + rx + ow - 2 * margin)]);
    }
    let a = compare(&g, &r);
    eprintln!(
        "{name} {window:?}: {:.4}% of channel values within ±1, max diff {}, {secs:.2} s",
        100.0 * a.within_1,
        a.max_diff
    );
    assert!(
        a.within_1 >= 0.99,
        "{name}: only {:.4}% within ±1",
        100.0 * a.within_1
    );
    assert!(a.max_diff <= 2, "{name}: max diff {}", a.max_diff);
}

#[test]
fn full_fixture_reproduces_result_png() {
    for (name, run) in executors() {
        check_region(name, run, [0, 0, 128, 128], 0);
    }
}

#[test]
fn crop_matches_the_reference_away_from_its_border() {
    // Receptive-field radius: 9 input pixels (seven 3×3 convs and a 5×5
    // before the upsampling), then 1 output pixel (the 3×3 after it), so
    // output pixels 2·9 + 1 = 19 or more inside the crop's edge see no padding.
    for (name, run) in executors() {
        check_region(name, run, [40, 24, 32, 48], 20);
    }
}

#[test]
fn png_round_trip_keeps_pixels_and_rounds_like_uint8_clamped_array() {
    let t = default_model::png_to_tensor(default_model::fixture_png()).expect("decode");
    assert_eq!(t.shape(), &[1, 3, 128, 128]);
    let png = default_model::tensor_to_png(&t).expect("encode");
    let back = default_model::png_to_tensor(&png).expect("decode again");
    assert_eq!(t, back);
    let cases = [
        (-3.0, 0),
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (254.49, 254),
        (254.5, 254),
        (300.0, 255),
        (f32::NAN, 0),
    ];
    for (v, want) in cases {
        assert_eq!(default_model::to_u8(v), want, "{v}");
    }
    assert!(default_model::png_to_tensor(b"\x89PNG\r\n\x1a\nbroken").is_err());
}

/// The sample input at the fixture's own size is the fixture; at other
/// sizes it is the same picture resampled: whole byte values, and each
/// channel's mean within 2 of the fixture's (a blank or shifted image fails).
#[test]
fn sample_input_is_the_fixture_resampled() {
    let fixture = default_model::png_to_tensor(default_model::fixture_png()).expect("fixture");
    assert_eq!(
        bits(&[default_model::sample_input(128).expect("128")]),
        bits(std::slice::from_ref(&fixture))
    );
    let mean = |t: &Tensor, c: usize| {
        let plane = t.shape()[2] * t.shape()[3];
        t.data()[c * plane..(c + 1) * plane]
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / plane as f64
    };
    for side in [64, 200, 256] {
        let t = default_model::sample_input(side).expect("resampled");
        assert_eq!(t.shape(), [1, 3, side, side]);
        assert!(
            t.data()
                .iter()
                .all(|&v| v.fract() == 0.0 && (0.0..=255.0).contains(&v))
        );
        for c in 0..3 {
            let (got, want) = (mean(&t, c), mean(&fixture, c));
            assert!(
                (got - want).abs() < 2.0,
                "side {side} channel {c}: mean {got} vs {want}"
            );
        }
    }
    assert!(default_model::sample_input(0).is_err());
}

/// A 16-bit PNG keeps its precision (value / 257 in the model's [0, 255]
/// range); decoded to 8 bits first, values 1/257 apart would merge.
#[test]
fn a_16_bit_png_is_read_at_full_precision() {
    let img = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(5, 3, |x, y| {
        image::Rgb([(x * 1000 + y) as u16, 65535, (x + 3 * y) as u16])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode");
    let t = default_model::png_to_tensor(&png).expect("decode");
    assert_eq!(t.shape(), [1, 3, 3, 5]);
    let plane = 15;
    for y in 0..3 {
        for x in 0..5 {
            let i = y * 5 + x;
            let want = [(x * 1000 + y) as f32, 65535.0, (x + 3 * y) as f32].map(|v| v / 257.0);
            for (c, want) in want.into_iter().enumerate() {
                assert_eq!(
                    t.data()[c * plane + i],
                    want,
                    "pixel ({x}, {y}) channel {c}"
                );
            }
        }
    }
}

/// In [0, 1] every 16-bit value is read as the nearest f32 to value / 65535
/// (one division; over 257 and then over 255 was 1 ULP off for a quarter of
/// them), and every byte as the nearest to byte / 255.
#[test]
fn every_16_bit_and_8_bit_value_is_read_into_0_1_with_one_rounding() {
    let wide = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(256, 256, |x, y| {
        let v = (y * 256 + x) as u16;
        image::Rgb([v, v, 65535 - v])
    });
    let mut png = Vec::new();
    wide.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode");
    let t = default_model::png_to_unit_tensor(&png).expect("decode");
    let plane = 256 * 256;
    for v in 0..plane {
        let want = (v as f64 / 65535.0) as f32;
        assert_eq!(t.data()[v], want, "16-bit value {v}");
        let back = ((65535 - v) as f64 / 65535.0) as f32;
        assert_eq!(t.data()[2 * plane + v], back, "16-bit value {}", 65535 - v);
    }
    let narrow = image::ImageBuffer::<image::Rgb<u8>, Vec<u8>>::from_fn(256, 1, |x, _| {
        image::Rgb([x as u8, 0, 255])
    });
    let mut png = Vec::new();
    narrow
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode");
    let t = default_model::png_to_unit_tensor(&png).expect("decode");
    for b in 0..256 {
        assert_eq!(t.data()[b], (b as f64 / 255.0) as f32, "byte {b}");
    }
}
