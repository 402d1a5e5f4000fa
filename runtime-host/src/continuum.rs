//! The continuous data path between hosts: SLO-aware propagation of a
//! step's output state, locators, and the tiered read path.
//!
//! - [`Continuum::propagate`] elects the storage node for a state (asking
//!   the placement service, or electing locally on the cached topology when
//!   it is unreachable), pushes the state there and waits for the receiver's
//!   acknowledgement. Only an acknowledged push moves the [`Locator`]; if the
//!   elected node cannot be reached the producer keeps its copy and the
//!   locator names the producer — never a node that does not hold the state.
//! - [`Continuum::read`] looks for a state local → the node the locator
//!   names → live neighbours → the cloud node, and counts hits and misses per
//!   tier ([`ReadStats`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use databelt_placement::service::{HintSource, PlacementClient};
use databelt_placement::{Decision, ElectionRequest, NodeKind, StayReason, Topology};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::peer::{BatchPut, PeerClient, Place};
use crate::state::StateTier;

/// Where a state handed to the next step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    /// Scope of the state.
    pub scope: String,
    /// Key of the state.
    pub key: String,
    /// The node that holds it (acknowledged).
    pub node: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Whether it is in the node's store or in the run's fusion sandbox there.
    #[serde(default)]
    pub place: Place,
}

/// What one batched propagation did.
#[derive(Debug, Clone)]
pub struct BatchPropagation {
    /// The node holding the batch now: the target if it acknowledged, else
    /// this node.
    pub node: String,
    /// The policy that chose the target.
    pub policy: Policy,
    /// The election's decision (`None` under the stateless policy).
    pub decision: Option<Decision>,
    /// Where the decision came from.
    pub source: HintSource,
    /// Bytes sent to another node (0 when the batch stayed).
    pub bytes_moved: u64,
    /// Time of the election and the transfer.
    pub duration: Duration,
    /// The transfer took longer than `tmax_ms`, or the election found that
    /// no placement meets it ([`Decision::slo_missed`]).
    pub slo_violated: bool,
    /// Why the push failed, if it did (the batch then stays here).
    pub push_failed: Option<String>,
    /// The entries, handed back (a push does not consume them).
    pub entries: Vec<(String, Vec<u8>)>,
}

/// What one propagation did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Propagation {
    /// Where the state is now.
    pub locator: Locator,
    /// The policy that chose the target.
    pub policy: Policy,
    /// The election's answer (`None` under [`Policy::Stateless`], which
    /// does not elect).
    pub decision: Option<Decision>,
    /// Whether the service or the local cache elected.
    pub source: HintSource,
    /// Bytes sent to another node (0 when the state stayed).
    pub bytes_moved: u64,
    /// Wall time of election plus transfer.
    pub duration: Duration,
    /// The transfer took longer than the step's Tmax, or the election found
    /// that no placement meets it ([`Decision::slo_missed`]).
    pub slo_violated: bool,
    /// Set when the elected node could not take the state; it stayed here.
    pub push_failed: Option<String>,
    /// Every node that holds a copy after this propagation (the producer
    /// keeps its own): what garbage collection must clean.
    pub copies: Vec<String>,
}

/// Where a step's output state goes: Databelt's election and the paper's
/// two baselines, selectable per run for comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The elected node: nearest the consumer within Tmax (SLO-aware); when
    /// no node fits Tmax, the node nearest the consumer the links reach
    /// ([`Decision::BestEffort`]).
    #[default]
    Databelt,
    /// A node drawn uniformly from the producer → consumer path.
    Random,
    /// Every state is kept in the cloud node only (the producer's copy is
    /// dropped once the cloud has acknowledged it).
    Stateless,
    /// Databelt's election with the paper prototype's rule for a missed SLO:
    /// when no node fits Tmax the state stays on the producer (the consumer
    /// then pulls it while it waits) instead of going as near the consumer
    /// as the links allow.
    Strict,
}

