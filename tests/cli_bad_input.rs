//! Bad input to `tessera infer` (and `tessera run`) gives a one-line error
//! naming the problem and a non-zero exit, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{RESNET8 as MODEL, RESNET8_INPUT as INPUT};
/// One Hardmax node (`hardmax_7`), an op the importer does not take.
const UNSUPPORTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/models/unsupported_hardmax.onnx"
);

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli_bad_input", name)
}

/// Runs `tessera infer` on the CPU and returns its stderr, asserting failure.
fn infer_fails(model: &str, input: &Path) -> String {
    infer_fails_with(model, input, &[], "out.npy")
}

/// [`infer_fails`] with `extra` flags, writing to `out` in the scratch folder.
fn infer_fails_with(model: &str, input: &Path, extra: &[&str], out: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["infer", "--backend", "cpu", "--model", model, "--input"])
        .arg(input)
        .args(extra)
        .arg("--output")
        .arg(scratch(out));
    fails(cmd)
}

/// Runs `cmd` and returns its stderr, asserting a one-line error and exit 1.
fn fails(mut cmd: Command) -> String {
    let out = cmd.output().expect("run tessera");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    stderr
}

fn write_npy(path: &Path, shape: &[u64], f64_data: bool) {
    use npyz::WriterBuilder;
    let n: u64 = shape.iter().product();
    let file = std::fs::File::create(path).expect("create");
    if f64_data {
        let mut w = npyz::WriteOptions::<f64>::new()
            .default_dtype()
            .shape(shape)
            .writer(file)
            .begin_nd()
            .expect("writer");
        w.extend((0..n).map(|_| 0.0f64)).expect("write");
        w.finish().expect("finish");
    } else {
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(shape)
            .writer(file)
            .begin_nd()
            .expect("writer");
        w.extend((0..n).map(|_| 0.0f32)).expect("write");
        w.finish().expect("finish");
    }
}

#[test]
fn missing_model_file() {
    let e = infer_fails("/no/such/model.onnx", Path::new(INPUT));
    assert!(e.contains("no such model file"), "{e}");
}

#[test]
fn truncated_model_file() {
    let bytes = std::fs::read(MODEL).expect("model");
    let p = scratch("truncated.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 3]).expect("write");
    let e = infer_fails(p.to_str().expect("utf-8 path"), Path::new(INPUT));
    assert!(e.contains("malformed model"), "{e}");
}

#[test]
fn unsupported_op_names_op_and_node() {
    let x = scratch("hardmax_in.npy");
    write_npy(&x, &[1, 3, 4, 4], false);
    let e = infer_fails(UNSUPPORTED, &x);
    assert!(e.contains("'Hardmax'") && e.contains("'hardmax_7'"), "{e}");
}

#[test]
fn wrong_input_shape() {
    let x = scratch("small.npy");
    write_npy(&x, &[1, 3, 32, 32], false);
    let e = infer_fails(MODEL, &x);
    assert!(
        e.contains("[1, 3, 64, 64]") && e.contains("[1, 3, 32, 32]"),
        "{e}"
    );
    // A channels-last export of the same image gets a hint.
    let x = scratch("nhwc.npy");
    write_npy(&x, &[1, 64, 64, 3], false);
    let e = infer_fails(MODEL, &x);
    assert!(
        e.contains("[1, 64, 64, 3]") && e.contains("channels-last"),
        "{e}"
    );
}

#[test]
fn npy_of_the_wrong_dtype() {
    let x = scratch("f64.npy");
    write_npy(&x, &[1, 3, 64, 64], true);
    let e = infer_fails(MODEL, &x);
    assert!(e.contains("float32"), "{e}");
}

#[test]
fn missing_input_file() {
    let e = infer_fails(MODEL, Path::new("/no/such/input.npy"));
    assert!(e.contains("/no/such/input.npy"), "{e}");
}

#[test]
fn run_checks_its_input_and_output_before_contacting_the_cluster() {
    // Nothing listens at the cluster file's addresses: a check that waited
    // for the nodes would fail with "cannot reach the cluster" instead.
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster.toml");
    let run = |input: &Path, output: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(["run", "--cluster", cluster, "--certs", "/no/such/certs"])
            .args(["--name", "coordinator", "--model", MODEL, "--input"])
            .arg(input)
            .arg("--output")
            .arg(scratch(output));
        fails(cmd)
    };
    let x = scratch("run-small.npy");
    write_npy(&x, &[1, 3, 32, 32], false);
    let e = run(&x, "out.npy");
    assert!(
        e.contains("expected shape [1, 3, 64, 64]") && e.contains("[1, 3, 32, 32]"),
        "{e}"
    );
    let e = run(Path::new(INPUT), "out.txt");
    assert!(e.contains("out.txt") && e.contains(".npy or .png"), "{e}");
    // Ten logits are no image, and a missing folder is no place to write.
    let e = run(Path::new(INPUT), "logits.png");
    assert!(
        e.contains("logits.png") && e.contains("[1, C, H, W]") && e.contains(".npy"),
        "{e}"
    );
    let e = run(Path::new(INPUT), "no-such-folder/out.npy");
    assert!(
        e.contains("no-such-folder") && e.contains("does not exist"),
        "{e}"
    );
}

