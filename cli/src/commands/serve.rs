//! `databelt serve`: the host HTTP API, and with `--placement` the peer
//! and step protocols of a continuum node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use databelt_host::grants::ScopeGrants;
use databelt_host::{Host, HostConfig};
use databelt_net::continuum::Continuum;
use databelt_net::peer::PeerClient;
use databelt_net::placement::PlacementClient;
use databelt_net::workflow::StepExecutor;
use databelt_types::NodeId;

use databelt_net::auth::MemberSecurity;
use databelt_net::tls::Members;

use crate::config::HostArgs;
use crate::input::{ctrl_c, runtime};
use crate::security::ServerArgs;

/// Flags of `databelt serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Deploy a component at start: `name=path/to/component.wasm`
    /// (repeatable). A Databelt function is invoked at
    /// `/functions/{name}/invoke`; a `wasi:http/proxy` component is served at
    /// `/http/{name}/…`.
    #[arg(long, value_name = "NAME=PATH")]
    deploy: Vec<String>,
    /// The scopes a `--deploy`ed function may open: `NAME=scope:rw,other:ro`
    /// (repeatable); without, every scope the host allows.
    #[arg(long, value_name = "NAME=SCOPES")]
    scopes: Vec<String>,
    /// Join a continuum: the placement service's URL. Enables the peer
    /// hand-offs and the step protocol (`/workflow/v1/...`); `--node-id`
    /// must name this node in the service's topology.
    #[arg(long)]
    placement: Option<String>,
    /// This node's id, as functions and the continuum see it.
    #[arg(long)]
    node_id: Option<NodeId>,
    /// Give up on a peer from which nothing has arrived for this long, ms
    /// (a frozen or silently gone peer fails a hand-off after this, not
    /// after the whole transfer's 60 s bound).
    #[arg(long, default_value_t = 10_000)]
    peer_read_timeout_ms: u64,
    #[command(flatten)]
    host: HostArgs,
    #[command(flatten)]
    security: ServerArgs,
}

/// Where `serve` keeps its data (tokens, and unless the config file says
/// otherwise its state) without `--data-dir`.
const DEFAULT_DATA_DIR: &str = "databelt-data";

/// Run the command.
pub fn run(args: Args) -> Result<()> {
    let mut config = args.host.layer(HostConfig::default())?;
    if let Some(id) = args.node_id {
        config.node_id = id.into_string();
    }
    if config.functions_dir.is_none() && !args.host.memory {
        // Deployments survive a restart, next to the state.
        let data_dir = args.host.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        config.functions_dir = Some(data_dir.join("functions"));
    }
    let host = Host::new(config)?;
    for spec in &args.deploy {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("--deploy takes NAME=PATH, got `{spec}`");
        };
        let grants = args
            .scopes
            .iter()
            .filter_map(|spec| spec.split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, scopes)| ScopeGrants::parse(scopes))
            .transpose()
            .with_context(|| format!("--scopes for `{name}`"))?;
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        if host.component_kind(&bytes)? == databelt_host::apps::ComponentKind::HttpProxy {
            host.deploy_app(name, &bytes).with_context(|| format!("deploying app `{name}`"))?;
            continue;
        }
        host.deploy_with_scopes(name, &bytes, grants).with_context(|| format!("deploying `{name}`"))?;
    }
    let data_dir = args.host.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let members = Members::default();
    let node = host.config().node_id.clone();
    let security = args.security.member(&node, &data_dir, members.clone(), args.placement.is_some())?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let scheme = if security.server.tls.is_some() { "https" } else { "http" };
        eprintln!("databelt serving on {scheme}://{}", listener.local_addr()?);
        let steps = match &args.placement {
            Some(url) => Some(join_continuum(&host, url, &security, &members, args.peer_read_timeout_ms).await?),
            None => None,
        };
        // Replicated scopes ship their logs for as long as the server runs.
        let _replicator = steps.as_ref().and_then(|s| {
            databelt_net::replication::Replicator::start(
                host.state().clone(),
                s.continuum().clone(),
                Default::default(),
            )
        });
        databelt_net::api::serve_node(host, steps, security.server, listener, ctrl_c()).await.context("server failed")
    })
}

/// The step executor of this host as a node of the continuum whose
/// placement service is at `url`; `members` become the topology's nodes.
async fn join_continuum(
    host: &Host,
    url: &str,
    security: &MemberSecurity,
    members: &Members,
    peer_read_timeout_ms: u64,
) -> Result<StepExecutor> {
    let placement = PlacementClient::new(url, &security.client, Duration::from_secs(2))?;
    let view = placement.refresh().await.with_context(|| format!("placement service at {url}"))?;
    let id = host.config().node_id.clone();
    if view.topology.node(&id).is_none() {
        bail!("node id `{id}` is not in the placement service's topology (set it with --node-id)");
    }
    members.set(view.topology.nodes.iter().map(|n| n.id.as_str()));
    let read = Duration::from_millis(peer_read_timeout_ms.max(1));
    let peers = PeerClient::with_read_timeout(&security.client, Duration::from_secs(2), read, Duration::from_secs(60))?;
    let continuum = Continuum::new(&id, host.state().clone(), peers, placement);
    Ok(StepExecutor::new(host.clone(), continuum))
}
