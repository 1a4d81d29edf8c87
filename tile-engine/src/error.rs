//! The crate's typed error.

use thiserror::Error as ThisError;

/// Everything that can go wrong while importing, checking or running a model.
#[derive(Debug, ThisError)]
pub enum Error {
    /// The model file could not be decoded at all (truncated, corrupt, wrong format).
    #[error("malformed model: {0}")]
    Malformed(String),
    /// The model uses an operator (or an attribute value) the engine does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Shapes that do not fit together (a model inconsistency or a wrong input).
    #[error("shape error: {0}")]
    Shape(String),
    /// A caller-supplied tensor or argument is not what the model expects.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A size read from untrusted bytes exceeds what the input can justify.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The GPU adapter, device or a kernel failed.
    #[error("gpu: {0}")]
    Gpu(String),
    /// The caller stopped the run between two ops (its result was no longer wanted).
    #[error("cancelled")]
    Cancelled,
    /// File-system errors, with the path that failed.
    // The cause is in the message and not also a `source()`, or a
    // chain-printing caller (anyhow's `{:#}`) would repeat it.
    #[error("{path}: {error}")]
    Io {
        /// The file that could not be read or written.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
