//! What coordinator and node daemons say to each other on top of the
//! transport: job messages (JSON in `PlanUpdate` control frames, small and
//! human-readable in logs) and tensors (tile frames: rkyv header + raw f32).
//!
//! Tensor frames are keyed so that streams arriving in any order can be
//! matched to their job: `request_id` = job id, `block_id` says what the
//! tensor is ([`INPUT`], [`OUTPUT`], [`MODEL_CHUNK`]), `tile_id` its index.

use serde::{Deserialize, Serialize};
use tile_engine::Tensor;
use transport::{Connection, Control, DType, PlanUpdate, Region, TileHeader, TileKey, TileKind};

use super::ClusterError;

/// `block_id` of a job's input tensors.
pub const INPUT: u32 = 0;
/// `block_id` of a job's output tensors.
pub const OUTPUT: u32 = 1;
/// `block_id` of a model transfer's chunks (`request_id` = transfer id).
pub const MODEL_CHUNK: u32 = 2;
/// Model bytes per chunk frame.
pub const CHUNK_BYTES: usize = 4 << 20;

/// A rectangle of a feature map as `[top, left, height, width]`.
pub type Rect = [usize; 4];

/// One message between coordinator and node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Coordinator → node: a model follows as `chunks` [`MODEL_CHUNK`] frames
    /// (keyed by `transfer`) unless the node has `hash` cached already.
    LoadModel {
        /// SHA-256 of the encoded bundle, hex.
        hash: String,
        /// Transfer id keying the chunk frames.
        transfer: u64,
        /// Encoded bundle length in bytes.
        bytes: u64,
    },
    /// Coordinator → node: asks whether `hash` is cached (answered by [`Msg::ModelState`]).
    HasModel {
        /// SHA-256 of the encoded bundle, hex.
        hash: String,
    },
    /// Node → coordinator: whether a model is loaded (or why loading failed).
    ModelState {
        /// The model's hash.
        hash: String,
        /// True once the model is parsed and ready.
        loaded: bool,
        /// Why loading failed, if it did.
        error: Option<String>,
        /// True when the node also holds the model's op profile (so a
        /// coordinator asks it, not a node that would time every op again).
        #[serde(default)]
        profiled: bool,
    },
    /// Coordinator → node: run `nodes` of model `model` (graph node ids, in
    /// order) on `inputs` tensors; with `tile`, run the fused block's copy
    /// for that output rectangle (the node plans the tile itself, so only
    /// ids travel).
    Run {
        /// Job id (keys the tensor frames).
        job: u64,
        /// Model hash.
        model: String,
        /// Graph node ids.
        nodes: Vec<usize>,
        /// Output rectangle of a tile, if the job is one.
        tile: Option<Rect>,
        /// Number of input tensors that follow.
        inputs: u32,
    },
    /// Node → coordinator: a job finished; its outputs follow as [`OUTPUT`] frames.
    Done {
        /// Job id.
        job: u64,
        /// Output tensors sent.
        outputs: u32,
        /// Executor time, microseconds since the node's epoch.
        start_us: u64,
        /// Executor end, microseconds since the node's epoch.
        end_us: u64,
        /// FLOPs the job did (halo included).
        flops: u64,
        /// True for the first run of these ops on this node: it paid
        /// one-off costs (kernels compiled, weights uploaded, kernel
        /// choices timed), so its span says little about the node's speed.
        cold: bool,
    },
    /// Node → coordinator: a job failed.
    Failed {
        /// Job id.
        job: u64,
        /// Why.
        message: String,
    },
    /// Node → coordinator: calibration result (sent after start-up and on request).
    Calibrated {
        /// Measured FLOP/s per op class name (see `OpClass` names).
        rates: Vec<(String, f64)>,
        /// Executor name (adapter).
        executor: String,
    },
    /// Coordinator → node: run the calibration again (re-admission).
    Calibrate,
    /// Coordinator → node: time each op of a loaded model alone (answered by [`Msg::ModelProfile`]).
    ProfileModel {
        /// The model's hash.
        hash: String,
    },
    /// Node → coordinator: seconds per graph node of a model (`None` where
    /// an op could not run alone), or why profiling failed.
    ModelProfile {
        /// The model's hash.
        hash: String,
        /// Seconds per graph node, the job's fixed cost taken off.
        seconds: Vec<Option<f64>>,
        /// Why there is no profile, if there is none.
        error: Option<String>,
    },
    /// Coordinator → node: slow compute down by this factor (the demo's
    /// stand-in for a node that gets busy; 1 = normal).
    Throttle {
        /// Compute takes `factor` times as long.
        factor: f64,
    },
}

