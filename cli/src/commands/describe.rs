//! `databelt describe`: a component's function name and its input and output
//! types written out in full (every struct and enum they reach, with fields
//! and variants).

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
    print_type("input:   ", &databelt_host::schema::list_type(&info.input_schema));
    print_type("output:  ", &databelt_host::schema::list_type(&info.output_schema));
    Ok(())
}

/// `label` and the type expression on one line, then each definition it
/// reaches indented below it.
fn print_type(label: &str, listing: &str) {
    let mut lines = listing.lines();
    println!("{label} {}", lines.next().unwrap_or_default());
    for line in lines {
        println!("            {line}");
    }
}
