//! The emulated continuum testbed. The kernel's netem is not available on
//! the machines Databelt is developed and evaluated on, so links are
//! emulated in user space: every connection between two hosts passes
//! through a [`link::Link`] — a TCP proxy that applies the link's one-way
//! latency, jitter and bandwidth (shared by all connections over it), and
//! refuses connections while the link is down.
//!
//! The emulation belongs to the testbed only; hosts talk plain TCP and do
//! not know whether a link is emulated.
//!
//! [`cluster::Cluster`] puts a whole continuum in one process (the
//! placement service and one host per node of a scenario, optionally behind
//! the emulated links): `databelt up`, the paper's evaluation and the
//! workflow tests run on it.

pub mod cluster;
pub mod emulator;
pub mod link;

pub use cluster::{Cluster, ClusterOptions};
pub use emulator::Emulator;
pub use link::{Link, LinkSpec};

/// Errors of the testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be opened.
    #[error("link {0}: {1}")]
    Io(String, std::io::Error),
    /// A link's parameters are not usable.
    #[error("bad link spec: {0}")]
    BadSpec(String),
}
