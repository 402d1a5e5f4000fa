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

use databelt_host::state::StateTier;
use databelt_host::{Error, Result};
use databelt_placement::{Decision, ElectionRequest, NodeKind, Topology};
use databelt_types::RunId;
use serde::{Deserialize, Serialize};

use crate::batch_body::BatchPutBody;
use crate::http::blocking;
use crate::peer::{BatchGet, InFlight, PeerClient, Place};
use crate::placement::{HintSource, PlacementClient};
use bytes::Bytes;

/// Where a state handed to the next step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    /// Scope of the state.
    pub scope: String,
    /// Key of the state.
    pub key: String,
    /// The node that holds it (acknowledged), or — in an early step
    /// answer ([`crate::workflow::protocol::StepResult::pending`]) — the
    /// node it is being pushed to.
    pub node: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Whether it is in the node's store or in the run's fusion sandbox there.
    #[serde(default)]
    pub place: Place,
}

/// Where a propagation sends states: the policy, the run, the consumer's
/// node and the SLO of the hand-off.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The policy that chooses the target.
    pub policy: Policy,
    /// The run the states belong to.
    pub run_id: &'a RunId,
    /// The node where the next step runs.
    pub consumer: &'a str,
    /// The longest the transfer may take, ms.
    pub tmax_ms: f64,
    /// Lifetime of the copies at the target, ms.
    pub ttl_ms: Option<u64>,
    /// The consumer waits only for the bytes to land (its producer answered
    /// early), not for the acknowledgement: the election counts the path
    /// latency once, and the SLO is judged on the push's time less the
    /// acknowledgement's way back ([`ElectionRequest::one_way`]).
    pub one_way: bool,
}

/// What one propagation did: one state from the store
/// ([`Continuum::propagate_with`]) or a batch the caller held
/// ([`Continuum::propagate_batch`]).
#[derive(Debug, Clone)]
pub struct Propagation {
    /// The node holding the states now: the target if it acknowledged, else
    /// this node.
    pub node: String,
    /// Their scope.
    pub scope: String,
    /// Where they are on `node`: its store or the run's fusion sandbox.
    pub place: Place,
    /// Each state's key and size, in the order given.
    pub states: Vec<(String, u64)>,
    /// The policy that chose the target.
    pub policy: Policy,
    /// The election's decision (`None` under [`Policy::Stateless`], which
    /// does not elect).
    pub decision: Option<Decision>,
    /// Whether the service or the local cache elected.
    pub source: HintSource,
    /// Bytes sent to another node (0 when the states stayed).
    pub bytes_moved: u64,
    /// Wall time of election plus transfer.
    pub duration: Duration,
    /// The transfer took longer than Tmax, or the election found that no
    /// placement meets it ([`Decision::slo_missed`]).
    pub slo_violated: bool,
    /// Set when the chosen node could not take the states; they stayed here.
    pub push_failed: Option<String>,
    /// Every node that holds a copy afterwards (for a state from the store:
    /// the producer keeps its own, except under the stateless policy): what
    /// garbage collection must clean.
    pub copies: Vec<String>,
    /// A batch's entries, handed back when they stay on this node (the
    /// target is this node, or the push failed); empty once a push landed,
    /// and for a state read from the store.
    pub entries: Vec<(String, Vec<u8>)>,
}

/// A propagation whose target is elected ([`Propagation::node`]) and
/// whose push has not started: what [`Continuum::plan_stored`] and
/// [`Continuum::plan_batch`] return, for the caller to report where the
/// states are going before they arrive.
#[derive(Debug)]
pub struct Planned {
    /// The propagation so far: `node` is the target.
    pub propagation: Propagation,
    started: Instant,
}

impl Propagation {
    /// Where state `i` (in the order given) is now.
    pub fn locator_of(&self, i: usize) -> Option<Locator> {
        self.states.get(i).map(|(key, size)| Locator {
            scope: self.scope.clone(),
            key: key.clone(),
            node: self.node.clone(),
            size_bytes: *size,
            place: self.place,
        })
    }

    /// Where the first (for a single propagation, the only) state is now.
    pub fn locator(&self) -> Locator {
        self.locator_of(0).unwrap_or_else(|| Locator {
            scope: self.scope.clone(),
            key: String::new(),
            node: self.node.clone(),
            size_bytes: 0,
            place: self.place,
        })
    }

