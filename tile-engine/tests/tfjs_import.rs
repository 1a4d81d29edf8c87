//! TF.js layers-model import: structure of the imported graphs and the
//! errors bad model files give. Numerics against TF.js are in `tfjs_reference.rs`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Value as Json, json};
use tile_engine::ir::{Activation, Op, PoolKind};
use tile_engine::{Error, Graph, default_model, tfjs};

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tfjs_fixtures")
        .join(name)
}

fn node<'g>(g: &'g Graph, name: &str) -> &'g tile_engine::Node {
    g.nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// A tiny Functional model: input [null, 4, 4, 2] → Conv2D(3, 3×3, same) → relu.
fn tiny_model() -> Json {
    json!({
        "format": "layers-model",
        "modelTopology": {"model_config": {"class_name": "Functional", "config": {
            "name": "tiny",
            "layers": [
                {"class_name": "InputLayer", "name": "in",
                 "config": {"batch_input_shape": [null, 4, 4, 2], "name": "in"}, "inbound_nodes": []},
                {"class_name": "Conv2D", "name": "conv",
                 "config": {"name": "conv", "filters": 3, "kernel_size": [3, 3], "strides": [1, 1],
                            "padding": "same", "data_format": "channels_last",
                            "dilation_rate": [1, 1], "activation": "relu", "use_bias": true},
                 "inbound_nodes": [[["in", 0, 0, {}]]]}
            ],
            "input_layers": [["in", 0, 0]],
            "output_layers": [["conv", 0, 0]]
        }}},
        "weightsManifest": [{"paths": ["w.bin"], "weights": [
            {"name": "conv/kernel", "shape": [3, 3, 2, 3], "dtype": "float32"},
            {"name": "conv/bias", "shape": [3], "dtype": "float32"}
        ]}]
    })
}

/// Weight bytes for [`tiny_model`]: kernel value = its HWIO flat index, bias = 100 + o.
fn tiny_weights() -> Vec<u8> {
    let mut v: Vec<f32> = (0..54).map(|i| i as f32).collect();
    v.extend([100.0, 101.0, 102.0]);
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn load(model: &Json, shards: HashMap<&str, Vec<u8>>) -> tile_engine::Result<Graph> {
    let bytes = serde_json::to_vec(model).expect("serialise test model");
    tfjs::load_from_memory(&bytes, &|p: &str| shards.get(p).cloned())
}

fn load_tiny(model: &Json) -> tile_engine::Result<Graph> {
    load(model, HashMap::from([("w.bin", tiny_weights())]))
}

fn err_text(r: tile_engine::Result<Graph>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tiny_conv_is_oihw_with_same_pads_and_fused_relu() {
    let g = load_tiny(&tiny_model()).expect("load");
    assert_eq!(g.shape(g.inputs[0]), &[1, 2, 4, 4]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 3, 4, 4]);
    let Op::Conv(c) = &node(&g, "conv").op else {
        panic!("conv is not a Conv")
    };
    assert_eq!(c.weight.shape(), &[3, 2, 3, 3]);
    // OIHW [o][i][y][x] holds HWIO [y][x][i][o] = ((y*3 + x)*2 + i)*3 + o.
    for o in 0..3 {
        for i in 0..2 {
            for y in 0..3 {
                for x in 0..3 {
                    let got = c.weight.data()[((o * 2 + i) * 3 + y) * 3 + x];
                    assert_eq!(got, (((y * 3 + x) * 2 + i) * 3 + o) as f32);
                }
            }
        }
    }
    assert_eq!(c.pads, [1, 1, 1, 1]);
    assert_eq!(c.activation, Activation::Relu);
    assert_eq!(c.bias.as_deref(), Some(&vec![100.0, 101.0, 102.0]));
}

#[test]
fn same_padding_puts_the_odd_pixel_at_the_bottom_right() {
    // 6×5 input, 2×2 kernel, stride 2 (TF: out 3×3, W needs 1 pad → right only).
    let mut m = tiny_model();
    let layers = &mut m["modelTopology"]["model_config"]["config"]["layers"];
    layers[0]["config"]["batch_input_shape"] = json!([null, 6, 5, 2]);
    layers[1]["config"]["kernel_size"] = json!([2, 2]);
    layers[1]["config"]["strides"] = json!(2);
    m["weightsManifest"][0]["weights"][0]["shape"] = json!([2, 2, 2, 3]);
    let mut w: Vec<u8> = vec![0; 24 * 4];
    w.extend([1.0f32, 2.0, 3.0].iter().flat_map(|f| f.to_le_bytes()));
    let g = load(&m, HashMap::from([("w.bin", w)])).expect("load");
    let Op::Conv(c) = &node(&g, "conv").op else {
        panic!("not a conv")
    };
    assert_eq!(c.pads, [0, 0, 0, 1]);
    assert_eq!(c.strides, [2, 2]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 3, 3, 3]);
}

