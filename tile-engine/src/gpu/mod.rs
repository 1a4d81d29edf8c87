//! The wgpu executor: adapter choice, pipelines and buffer pools, fused blocks in one submission, autotuned kernel choices.
//!
//! Every IR op runs as a WGSL kernel from `shaders/`; a graph (a fused block)
//! is encoded as one compute pass and submitted once: only the graph inputs
//! are uploaded and only the graph outputs read back. Weights are uploaded
//! once per model. Kernel choices are made per layer (node name + op
//! parameters, never the spatial extent), so a tile's copy of a graph runs
//! the same kernels with the same accumulation order as the whole graph.

mod autotune;
mod context;
mod kernels;
mod lower;
mod resources;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use autotune::default_cache_path;
pub use context::GpuContext;
pub use kernels::{PipelineKey, Shader};
pub use lower::{ConvChoice, ConvVariant};

use kernels::{Pipelines, lock};
use lower::{Buf, CropView, Dispatch, Lowerer, layer_key};
use resources::{BufferPool, Uploader, WeightCache};

use crate::Executor;
use crate::error::{Error, Result};
use crate::ir::{Graph, Node, Op, ValueId};
use crate::tensor::Tensor;

/// How to open the GPU executor.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Substring of the adapter name (else `WGPU_ADAPTER_NAME`, else the default adapter).
    pub adapter: Option<String>,
    /// Backends as a comma list, e.g. "vulkan" or "gl" (else `WGPU_BACKEND`, else all).
    pub backend: Option<String>,
    /// Use the default kernel per layer instead of timing candidates.
    pub no_autotune: bool,
    /// Autotune cache file (else [`default_cache_path`]).
    pub cache_path: Option<PathBuf>,
}

struct State {
    pool: BufferPool,
    weights: WeightCache,
    tuner: autotune::Autotuner,
    /// Whether this executor has said it is tuning (a first run can pause for seconds).
    told_tuning: bool,
}

/// Runs graphs on one GPU adapter through wgpu.
pub struct GpuExecutor {
    ctx: GpuContext,
    pipelines: Pipelines,
    dummy: wgpu::Buffer,
    dummy_texture: wgpu::TextureView,
    options: GpuOptions,
    state: Mutex<State>,
}

impl GpuExecutor {
    /// Opens the adapter chosen by `options` and prepares the kernel layout.
    /// Fails (never falls back to the CPU) when no adapter is found.
    pub fn new(options: GpuOptions) -> Result<Self> {
        let ctx = GpuContext::new(options.adapter.as_deref(), options.backend.as_deref())?;
        let pipelines = Pipelines::new(&ctx.device);
        let dummy = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tessera unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let dummy_texture = ctx
            .device
            .create_texture(&wgpu::TextureDescriptor {
                label: Some("tessera unused texture"),
                size: wgpu::Extent3d {
                    width: 1,
                    height: 1,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::TEXTURE_BINDING,
                view_formats: &[],
            })
            .create_view(&wgpu::TextureViewDescriptor::default());
        let path = if options.no_autotune {
            None
        } else {
            Some(
                options
                    .cache_path
                    .clone()
                    .unwrap_or_else(default_cache_path),
            )
        };
        let tuner = autotune::Autotuner::new(path, ctx.describe());
        Ok(Self {
            ctx,
            pipelines,
            dummy,
            dummy_texture,
            options,
            state: Mutex::new(State {
                pool: BufferPool::default(),
                weights: WeightCache::default(),
                tuner,
                told_tuning: false,
            }),
        })
    }

    /// The adapter: "name (backend, driver driver_info)".
    pub fn adapter_info(&self) -> String {
        self.ctx.describe()
    }

    /// The device context (for benchmarks and tests that drive kernels directly).
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Number of pipelines compiled so far.
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.compiled()
    }

    /// Number of weight buffers uploaded so far (each once per model).
    pub fn weights_uploaded(&self) -> usize {
        lock(&self.state).map_or(0, |s| s.weights.len())
    }

