//! Limits on what a peer may make this node allocate, and the checks that
//! apply them to a decoded header.

use serde::Deserialize;

use crate::error::FrameError;
use crate::messages::{Header, TileHeader};

/// Caps on sizes read from the network. Every length in a frame is checked
/// against these before anything is allocated from it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Caps {
    /// Largest rkyv header, bytes (a plan update's may be larger by its body).
    pub max_header_bytes: u32,
    /// Largest tile payload, bytes.
    pub max_payload_bytes: u64,
    /// Largest tensor rank.
    pub max_rank: u32,
    /// Largest single dimension.
    pub max_dim: u32,
    /// Longest string field (node id, messages), bytes.
    pub max_string_bytes: u32,
    /// Longest list field (spans, features), elements.
    pub max_list_len: u32,
    /// Longest plan-update body, bytes: a job names every op it runs and a
    /// model profile holds a time per op, so a model of thousands of ops
    /// needs tens of KiB.
    pub max_body_bytes: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            // A 16 MiB tile is the largest the benchmarks move; leave headroom.
            max_payload_bytes: 256 * 1024 * 1024,
            max_rank: 6,
            max_dim: 1 << 20,
            max_string_bytes: 4096,
            max_list_len: 16 * 1024,
            max_body_bytes: 1 << 20,
        }
    }
}

impl Caps {
    /// Checks a decoded header against the caps and against itself;
    /// `payload_len` is the length the frame's prefix announced.
    pub fn check_header(&self, header: &Header, payload_len: u64) -> Result<(), FrameError> {
        match header {
            Header::Tile(t) | Header::TileResult(t) => self.check_tile(t, payload_len),
            other => {
                if payload_len != 0 {
                    return Err(FrameError::Inconsistent(format!(
                        "{:?} frame carries a {payload_len}-byte payload",
                        other.kind()
                    )));
                }
                match other {
                    Header::Hello(h) => {
                        self.check_str("node_id", &h.node_id)?;
                        self.check_str("adapter", &h.adapter)?;
                        self.check_len("features", h.capabilities.features.len())?;
                        for f in &h.capabilities.features {
                            self.check_str("feature", f)?;
                        }
                        Ok(())
                    }
                    Header::Error(e) => self.check_str("message", &e.message),
                    Header::Profile(p) => {
                        self.check_str("node_id", &p.node_id)?;
                        self.check_len("spans", p.spans.len())?;
                        for s in &p.spans {
                            self.check_str("span kind", &s.kind)?;
                        }
                        Ok(())
                    }
                    Header::PlanUpdate(p) => {
                        if p.body.len() > self.max_body_bytes as usize {
                            return Err(FrameError::Limit(format!(
                                "plan body of {} bytes exceeds cap {}",
                                p.body.len(),
                                self.max_body_bytes
                            )));
                        }
                        Ok(())
                    }
                    Header::Shutdown(s) => self.check_str("reason", &s.reason),
                    Header::Ack(_) | Header::Tile(_) | Header::TileResult(_) => Ok(()),
                }
            }
        }
    }

    /// Checks a tile header: rank, dimensions, region, and that the shape
    /// describes exactly `payload_len` bytes.
    pub fn check_tile(&self, t: &TileHeader, payload_len: u64) -> Result<(), FrameError> {
        let rank = t.shape.len();
        if rank == 0 || rank > self.max_rank as usize {
            return Err(FrameError::Limit(format!(
                "rank {rank} not in 1..={}",
                self.max_rank
            )));
        }
        if let Some(d) = t.shape.iter().find(|&&d| d == 0 || d > self.max_dim) {
            return Err(FrameError::Limit(format!(
                "dimension {d} not in 1..={}",
                self.max_dim
            )));
        }
        let bytes = t
            .payload_bytes()
            .ok_or_else(|| FrameError::Limit(format!("shape {:?} overflows", t.shape)))?;
        if bytes > self.max_payload_bytes {
            return Err(FrameError::Limit(format!(
                "shape {:?} needs {bytes} bytes, cap is {}",
                t.shape, self.max_payload_bytes
            )));
        }
        if bytes != payload_len {
            return Err(FrameError::Inconsistent(format!(
                "shape {:?} needs {bytes} bytes, frame carries {payload_len}",
                t.shape
            )));
        }
        let r = t.region;
        if rank >= 2 && (r.h != t.shape[rank - 2] || r.w != t.shape[rank - 1]) {
            return Err(FrameError::Inconsistent(format!(
                "region {}x{} does not match shape {:?}",
                r.h, r.w, t.shape
            )));
        }
        let bottom = u64::from(r.y) + u64::from(r.h);
        let right = u64::from(r.x) + u64::from(r.w);
        if bottom > u64::from(t.map_hw[0]) || right > u64::from(t.map_hw[1]) {
            return Err(FrameError::Inconsistent(format!(
                "region {r:?} outside the {}x{} map",
                t.map_hw[0], t.map_hw[1]
            )));
        }
        Ok(())
    }

    fn check_str(&self, what: &str, s: &str) -> Result<(), FrameError> {
        if s.len() > self.max_string_bytes as usize {
            return Err(FrameError::Limit(format!(
                "{what} is {} bytes, cap is {}",
                s.len(),
                self.max_string_bytes
            )));
        }
        Ok(())
    }

    fn check_len(&self, what: &str, n: usize) -> Result<(), FrameError> {
        if n > self.max_list_len as usize {
            return Err(FrameError::Limit(format!(
                "{what} has {n} entries, cap is {}",
                self.max_list_len
            )));
        }
        Ok(())
    }
}
