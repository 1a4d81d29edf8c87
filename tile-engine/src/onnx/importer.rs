//! The import driver: graph inputs, initializers, node dispatch, outputs.
//!
//! Every ONNX name is bound to a [`Slot`]: either a runtime IR value or a
//! constant known at import time. Ops whose inputs are all constant are
//! folded on the spot; the rest become IR nodes (constants they read are
//! materialised as float32 graph constants).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::attrs::{MAX_DIM, NodeCtx};
use super::proto::{ModelProto, ValueInfoProto, tensor_proto::DataType, type_proto};
use super::value::{ConstValue, MAX_RANK, decode_tensor};
use super::{ops_conv, ops_logic, ops_math, ops_shape};
use crate::error::{Error, Result};
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::checked_numel;

/// Lowest default-domain opset accepted. A file's opset is the newest op
/// version it may use, and many ops are unchanged since version 1 (ONNX's own
/// GlobalAveragePool tests declare opset 1, PyTorch's old exports opset 6), so
/// older files are accepted; the few pre-7 attribute forms that differ
/// (legacy `broadcast`/`axis`, Cast's string `to`, Pad's `paddings`, Concat's
/// default axis) are handled where they occur.
pub(crate) const MIN_OPSET: i64 = 1;
/// Highest default-domain opset accepted. 22–25 only added element types to
/// the ops imported here.
pub(crate) const MAX_OPSET: i64 = 25;
/// Largest element count of any value in an imported graph (1 GiB of f32).
pub(crate) const MAX_VALUE_ELEMS: usize = 1 << 28;

/// What an ONNX name stands for during import.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    /// A value computed at run time.
    Runtime(ValueId),
    /// A value known now.
    Const(Arc<ConstValue>),
}

/// Import state for one model.
pub(crate) struct Importer {
    pub graph: Graph,
    pub opset: i64,
    env: HashMap<String, Slot>,
    materialized: HashMap<String, ValueId>,
    /// Elements that folding may still create: bounded by the file size so a
    /// small file cannot make the importer allocate without limit.
    budget: usize,
    /// Every name a node reads or the graph outputs: an extra output no one
    /// reads (MaxPool's indices) is left unbound instead of refused.
    read: HashSet<String>,
}

impl Importer {
    /// The slot bound to `name`.
    pub fn slot(&self, ctx: &NodeCtx<'_>, name: &str) -> Result<Slot> {
        self.env
            .get(name)
            .cloned()
            .ok_or_else(|| ctx.malformed(format!("reads '{name}' before it is defined")))
    }

    /// Refuses a node whose outputs after the first are read (MaxPool's
    /// indices): only the first is computed.
    pub fn only_first_output(&self, ctx: &NodeCtx<'_>) -> Result<()> {
        match ctx
            .node
            .output
            .iter()
            .skip(1)
            .find(|o| self.read.contains(*o))
        {
            Some(o) => Err(ctx.unsupported(format!(
                "only the first output is supported, and '{o}' is read"
            ))),
            None => Ok(()),
        }
    }

