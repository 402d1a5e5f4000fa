//! # Databelt types
//!
//! The vocabulary every Databelt crate shares, with no dependencies beyond
//! serde, serde_json and thiserror:
//!
//! - [`names`]: typed, validated names ([`RunId`], [`ScopeName`],
//!   [`FunctionName`], [`StepName`], [`NodeId`]), one rule each.
//! - [`error_kind`]: [`ErrorKind`], which decides an error's kind string, HTTP
//!   status and WIT error case, and [`ErrorBody`], the error body of every
//!   HTTP API.

pub mod error_kind;
pub mod names;

pub use error_kind::{ErrorBody, ErrorKind, UnknownKind, WitErrorCase};
pub use names::{FunctionName, NameError, NodeId, RESERVED_SCOPE_PREFIX, RunId, ScopeName, StepName};
