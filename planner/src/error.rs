//! The planner's typed error.

use thiserror::Error as ThisError;

/// Everything that can make planning fail. All of these come from the
/// inputs (cluster description, model, measurements), never from a bug.
#[derive(Debug, Clone, PartialEq, ThisError)]
pub enum Error {
    /// The cluster description is inconsistent (names, tiers, numbers).
    #[error("cluster: {0}")]
    Cluster(String),
    /// Two nodes that the plan must connect have no link between them.
    #[error("cluster: no link between {from} and {to}")]
    MissingLink {
        /// Sending node.
        from: String,
        /// Receiving node.
        to: String,
    },
    /// The model cannot be planned (empty, malformed DAG).
    #[error("model: {0}")]
    Model(String),
    /// A measurement refers to an unknown node or carries a non-finite / non-positive figure.
    #[error("measurement: {0}")]
    Measurement(String),
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
