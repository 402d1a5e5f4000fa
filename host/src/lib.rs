//! # Databelt host
//!
//! Runs Databelt functions — WASI components of the `databelt:state/function`
//! world — on Wasmtime, and serves their state from a local tier shared by
//! every function on the host.
//!
//! - Standalone: [`Host`] (built with [`HostBuilder`]) deploys components,
//!   invokes them with deadlines and memory limits, and chains hand-offs.
//! - Embedded: [`add_to_linker`] mounts the Databelt interfaces on any
//!   `Linker<T>` whose `T` implements [`DatabeltView`].
//!
//! State lives behind the [`state::StateStore`] trait: [`state::RedbStore`]
//! (durable, the default) or [`state::MemoryStore`].

pub mod apps;
pub mod bindings;
pub mod budget;
pub mod config;
mod error;
pub mod grants;
mod host;
pub mod keyvalue;
pub mod prepared;
pub mod schema;
mod slots;
pub mod state;

pub use bindings::{
    DatabeltCtx, DatabeltCtxView, DatabeltView, HandOff, HasDatabelt, Invocation, RunScope, StateOps, add_to_linker,
};
pub use config::{BackendConfig, HostConfig, ReplicatedScope, StateLimits};
/// The shared vocabulary: typed names and error kinds (`databelt-types`).
pub use databelt_types as types;
pub use error::{Cause, Error, ErrorKind, Result};
pub use host::{FunctionInfo, Host, HostBuilder, InvokeOptions, InvokeOutcome, StepReport};
pub use prepared::Cleanup;

/// The embedding guide (`docs/embedding.md`), compiled as doc tests so its
/// examples stay true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/embedding.md")]
pub struct EmbeddingGuide;
