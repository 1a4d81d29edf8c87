//! GPU memory: a pool of feature-map buffers reused across runs (tiles of
//! one block come back with the same sizes), and the weight cache that
//! uploads each op's weights once per model.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Usage of every pooled buffer: kernels read and write it, inputs are
/// written into it, outputs are copied out of it.
const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// Free buffers by size class (a power of two, at least 256 bytes).
#[derive(Default)]
pub struct BufferPool {
    free: HashMap<u64, Vec<Arc<wgpu::Buffer>>>,
}

fn size_class(bytes: u64) -> u64 {
    bytes.max(256).next_power_of_two()
}

impl BufferPool {
    /// A buffer of at least `bytes`, reused when one of its class is free.
    pub fn take(
        &mut self,
        device: &wgpu::Device,
        bytes: u64,
        max: u64,
    ) -> Result<Arc<wgpu::Buffer>> {
        let class = size_class(bytes);
        if let Some(b) = self.free.get_mut(&class).and_then(Vec::pop) {
            return Ok(b);
        }
        // Above the largest class the device allows, allocate exactly.
        let size = if class <= max {
            class
        } else {
            bytes.max(16).next_multiple_of(16)
        };
        if size > max {
            return Err(Error::Limit(format!(
                "feature map of {bytes} bytes exceeds the adapter's storage binding limit of {max}"
            )));
        }
        Ok(Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tessera feature map"),
            size,
            usage: USAGE,
            mapped_at_creation: false,
        })))
    }

    /// Returns a buffer to the pool.
    pub fn give(&mut self, buffer: Arc<wgpu::Buffer>) {
        self.free.entry(buffer.size()).or_default().push(buffer);
    }
}

/// Keeps an uploaded weight's source alive, so its address stays a unique key.
enum Owner {
    Tensor(Arc<crate::tensor::Tensor>),
    Vec(Arc<Vec<f32>>),
    Pair(Arc<Vec<f32>>, Arc<Vec<f32>>),
}

/// Weights on the GPU, keyed by the address of the IR's shared weight
/// (a tile's copy of a graph shares its `Arc`s with the original) and the
/// packing applied.
#[derive(Default)]
pub struct WeightCache {
    map: HashMap<(usize, usize, &'static str), (Owner, Arc<wgpu::Buffer>)>,
    textures: HashMap<usize, (Owner, Arc<wgpu::TextureView>)>,
    /// Index tables derived from an op's shapes (no shared weight to key on), by content.
    tables: HashMap<Vec<u32>, Arc<wgpu::Buffer>>,
}

fn upload(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    data: &[f32],
    max: u64,
) -> Result<Arc<wgpu::Buffer>> {
    upload_bytes(device, queue, bytemuck::cast_slice(data), max)
}

fn upload_bytes(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    data: &[u8],
    max: u64,
) -> Result<Arc<wgpu::Buffer>> {
    let bytes = (data.len() as u64).max(16);
    if bytes > max {
        // Not a Limit: a finer grid shrinks feature maps, never weights.
        return Err(Error::Unsupported(format!(
            "weights of {bytes} bytes exceed the adapter's storage binding limit of {max} \
             (tiling does not shrink weights; run the model on the CPU executor)"
        )));
    }
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("tessera weights"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, data);
    Ok(Arc::new(buffer))
}

/// Everything a weight upload needs.
pub struct Uploader<'a> {
    /// Device.
    pub device: &'a wgpu::Device,
    /// Queue.
    pub queue: &'a wgpu::Queue,
    /// Largest storage binding.
    pub max: u64,
    /// Largest 2-D texture side.
    pub max_texture: u32,
}

impl Owner {
    /// Whether anything besides this cache still holds the weight.
    fn in_use(&self) -> bool {
        match self {
            Owner::Tensor(t) => Arc::strong_count(t) > 1,
            Owner::Vec(v) => Arc::strong_count(v) > 1,
            Owner::Pair(a, b) => Arc::strong_count(a) > 1 || Arc::strong_count(b) > 1,
        }
    }
}

impl WeightCache {
    /// Drops the GPU copies of weights no graph holds any more (a model a
    /// daemon evicted, a graph a caller dropped): keyed by address, they
    /// could never be hit again, and would hold GPU memory for good.
    pub fn purge_unused(&mut self) {
        self.map.retain(|_, (owner, _)| owner.in_use());
        self.textures.retain(|_, (owner, _)| owner.in_use());
    }