/// A one-channel output is written as a grey PNG, read back unchanged.
#[test]
fn a_one_channel_image_output_is_a_grey_png() {
    let t = tile_engine::Tensor::new(vec![1, 1, 2, 3], vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
        .expect("tensor");
    let range = tessera::tensor_io::PixelRange { scale: 1.0 };
    let png = tessera::tensor_io::tensor_to_png(&t, range).expect("encode");
    let img = image::load_from_memory(&png).expect("decode");
    assert_eq!(img.color(), image::ColorType::L8);
    assert_eq!(img.to_luma8().into_raw(), vec![0, 51, 102, 153, 204, 255]);
}

#[test]
fn a_pixel_scale_that_would_be_ignored_is_refused() {
    let e = infer_fails_with(
        MODEL,
        Path::new(INPUT),
        &["--pixel-scale", "255"],
        "scaled.npy",
    );
    assert!(e.contains("--pixel-scale") && e.contains("PNG"), "{e}");
    // A negative scale gets the same word as 0 (clap read "-3" as a flag).
    let png = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/default-model/fixture.png"
    );
    let e = infer_fails_with(
        MODEL,
        Path::new(png),
        &["--pixel-scale", "-3"],
        "negative.npy",
    );
    assert!(
        e.contains("--pixel-scale -3: expected a positive number"),
        "{e}"
    );
    // An adapter named for the CPU executor would be ignored too.
    let e = infer_fails_with(
        MODEL,
        Path::new(INPUT),
        &["--adapter", "nvidia"],
        "adapter.npy",
    );
    assert!(e.contains("--adapter nvidia picks a GPU adapter"), "{e}");
}

/// `tessera plan --svg` writes SVG, so another extension is refused before
/// any planning, rather than SVG text written into a `.png`.
#[test]
fn plan_svg_needs_an_svg_path() {
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster.toml");
    let png = scratch("plan.png");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["plan", "--cluster", cluster, "--model", MODEL, "--svg"])
        .arg(&png);
    let e = fails(cmd);
    assert!(e.contains("plan.png") && e.contains(".svg"), "{e}");
    assert!(!png.exists());
}

/// A TF.js layers model: one input declared `[null, 8, 8, 3]`, then `layer`.
fn tfjs_model(name: &str, layer: &str, inputs: &[&str]) -> PathBuf {
    tfjs_model_of(name, layer, inputs, 3)
}

/// [`tfjs_model`] with inputs of `channels` channels.
fn tfjs_model_of(name: &str, layer: &str, inputs: &[&str], channels: usize) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let input_layers: Vec<String> = inputs
        .iter()
        .map(|i| {
            format!(
                r#"{{"class_name": "InputLayer", "name": "{i}", "inbound_nodes": [],
                 "config": {{"name": "{i}", "batch_input_shape": [null, 8, 8, {channels}]}}}}"#
            )
        })
        .collect();
    let refs: Vec<String> = inputs.iter().map(|i| format!(r#"["{i}", 0, 0]"#)).collect();
    let json = format!(
        r#"{{"format": "layers-model", "modelTopology": {{"model_config": {{"class_name": "Functional",
          "config": {{"name": "m", "layers": [{}, {layer}],
            "input_layers": [{}], "output_layers": [["out", 0, 0]]}}}}}},
          "weightsManifest": [{{"paths": [], "weights": []}}]}}"#,
        input_layers.join(", "),
        refs.join(", ")
    );
    let path = dir.join("model.json");
    std::fs::write(&path, json).expect("write model.json");
    path
}

#[test]
fn tfjs_models_get_their_own_error_not_a_shape_hint() {
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster.toml");
    // An unsupported layer in a model of fixed size: planning names it,
    // and neither retries at another size nor asks for one.
    let lambda = tfjs_model(
        "tfjs_lambda",
        r#"{"class_name": "Lambda", "name": "out", "config": {"name": "out"}, "inbound_nodes": [[["x", 0, 0, {}]]]}"#,
        &["x"],
    );
    let mut plan = Command::new(env!("CARGO_BIN_EXE_tessera"));
    plan.args(["plan", "--cluster", cluster, "--model"])
        .arg(&lambda);
    let e = fails(plan);
    assert!(e.contains("layer out has class Lambda"), "{e}");
    assert!(
        !e.contains("224x224") && !e.contains("--input-shape"),
        "{e}"
    );
    // Two inputs: `infer` says so, not that a shape was given.
    let two = tfjs_model(
        "tfjs_two_inputs",
        r#"{"class_name": "Add", "name": "out", "config": {"name": "out"}, "inbound_nodes": [[["a", 0, 0, {}], ["b", 0, 0, {}]]]}"#,
        &["a", "b"],
    );
    let input = scratch("tfjs_two_inputs.npy");
    write_npy(&input, &[1, 3, 8, 8], false);
    let e = infer_fails(two.to_str().expect("utf-8"), &input);
    assert!(e.contains("the model has 2 inputs (a, b)"), "{e}");
}

