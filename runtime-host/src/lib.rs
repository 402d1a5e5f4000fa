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

#![warn(missing_docs)]

pub mod bindings;
pub mod cluster;
pub mod config;
pub mod continuum;
mod error;
mod host;
pub mod peer;
pub mod schema;
pub mod serve;
pub mod state;
pub mod workflow;

pub use bindings::{DatabeltCtx, DatabeltCtxView, DatabeltView, HandOff, Invocation, RunScope, StateOps, add_to_linker};
pub use config::{BackendConfig, HostConfig, StateLimits};
pub use error::{Error, Result};
pub use host::{FunctionInfo, Host, HostBuilder, InvokeOptions, InvokeOutcome, StepReport, valid_function_name};
