//! The kinds of error every Databelt API reports, and the one error body of
//! every HTTP API (host, peer, step, placement).
//!
//! An [`ErrorKind`] decides three things at once: its kind string
//! ([`ErrorKind::as_str`], e.g. `quota-exceeded`), its HTTP status
//! ([`ErrorKind::http_status`]) and the case of the WIT `error` variant a
//! guest sees ([`ErrorKind::wit_case`]). Every crate's error type has a
//! `kind()`, so a status or a WIT case is never chosen anywhere else. A
//! client decodes the kind from the body ([`ErrorBody`]) instead of guessing
//! from the status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The case of the WIT `databelt:state/types.error` variant an error reaches
/// a guest as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WitErrorCase {
    /// `no-such-scope`
    NoSuchScope,
    /// `access-denied`
    AccessDenied,
    /// `quota-exceeded(string)`
    QuotaExceeded,
    /// `precondition-failed`
    PreconditionFailed,
    /// `timeout`
    Timeout,
    /// `unavailable(string)`
    Unavailable,
    /// `conflict(string)`
    Conflict,
    /// `other(string)`
    Other,
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $status:literal, $wit:ident;)*) => {
        /// Every kind of error, across the host, the network layer and
        /// placement.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorKind {
            /// Every kind.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)*];

            /// The kind string of error bodies, e.g. `quota-exceeded`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => $name,)*
                }
            }

            /// The HTTP status an API answers with.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorKind::$variant => $status,)*
                }
            }

            /// The WIT error case a guest sees.
            pub fn wit_case(self) -> WitErrorCase {
                match self {
                    $(ErrorKind::$variant => WitErrorCase::$wit,)*
                }
            }
        }
    };
}

kinds! {
    /// The scope name is not valid or the scope cannot be opened.
    NoSuchScope => "no-such-scope", 400, NoSuchScope;
    /// Policy does not allow the operation.
    AccessDenied => "access-denied", 403, AccessDenied;
    /// A configured limit was hit.
    QuotaExceeded => "quota-exceeded", 413, QuotaExceeded;
    /// A precondition (`if-not-exists`, counter encoding) did not hold.
    PreconditionFailed => "precondition-failed", 412, PreconditionFailed;
    /// The operation took longer than allowed.
    Timeout => "timeout", 504, Timeout;
    /// Something needed (a peer, the store, the placement service) cannot be
    /// reached now; the same call may succeed later.
    Unavailable => "unavailable", 503, Unavailable;
    /// A state operation failed for another reason.
    Other => "other", 400, Other;
    /// The bytes are not a valid WebAssembly component.
    InvalidComponent => "invalid-component", 400, Other;
    /// A core module was given where a component is required.
    CoreModule => "core-module", 400, Other;
    /// The component does not target the `databelt:state/function` world.
    WrongWorld => "wrong-world", 400, Other;
    /// No function is deployed under the name.
    UnknownFunction => "unknown-function", 404, Other;
    /// A name (run id, scope, function, step, node) breaks its rule.
    InvalidName => "invalid-name", 400, Other;
    /// The request or input is malformed or does not fit its type.
    BadInput => "bad-input", 400, Other;
    /// The guest trapped.
    Trap => "trap", 422, Other;
    /// The guest ran past its deadline.
    DeadlineExceeded => "deadline-exceeded", 504, Timeout;
    /// The guest tried to grow its memory past its limit.
    MemoryLimitExceeded => "memory-limit-exceeded", 422, Other;
    /// The guest's handler returned an error.
    FunctionError => "function-error", 422, Other;
    /// Too many workflow steps were chained by hand-offs.
    TooManySteps => "too-many-steps", 422, Other;
    /// A workflow run failed.
    Workflow => "workflow", 502, Other;
    /// A configuration value or file is not acceptable.
    Config => "config", 500, Other;
    /// The durable store failed.
    Storage => "storage", 500, Unavailable;
    /// An internal failure (engine, worker thread, encoding).
    Runtime => "runtime", 500, Other;
    /// A request names a node the topology does not have.
    UnknownNode => "unknown-node", 404, Other;
    /// No node can take the work.
    NoCapacity => "no-capacity", 409, Other;
    /// The placement service has no SLOs for the workflow.
    UnknownWorkflow => "unknown-workflow", 404, Other;
    /// The caller did not prove who it is: no, an unknown or a malformed
    /// bearer token, and no node certificate.
    Unauthenticated => "unauthenticated", 401, AccessDenied;
    /// A step's transaction read state that another commit changed before
    /// it could commit; running the step again may succeed.
    Conflict => "conflict", 409, Conflict;
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind string is not one of [`ErrorKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error kind `{0}`")]
pub struct UnknownKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        ErrorKind::ALL.iter().copied().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind(s.to_string()))
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The JSON body of every error answer of every Databelt HTTP API:
/// `{"error": "<kind>", "message": "<text>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The kind.
    pub error: ErrorKind,
    /// A human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    /// Decode an error answer. A body that is not an [`ErrorBody`] (a proxy's
    /// page, an older server) is reported by its HTTP status: the kind whose
    /// status it is when exactly one kind has it, else `unavailable` for 5xx
    /// and `bad-input` for 4xx, with the body's text as the message.
    pub fn decode(status: u16, body: &[u8]) -> ErrorBody {
        if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
            return b;
        }
        let mut with_status = ErrorKind::ALL.iter().copied().filter(|k| k.http_status() == status);
        let kind = match (with_status.next(), with_status.next()) {
            (Some(k), None) => k,
            _ if status >= 500 => ErrorKind::Unavailable,
            _ => ErrorKind::BadInput,
        };
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message =
            if text.is_empty() { format!("HTTP status {status}") } else { format!("HTTP status {status}: {text}") };
        ErrorBody { error: kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_strings_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(k.as_str()), "{k} twice");
            assert_eq!(k.as_str().parse::<ErrorKind>().unwrap(), *k);
            assert!((400..600).contains(&k.http_status()));
        }
        assert!("nope".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn bodies_decode_by_kind_not_status() {
        let body = br#"{"error":"precondition-failed","message":"peer n1: key exists"}"#;
        let b = ErrorBody::decode(500, body);
        assert_eq!(b.error, ErrorKind::PreconditionFailed);
        assert_eq!(b.message, "peer n1: key exists");
        assert_eq!(ErrorBody::decode(412, b"<html>").error, ErrorKind::PreconditionFailed);
        assert_eq!(ErrorBody::decode(500, b"").error, ErrorKind::Unavailable);
        assert_eq!(ErrorBody::decode(418, b"teapot").error, ErrorKind::BadInput);
    }

    #[test]
    fn the_body_is_the_documented_json() {
        let b = ErrorBody { error: ErrorKind::QuotaExceeded, message: "too big".into() };
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"error":"quota-exceeded","message":"too big"}"#);
    }
}
