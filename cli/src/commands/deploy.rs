//! `databelt deploy`: install a workflow in a running continuum once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use databelt_net::workflow::durable::Bundle;
use databelt_placement::Workflow;

use crate::input::runtime;
use crate::node::NodeArgs;

/// Flags of `databelt deploy`.
#[derive(clap::Args)]
pub struct Args {
    /// Workflow file (TOML); component paths are relative to it.
    workflow: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

/// Run the command.
pub fn run(args: Args) -> Result<()> {
    let toml = std::fs::read_to_string(&args.workflow)
        .with_context(|| format!("cannot read the workflow {}", args.workflow.display()))?;
    let workflow = Workflow::from_toml(&toml).with_context(|| args.workflow.display().to_string())?;
    let base = args.workflow.parent().map(PathBuf::from).unwrap_or_default();
    let mut components = Vec::new();
    for s in &workflow.steps {
        let path = base.join(&s.component);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("step `{}`: cannot read component {}", s.name, path.display()))?;
        components.push((s.name.clone(), bytes));
    }
    let body = postcard::to_stdvec(&Bundle { toml, components })?;
    runtime()?.block_on(async move {
        let api = args.node.connect(Duration::from_secs(120)).await?;
        let url = format!("{}/workflows/{}", api.base, workflow.name);
        let answer = api.json(api.http.put(url).body(body)).await?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        Ok(())
    })
}
