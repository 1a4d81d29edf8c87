//! The Keras model topology of a layers-model: which layer call reads which
//! tensors, put in an order where every call comes after its inputs.
//!
//! Handles Functional (`Functional`/`Model`) and `Sequential` configs, and
//! the inbound-node formats of Keras 2 (`[[name, node, tensor, kwargs]]`)
//! and Keras 3 (`{"args": [{keras_history: …}], …}`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// A Keras tensor: output `tensor` of call `node` of layer `layer`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TensorRef {
    /// Layer name.
    pub layer: String,
    /// Which call of the layer (a shared layer is called more than once).
    pub node: usize,
    /// Which output of that call.
    pub tensor: usize,
}

/// One call of one layer.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// Keras class name (`Conv2D`, `InputLayer`, …).
    pub class: String,
    /// Layer name.
    pub layer: String,
    /// Index of this call among the layer's calls.
    pub node: usize,
    /// The layer's config object, shared by the layer's calls (a file may
    /// call one large layer many times).
    pub config: Arc<Json>,
    /// Tensors read by the call, in order.
    pub inputs: Vec<TensorRef>,
    /// Numbers among a Keras 3 call's arguments (`x + 3.0` is an `Add` of
    /// a tensor and 3), each with its position among the call's operands.
    pub numbers: Vec<(usize, f32)>,
}

/// Calls in dependency order, with the model's input and output tensors.
#[derive(Debug)]
pub(crate) struct Topology {
    /// Every layer call, each after the calls producing its inputs.
    pub calls: Vec<Call>,
    /// Model inputs (outputs of InputLayer calls).
    pub inputs: Vec<TensorRef>,
    /// Model outputs.
    pub outputs: Vec<TensorRef>,
    /// Who wrote the file: a layer computes what that framework defines.
    pub writer: Writer,
    /// Each layer's variable path as Keras 3's `.keras` saving names it
    /// (`layers/conv2d_1`: its class in snake case, numbered among the
    /// model's layers of that class in order), which the TF.js converter
    /// keeps for a `.keras` model's weights (`layers/conv2d_1/vars/0`).
    pub var_paths: HashMap<String, String>,
}

/// The framework that wrote a layers model. Where two define a layer of
/// the same name differently (`hard_sigmoid` in Keras 3; bilinear
/// UpSampling2D, which Keras runs with half-pixel centres and TF.js
/// without), the import follows the writer: the model was trained, or
/// built, against its definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    /// TF.js itself (`tf.LayersModel.save`), or a file that does not say.
    TfJs,
    /// Keras 2 (tf.keras, through the TF.js converter).
    Keras2,
    /// Keras 3.
    Keras3,
}

/// Parses `modelTopology` (the object holding `model_config`, or the model config itself).
pub(crate) fn parse(topology: &Json) -> Result<Topology> {
    let model = topology.get("model_config").unwrap_or(topology);
    let class = model
        .get("class_name")
        .and_then(Json::as_str)
        .ok_or_else(|| Error::Malformed("model config has no class_name".into()))?;
    let config = model
        .get("config")
        .ok_or_else(|| Error::Malformed("model config has no config".into()))?;
    let mut topo = match class {
        "Functional" | "Model" => functional(config),
        "Sequential" => sequential(config),
        other => Err(Error::Unsupported(format!(
            "model class {other} (expected Functional or Sequential)"
        ))),
    }?;
    // Keras states its version ("2.15.1"), TF.js its own ("tfjs-layers
    // 4.11.0"); Keras 3's configs also name their module.
    topo.writer = match topology.get("keras_version").and_then(Json::as_str) {
        Some(v) if v.starts_with("3.") => Writer::Keras3,
        Some(v) if v.starts_with(|c: char| c.is_ascii_digit()) => Writer::Keras2,
        Some(_) => Writer::TfJs,
        None if model.get("module").is_some() => Writer::Keras3,
        None => Writer::TfJs,
    };
    topo.var_paths = keras3_var_paths(layer_list(config)?)?;
    Ok(topo)
}

