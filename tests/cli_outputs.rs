//! A model with several outputs (an auxiliary head, a detector's boxes and
//! scores) writes one file per `--output`, in the model's order.

mod common;

use std::process::Command;

use prost::Message;
use tile_engine::onnx::proto::{ModelProto, ValueInfoProto};

use common::{RESNET8, RESNET8_INPUT};

fn tessera(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

#[test]
fn each_output_goes_to_its_own_file() {
    // resnet8 with its first node's map as a second output.
    let bytes = std::fs::read(RESNET8).expect("model");
    let mut m = ModelProto::decode(bytes.as_slice()).expect("decode");
    let g = m.graph.as_mut().expect("graph");
    let stem = g.node[0].output[0].clone();
    g.output.push(ValueInfoProto {
        name: Some(stem),
        ..Default::default()
    });
    let model = common::scratch("cli_outputs", "two_outputs.onnx");
    std::fs::write(&model, m.encode_to_vec()).expect("write");
    let path = |name: &str| {
        common::scratch("cli_outputs", name)
            .to_str()
            .expect("utf-8")
            .to_string()
    };
    let (model, logits, stem, single) = (
        model.to_str().expect("utf-8").to_string(),
        path("logits.npy"),
        path("stem.npy"),
        path("single.npy"),
    );
    let base = ["infer", "--backend", "cpu", "--input", RESNET8_INPUT];
    // One path for two outputs is refused, naming both.
    let out = tessera(&[&base[..], &["--model", &model, "--output", &logits]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("2 outputs") && err.contains("one per output"),
        "{err}"
    );
    // The same path twice would keep only the later output.
    let out = tessera(
        &[
            &base[..],
            &["--model", &model, "--output", &logits, &logits],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("given as --output twice"), "{err}");
    // Two paths: the logits as the one-output model gives them, then the map.
    let out = tessera(&[&base[..], &["--model", &model, "--output", &logits, &stem]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tessera(&[&base[..], &["--model", RESNET8, "--output", &single]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &str| {
        let bytes = std::fs::read(p).expect("output file");
        let npy = npyz::NpyFile::new(bytes.as_slice()).expect("npy");
        let shape = npy.shape().to_vec();
        let data: Vec<f32> = npy.into_vec().expect("f32 data");
        (shape, data)
    };
    // Not bit for bit: with the stem's map an output, the passes cannot
    // fold what follows it into its conv, so the rounding differs.
    let ((s1, a), (s2, b)) = (read(&logits), read(&single));
    assert_eq!(s1, s2);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{a:?} vs {b:?}");
    }
    let (shape, _) = read(&stem);
    assert_eq!(shape.len(), 4, "{shape:?}");
    assert_eq!(shape[0], 1);
}

/// A NaN in the input is said at the start, and NaN outputs written to a
/// PNG (which has none) are said too: the image showed them as black.
#[test]
fn nan_in_the_input_and_nan_written_to_a_png_are_said() {
    let input = common::scratch("cli_outputs", "nan.npy");
    common::write_f32_npy(
        &input,
        &[1, 3, 8, 8],
        (0..192).map(|i| if i == 40 { f32::NAN } else { (i % 256) as f32 }),
    );
    let output = common::scratch("cli_outputs", "nan.png");
    let out = tessera(&[
        "infer",
        "--backend",
        "cpu",
        "--model",
        "default",
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        output.to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 of 192 input values are NaN"), "{stderr}");
    assert!(
        stderr.contains("output values are NaN, written as 0"),
        "{stderr}"
    );
}

/// A tiled `infer` names the ops that run whole between its blocks (what
/// a tile-size benchmark does not shrink); an untiled one does not.
#[test]
fn a_tiled_run_names_the_ops_it_runs_whole() {
    let out_path = common::scratch("cli_outputs", "whole.npy");
    let out = out_path.to_str().expect("utf-8");
    let run = |grid: &str| {
        let o = tessera(&[
            "infer",
            "--backend",
            "cpu",
            "--model",
            RESNET8,
            "--input",
            RESNET8_INPUT,
            "--output",
            out,
            "--grid",
            grid,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let tiled = run("2x2");
    assert!(
        tiled.contains("run whole between the tiled blocks") && tiled.contains("globalpool"),
        "{tiled}"
    );
    assert!(!run("1x1").contains("run whole"));
}
