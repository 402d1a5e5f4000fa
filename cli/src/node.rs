//! Reaching one node's API for the commands that act on the continuum as a
//! whole (`deploy`, `invoke <name>`, `runs`): the node given with `--node`,
//! or the placement service's cloud node.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use databelt_net::auth::Credentials;
use databelt_net::placement::PlacementClient;
use databelt_placement::NodeKind;

use crate::security::ClientArgs;

/// Which node to talk to, and as whom.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// The node's address (`host:port`). Default: the cloud node of the
    /// placement service's topology.
    #[arg(long)]
    pub node: Option<String>,
    /// The placement service of the continuum (to find a node).
    #[arg(long, default_value = "https://127.0.0.1:7300")]
    pub placement: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A client of one node's API.
pub struct NodeApi {
    /// The HTTP client (TLS and token as the flags say).
    pub http: reqwest::Client,
    /// The node's base URL.
    pub base: String,
}

impl NodeArgs {
    /// The node's API; `timeout` bounds each request.
    pub async fn connect(&self, timeout: Duration) -> Result<NodeApi> {
        let credentials: Credentials = self.client.credentials()?;
        let address = match &self.node {
            Some(a) => a.clone(),
            None => {
                let placement = PlacementClient::new(&self.placement, &credentials, Duration::from_secs(5))?;
                let view = placement.refresh().await.with_context(|| {
                    format!("cannot reach the placement service at {} (or pass --node)", self.placement)
                })?;
                let nodes = &view.topology.nodes;
                let node = nodes.iter().find(|n| n.kind == NodeKind::Cloud).or(nodes.first());
                node.map(|n| n.address.clone()).ok_or_else(|| anyhow!("the topology has no nodes"))?
            }
        };
        let http = credentials
            .client_builder()?
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .context("http client")?;
        Ok(NodeApi { base: credentials.base_url(&address), http })
    }
}

impl NodeApi {
    /// The JSON answer of a request, or its error body as an error.
    pub async fn json(&self, request: reqwest::RequestBuilder) -> Result<serde_json::Value> {
        let r = request.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = r.status();
        let text = r.text().await.context("reading the answer")?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("{} answered {status}: {message}", self.base);
        }
        if text.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).context("the answer is not JSON")
    }
}
