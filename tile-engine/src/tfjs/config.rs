//! Reading Keras layer config fields, with errors that name the layer and field.

use serde_json::Value as Json;

use super::topology::Writer;
use crate::error::{Error, Result};
use crate::ir::{Activation, MAX_DIM};

/// A layer's config, with the layer name for error messages.
pub(crate) struct Cfg<'a> {
    /// Layer name.
    pub layer: &'a str,
    /// Layer class.
    pub class: &'a str,
    /// The `config` object.
    pub json: &'a Json,
    /// Who wrote the model.
    pub writer: Writer,
}

impl Cfg<'_> {
    fn err(&self, field: &str, what: &str) -> Error {
        Error::Malformed(format!(
            "layer {} ({}): field {field}: {what}",
            self.layer, self.class
        ))
    }

    /// Whether the field is present and not null.
    pub fn has(&self, field: &str) -> bool {
        !matches!(self.json.get(field), None | Some(Json::Null))
    }

    /// A string field, or `default` when absent.
    pub fn str_or<'b>(&'b self, field: &str, default: &'b str) -> Result<&'b str> {
        match self.json.get(field) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.err(field, "not a string")),
        }
    }

    /// A number or a list of numbers (flattened), or `None` when absent.
    pub fn f32s(&self, field: &str) -> Result<Option<Vec<f32>>> {
        fn walk(v: &Json, out: &mut Vec<f32>) -> bool {
            match v {
                Json::Array(a) => a.iter().all(|x| walk(x, out)),
                v => v.as_f64().map(|f| out.push(f as f32)).is_some(),
            }
        }
        match self.json.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => {
                let mut out = Vec::new();
                if walk(v, &mut out) {
                    Ok(Some(out))
                } else {
                    Err(self.err(field, "not a number or a list of numbers"))
                }
            }
        }
    }

    /// A float field, or `default` when absent.
    pub fn f32_or(&self, field: &str, default: f32) -> Result<f32> {
        match self.json.get(field) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| self.err(field, "not a number")),
        }
    }

    /// A boolean field, or `default` when absent.
    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.json.get(field) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(field, "not a boolean")),
        }
    }

    /// A positive integer field, or `default` when absent.
    pub fn usize_or(&self, field: &str, default: usize) -> Result<usize> {
        match self.json.get(field) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => self.positive(field, v),
        }
    }

    /// A signed integer field (an axis), or `default` when absent.
    pub fn i64_or(&self, field: &str, default: i64) -> Result<i64> {
        match self.json.get(field) {
            None | Some(Json::Null) => Ok(default),
            // Some exporters write a one-element list for a single axis.
            Some(Json::Array(a)) if a.len() == 1 => a[0]
                .as_i64()
                .ok_or_else(|| self.err(field, "not an integer")),
            Some(v) => v.as_i64().ok_or_else(|| self.err(field, "not an integer")),
        }
    }

    fn positive(&self, field: &str, v: &Json) -> Result<usize> {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0 && n <= MAX_DIM)
            .ok_or_else(|| {
                self.err(
                    field,
                    &format!("{v} is not a positive integer up to {MAX_DIM}"),
                )
            })
    }

    /// A pair like `kernel_size` (an integer or a two-element list), or `default` when absent.
    pub fn pair_or(&self, field: &str, default: Option<[usize; 2]>) -> Result<[usize; 2]> {
        match self.json.get(field) {
            None | Some(Json::Null) => default.ok_or_else(|| self.err(field, "missing")),
            Some(Json::Array(a)) if a.len() == 2 => {
                Ok([self.positive(field, &a[0])?, self.positive(field, &a[1])?])
            }
            Some(v @ Json::Number(_)) => {
                let n = self.positive(field, v)?;
                Ok([n, n])
            }
            Some(v) => Err(self.err(field, &format!("{v} is not an integer or a pair"))),
        }
    }

    /// Two pairs `[[top, bottom], [left, right]]` (ZeroPadding2D, Cropping2D),
    /// also accepting one integer or one symmetric pair; returned as `[top, left, bottom, right]`.
    pub fn pads(&self, field: &str) -> Result<[usize; 4]> {
        let v = self.json.get(field).unwrap_or(&Json::Null);
        let n = |v: &Json| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= MAX_DIM)
                .ok_or_else(|| {
                    self.err(
                        field,
                        &format!("{v} is not a non-negative integer up to {MAX_DIM}"),
                    )
                })
        };
        match v {
            Json::Number(_) => {
                let p = n(v)?;
                Ok([p; 4])
            }
            Json::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                (Json::Array(h), Json::Array(w)) if h.len() == 2 && w.len() == 2 => {
                    Ok([n(&h[0])?, n(&w[0])?, n(&h[1])?, n(&w[1])?])
                }
                (h, w) => {
                    let (h, w) = (n(h)?, n(w)?);
                    Ok([h, w, h, w])
                }
            },
            _ => Err(self.err(field, &format!("{v} is not a padding spec"))),
        }
    }

    /// Fails unless `data_format` is absent or `channels_last`.
    pub fn channels_last(&self) -> Result<()> {
        let f = self.str_or("data_format", "channels_last")?;
        if f != "channels_last" {
            return Err(Error::Unsupported(format!(
                "layer {} ({}): data_format {f}; only channels_last is supported",
                self.layer, self.class
            )));
        }
        Ok(())
    }

    /// The `activation` field resolved to what the IR can express.
    pub fn activation(&self) -> Result<Act> {
        let name = match self.json.get("activation") {
            // Keras 3 may serialise the activation as {"class_name": ..., "config": ...}.
            Some(Json::Object(o)) => o
                .get("config")
                .and_then(|c| c.get("name"))
                .or_else(|| o.get("class_name"))
                .and_then(Json::as_str)
                .unwrap_or("?"),
            _ => self.str_or("activation", "linear")?,
        };
        activation(name, self.writer).ok_or_else(|| {
            Error::Unsupported(format!(
                "layer {} ({}): activation {name}",
                self.layer, self.class
            ))
        })
    }
}

