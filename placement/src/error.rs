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

impl Error {
    /// The kind: decides the kind string and the HTTP status of the
    /// placement service's answers.
    pub fn kind(&self) -> databelt_types::ErrorKind {
        use databelt_types::ErrorKind;
        match self {
            Error::Topology(_) => ErrorKind::BadInput,
            Error::UnknownNode(_) => ErrorKind::UnknownNode,
            Error::BadRequest(_) => ErrorKind::BadInput,
            Error::NoCapacity(_) => ErrorKind::NoCapacity,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Io(_) => ErrorKind::Runtime,
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