    /// The kernel choice this executor uses for a conv node (tuning it now if needed).
    pub fn conv_choice(&self, graph: &Graph, node: &Node) -> Result<Option<ConvChoice>> {
        let mut st = lock(&self.state)?;
        self.choose(&mut st, graph, node)
    }

    /// Runs `graph` with every conv forced to `conv` (where it applies), for benchmarks.
    pub fn run_with(
        &self,
        graph: &Graph,
        inputs: &[Tensor],
        conv: Option<ConvChoice>,
    ) -> Result<Vec<Tensor>> {
        self.execute(graph, inputs, conv)
    }

    /// GPU time of node `node` of `graph` alone, averaged over `reps`
    /// dispatches in one submission (after one warm-up), with `conv` forcing
    /// a conv kernel. Inputs are whatever the pooled buffers hold.
    pub fn time_node(
        &self,
        graph: &Graph,
        node: usize,
        conv: Option<ConvChoice>,
        reps: u32,
    ) -> Result<Duration> {
        let mut st = lock(&self.state)?;
        let n = graph
            .nodes
            .get(node)
            .ok_or_else(|| Error::InvalidInput(format!("no node {node}")))?;
        let choice = match conv {
            Some(c) => Some(c),
            None => self.choose(&mut st, graph, n)?,
        };
        self.time_one(&mut st, graph, n, choice, reps)
    }

    fn choose(&self, st: &mut State, graph: &Graph, node: &Node) -> Result<Option<ConvChoice>> {
        let Op::Conv(c) = &node.op else {
            return Ok(None);
        };
        if self.options.no_autotune {
            return Ok(Some(ConvChoice::default_for(c)));
        }
        let key = layer_key(graph, node);
        if let Some(choice) = st.tuner.get(&key) {
            return Ok(Some(choice));
        }
        if !st.told_tuning {
            st.told_tuning = true;
            let kept = st
                .tuner
                .path()
                .map_or_else(|| "memory".to_string(), |p| p.display().to_string());
            tracing::warn!(
                "timing kernel candidates for each new conv layer shape on {} (a first run can take seconds; choices are kept in {kept})",
                self.ctx.info.name,
            );
        }
        // Round robin over the candidates, each keeping its fastest time, so
        // a burst of load from another process on a shared machine has to
        // hit the same candidate in every round to decide the choice; odd
        // rounds go in reverse order, so a burst at a fixed point of a round
        // does not keep landing on the same candidate. After the first round
        // only candidates within PRUNE of the best go on (the naive kernel,
        // often 10x slower, is timed once), which pays for the extra rounds.
        const ROUNDS: usize = 3;
        const PRUNE: f64 = 1.5;
        let cands = ConvChoice::candidates(c);
        let mut times = vec![Duration::MAX; cands.len()];
        for round in 0..ROUNDS {
            let best_so_far = times.iter().copied().min().unwrap_or(Duration::MAX);
            let mut order: Vec<usize> = (0..cands.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                if round > 0 && times[i].as_secs_f64() > PRUNE * best_so_far.as_secs_f64() {
                    continue;
                }
                let t = self.time_one(st, graph, node, Some(cands[i]), 2)?;
                tracing::debug!("autotune {key}: {:?} {t:?}", cands[i]);
                times[i] = times[i].min(t);
            }
        }
        let mut best: Option<(Duration, ConvChoice)> = None;
        for (&cand, &t) in cands.iter().zip(&times) {
            if best.is_none_or(|(bt, _)| t < bt) {
                best = Some((t, cand));
            }
        }
        let choice = best.map_or_else(|| ConvChoice::default_for(c), |(_, ch)| ch);
        st.tuner.put(key, choice);
        Ok(Some(choice))
    }

