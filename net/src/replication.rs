//! Replicated scopes across the network: the [`Replicator`] that ships each
//! local replica's log to the other replicas, the peer routes that apply
//! what arrives, and the client routes that serve reads and writes under a
//! session (monotonic reads, read-your-writes, writes-follow-reads) while
//! a client moves between replicas.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /peer/v1/replicate/{scope}` | postcard [`Push`] | postcard [`Ack`] once applied and durable |
//! | `POST /peer/v1/replicate/{scope}/snapshot` | postcard [`SnapshotPush`] | postcard [`Ack`] |
//! | `GET /peer/v1/replicate/{scope}/value/{key}` | | postcard [`RemoteValue`] |
//! | `GET /replicas/{scope}/{key}` | | the value (404 if absent), header [`SESSION_HEADER`] |
//! | `PUT /replicas/{scope}/{key}` | the value | 204, header [`SESSION_HEADER`] |
//! | `DELETE /replicas/{scope}/{key}` | | 204, header [`SESSION_HEADER`] |
//!
//! Peer routes need a node certificate of one of the scope's replicas.
//! Client routes take the caller's session token (absent: a new session)
//! and answer with the session after the call. A replica serves a session
//! only once it covers it, waiting up to [`WAIT_HEADER`] ms (default 1000,
//! at most 10000). A read it still cannot serve is read from the node that
//! served the session last (which covers it by construction); a write it
//! cannot serve fails with `unavailable` and changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use databelt_host::state::StateTier;
use databelt_host::state::lattice::Lattice;
use databelt_host::state::replica::{Missing, Session, Shipped, VersionVector, covers};
use databelt_host::{Error, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::auth::Caller;
use crate::continuum::Continuum;
use crate::http::{ApiError, blocking, decode_postcard};

/// Header carrying a client's session token (hex of its postcard).
pub const SESSION_HEADER: &str = "x-databelt-session";
/// Header: how long a replica may wait to cover the session, ms.
pub const WAIT_HEADER: &str = "x-databelt-session-wait-ms";
/// Header naming the node that served a client call.
pub const SERVED_BY_HEADER: &str = "x-databelt-served-by";
/// Longest a client call waits for its replica to cover its session.
pub const MAX_SESSION_WAIT: Duration = Duration::from_secs(10);

/// Body of `POST /peer/v1/replicate/{scope}`: log entries the sender
/// believes the receiver lacks (empty: only asking for its vector).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The entries, lowest first per origin.
    pub entries: Vec<Shipped>,
}

/// Body of `POST /peer/v1/replicate/{scope}/snapshot`: a page of the
/// sender's values; the last page carries the sender's vector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPush {
    /// Keys and encoded lattice values.
    #[serde(with = "crate::peer::byte_strings")]
    pub entries: Vec<(String, Vec<u8>)>,
    /// The sender's vector (last page only).
    pub vv: Option<VersionVector>,
}

/// The answer to a push: how many entries were applied, and the
/// receiver's vector after them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Entries applied (the rest were duplicates or must wait).
    pub applied: u64,
    /// The receiver's vector.
    pub vv: VersionVector,
}

/// The answer to a remote read: the key's encoded lattice and the
/// replica's vector (read after the value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteValue {
    /// The encoded [`Lattice`], if the key has one.
    pub value: Option<Vec<u8>>,
    /// The serving replica's vector.
    pub vv: VersionVector,
}

/// A client's session token: the versions it has seen, and the node that
/// served it last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionToken {
    /// What the session has read and written.
    pub session: Session,
    /// The node that served it last (covers it).
    pub at: Option<String>,
}

impl SessionToken {
    /// Decode a token from its header text.
    pub fn decode(text: &str) -> Result<SessionToken> {
        let bytes = hex::decode(text).map_err(|e| Error::BadInput(format!("`{SESSION_HEADER}` is not hex: {e}")))?;
        decode_postcard(&bytes, "session token")
    }

    /// The token's header text.
    pub fn encode(&self) -> Result<String> {
        postcard::to_stdvec(self).map(hex::encode).map_err(|e| Error::Runtime(format!("session token: {e}")))
    }
}