impl Msg {
    /// Sends the message on a connection's control stream.
    pub async fn send(&self, conn: &Connection, epoch: u64) -> Result<(), ClusterError> {
        let body = serde_json::to_vec(self).map_err(|e| ClusterError::Protocol(e.to_string()))?;
        conn.send_control(Control::PlanUpdate(PlanUpdate { epoch, body }))
            .await?;
        Ok(())
    }

    /// Parses a control frame's body.
    pub fn parse(body: &[u8]) -> Result<Msg, ClusterError> {
        serde_json::from_slice(body)
            .map_err(|e| ClusterError::Protocol(format!("bad message: {e}")))
    }
}

/// Header of one tensor frame.
pub fn tensor_header(job: u64, block: u32, index: u32, shape: &[usize]) -> TileHeader {
    let shape: Vec<u32> = if shape.is_empty() {
        vec![1]
    } else {
        shape.iter().map(|&d| d as u32).collect()
    };
    let n = shape.len();
    let (h, w) = if n >= 2 {
        (shape[n - 2], shape[n - 1])
    } else {
        (1, 1)
    };
    TileHeader {
        key: TileKey {
            request_id: job,
            block_id: block,
            tile_id: index,
        },
        region: Region { y: 0, x: 0, h, w },
        map_hw: [h, w],
        shape,
        dtype: DType::F32,
    }
}

/// Sends tensors as `block` frames of `job` (inputs or results); returns
/// the payload bytes put on the wire. A tensor whose values are all whole
/// numbers 0–255 (an image's pixels), or all such numbers over 255 (an
/// image read as `byte / 255`), goes as bytes, a quarter of its f32 size,
/// and arrives bit for bit the same ([`to_tensor`] widens it).
pub async fn send_tensors(
    conn: &Connection,
    kind: TileKind,
    job: u64,
    block: u32,
    tensors: &[Tensor],
) -> Result<u64, ClusterError> {
    let mut bytes = 0;
    for (i, t) in tensors.iter().enumerate() {
        let mut h = tensor_header(job, block, i as u32, t.shape());
        if let Some((dtype, b)) = as_bytes(t.data()) {
            h.dtype = dtype;
            conn.send_tile_bytes(kind, &h, &b).await?;
            bytes += b.len() as u64;
            continue;
        }
        match kind {
            TileKind::Tile => conn.send_tile(&h, t.data()).await?,
            TileKind::Result => conn.send_tile_result(&h, t.data()).await?,
        }
        bytes += t.byte_len() as u64;
    }
    Ok(bytes)
}

/// Bytes [`send_tensors`] puts on the wire for `t`.
pub fn wire_bytes(t: &Tensor) -> u64 {
    let mut h = tensor_header(0, INPUT, 0, t.shape());
    if let Some(dtype) = byte_dtype(t.data()) {
        h.dtype = dtype;
    }
    h.payload_bytes().unwrap_or(t.byte_len() as u64)
}

/// The values as bytes (zero-padded to a multiple of 4), with the dtype
/// that widens them back bit for bit, if every one is a whole number 0–255
/// (so not `-0.0`) or every one is such a number over 255; `None`
/// otherwise, which the first other value of a feature map decides at
/// once, before anything is allocated.
pub fn as_bytes(data: &[f32]) -> Option<(DType, Vec<u8>)> {
    let dtype = byte_dtype(data)?;
    let mut out: Vec<u8> = match dtype {
        DType::U8Over255 => data.iter().map(|&v| over_255(v).unwrap_or(0)).collect(),
        _ => data.iter().map(|&v| v as u8).collect(),
    };
    out.resize(data.len().next_multiple_of(4), 0);
    Some((dtype, out))
}