impl Policy {
    /// Every policy, in the order reports list them.
    pub const ALL: [Policy; 4] = [Policy::Stateless, Policy::Random, Policy::Databelt, Policy::Strict];

    /// Its name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Databelt => "databelt",
            Policy::Random => "random",
            Policy::Stateless => "stateless",
            Policy::Strict => "strict",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Policy> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::BadInput(format!("unknown policy `{s}`: use databelt, strict, random or stateless")))
    }
}

/// A state found by [`Continuum::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadHit {
    /// The value.
    pub value: Vec<u8>,
    /// The tier that served it.
    pub tier: ReadTier,
    /// The node that served it.
    pub node: String,
}

/// The tier a read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadTier {
    /// This node's own store.
    Local,
    /// The node the locator names.
    Locator,
    /// A live neighbour of this node.
    Neighbour,
    /// The cloud (global) node.
    Cloud,
}

impl ReadTier {
    /// Its name in reports: `local`, `locator`, `neighbour` or `cloud`.
    pub fn name(self) -> &'static str {
        match self {
            ReadTier::Local => "local",
            ReadTier::Locator => "locator",
            ReadTier::Neighbour => "neighbour",
            ReadTier::Cloud => "cloud",
        }
    }
}

/// Hits per tier and misses, since the counters were created.
#[derive(Debug, Default)]
pub struct ReadStats {
    local: AtomicU64,
    locator: AtomicU64,
    neighbour: AtomicU64,
    cloud: AtomicU64,
    misses: AtomicU64,
}

/// A copy of [`ReadStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCounts {
    /// Served by the reading node itself.
    pub local: u64,
    /// Served by the node the locator named.
    pub locator: u64,
    /// Served by a neighbour.
    pub neighbour: u64,
    /// Served by the cloud node.
    pub cloud: u64,
    /// Found nowhere.
    pub misses: u64,
}

impl ReadCounts {
    /// Share of reads served by the reading node itself (0 when none).
    pub fn local_availability(&self) -> f64 {
        let total = self.local + self.locator + self.neighbour + self.cloud + self.misses;
        if total == 0 { 0.0 } else { self.local as f64 / total as f64 }
    }
}

