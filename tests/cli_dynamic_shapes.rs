//! A model exported with a symbolic batch, height and width (what
//! `torch.onnx.export` writes with `dynamic_axes`) runs at the size of the
//! input it is given, through the same commands as a model with fixed
//! shapes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use tile_engine::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
use tile_engine::onnx::proto::{ModelProto, TypeProto, type_proto};

use common::{RESNET8 as MODEL, RESNET8_INPUT as INPUT};

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli_dynamic_shapes", name)
}

/// resnet8 with its input's batch, height and width made symbolic.
fn open_model() -> PathBuf {
    let bytes = std::fs::read(MODEL).expect("model");
    let mut m = ModelProto::decode(bytes.as_slice()).expect("decode");
    let g = m.graph.as_mut().expect("graph");
    let x = g.input.first_mut().expect("an input");
    let Some(TypeProto {
        value: Some(type_proto::Value::TensorType(tt)),
        ..
    }) = x.r#type.as_mut()
    else {
        panic!("not a tensor input")
    };
    let dims = &mut tt.shape.as_mut().expect("shape").dim;
    assert_eq!(dims.len(), 4);
    for (i, p) in [(0, "N"), (2, "H"), (3, "W")] {
        dims[i].value = Some(Dim::DimParam(p.into()));
    }
    let path = scratch("resnet8_dynamic.onnx");
    std::fs::write(&path, m.encode_to_vec()).expect("write");
    path
}

fn tessera(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera");
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn infer(model: &Path, input: &Path, output: &Path) {
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    tessera(&[
        "infer",
        "--backend",
        "cpu",
        "--model",
        &s(model),
        "--input",
        &s(input),
        "--output",
        &s(output),
    ]);
}

fn write_npy(path: &Path, shape: &[u64]) {
    let n: u64 = shape.iter().product();
    common::write_f32_npy(
        path,
        shape,
        (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0),
    );
}

fn npy_shape(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).expect("read output");
    npyz::NpyFile::new(bytes.as_slice())
        .expect("npy")
        .shape()
        .to_vec()
}

#[test]
fn symbolic_dims_take_the_input_size() {
    let open = open_model();
    // At the declared size: the same bytes as the model with fixed shapes.
    let (a, b) = (scratch("open.npy"), scratch("fixed.npy"));
    infer(&open, Path::new(INPUT), &a);
    infer(Path::new(MODEL), Path::new(INPUT), &b);
    assert_eq!(std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    // At another batch and size (the fixed model refuses this input).
    let other = scratch("other.input.npy");
    write_npy(&other, &[2, 3, 40, 56]);
    let c = scratch("other.npy");
    infer(&open, &other, &c);
    assert_eq!(npy_shape(&c), [2, 10]);
    // Planned without an input: at batch 1, 224×224.
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster.toml");
    let out = tessera(&[
        "plan",
        "--cluster",
        cluster,
        "--model",
        open.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("makespan"), "{text}");
    // Planned at a given shape: another plan (a 40×56 map is 22× less work),
    // and a shape against a dimension the file fixes is refused.
    let at = |shape: &str| {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["plan", "--cluster", cluster, "--model"])
            .arg(&open)
            .args(["--input-shape", shape])
            .output()
            .expect("run tessera")
    };
    let small = at("1,3,40,56");
    assert!(
        small.status.success(),
        "{}",
        String::from_utf8_lossy(&small.stderr)
    );
    assert_ne!(
        small.stdout, out.stdout,
        "the plan at 40×56 is the one at 224×224"
    );
    let wrong = at("1,4,40,56");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(err.contains("fixes dimension 1 at 3"), "{err}");
    // Echoed as the option takes it (it read 1x4x40x56).
    assert!(err.contains("--input-shape 1,4,40,56:"), "{err}");
}

/// `plan --input` plans for the file as `run` would send it: at its shape,
/// with an image's values crossing links as bytes and any others as f32;
/// the default model, always given an image, is costed as one without it.
#[test]
fn plan_takes_an_input_file_and_costs_an_image_as_bytes() {
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster.toml");
    // The bytes the plan sends up from the device: the default model runs
    // wholly on the edge tier on this cluster, so its input.
    let up = |extra: &[&str]| -> u64 {
        let mut args = vec!["plan", "--cluster", cluster, "--model", "default"];
        args.extend_from_slice(extra);
        let out = tessera(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("device|edge"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no device|edge cut:\n{text}"))
    };
    assert_eq!(up(&[]), 3 * 128 * 128, "the embedded image, as bytes");
    let png = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/default-model/fixture.png"
    );
    assert_eq!(up(&["--input", png]), 3 * 128 * 128);
    // Floats that are no bytes, at another size: f32 at the file's shape.
    let floats = scratch("plan_floats.npy");
    common::write_f32_npy(
        &floats,
        &[1, 3, 32, 48],
        (0..3 * 32 * 48).map(|i| i as f32 * 0.01 + 0.003),
    );
    assert_eq!(
        up(&["--input", floats.to_str().expect("utf-8")]),
        3 * 32 * 48 * 4
    );
}
