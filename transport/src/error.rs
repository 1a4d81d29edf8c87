//! The crate's typed errors: [`FrameError`] for the sans-IO core, [`Error`] for
//! the async layer.

use thiserror::Error as ThisError;

/// Codes carried by an Error frame and by QUIC stream/connection close codes,
/// so a peer can tell why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// No error: graceful close.
    None = 0,
    /// A frame's magic, length fields or archive were malformed.
    Malformed = 1,
    /// The frame's protocol version is not supported.
    Version = 2,
    /// A length, rank or dimension exceeded the receiver's caps.
    Limit = 3,
    /// Fields contradict each other (shape vs payload length, region vs shape).
    Inconsistent = 4,
    /// The stream made no progress within the idle timeout.
    Timeout = 5,
    /// A frame arrived that is not allowed where it was sent.
    Unexpected = 6,
    /// The receiver is shutting down.
    Shutdown = 7,
    /// The peer reset or abandoned the stream.
    Aborted = 8,
    /// Anything else.
    Internal = 9,
}

impl ErrorCode {
    /// The code for a raw number; unknown numbers map to [`ErrorCode::Internal`].
    pub fn from_u16(v: u16) -> Self {
        match v {
            0 => Self::None,
            1 => Self::Malformed,
            2 => Self::Version,
            3 => Self::Limit,
            4 => Self::Inconsistent,
            5 => Self::Timeout,
            6 => Self::Unexpected,
            7 => Self::Shutdown,
            8 => Self::Aborted,
            _ => Self::Internal,
        }
    }
}

/// Why a frame (from untrusted bytes) was rejected. Produced by the sans-IO core.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum FrameError {
    /// Fewer bytes than the frame's prefix announced.
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the frame needs.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The prefix does not start with the tessera magic.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// An unknown frame kind byte.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Reserved prefix bits were set.
    #[error("reserved flags set: {0:#04x}")]
    ReservedFlags(u8),
    /// A size exceeded the configured caps.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The rkyv header failed validation.
    #[error("malformed header: {0}")]
    Archive(String),
    /// Fields contradict each other.
    #[error("inconsistent frame: {0}")]
    Inconsistent(String),
}

impl FrameError {
    /// The wire code to report this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Truncated { .. }
            | Self::BadMagic(_)
            | Self::UnknownKind(_)
            | Self::ReservedFlags(_)
            | Self::Archive(_) => ErrorCode::Malformed,
            Self::UnsupportedVersion(_) => ErrorCode::Version,
            Self::Limit(_) => ErrorCode::Limit,
            Self::Inconsistent(_) => ErrorCode::Inconsistent,
        }
    }
}

/// Everything that can go wrong in the async layer (endpoints, certificates, emulator).
#[derive(Debug, ThisError)]
pub enum Error {
    /// A received or outgoing frame was invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// File-system errors, with the path that failed.
    // The cause is in the message and not also a `source()`, or a
    // chain-printing caller (anyhow's `{:#}`) would repeat it.
    #[error("{path}: {error}")]
    Io {
        /// The file or address that failed.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// Certificate generation or loading failed.
    #[error("certificate: {0}")]
    Cert(String),
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The QUIC connection could not be made or was lost.
    #[error("connection: {0}")]
    Connection(String),
    /// A stream failed (reset, stopped, closed).
    #[error("stream: {0}")]
    Stream(String),
    /// A wait ran past its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The peer sent an Error frame.
    #[error("peer error {code:?}: {message}")]
    Peer {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's message.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("config: {0}")]
    Config(String),
    /// The connection or endpoint is closed.
    #[error("closed")]
    Closed,
}

impl Error {
    /// An [`Error::Io`] naming `path`.
    pub fn io(path: impl Into<String>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_file_error_names_its_cause_once_in_a_printed_chain() {
        let e = Error::io("certs/x.pem", std::io::Error::other("no such file"));
        assert_eq!(e.to_string(), "certs/x.pem: no such file");
        // What anyhow's `{:#}` prints: the message, then each source's.
        let mut chain = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(s) = cur {
            chain += &format!(": {s}");
            cur = s.source();
        }
        assert_eq!(chain.matches("no such file").count(), 1, "{chain}");
    }
}