#[test]
fn input_shape_fills_unknown_dims_and_is_checked_against_known_ones() {
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][0]["config"]["batch_input_shape"] =
        json!([null, null, null, 2]);
    let bytes = serde_json::to_vec(&m).expect("json");
    let shards = |p: &str| (p == "w.bin").then(tiny_weights);
    let e = tfjs::load_from_memory(&bytes, &shards).expect_err("unknown dims");
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(e.to_string().contains("unknown dimensions"), "{e}");
    let g = tfjs::load_from_memory_with_input(&bytes, &shards, Some(&[2, 2, 7, 9])).expect("load");
    assert_eq!(g.shape(g.outputs[0]), &[2, 3, 7, 9]);
    let e = tfjs::load_from_memory_with_input(&bytes, &shards, Some(&[1, 3, 7, 9]))
        .expect_err("wrong channels");
    assert!(e.to_string().contains("does not fit input in"), "{e}");
}

#[test]
fn sizes_past_the_limit_are_refused_by_field_not_wrapped() {
    // Each once wrapped around in shape arithmetic: a 4×4 map came out of a
    // 2^63 dilation or padding, and a 2^64 − 1 crop passed its bounds check.
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["dilation_rate"] =
        json!(9_223_372_036_854_775_808u64);
    let e = err_text(load_tiny(&m));
    assert!(
        e.contains("field dilation_rate") && e.contains("up to 16777216"),
        "{e}"
    );
    for (class, field, value) in [
        ("Cropping2D", "cropping", json!([[u64::MAX, 1], [0, 0]])),
        (
            "ZeroPadding2D",
            "padding",
            json!(9_223_372_036_854_775_808u64),
        ),
    ] {
        let mut m = tiny_model();
        let cfg = &mut m["modelTopology"]["model_config"]["config"];
        cfg["layers"].as_array_mut().expect("layers").push(json!({
            "class_name": class, "name": "extra",
            "config": {"name": "extra", field: value},
            "inbound_nodes": [[["conv", 0, 0, {}]]]
        }));
        cfg["output_layers"] = json!([["extra", 0, 0]]);
        let e = err_text(load_tiny(&m));
        assert!(
            e.contains(&format!("field {field}")) && e.contains("up to"),
            "{class}: {e}"
        );
    }
}

#[test]
fn missing_shard_is_named() {
    let e = err_text(load(&tiny_model(), HashMap::new()));
    assert!(e.contains("weight shard w.bin is missing"), "{e}");
}

#[test]
fn wrong_shard_size_is_reported_both_ways() {
    let mut short = tiny_weights();
    short.truncate(short.len() - 4);
    let e = err_text(load(&tiny_model(), HashMap::from([("w.bin", short)])));
    assert!(
        e.contains("holds 224 bytes") && e.contains("needs exactly 228"),
        "{e}"
    );
    let mut long = tiny_weights();
    long.extend([0u8; 8]);
    let e = err_text(load(&tiny_model(), HashMap::from([("w.bin", long)])));
    assert!(e.contains("needs exactly 228"), "{e}");
}

