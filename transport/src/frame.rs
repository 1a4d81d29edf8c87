//! The sans-IO framing core: pure functions from headers to bytes and back.
//!
//! A frame is a fixed 20-byte prefix, an rkyv-archived [`Header`], and (for
//! tiles only) a raw little-endian f32 payload:
//!
//! ```text
//! magic "TSRA" | version u16 | kind u8 | flags u8 | header_len u32 | payload_len u64 | header | payload
//! ```
//!
//! The prefix alone lets a receiver check both lengths against its [`Caps`]
//! before it allocates anything for the frame.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::caps::Caps;
use crate::error::FrameError;
use crate::messages::{ArchivedHeader, Header};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"TSRA";
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Bytes in the fixed prefix.
pub const PREFIX_LEN: usize = 20;
/// The ALPN protocol id negotiated by TLS.
pub const ALPN: &[u8] = b"tessera/1";

#[cfg(target_endian = "big")]
compile_error!(
    "tile payloads are little-endian f32 viewed in place; big-endian hosts need a byte-swapping path"
);

/// What a frame carries, as announced by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// [`crate::Hello`].
    Hello = 1,
    /// A tile with payload.
    Tile = 2,
    /// A tile result with payload.
    TileResult = 3,
    /// [`crate::Ack`].
    Ack = 4,
    /// [`crate::ErrorFrame`].
    Error = 5,
    /// [`crate::Profile`].
    Profile = 6,
    /// [`crate::PlanUpdate`].
    PlanUpdate = 7,
    /// [`crate::Shutdown`].
    Shutdown = 8,
}

