//! # Databelt network layer
//!
//! Everything that crosses a network, built on the embeddable host core
//! (`databelt-host`), which never depends on this crate:
//!
//! - [`api`]: the host HTTP API (deploy, list, invoke functions).
//! - [`peer`]: the peer protocol between hosts (state reads and writes,
//!   batches, fusion sandboxes) and its client; [`batch_body`] streams its
//!   batch writes at both ends.
//! - [`placement`]: the placement service (topology, SLOs, hints) and the
//!   hosts' client of it, over the pure decisions of `databelt-placement`.
//! - [`continuum`]: the continuous data path: SLO-aware propagation of a
//!   step's output state and the tiered read path.
//! - [`replication`]: replicated scopes across nodes: the replicator that
//!   ships each replica's log, and session-guarded client reads and writes.
//! - [`workflow`]: the step protocol (one step on one host), the step
//!   executor and the workflow runner.
//! - [`http`]: what every API shares: the error body, status and kind
//!   decoding, body limits, blocking work.
//! - [`server`]: the accept loop of every server, with connection limits.
//! - [`metrics`]: Prometheus metrics (`GET /metrics`) and request tracing;
//!   [`trace_context`] carries a trace across nodes (W3C `traceparent`).
//! - [`tls`]: mutual TLS between the members of a continuum (CA, member
//!   certificates that name their node, verifiers).
//! - [`auth`]: who may call what — node certificates, bearer tokens with
//!   permissions, run capabilities.

pub mod api;
pub mod auth;
pub mod batch_body;
pub mod continuum;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod placement;
pub mod replication;
pub mod server;
pub mod tls;
pub mod trace_context;
pub mod workflow;

pub use databelt_host::{Error, ErrorKind, Result};