    /// The constant bound to `name`, if it is one.
    pub fn konst(&self, name: &str) -> Option<Arc<ConstValue>> {
        match self.env.get(name) {
            Some(Slot::Const(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// The constant bound to input `i` of the node, or an error naming it.
    pub fn req_const(&self, ctx: &NodeCtx<'_>, i: usize, what: &str) -> Result<Arc<ConstValue>> {
        let name = ctx.req_input(i)?;
        match self.slot(ctx, name)? {
            Slot::Const(c) => Ok(c),
            Slot::Runtime(_) => Err(ctx.unsupported(format!(
                "{what} ('{name}') must be a constant, it is computed at run time"
            ))),
        }
    }

    /// The optional constant input `i` (None when the input is left out).
    pub fn opt_const(
        &self,
        ctx: &NodeCtx<'_>,
        i: usize,
        what: &str,
    ) -> Result<Option<Arc<ConstValue>>> {
        match ctx.input(i) {
            None => Ok(None),
            Some(_) => self.req_const(ctx, i, what).map(Some),
        }
    }

    /// Static shape of whatever `name` is bound to.
    pub fn shape_of(&self, ctx: &NodeCtx<'_>, name: &str) -> Result<Vec<usize>> {
        Ok(match self.slot(ctx, name)? {
            Slot::Runtime(v) => self.graph.shape(v).to_vec(),
            Slot::Const(c) => c.shape.clone(),
        })
    }

    /// The IR value for `name`, turning a constant into a graph constant once.
    pub fn runtime(&mut self, ctx: &NodeCtx<'_>, name: &str) -> Result<ValueId> {
        match self.slot(ctx, name)? {
            Slot::Runtime(v) => Ok(v),
            Slot::Const(c) => self.materialize(name, &c),
        }
    }

    fn materialize(&mut self, name: &str, c: &ConstValue) -> Result<ValueId> {
        if let Some(&v) = self.materialized.get(name) {
            return Ok(v);
        }
        let v = self.graph.add_constant(name, c.to_tensor()?);
        self.materialized.insert(name.to_string(), v);
        Ok(v)
    }

    /// Adds a float32 constant under a fresh name (e.g. a folded Gemm bias).
    pub fn add_const(&mut self, name: String, c: ConstValue) -> Result<ValueId> {
        self.charge(c.numel())?;
        let v = self.graph.add_constant(name, c.to_tensor()?);
        Ok(v)
    }

    /// Binds a name, refusing to rebind (ONNX graphs are single-assignment).
    pub fn bind(&mut self, ctx: &NodeCtx<'_>, name: &str, slot: Slot) -> Result<()> {
        // A folded constant may have an empty shape with a huge dimension
        // (`[2^60, 0]`): cap dims so later shape arithmetic cannot overflow.
        if let Slot::Const(c) = &slot
            && (c.shape.len() > MAX_RANK || c.shape.iter().any(|&d| d > MAX_VALUE_ELEMS))
        {
            return Err(Error::Limit(format!(
                "constant '{name}' of shape {:?} is too large",
                c.shape
            )));
        }
        if self.env.insert(name.to_string(), slot).is_some() {
            return Err(ctx.malformed(format!("value '{name}' is defined twice")));
        }
        Ok(())
    }

    /// Binds the node's first output to a runtime value (an alias or a node's output).
    pub fn bind_out(&mut self, ctx: &NodeCtx<'_>, v: ValueId) -> Result<()> {
        let out = ctx.output()?;
        self.bind(ctx, out, Slot::Runtime(v))
    }

    /// Binds the node's first output to a folded constant (already charged).
    pub fn bind_const(&mut self, ctx: &NodeCtx<'_>, c: ConstValue) -> Result<()> {
        let out = ctx.output()?;
        self.bind(ctx, out, Slot::Const(Arc::new(c)))
    }

    /// Reserves `n` elements of the folding budget; call before allocating them.
    pub fn charge(&mut self, n: usize) -> Result<()> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            Error::Limit(
                "constant folding would create more data than the model file justifies".into(),
            )
        })?;
        Ok(())
    }

    fn check_value(&self, v: ValueId) -> Result<ValueId> {
        let shape = self.graph.shape(v);
        if shape.len() > MAX_RANK
            || checked_numel(shape)? > MAX_VALUE_ELEMS
            || shape.iter().any(|&d| d > MAX_VALUE_ELEMS)
        {
            return Err(Error::Limit(format!(
                "value '{}' of shape {shape:?} exceeds {MAX_VALUE_ELEMS} elements or rank {MAX_RANK}",
                self.graph.values[v].name
            )));
        }
        Ok(v)
    }

    /// Appends an IR node (shape inferred) whose output gets `out_name`.
    pub fn emit(
        &mut self,
        node_name: String,
        op: Op,
        inputs: Vec<ValueId>,
        out_name: String,
    ) -> Result<ValueId> {
        let v = self.graph.add_node(node_name, op, inputs, out_name)?;
        self.check_value(v)
    }

    /// Appends an IR node whose output shape is stated.
    pub fn emit_shaped(
        &mut self,
        node_name: String,
        op: Op,
        inputs: Vec<ValueId>,
        out_name: String,
        shape: Vec<usize>,
    ) -> Result<ValueId> {
        if shape.len() > MAX_RANK
            || checked_numel(&shape)? > MAX_VALUE_ELEMS
            || shape.iter().any(|&d| d > MAX_VALUE_ELEMS)
        {
            return Err(Error::Limit(format!(
                "node {node_name}: output shape {shape:?} is too large"
            )));
        }
        let v = self
            .graph
            .add_node_with_shape(node_name, op, inputs, out_name, shape)?;
        self.check_value(v)
    }

    /// Emits the node's one IR node and binds its output.
    pub fn emit_out(&mut self, ctx: &NodeCtx<'_>, op: Op, inputs: Vec<ValueId>) -> Result<()> {
        let out = ctx.output()?.to_string();
        let v = self.emit(ctx.name.clone(), op, inputs, out)?;
        self.bind_out(ctx, v)
    }

    /// Emits a Reshape of `x` to `shape` (or aliases when the shape is unchanged).
    pub fn reshape(
        &mut self,
        node_name: String,
        x: ValueId,
        out_name: String,
        shape: Vec<usize>,
    ) -> Result<ValueId> {
        if self.graph.shape(x) == shape.as_slice() {
            return Ok(x);
        }
        self.emit_shaped(node_name, Op::Reshape, vec![x], out_name, shape)
    }
}

/// Sizes for a graph input's symbolic dimensions: those of the caller's
/// input at the same positions, when it has the graph input's rank; without
/// one, a symbolic batch is 1 and any other symbolic dimension is refused.
fn value_info_shape(vi: &ValueInfoProto, fill: &[usize]) -> Result<(String, Vec<usize>)> {
    let name = vi.name.clone().unwrap_or_default();
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tt)) => tt,
        _ => {
            return Err(Error::Unsupported(format!(
                "graph input '{name}' is not a tensor"
            )));
        }
    };
    let et = tt.elem_type.unwrap_or(0);
    // A float16 or float64 model runs in float32, as its weights are read:
    // the caller feeds float32, and Casts between float types are no-ops.
    let floats = [
        DataType::Float,
        DataType::Float16,
        DataType::Bfloat16,
        DataType::Double,
    ];
    if !floats.iter().any(|&d| et == d as i32) {
        let tn = DataType::try_from(et).map_or("unknown", |d| d.as_str_name());
        return Err(Error::Unsupported(format!(
            "graph input '{name}' has element type {tn}; only floating-point inputs are supported"
        )));
    }
    let dims = tt
        .shape
        .as_ref()
        .ok_or_else(|| Error::Unsupported(format!("graph input '{name}' has no shape")))?;
    if dims.dim.len() > MAX_RANK {
        return Err(Error::Limit(format!(
            "graph input '{name}' has rank > {MAX_RANK}"
        )));
    }
    let mut shape = Vec::with_capacity(dims.dim.len());
    for (i, d) in dims.dim.iter().enumerate() {
        use super::proto::tensor_shape_proto::dimension::Value as D;
        let v = match &d.value {
            Some(D::DimValue(v)) if (0..=MAX_DIM).contains(v) => *v as usize,
            Some(D::DimValue(v)) => {
                return Err(Error::Malformed(format!(
                    "graph input '{name}': dimension {i} is {v}"
                )));
            }
            _ if fill.len() == dims.dim.len() => match fill[i] {
                0 => {
                    return Err(Error::InvalidInput(format!(
                        "graph input '{name}': dimension {i} would be 0 from the input's shape {fill:?}"
                    )));
                }
                v if i64::try_from(v).map_or(true, |v| v > MAX_DIM) => {
                    return Err(Error::Limit(format!(
                        "graph input '{name}': dimension {i} of {v} is too large"
                    )));
                }
                v => v,
            },
            _ if i == 0 => 1,
            _ if !fill.is_empty() => {
                // An input of another rank: say what the model declares.
                return Err(Error::InvalidInput(format!(
                    "graph input '{name}' is {} (rank {}); the input given is {fill:?} (rank {})",
                    declared(dims),
                    dims.dim.len(),
                    fill.len()
                )));
            }
            Some(D::DimParam(p)) => {
                return Err(Error::Unsupported(format!(
                    "graph input '{name}' is {}: dimension {i} is symbolic ('{p}') and no input of rank {} gives its size",
                    declared(dims),
                    dims.dim.len()
                )));
            }
            None => {
                return Err(Error::Unsupported(format!(
                    "graph input '{name}' is {}: dimension {i} has no size and no input of rank {} gives it",
                    declared(dims),
                    dims.dim.len()
                )));
            }
        };
        shape.push(v);
    }
    if checked_numel(&shape)? > MAX_VALUE_ELEMS {
        return Err(Error::Limit(format!(
            "graph input '{name}' of shape {shape:?} is too large"
        )));
    }
    Ok((name, shape))
}

