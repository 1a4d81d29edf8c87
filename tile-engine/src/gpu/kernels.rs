//! The WGSL kernel files (loaded with `include_str!`, `common.wgsl`
//! prepended) and the pipeline cache: one pipeline per (file, entry point,
//! override constants), compiled once per executor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

const COMMON: &str = include_str!("../../../shaders/common.wgsl");

/// One kernel file in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shader {
    /// One output per invocation conv (baseline and fallback).
    ConvNaive,
    /// 4 output channels x 4 pixels register-blocked conv.
    ConvBlock,
    /// 8 output channels x 8 pixels register-blocked conv.
    ConvBlock8,
    /// Depthwise / grouped conv, 4 pixels per invocation.
    ConvDw,
    /// Transposed conv as a gather.
    ConvTranspose,
    /// Windowed and global pooling.
    Pool,
    /// Dense GEMV / GEMM.
    Dense,
    /// MatMul of runtime tensors.
    MatMul,
    /// Activation, affine, binary broadcast.
    Elementwise,
    /// Strided copies and padding.
    Copy,
    /// Softmax.
    Softmax,
    /// Local response normalisation.
    Lrn,
    /// Resize.
    Resize,
}

impl Shader {
    /// The kernel file's own text (without the common prelude).
    pub fn body(self) -> &'static str {
        match self {
            Shader::ConvNaive => include_str!("../../../shaders/conv_naive.wgsl"),
            Shader::ConvBlock => include_str!("../../../shaders/conv_block.wgsl"),
            Shader::ConvBlock8 => include_str!("../../../shaders/conv_block8.wgsl"),
            Shader::ConvDw => include_str!("../../../shaders/conv_dw.wgsl"),
            Shader::ConvTranspose => include_str!("../../../shaders/conv_transpose.wgsl"),
            Shader::Pool => include_str!("../../../shaders/pool.wgsl"),
            Shader::Dense => include_str!("../../../shaders/dense.wgsl"),
            Shader::MatMul => include_str!("../../../shaders/matmul.wgsl"),
            Shader::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Shader::Copy => include_str!("../../../shaders/copy.wgsl"),
            Shader::Softmax => include_str!("../../../shaders/softmax.wgsl"),
            Shader::Lrn => include_str!("../../../shaders/lrn.wgsl"),
            Shader::Resize => include_str!("../../../shaders/resize.wgsl"),
        }
    }

    /// The full module source: common prelude + kernel.
    pub fn source(self) -> String {
        format!("{COMMON}\n{}", self.body())
    }
}

/// Identifies one compiled pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineKey {
    /// The file.
    pub shader: Shader,
    /// The entry point.
    pub entry: &'static str,
    /// Override constants (bools as 0/1), sorted by name for a stable key.
    pub constants: Vec<(&'static str, u32)>,
}

impl PipelineKey {
    /// A key with the given constants (sorted).
    pub fn new(
        shader: Shader,
        entry: &'static str,
        mut constants: Vec<(&'static str, u32)>,
    ) -> Self {
        constants.sort_unstable();
        Self {
            shader,
            entry,
            constants,
        }
    }

    /// The workgroup size (the `WG` override, 64 by default).
    pub fn workgroup_size(&self) -> u32 {
        self.constants
            .iter()
            .find(|(k, _)| *k == "WG")
            .map_or(64, |(_, v)| *v)
    }
}

/// The binding of the weight texture in the shared layout.
pub const WEIGHT_TEXTURE_BINDING: u32 = 7;

/// Compiled pipelines and the one bind group layout they all share.
pub struct Pipelines {
    layout: wgpu::PipelineLayout,
    /// Binding 0 uniform, 1..=5 read-only storage, 6 read-write storage,
    /// 7 an unfilterable float texture (weights of the texture conv kernel).
    pub bind_group_layout: wgpu::BindGroupLayout,
    modules: Mutex<HashMap<Shader, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl Pipelines {
    /// Creates the shared layout; pipelines compile on first use.
    pub fn new(device: &wgpu::Device) -> Self {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        entries.extend((1..=5).map(|b| storage(b, true)));
        entries.push(storage(6, false));
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: WEIGHT_TEXTURE_BINDING,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        });
        let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("tessera kernels"),
            entries: &entries,
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("tessera kernels"),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        Self {
            layout,
            bind_group_layout,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    /// Number of pipelines compiled so far.
    pub fn compiled(&self) -> usize {
        self.pipelines.lock().map_or(0, |p| p.len())
    }

    /// The pipeline for `key`, compiling it on first use.
    pub fn get(
        &self,
        device: &wgpu::Device,
        key: &PipelineKey,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = lock(&self.pipelines)?.get(key) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = lock(&self.modules)?;
            modules
                .entry(key.shader)
                .or_insert_with(|| {
                    let source = key.shader.source();
                    Arc::new(device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&format!("{:?}", key.shader)),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    }))
                })
                .clone()
        };
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|(k, v)| (*k, f64::from(*v)))
            .collect();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry),
            layout: Some(&self.layout),
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("compiling {key:?}: {e}")));
        }
        let pipeline = Arc::new(pipeline);
        lock(&self.pipelines)?.insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::Gpu("a previous GPU call panicked; executor state is poisoned".into()))
}