    fn time_one(
        &self,
        st: &mut State,
        graph: &Graph,
        node: &Node,
        conv: Option<ConvChoice>,
        reps: u32,
    ) -> Result<Duration> {
        let dispatches = self.lower_node(st, graph, node, conv, &StoragePlan::default())?;
        let mut storage = HashMap::new();
        let mut result = Ok(Duration::ZERO);
        for &v in node.inputs.iter().chain([&node.output]) {
            if graph.constants.contains_key(&v) || storage.contains_key(&v) {
                continue;
            }
            match st
                .pool
                .take(&self.ctx.device, value_bytes(graph, v)?, self.max_binding())
            {
                Ok(b) => {
                    storage.insert(v, b);
                }
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() {
            let roots: HashMap<ValueId, ValueId> = HashMap::new();
            result = (|| {
                let warm = self.encode(&dispatches, &storage, &roots, 1)?;
                self.ctx.queue.submit([warm]);
                self.ctx.wait()?;
                let enc = self.encode(&dispatches, &storage, &roots, reps.max(1))?;
                let t0 = Instant::now();
                self.ctx.queue.submit([enc]);
                self.ctx.wait()?;
                Ok(t0.elapsed() / reps.max(1))
            })();
        }
        for (_, b) in storage {
            st.pool.give(b);
        }
        result
    }

    fn max_binding(&self) -> u64 {
        self.ctx
            .limits
            .max_storage_buffer_binding_size
            .min(self.ctx.limits.max_buffer_size)
    }

    fn lower_node(
        &self,
        st: &mut State,
        graph: &Graph,
        node: &Node,
        conv: Option<ConvChoice>,
        plan: &StoragePlan,
    ) -> Result<Vec<Dispatch>> {
        let mut lowerer = Lowerer {
            graph,
            up: Uploader {
                device: &self.ctx.device,
                queue: &self.ctx.queue,
                max: self.max_binding(),
                max_texture: self.ctx.limits.max_texture_dimension_2d,
            },
            weights: &mut st.weights,
            alias: &plan.alias,
            views: &plan.views,
        };
        let ds = lowerer.lower(node, conv).map_err(|e| match e {
            Error::Unsupported(m) | Error::Shape(m) => {
                Error::Unsupported(format!("node {} ({}): {m}", node.name, node.op.name()))
            }
            e => e,
        })?;
        // Compile now, so a kernel that fails names its node.
        for d in &ds {
            self.pipelines
                .get(&self.ctx.device, &d.key)
                .map_err(|e| Error::Gpu(format!("node {}: {e}", node.name)))?;
        }
        Ok(ds)
    }

    /// Encodes `dispatches` (`reps` times) as one compute pass.
    fn encode(
        &self,
        dispatches: &[Dispatch],
        storage: &HashMap<ValueId, Arc<wgpu::Buffer>>,
        roots: &HashMap<ValueId, ValueId>,
        reps: u32,
    ) -> Result<wgpu::CommandBuffer> {
        let device = &self.ctx.device;
        let align = u64::from(self.ctx.limits.min_uniform_buffer_offset_alignment).max(16);
        let mut params: Vec<u8> = Vec::new();
        let mut offsets = Vec::with_capacity(dispatches.len());
        for d in dispatches {
            offsets.push(params.len() as u64);
            params.extend_from_slice(bytemuck::cast_slice(&d.params));
            params.resize((params.len() as u64).next_multiple_of(align) as usize, 0);
        }
        let params_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tessera params"),
            size: (params.len() as u64).max(align),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.ctx.queue.write_buffer(&params_buf, 0, &params);
        let mut groups = Vec::with_capacity(dispatches.len());
        for (d, &off) in dispatches.iter().zip(&offsets) {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params_buf,
                    offset: off,
                    size: wgpu::BufferSize::new(d.params.len() as u64 * 4),
                }),
            }];
            let mut texture = &self.dummy_texture;
            for (i, b) in d.bufs.iter().enumerate() {
                if let Buf::Tex(view) = b {
                    texture = view;
                }
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(
                        self.binding(b, storage, roots)?.as_entire_buffer_binding(),
                    ),
                });
            }
            entries.push(wgpu::BindGroupEntry {
                binding: kernels::WEIGHT_TEXTURE_BINDING,
                resource: wgpu::BindingResource::TextureView(texture),
            });
            groups.push(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &self.pipelines.bind_group_layout,
                entries: &entries,
            }));
        }
        let mut pipes = Vec::with_capacity(dispatches.len());
        for d in dispatches {
            pipes.push(self.pipelines.get(device, &d.key)?);
        }
        // Copies of long contiguous runs between two distinct buffers are
        // recorded as buffer copies, between compute passes.
        let mut copies = Vec::with_capacity(dispatches.len());
        for d in dispatches {
            let runs = match (d.copy_runs(), &d.bufs[0], &d.bufs[5]) {
                (Some(runs), src, dst) => {
                    let (src, dst) = (
                        self.binding(src, storage, roots)?,
                        self.binding(dst, storage, roots)?,
                    );
                    (src != dst).then_some((runs, src, dst))
                }
                _ => None,
            };
            copies.push(runs);
        }
        let max_dim = self.ctx.limits.max_compute_workgroups_per_dimension.max(1);
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("tessera block"),
        });
        {
            let mut pass: Option<wgpu::ComputePass<'static>> = None;
            for _ in 0..reps {
                for (((d, g), p), copy) in dispatches.iter().zip(&groups).zip(&pipes).zip(&copies) {
                    if let Some((runs, src, dst)) = copy {
                        drop(pass.take());
                        for &[s, t, n] in runs {
                            enc.copy_buffer_to_buffer(
                                src,
                                s as u64 * 4,
                                dst,
                                t as u64 * 4,
                                n as u64 * 4,
                            );
                        }
                        continue;
                    }
                    let pass = pass.get_or_insert_with(|| {
                        enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some("tessera block"),
                            timestamp_writes: None,
                        })
                        .forget_lifetime()
                    });
                    let wg = d.key.workgroup_size().max(1);
                    let n = d.threads.div_ceil(wg);
                    if n == 0 {
                        continue;
                    }
                    let x = n.min(max_dim);
                    let y = n.div_ceil(x);
                    if y > max_dim {
                        return Err(Error::Limit(format!(
                            "{} invocations exceed the dispatch limits",
                            d.threads
                        )));
                    }
                    pass.set_pipeline(p);
                    pass.set_bind_group(0, g, &[]);
                    pass.dispatch_workgroups(x, y, 1);
                }
            }
        }
        Ok(enc.finish())
    }

    fn binding<'a>(
        &'a self,
        b: &'a Buf,
        storage: &'a HashMap<ValueId, Arc<wgpu::Buffer>>,
        roots: &HashMap<ValueId, ValueId>,
    ) -> Result<&'a wgpu::Buffer> {
        Ok(match b {
            Buf::None | Buf::Tex(_) => &self.dummy,
            Buf::Gpu(g) => g,
            Buf::Value(v) => {
                let r = roots.get(v).copied().unwrap_or(*v);
                storage
                    .get(&r)
                    .ok_or_else(|| Error::Gpu(format!("value {v} has no buffer")))?
            }
        })
    }

    fn execute(
        &self,
        graph: &Graph,
        inputs: &[Tensor],
        force: Option<ConvChoice>,
    ) -> Result<Vec<Tensor>> {
        graph.validate()?;
        if inputs.len() != graph.inputs.len() {
            return Err(Error::InvalidInput(format!(
                "graph takes {} inputs, got {}",
                graph.inputs.len(),
                inputs.len()
            )));
        }
        for (t, &v) in inputs.iter().zip(&graph.inputs) {
            if t.shape() != graph.shape(v) {
                return Err(Error::InvalidInput(format!(
                    "input {} has shape {:?}, the graph expects {:?}",
                    graph.values[v].name,
                    t.shape(),
                    graph.shape(v)
                )));
            }
        }
        let mut st = lock(&self.state)?;
        let plan = plan_storage(graph);
        let (alias, roots) = (&plan.alias, &plan.roots);
        let mut dispatches = Vec::new();
        for node in &graph.nodes {
            if roots.contains_key(&node.output) || plan.views.contains_key(&node.output) {
                continue; // a reshape sharing its input's buffer, or a crop read in place
            }
            let choice = match (&node.op, force) {
                (Op::Conv(c), Some(f)) if f.applies(c) => Some(f),
                _ => self.choose(&mut st, graph, node)?,
            };
            dispatches.extend(self.lower_node(&mut st, graph, node, choice, &plan)?);
        }
        // One buffer per storage root: graph inputs and node outputs that are neither aliased nor reshapes.
        let mut storage: HashMap<ValueId, Arc<wgpu::Buffer>> = HashMap::new();
        let mut result = (|| -> Result<Vec<Tensor>> {
            let max = self.max_binding();
            let needs: Vec<ValueId> = graph
                .inputs
                .iter()
                .copied()
                .chain(graph.nodes.iter().map(|n| n.output))
                .filter(|v| {
                    !alias.contains_key(v) && !roots.contains_key(v) && !plan.views.contains_key(v)
                })
                .collect();
            for v in needs {
                if let std::collections::hash_map::Entry::Vacant(e) = storage.entry(v) {
                    e.insert(
                        st.pool
                            .take(&self.ctx.device, value_bytes(graph, v)?, max)?,
                    );
                }
            }
            for (t, &v) in inputs.iter().zip(&graph.inputs) {
                if let Some(b) = storage.get(&v) {
                    self.ctx.queue.write_buffer(b, 0, t.as_bytes());
                }
            }
            let mut enc_list = vec![self.encode(&dispatches, &storage, roots, 1)?];
            let mut copy =
                self.ctx
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("tessera readback"),
                    });
            let mut staging = Vec::new();
            for &o in &graph.outputs {
                if graph.constants.contains_key(&o) {
                    staging.push(None);
                    continue;
                }
                let bytes = value_bytes(graph, o)?;
                let root = roots.get(&o).copied().unwrap_or(o);
                let src = storage
                    .get(&root)
                    .ok_or_else(|| Error::Gpu(format!("output {o} has no buffer")))?;
                let s = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tessera output"),
                    size: bytes.max(4),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if bytes > 0 {
                    copy.copy_buffer_to_buffer(src, 0, &s, 0, bytes);
                }
                staging.push(Some(s));
            }
            enc_list.push(copy.finish());
            // The whole block: one submission.
            self.ctx.queue.submit(enc_list);
            for s in staging.iter().flatten() {
                s.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            }
            self.ctx.wait()?;
            let mut outs = Vec::with_capacity(graph.outputs.len());
            for (&o, s) in graph.outputs.iter().zip(&staging) {
                let shape = graph.shape(o).to_vec();
                let Some(s) = s else {
                    let t = graph.constants.get(&o).map(|t| (**t).clone());
                    outs.push(t.ok_or_else(|| Error::Gpu("constant output missing".into()))?);
                    continue;
                };
                let n = crate::tensor::checked_numel(&shape)?;
                let data: Vec<f32> = {
                    let view = s
                        .slice(..)
                        .get_mapped_range()
                        .map_err(|e| Error::Gpu(format!("reading output back: {e}")))?;
                    bytemuck::cast_slice::<u8, f32>(&view[..n * 4]).to_vec()
                };
                s.unmap();
                outs.push(Tensor::new(shape, data)?);
            }
            Ok(outs)
        })();
        for (_, b) in storage.drain() {
            st.pool.give(b);
        }
        // The graph just run still holds its weights: only those of graphs
        // gone since are dropped.
        st.weights.purge_unused();
        if let Err(Error::Gpu(m)) = &mut result {
            m.insert_str(0, &format!("{}: ", self.ctx.info.name));
        }
        result
    }
}