    /// Number of weight buffers held.
    pub fn len(&self) -> usize {
        self.map.len() + self.textures.len() + self.tables.len()
    }

    /// A tensor's values, packed by `pack` (named `packing`), uploaded once.
    pub fn tensor(
        &mut self,
        up: &Uploader<'_>,
        t: &Arc<crate::tensor::Tensor>,
        packing: &'static str,
        pack: impl FnOnce(&crate::tensor::Tensor) -> Vec<f32>,
    ) -> Result<Arc<wgpu::Buffer>> {
        let key = (Arc::as_ptr(t) as usize, 0, packing);
        if let Some((_, b)) = self.map.get(&key) {
            return Ok(b.clone());
        }
        let b = upload(up.device, up.queue, &pack(t), up.max)?;
        self.map.insert(key, (Owner::Tensor(t.clone()), b.clone()));
        Ok(b)
    }

    /// A tensor packed by `pack` into rows of `width` RGBA32F texels,
    /// uploaded once as a 2-D texture.
    pub fn texture(
        &mut self,
        up: &Uploader<'_>,
        t: &Arc<crate::tensor::Tensor>,
        width: usize,
        pack: impl FnOnce(&crate::tensor::Tensor) -> Vec<f32>,
    ) -> Result<Arc<wgpu::TextureView>> {
        let key = Arc::as_ptr(t) as usize;
        if let Some((_, v)) = self.textures.get(&key) {
            return Ok(v.clone());
        }
        let data = pack(t);
        let texels = width.max(1) * 4;
        let rows = data.len() / texels;
        let dim = |v: usize| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v >= 1 && v <= up.max_texture)
                .ok_or_else(|| {
                    Error::Unsupported(format!(
                        "a weight texture of {width} x {rows} texels exceeds the adapter's {} texel limit \
                         (tiling does not shrink weights; run the model on the CPU executor)",
                        up.max_texture
                    ))
                })
        };
        let size = wgpu::Extent3d {
            width: dim(width)?,
            height: dim(rows)?,
            depth_or_array_layers: 1,
        };
        if rows * texels != data.len() {
            return Err(Error::Shape(format!(
                "{} packed weights are not whole rows of {width} texels",
                data.len()
            )));
        }
        let texture = up.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("tessera weight texture"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        up.queue.write_texture(
            texture.as_image_copy(),
            bytemuck::cast_slice(&data),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(size.width * 16),
                rows_per_image: Some(size.height),
            },
            size,
        );
        let view = Arc::new(texture.create_view(&wgpu::TextureViewDescriptor::default()));
        self.textures
            .insert(key, (Owner::Tensor(t.clone()), view.clone()));
        Ok(view)
    }

    /// A vector (bias, slopes) uploaded once.
    pub fn vec(&mut self, up: &Uploader<'_>, v: &Arc<Vec<f32>>) -> Result<Arc<wgpu::Buffer>> {
        let key = (Arc::as_ptr(v) as usize, 0, "vec");
        if let Some((_, b)) = self.map.get(&key) {
            return Ok(b.clone());
        }
        let b = upload(up.device, up.queue, v, up.max)?;
        self.map.insert(key, (Owner::Vec(v.clone()), b.clone()));
        Ok(b)
    }

    /// A table of `u32` indices, uploaded once per distinct content.
    pub fn table(&mut self, up: &Uploader<'_>, data: &[u32]) -> Result<Arc<wgpu::Buffer>> {
        if let Some(b) = self.tables.get(data) {
            return Ok(b.clone());
        }
        let b = upload_bytes(up.device, up.queue, bytemuck::cast_slice(data), up.max)?;
        self.tables.insert(data.to_vec(), b.clone());
        Ok(b)
    }

    /// Two vectors concatenated (scale then shift), uploaded once.
    pub fn pair(
        &mut self,
        up: &Uploader<'_>,
        a: &Arc<Vec<f32>>,
        b: &Arc<Vec<f32>>,
    ) -> Result<Arc<wgpu::Buffer>> {
        let key = (Arc::as_ptr(a) as usize, Arc::as_ptr(b) as usize, "pair");
        if let Some((_, buf)) = self.map.get(&key) {
            return Ok(buf.clone());
        }
        let data: Vec<f32> = a.iter().chain(b.iter()).copied().collect();
        let buf = upload(up.device, up.queue, &data, up.max)?;
        self.map
            .insert(key, (Owner::Pair(a.clone(), b.clone()), buf.clone()));
        Ok(buf)
    }
}
