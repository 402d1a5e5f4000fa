//! `databelt`: run Databelt functions from the command line, serve them over
//! HTTP, start and drive a continuum, benchmark it. One file per command
//! under `commands/`; configuration layering in `config.rs`.

mod commands;
mod config;
mod input;
mod node;
mod report;
mod security;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Databelt: stateful serverless functions as WASI components.
#[derive(Parser)]
#[command(name = "databelt", version, about, propagate_version = true)]
struct Cli {
    /// Export `tracing` spans (HTTP requests, invocations, state calls) to
    /// this OpenTelemetry collector over OTLP/HTTP, e.g.
    /// `http://127.0.0.1:4318`. Also switched on by the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variable.
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a component once on an input and print its output as JSON.
    Run(commands::run::Args),
    /// Serve the HTTP API: deploy, list and invoke functions by name.
    Serve(commands::serve::Args),
    /// Print a component's function name and input/output types.
    Describe(commands::describe::Args),
    /// Serve the placement service (topology, SLOs, hints) for a scenario.
    Placement(commands::placement::Args),
    /// Start a whole continuum on this machine: the placement service and
    /// one host per node of a scenario, on the addresses it gives.
    Up(commands::up::Args),
    /// Install a workflow in a running continuum (kept across restarts).
    Deploy(commands::deploy::Args),
    /// Run a workflow across a running continuum: a deployed one by name (a
    /// durable run), or a workflow file driven by this process.
    Invoke(commands::invoke::Args),
    /// The durable runs started on a node: list, show, wait.
    #[command(subcommand)]
    Runs(commands::runs::Command),
    /// Look at and fix function state, in a data directory or on a running
    /// host: `state ls|get|put|rm --scope …`.
    #[command(subcommand)]
    State(commands::state::Command),
    /// Elect the storage node for one state transfer and explain the answer.
    Elect(commands::elect::Args),
    /// The continuum's certificate authority and member certificates.
    #[command(subcommand)]
    Certs(commands::certs::Command),
    /// Generate scenario files: `scenario walker` builds one from orbits.
    #[command(subcommand)]
    Scenario(commands::scenario::Command),
    /// Benchmarks that need a whole continuum.
    #[command(subcommand)]
    Bench(commands::bench::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = match telemetry::init(cli.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Describe(a) => commands::describe::run(a),
        Command::Placement(a) => commands::placement::run(a),
        Command::Up(a) => commands::up::run(a),
        Command::Deploy(a) => commands::deploy::run(a),
        Command::Invoke(a) => commands::invoke::run(a),
        Command::Runs(c) => commands::runs::run(c),
        Command::State(c) => commands::state::run(c),
        Command::Elect(a) => commands::elect::run(a),
        Command::Certs(c) => commands::certs::run(c),
        Command::Scenario(c) => commands::scenario::run(c),
        Command::Bench(c) => commands::bench::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each once: a cause whose text the
/// message before it already ends with is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        if parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}