/// A Keras activation as the IR expresses it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Act {
    /// An elementwise activation (fusable into the producing op).
    Elementwise(Activation),
    /// Softmax over the channel axis (a separate op).
    Softmax,
    /// `x · sigmoid(x)` (Keras's silu, once swish): a sigmoid and a product.
    Swish,
}

/// Maps a Keras / TF.js activation name, as `writer` defines it.
pub(crate) fn activation(name: &str, writer: Writer) -> Option<Act> {
    Some(Act::Elementwise(match name {
        "linear" | "identity" => Activation::Identity,
        "relu" => Activation::Relu,
        "relu6" => Activation::Clip { min: 0.0, max: 6.0 },
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        // Keras' elu and selu use the same constants as ONNX's defaults.
        "elu" => Activation::Elu { alpha: 1.0 },
        "selu" => Activation::Selu {
            alpha: 1.673_263_2,
            gamma: 1.050_701,
        },
        "softplus" => Activation::Softplus,
        "silu" | "swish" => return Some(Act::Swish),
        // Keras 3's hard_silu, x · relu6(x + 3) / 6: ONNX's HardSwish.
        "hard_silu" | "hard_swish" => Activation::HardSwish,
        // Keras's exact gelu (its `approximate` defaults to false).
        "gelu" => Activation::Gelu { tanh: false },
        "mish" => Activation::Mish,
        // Keras 3's leaky_relu activation, at its default slope.
        "leaky_relu" => Activation::LeakyRelu { alpha: 0.2 },
        // Keras 2 and TF.js define hard_sigmoid as clip(0.2x + 0.5, 0, 1);
        // Keras 3 as relu6(x + 3) / 6, that is clip(x / 6 + 0.5, 0, 1).
        "hard_sigmoid" | "hardSigmoid" => Activation::HardSigmoid {
            alpha: if writer == Writer::Keras3 {
                1.0 / 6.0
            } else {
                0.2
            },
            beta: 0.5,
        },
        "softmax" => return Some(Act::Softmax),
        _ => return None,
    }))
}
