//! A whole continuum on one machine (`databelt up`): the placement service
//! plus one host per node of a scenario, each listening on its node's
//! address with its own embedded store, serving the host API, the peer
//! protocol and the step protocol.
//!
//! A node address with port 0 gets a free port; the topology the placement
//! service serves then carries the real one (tests use this).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use databelt_host::{BackendConfig, Error, Host, HostConfig, Result};
use databelt_net::auth::{Credentials, MemberSecurity, Permission, TokenFile};
use databelt_net::continuum::Continuum;
use databelt_net::peer::PeerClient;
use databelt_net::placement::{PlacementClient, PlacementService};
use databelt_net::tls::{Authority, Identity, MemberTls, Members, Validity, client_config};
use databelt_net::workflow::{Runner, StepExecutor};
use databelt_placement::Topology;
use databelt_types::NodeId;
use tokio::sync::oneshot;

use crate::Emulator;

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the placement service listens (port 0: any free port).
    pub placement_listen: SocketAddr,
    /// Settings every host starts from; `node_id` and the redb path are set
    /// per node.
    pub host: HostConfig,
    /// Directory holding one sub-directory per node for its redb file, when
    /// `host.backend` is redb.
    pub data_dir: PathBuf,
    /// Timeout of peer requests (a push of a large state must fit in it).
    pub peer_timeout: Duration,
    /// The address other nodes reach a node at, when it is not the one it
    /// listens on (e.g. an emulated link in front of it); `None`: the
    /// listening address.
    pub advertise: Option<Advertise>,
    /// Emulate the scenario's links between the hosts (`databelt-testbed`):
    /// every node reaches every other one through a route carrying the live
    /// path's latency, jitter and bandwidth, re-read from the schedule every
    /// `refresh`. `None`: hosts talk over plain loopback.
    pub emulate: Option<Duration>,
    /// Turn authentication and TLS off (the development flag). Otherwise
    /// the cluster mints an ephemeral CA, a certificate for every node and
    /// the placement service, and an admin token ([`Cluster::credentials`]).
    pub insecure_development: bool,
    /// How the nodes ship their replicated scopes (`host.replicated`).
    pub replication: databelt_net::replication::ReplicatorConfig,
    /// The backend of the nodes of kind `cloud`, instead of `host.backend`:
    /// Redis as the global tier. Each cloud node gets its own key prefix
    /// (`{prefix}{node}:`) on the server.
    pub cloud_backend: Option<BackendConfig>,
}

/// Maps a node id and its listening address to the address the topology
/// advertises for it.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct Advertise(pub Arc<dyn Fn(&str, SocketAddr) -> Result<SocketAddr> + Send + Sync>);

impl std::fmt::Debug for Advertise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Advertise(..)")
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            placement_listen: SocketAddr::from(([127, 0, 0, 1], 7300)),
            host: HostConfig { max_concurrent_instances: 16, ..HostConfig::default() },
            data_dir: PathBuf::from("databelt-data/continuum"),
            peer_timeout: Duration::from_secs(60),
            advertise: None,
            emulate: None,
            insecure_development: false,
            replication: Default::default(),
            cloud_backend: None,
        }
    }
}

/// One node of a running cluster.
pub struct ClusterNode {
    /// Node id.
    pub id: String,
    /// Its address (`host:port`).
    pub address: String,
    /// Its host.
    pub host: Host,
    /// Its step executor (and through it, its continuum).
    pub executor: StepExecutor,
    /// What its servers enforce and its clients present.
    pub security: MemberSecurity,
    /// What ships its replicated scopes (`None` when it replicates none).
    pub replicator: Option<databelt_net::replication::Replicator>,
    stop: Option<oneshot::Sender<()>>,
}