impl Executor for GpuExecutor {
    fn name(&self) -> String {
        self.ctx.info.name.clone()
    }

    fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn run(&self, graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.execute(graph, inputs, None)
    }
}

fn value_bytes(graph: &Graph, v: ValueId) -> Result<u64> {
    let n = crate::tensor::checked_numel(graph.shape(v))?;
    (n as u64)
        .checked_mul(4)
        .ok_or_else(|| Error::Limit(format!("value {v} too large")))
}

/// Decides which values share storage: producers written in place into a
/// channel-axis Concat's output (value -> (concat output, channel offset)),
/// and Reshapes that reuse their input's buffer (value -> root value).
fn plan_storage(graph: &Graph) -> StoragePlan {
    let producers = graph.producers();
    let consumers = graph.consumers();
    let mut alias = HashMap::new();
    for (ni, node) in graph.nodes.iter().enumerate() {
        let Op::Concat { axis: 1 } = node.op else {
            continue;
        };
        if graph.shape(node.output).len() != 4 {
            continue;
        }
        let mut offset = 0;
        for &v in &node.inputs {
            let here = offset;
            offset += graph.shape(v).get(1).copied().unwrap_or(0);
            let in_place = producers[v].is_some_and(|p| {
                matches!(
                    graph.nodes[p].op,
                    Op::Conv(_)
                        | Op::ConvTranspose(_)
                        | Op::Pool(_)
                        | Op::GlobalPool(_)
                        | Op::ChannelReduce(_)
                        | Op::Crop { .. }
                ) && graph.shape(v).len() == 4
            }) && consumers[v] == [ni]
                && node.inputs.iter().filter(|&&x| x == v).count() == 1
                && !graph.outputs.contains(&v);
            if in_place {
                alias.insert(v, (node.output, here));
            }
        }
    }
    let mut roots: HashMap<ValueId, ValueId> = HashMap::new();
    for node in &graph.nodes {
        if let (Op::Reshape, Some(&src)) = (&node.op, node.inputs.first())
            && !graph.constants.contains_key(&src)
            && !alias.contains_key(&src)
        {
            let root = roots.get(&src).copied().unwrap_or(src);
            roots.insert(node.output, root);
        }
    }
    // A tile's crop whose only readers are binary ops is never copied: they
    // read the cropped window where it lies.
    let mut views = HashMap::new();
    for (ni, node) in graph.nodes.iter().enumerate() {
        let (Op::Crop { offset }, Some(&src)) = (&node.op, node.inputs.first()) else {
            continue;
        };
        let src_shape = graph.shape(src);
        let readers = &consumers[node.output];
        let virtual_crop = src_shape.len() == 4
            && !graph.constants.contains_key(&src)
            && !alias.contains_key(&src)
            && !alias.contains_key(&node.output)
            && !graph.outputs.contains(&node.output)
            && !readers.is_empty()
            && readers
                .iter()
                .all(|&c| c != ni && matches!(graph.nodes[c].op, Op::Binary { .. }));
        if virtual_crop {
            views.insert(
                node.output,
                CropView {
                    src,
                    base: offset[0] * src_shape[3] + offset[1],
                    src_shape: src_shape.to_vec(),
                },
            );
        }
    }
    StoragePlan {
        alias,
        roots,
        views,
    }
}

/// Where each value lives on the GPU during one run.
#[derive(Default)]
struct StoragePlan {
    /// Values written in place into a Concat's output.
    alias: HashMap<ValueId, (ValueId, usize)>,
    /// Reshapes sharing their input's buffer: value -> root value.
    roots: HashMap<ValueId, ValueId>,
    /// Crops read in place by their consumers (no buffer, no dispatch).
    views: HashMap<ValueId, CropView>,
}
