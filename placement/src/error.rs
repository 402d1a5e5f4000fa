//! The one error type of the placement crate.

/// What can go wrong in topology handling, election and the placement service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scenario or topology is invalid; the text says where and why.
    #[error("invalid topology: {0}")]
    Topology(String),
    /// A request names a node the topology does not have.
    #[error("unknown node `{0}`")]
    UnknownNode(String),
    /// A request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No node can take the work.
    #[error("no node fits: {0}")]
    NoCapacity(String),
    /// The placement service cannot be reached or answered badly.
    #[error("placement service unavailable: {0}")]
    Unavailable(String),
    /// An I/O failure (binding a socket, reading a file).
    #[error("i/o: {0}")]
    Io(String),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
