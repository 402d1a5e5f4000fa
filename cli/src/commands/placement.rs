//! `databelt placement`: serve the placement service for a scenario.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use databelt_net::placement::PlacementService;
use databelt_placement::Topology;

use crate::input::{ctrl_c, runtime};

/// Flags of `databelt placement`.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario file (TOML topology), e.g. scenarios/paper-testbed.toml.
    #[arg(long)]
    scenario: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
}

/// Run the command.
pub fn run(args: Args) -> Result<()> {
    let topology = Topology::from_file(&args.scenario)?;
    let service = PlacementService::new(topology)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!("databelt placement serving {} on http://{}", args.scenario.display(), listener.local_addr()?);
        service.serve(listener, ctrl_c()).await.context("placement service failed")
    })
}