/// Declared static output dims (None for symbolic ones), when the file states them.
fn declared_output_dims(vi: &ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use super::proto::tensor_shape_proto::dimension::Value as D;
    match vi.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(tt) => Some(
            tt.shape
                .as_ref()?
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(D::DimValue(v)) => Some(v),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

fn default_opset(model: &ModelProto) -> Result<i64> {
    let opset = model
        .opset_import
        .iter()
        .filter(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .filter_map(|o| o.version)
        .max()
        .ok_or_else(|| Error::Malformed("model imports no default-domain opset".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(Error::Unsupported(format!(
            "opset {opset}; tessera imports opsets {MIN_OPSET} to {MAX_OPSET}"
        )));
    }
    Ok(opset)
}

/// Builds the IR graph of a decoded model. `file_len` sizes the folding budget.
/// Symbolic dimensions of the graph inputs are sized from `fill` (see
/// [`value_info_shape`]).
pub(crate) fn import(model: &ModelProto, file_len: usize, fill: &[usize]) -> Result<Graph> {
    let ir_version = model
        .ir_version
        .ok_or_else(|| Error::Malformed("no ir_version: not an ONNX model".into()))?;
    if ir_version < 3 {
        return Err(Error::Unsupported(format!(
            "IR version {ir_version}; tessera imports IR version 3 and later"
        )));
    }
    let opset = default_opset(model)?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Malformed("model has no graph".into()))?;
    if !g.sparse_initializer.is_empty() {
        return Err(Error::Unsupported("sparse initializers".into()));
    }
    let mut imp = Importer {
        graph: Graph::default(),
        opset,
        env: HashMap::new(),
        materialized: HashMap::new(),
        budget: file_len.saturating_mul(4).saturating_add(1 << 16),
        read: g
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(g.output.iter().filter_map(|o| o.name.clone()))
            .filter(|n| !n.is_empty())
            .collect(),
    };
    for init in &g.initializer {
        let name = init
            .name
            .clone()
            .ok_or_else(|| Error::Malformed("initializer without a name".into()))?;
        let c = decode_tensor(init)?;
        if imp
            .env
            .insert(name.clone(), Slot::Const(Arc::new(c)))
            .is_some()
        {
            return Err(Error::Malformed(format!(
                "initializer '{name}' is defined twice"
            )));
        }
    }
    for vi in &g.input {
        let name = vi.name.as_deref().unwrap_or_default();
        // Old exporters list every initializer as an input too: it is a constant.
        if imp.env.contains_key(name) {
            continue;
        }
        let (name, shape) = value_info_shape(vi, fill)?;
        let v = imp.graph.add_value(name.clone(), shape);
        imp.graph.inputs.push(v);
        imp.env.insert(name, Slot::Runtime(v));
    }
    for (i, node) in g.node.iter().enumerate() {
        let ctx = NodeCtx::new(node, i);
        match node.domain.as_deref() {
            None | Some("") | Some("ai.onnx") => {}
            Some(d) => {
                return Err(Error::Unsupported(format!(
                    "op '{}' of domain '{d}' ({})",
                    ctx.op,
                    ctx.who()
                )));
            }
        }
        import_node(&mut imp, &ctx).map_err(|e| ctx.own_error(e))?;
    }
    for vi in &g.output {
        let name = vi.name.as_deref().unwrap_or_default();
        let v = match imp.env.get(name).cloned() {
            Some(Slot::Runtime(v)) => v,
            Some(Slot::Const(c)) => imp.materialize(name, &c)?,
            None => {
                return Err(Error::Malformed(format!(
                    "graph output '{name}' is never produced"
                )));
            }
        };
        // An output that is another tensor under a new name (an Identity,
        // which import resolves to its input) is told by the model's name
        // for it: errors and listings name what the model declares.
        let current = imp.graph.values[v].name.as_str();
        if current != name
            && !imp.graph.inputs.contains(&v)
            && !imp.graph.outputs.contains(&v)
            && !g.output.iter().any(|o| o.name.as_deref() == Some(current))
        {
            imp.graph.values[v].name = name.to_string();
        }
        if let Some(dims) = declared_output_dims(vi) {
            let shape = imp.graph.shape(v);
            let fits = dims.len() == shape.len()
                && dims
                    .iter()
                    .zip(shape)
                    .all(|(d, &s)| d.is_none_or(|d| d == s as i64));
            // A declared rank-0 output with an inferred shape is an exporter
            // leaving the shape out, not a mismatch. Any other mismatch is
            // reported but not refused, as onnxruntime does: the shapes the
            // ops compute are the ones that count, and annotations written
            // by `onnx.shape_inference` can be wrong (a MaxPool with
            // ceil_mode whose last window would start in the padding is
            // annotated one row too tall).
            if !fits && !dims.is_empty() {
                warn_once(format!(
                    "graph output '{name}' is declared {dims:?} but computes {shape:?}; using the computed shape"
                ));
            }
        }
        imp.graph.outputs.push(v);
    }
    if imp.graph.outputs.is_empty() {
        return Err(Error::Malformed("graph has no outputs".into()));
    }
    let mut graph = imp.graph;
    graph.prune();
    graph.validate()?;
    Ok(graph)
}

/// Maps one ONNX node into the IR (or folds it).
fn import_node(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<()> {
    match ctx.op {
        "Conv" => ops_conv::conv(imp, ctx),
        "ConvTranspose" => ops_conv::conv_transpose(imp, ctx),
        "MaxPool" | "AveragePool" => ops_conv::pool(imp, ctx),
        "GlobalAveragePool" | "GlobalMaxPool" => ops_conv::global_pool(imp, ctx),
        "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceL2" => {
            ops_conv::reduce(imp, ctx)
        }
        "ArgMax" | "ArgMin" => ops_conv::arg(imp, ctx),
        "Gemm" => ops_math::gemm(imp, ctx),
        "MatMul" => ops_math::matmul(imp, ctx),
        "Relu" | "LeakyRelu" | "Sigmoid" | "Tanh" | "HardSigmoid" | "HardSwish" | "Clip"
        | "PRelu" | "Elu" | "Selu" | "Softplus" | "Erf" | "Gelu" | "Mish" | "Abs" | "Neg"
        | "Exp" | "Log" | "Sqrt" | "Reciprocal" => ops_math::activation(imp, ctx),
        "BatchNormalization" => ops_math::batch_norm(imp, ctx),
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Sum" | "Mean" => {
            ops_math::binary(imp, ctx)
        }
        "Pow" => ops_math::pow(imp, ctx),
        "Floor" | "Ceil" | "Round" | "Not" => ops_logic::unary(imp, ctx),
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Xor"
        | "Mod" => ops_logic::binary(imp, ctx),
        "Where" => ops_logic::where_(imp, ctx),
        "Expand" => ops_logic::expand(imp, ctx),
        "Tile" => ops_logic::tile(imp, ctx),
        "Softmax" => ops_math::softmax(imp, ctx, false),
        "LogSoftmax" => ops_math::softmax(imp, ctx, true),
        "LRN" => ops_math::lrn(imp, ctx),
        "GroupNormalization" => ops_math::group_norm(imp, ctx),
        "InstanceNormalization" => ops_math::instance_norm(imp, ctx),
        "LayerNormalization" => ops_math::layer_norm(imp, ctx),
        "Dropout" | "Identity" => ops_shape::identity(imp, ctx),
        "Pad" => ops_math::pad(imp, ctx),
        "Resize" | "Upsample" => ops_math::resize(imp, ctx),
        "DepthToSpace" => ops_math::depth_to_space(imp, ctx),
        "SpaceToDepth" => ops_math::space_to_depth(imp, ctx),
        "Constant" => ops_shape::constant(imp, ctx),
        "Shape" => ops_shape::shape(imp, ctx),
        "Gather" => ops_shape::gather(imp, ctx),
        "Cast" => ops_shape::cast(imp, ctx),
        "Slice" => ops_shape::slice(imp, ctx),
        "Split" => ops_shape::split(imp, ctx),
        "ConstantOfShape" => ops_shape::constant_of_shape(imp, ctx),
        "Range" => ops_shape::range(imp, ctx),
        "Concat" => ops_shape::concat(imp, ctx),
        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => ops_shape::reshape_like(imp, ctx),
        "Transpose" => ops_shape::transpose(imp, ctx),
        _ => Err(Error::Unsupported(format!(
            "op '{}' ({})",
            ctx.op,
            ctx.who()
        ))),
    }
}

/// A graph input's declared shape as the model states it: `[N, 3, H, W]`
/// with symbolic dimensions by name and unknown ones as `?`.
fn declared(dims: &super::proto::TensorShapeProto) -> String {
    use super::proto::tensor_shape_proto::dimension::Value as D;
    let parts: Vec<String> = dims
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(D::DimValue(v)) => v.to_string(),
            Some(D::DimParam(p)) if !p.is_empty() => p.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Logs `message` as a warning the first time this process imports a
/// model that earns it: `tessera run` imports the model twice (to check
/// the input, then for the coordinator), and said it twice.
fn warn_once(message: String) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SAID: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let said = SAID.get_or_init(Default::default);
    let first = said.lock().map_or(true, |mut s| s.insert(message.clone()));
    if first {
        tracing::warn!("{message}");
    }
}