/// [`Topology::var_paths`]: Keras 3's saving walks the model's layers in
/// order and names each by its class in snake case, `_1`, `_2`… after the
/// first of a name.
fn keras3_var_paths(layers: &[Json]) -> Result<HashMap<String, String>> {
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut paths = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        let (class, name) = class_and_name(layer, i)?;
        let snake = snake_case(&class);
        let seen = used.entry(snake.clone()).or_insert(0);
        let path = if *seen == 0 {
            format!("layers/{snake}")
        } else {
            format!("layers/{snake}_{seen}")
        };
        *seen += 1;
        paths.insert(name, path);
    }
    Ok(paths)
}

/// Keras's `to_snake_case`: word characters only, `_` before a capital
/// that starts a lowercase run and between a lowercase letter and a
/// capital, then lowercase (`Conv2DTranspose` → `conv2d_transpose`,
/// `PReLU` → `p_re_lu`), matched left to right as its regexes are.
pub(crate) fn snake_case(class: &str) -> String {
    let s: Vec<char> = class
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    // `(.)([A-Z][a-z]+)` → `\1_\2`
    let mut a = Vec::with_capacity(s.len() + 4);
    let mut i = 0;
    while i < s.len() {
        if i + 2 < s.len() && s[i + 1].is_ascii_uppercase() && s[i + 2].is_ascii_lowercase() {
            let mut j = i + 2;
            while j < s.len() && s[j].is_ascii_lowercase() {
                j += 1;
            }
            a.push(s[i]);
            a.push('_');
            a.extend(&s[i + 1..j]);
            i = j;
        } else {
            a.push(s[i]);
            i += 1;
        }
    }
    // `([a-z])([A-Z])` → `\1_\2`
    let mut b = String::with_capacity(a.len() + 4);
    let mut i = 0;
    while i < a.len() {
        if i + 1 < a.len() && a[i].is_ascii_lowercase() && a[i + 1].is_ascii_uppercase() {
            b.push(a[i]);
            b.push('_');
            b.push(a[i + 1]);
            i += 2;
        } else {
            b.push(a[i]);
            i += 1;
        }
    }
    b.to_lowercase()
}

fn layer_list(config: &Json) -> Result<&Vec<Json>> {
    // Keras < 2.3 stored a Sequential's layers as the config itself.
    config
        .get("layers")
        .unwrap_or(config)
        .as_array()
        .ok_or_else(|| Error::Malformed("model config has no layer list".into()))
}

fn class_and_name(layer: &Json, index: usize) -> Result<(String, String)> {
    let class = layer
        .get("class_name")
        .and_then(Json::as_str)
        .ok_or_else(|| Error::Malformed(format!("layer #{index} has no class_name")))?;
    let name = layer
        .get("name")
        .or_else(|| layer.get("config").and_then(|c| c.get("name")))
        .and_then(Json::as_str)
        .ok_or_else(|| Error::Malformed(format!("layer #{index} ({class}) has no name")))?;
    Ok((class.to_string(), name.to_string()))
}

fn sequential(config: &Json) -> Result<Topology> {
    let layers = layer_list(config)?;
    let mut calls = Vec::new();
    let mut prev: Option<TensorRef> = None;
    for (i, layer) in layers.iter().enumerate() {
        let (class, name) = class_and_name(layer, i)?;
        let cfg = Arc::new(layer.get("config").cloned().unwrap_or(Json::Null));
        if prev.is_none() && class != "InputLayer" {
            // The first layer declares the model's input shape itself.
            let shape = cfg
                .get("batch_input_shape")
                .or_else(|| cfg.get("batch_shape"))
                .cloned()
                .ok_or_else(|| {
                    Error::Malformed(format!(
                        "Sequential model: first layer {name} declares no batch_input_shape"
                    ))
                })?;
            let input = format!("{name}_input");
            calls.push(Call {
                class: "InputLayer".into(),
                layer: input.clone(),
                node: 0,
                config: Arc::new(serde_json::json!({ "batch_input_shape": shape })),
                inputs: vec![],
                numbers: vec![],
            });
            prev = Some(tref(&input));
        }
        let inputs = prev.iter().cloned().collect();
        calls.push(Call {
            class,
            layer: name.clone(),
            node: 0,
            config: cfg,
            inputs,
            numbers: vec![],
        });
        prev = Some(tref(&name));
    }
    let input = calls
        .first()
        .map(|c| tref(&c.layer))
        .ok_or_else(|| Error::Malformed("Sequential model has no layers".into()))?;
    let output = prev.ok_or_else(|| Error::Malformed("Sequential model has no layers".into()))?;
    Ok(Topology {
        calls,
        inputs: vec![input],
        outputs: vec![output],
        writer: Writer::TfJs,
        var_paths: HashMap::new(),
    })
}