/// The byte dtype that carries every value bit for bit, if one does.
fn byte_dtype(data: &[f32]) -> Option<DType> {
    if data
        .iter()
        .all(|&v| f32::from(v as u8).to_bits() == v.to_bits())
    {
        Some(DType::U8)
    } else if data.iter().all(|&v| over_255(v).is_some()) {
        Some(DType::U8Over255)
    } else {
        None
    }
}

/// The byte `b` whose `b / 255` (as f32) is `v` bit for bit, if there is one.
fn over_255(v: f32) -> Option<u8> {
    if !(0.0..=1.0).contains(&v) {
        return None;
    }
    let b = (v * 255.0).round() as u8;
    (widen_over_255(b).to_bits() == v.to_bits()).then_some(b)
}

/// What a [`DType::U8Over255`] byte stands for.
fn widen_over_255(b: u8) -> f32 {
    f32::from(b) / 255.0
}

/// Turns a received frame into a tensor of `expect` shape (the receiver
/// knows what it asked for; the header's shape must agree), widening a
/// byte payload to f32.
pub fn to_tensor(
    header: &TileHeader,
    data: Vec<f32>,
    expect: &[usize],
) -> Result<Tensor, ClusterError> {
    let want: Vec<u32> = if expect.is_empty() {
        vec![1]
    } else {
        expect.iter().map(|&d| d as u32).collect()
    };
    if header.shape != want {
        return Err(ClusterError::Protocol(format!(
            "tensor {:?} has shape {:?}, expected {:?}",
            header.key, header.shape, expect
        )));
    }
    let data = match header.dtype {
        DType::F32 => data,
        DType::U8 | DType::U8Over255 => {
            let n: usize = expect.iter().product();
            let bytes: &[u8] = bytemuck::cast_slice(&data);
            let Some(b) = bytes.get(..n) else {
                return Err(ClusterError::Protocol(format!(
                    "tensor {:?} carries {} bytes, its shape needs {n}",
                    header.key,
                    bytes.len()
                )));
            };
            if header.dtype == DType::U8 {
                b.iter().map(|&x| f32::from(x)).collect()
            } else {
                b.iter().map(|&x| widen_over_255(x)).collect()
            }
        }
    };
    Tensor::new(expect.to_vec(), data).map_err(|e| ClusterError::Protocol(e.to_string()))
}