#[test]
fn uint8_quantised_weights_are_dequantised_and_other_codes_refused() {
    // Kernel stored as 54 bytes q = 0..53 with value q * 0.5 - 1; bias stays float32.
    let mut m = tiny_model();
    m["weightsManifest"][0]["weights"][0]["quantization"] =
        json!({"dtype": "uint8", "scale": 0.5, "min": -1.0});
    let mut w: Vec<u8> = (0..54).collect();
    w.extend([7.0f32, 8.0, 9.0].iter().flat_map(|f| f.to_le_bytes()));
    let g = load(&m, HashMap::from([("w.bin", w)])).expect("load quantised");
    let Op::Conv(c) = &node(&g, "conv").op else {
        panic!("not a conv")
    };
    // OIHW [o=1][i=0][y=0][x=1] ← HWIO flat index (0*3 + 1)*2*3 + 0*3 + 1 = 7.
    assert_eq!(c.weight.data()[18 + 1], 7.0 * 0.5 - 1.0);
    assert_eq!(c.bias.as_deref(), Some(&vec![7.0, 8.0, 9.0]));
    let mut m = tiny_model();
    m["weightsManifest"][0]["weights"][0]["quantization"] = json!({"dtype": "int4"});
    let e = err_text(load_tiny(&m));
    assert!(e.contains("conv/kernel is quantised to int4"), "{e}");
    let mut m = tiny_model();
    m["weightsManifest"][0]["weights"][1]["dtype"] = json!("string");
    let e = err_text(load_tiny(&m));
    assert!(e.contains("conv/bias has dtype string"), "{e}");
}

/// An int32 weight (a Keras preprocessing layer's counter) is read as its
/// numbers, so a model that holds one is refused, if at all, for the layer
/// the importer lacks: EfficientNet was refused for the dtype of its
/// Normalization layer's counter.
#[test]
fn int32_weights_are_read_and_a_layer_without_an_importer_is_named() {
    let mut m = tiny_model();
    m["weightsManifest"][0]["weights"][1]["dtype"] = json!("int32");
    let mut w = tiny_weights();
    w.truncate(54 * 4);
    w.extend([7i32, -8, 9].iter().flat_map(|v| v.to_le_bytes()));
    let g = load(&m, HashMap::from([("w.bin", w.clone())])).expect("int32 bias");
    let Op::Conv(c) = &node(&g, "conv").op else {
        panic!("not a conv")
    };
    assert_eq!(c.bias.as_deref(), Some(&vec![7.0, -8.0, 9.0]));
    m["modelTopology"]["model_config"]["config"]["layers"][1]["class_name"] =
        json!("IntegerLookup");
    let e = err_text(load(&m, HashMap::from([("w.bin", w)])));
    assert!(e.contains("layer conv has class IntegerLookup"), "{e}");
}

#[test]
fn unknown_layer_class_is_named() {
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][1]["class_name"] = json!("Lambda");
    let e = err_text(load_tiny(&m));
    assert!(e.contains("layer conv has class Lambda"), "{e}");
}

#[test]
fn unsupported_activation_is_named() {
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["activation"] =
        json!("log_sigmoid");
    let e = err_text(load_tiny(&m));
    assert!(e.contains("activation log_sigmoid"), "{e}");
}

#[test]
fn hard_sigmoid_follows_the_keras_version_that_wrote_the_model() {
    let slope = |m: &Json| match &node(&load_tiny(m).expect("load"), "conv").op {
        Op::Conv(c) => match c.activation {
            Activation::HardSigmoid { alpha, beta } => {
                assert_eq!(beta, 0.5);
                alpha
            }
            ref a => panic!("conv activation {a:?}"),
        },
        op => panic!("conv is {op:?}"),
    };
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["activation"] =
        json!("hard_sigmoid");
    // TF.js and Keras 2: clip(0.2x + 0.5); Keras 3: clip(x / 6 + 0.5).
    assert_eq!(slope(&m), 0.2);
    m["modelTopology"]["keras_version"] = json!("2.15.1");
    assert_eq!(slope(&m), 0.2);
    m["modelTopology"]["keras_version"] = json!("3.3.3");
    assert_eq!(slope(&m), 1.0 / 6.0);
}

