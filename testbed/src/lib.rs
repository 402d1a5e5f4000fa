//! The emulated continuum testbed. The kernel's netem is not available on
//! the machines Databelt is developed and evaluated on, so links are
//! emulated in user space: every connection between two hosts passes
//! through a [`link::Link`] — a TCP proxy that applies the link's one-way
//! latency, jitter and bandwidth (shared by all connections over it), and
//! refuses connections while the link is down.
//!
//! The emulation belongs to the testbed only; hosts talk plain TCP and do
//! not know whether a link is emulated.

pub mod emulator;
pub mod link;

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
