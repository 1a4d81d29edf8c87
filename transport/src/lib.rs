//! Feature-map tiles between tiers: the wire format (rkyv headers + raw
//! payloads), a sans-IO framing core, quinn endpoints with mutual TLS, and a
//! user-space link emulator. Knows tensors only as shapes and bytes.
//!
//! Layers, bottom up:
//! - [`frame`], [`messages`], [`caps`]: pure functions over byte slices; no I/O.
//! - [`pool`], [`dedup`]: receive buffers and the duplicate-tile filter.
//! - [`certs`], [`tuning`]: certificates/TLS and quinn transport settings.
//! - [`endpoint`]: the thin async layer on quinn + tokio.
//! - [`emulator`]: a UDP relay that imposes bandwidth, delay, jitter and loss.

pub mod caps;
pub mod certs;
pub mod dedup;
pub mod emulator;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod messages;
pub mod pool;
pub mod tuning;

pub use caps::Caps;
pub use certs::Identity;
pub use endpoint::{Connection, Control, Endpoint, EndpointConfig, ReceivedTile, TileKind};
pub use error::{Error, ErrorCode, FrameError, Result};
pub use frame::{ALPN, FrameKind, VERSION};
pub use messages::{
    Ack, Capabilities, DType, ErrorFrame, Header, Hello, PlanUpdate, Profile, Region, Shutdown,
    Span, Tier, TileHeader, TileKey,
};
pub use pool::{BufferPool, Payload};
pub use tuning::LinkTuning;