/// Adds `a`, `b` reading each other: a cycle, plus the model output from `b`.
#[test]
fn cycle_is_reported_with_its_layers() {
    let mut m = tiny_model();
    let cfg = &mut m["modelTopology"]["model_config"]["config"];
    let layers = cfg["layers"].as_array_mut().expect("layers");
    layers.push(
        json!({"class_name": "Add", "name": "a", "config": {"name": "a"},
        "inbound_nodes": [[["conv", 0, 0, {}], ["b", 0, 0, {}]]]}),
    );
    layers.push(
        json!({"class_name": "Add", "name": "b", "config": {"name": "b"},
        "inbound_nodes": [[["conv", 0, 0, {}], ["a", 0, 0, {}]]]}),
    );
    cfg["output_layers"] = json!([["b", 0, 0]]);
    let e = err_text(load_tiny(&m));
    assert!(e.contains("cycle through: a, b"), "{e}");
}

#[test]
fn dangling_inbound_nodes_are_named() {
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][1]["inbound_nodes"] =
        json!([[["nowhere", 0, 0, {}]]]);
    let e = err_text(load_tiny(&m));
    assert!(e.contains("reads from layer nowhere"), "{e}");
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][1]["inbound_nodes"] =
        json!([[["in", 3, 0, {}]]]);
    let e = err_text(load_tiny(&m));
    assert!(e.contains("reads call 3 of layer in"), "{e}");
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["output_layers"] = json!([["ghost", 0, 0]]);
    let e = err_text(load_tiny(&m));
    assert!(e.contains("output_layers reads from layer ghost"), "{e}");
}

#[test]
fn missing_weight_and_bad_format_are_reported() {
    let mut m = tiny_model();
    m["weightsManifest"][0]["weights"][1]["name"] = json!("other/bias");
    let e = err_text(load_tiny(&m));
    assert!(e.contains("weight conv/bias is missing"), "{e}");
    let mut m = tiny_model();
    m["format"] = json!("graph-model");
    let e = err_text(load_tiny(&m));
    assert!(e.contains("only layers-model"), "{e}");
    let e = err_text(tfjs::load_from_memory(b"{not json", &|_: &str| None));
    assert!(e.contains("not valid JSON"), "{e}");
}