/// Settings of a [`Replicator`].
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// About how many payload bytes one push carries. Default 1 MiB.
    pub batch_bytes: usize,
    /// Timeout of one push. Default 10 s.
    pub request_timeout: Duration,
    /// How often a replica checks on its peers when nothing changed (a
    /// peer that was unreachable, or a link that came back). Default 200 ms.
    pub idle_check: Duration,
    /// Bounds of the backoff after a failed push. Default 50 ms to 2 s.
    pub backoff: (Duration, Duration),
    /// Log entries kept per origin beyond what every replica has applied;
    /// a replica that lacks older ones gets a snapshot. Default 100000.
    pub keep_log: u64,
    /// Keys per snapshot page. Default 256.
    pub snapshot_page: usize,
    /// How long a peer must have lacked another origin's entries, while
    /// reachable from here, before this replica relays them (the origin
    /// ships its own at once; relaying only what it could not deliver keeps
    /// catch-up from sending every entry once per replica). Default 1 s.
    pub relay_after: Duration,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            batch_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            idle_check: Duration::from_millis(200),
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            keep_log: 100_000,
            snapshot_page: 256,
            relay_after: Duration::from_secs(1),
        }
    }
}

/// What a replicator has shipped to one peer, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Pushes answered by a peer.
    pub pushes: u64,
    /// Log entries sent.
    pub entries: u64,
    /// Bytes of request bodies sent (pushes and snapshots).
    pub body_bytes: u64,
    /// Snapshots sent (peers that lacked trimmed entries).
    pub snapshots: u64,
    /// Pushes that failed (peer unreachable, timed out, refused).
    pub failures: u64,
}

#[derive(Default)]
struct Counters {
    pushes: AtomicU64,
    entries: AtomicU64,
    body_bytes: AtomicU64,
    snapshots: AtomicU64,
    failures: AtomicU64,
}

/// Ships the local replica of every replicated scope to its other
/// replicas: one task per (scope, peer), woken by local changes, that sends
/// what the peer lacks by its version vector, with bounded retries and
/// timeouts, and trims the log once every replica has an entry. Dropping it
/// stops the tasks.
pub struct Replicator {
    counters: Arc<HashMap<String, Counters>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Replicator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Shipper {
    tier: StateTier,
    continuum: Continuum,
    config: ReplicatorConfig,
    counters: Arc<HashMap<String, Counters>>,
    /// Last vector each peer reported, per scope: for trimming.
    known: std::sync::Mutex<HashMap<(String, String), VersionVector>>,
}

impl Replicator {
    /// Start shipping `tier`'s replicated scopes through `continuum` (which
    /// knows the peers' addresses and presents this node's certificate).
    /// `None` when no scope is replicated. Must be called inside a Tokio
    /// runtime.
    pub fn start(tier: StateTier, continuum: Continuum, config: ReplicatorConfig) -> Option<Replicator> {
        let replication = tier.replication()?;
        let scopes: Vec<(String, Vec<String>)> =
            replication.scopes().map(|s| (s.to_string(), replication.peers(s))).collect();
        let (tx, rx) = watch::channel(0u64);
        replication.on_change(Arc::new(move |_scope: &str| {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }));
        let counters: Arc<HashMap<String, Counters>> = Arc::new(
            scopes.iter().flat_map(|(_, peers)| peers.iter().map(|p| (p.clone(), Counters::default()))).collect(),
        );
        let shipper = Arc::new(Shipper {
            tier,
            continuum,
            config,
            counters: counters.clone(),
            known: std::sync::Mutex::new(HashMap::new()),
        });
        let mut tasks = Vec::new();
        for (scope, peers) in scopes {
            for peer in peers {
                let (s, rx) = (shipper.clone(), rx.clone());
                let scope = scope.clone();
                tasks.push(tokio::spawn(async move { s.follow(scope, peer, rx).await }));
            }
        }
        Some(Replicator { counters, tasks })
    }