/// An ONNX model with two inputs (a Conv of `a` times `b`, made with the
/// `onnx` Python package's helpers, 642 bytes): `plan` refuses it as `infer`
/// and `run` do, instead of drawing a plan nothing could carry out.
#[test]
fn plan_refuses_a_model_of_two_inputs_as_infer_does() {
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster.toml");
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/models/two_inputs.onnx"
    );
    let mut plan = Command::new(env!("CARGO_BIN_EXE_tessera"));
    plan.args(["plan", "--cluster", cluster, "--model", model]);
    let e = fails(plan);
    assert!(
        e.contains("the model has 2 inputs; tessera feeds exactly one"),
        "{e}"
    );
    let input = scratch("two_inputs.npy");
    write_npy(&input, &[1, 3, 16, 16], false);
    let e = infer_fails(model, &input);
    assert!(
        e.contains("the model has 2 inputs; tessera feeds exactly one"),
        "{e}"
    );
}

#[test]
fn plan_tells_an_onnx_model_error_as_infer_does() {
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster.toml");
    for (model, says) in [
        (UNSUPPORTED, "'Hardmax'"),
        ("no-such-model.onnx", "no such model file"),
    ] {
        let mut plan = Command::new(env!("CARGO_BIN_EXE_tessera"));
        plan.args(["plan", "--cluster", cluster, "--model", model]);
        let e = fails(plan);
        assert!(e.contains(says), "{e}");
        assert!(!e.contains("planned at"), "{e}");
    }
}

/// A PNG feeds a TF.js model that takes four channels (RGBA) or one (a
/// grey image): the importer checks the input's channel count, so the
/// image read as RGB was refused before its channels could be fitted.
#[test]
fn a_png_feeds_a_tfjs_model_that_takes_four_or_one_channels() {
    let linear = r#"{"class_name": "Activation", "name": "out", "config": {"name": "out", "activation": "linear"}, "inbound_nodes": [[["x", 0, 0, {}]]]}"#;
    let rgba = image::RgbaImage::from_fn(8, 8, |x, y| {
        image::Rgba([x as u8, 9, 200, (x * 30 + y) as u8])
    });
    let grey = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 20 + y) as u8]));
    for (channels, png, want_last) in [
        (
            4,
            "rgba.png",
            rgba.pixels()
                .map(|p| f32::from(p.0[3]) / 255.0)
                .collect::<Vec<_>>(),
        ),
        (
            1,
            "grey.png",
            grey.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect(),
        ),
    ] {
        let model = tfjs_model_of(&format!("tfjs_{channels}ch"), linear, &["x"], channels);
        let input = scratch(png);
        if channels == 4 {
            rgba.save(&input).expect("png");
        } else {
            grey.save(&input).expect("png");
        }
        let output = scratch(&format!("tfjs_{channels}ch.npy"));
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["infer", "--backend", "cpu", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .output()
            .expect("run tessera");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&output).expect("output");
        let npy = npyz::NpyFile::new(&bytes[..]).expect("npy");
        assert_eq!(npy.shape(), &[1, channels as u64, 8, 8]);
        let values: Vec<f32> = npy.into_vec().expect("f32");
        assert_eq!(&values[(channels - 1) * 64..], want_last.as_slice());
    }
}

/// A TF.js model's folder and a Keras file are refused with what to give
/// instead; an output path that is a folder is refused before the model
/// runs, not when its output is written.
#[test]
fn model_folders_keras_files_and_output_folders_are_refused_with_what_to_give() {
    let input = Path::new(INPUT);
    let dir = scratch("tfjs_folder");
    std::fs::create_dir_all(&dir).expect("folder");
    std::fs::write(dir.join("model.json"), "{}").expect("model.json");
    let err = infer_fails(dir.to_str().expect("utf-8"), input);
    assert!(
        err.contains("is a folder") && err.contains("model.json"),
        "{err}"
    );
    let keras = scratch("model.keras");
    std::fs::write(&keras, b"PK").expect("keras file");
    let err = infer_fails(keras.to_str().expect("utf-8"), input);
    assert!(err.contains("does not read Keras files"), "{err}");
    let empty = scratch("no_model_folder");
    std::fs::create_dir_all(&empty).expect("folder");
    let err = infer_fails(empty.to_str().expect("utf-8"), input);
    assert!(err.contains("folder without a model.json"), "{err}");
    std::fs::create_dir_all(scratch("out_folder")).expect("folder");
    let err = infer_fails_with(MODEL, input, &[], "out_folder");
    assert!(
        err.contains("--output") && err.contains("is a folder"),
        "{err}"
    );
}