fn tref(layer: &str) -> TensorRef {
    TensorRef {
        layer: layer.to_string(),
        node: 0,
        tensor: 0,
    }
}

fn functional(config: &Json) -> Result<Topology> {
    let layers = layer_list(config)?;
    let mut calls = Vec::new();
    let mut call_count: HashMap<String, usize> = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        let (class, name) = class_and_name(layer, i)?;
        if call_count.contains_key(&name) {
            return Err(Error::Malformed(format!("two layers are named {name}")));
        }
        let cfg = Arc::new(layer.get("config").cloned().unwrap_or(Json::Null));
        let nodes = match layer.get("inbound_nodes") {
            None | Some(Json::Null) => vec![],
            Some(Json::Array(nodes)) => nodes.clone(),
            Some(_) => {
                return Err(Error::Malformed(format!(
                    "layer {name}: inbound_nodes is not a list"
                )));
            }
        };
        let node_inputs: Vec<Operands> = if nodes.is_empty() {
            // An InputLayer (or an unused layer) has one call with no inputs.
            vec![(vec![], vec![])]
        } else {
            nodes
                .iter()
                .map(|n| node_refs(n, &name))
                .collect::<Result<_>>()?
        };
        call_count.insert(name.clone(), node_inputs.len());
        for (node, (inputs, numbers)) in node_inputs.into_iter().enumerate() {
            calls.push(Call {
                class: class.clone(),
                layer: name.clone(),
                node,
                config: cfg.clone(),
                inputs,
                numbers,
            });
        }
    }
    let ends = |key: &str| -> Result<Vec<TensorRef>> {
        let list = config
            .get(key)
            .ok_or_else(|| Error::Malformed(format!("Functional model has no {key}")))?;
        let refs = history_list(list).ok_or_else(|| {
            Error::Malformed(format!("{key} is not a list of [layer, node, tensor]"))
        })?;
        for r in &refs {
            check_ref(r, &call_count, key)?;
        }
        Ok(refs)
    };
    let inputs = ends("input_layers")?;
    let outputs = ends("output_layers")?;
    let calls = order(calls, &call_count)?;
    Ok(Topology {
        calls,
        inputs,
        outputs,
        writer: Writer::TfJs,
        var_paths: HashMap::new(),
    })
}

fn check_ref(r: &TensorRef, call_count: &HashMap<String, usize>, reader: &str) -> Result<()> {
    match call_count.get(&r.layer) {
        None => Err(Error::Malformed(format!(
            "{reader} reads from layer {}, which the model does not define",
            r.layer
        ))),
        Some(&n) if r.node >= n => Err(Error::Malformed(format!(
            "{reader} reads call {} of layer {}, which is called only {n} time(s)",
            r.node, r.layer
        ))),
        Some(_) if r.tensor != 0 => Err(Error::Unsupported(format!(
            "{reader} reads output {} of layer {}; only single-output layers are supported",
            r.tensor, r.layer
        ))),
        Some(_) => Ok(()),
    }
}

/// A call's tensors and its numeric arguments (see [`Call::numbers`]).
type Operands = (Vec<TensorRef>, Vec<(usize, f32)>);

