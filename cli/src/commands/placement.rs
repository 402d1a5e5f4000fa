//! `databelt placement`: serve the placement service for a scenario.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use databelt_net::placement::PlacementService;
use databelt_placement::Topology;

use databelt_net::tls::Members;

use crate::input::{ctrl_c, runtime};
use crate::security::ServerArgs;

/// Flags of `databelt placement`.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario file (TOML topology), e.g. scenarios/paper-testbed.toml.
    #[arg(long)]
    scenario: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Directory for the service's token file (created with an admin token
    /// on first start).
    #[arg(long, default_value = "databelt-data/placement")]
    data_dir: PathBuf,
    #[command(flatten)]
    security: ServerArgs,
}

/// Run the command.
pub fn run(args: Args) -> Result<()> {
    let topology = Topology::from_file(&args.scenario)?;
    let members = Members::of(topology.nodes.iter().map(|n| n.id.as_str()));
    let service = PlacementService::new(topology)?;
    let security = args.security.member("placement", &args.data_dir, members, false)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let scheme = if security.server.tls.is_some() { "https" } else { "http" };
        eprintln!("databelt placement serving {} on {scheme}://{}", args.scenario.display(), listener.local_addr()?);
        service.serve(listener, security.server, ctrl_c()).await.context("placement service failed")
    })
}
