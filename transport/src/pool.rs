//! Receive buffers for tile payloads: f32-aligned, pooled, handed out as
//! [`Payload`] and returned to the pool on drop, so a steady stream of tiles
//! allocates nothing payload-sized after warm-up.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// A pool of `Vec<f32>` buffers. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct BufferPool {
    inner: Arc<Mutex<Vec<Vec<f32>>>>,
    max_pooled: usize,
    max_pooled_bytes: usize,
}

impl BufferPool {
    /// A pool that keeps at most `max_pooled` idle buffers of at most
    /// `max_pooled_bytes` each (larger ones are freed on return).
    pub fn new(max_pooled: usize, max_pooled_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Vec::new())),
            max_pooled,
            max_pooled_bytes,
        }
    }

    /// A buffer of exactly `len` f32s. Reuses the smallest idle buffer that
    /// fits; otherwise allocates (zeroed, so fresh pages come from the OS lazily).
    /// Contents are unspecified: callers overwrite all of it.
    pub fn take(&self, len: usize) -> Payload {
        let reused = {
            let mut idle = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let best = idle
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            best.map(|i| idle.swap_remove(i))
        };
        let buf = match reused {
            Some(mut b) => {
                // Only the part beyond the old length is written here; the rest is overwritten by the reader.
                b.resize(len, 0.0);
                b.truncate(len);
                b
            }
            None => vec![0.0f32; len],
        };
        Payload {
            buf,
            pool: Some(self.clone()),
        }
    }

    /// Idle buffers currently held.
    pub fn idle(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn give_back(&self, buf: Vec<f32>) {
        if buf.capacity() * 4 > self.max_pooled_bytes {
            return;
        }
        let mut idle = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_pooled {
            idle.push(buf);
        }
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        Self::new(32, 64 * 1024 * 1024)
    }
}

/// A received tile payload: f32s in one aligned buffer, read once from the
/// stream. Derefs to `&[f32]`; [`Payload::as_bytes`] gives the raw bytes
/// (e.g. for `queue.write_buffer`). Returns its buffer to the pool on drop.
#[derive(Debug)]
pub struct Payload {
    buf: Vec<f32>,
    pool: Option<BufferPool>,
}

impl Payload {
    /// A payload that owns `data` and belongs to no pool.
    pub fn from_vec(data: Vec<f32>) -> Self {
        Self {
            buf: data,
            pool: None,
        }
    }

    /// The payload as little-endian bytes.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.buf)
    }

    /// The payload as mutable bytes (the stream reader fills these).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.buf)
    }

    /// Takes the buffer out of the pool's reach.
    pub fn into_vec(mut self) -> Vec<f32> {
        self.pool = None;
        std::mem::take(&mut self.buf)
    }
}

impl Deref for Payload {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf
    }
}

impl DerefMut for Payload {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_after_drop() {
        let pool = BufferPool::new(4, 1 << 20);
        let a = pool.take(1000);
        let ptr = a.as_ptr();
        assert_eq!(a.len(), 1000);
        drop(a);
        assert_eq!(pool.idle(), 1);
        let b = pool.take(500);
        assert_eq!(b.as_ptr(), ptr, "a smaller request reuses the idle buffer");
        assert_eq!(b.len(), 500);
        assert_eq!(b.as_bytes().len(), 2000);
        let c = pool.take(2000);
        assert_ne!(c.as_ptr(), ptr);
    }

    #[test]
    fn oversize_buffers_are_not_kept() {
        let pool = BufferPool::new(4, 1024);
        drop(pool.take(1024));
        assert_eq!(pool.idle(), 0);
        drop(pool.take(256));
        assert_eq!(pool.idle(), 1);
    }
}