/// Parses one inbound node, in either Keras format.
fn node_refs(node: &Json, layer: &str) -> Result<Operands> {
    let bad = || Error::Malformed(format!("layer {layer}: cannot read an inbound node"));
    match node {
        // Keras 2: [[name, node, tensor, kwargs], ...]
        Json::Array(items) => Ok((
            items
                .iter()
                .map(|i| history(i).ok_or_else(bad))
                .collect::<Result<_>>()?,
            vec![],
        )),
        // Keras 3: {"args": [...], "kwargs": {...}}; tensors carry a keras_history.
        Json::Object(o) => {
            let mut found = (Vec::new(), Vec::new());
            if let Some(args) = o.get("args") {
                collect_keras3(args, &mut found);
            }
            if found.0.is_empty() {
                return Err(bad());
            }
            Ok(found)
        }
        _ => Err(bad()),
    }
}

fn collect_keras3(v: &Json, out: &mut Operands) {
    match v {
        Json::Array(items) => items.iter().for_each(|i| collect_keras3(i, out)),
        Json::Object(o) => {
            if let Some(h) = o
                .get("config")
                .and_then(|c| c.get("keras_history"))
                .and_then(history)
            {
                out.0.push(h);
            }
        }
        Json::Number(n) => {
            if let Some(v) = n.as_f64() {
                out.1.push((out.0.len() + out.1.len(), v as f32));
            }
        }
        _ => {}
    }
}

/// `[name, node, tensor, ...]`.
fn history(v: &Json) -> Option<TensorRef> {
    let a = v.as_array()?;
    Some(TensorRef {
        layer: a.first()?.as_str()?.to_string(),
        node: usize::try_from(a.get(1)?.as_u64()?).ok()?,
        tensor: usize::try_from(a.get(2)?.as_u64()?).ok()?,
    })
}

/// `[[name, node, tensor], ...]`, or a single `[name, node, tensor]` (Keras 3).
fn history_list(v: &Json) -> Option<Vec<TensorRef>> {
    if let Some(one) = history(v) {
        return Some(vec![one]);
    }
    v.as_array()?.iter().map(history).collect()
}

/// Kahn's algorithm, keeping the file's order among ready calls so the IR
/// reads like the model file.
fn order(calls: Vec<Call>, call_count: &HashMap<String, usize>) -> Result<Vec<Call>> {
    let index: HashMap<(&str, usize), usize> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.layer.as_str(), c.node), i))
        .collect();
    let mut pending = vec![0usize; calls.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); calls.len()];
    for (i, c) in calls.iter().enumerate() {
        for r in &c.inputs {
            check_ref(r, call_count, &format!("layer {}", c.layer))?;
            let &p = index.get(&(r.layer.as_str(), r.node)).ok_or_else(|| {
                Error::Malformed(format!(
                    "layer {} reads a missing call of {}",
                    c.layer, r.layer
                ))
            })?;
            pending[i] += 1;
            readers[p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = pending
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut sorted = Vec::with_capacity(calls.len());
    while let Some(Reverse(i)) = ready.pop() {
        sorted.push(i);
        for &r in &readers[i] {
            pending[r] -= 1;
            if pending[r] == 0 {
                ready.push(Reverse(r));
            }
        }
    }
    if sorted.len() != calls.len() {
        let mut stuck: Vec<&str> = calls
            .iter()
            .zip(&pending)
            .filter(|(_, n)| **n > 0)
            .map(|(c, _)| c.layer.as_str())
            .collect();
        stuck.dedup();
        return Err(Error::Malformed(format!(
            "the layer graph has a cycle through: {}",
            stuck.join(", ")
        )));
    }
    let mut slots: Vec<Option<Call>> = calls.into_iter().map(Some).collect();
    Ok(sorted.into_iter().filter_map(|i| slots[i].take()).collect())
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    /// The names Keras 3 gives these classes' variable paths (read from a
    /// converted `.keras` model's manifest and Keras's `to_snake_case`).
    #[test]
    fn class_names_become_keras_snake_case() {
        for (class, want) in [
            ("Conv2D", "conv2d"),
            ("Conv2DTranspose", "conv2d_transpose"),
            ("PReLU", "p_re_lu"),
            ("BatchNormalization", "batch_normalization"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("SeparableConv2D", "separable_conv2d"),
            ("Dense", "dense"),
            ("InputLayer", "input_layer"),
            ("UpSampling2D", "up_sampling2d"),
        ] {
            assert_eq!(snake_case(class), want, "{class}");
        }
    }
}
