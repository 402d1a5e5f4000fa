//! Workflows across a continuum: the step protocol between a runner and
//! the hosts ([`protocol`]), the host side that runs a step and hands its
//! output on ([`StepExecutor`]), and the runner that drives whole runs
//! ([`Runner`]).

pub mod capability;
pub mod durable;
mod executor;
pub mod protocol;
mod runner;

pub use executor::StepExecutor;
pub use runner::{Cleanup, RunOptions, RunReport, Runner, StepLine, percentile};
