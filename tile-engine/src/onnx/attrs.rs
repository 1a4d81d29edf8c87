//! Typed access to a node's attributes, with errors that name the node.

use crate::error::{Error, Result};
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};

/// [`crate::ir::MAX_DIM`] as ONNX's integer type.
pub(crate) const MAX_DIM: i64 = crate::ir::MAX_DIM as i64;

/// One ONNX node being imported: its name and attributes.
pub(crate) struct NodeCtx<'a> {
    pub node: &'a NodeProto,
    /// The node's name in the file, or `{op}_{index}` for an unnamed one.
    pub name: String,
    pub op: &'a str,
    /// Position in the graph's node list, for an unnamed node's messages.
    index: usize,
    named: bool,
}

impl<'a> NodeCtx<'a> {
    pub fn new(node: &'a NodeProto, index: usize) -> Self {
        let op = node.op_type.as_deref().unwrap_or("");
        let (name, named) = match node.name.as_deref() {
            Some(n) if !n.is_empty() => (n.to_string(), true),
            _ => (format!("{op}_{index}"), false),
        };
        Self {
            node,
            name,
            op,
            index,
            named,
        }
    }

    /// The node as messages name it: `node 'n'`, or for a node the file
    /// leaves unnamed its position (a made-up name is in no tool's view of
    /// the file).
    pub fn who(&self) -> String {
        if self.named {
            format!("node '{}'", self.name)
        } else {
            format!("unnamed node #{} of the graph, counted from 0", self.index)
        }
    }

    /// `e`, raised while importing this node, with an unnamed node named by
    /// [`NodeCtx::who`] where the message used its made-up name (the graph
    /// builder's shape errors and some helpers' do).
    pub fn own_error(&self, e: Error) -> Error {
        if self.named {
            return e;
        }
        let quoted = format!("node '{}'", self.name);
        let bare = format!("node {} ", self.name);
        let who = self.who();
        let fix = |m: String| m.replace(&quoted, &who).replace(&bare, &format!("{who} "));
        match e {
            Error::Malformed(m) => Error::Malformed(fix(m)),
            Error::Unsupported(m) => Error::Unsupported(fix(m)),
            Error::Shape(m) => Error::Shape(fix(m)),
            Error::InvalidInput(m) => Error::InvalidInput(fix(m)),
            Error::Limit(m) => Error::Limit(fix(m)),
            other => other,
        }
    }

    /// "unsupported: op 'X' (node 'n'): why".
    pub fn unsupported(&self, why: impl std::fmt::Display) -> Error {
        Error::Unsupported(format!("op '{}' ({}): {why}", self.op, self.who()))
    }

    /// A model inconsistency at this node.
    pub fn malformed(&self, why: impl std::fmt::Display) -> Error {
        Error::Malformed(format!("{} ({}): {why}", self.who(), self.op))
    }

    fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    /// True when the attribute is present.
    pub fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    /// An optional integer attribute.
    pub fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                a.i.map(Some)
                    .ok_or_else(|| self.malformed(format!("attribute '{name}' is not an int")))
            }
        }
    }

    /// An integer attribute with a default.
    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }

    /// A float attribute with a default.
    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => {
                a.f.ok_or_else(|| self.malformed(format!("attribute '{name}' is not a float")))
            }
        }
    }

    /// An optional list of ints.
    pub fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    /// An optional list of floats.
    pub fn floats(&self, name: &str) -> Option<&'a [f32]> {
        self.attr(name).map(|a| a.floats.as_slice())
    }

    /// A string attribute with a default.
    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.attr(name) {
            None => Ok(default.to_string()),
            Some(a) => {
                a.s.as_deref()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .ok_or_else(|| self.malformed(format!("attribute '{name}' is not a string")))
            }
        }
    }

    /// An optional tensor attribute.
    pub fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }

    /// Input names; an empty name means "optional input left out".
    pub fn input(&self, i: usize) -> Option<&'a str> {
        self.node
            .input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A required input.
    pub fn req_input(&self, i: usize) -> Result<&'a str> {
        self.input(i)
            .ok_or_else(|| self.malformed(format!("missing input {i}")))
    }

    /// The first output's name.
    pub fn output(&self) -> Result<&'a str> {
        self.node
            .output
            .first()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.malformed("has no output"))
    }

    /// A small non-negative size (kernel, stride, pad, axis count) from an int.
    pub fn size(&self, what: &str, v: i64) -> Result<usize> {
        if !(0..=MAX_DIM).contains(&v) {
            return Err(self.malformed(format!("{what} {v} out of range")));
        }
        Ok(v as usize)
    }

    /// A list of sizes with an expected length.
    pub fn sizes(&self, what: &str, v: &[i64], len: usize) -> Result<Vec<usize>> {
        if v.len() != len {
            return Err(self.malformed(format!("{what} has {} values, expected {len}", v.len())));
        }
        v.iter().map(|&x| self.size(what, x)).collect()
    }

    /// Resolves a possibly negative axis against `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if !(0..r).contains(&a) {
            return Err(self.malformed(format!("axis {axis} out of range for rank {rank}")));
        }
        Ok(a as usize)
    }
}