#[test]
fn load_dir_refuses_shard_paths_outside_the_model_folder() {
    let dir = std::env::temp_dir().join(format!("tessera-tfjs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut m = tiny_model();
    m["weightsManifest"][0]["paths"] = json!(["../w.bin"]);
    let path = dir.join("model.json");
    std::fs::write(&path, serde_json::to_vec(&m).expect("json")).expect("write");
    let e = tfjs::load_dir(&path).expect_err("escaping path");
    assert!(e.to_string().contains("must be relative"), "{e}");
    let missing = tfjs::load_dir(&dir.join("absent.json")).expect_err("no file");
    assert!(matches!(missing, Error::Io { .. }), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fixture_dag_loads_from_disk_with_every_layer_kind() {
    let g = tfjs::load_dir(&fixture_dir("dag").join("model.json")).expect("load dag");
    assert_eq!(g.shape(g.inputs[0]), &[1, 3, 13, 17]);
    // Depthwise: 4 channels × multiplier 2 → 8 groups of 1 in OIHW [8, 1, 3, 2].
    let Op::Conv(dw) = &node(&g, "dw").op else {
        panic!("dw")
    };
    assert_eq!((dw.group, dw.weight.shape()), (4, &[8usize, 1, 3, 2][..]));
    assert!(matches!(node(&g, "bn").op, Op::ChannelAffine { .. }));
    assert!(matches!(
        node(&g, "ap").op,
        Op::Pool(tile_engine::ir::Pool {
            kind: PoolKind::Average {
                count_include_pad: false
            },
            ..
        })
    ));
    assert!(matches!(node(&g, "cat").op, Op::Concat { axis: 1 }));
    assert!(matches!(node(&g, "up").op, Op::Resize { .. }));
    assert!(matches!(node(&g, "cr").op, Op::Crop { offset: [0, 2] }));
}

#[test]
fn flatten_transposes_to_nhwc_before_reshaping() {
    let g = tfjs::load_dir(&fixture_dir("classifier").join("model.json")).expect("load");
    let t = node(&g, "flat/to_nhwc");
    assert_eq!(
        t.op,
        Op::Transpose {
            perm: vec![0, 2, 3, 1]
        }
    );
    let f = node(&g, "flat");
    assert_eq!(f.inputs, vec![t.output]);
    assert_eq!(g.shape(f.output), &[1, 5 * 2 * 2]);
    // Softmax on a Dense is a separate op after the Dense.
    assert!(matches!(node(&g, "fc2").op, Op::Softmax { axis: 1 }));
}

#[test]
fn default_model_imports_as_the_rdn_graph() {
    let g = default_model::graph([128, 128]).expect("default model");
    assert_eq!(g.shape(g.inputs[0]), &[1, 3, 128, 128]);
    assert_eq!(g.shape(g.outputs[0]), &[1, 3, 256, 256]);
    let convs = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_)))
        .count();
    assert_eq!(convs, 12);
    let Op::Conv(up1) = &node(&g, "UPN1").op else {
        panic!("UPN1")
    };
    assert_eq!(up1.weight.shape(), &[64, 64, 5, 5]);
    assert_eq!(up1.pads, [2, 2, 2, 2]);
    // SR/kernel is followed in the shard by SR/bias and UPN1..3: its first value sits this far from the end.
    let sr = default_model::WEIGHTS.len()
        - 4 * (3 * 3 * 12 * 3 + 3 + 64 * 64 * 25 + 64 + 9 * 64 * 32 + 32 + 9 * 32 * 12 + 12);
    let first = f32::from_le_bytes(
        default_model::WEIGHTS[sr..sr + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let Op::Conv(c) = &node(&g, "SR").op else {
        panic!("SR")
    };
    assert_eq!(c.weight.data()[0], first);
    let e = default_model::graph([0, 5]).expect_err("empty input");
    assert!(matches!(e, Error::InvalidInput(_)));
}

/// A Keras 3 inbound node: `args` holding this layer's tensor and numbers.
fn k3_args(from: &str, rest: &[Json]) -> Json {
    let t = json!({"class_name": "__keras_tensor__",
                   "config": {"shape": [null, 1, 2, 2], "dtype": "float32",
                              "keras_history": [from, 0, 0]}});
    let mut args = vec![t];
    args.extend(rest.iter().cloned());
    json!([{"args": args, "kwargs": {}}])
}

/// A Keras 3 layer entry of a functional model's `layers` list.
fn k3_layer(class: &str, name: &str, config: Json, inbound: Json) -> Json {
    let mut config = config;
    config["name"] = json!(name);
    json!({"class_name": class, "name": name, "config": config, "inbound_nodes": inbound})
}

/// A Keras 3 tensor argument of 3 features from layer `from`.
fn feature_arg(from: &str) -> Json {
    json!({"class_name": "__keras_tensor__",
           "config": {"shape": [null, 3], "dtype": "float32", "keras_history": [from, 0, 0]}})
}

/// Keras's preprocessing and op layers as Keras 3 writes them (EfficientNet
/// and MobileNetV3 begin with Rescaling and Normalization; MobileNetV3's
/// hard sigmoid is `relu6(x + 3) * (1/6)`, an `Add` and a `Multiply` of a
/// tensor and a number), and the silu activation, against numbers worked
/// out by hand.
#[test]
fn keras3_rescaling_normalization_number_operands_and_silu() {
    let model = json!({
        "format": "layers-model",
        "modelTopology": {"model_config": {"class_name": "Functional", "config": {
            "name": "pre",
            "layers": [
                k3_layer("InputLayer", "in", json!({"batch_shape": [null, 1, 2, 2]}), json!([])),
                k3_layer("Rescaling", "rescaling", json!({"scale": 0.5, "offset": -1.0}),
                      k3_args("in", &[])),
                k3_layer("Normalization", "normalization", json!({"axis": -1, "invert": false}),
                      k3_args("rescaling", &[])),
                k3_layer("Add", "add", json!({}), k3_args("normalization", &[json!(3.0)])),
                k3_layer("Subtract", "subtract", json!({}), k3_args("add", &[json!(1.0)])),
                k3_layer("Activation", "act", json!({"activation": "silu"}),
                      k3_args("subtract", &[])),
            ],
            "input_layers": [["in", 0, 0]],
            "output_layers": [["act", 0, 0]]
        }}},
        // Keras 3 names a `.keras` model's variables by position: mean,
        // variance and the int32 count.
        "weightsManifest": [{"paths": ["w.bin"], "weights": [
            {"name": "layers/normalization/vars/0", "shape": [2], "dtype": "float32"},
            {"name": "layers/normalization/vars/1", "shape": [2], "dtype": "float32"},
            {"name": "layers/normalization/vars/2", "shape": [], "dtype": "int32"}
        ]}]
    });
    let mut w: Vec<u8> = [1.0f32, -2.0, 4.0, 0.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    w.extend(7i32.to_le_bytes());
    let g = load(&model, HashMap::from([("w.bin", w)])).expect("loads");
    // NCHW [1, 2, 1, 2]: channel 0 holds x = 2, 6; channel 1 holds 4, 0.
    let x = tile_engine::Tensor::new(vec![1, 2, 1, 2], vec![2.0, 6.0, 4.0, 0.0]).expect("x");
    let y = tile_engine::cpu::run(&g, &[x]).expect("runs");
    let want: Vec<f32> = [(2.0f32, 0usize), (6.0, 0), (4.0, 1), (0.0, 1)]
        .iter()
        .map(|&(x, c)| {
            let (mean, sd) = [(1.0f32, 2.0f32), (-2.0, 0.5)][c];
            let r = x * 0.5 + -1.0;
            let v = (r - mean) / sd + 3.0 - 1.0;
            v * (1.0 / (1.0 + (-v).exp()))
        })
        .collect();
    let got = y[0].data();
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
    assert_eq!(got.len(), 4);
}

/// Keras 3's hard_silu and gelu activations map to the IR's HardSwish and
/// exact Gelu.
#[test]
fn keras3_activation_names_map_to_ir_activations() {
    for (name, want) in [
        ("hard_silu", Activation::HardSwish),
        ("gelu", Activation::Gelu { tanh: false }),
        ("mish", Activation::Mish),
    ] {
        let mut m = tiny_model();
        m["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["activation"] =
            json!(name);
        let g = load_tiny(&m).expect(name);
        let Op::Conv(c) = &node(&g, "conv").op else {
            panic!("not a conv")
        };
        assert_eq!(c.activation, want, "{name}");
    }
    // silu is no IR activation: the conv is followed by x · sigmoid(x).
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["activation"] =
        json!("silu");
    let g = load_tiny(&m).expect("silu");
    let x = tile_engine::Tensor::new(vec![1, 2, 4, 4], (0..32).map(|i| i as f32 * 0.01).collect())
        .expect("x");
    let y = tile_engine::cpu::run(&g, std::slice::from_ref(&x)).expect("runs");
    let mut m = tiny_model();
    m["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["activation"] =
        json!("linear");
    let lin = tile_engine::cpu::run(&load_tiny(&m).expect("linear"), &[x]).expect("runs");
    for (s, l) in y[0].data().iter().zip(lin[0].data()) {
        let want = l * (1.0 / (1.0 + (-l).exp()));
        assert!(
            (s - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{s} vs {want}"
        );
    }
}

/// On a `[batch, features]` input, Normalization's mean and variance from
/// its config (Keras 3 writes `axis` as a list) broadcast over the last
/// axis, `invert` undoes it, and a number before the tensor (`3.0 + x`)
/// is added with the tensor first.
#[test]
fn keras3_normalization_of_features_inverted_and_a_leading_number() {
    let model = json!({
        "format": "layers-model",
        "modelTopology": {"model_config": {"class_name": "Functional", "config": {
            "name": "feat",
            "layers": [
                k3_layer("InputLayer", "in", json!({"batch_shape": [null, 3]}), json!([])),
                k3_layer("Normalization", "norm",
                      json!({"axis": [-1], "invert": true, "mean": [1.0, 2.0, 3.0],
                             "variance": [4.0, 0.0, 0.25]}),
                      json!([{"args": [feature_arg("in")], "kwargs": {}}])),
                k3_layer("Add", "add", json!({}),
                      json!([{"args": [3.0, feature_arg("norm")], "kwargs": {}}])),
            ],
            "input_layers": [["in", 0, 0]],
            "output_layers": [["add", 0, 0]]
        }}},
        "weightsManifest": []
    });
    let g = load(&model, HashMap::new()).expect("loads");
    assert_eq!(g.shape(g.outputs[0]), &[1, 3]);
    let add = node(&g, "add");
    assert!(
        !g.constants.contains_key(&add.inputs[0]),
        "the map is the sum's first operand"
    );
    let x = tile_engine::Tensor::new(vec![1, 3], vec![2.0, -1.0, 8.0]).expect("x");
    let y = tile_engine::cpu::run(&g, &[x]).expect("runs");
    // mean + x · max(√var, 1e-7), then 3 + that.
    let want = [
        1.0 + 2.0 * 2.0 + 3.0,
        2.0 - 1e-7 + 3.0,
        3.0 + 8.0 * 0.5 + 3.0,
    ];
    for (g, w) in y[0].data().iter().zip(want) {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
    }
}

/// `Normalization(axis=None)`, which Keras 3 writes as `"axis": []`: one
/// mean and variance for the whole tensor; a per-feature mean with it is
/// refused by name.
#[test]
fn keras3_normalization_over_the_whole_tensor() {
    let model = |mean: Json| {
        json!({
            "format": "layers-model",
            "modelTopology": {"model_config": {"class_name": "Functional", "config": {
                "name": "whole",
                "layers": [
                    k3_layer("InputLayer", "in", json!({"batch_shape": [null, 3]}), json!([])),
                    k3_layer("Normalization", "norm",
                             json!({"axis": [], "invert": false, "mean": mean, "variance": 4.0}),
                             json!([{"args": [feature_arg("in")], "kwargs": {}}])),
                ],
                "input_layers": [["in", 0, 0]],
                "output_layers": [["norm", 0, 0]]
            }}},
            "weightsManifest": []
        })
    };
    let g = load(&model(json!(2.0)), HashMap::new()).expect("loads");
    let x = tile_engine::Tensor::new(vec![1, 3], vec![2.0, -1.0, 8.0]).expect("x");
    let y = tile_engine::cpu::run(&g, &[x]).expect("runs");
    assert_eq!(y[0].data(), &[0.0, -1.5, 3.0]);
    let e = err_text(load(&model(json!([1.0, 2.0, 3.0])), HashMap::new()));
    assert!(e.contains("norm") && e.contains("whole tensor"), "{e}");
}