    /// Whether the election used the host's cached topology because the
    /// service was unreachable.
    pub fn elected_locally(&self) -> bool {
        self.source == HintSource::LocalCache && self.decision.is_some()
    }
}

/// Where a step's output state goes: Databelt's election and the paper's
/// two baselines, selectable per run for comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The elected node: nearest the consumer within Tmax (SLO-aware); when
    /// no node fits Tmax, or the consumer waits only for the bytes (an
    /// early answer), the node nearest the consumer the links reach
    /// ([`Decision::BestEffort`] when past Tmax).
    #[default]
    Databelt,
    /// A node drawn uniformly from the producer → consumer path.
    Random,
    /// Every state is kept in the cloud node only (the producer's copy is
    /// dropped once the cloud has acknowledged it).
    Stateless,
    /// Databelt's election with the paper prototype's rule for a missed SLO:
    /// never past Tmax. The state stops at the node nearest the consumer
    /// that fits Tmax, or stays on the producer when none does (the
    /// consumer then pulls it while it waits), instead of going as near the
    /// consumer as the links allow ([`Decision::within_tmax`]).
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

/// What [`Continuum::read_outcome`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A tier had the state.
    Found(ReadHit),
    /// No tier had it.
    Absent {
        /// Why the locator's node could not be asked (a connection cut, a
        /// link down, a timeout: `unavailable`), when it could not: asking
        /// again later may find the state there. `None` when it answered
        /// that it has no such state, or when it is this node.
        locator_unreachable: Option<String>,
    },
}

impl ReadOutcome {
    /// The hit, if any.
    pub fn hit(self) -> Option<ReadHit> {
        match self {
            ReadOutcome::Found(hit) => Some(hit),
            ReadOutcome::Absent { .. } => None,
        }
    }
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
    /// The placement client (topology cache, hints, elections).
    pub fn placement(&self) -> &PlacementClient {
        &self.placement
    }

