//! Frame headers: the rkyv-archived structs that precede each payload.
//!
//! Every frame carries exactly one [`Header`]; only `Tile` and `TileResult`
//! carry a payload (raw little-endian f32 bytes after the header).

use rkyv::{Archive, Deserialize, Serialize};

/// A node's tier.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The device holding the input.
    Device,
    /// A parallel edge GPU node.
    Edge,
    /// The cloud node.
    Cloud,
}

/// The first frame on a connection's control stream: who the sender is and what it can do.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hello {
    /// The node's name (matches its certificate name).
    pub node_id: String,
    /// The node's tier.
    pub tier: Tier,
    /// The GPU adapter (or "cpu") the node runs tiles on.
    pub adapter: String,
    /// Capability summary.
    pub capabilities: Capabilities,
}

/// What a node can do, as advertised in [`Hello`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Capabilities {
    /// Measured or nominal compute throughput, GFLOP/s.
    pub gflops: f32,
    /// Device memory available for tiles, bytes.
    pub memory_bytes: u64,
    /// Largest tile payload the node accepts, bytes.
    pub max_payload_bytes: u64,
    /// Free-form feature flags (e.g. "f16", "subgroups").
    pub features: Vec<String>,
}

/// Element type of a tile payload.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float, little-endian.
    F32,
    /// Unsigned bytes: a map of whole numbers 0–255 (an image's pixels)
    /// travels in a quarter of the f32 bytes and is widened on arrival. The
    /// payload is zero-padded to a multiple of 4 bytes.
    U8,
    /// Unsigned bytes `b` standing for `b / 255`: an image read as
    /// `byte / 255` (a PNG input of a model that takes [0, 1]), widened on
    /// arrival to the same f32 bits. Padded as [`DType::U8`].
    U8Over255,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::U8 | Self::U8Over255 => 1,
        }
    }
}

/// A rectangle of a feature map: rows `y..y+h`, columns `x..x+w`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Region {
    /// First row.
    pub y: u32,
    /// First column.
    pub x: u32,
    /// Rows.
    pub h: u32,
    /// Columns.
    pub w: u32,
}

/// Identifies one tile of one request; re-sent tiles carry the same key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TileKey {
    /// The inference request.
    pub request_id: u64,
    /// The fused block within the request's plan.
    pub block_id: u32,
    /// The tile within the block's grid.
    pub tile_id: u32,
}

impl std::fmt::Display for TileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request {}, block {}, tile {}",
            self.request_id, self.block_id, self.tile_id
        )
    }
}

/// Header of a Tile or TileResult frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct TileHeader {
    /// Which tile this is.
    pub key: TileKey,
    /// Where the payload sits in the full feature map (rows/columns, halo included).
    pub region: Region,
    /// Height and width of the full feature map the region lies in.
    pub map_hw: [u32; 2],
    /// The payload tensor's shape (NCHW for feature maps); the last two
    /// dimensions equal the region's height and width.
    pub shape: Vec<u32>,
    /// Element type.
    pub dtype: DType,
}

impl TileHeader {
    /// Number of elements the shape describes, or `None` on overflow.
    pub fn elements(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
    }

    /// Payload bytes the shape describes (padded to a multiple of 4, the
    /// unit payload buffers are read in), or `None` on overflow.
    pub fn payload_bytes(&self) -> Option<u64> {
        self.elements()?
            .checked_mul(self.dtype.size())?
            .checked_next_multiple_of(4)
    }
}

/// Receipt of a tile: sent by the receiver once the tile is validated and queued.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The acknowledged tile.
    pub key: TileKey,
    /// Whether the tile was a tile (false) or a tile result (true).
    pub result: bool,
    /// True if the tile had been received before and was dropped this time.
    pub duplicate: bool,
}

/// An error report: the code says what failed, the message says where.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// An [`crate::ErrorCode`] as u16.
    pub code: u16,
    /// Human-readable reason.
    pub message: String,
}

/// One measured interval (see DESIGN.md "span").
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Span {
    /// What was measured ("conv", "send", "recv", ...).
    pub kind: String,
    /// Start, microseconds since the node's epoch.
    pub start_us: u64,
    /// End, microseconds since the node's epoch.
    pub end_us: u64,
    /// Bytes moved, if a transfer.
    pub bytes: u64,
    /// Floating-point operations, if compute.
    pub flops: u64,
}

/// Measured spans and throughputs from a node.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Profile {
    /// The reporting node.
    pub node_id: String,
    /// The spans.
    pub spans: Vec<Span>,
}

/// A new plan (or a change to one). The planner's plan type is not fixed yet,
/// so the plan travels as opaque bytes with an epoch for ordering.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PlanUpdate {
    /// Monotonic plan epoch; receivers ignore older epochs.
    pub epoch: u64,
    /// The serialized plan.
    pub body: Vec<u8>,
}

/// The sender will open no more streams; in-flight tiles still arrive.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    /// Why.
    pub reason: String,
}

/// Every frame header the protocol knows.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Header {
    /// See [`Hello`].
    Hello(Hello),
    /// A tile to run.
    Tile(TileHeader),
    /// A tile's output.
    TileResult(TileHeader),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`ErrorFrame`].
    Error(ErrorFrame),
    /// See [`Profile`].
    Profile(Profile),
    /// See [`PlanUpdate`].
    PlanUpdate(PlanUpdate),
    /// See [`Shutdown`].
    Shutdown(Shutdown),
}

impl Header {
    /// The frame kind that announces this header in the prefix.
    pub fn kind(&self) -> crate::frame::FrameKind {
        use crate::frame::FrameKind as K;
        match self {
            Self::Hello(_) => K::Hello,
            Self::Tile(_) => K::Tile,
            Self::TileResult(_) => K::TileResult,
            Self::Ack(_) => K::Ack,
            Self::Error(_) => K::Error,
            Self::Profile(_) => K::Profile,
            Self::PlanUpdate(_) => K::PlanUpdate,
            Self::Shutdown(_) => K::Shutdown,
        }
    }
}
