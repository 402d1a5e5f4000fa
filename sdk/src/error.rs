//! The SDK's error type, mirroring the WIT `error` variant.

use crate::wit::databelt::state::types::Error as WitError;

/// Why a state or workflow call failed. The first eight cases mirror the WIT
/// `error` variant; `Encode` and `Decode` are the SDK's own (serde/postcard).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The scope name is invalid or the scope cannot be opened.
    #[error("no such scope")]
    NoSuchScope,
    /// The host does not let this function use the scope.
    #[error("access denied")]
    AccessDenied,
    /// A host limit was hit; the text names it.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// `if-not-exists` found a value, or a counter was not 8 bytes.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The host gave up waiting.
    #[error("timeout")]
    Timeout,
    /// The state tier cannot be reached now; retrying may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A transaction holds the key (prepared, not yet decided); nothing was
    /// written. Return it from the function (`?`) in a durable run and the
    /// runtime runs the step again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
    /// A value could not be encoded with postcard.
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// Stored bytes could not be decoded as the requested type.
    #[error("cannot decode value: {0}")]
    Decode(String),
}

/// Shorthand for SDK results.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl From<WitError> for Error {
    fn from(e: WitError) -> Self {
        match e {
            WitError::NoSuchScope => Error::NoSuchScope,
            WitError::AccessDenied => Error::AccessDenied,
            WitError::QuotaExceeded(s) => Error::QuotaExceeded(s),
            WitError::PreconditionFailed => Error::PreconditionFailed,
            WitError::Timeout => Error::Timeout,
            WitError::Unavailable(s) => Error::Unavailable(s),
            WitError::Conflict(s) => Error::Conflict(s),
            WitError::Other(s) => Error::Other(s),
        }
    }
}

impl From<Error> for WitError {
    fn from(e: Error) -> Self {
        match e {
            Error::NoSuchScope => WitError::NoSuchScope,
            Error::AccessDenied => WitError::AccessDenied,
            Error::QuotaExceeded(s) => WitError::QuotaExceeded(s),
            Error::PreconditionFailed => WitError::PreconditionFailed,
            Error::Timeout => WitError::Timeout,
            Error::Unavailable(s) => WitError::Unavailable(s),
            Error::Conflict(s) => WitError::Conflict(s),
            Error::Other(s) => WitError::Other(s),
            e @ (Error::Encode(_) | Error::Decode(_)) => WitError::Other(e.to_string()),
        }
    }
}