    /// The client this continuum reaches other hosts with.
    pub fn peers(&self) -> &PeerClient {
        &self.peers
    }

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
        run_id: &RunId,
        scope: &str,
        key: &str,
        consumer: &str,
        tmax_ms: f64,
        ttl_ms: Option<u64>,
    ) -> Result<Propagation> {
        let to = Destination { policy: Policy::Databelt, run_id, consumer, tmax_ms, ttl_ms, one_way: false };
        self.propagate_with(&to, scope, key).await
    }

    /// Move the state under `scope/key` (stored on this node) to where the
    /// destination's policy puts it, and wait for the receiver's
    /// acknowledgement. A failed push leaves the state here and the result
    /// names this node. Under [`Policy::Stateless`] the producer's copy is
    /// deleted once the cloud has acknowledged its own.
    pub async fn propagate_with(&self, to: &Destination<'_>, scope: &str, key: &str) -> Result<Propagation> {
        let planned = self.plan_stored(to, scope, key).await?;
        self.push_stored(planned, to).await
    }

    /// The first half of [`Continuum::propagate_with`]: read the state and
    /// elect its target (in [`Propagation::node`]); nothing is sent yet.
    pub async fn plan_stored(&self, to: &Destination<'_>, scope: &str, key: &str) -> Result<Planned> {
        let started = Instant::now();
        let tier = self.tier.clone();
        let (s, k) = (scope.to_string(), key.to_string());
        let value = blocking(move || tier.get(&s, &k))
            .await?
            .ok_or_else(|| Error::BadInput(format!("no state `{scope}/{key}` on node `{}`", self.node_id)))?;
        let size = value.len() as u64;
        let mut propagation = self.start(to, scope, Place::Store, vec![(key.to_string(), size)]).await?;
        propagation.entries = vec![(key.to_string(), value)];
        Ok(Planned { propagation, started })
    }

    /// The second half of [`Continuum::propagate_with`]: push the planned
    /// state to its target and wait for the acknowledgement.
    pub async fn push_stored(&self, planned: Planned, to: &Destination<'_>) -> Result<Propagation> {
        let Planned { mut propagation, started } = planned;
        let p = &mut propagation;
        let Some((key, value)) = std::mem::take(&mut p.entries).into_iter().next() else {
            return Err(Error::Runtime("a planned propagation without its state (plan_stored makes one)".into()));
        };
        let size = value.len() as u64;
        let target = p.node.clone();
        if target == self.node_id {
            p.duration = started.elapsed();
            return Ok(propagation);
        }
        let pushed = match self.address_of(&target) {
            Ok(addr) => self.peers.put(&addr, to.run_id, &p.scope, &key, value, to.ttl_ms).await,
            Err(e) => Err(e),
        };
        self.settle(p, to, started, &target, pushed.map(|()| size));
        if p.push_failed.is_none() {
            p.copies.push(target);
            if to.policy == Policy::Stateless {
                // The cloud holds it now; the producer keeps nothing.
                let tier = self.tier.clone();
                let (s, k) = (p.scope.clone(), key);
                blocking(move || tier.delete(&s, &k)).await?;
                p.copies.remove(0);
            }
        }
        Ok(propagation)
    }

    /// Move several states of one scope, held by the caller, to where the
    /// destination's policy puts them (elected on their total size), as one
    /// batch into `place` on the target, and wait for the acknowledgement.
    /// When the target is this node, or the push fails, nothing is sent,
    /// `node` is this node and `copies` is empty: the caller keeps the
    /// entries, handed back in [`Propagation::entries`] either way.
    pub async fn propagate_batch(
        &self,
        to: &Destination<'_>,
        place: Place,
        scope: &str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<Propagation> {
        let states: Vec<(String, u64)> = entries.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
        let planned = self.plan_batch(to, place, scope, states).await?;
        Ok(self.push_batch(planned, to, entries).await)
    }

    /// The first half of [`Continuum::propagate_batch`]: elect the target of
    /// `states` (keys and sizes) into [`Propagation::node`]; nothing is sent.
    pub async fn plan_batch(
        &self,
        to: &Destination<'_>,
        place: Place,
        scope: &str,
        states: Vec<(String, u64)>,
    ) -> Result<Planned> {
        let started = Instant::now();
        let mut propagation = self.start(to, scope, place, states).await?;
        propagation.copies.clear();
        Ok(Planned { propagation, started })
    }

    /// The second half of [`Continuum::propagate_batch`]: push `entries` (the
    /// planned states) to the target and wait for the acknowledgement.
    pub async fn push_batch(
        &self,
        planned: Planned,
        to: &Destination<'_>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Propagation {
        let Planned { mut propagation, started } = planned;
        let p = &mut propagation;
        let size: u64 = entries.iter().map(|(_, v)| v.len() as u64).sum();
        let target = p.node.clone();
        if target == self.node_id {
            p.entries = entries;
            p.duration = started.elapsed();
            return propagation;
        }
        // The values go out from their own buffers (shared, not copied).
        let entries: Vec<(String, Bytes)> = entries.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect();
        let pushed = match self.address_of(&target) {
            Ok(addr) => {
                let body = BatchPutBody::new(&p.scope, &entries, to.ttl_ms);
                self.peers.batch_put_to(&addr, to.run_id, p.place, body).await
            }
            Err(e) => Err(e),
        };
        self.settle(p, to, started, &target, pushed.map(|()| size));
        if p.push_failed.is_none() {
            p.copies.push(target);
        } else {
            // They stay here: handed back (without a copy once the request
            // has let go of them).
            p.entries = entries.into_iter().map(|(k, v)| (k, Vec::from(v))).collect();
        }
        propagation
    }

    /// Elect the target for `states` and describe the propagation as if they
    /// stayed here; `node` is set to the target for the caller to push to.
    async fn start(
        &self,
        to: &Destination<'_>,
        scope: &str,
        place: Place,
        states: Vec<(String, u64)>,
    ) -> Result<Propagation> {
        let size: u64 = states.iter().map(|(_, s)| s).sum();
        let (decision, source, target) = self.choose(to.policy, size, to.consumer, to.tmax_ms, to.one_way).await?;
        Ok(Propagation {
            node: target,
            scope: scope.to_string(),
            place,
            states,
            policy: to.policy,
            slo_violated: decision.as_ref().is_some_and(Decision::slo_missed),
            decision,
            source,
            bytes_moved: 0,
            duration: Duration::ZERO,
            push_failed: None,
            copies: vec![self.node_id.clone()],
            entries: Vec::new(),
        })
    }

    /// Record how a push to `target` went: moved bytes, or the failure (the
    /// states then stay here); and whether it kept to Tmax.
    fn settle(&self, p: &mut Propagation, to: &Destination<'_>, started: Instant, target: &str, pushed: Result<u64>) {
        p.duration = started.elapsed();
        // With the acknowledgement off the consumer's path, its way back
        // (the path latency to the target) is not the consumer's wait.
        let back_ms = match (&p.decision, to.one_way) {
            (Some(d), true) => d.path().iter().find(|n| n.node == target).map_or(0.0, |n| n.latency_ms),
            _ => 0.0,
        };
        p.slo_violated |= p.duration.as_secs_f64() * 1000.0 - back_ms > to.tmax_ms;
        match pushed {
            Ok(bytes) => p.bytes_moved = bytes,
            Err(e) => {
                tracing::warn!(run = %to.run_id, %target, error = %e, "push failed; the states stay on the producer");
                p.node = self.node_id.clone();
                p.push_failed = Some(e.to_string());
            }
        }
    }

    /// Open connections, in the background, to where hand-offs to
    /// `consumers` (the nodes a step's successors run on) will most likely
    /// go: each consumer's node, or under [`Policy::Stateless`] the cloud
    /// node — when that is not this node and this node has not used it
    /// lately ([`PeerClient::warm`]). A step calls this as it starts, so the
    /// TCP and TLS handshakes overlap its input wait and its invocation
    /// instead of delaying its first hand-off. Each attempt gives up after
    /// `timeout`; a failure is only logged (the push connects on its own).
    pub fn warm_toward<'c>(&self, policy: Policy, consumers: impl IntoIterator<Item = &'c str>, timeout: Duration) {
        let mut targets: Vec<String> = Vec::new();
        for consumer in consumers {
            let target = match policy {
                Policy::Stateless => match self.topology() {
                    Ok((t, _)) => match t.nodes.iter().find(|n| n.kind == NodeKind::Cloud) {
                        Some(cloud) => cloud.id.clone(),
                        None => continue,
                    },
                    Err(_) => continue,
                },
                _ => consumer.to_string(),
            };
            if target != self.node_id && !targets.contains(&target) {
                targets.push(target);
            }
        }
        for target in targets {
            let Ok(addr) = self.address_of(&target) else {
                continue;
            };
            let peers = self.peers.clone();
            tokio::spawn(async move {
                match peers.warm(&addr, timeout).await {
                    Ok(sent) => tracing::debug!(node = %target, sent, "connection warmed"),
                    Err(e) => tracing::debug!(node = %target, error = %e, "warming a connection failed"),
                }
            });
        }
    }

    /// The address this node reaches `node` at (its route, or the
    /// topology's address).
    pub fn peer_address(&self, node: &str) -> Result<String> {
        self.address_of(node)
    }

    fn address_of(&self, node: &str) -> Result<String> {
        let (topology, _) = self.topology()?;
        self.address(&topology, node)
    }

    /// Fetch `keys` of `scope` from `place` on `node` in one request.
    pub async fn fetch_batch(
        &self,
        run_id: &RunId,
        node: &str,
        place: Place,
        scope: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let (topology, _) = self.topology()?;
        let addr = self.address(&topology, node)?;
        self.peers.batch_get_from(&addr, run_id, place, &BatchGet { scope: scope.to_string(), keys }).await
    }

    /// Fetch `scope/key` from `place` on `node`.
    pub async fn fetch(
        &self,
        run_id: &RunId,
        node: &str,
        place: Place,
        scope: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>> {
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
        one_way: bool,
    ) -> Result<(Option<Decision>, HintSource, String)> {
        let request = ElectionRequest {
            producer: self.node_id.clone(),
            consumer: consumer.to_string(),
            size_bytes,
            tmax_ms,
            one_way,
        };
        let chosen = match policy {
            Policy::Databelt | Policy::Random | Policy::Strict => {
                let (mut decision, source) = self
                    .placement
                    .storage_hint(&request)
                    .await
                    .map_err(|e| Error::unreachable("placement service, electing a storage node", e))?;
                if policy == Policy::Strict {
                    decision = decision.within_tmax(tmax_ms);
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
                let cloud = topology.nodes.iter().find(|n| n.kind == NodeKind::Cloud).ok_or_else(|| {
                    Error::Unavailable("the stateless policy needs a cloud node; the topology has none".into())
                })?;
                (None, HintSource::LocalCache, cloud.id.clone())
            }
        };
        Ok(chosen)
    }

    /// [`Continuum::read`] for a state that may still be in flight to
    /// another node, the one its locator names (its producer answered
    /// early): ask that node again every 20 ms until it has it or
    /// `deadline` passes — or, while that node says a push of the run's
    /// state is arriving, until `cap` — then read as usual.
    pub async fn read_in_flight(
        &self,
        run_id: &RunId,
        locator: &Locator,
        deadline: tokio::time::Instant,
        cap: tokio::time::Instant,
    ) -> Result<ReadOutcome> {
        if locator.node != self.node_id
            && let Ok(addr) = self.address_of(&locator.node)
        {
            loop {
                let arriving =
                    match self.peers.get_in_flight(&addr, run_id, locator.place, &locator.scope, &locator.key).await {
                        Ok(InFlight::Found(value)) => {
                            self.stats.count(Some(ReadTier::Locator));
                            let hit = ReadHit { value, tier: ReadTier::Locator, node: locator.node.clone() };
                            return Ok(ReadOutcome::Found(hit));
                        }
                        Ok(InFlight::Absent { arriving }) => arriving,
                        Err(e) => {
                            tracing::debug!(node = %locator.node, error = %e, "waiting for an input in flight");
                            false
                        }
                    };
                let next = tokio::time::Instant::now() + Duration::from_millis(20);
                if next >= cap || (next >= deadline && !arriving) {
                    break;
                }
                tokio::time::sleep_until(next).await;
            }
        }
        self.read_outcome(run_id, locator).await
    }

    /// Read the state `locator` names: local → the locator's node → live
    /// neighbours → the cloud node. `Ok(None)` when no tier has it.
    pub async fn read(&self, run_id: &RunId, locator: &Locator) -> Result<Option<ReadHit>> {
        Ok(self.read_outcome(run_id, locator).await?.hit())
    }

    /// [`Continuum::read`], saying when nothing was found whether the
    /// locator's node could be asked at all.
    pub async fn read_outcome(&self, run_id: &RunId, locator: &Locator) -> Result<ReadOutcome> {
        let tier = self.tier.clone();
        let (s, k) = (locator.scope.clone(), locator.key.clone());
        let local = blocking(move || tier.get(&s, &k)).await?;
        if let Some(v) = local {
            self.stats.count(Some(ReadTier::Local));
            return Ok(ReadOutcome::Found(ReadHit { value: v, tier: ReadTier::Local, node: self.node_id.clone() }));
        }
        let (topology, t) = self.topology()?;
        let snapshot = topology.snapshot(t);
        let mut tried = vec![self.node_id.clone()];
        let mut candidates: Vec<(String, ReadTier)> = vec![(locator.node.clone(), ReadTier::Locator)];
        candidates.extend(snapshot.neighbours(&self.node_id).into_iter().map(|n| (n, ReadTier::Neighbour)));
        candidates.extend(
            topology.nodes.iter().filter(|n| n.kind == NodeKind::Cloud).map(|n| (n.id.clone(), ReadTier::Cloud)),
        );
        let mut locator_unreachable = None;
        for (node, tier) in candidates {
            if tried.contains(&node) {
                continue;
            }
            tried.push(node.clone());
            let addr = match self.address(&topology, &node) {
                Ok(addr) => addr,
                Err(e) => {
                    if tier == ReadTier::Locator {
                        locator_unreachable = Some(e.to_string());
                    }
                    continue;
                }
            };
            match self.peers.get_from(&addr, run_id, locator.place, &locator.scope, &locator.key).await {
                Ok(Some(v)) => {
                    self.stats.count(Some(tier));
                    return Ok(ReadOutcome::Found(ReadHit { value: v, tier, node }));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%node, error = %e, "read tier unavailable");
                    // Only a node that could not be asked may answer later;
                    // a refusal (bad credentials, a malformed request) stays.
                    if tier == ReadTier::Locator && e.kind() == databelt_host::ErrorKind::Unavailable {
                        locator_unreachable = Some(e.to_string());
                    }
                }
            }
        }
        self.stats.count(None);
        Ok(ReadOutcome::Absent { locator_unreachable })
    }

    /// Delete `scope/key` of a finished run from every node in `nodes`
    /// (locally when this node is one of them). Returns the nodes that could
    /// not be reached; their copies remain until their TTL, if any.
    pub async fn forget(&self, run_id: &RunId, scope: &str, key: &str, nodes: &[String]) -> Result<Vec<String>> {
        let (topology, _) = self.topology()?;
        let mut unreachable = Vec::new();
        for node in nodes {
            if *node == self.node_id {
                let tier = self.tier.clone();
                let (s, k) = (scope.to_string(), key.to_string());
                blocking(move || tier.delete(&s, &k)).await?;
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