impl ReadStats {
    fn count(&self, tier: Option<ReadTier>) {
        let c = match tier {
            Some(ReadTier::Local) => &self.local,
            Some(ReadTier::Locator) => &self.locator,
            Some(ReadTier::Neighbour) => &self.neighbour,
            Some(ReadTier::Cloud) => &self.cloud,
            None => &self.misses,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ReadCounts {
        ReadCounts {
            local: self.local.load(Ordering::Relaxed),
            locator: self.locator.load(Ordering::Relaxed),
            neighbour: self.neighbour.load(Ordering::Relaxed),
            cloud: self.cloud.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// One host's view of the continuum.
#[derive(Clone)]
pub struct Continuum {
    node_id: String,
    tier: StateTier,
    peers: PeerClient,
    placement: PlacementClient,
    stats: Arc<ReadStats>,
    routes: Arc<std::collections::HashMap<String, String>>,
}

impl Continuum {
    /// The continuum as seen by node `node_id`, whose local state is `tier`.
    /// `placement` must have a topology (fetched with `refresh` or given with
    /// `seed`) before state can move while the service is down.
    pub fn new(node_id: &str, tier: StateTier, peers: PeerClient, placement: PlacementClient) -> Continuum {
        Continuum {
            node_id: node_id.to_string(),
            tier,
            peers,
            placement,
            stats: Arc::new(ReadStats::default()),
            routes: Arc::default(),
        }
    }

    /// Reach the nodes in `routes` (node id → `host:port`) at these
    /// addresses instead of the topology's — how an emulated testbed puts a
    /// link between this node and each other one.
    pub fn with_routes(mut self, routes: std::collections::HashMap<String, String>) -> Continuum {
        self.routes = Arc::new(routes);
        self
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The read counters of this node.
    pub fn stats(&self) -> ReadCounts {
        self.stats.snapshot()
    }

    fn topology(&self) -> Result<(Topology, u64)> {
        self.placement
            .cached()
            .ok_or_else(|| Error::Unavailable("no topology: the placement service was never reached".into()))
    }

    fn address(&self, topology: &Topology, node: &str) -> Result<String> {
        if let Some(route) = self.routes.get(node) {
            return Ok(route.clone());
        }
        match topology.node(node) {
            Some(n) if !n.address.is_empty() => Ok(n.address.clone()),
            Some(_) => Err(Error::Unavailable(format!("node `{node}` has no peer address"))),
            None => Err(Error::Unavailable(format!("node `{node}` is not in the topology"))),
        }
    }

    /// Move the state under `scope/key` (stored on this node) toward the
    /// node where the next step runs, within `tmax_ms`, with the Databelt
    /// policy (see [`Continuum::propagate_with`]).
    pub async fn propagate(
        &self,
        run_id: &str,
        scope: &str,
        key: &str,
        consumer: &str,
        tmax_ms: f64,
        ttl_ms: Option<u64>,
    ) -> Result<Propagation> {
        self.propagate_with(Policy::Databelt, run_id, scope, key, consumer, tmax_ms, ttl_ms).await
    }

    /// Move the state under `scope/key` (stored on this node) to where
    /// `policy` puts it for a consumer on node `consumer`, and wait for the
    /// receiver's acknowledgement. A failed push leaves the state here and
    /// the locator names this node.
    #[allow(clippy::too_many_arguments)]
    pub async fn propagate_with(
        &self,
        policy: Policy,
        run_id: &str,
        scope: &str,
        key: &str,
        consumer: &str,
        tmax_ms: f64,
        ttl_ms: Option<u64>,
    ) -> Result<Propagation> {
        let started = Instant::now();
        let tier = self.tier.clone();
        let (s, k) = (scope.to_string(), key.to_string());
        let value = tokio::task::spawn_blocking(move || tier.get(&s, &k))
            .await
            .map_err(|e| Error::Runtime(format!("worker failed: {e}")))??
            .ok_or_else(|| Error::BadInput(format!("no state `{scope}/{key}` on node `{}`", self.node_id)))?;
        let size_bytes = value.len() as u64;
        let (decision, source, target) = self.choose(policy, size_bytes, consumer, tmax_ms).await?;
        let missed = decision.as_ref().is_some_and(Decision::slo_missed);
        let here =
            Locator { scope: scope.into(), key: key.into(), node: self.node_id.clone(), size_bytes, place: Place::Store };
        let stayed = |duration, push_failed| Propagation {
            locator: here.clone(),
            policy,
            decision: decision.clone(),
            source,
            bytes_moved: 0,
            duration,
            slo_violated: missed,
            push_failed,
            copies: vec![self.node_id.clone()],
        };
        if target == self.node_id {
            return Ok(stayed(started.elapsed(), None));
        }
        let pushed = match self.topology().and_then(|(t, _)| self.address(&t, &target)) {
            Ok(addr) => self.peers.put(&addr, run_id, scope, key, value, ttl_ms).await,
            Err(e) => Err(e),
        };
        let duration = started.elapsed();
        let slo_violated = missed || duration.as_secs_f64() * 1000.0 > tmax_ms;
        match pushed {
            Ok(()) => {
                let mut copies = vec![self.node_id.clone(), target.clone()];
                if policy == Policy::Stateless {
                    // The cloud holds it now; the producer keeps nothing.
                    let tier = self.tier.clone();
                    let (s, k) = (scope.to_string(), key.to_string());
                    tokio::task::spawn_blocking(move || tier.delete(&s, &k))
                        .await
                        .map_err(|e| Error::Runtime(format!("worker failed: {e}")))??;
                    copies.remove(0);
                }
                Ok(Propagation {
                    copies,
                    locator: Locator { node: target, ..here.clone() },
                    policy,
                    decision: decision.clone(),
                    source,
                    bytes_moved: size_bytes,
                    duration,
                    slo_violated,
                    push_failed: None,
                })
            }
            Err(e) => {
                tracing::warn!(%run_id, %target, error = %e, "push failed; the state stays on the producer");
                let mut p = stayed(duration, Some(e.to_string()));
                p.slo_violated = slo_violated;
                Ok(p)
            }
        }
    }

    /// Move several states of one scope, held by the caller, to where
    /// `policy` puts them for a consumer on node `consumer` (elected on their
    /// total size), as one batch into `place` on the target, and wait for the
    /// acknowledgement. When the target is this node, or the push fails,
    /// nothing is sent and `node` is this node: the caller keeps them.
    #[allow(clippy::too_many_arguments)]
    pub async fn propagate_batch(
        &self,
        policy: Policy,
        run_id: &str,
        place: Place,
        scope: &str,
        entries: Vec<(String, Vec<u8>)>,
        consumer: &str,
        tmax_ms: f64,
        ttl_ms: Option<u64>,
    ) -> Result<BatchPropagation> {
        let started = Instant::now();
        let size_bytes: u64 = entries.iter().map(|(_, v)| v.len() as u64).sum();
        let (decision, source, target) = self.choose(policy, size_bytes, consumer, tmax_ms).await?;
        let missed = decision.as_ref().is_some_and(Decision::slo_missed);
        let mut result = BatchPropagation {
            node: self.node_id.clone(),
            policy,
            decision,
            source,
            bytes_moved: 0,
            duration: Duration::ZERO,
            slo_violated: missed,
            push_failed: None,
            entries: Vec::new(),
        };
        if target == self.node_id {
            result.entries = entries;
            result.duration = started.elapsed();
            return Ok(result);
        }
        let batch = BatchPut { scope: scope.to_string(), entries, ttl_ms };
        let pushed = match self.topology().and_then(|(t, _)| self.address(&t, &target)) {
            Ok(addr) => self.peers.batch_put_to(&addr, run_id, place, &batch).await,
            Err(e) => Err(e),
        };
        result.duration = started.elapsed();
        result.slo_violated |= result.duration.as_secs_f64() * 1000.0 > tmax_ms;
        result.entries = batch.entries;
        match pushed {
            Ok(()) => {
                result.node = target;
                result.bytes_moved = size_bytes;
            }
            Err(e) => {
                tracing::warn!(%run_id, %target, error = %e, "batch push failed; the states stay on the producer");
                result.push_failed = Some(e.to_string());
            }
        }
        Ok(result)
    }

    /// Fetch `keys` of `scope` from `place` on `node` in one request.
    pub async fn fetch_batch(
        &self,
        run_id: &str,
        node: &str,
        place: Place,
        scope: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let (topology, _) = self.topology()?;
        let addr = self.address(&topology, node)?;
        self.peers.batch_get_from(&addr, run_id, place, &crate::peer::BatchGet { scope: scope.to_string(), keys }).await
    }

    /// Fetch `scope/key` from `place` on `node`.
    pub async fn fetch(&self, run_id: &str, node: &str, place: Place, scope: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let (topology, _) = self.topology()?;
        let addr = self.address(&topology, node)?;
        self.peers.get_from(&addr, run_id, place, scope, key).await
    }

    /// Where `policy` puts a state of `size_bytes` for a consumer on node
    /// `consumer`: the election's decision (none for stateless), where it
    /// came from, and the target node.
    async fn choose(
        &self,
        policy: Policy,
        size_bytes: u64,
        consumer: &str,
        tmax_ms: f64,
    ) -> Result<(Option<Decision>, HintSource, String)> {
        let request = ElectionRequest {
            producer: self.node_id.clone(),
            consumer: consumer.to_string(),
            size_bytes,
            tmax_ms,
        };
        let chosen = match policy {
            Policy::Databelt | Policy::Random | Policy::Strict => {
                let (mut decision, source) = self
                    .placement
                    .storage_hint(&request)
                    .await
                    .map_err(|e| Error::Unavailable(format!("cannot elect a storage node: {e}")))?;
                if let (Policy::Strict, Decision::BestEffort { path, .. }) = (policy, &decision) {
                    decision = Decision::Stay { reason: StayReason::NoNodeFits, path: path.clone() };
                }
                let path = decision.path();
                let target = if policy == Policy::Random && !path.is_empty() {
                    path[rand::random_range(0..path.len())].node.clone()
                } else {
                    decision.target(&request).to_string()
                };
                (Some(decision), source, target)
            }
            Policy::Stateless => {
                let (topology, _) = self.topology()?;
                let cloud = topology
                    .nodes
                    .iter()
                    .find(|n| n.kind == NodeKind::Cloud)
                    .ok_or_else(|| Error::Unavailable("the stateless policy needs a cloud node; the topology has none".into()))?;
                (None, HintSource::LocalCache, cloud.id.clone())
            }
        };
        Ok(chosen)
    }

    /// Read the state `locator` names: local → the locator's node → live
    /// neighbours → the cloud node. `Ok(None)` when no tier has it.
    pub async fn read(&self, run_id: &str, locator: &Locator) -> Result<Option<ReadHit>> {
        let tier = self.tier.clone();
        let (s, k) = (locator.scope.clone(), locator.key.clone());
        let local = tokio::task::spawn_blocking(move || tier.get(&s, &k))
            .await
            .map_err(|e| Error::Runtime(format!("worker failed: {e}")))??;
        if let Some(v) = local {
            self.stats.count(Some(ReadTier::Local));
            return Ok(Some(ReadHit { value: v, tier: ReadTier::Local, node: self.node_id.clone() }));
        }
        let (topology, t) = self.topology()?;
        let snapshot = topology.snapshot(t);
        let mut tried = vec![self.node_id.clone()];
        let mut candidates: Vec<(String, ReadTier)> = vec![(locator.node.clone(), ReadTier::Locator)];
        candidates.extend(snapshot.neighbours(&self.node_id).into_iter().map(|n| (n, ReadTier::Neighbour)));
        candidates.extend(
            topology.nodes.iter().filter(|n| n.kind == NodeKind::Cloud).map(|n| (n.id.clone(), ReadTier::Cloud)),
        );
        for (node, tier) in candidates {
            if tried.contains(&node) {
                continue;
            }
            tried.push(node.clone());
            let Ok(addr) = self.address(&topology, &node) else { continue };
            match self.peers.get_from(&addr, run_id, locator.place, &locator.scope, &locator.key).await {
                Ok(Some(v)) => {
                    self.stats.count(Some(tier));
                    return Ok(Some(ReadHit { value: v, tier, node }));
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(%node, error = %e, "read tier unavailable"),
            }
        }
        self.stats.count(None);
        Ok(None)
    }

    /// Delete `scope/key` of a finished run from every node in `nodes`
    /// (locally when this node is one of them). Returns the nodes that could
    /// not be reached; their copies remain until their TTL, if any.
    pub async fn forget(&self, run_id: &str, scope: &str, key: &str, nodes: &[String]) -> Result<Vec<String>> {
        let (topology, _) = self.topology()?;
        let mut unreachable = Vec::new();
        for node in nodes {
            if *node == self.node_id {
                let tier = self.tier.clone();
                let (s, k) = (scope.to_string(), key.to_string());
                tokio::task::spawn_blocking(move || tier.delete(&s, &k))
                    .await
                    .map_err(|e| Error::Runtime(format!("worker failed: {e}")))??;
                continue;
            }
            let done = match self.address(&topology, node) {
                Ok(addr) => self.peers.delete(&addr, run_id, scope, key).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                tracing::warn!(%run_id, %node, error = %e, "could not delete a finished run's state");
                unreachable.push(node.clone());
            }
        }
        Ok(unreachable)
    }
}
