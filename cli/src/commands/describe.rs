//! `databelt describe`: a component's function name and input/output types.

use std::path::PathBuf;

use anyhow::Result;
use databelt_host::{BackendConfig, Host, HostConfig};

use crate::input::function_name;

/// Flags of `databelt describe`.
#[derive(clap::Args)]
pub struct Args {
    /// Path of the component (.wasm).
    component: PathBuf,
}

/// Run the command.
pub fn run(args: Args) -> Result<()> {
    let config = HostConfig { backend: BackendConfig::Memory, cache_dir: None, ..HostConfig::default() };
    let host = Host::new(config)?;
    let info = host.deploy_file(&function_name(&args.component), &args.component)?;
    println!("function: {}", info.source_name);
    println!("input:    {}", info.input_schema);
    println!("output:   {}", info.output_schema);
    Ok(())
}