impl FrameKind {
    /// The kind for a raw byte.
    pub fn from_u8(v: u8) -> Result<Self, FrameError> {
        Ok(match v {
            1 => Self::Hello,
            2 => Self::Tile,
            3 => Self::TileResult,
            4 => Self::Ack,
            5 => Self::Error,
            6 => Self::Profile,
            7 => Self::PlanUpdate,
            8 => Self::Shutdown,
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// Whether frames of this kind carry a payload.
    pub fn has_payload(self) -> bool {
        matches!(self, Self::Tile | Self::TileResult)
    }
}

/// A decoded, cap-checked prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Frame kind.
    pub kind: FrameKind,
    /// Bytes of rkyv header that follow.
    pub header_len: u32,
    /// Bytes of payload after the header.
    pub payload_len: u64,
}

/// Encodes a prefix.
pub fn encode_prefix(kind: FrameKind, header_len: u32, payload_len: u64) -> [u8; PREFIX_LEN] {
    let mut p = [0u8; PREFIX_LEN];
    p[0..4].copy_from_slice(&MAGIC);
    p[4..6].copy_from_slice(&VERSION.to_le_bytes());
    p[6] = kind as u8;
    p[7] = 0;
    p[8..12].copy_from_slice(&header_len.to_le_bytes());
    p[12..20].copy_from_slice(&payload_len.to_le_bytes());
    p
}

/// Decodes the prefix at the start of `bytes` and checks its lengths against `caps`.
pub fn decode_prefix(bytes: &[u8], caps: &Caps) -> Result<Prefix, FrameError> {
    let p: &[u8; PREFIX_LEN] = bytes
        .get(..PREFIX_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(FrameError::Truncated {
            need: PREFIX_LEN as u64,
            have: bytes.len() as u64,
        })?;
    let magic = [p[0], p[1], p[2], p[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = u16::from_le_bytes([p[4], p[5]]);
    if version != VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let kind = FrameKind::from_u8(p[6])?;
    if p[7] != 0 {
        return Err(FrameError::ReservedFlags(p[7]));
    }
    let header_len = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
    let payload_len = u64::from_le_bytes([p[12], p[13], p[14], p[15], p[16], p[17], p[18], p[19]]);
    // Only a plan update carries a body of its own size; every other kind
    // stays within the small cap.
    let max_header = match kind {
        FrameKind::PlanUpdate => caps.max_header_bytes.saturating_add(caps.max_body_bytes),
        _ => caps.max_header_bytes,
    };
    if header_len == 0 || header_len > max_header {
        return Err(FrameError::Limit(format!(
            "header length {header_len} not in 1..={max_header}"
        )));
    }
    if payload_len > caps.max_payload_bytes {
        return Err(FrameError::Limit(format!(
            "payload length {payload_len} exceeds cap {}",
            caps.max_payload_bytes
        )));
    }
    if !kind.has_payload() && payload_len != 0 {
        return Err(FrameError::Inconsistent(format!(
            "{kind:?} frame carries a {payload_len}-byte payload"
        )));
    }
    if !payload_len.is_multiple_of(4) {
        return Err(FrameError::Inconsistent(format!(
            "payload length {payload_len} is not a multiple of 4"
        )));
    }
    Ok(Prefix {
        kind,
        header_len,
        payload_len,
    })
}

/// Archives a header.
pub fn encode_header(header: &Header) -> Result<AlignedVec, FrameError> {
    rkyv::to_bytes::<rancor::Error>(header).map_err(|e| FrameError::Archive(e.to_string()))
}

/// Validates and decodes an archived header (which must be 16-byte aligned,
/// as an [`AlignedVec`] is), then checks it against `caps`, the prefix's
/// kind and payload length.
pub fn decode_header(
    prefix: &Prefix,
    bytes: &AlignedVec,
    caps: &Caps,
) -> Result<Header, FrameError> {
    if bytes.len() != prefix.header_len as usize {
        return Err(FrameError::Truncated {
            need: u64::from(prefix.header_len),
            have: bytes.len() as u64,
        });
    }
    let archived = rkyv::access::<ArchivedHeader, rancor::Error>(bytes.as_slice())
        .map_err(|e| FrameError::Archive(e.to_string()))?;
    // Deserialising allocates, but only within the header's bytes, which the cap bounds.
    let header = rkyv::deserialize::<Header, rancor::Error>(archived)
        .map_err(|e| FrameError::Archive(e.to_string()))?;
    if header.kind() != prefix.kind {
        return Err(FrameError::Inconsistent(format!(
            "prefix announces {:?}, header is {:?}",
            prefix.kind,
            header.kind()
        )));
    }
    caps.check_header(&header, prefix.payload_len)?;
    Ok(header)
}

/// Encodes the prefix and header of a frame whose payload is `payload_len` bytes.
pub fn encode_head(header: &Header, payload_len: u64) -> Result<Vec<u8>, FrameError> {
    let h = encode_header(header)?;
    let header_len = u32::try_from(h.len())
        .map_err(|_| FrameError::Limit(format!("header of {} bytes", h.len())))?;
    let mut out = Vec::with_capacity(PREFIX_LEN + h.len());
    out.extend_from_slice(&encode_prefix(header.kind(), header_len, payload_len));
    out.extend_from_slice(&h);
    Ok(out)
}

/// Encodes a whole frame into one buffer (control frames, tests; tiles go
/// out as head + borrowed payload instead).
pub fn encode_frame(header: &Header, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = encode_head(header, payload.len() as u64)?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// A frame decoded from a contiguous buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<'a> {
    /// The validated header.
    pub header: Header,
    /// The payload bytes (unaligned: a view into the input).
    pub payload: &'a [u8],
    /// Bytes of input the frame used.
    pub consumed: usize,
}

/// Decodes one frame from the start of `bytes`: prefix, then header, then
/// payload, each checked before the next is looked at.
pub fn decode_frame<'a>(bytes: &'a [u8], caps: &Caps) -> Result<Decoded<'a>, FrameError> {
    let prefix = decode_prefix(bytes, caps)?;
    let rest = &bytes[PREFIX_LEN..];
    let hl = prefix.header_len as usize;
    let head = rest.get(..hl).ok_or(FrameError::Truncated {
        need: (PREFIX_LEN + hl) as u64,
        have: bytes.len() as u64,
    })?;
    let mut aligned = AlignedVec::<16>::with_capacity(hl);
    aligned.extend_from_slice(head);
    let header = decode_header(&prefix, &aligned, caps)?;
    // The cap bounds payload_len, so this cannot overflow usize on 64-bit hosts;
    // checked anyway for 32-bit ones.
    let pl = usize::try_from(prefix.payload_len)
        .map_err(|_| FrameError::Limit("payload length".into()))?;
    let payload = rest[hl..].get(..pl).ok_or(FrameError::Truncated {
        need: (PREFIX_LEN + hl) as u64 + prefix.payload_len,
        have: bytes.len() as u64,
    })?;
    Ok(Decoded {
        header,
        payload,
        consumed: PREFIX_LEN + hl + pl,
    })
}
