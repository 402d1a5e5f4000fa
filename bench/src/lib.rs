//! # Databelt evaluation
//!
//! Experiments that need a whole continuum, kept out of the embeddable host
//! and the network layer:
//!
//! - [`paper`]: the Databelt paper's evaluation on an emulated testbed
//!   (latency per state size, throughput per concurrency, five policies),
//!   written as CSV, Markdown and SVG plots (`databelt bench paper`).
//! - [`scheduling`]: the scheduler evaluation — a simulated day on a
//!   generated constellation, the Databelt scheduler against first-fit,
//!   round-robin and random (`databelt bench scheduler`).
//! - [`median`]: a median and its distribution-free confidence interval
//!   (how far a case's figure can be trusted).
//!
//! Criterion benchmarks that need a cluster live in `benches/` (`fusion`).

pub mod median;
pub mod paper;
pub mod scheduling;
