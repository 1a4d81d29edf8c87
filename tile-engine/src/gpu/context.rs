//! Adapter choice (like wgpu's CI: `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`, or an
//! explicit name), the explicit limits request, and the device + queue.

use crate::error::{Error, Result};

/// Storage buffers one kernel binds: src, weights, bias, slopes, residual, dst.
pub(crate) const STORAGE_BINDINGS: u32 = 6;

/// The device and queue of one adapter, with the limits that were granted.
pub struct GpuContext {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// What the adapter reported about itself.
    pub info: wgpu::AdapterInfo,
    /// The limits requested (and granted).
    pub limits: wgpu::Limits,
}

impl GpuContext {
    /// Opens a device. `adapter` (else `WGPU_ADAPTER_NAME`) picks the first
    /// adapter whose name contains it, case-insensitively; `backend` (else
    /// `WGPU_BACKEND`) restricts the backends, as a comma list ("vulkan", "gl").
    pub fn new(adapter: Option<&str>, backend: Option<&str>) -> Result<Self> {
        pollster::block_on(Self::open(adapter, backend))
    }

    async fn open(adapter_name: Option<&str>, backend: Option<&str>) -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if let Some(b) = backend {
            let backends = wgpu::Backends::from_comma_list(b);
            if backends.is_empty() {
                return Err(Error::Gpu(format!(
                    "unknown backend {b:?} (expected vulkan, metal, dx12 or gl)"
                )));
            }
            desc.backends = backends;
        } else if let Ok(b) = std::env::var("WGPU_BACKEND")
            && !b.is_empty()
            && wgpu::Backends::from_comma_list(&b).is_empty()
        {
            // wgpu reads a misspelt variable as "no backend at all".
            return Err(Error::Gpu(format!(
                "WGPU_BACKEND={b:?} names no backend (expected vulkan, metal, dx12 or gl)"
            )));
        }
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let wanted = adapter_name
            .map(str::to_owned)
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.is_empty());
        let adapters = instance.enumerate_adapters(backends).await;
        let names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        let adapter = match &wanted {
            Some(w) => {
                let w = w.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&w))
                    .ok_or_else(|| {
                        Error::Gpu(format!(
                            "no adapter named like {w:?} among {names:?} (backends {backends:?})"
                        ))
                    })?
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    // Advice that fits: a backend chosen in the environment
                    // may be the one without a driver.
                    let hint = match std::env::var("WGPU_BACKEND") {
                        Ok(b) if !b.is_empty() => format!(
                            "WGPU_BACKEND={b} limits wgpu to those backends: unset it to let wgpu take any adapter (GL included), or install that backend's driver"
                        ),
                        _ => "Install a driver (e.g. mesa-vulkan-drivers for lavapipe) and set WGPU_BACKEND=vulkan".to_string(),
                    };
                    Error::Gpu(format!(
                        "no GPU adapter for backends {backends:?} ({e}); found {names:?}. {hint}"
                    ))
                })?,
        };
        let info = adapter.get_info();
        let limits = required_limits(&adapter.limits(), &info)?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tessera"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("request_device on {}: {e}", info.name)))?;
        Ok(Self {
            device,
            queue,
            info,
            limits,
        })
    }

    /// "name (backend, driver driver_info)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {} {})",
            self.info.name, self.info.backend, self.info.driver, self.info.driver_info
        )
    }

    /// Waits until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("poll: {e}")))
    }
}

/// The limits tessera asks for: the portable downlevel set, raised where the
/// kernels need more (six storage buffers per stage) and to the adapter's own
/// maximum for buffer sizes so large layers fit. Workgroup limits are capped
/// at what lavapipe grants (32 KiB, 1024 invocations) so tuned choices carry over.
fn required_limits(adapter: &wgpu::Limits, info: &wgpu::AdapterInfo) -> Result<wgpu::Limits> {
    if adapter.max_storage_buffers_per_shader_stage < STORAGE_BINDINGS {
        return Err(Error::Gpu(format!(
            "adapter {} offers {} storage buffers per shader stage; the kernels need {STORAGE_BINDINGS}",
            info.name, adapter.max_storage_buffers_per_shader_stage
        )));
    }
    let base = wgpu::Limits::downlevel_defaults();
    Ok(wgpu::Limits {
        max_storage_buffers_per_shader_stage: STORAGE_BINDINGS,
        max_storage_buffer_binding_size: adapter.max_storage_buffer_binding_size,
        max_buffer_size: adapter.max_buffer_size,
        max_compute_workgroup_storage_size: adapter.max_compute_workgroup_storage_size.min(32768),
        max_compute_invocations_per_workgroup: adapter
            .max_compute_invocations_per_workgroup
            .min(1024),
        max_compute_workgroup_size_x: adapter.max_compute_workgroup_size_x.min(1024),
        max_compute_workgroups_per_dimension: adapter.max_compute_workgroups_per_dimension,
        // Weight textures (see `lower::WEIGHT_TEXTURE_DIM`).
        max_texture_dimension_2d: adapter
            .max_texture_dimension_2d
            .min(crate::gpu::lower::WEIGHT_TEXTURE_DIM as u32)
            .max(base.max_texture_dimension_2d),
        ..base
    })
}