impl ClusterNode {
    /// Stop this node's server and replicator (its state stays in its store).
    pub fn stop(&mut self) {
        self.replicator = None;
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A running continuum.
pub struct Cluster {
    /// Base URL of the placement service.
    pub placement_url: String,
    /// The topology as served (free ports filled in).
    pub topology: Topology,
    /// The nodes, in scenario order.
    pub nodes: Vec<ClusterNode>,
    /// The emulated links between the nodes, when asked for.
    pub emulator: Option<Emulator>,
    /// What a user of the cluster presents: trusts its CA, carries its
    /// admin token (plain and empty with `insecure_development`).
    pub credentials: Credentials,
    /// The cluster's admin token (`None` with `insecure_development`).
    pub admin_token: Option<String>,
    /// The cluster CA's certificate, PEM (`None` with
    /// `insecure_development`).
    pub ca_pem: Option<String>,
    /// The cluster's CA (to issue more certificates, e.g. in tests).
    pub authority: Option<Arc<Authority>>,
    placement_stop: Option<oneshot::Sender<()>>,
}

impl Cluster {
    /// Start the placement service and one host per node of `topology`.
    pub async fn start(mut topology: Topology, options: ClusterOptions) -> Result<Cluster> {
        topology.validate().map_err(|e| Error::Config(e.to_string()))?;
        let mut listeners = Vec::new();
        for node in &mut topology.nodes {
            if node.address.is_empty() {
                return Err(Error::Config(format!("node `{}` has no address", node.id)));
            }
            let listener = tokio::net::TcpListener::bind(node.address.as_str())
                .await
                .map_err(|e| Error::Config(format!("node `{}`: cannot listen on {}: {e}", node.id, node.address)))?;
            let addr = listener.local_addr().map_err(|e| Error::Runtime(e.to_string()))?;
            let advertised = match &options.advertise {
                Some(f) => (f.0)(&node.id, addr)?,
                None => addr,
            };
            node.address = advertised.to_string();
            listeners.push(listener);
        }
        let members = Members::of(topology.nodes.iter().map(|n| n.id.as_str()));
        let mut tokens = TokenFile::default();
        let (authority, admin_token) = if options.insecure_development {
            (None, None)
        } else {
            let authority = Authority::generate("databelt ephemeral continuum CA", Validity::days(30))?;
            (Some(Arc::new(authority)), Some(tokens.add("admin", vec![Permission::Admin], None)))
        };
        let security_of = |who: Identity| -> Result<MemberSecurity> {
            match &authority {
                None => Ok(MemberSecurity::development()),
                Some(ca) => {
                    let tls = MemberTls::new(&ca.issue(&who, Validity::days(30))?, members.clone())?;
                    Ok(MemberSecurity::new(&tls, &tokens, members.clone()))
                }
            }
        };
        let credentials = match &authority {
            None => Credentials::development(),
            Some(ca) => Credentials {
                tls: Some(client_config(ca.cert_pem(), None, members.clone())?),
                token: admin_token.clone(),
                node: None,
            },
        };
        let placement_security = security_of(Identity::Placement)?;
        let service = PlacementService::new(topology.clone()).map_err(|e| Error::Config(e.to_string()))?;
        let emulator = match options.emulate {
            Some(refresh) => {
                let listen: std::collections::HashMap<String, SocketAddr> = topology
                    .nodes
                    .iter()
                    .zip(&listeners)
                    .filter_map(|(n, l)| l.local_addr().ok().map(|a| (n.id.clone(), a)))
                    .collect();
                Some(
                    Emulator::start(&topology, &listen, service.origin(), refresh)
                        .map_err(|e| Error::Config(format!("link emulation: {e}")))?,
                )
            }
            None => None,
        };
        let (paddr, pstop) = service
            .spawn(options.placement_listen, placement_security.server.clone())
            .await
            .map_err(|e| Error::Config(format!("placement service on {}: {e}", options.placement_listen)))?;
        let placement_url = credentials.base_url(&paddr.to_string());
        let mut cluster = Cluster {
            placement_url,
            topology: topology.clone(),
            nodes: Vec::new(),
            emulator,
            ca_pem: authority.as_ref().map(|a| a.cert_pem().to_string()),
            authority: authority.clone(),
            credentials,
            admin_token,
            placement_stop: Some(pstop),
        };
        for (node, listener) in topology.nodes.iter().zip(listeners) {
            let mut config = options.host.clone();
            config.node_id = node.id.clone();
            // One configuration for every node: each replicates the scopes that list it.
            config.replicated.retain(|_, r| r.nodes.contains(&node.id));
            if node.kind == databelt_placement::NodeKind::Cloud
                && let Some(backend) = &options.cloud_backend
            {
                config.backend = match backend {
                    BackendConfig::Redis(r) => {
                        let mut r = r.clone();
                        r.prefix = format!("{}{}:", r.prefix, node.id);
                        BackendConfig::Redis(r)
                    }
                    other => other.clone(),
                };
            }
            if let BackendConfig::Redb { .. } = config.backend {
                let dir = options.data_dir.join(&node.id);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
                config.backend = BackendConfig::Redb { path: dir.join("databelt-state.redb") };
            }
            if config.functions_dir.is_some() {
                // Each node keeps its own deployments.
                config.functions_dir = Some(options.data_dir.join(&node.id).join("functions"));
            }
            let host = Host::new(config)?;
            let id = NodeId::new(&node.id)?;
            let security = security_of(Identity::Node(id))?;
            let placement = PlacementClient::new(&cluster.placement_url, &security.client, Duration::from_secs(2))
                .map_err(|e| Error::Runtime(e.to_string()))?;
            placement
                .refresh()
                .await
                .map_err(|e| Error::unreachable(format!("node `{}`: placement service", node.id), e))?;
            let peers = PeerClient::new(&security.client, Duration::from_secs(2), options.peer_timeout)?;
            let mut continuum = Continuum::new(&node.id, host.state().clone(), peers, placement);
            if let Some(e) = &cluster.emulator {
                continuum = continuum.with_routes(e.routes_from(&node.id));
            }
            let replicator = databelt_net::replication::Replicator::start(
                host.state().clone(),
                continuum.clone(),
                options.replication.clone(),
            );
            let executor = StepExecutor::new(host.clone(), continuum);
            let (tx, rx) = oneshot::channel::<()>();
            let (node_host, node_steps, server) = (host.clone(), executor.clone(), security.server.clone());
            tokio::spawn(async move {
                let shutdown = async {
                    let _ = rx.await;
                };
                let serving = databelt_net::api::serve_node(node_host, Some(node_steps), server, listener, shutdown);
                if let Err(e) = serving.await {
                    tracing::error!(error = %e, "node server failed");
                }
            });
            cluster.nodes.push(ClusterNode {
                id: node.id.clone(),
                address: node.address.clone(),
                host,
                executor,
                security,
                replicator,
                stop: Some(tx),
            });
        }
        Ok(cluster)
    }

    /// A runner of the workflow file at `path` on this cluster (components
    /// described with the compiled-code cache `cache_dir`, if any).
    pub async fn runner(&self, path: &std::path::Path, cache_dir: Option<PathBuf>) -> Result<Runner> {
        let placement = PlacementClient::new(&self.placement_url, &self.credentials, Duration::from_secs(2))
            .map_err(|e| Error::Config(format!("placement client: {e}")))?;
        Runner::load(path, placement, cache_dir).await
    }

    /// The node `id`.
    pub fn node(&self, id: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node `id`, mutably (to stop it).
    pub fn node_mut(&mut self, id: &str) -> Option<&mut ClusterNode> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// Stop the placement service only (hosts go on electing on their
    /// cached topology).
    pub fn stop_placement(&mut self) {
        if let Some(tx) = self.placement_stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stop everything.
    pub fn stop(&mut self) {
        self.stop_placement();
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
