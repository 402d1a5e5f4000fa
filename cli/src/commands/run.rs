//! `databelt run`: run a component once. A Databelt function runs on an
//! input and its output is printed; a `wasi:cli/command` runs with the
//! arguments after `--` and `databelt` exits with its exit code.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use databelt_host::apps::ComponentKind;
use databelt_host::schema::{json_to_postcard, postcard_to_json};
use databelt_host::{Host, HostConfig, InvokeOptions};
use databelt_types::{NodeId, RunId};

use crate::config::HostArgs;
use crate::input::{function_name, read_json};

/// Flags of `databelt run`.
#[derive(clap::Args)]
pub struct Args {
    /// Path of the component (.wasm).
    component: PathBuf,
    /// The input as JSON, or `@path` to read JSON from a file. Converted to
    /// the function's input type through the schema it declares.
    #[arg(long, default_value = "null")]
    input: String,
    /// The run id (default: generated).
    #[arg(long)]
    run_id: Option<RunId>,
    /// Show each step of the run on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// This node's id, as functions see it.
    #[arg(long)]
    node_id: Option<NodeId>,
    #[command(flatten)]
    host: HostArgs,
    /// Arguments of a `wasi:cli/command` component (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// Run the command.
pub fn run(args: Args) -> Result<()> {
    let input = read_json(&args.input)?;
    let mut config = args.host.layer(HostConfig::default())?;
    if let Some(id) = args.node_id {
        config.node_id = id.into_string();
    }
    // One invocation and out: an instance made ahead would be made for
    // nothing (after the call, or for every function kept in the data
    // directory).
    config.prepared_instances = 0;
    let host = Host::new(config.clone())?;
    let name = function_name(&args.component);
    let bytes = std::fs::read(&args.component).with_context(|| format!("cannot read {}", args.component.display()))?;
    if host.component_kind(&bytes)? == ComponentKind::Command {
        // A command writes to the terminal like any program.
        drop(host);
        config.inherit_stdio = true;
        let host = Host::new(config)?;
        let mut argv = vec![name.to_string()];
        argv.extend(args.args);
        let code = host.run_command(&bytes, &argv)?;
        drop(host);
        std::process::exit(code);
    }
    if !args.args.is_empty() {
        bail!(
            "arguments after `--` are for wasi:cli/command components; `{name}` is not one (give a function its input with --input)"
        );
    }
    let info = host.deploy(&name, &bytes)?;
    let bytes = json_to_postcard(&info.input_schema, &input)?;
    let outcome = host.invoke(&name, &bytes, InvokeOptions { run_id: args.run_id, ..InvokeOptions::default() })?;
    if args.verbose {
        for s in &outcome.steps {
            eprintln!("step {} {} {:?}", s.step, s.function, s.duration);
        }
        eprintln!("run {}", outcome.run_id);
    }
    let out_schema = host.function(&outcome.function)?.output_schema;
    let output = postcard_to_json(&out_schema, &outcome.output)?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
