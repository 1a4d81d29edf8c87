//! The graph: values (tensors with static shapes), nodes (ops) and constants.

use std::collections::HashMap;
use std::sync::Arc;

use super::op::Op;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;
/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// A tensor flowing through the graph, with its static shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// The name given by the model file (unique within the graph).
    pub name: String,
    /// Static shape.
    pub shape: Vec<usize>,
}

/// One op applied to input values, producing one output value.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The name given by the model file (or a generated one), for errors and reports.
    pub name: String,
    /// What the node computes.
    pub op: Op,
    /// Input values, in the op's order.
    pub inputs: Vec<ValueId>,
    /// The value this node produces.
    pub output: ValueId,
}

/// A model: a DAG of nodes over values. Nodes are kept in topological order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// All values (inputs, constants, intermediates, outputs).
    pub values: Vec<Value>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Runtime inputs of the model.
    pub inputs: Vec<ValueId>,
    /// Outputs of the model.
    pub outputs: Vec<ValueId>,
    /// Values known at load time (constant operands that are not op weights).
    pub constants: HashMap<ValueId, Arc<Tensor>>,
}

impl Graph {
    /// Checks a caller's tensors against the graph's declared inputs (count and shapes).
    pub fn check_inputs(&self, inputs: &[Tensor]) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::InvalidInput(format!(
                "the model takes {} input(s), got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        for (&v, t) in self.inputs.iter().zip(inputs) {
            let value = &self.values[v];
            if t.shape() != value.shape.as_slice() {
                return Err(Error::InvalidInput(format!(
                    "input {}: expected shape {:?}, got {:?}",
                    value.name,
                    value.shape,
                    t.shape()
                )));
            }
        }
        Ok(())
    }

    /// Adds a value and returns its id.
    pub fn add_value(&mut self, name: impl Into<String>, shape: Vec<usize>) -> ValueId {
        self.values.push(Value {
            name: name.into(),
            shape,
        });
        self.values.len() - 1
    }

    /// Adds a constant value.
    pub fn add_constant(&mut self, name: impl Into<String>, tensor: Tensor) -> ValueId {
        let id = self.add_value(name, tensor.shape().to_vec());
        self.constants.insert(id, Arc::new(tensor));
        id
    }

    /// Appends a node whose output shape is inferred from its inputs; returns the output id.
    /// Nodes must be added in topological order.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<ValueId>,
        output_name: impl Into<String>,
    ) -> Result<ValueId> {
        let name = name.into();
        for &i in &inputs {
            if i >= self.values.len() {
                return Err(Error::Malformed(format!(
                    "node {name}: unknown input value {i}"
                )));
            }
        }
        let in_shapes: Vec<&[usize]> = inputs
            .iter()
            .map(|&i| self.values[i].shape.as_slice())
            .collect();
        let shape = super::shape::infer(&op, &in_shapes)
            .map_err(|e| Error::Shape(format!("node {name} ({}): {e}", op.name())))?;
        self.push_node(name, op, inputs, output_name, shape)
    }

    /// Like [`Graph::add_node`] for ops whose output shape is not a function of
    /// the input shapes alone (Reshape, Resize): the caller states it.
    pub fn add_node_with_shape(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<ValueId>,
        output_name: impl Into<String>,
        shape: Vec<usize>,
    ) -> Result<ValueId> {
        let name = name.into();
        for &i in &inputs {
            if i >= self.values.len() {
                return Err(Error::Malformed(format!(
                    "node {name}: unknown input value {i}"
                )));
            }
        }
        let in_shapes: Vec<&[usize]> = inputs
            .iter()
            .map(|&i| self.values[i].shape.as_slice())
            .collect();
        super::shape::check_explicit(&op, &in_shapes, &shape)
            .map_err(|e| Error::Shape(format!("node {name} ({}): {e}", op.name())))?;
        self.push_node(name, op, inputs, output_name, shape)
    }

    /// Appends a node with a checked output shape: one whose element count
    /// overflows is refused here, before any later size arithmetic sees it.
    fn push_node(
        &mut self,
        name: String,
        op: Op,
        inputs: Vec<ValueId>,
        output_name: impl Into<String>,
        shape: Vec<usize>,
    ) -> Result<ValueId> {
        crate::tensor::checked_numel(&shape).map_err(|_| {
            Error::Shape(format!(
                "node {name} ({}): output shape {shape:?} has too many elements",
                op.name()
            ))
        })?;
        let output = self.add_value(output_name, shape);
        self.nodes.push(Node {
            name,
            op,
            inputs,
            output,
        });
        Ok(output)
    }

    /// Shape of a value.
    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.values[v].shape
    }

    /// For each value, the node producing it (None for inputs and constants).
    pub fn producers(&self) -> Vec<Option<NodeId>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            p[n.output] = Some(i);
        }
        p
    }

    /// For each value, the nodes reading it.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                if !c[v].contains(&i) {
                    c[v].push(i);
                }
            }
        }
        c
    }

    /// Checks the structural invariants: ids in range, each value produced at
    /// most once, nodes topologically ordered, inputs/outputs defined.
    pub fn validate(&self) -> Result<()> {
        let mut defined = vec![false; self.values.len()];
        for &i in &self.inputs {
            *defined
                .get_mut(i)
                .ok_or_else(|| Error::Malformed(format!("input id {i}")))? = true;
        }
        for &c in self.constants.keys() {
            *defined
                .get_mut(c)
                .ok_or_else(|| Error::Malformed(format!("constant id {c}")))? = true;
        }
        for n in &self.nodes {
            for &i in &n.inputs {
                if !defined.get(i).copied().unwrap_or(false) {
                    return Err(Error::Malformed(format!(
                        "node {} reads value {} before it is produced",
                        n.name,
                        self.values.get(i).map_or("?", |v| v.name.as_str())
                    )));
                }
            }
            let out = defined
                .get_mut(n.output)
                .ok_or_else(|| Error::Malformed(format!("node {} output id", n.name)))?;
            if *out {
                return Err(Error::Malformed(format!(
                    "value produced twice by {}",
                    n.name
                )));
            }
            *out = true;
        }
        for &o in &self.outputs {
            if !defined.get(o).copied().unwrap_or(false) {
                return Err(Error::Malformed(format!(
                    "graph output {o} is never produced"
                )));
            }
        }
        Ok(())
    }

    /// Removes nodes and constants that no graph output depends on, and
    /// compacts value ids. Keeps graph inputs even if unused.
    pub fn prune(&mut self) {
        let producers = self.producers();
        let mut live = vec![false; self.values.len()];
        let mut stack: Vec<ValueId> = self.outputs.clone();
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut live[v], true) {
                continue;
            }
            if let Some(n) = producers[v] {
                stack.extend(self.nodes[n].inputs.iter().copied());
            }
        }
        for &i in &self.inputs {
            live[i] = true;
        }
        let mut remap = vec![usize::MAX; self.values.len()];
        let mut values = Vec::new();
        for (i, v) in self.values.iter().enumerate() {
            if live[i] {
                remap[i] = values.len();
                values.push(v.clone());
            }
        }
        self.nodes.retain(|n| live[n.output]);
        for n in &mut self.nodes {
            n.output = remap[n.output];
            for i in &mut n.inputs {
                *i = remap[*i];
            }
        }
        self.inputs.iter_mut().for_each(|i| *i = remap[*i]);
        self.outputs.iter_mut().for_each(|i| *i = remap[*i]);
        self.constants = std::mem::take(&mut self.constants)
            .into_iter()
            .filter(|(k, _)| live[*k])
            .map(|(k, t)| (remap[k], t))
            .collect();
        self.values = values;
    }
}
