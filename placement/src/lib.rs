//! # Databelt placement
//!
//! The continuum model and the decisions taken on it:
//!
//! - [`topology`]: nodes, links with latency, jitter, bandwidth and time
//!   windows, loaded from TOML and validated; [`topology::Snapshot`] is the
//!   live graph at one instant.
//! - [`constellation`]: scenarios generated from orbits (Walker-delta
//!   shells or TLE catalogues, +Grid or nearest-neighbour links, ground
//!   stations, eclipses).
//! - [`tle`]: TLE parsing and SGP4 propagation, GMST and the sun's place.
//! - [`election`]: which node stores a step's output state so that the next
//!   step finds it local or near, within the step's SLO (pure).
//! - [`scheduler`]: which node runs a step — filters, weighted scores and
//!   the paper's baselines (pure).
//! - [`hints`]: the scheduler's answer for one function (pure).
//! - [`kube`]: the kube-scheduler extender API (filter, prioritize)
//!   answered by the scheduler (pure).
//! - [`workflow`]: workflow files: steps, nodes, SLOs, the DAG (pure).
//!
//! Nothing here does network I/O: the placement service that serves these
//! decisions over HTTP, and its client, live in `databelt-net`.

pub mod constellation;
pub mod election;
mod error;
pub mod hints;
pub mod kube;
pub mod scheduler;
pub mod tle;
pub mod topology;
pub mod workflow;

pub use election::{Decision, ElectionRequest, PathNode, StayReason, elect};
pub use error::{Error, Result};
pub use hints::{FunctionPlacement, FunctionRequest, place_function};
pub use scheduler::{Demand, Endpoint, NodeState, Schedule, Scheduler, SchedulerConfig};
pub use topology::{Link, LiveLink, Node, NodeKind, Resources, Route, RouteHop, Snapshot, Topology, Window};
pub use workflow::{Needs, Step, StepNode, Transaction, Workflow};