/// Model bytes as f32 frames: the bundle is padded to a multiple of 4 and
/// split into [`CHUNK_BYTES`] pieces (the receiver knows the true length).
pub fn model_chunks(bundle: &[u8]) -> Vec<Vec<f32>> {
    bundle
        .chunks(CHUNK_BYTES)
        .map(|c| {
            let mut v = vec![0f32; c.len().div_ceil(4)];
            bytemuck::cast_slice_mut::<f32, u8>(&mut v)[..c.len()].copy_from_slice(c);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_for(t: &Tensor, dtype: DType) -> TileHeader {
        let mut h = tensor_header(1, INPUT, 0, t.shape());
        h.dtype = dtype;
        h
    }

    /// A model of thousands of ops: its profile (a time per op) and a job
    /// naming every op fit a control frame. Past 16 KiB of body they were
    /// refused by the sender, and the coordinator waited 300 s for the profile.
    #[test]
    fn a_profile_and_a_job_of_twenty_thousand_ops_fit_a_control_frame() {
        let ops = 20_000;
        let profile = Msg::ModelProfile {
            hash: "ab".repeat(32),
            seconds: (0..ops).map(|i| Some(1.0 / (i as f64 + 3.0))).collect(),
            error: None,
        };
        let run = Msg::Run {
            job: u64::MAX,
            model: "ab".repeat(32),
            nodes: (100_000..100_000 + ops).collect(),
            tile: None,
            inputs: 1,
        };
        for m in [profile, run] {
            let body = serde_json::to_vec(&m).expect("json");
            assert!(body.len() > 16 * 1024, "the case tests a large body");
            let header = transport::messages::Header::PlanUpdate(PlanUpdate { epoch: 1, body });
            let frame = transport::frame::encode_frame(&header, &[]).expect("encodes");
            let decoded = transport::frame::decode_frame(&frame, &transport::Caps::default());
            assert!(decoded.is_ok(), "{:?}", decoded.err());
        }
    }

    #[test]
    fn whole_numbers_to_255_travel_as_bytes_and_come_back_bit_for_bit() -> Result<(), ClusterError>
    {
        let pixels: Vec<f32> = (0..3 * 5 * 7).map(|i| (i * 37 % 256) as f32).collect();
        let t = Tensor::new(vec![1, 3, 5, 7], pixels)
            .map_err(|e| ClusterError::Protocol(e.to_string()))?;
        let (dtype, bytes) =
            as_bytes(t.data()).ok_or_else(|| ClusterError::Protocol("not bytes".into()))?;
        assert_eq!(dtype, DType::U8);
        assert_eq!(bytes.len(), 108, "105 values padded to a multiple of 4");
        assert_eq!(wire_bytes(&t), 108);
        // What the receiver's pooled f32 buffer holds: the padded bytes.
        let mut buf = vec![0f32; 27];
        bytemuck::cast_slice_mut::<f32, u8>(&mut buf).copy_from_slice(&bytes);
        let back = to_tensor(&header_for(&t, DType::U8), buf, t.shape())?;
        let bits = |x: &Tensor| x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&t));
        Ok(())
    }

    #[test]
    fn an_image_read_as_byte_over_255_travels_as_bytes_and_comes_back_bit_for_bit()
    -> Result<(), ClusterError> {
        // Every byte value, as a PNG reader makes them, and again shuffled.
        let pixels: Vec<f32> = (0..512)
            .map(|i| f32::from((i * 37 % 256) as u8) / 255.0)
            .collect();
        let t = Tensor::new(vec![1, 2, 16, 16], pixels)
            .map_err(|e| ClusterError::Protocol(e.to_string()))?;
        let (dtype, bytes) =
            as_bytes(t.data()).ok_or_else(|| ClusterError::Protocol("not bytes".into()))?;
        assert_eq!(dtype, DType::U8Over255);
        assert_eq!(wire_bytes(&t), 512);
        let mut buf = vec![0f32; 128];
        bytemuck::cast_slice_mut::<f32, u8>(&mut buf).copy_from_slice(&bytes);
        let back = to_tensor(&header_for(&t, DType::U8Over255), buf, t.shape())?;
        let bits = |x: &Tensor| x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&t));
        Ok(())
    }

    #[test]
    fn a_value_near_but_not_a_byte_over_255_keeps_the_map_f32() {
        let near = f32::from_bits((100.0f32 / 255.0).to_bits() + 1);
        for v in [near, 0.5, -0.0, 1.0 + f32::EPSILON, f32::NAN] {
            let data = [0.0, 1.0 / 255.0, v, 1.0];
            assert!(
                as_bytes(&data).is_none(),
                "{v:?} must not be sent as a byte"
            );
        }
    }

    #[test]
    fn anything_but_whole_numbers_to_255_stays_f32() {
        for v in [-0.0f32, 0.5, 256.0, -1.0, f32::NAN, f32::INFINITY, 1e-40] {
            assert!(
                as_bytes(&[1.0, v, 2.0]).is_none(),
                "{v:?} must not be sent as a byte"
            );
            let t = Tensor::new(vec![3], vec![1.0, v, 2.0]).expect("tensor");
            assert_eq!(wire_bytes(&t), 12);
        }
        assert_eq!(
            as_bytes(&[0.0, 255.0]),
            Some((DType::U8, vec![0, 255, 0, 0]))
        );
    }

    #[test]
    fn a_byte_frame_shorter_than_its_shape_is_refused() {
        let t = Tensor::zeros(vec![1, 1, 4, 4]);
        let short = vec![0f32; 2];
        assert!(to_tensor(&header_for(&t, DType::U8), short, t.shape()).is_err());
    }
}