    /// What it has shipped so far, per peer (over every scope).
    pub fn stats(&self) -> std::collections::BTreeMap<String, ReplicationStats> {
        self.counters
            .iter()
            .map(|(peer, c)| {
                let stats = ReplicationStats {
                    pushes: c.pushes.load(Ordering::Relaxed),
                    entries: c.entries.load(Ordering::Relaxed),
                    body_bytes: c.body_bytes.load(Ordering::Relaxed),
                    snapshots: c.snapshots.load(Ordering::Relaxed),
                    failures: c.failures.load(Ordering::Relaxed),
                };
                (peer.clone(), stats)
            })
            .collect()
    }
}

impl Shipper {
    fn counters(&self, peer: &str) -> Option<&Counters> {
        self.counters.get(peer)
    }

    fn count(&self, peer: &str, f: impl FnOnce(&Counters)) {
        if let Some(c) = self.counters(peer) {
            f(c);
        }
    }

    async fn follow(self: Arc<Self>, scope: String, peer: String, mut changes: watch::Receiver<u64>) {
        let mut known: Option<VersionVector> = None;
        // Since when the peer has lacked entries of each other origin.
        let mut lag: HashMap<String, tokio::time::Instant> = HashMap::new();
        let (min, max) = self.config.backoff;
        let mut backoff = min;
        loop {
            changes.mark_unchanged();
            match self.round(&scope, &peer, &mut known, &mut lag).await {
                Ok(true) => backoff = min,
                Ok(false) => {
                    backoff = min;
                    let _ = tokio::time::timeout(self.config.idle_check, changes.changed()).await;
                }
                Err(e) => {
                    self.count(&peer, |c| {
                        c.failures.fetch_add(1, Ordering::Relaxed);
                    });
                    tracing::debug!(%scope, %peer, error = %e, "replication push failed; backing off");
                    // Ask the peer afresh once it answers again, and give
                    // the origins their chance first.
                    known = None;
                    lag.clear();
                    // Jitter in [backoff/2, backoff].
                    let nanos = backoff.as_nanos() as u64;
                    let jitter = nanos / 2 + rand::random::<u64>() % (nanos / 2 + 1);
                    tokio::time::sleep(Duration::from_nanos(jitter)).await;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }

    /// One exchange with `peer`; `Ok(true)` when there may be more to send.
    async fn round(
        &self,
        scope: &str,
        peer: &str,
        known: &mut Option<VersionVector>,
        lag: &mut HashMap<String, tokio::time::Instant>,
    ) -> Result<bool> {
        let addr = self.continuum.peer_address(peer)?;
        let theirs = match known.clone() {
            Some(v) => v,
            None => {
                let ack = self.push(&addr, scope, peer, &Push::default()).await?;
                self.learn(scope, peer, known, ack.vv.clone());
                ack.vv
            }
        };
        let (tier, s, t, budget) = (self.tier.clone(), scope.to_string(), theirs.clone(), self.config.batch_bytes);
        match blocking(move || tier.replica_missing(&s, &t, budget)).await? {
            Missing::Entries(mut entries) => {
                let me = self.continuum.node_id();
                let now = tokio::time::Instant::now();
                lag.retain(|origin, _| entries.iter().any(|e| e.origin == *origin));
                entries.retain(|e| {
                    e.origin == me
                        || now.duration_since(*lag.entry(e.origin.clone()).or_insert(now)) >= self.config.relay_after
                });
                if entries.is_empty() {
                    self.trim(scope).await;
                    return Ok(false);
                }
                let n = entries.len() as u64;
                let ack = self.push(&addr, scope, peer, &Push { entries }).await?;
                self.count(peer, |c| {
                    c.entries.fetch_add(n, Ordering::Relaxed);
                });
                let progressed = ack.applied > 0;
                self.learn(scope, peer, known, ack.vv);
                Ok(progressed)
            }
            Missing::Snapshot => {
                let sent = self.snapshot(&addr, scope, peer).await;
                *known = None;
                sent?;
                self.count(peer, |c| {
                    c.snapshots.fetch_add(1, Ordering::Relaxed);
                });
                Ok(true)
            }
        }
    }

    fn learn(&self, scope: &str, peer: &str, known: &mut Option<VersionVector>, vv: VersionVector) {
        if let Ok(mut k) = self.known.lock() {
            k.insert((scope.to_string(), peer.to_string()), vv.clone());
        }
        *known = Some(vv);
    }

    /// Trim what every peer has applied (once every peer has reported).
    async fn trim(&self, scope: &str) {
        let Some(repl) = self.tier.replication() else { return };
        let peers = repl.peers(scope);
        let acked = {
            let Ok(known) = self.known.lock() else { return };
            let mut acked: Option<VersionVector> = None;
            for p in &peers {
                let Some(vv) = known.get(&(scope.to_string(), p.clone())) else { return };
                match &mut acked {
                    None => acked = Some(vv.clone()),
                    Some(a) => a.glb(vv),
                }
            }
            acked.unwrap_or_default()
        };
        let (tier, s, keep) = (self.tier.clone(), scope.to_string(), self.config.keep_log);
        if let Err(e) = blocking(move || tier.replica_trim(&s, &acked, keep)).await {
            tracing::warn!(%scope, error = %e, "cannot trim the replication log");
        }
    }

    async fn snapshot(&self, addr: &str, scope: &str, peer: &str) -> Result<()> {
        let (tier, s) = (self.tier.clone(), scope.to_string());
        // The vector first: the values read after it include at least its writes.
        let vv = blocking(move || tier.replica_vv(&s)).await?;
        let mut cursor: Option<String> = None;
        loop {
            let (tier, s, c, n) = (self.tier.clone(), scope.to_string(), cursor.clone(), self.config.snapshot_page);
            let (entries, next) = blocking(move || tier.replica_snapshot(&s, c.as_deref(), n)).await?;
            let last = next.is_none();
            let page = SnapshotPush { entries, vv: last.then(|| vv.clone()) };
            self.post(addr, peer, &format!("replicate/{}/snapshot", encode_segment(scope)), &page).await?;
            if last {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn push(&self, addr: &str, scope: &str, peer: &str, push: &Push) -> Result<Ack> {
        let ack = self.post(addr, peer, &format!("replicate/{}", encode_segment(scope)), push).await?;
        self.count(peer, |c| {
            c.pushes.fetch_add(1, Ordering::Relaxed);
        });
        Ok(ack)
    }

    async fn post<B: Serialize>(&self, addr: &str, peer: &str, route: &str, body: &B) -> Result<Ack> {
        let body = postcard::to_stdvec(body).map_err(|e| Error::Runtime(format!("replication push: {e}")))?;
        let n = body.len() as u64;
        self.count(peer, |c| {
            c.body_bytes.fetch_add(n, Ordering::Relaxed);
        });
        let answer = self.continuum.peers().post_raw(addr, route, body, self.config.request_timeout).await?;
        decode_postcard(&answer, "replication ack")
    }
}

/// Percent-encode one path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Clone)]
struct Routes {
    tier: StateTier,
    continuum: Continuum,
}

/// The peer and client routes of replicated scopes on this host.
pub fn router(tier: StateTier, continuum: Continuum) -> Router {
    let limit = tier.limits().max_value_bytes.saturating_mul(8).saturating_add(1 << 20);
    Router::new()
        .route("/peer/v1/replicate/{scope}", post(apply_push))
        .route("/peer/v1/replicate/{scope}/snapshot", post(apply_snapshot))
        .route("/peer/v1/replicate/{scope}/value/{key}", get(remote_value))
        .route("/replicas/{scope}/{key}", get(client_get).put(client_put).delete(client_delete))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Routes { tier, continuum })
}

impl Routes {
    /// The caller must be one of the scope's replicas (any caller in
    /// development mode).
    fn check_replica(&self, caller: Option<&Caller>, scope: &str) -> Result<()> {
        let Some(repl) = self.tier.replication().filter(|r| r.replicates(scope)) else {
            return Err(Error::NoSuchScope(format!("scope `{scope}` is not replicated on this host")));
        };
        match caller {
            Some(c) if c.development => Ok(()),
            Some(Caller { node: Some(n), .. }) if repl.peers(scope).iter().any(|p| p == n.as_str()) => Ok(()),
            _ => Err(Error::AccessDenied(format!("only the replicas of `{scope}` may replicate it"))),
        }
    }

    /// Wait until the local replica covers `session` in `scope`, up to `wait`.
    async fn covered(&self, session: &Session, scope: &str, wait: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (tier, s) = (self.tier.clone(), scope.to_string());
            let vv = blocking(move || tier.replica_vv(&s)).await?;
            if session.covered_by(scope, &vv) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn apply_push(
    State(r): State<Routes>,
    caller: Option<axum::Extension<Caller>>,
    Path(scope): Path<String>,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    r.check_replica(caller.as_deref(), &scope)?;
    let push: Push = decode_postcard(&body, "replication push")?;
    let tier = r.tier.clone();
    let (applied, vv) = blocking(move || tier.replica_apply(&scope, &push.entries)).await?;
    postcard_answer(&Ack { applied: applied as u64, vv })
}

async fn apply_snapshot(
    State(r): State<Routes>,
    caller: Option<axum::Extension<Caller>>,
    Path(scope): Path<String>,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    r.check_replica(caller.as_deref(), &scope)?;
    let page: SnapshotPush = decode_postcard(&body, "snapshot page")?;
    let tier = r.tier.clone();
    let vv = blocking(move || tier.replica_merge(&scope, &page.entries, page.vv.as_ref())).await?;
    postcard_answer(&Ack { applied: 0, vv })
}

async fn remote_value(
    State(r): State<Routes>,
    caller: Option<axum::Extension<Caller>>,
    Path((scope, key)): Path<(String, String)>,
) -> std::result::Result<Response, ApiError> {
    r.check_replica(caller.as_deref(), &scope)?;
    let tier = r.tier.clone();
    let answer = blocking(move || {
        let value = tier.replica_value(&scope, &key)?.map(|v| v.encode()).transpose()?;
        Ok(RemoteValue { value, vv: tier.replica_vv(&scope)? })
    })
    .await?;
    postcard_answer(&answer)
}

fn postcard_answer<T: Serialize>(value: &T) -> std::result::Result<Response, ApiError> {
    let bytes = postcard::to_stdvec(value).map_err(|e| Error::Runtime(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/postcard")], bytes).into_response())
}

fn session_of(headers: &HeaderMap) -> Result<(SessionToken, Duration)> {
    let token = match headers.get(SESSION_HEADER) {
        None => SessionToken::default(),
        Some(v) => {
            SessionToken::decode(v.to_str().map_err(|_| Error::BadInput(format!("`{SESSION_HEADER}` is not text")))?)?
        }
    };
    let wait = match headers.get(WAIT_HEADER) {
        None => Duration::from_millis(1000),
        Some(v) => Duration::from_millis(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Error::BadInput(format!("`{WAIT_HEADER}` must be a number of milliseconds")))?,
        ),
    };
    Ok((token, wait.min(MAX_SESSION_WAIT)))
}

fn with_session(
    mut response: Response,
    token: &SessionToken,
    served_by: &str,
) -> std::result::Result<Response, ApiError> {
    let text = token.encode()?;
    let h = response.headers_mut();
    h.insert(SESSION_HEADER, HeaderValue::from_str(&text).map_err(|e| Error::Runtime(e.to_string()))?);
    if let Ok(v) = HeaderValue::from_str(served_by) {
        h.insert(SERVED_BY_HEADER, v);
    }
    Ok(response)
}

fn check_client_scope(r: &Routes, scope: &str) -> Result<()> {
    if !r.tier.is_replicated(scope) {
        return Err(Error::NoSuchScope(format!("scope `{scope}` is not replicated on this host")));
    }
    r.tier.open_scope(scope)
}

async fn client_get(
    State(r): State<Routes>,
    headers: HeaderMap,
    Path((scope, key)): Path<(String, String)>,
) -> std::result::Result<Response, ApiError> {
    check_client_scope(&r, &scope)?;
    let (mut token, wait) = session_of(&headers)?;
    let me = r.continuum.node_id().to_string();
    if r.covered(&token.session, &scope, wait).await? {
        let (tier, s, k) = (r.tier.clone(), scope.clone(), key.clone());
        let (value, vv) = blocking(move || {
            let value = tier.get(&s, &k)?;
            Ok((value, tier.replica_vv(&s)?))
        })
        .await?;
        token.session.observe(&scope, &vv);
        token.at = Some(me.clone());
        return with_session(value_response(value), &token, &me);
    }
    // Not covered in time: read from the node that served the session last.
    let Some(at) = token.at.clone().filter(|n| *n != me) else {
        return Err(Error::Unavailable(format!(
            "this replica of `{scope}` does not cover the session after {} ms",
            wait.as_millis()
        ))
        .into());
    };
    let addr = r.continuum.peer_address(&at)?;
    let route = format!("replicate/{}/value/{}", encode_segment(&scope), encode_segment(&key));
    let body = r.continuum.peers().get_raw(&addr, &route, MAX_SESSION_WAIT).await?;
    let remote: RemoteValue = decode_postcard(&body, "remote value")?;
    let value = match remote.value {
        Some(v) => Lattice::decode(&v)?.plain_value()?,
        None => None,
    };
    if !covers(&remote.vv, token.session.scopes.get(&scope).unwrap_or(&VersionVector::new())) {
        return Err(Error::Unavailable(format!("node `{at}` no longer covers the session")).into());
    }
    token.session.observe(&scope, &remote.vv);
    with_session(value_response(value), &token, &at)
}

fn value_response(value: Option<Vec<u8>>) -> Response {
    match value {
        Some(v) => ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn client_write(
    r: Routes,
    headers: HeaderMap,
    scope: String,
    key: String,
    value: Option<Vec<u8>>,
) -> std::result::Result<Response, ApiError> {
    check_client_scope(&r, &scope)?;
    let (mut token, wait) = session_of(&headers)?;
    let me = r.continuum.node_id().to_string();
    if !r.covered(&token.session, &scope, wait).await? {
        return Err(Error::Unavailable(format!(
            "this replica of `{scope}` does not cover the session after {} ms; nothing was written",
            wait.as_millis()
        ))
        .into());
    }
    let (tier, s) = (r.tier.clone(), scope.clone());
    let vv = blocking(move || {
        match value {
            Some(v) => tier.set(&s, &key, v, Default::default()).map(|_| ())?,
            None => tier.delete(&s, &key)?,
        }
        tier.replica_vv(&s)
    })
    .await?;
    token.session.observe(&scope, &vv);
    token.at = Some(me.clone());
    with_session(StatusCode::NO_CONTENT.into_response(), &token, &me)
}

async fn client_put(
    State(r): State<Routes>,
    headers: HeaderMap,
    Path((scope, key)): Path<(String, String)>,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    client_write(r, headers, scope, key, Some(body.to_vec())).await
}

async fn client_delete(
    State(r): State<Routes>,
    headers: HeaderMap,
    Path((scope, key)): Path<(String, String)>,
) -> std::result::Result<Response, ApiError> {
    client_write(r, headers, scope, key, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_token_survives_its_header_text_and_garbage_is_refused() {
        let mut token = SessionToken { at: Some("n1".into()), ..Default::default() };
        let mut vv = VersionVector::new();
        crdts::CmRDT::apply(&mut vv, crdts::Dot::new("n1".to_string(), 7));
        token.session.observe("s", &vv);
        assert_eq!(SessionToken::decode(&token.encode().unwrap()).unwrap(), token);
        assert_eq!(SessionToken::decode("zz").unwrap_err().kind(), databelt_host::ErrorKind::BadInput);
        assert_eq!(SessionToken::decode("00ff").unwrap_err().kind(), databelt_host::ErrorKind::BadInput);
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_segment("ok-1.2_~"), "ok-1.2_~");
    }
}
