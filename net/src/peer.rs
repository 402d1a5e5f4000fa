//! The peer protocol between Databelt hosts: HTTP, postcard bodies for
//! batches, raw streamed bodies for single values.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /peer/v1/state/{scope}/{key}` | | the value (octet stream, streamed), 404 if absent |
//! | `PUT /peer/v1/state/{scope}/{key}` | the value (streamed); header `x-databelt-ttl-ms` optional | 204 once stored |
//! | `DELETE /peer/v1/state/{scope}/{key}` | | 204 |
//! | `POST /peer/v1/batch-get` | postcard [`BatchGet`] | postcard `Vec<Option<Vec<u8>>>` |
//! | `POST /peer/v1/batch-put` | postcard [`BatchPut`] | 204 once stored (all or nothing) |
//!
//! With `x-databelt-sandbox: 1` a request works on the fusion sandbox of
//! its run on the receiving host (created by the first write, dropped when
//! the run ends) instead of the host's store: that is how fused states are
//! handed to, and fetched from, another host's sandbox.
//!
//! Every request carries the workflow run id in `x-databelt-run-id`
//! (1-128 bytes); a request without one is 400. The key is one
//! percent-encoded path segment. Limits are the receiving host's state
//! limits: a value over `max_value_bytes` is refused with 413 as soon as
//! its `content-length` (or the bytes received so far) exceed it, and
//! nothing is written. A `PUT` answers 204 only after the value is stored
//! (on redb: committed to disk) — that answer is the acknowledgement a
//! producer waits for before it counts a push as done.
//!
//! Memory: a value is held once on each side. The sender streams it from
//! the `Vec` it owns; the receiver appends the body's chunks into one buffer
//! presized from `content-length` and hands that buffer to the store.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use databelt_host::budget::ByteBudget;
use databelt_host::state::{Sandboxes, SetOptions, StateTier};
use databelt_host::{Error, Result};
use databelt_types::RunId;

use crate::auth::Credentials;
use crate::batch_body::{BatchBodyError, BatchPutBody, BatchPutDecoder};
use crate::http::{ApiError, BodyLimit, blocking, check, decode_postcard, limit_body, unreachable};
use crate::workflow::capability::{CAPABILITY_HEADER, RunCapabilities};
use crate::workflow::protocol::RUN_SCOPE;

/// Header carrying the run id.
pub const RUN_ID_HEADER: &str = "x-databelt-run-id";
/// Header carrying a TTL for `PUT`.
pub const TTL_HEADER: &str = "x-databelt-ttl-ms";
/// Header selecting the run's fusion sandbox (`1`) instead of the store.
pub const SANDBOX_HEADER: &str = "x-databelt-sandbox";

/// Set (to `1`) on a `404` answer to a read of run state when the answering
/// node is receiving a push of that run's state right now: the value may
/// still land there ([`PeerClient::get_in_flight`]).
pub const ARRIVING_HEADER: &str = "x-databelt-arriving";

/// What a read of a state that may still be in flight found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InFlight {
    /// The value.
    Found(Vec<u8>),
    /// Not there; `arriving`: the node is receiving a push of the run's
    /// state (perhaps this one) as it answered.
    Absent {
        /// Whether a push of the run's state was arriving.
        arriving: bool,
    },
}

/// Which tier of a host a peer request works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Place {
    /// The host's store (durable with redb).
    #[default]
    Store,
    /// The run's fusion sandbox (memory, dropped with the run).
    Sandbox,
}

/// Body of `batch-get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGet {
    /// The scope.
    pub scope: String,
    /// The keys, at most the receiver's batch limit.
    pub keys: Vec<String>,
}

/// Body of `batch-put`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPut {
    /// The scope.
    pub scope: String,
    /// Entries to store atomically (values encoded as byte strings: the
    /// same postcard bytes as a `Vec<u8>`, copied in one go).
    #[serde(with = "byte_strings")]
    pub entries: Vec<(String, Vec<u8>)>,
    /// Time to live of every entry, ms.
    pub ttl_ms: Option<u64>,
}

/// serde for the values in batch bodies. serde sees `Vec<u8>` as a
/// sequence, which postcard encodes and decodes byte by byte; as byte
/// strings the encoding is identical (a varint length, then the bytes) and a
/// value is one copy. Tested against the plain encoding below.
pub mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    /// Serialize batch entries, values as byte strings.
    pub fn serialize<S: Serializer>(entries: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(entries.iter().map(|(k, v)| (k, Bytes::new(v))))
    }

    /// Deserialize batch entries, values as byte strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let raw = Vec::<(String, ByteBuf)>::deserialize(d)?;
        Ok(raw.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
    }

    /// The postcard body of a `batch-get` answer.
    pub fn encode_values(values: &[Option<Vec<u8>>]) -> postcard::Result<Vec<u8>> {
        let values: Vec<Option<&Bytes>> = values.iter().map(|v| v.as_deref().map(Bytes::new)).collect();
        postcard::to_stdvec(&values)
    }

    /// Decode a `batch-get` answer.
    pub fn decode_values(body: &[u8]) -> postcard::Result<Vec<Option<Vec<u8>>>> {
        let values: Vec<Option<ByteBuf>> = postcard::from_bytes(body)?;
        Ok(values.into_iter().map(|v| v.map(ByteBuf::into_vec)).collect())
    }
}

/// Run state arriving at a host from its peers: how many pushes of each
/// run are being received, and a notification when one ends. A step whose
/// input is still in flight to this host waits on it
/// ([`crate::workflow::StepExecutor::arrivals`]).
#[derive(Debug, Default)]
pub struct Arrivals {
    notify: tokio::sync::Notify,
    incoming: Mutex<HashMap<RunId, usize>>,
}

impl Arrivals {
    /// A push of `run`'s state has started arriving; it counts until the
    /// guard drops (the write done or failed), which wakes the waiters.
    pub fn begin(self: &Arc<Self>, run: &RunId) -> Incoming {
        if let Ok(mut m) = self.incoming.lock() {
            *m.entry(run.clone()).or_default() += 1;
        }
        Incoming { arrivals: self.clone(), run: run.clone() }
    }

    /// Whether a push of `run`'s state is being received now.
    pub fn receiving(&self, run: &RunId) -> bool {
        self.incoming.lock().map(|m| m.contains_key(run)).unwrap_or(false)
    }

    /// A future that completes at the next push's end (enable it before
    /// looking, so a push ending in between is not missed).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// A push being received (see [`Arrivals::begin`]).
#[derive(Debug)]
pub struct Incoming {
    arrivals: Arc<Arrivals>,
    run: RunId,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Ok(mut m) = self.arrivals.incoming.lock()
            && let Some(n) = m.get_mut(&self.run)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.run);
            }
        }
        self.arrivals.notify.notify_waiters();
    }
}

/// The peer routes over `tier` and the host's run `sandboxes`; request
/// bodies in flight count against the host's `budget`.
///
/// A request for run state — the reserved run scope (`databelt.runs`) or a
/// run's sandbox — must carry the run's capability
/// ([`crate::workflow::capability`]); `capabilities` are the host's bindings,
/// shared with its step executor. Every write counts in `arrivals` while it
/// is received (the step executor's: a step waiting for an input in flight
/// keeps waiting while it arrives, and looks again when it ends).
pub fn router_with_sandboxes(
    tier: StateTier,
    sandboxes: Sandboxes,
    budget: Arc<ByteBudget>,
    capabilities: Arc<RunCapabilities>,
    arrivals: Arc<Arrivals>,
) -> Router {
    let batch_limit = batch_limit(tier.limits());
    Router::new()
        .route("/peer/v1/state/{scope}/{key}", get(get_value).put(put_value).delete(delete_value))
        .route("/peer/v1/batch-get", post(batch_get))
        .route("/peer/v1/batch-put", post(batch_put))
        .layer(DefaultBodyLimit::max(batch_limit))
        .with_state(Peer { tier, sandboxes, capabilities })
        .layer(axum::middleware::from_fn_with_state(arrivals, track_arrivals))
        .layer(axum::middleware::from_fn_with_state(BodyLimit { budget, max_body: batch_limit }, limit_body))
        .layer(axum::middleware::map_response(crate::http::json_errors))
}

/// The largest batch body a host takes: up to eight values of the largest
/// size, plus framing.
fn batch_limit(limits: &databelt_host::state::StateLimits) -> usize {
    limits.max_value_bytes.saturating_mul(8).saturating_add(1 << 20)
}

/// What the peer routes serve.
#[derive(Clone)]
struct Peer {
    tier: StateTier,
    sandboxes: Sandboxes,
    capabilities: Arc<RunCapabilities>,
}

/// Count a write of run state (`PUT` of a value, `batch-put`) in
/// `arrivals` from its headers until its answer is ready: while its body is
/// still arriving, a step waiting for it keeps waiting. A read of the run's
/// state answered `404` while one is arriving says so ([`ARRIVING_HEADER`]):
/// a step on another node waiting for it keeps waiting too. (The count is
/// taken before the run's capability is checked; a forged one only makes
/// a waiting step wait longer, up to its bound.)
async fn track_arrivals(
    State(arrivals): State<Arc<Arrivals>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let writes = request.method() == axum::http::Method::PUT || request.uri().path() == "/peer/v1/batch-put";
    let reads = request.method() == axum::http::Method::GET;
    let run = request.headers().get(RUN_ID_HEADER).and_then(|v| v.to_str().ok()).and_then(|s| RunId::new(s).ok());
    let _incoming = match (writes, &run) {
        (true, Some(run)) => Some(arrivals.begin(run)),
        _ => None,
    };
    let mut response = next.run(request).await;
    if reads
        && response.status() == StatusCode::NOT_FOUND
        && let Some(run) = &run
        && arrivals.receiving(run)
    {
        response.headers_mut().insert(ARRIVING_HEADER, axum::http::HeaderValue::from_static("1"));
    }
    response
}

impl Peer {
    /// Run state (the run scope, or the run's sandbox) needs the run's
    /// capability; other scopes of the store do not.
    fn check_run(&self, headers: &HeaderMap, run: &RunId, scope: &str) -> Result<()> {
        if scope != RUN_SCOPE && Self::place(headers)? == Place::Store {
            return Ok(());
        }
        let capability = headers.get(CAPABILITY_HEADER).and_then(|v| v.to_str().ok());
        let idle = Duration::from_millis(self.tier.limits().max_sandbox_idle_ms);
        self.capabilities.check(run, capability, idle, std::time::Instant::now())
    }

    fn place(headers: &HeaderMap) -> Result<Place> {
        match headers.get(SANDBOX_HEADER).map(|v| v.as_bytes()) {
            None | Some(b"0") => Ok(Place::Store),
            Some(b"1") => Ok(Place::Sandbox),
            Some(_) => Err(Error::BadInput(format!("`{SANDBOX_HEADER}` must be 0 or 1"))),
        }
    }

    /// The tier a read works on. A run with no sandbox here reads from an
    /// empty one (same checks, nothing found) that is not kept.
    fn for_read(&self, headers: &HeaderMap, run: &RunId) -> Result<StateTier> {
        match Self::place(headers)? {
            Place::Store => Ok(self.tier.clone()),
            Place::Sandbox => match self.sandboxes.get(run)? {
                Some(s) => Ok(s.tier().clone()),
                None => Ok(Sandboxes::new(self.tier.limits().clone()).open(run)?.tier().clone()),
            },
        }
    }

    /// The tier a write works on. A sandbox is created by its first write,
    /// idle for at most the write's TTL (capped by the host; the host's
    /// limit when the write has none).
    fn for_write(&self, headers: &HeaderMap, run: &RunId, ttl_ms: Option<u64>) -> Result<StateTier> {
        match Self::place(headers)? {
            Place::Store => Ok(self.tier.clone()),
            Place::Sandbox => {
                let ttl = ttl_ms.unwrap_or(self.tier.limits().max_sandbox_idle_ms);
                Ok(self.sandboxes.open_with_ttl(run, ttl)?.tier().clone())
            }
        }
    }
}

fn run_id(headers: &HeaderMap) -> Result<RunId> {
    let id = headers
        .get(RUN_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::BadInput(format!("missing `{RUN_ID_HEADER}` header")))?;
    Ok(RunId::new(id)?)
}

async fn get_value(
    State(peer): State<Peer>,
    headers: HeaderMap,
    Path((scope, key)): Path<(String, String)>,
) -> std::result::Result<Response, ApiError> {
    let run = run_id(&headers)?;
    tracing::debug!(%run, %scope, %key, "peer get");
    peer.check_run(&headers, &run, &scope)?;
    let tier = peer.for_read(&headers, &run)?;
    match blocking(move || tier.get(&scope, &key)).await? {
        Some(v) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from(v)).into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

async fn put_value(
    State(peer): State<Peer>,
    headers: HeaderMap,
    Path((scope, key)): Path<(String, String)>,
    body: Body,
) -> std::result::Result<StatusCode, ApiError> {
    let run = run_id(&headers)?;
    Peer::place(&headers)?;
    peer.check_run(&headers, &run, &scope)?;
    let tier = peer.tier.clone();
    let ttl_ms = match headers.get(TTL_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Error::BadInput(format!("`{TTL_HEADER}` must be a number of milliseconds")))?,
        ),
    };
    let max = tier.limits().max_value_bytes;
    // Check the key and the scope before taking the body.
    tier.check_scope_and_key(&scope, &key)?;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > max) {
        return Err(Error::QuotaExceeded(format!("value is {n} bytes; the limit is {max}")).into());
    }
    let mut value = Vec::with_capacity(declared.unwrap_or(0).min(max));
    let mut stream = body.into_data_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| Error::BadInput(format!("body: {e}")))?;
        if value.len() + chunk.len() > max {
            return Err(Error::QuotaExceeded(format!("value is over the limit of {max} bytes")).into());
        }
        value.extend_from_slice(&chunk);
    }
    tracing::debug!(%run, %scope, %key, bytes = value.len(), "peer put");
    let tier = peer.for_write(&headers, &run, ttl_ms)?;
    blocking(move || tier.set(&scope, &key, value, SetOptions { ttl_ms, if_not_exists: false }).map(|_| ())).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_value(
    State(peer): State<Peer>,
    headers: HeaderMap,
    Path((scope, key)): Path<(String, String)>,
) -> std::result::Result<StatusCode, ApiError> {
    let run = run_id(&headers)?;
    peer.check_run(&headers, &run, &scope)?;
    let tier = peer.for_read(&headers, &run)?;
    blocking(move || tier.delete(&scope, &key)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn batch_get(
    State(peer): State<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    let run = run_id(&headers)?;
    let req: BatchGet = decode_postcard(&body, "BatchGet")?;
    peer.check_run(&headers, &run, &req.scope)?;
    let tier = peer.for_read(&headers, &run)?;
    let values = blocking(move || tier.get_many(&req.scope, &req.keys)).await?;
    let bytes = byte_strings::encode_values(&values).map_err(|e| Error::Runtime(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/postcard")], bytes).into_response())
}

/// `batch-put`, decoded as it arrives ([`BatchPutDecoder`]): who may write
/// the batch's scope is checked as soon as the scope has arrived, a value
/// over the limit is refused at its header, and each value is copied once.
async fn batch_put(
    State(peer): State<Peer>,
    headers: HeaderMap,
    body: Body,
) -> std::result::Result<StatusCode, ApiError> {
    let run = run_id(&headers)?;
    Peer::place(&headers)?;
    let max_body = batch_limit(peer.tier.limits());
    let mut decoder = BatchPutDecoder::new(peer.tier.limits().max_value_bytes);
    let mut checked = false;
    let mut received = 0usize;
    let mut stream = body.into_data_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| Error::BadInput(format!("body: {e}")))?;
        received = received.saturating_add(chunk.len());
        if received > max_body {
            return Err(Error::QuotaExceeded(format!("request body is over the limit of {max_body} bytes")).into());
        }
        decoder.feed(&chunk).map_err(batch_body_error)?;
        if !checked && let Some(scope) = decoder.scope() {
            peer.check_run(&headers, &run, scope)?;
            checked = true;
        }
    }
    let req = decoder.finish().map_err(batch_body_error)?;
    if !checked {
        peer.check_run(&headers, &run, &req.scope)?;
    }
    let tier = peer.for_write(&headers, &run, req.ttl_ms)?;
    blocking(move || tier.set_many(&req.scope, req.entries, SetOptions { ttl_ms: req.ttl_ms, if_not_exists: false }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The error a refused batch body answers with.
fn batch_body_error(e: BatchBodyError) -> ApiError {
    match e {
        BatchBodyError::Malformed(_) => Error::BadInput(e.to_string()).into(),
        BatchBodyError::ValueTooLarge { .. } => Error::QuotaExceeded(e.to_string()).into(),
    }
}

/// Note `peer` as used at `now`, forgetting the least recently used peer
/// when [`MAX_REMEMBERED_PEERS`] are remembered.
fn remember(used: &mut HashMap<String, Instant>, peer: &str, now: Instant) {
    if let Some(t) = used.get_mut(peer) {
        *t = now;
        return;
    }
    if used.len() >= MAX_REMEMBERED_PEERS
        && let Some(oldest) = used.iter().min_by_key(|(_, t)| **t).map(|(p, _)| p.clone())
    {
        used.remove(&oldest);
    }
    used.insert(peer.to_string(), now);
}

impl Place {
    fn header(self) -> &'static str {
        match self {
            Place::Store => "0",
            Place::Sandbox => "1",
        }
    }
}

/// A client of other hosts' peer routes.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    scheme: &'static str,
    /// The capabilities of the runs this host works for, sent with every
    /// request for that run.
    carried: Arc<Mutex<HashMap<RunId, String>>>,
    /// When a request last went to each peer (its address): a peer used
    /// within [`WARM_FRESH`] likely has a pooled connection open.
    used: Arc<Mutex<HashMap<String, Instant>>>,
}

/// A peer this client sent a request to less than this long ago is not
/// warmed again ([`PeerClient::warm`]): half the pool's idle timeout, so a
/// connection it opened is still pooled.
pub const WARM_FRESH: Duration = Duration::from_secs(crate::http::CLIENT_POOL_IDLE.as_secs() / 2);

/// Most peers whose last use a client remembers; beyond that the oldest is
/// forgotten (and may be warmed once more than needed).
const MAX_REMEMBERED_PEERS: usize = 4096;

impl PeerClient {
    /// A client presenting `credentials` (a host's: its node certificate),
    /// whose requests time out after `connect_timeout` (connecting) and
    /// `timeout` (the whole request).
    pub fn new(credentials: &Credentials, connect_timeout: Duration, timeout: Duration) -> Result<PeerClient> {
        PeerClient::with_read_timeout(credentials, connect_timeout, timeout, timeout)
    }

    /// [`PeerClient::new`], also giving up on a peer from which nothing has
    /// arrived for `read_timeout` (a frozen or silently gone peer fails a
    /// request after that, not after the whole request's `timeout`). Leave
    /// it at `timeout` when the link may hold more than that much of a
    /// request in flight (a user-space link emulator buffers whole bodies).
    pub fn with_read_timeout(
        credentials: &Credentials,
        connect_timeout: Duration,
        read_timeout: Duration,
        timeout: Duration,
    ) -> Result<PeerClient> {
        let http = credentials
            .client_builder()?
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .timeout(timeout)
            .pool_idle_timeout(crate::http::CLIENT_POOL_IDLE)
            .build()
            .map_err(|e| Error::Runtime(format!("http client: {e}")))?;
        Ok(PeerClient { http, scheme: credentials.scheme(), carried: Arc::default(), used: Arc::default() })
    }

    /// Open a connection to `peer` ahead of a transfer, unless this client
    /// used the peer within [`WARM_FRESH`]: a cheap request (`GET /healthz`)
    /// within `timeout`, so that the TCP and TLS handshakes — a round trip
    /// or two over a satellite or ground link — are done, and the
    /// connection pooled, before a hand-off needs it. Returns whether a
    /// request was sent. A failure is returned (and the peer may be warmed
    /// again); it changes nothing else: the transfer opens its own
    /// connection as it would have.
    pub async fn warm(&self, peer: &str, timeout: Duration) -> Result<bool> {
        if !self.claim_warm(peer, Instant::now()) {
            return Ok(false);
        }
        let request = self.http.get(format!("{}://{peer}/healthz", self.scheme)).timeout(timeout);
        let sent = request.send().await.map_err(|e| unreachable(peer, e));
        let outcome = match sent {
            Ok(r) => check(peer, r).await.map(|_| true),
            Err(e) => Err(e),
        };
        if outcome.is_err()
            && let Ok(mut used) = self.used.lock()
        {
            used.remove(peer);
        }
        outcome
    }

    /// Whether `peer` needs warming at `now`; if so it counts as used from
    /// now on (so concurrent steps warm it once).
    fn claim_warm(&self, peer: &str, now: Instant) -> bool {
        let Ok(mut used) = self.used.lock() else {
            return false;
        };
        if used.get(peer).is_some_and(|t| now.saturating_duration_since(*t) < WARM_FRESH) {
            return false;
        }
        remember(&mut used, peer, now);
        true
    }

    /// Send `request` to `peer`, noting the peer as used.
    async fn send(&self, peer: &str, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        if let Ok(mut used) = self.used.lock() {
            remember(&mut used, peer, Instant::now());
        }
        request.send().await.map_err(|e| unreachable(peer, e))
    }

    /// Send `capability` with every request for `run` from now on (the host
    /// got it with a step of the run). At most
    /// [`crate::workflow::capability::MAX_BOUND_RUNS`] runs are carried; beyond
    /// that, an arbitrary one is forgotten.
    pub fn carry(&self, run: &RunId, capability: &str) {
        if let Ok(mut carried) = self.carried.lock() {
            if carried.len() >= crate::workflow::capability::MAX_BOUND_RUNS
                && let Some(any) = carried.keys().next().cloned()
            {
                carried.remove(&any);
            }
            carried.insert(run.clone(), capability.to_string());
        }
    }

    /// Stop carrying `run`'s capability (the run is over here).
    pub fn drop_run(&self, run: &RunId) {
        if let Ok(mut carried) = self.carried.lock() {
            carried.remove(run);
        }
    }

    /// `request` for `run`: its id, its capability when carried, and the
    /// current trace context.
    fn for_run(&self, request: reqwest::RequestBuilder, run: &RunId) -> reqwest::RequestBuilder {
        let request = crate::trace_context::inject(request.header(RUN_ID_HEADER, run.as_str()));
        match self.carried.lock().ok().and_then(|c| c.get(run).cloned()) {
            Some(capability) => request.header(CAPABILITY_HEADER, capability),
            None => request,
        }
    }

    fn url(&self, peer: &str, scope: &str, key: &str) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&format!("{}://{peer}/", self.scheme))
            .map_err(|e| Error::BadInput(format!("peer address `{peer}`: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| Error::BadInput(format!("peer address `{peer}` cannot take a path")))?
            .extend(["peer", "v1", "state", scope, key]);
        Ok(url)
    }

    /// Read `scope/key` from `peer` (`host:port`).
    pub async fn get(&self, peer: &str, run_id: &RunId, scope: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.get_from(peer, run_id, Place::Store, scope, key).await
    }

    /// Read `scope/key` from `place` on `peer`.
    pub async fn get_from(
        &self,
        peer: &str,
        run_id: &RunId,
        place: Place,
        scope: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(match self.get_in_flight(peer, run_id, place, scope, key).await? {
            InFlight::Found(value) => Some(value),
            InFlight::Absent { .. } => None,
        })
    }

    /// [`Self::get_from`], saying when the value is absent whether `peer`
    /// was receiving a push of the run's state as it answered.
    pub async fn get_in_flight(
        &self,
        peer: &str,
        run_id: &RunId,
        place: Place,
        scope: &str,
        key: &str,
    ) -> Result<InFlight> {
        let url = self.url(peer, scope, key)?;
        let r =
            self.send(peer, self.for_run(self.http.get(url), run_id).header(SANDBOX_HEADER, place.header())).await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(InFlight::Absent { arriving: r.headers().get(ARRIVING_HEADER).is_some_and(|v| v == "1") });
        }
        let mut r = check(peer, r).await?;
        // One buffer, presized: the value is held once.
        let mut value = Vec::with_capacity(r.content_length().unwrap_or(0).min(1 << 32) as usize);
        while let Some(chunk) = r.chunk().await.map_err(|e| unreachable(peer, e))? {
            value.extend_from_slice(&chunk);
        }
        Ok(InFlight::Found(value))
    }

    /// Store `value` under `scope/key` on `peer`; returns once the peer has
    /// stored it and said so.
    pub async fn put(
        &self,
        peer: &str,
        run_id: &RunId,
        scope: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<()> {
        fail::fail_point!("peer-push", |_| Err(Error::Unavailable(format!("peer {peer}: fail point peer-push"))));
        let url = self.url(peer, scope, key)?;
        let mut req = self.for_run(self.http.put(url), run_id).body(value);
        if let Some(ttl) = ttl_ms {
            req = req.header(TTL_HEADER, ttl.to_string());
        }
        let r = self.send(peer, req).await?;
        check(peer, r).await.map(|_| ())
    }

    /// Delete `scope/key` on `peer`.
    pub async fn delete(&self, peer: &str, run_id: &RunId, scope: &str, key: &str) -> Result<()> {
        let url = self.url(peer, scope, key)?;
        let r = self.send(peer, self.for_run(self.http.delete(url), run_id)).await?;
        check(peer, r).await.map(|_| ())
    }

    /// Read many keys of one scope from `peer` in one request.
    pub async fn batch_get(&self, peer: &str, run_id: &RunId, req: &BatchGet) -> Result<Vec<Option<Vec<u8>>>> {
        self.batch_get_from(peer, run_id, Place::Store, req).await
    }

    /// Read many keys of one scope from `place` on `peer` in one request.
    pub async fn batch_get_from(
        &self,
        peer: &str,
        run_id: &RunId,
        place: Place,
        req: &BatchGet,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let r = self.post_postcard(peer, run_id, place, "batch-get", req).await?;
        let bytes = r.bytes().await.map_err(|e| unreachable(peer, e))?;
        byte_strings::decode_values(&bytes)
            .map_err(|e| Error::Unavailable(format!("peer {peer}: malformed answer: {e}")))
    }

    /// Store many entries of one scope on `peer`, atomically, in one request
    /// (the values are sent from their own buffers, not copied).
    pub async fn batch_put(&self, peer: &str, run_id: &RunId, req: BatchPut) -> Result<()> {
        let entries: Vec<(String, Bytes)> = req.entries.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect();
        self.batch_put_to(peer, run_id, Place::Store, BatchPutBody::new(&req.scope, &entries, req.ttl_ms)).await
    }

    /// Store a batch ([`BatchPutBody`]: many entries of one scope) in
    /// `place` on `peer`, atomically, in one request; returns once the peer
    /// has stored them and said so.
    pub async fn batch_put_to(&self, peer: &str, run_id: &RunId, place: Place, body: BatchPutBody) -> Result<()> {
        fail::fail_point!("peer-push", |_| Err(Error::Unavailable(format!("peer {peer}: fail point peer-push"))));
        let request = self
            .for_run(self.http.post(format!("{}://{peer}/peer/v1/batch-put", self.scheme)), run_id)
            .header(header::CONTENT_TYPE, "application/postcard")
            .header(SANDBOX_HEADER, place.header())
            .body(reqwest::Body::wrap(body));
        let r = self.send(peer, request).await?;
        check(peer, r).await.map(|_| ())
    }

    /// POST `body` to `/peer/v1/{route}` on `peer` within `timeout`; the
    /// answer's body (an error answer becomes the error it reports).
    pub async fn post_raw(&self, peer: &str, route: &str, body: Vec<u8>, timeout: Duration) -> Result<Bytes> {
        let request = crate::trace_context::inject(self.http.post(format!("{}://{peer}/peer/v1/{route}", self.scheme)))
            .header(header::CONTENT_TYPE, "application/postcard")
            .timeout(timeout)
            .body(body);
        let r = self.send(peer, request).await?;
        check(peer, r).await?.bytes().await.map_err(|e| unreachable(peer, e))
    }

    /// GET `/peer/v1/{route}` on `peer` within `timeout`; the answer's body.
    pub async fn get_raw(&self, peer: &str, route: &str, timeout: Duration) -> Result<Bytes> {
        let request = crate::trace_context::inject(self.http.get(format!("{}://{peer}/peer/v1/{route}", self.scheme)))
            .timeout(timeout);
        let r = self.send(peer, request).await?;
        check(peer, r).await?.bytes().await.map_err(|e| unreachable(peer, e))
    }

    /// POST `body` as postcard to `/peer/v1/{route}` and check the answer.
    async fn post_postcard<B: Serialize>(
        &self,
        peer: &str,
        run_id: &RunId,
        place: Place,
        route: &str,
        body: &B,
    ) -> Result<reqwest::Response> {
        let body = postcard::to_stdvec(body).map_err(|e| Error::Runtime(e.to_string()))?;
        let request = self
            .for_run(self.http.post(format!("{}://{peer}/peer/v1/{route}", self.scheme)), run_id)
            .header(SANDBOX_HEADER, place.header())
            .body(body);
        let r = self.send(peer, request).await?;
        check(peer, r).await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::{Arrivals, BatchPut, byte_strings};

    #[tokio::test]
    async fn arrivals_count_pushes_per_run_and_wake_waiters_when_one_ends() {
        let arrivals = std::sync::Arc::new(Arrivals::default());
        let (a, b): (databelt_types::RunId, databelt_types::RunId) =
            ("run-a".parse().unwrap(), "run-b".parse().unwrap());
        let first = arrivals.begin(&a);
        let second = arrivals.begin(&a);
        assert!(arrivals.receiving(&a) && !arrivals.receiving(&b));
        let notified = arrivals.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), notified).await.expect("woken when a push ends");
        assert!(arrivals.receiving(&a), "one push of the run is still arriving");
        drop(second);
        assert!(!arrivals.receiving(&a));
    }

    /// `BatchPut` as plainly derived: values as `Vec<u8>` sequences.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PlainBatchPut {
        scope: String,
        entries: Vec<(String, Vec<u8>)>,
        ttl_ms: Option<u64>,
    }

    proptest! {
        #[test]
        fn batch_put_bytes_are_the_plain_encoding(
            scope in "[a-z]{0,8}",
            entries in proptest::collection::vec(("[a-z0-9]{0,6}", proptest::collection::vec(any::<u8>(), 0..300)), 0..5),
            ttl_ms in proptest::option::of(any::<u64>()),
        ) {
            let fast = BatchPut { scope: scope.clone(), entries: entries.clone(), ttl_ms };
            let plain = PlainBatchPut { scope, entries, ttl_ms };
            let encoded = postcard::to_stdvec(&fast).unwrap();
            prop_assert_eq!(&encoded, &postcard::to_stdvec(&plain).unwrap());
            prop_assert_eq!(postcard::from_bytes::<BatchPut>(&encoded).unwrap(), fast);
        }

        #[test]
        fn batch_get_answers_are_the_plain_encoding(
            values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)), 0..6),
        ) {
            let encoded = byte_strings::encode_values(&values).unwrap();
            prop_assert_eq!(&encoded, &postcard::to_stdvec(&values).unwrap());
            prop_assert_eq!(byte_strings::decode_values(&encoded).unwrap(), values);
        }
    }

    #[test]
    fn a_truncated_batch_is_an_error() {
        let batch = BatchPut { scope: "s".into(), entries: vec![("k".into(), vec![1, 2, 3])], ttl_ms: None };
        let encoded = postcard::to_stdvec(&batch).unwrap();
        assert!(postcard::from_bytes::<BatchPut>(&encoded[..encoded.len() - 2]).is_err());
        assert!(byte_strings::decode_values(&[2, 1, 5, 9]).is_err());
    }

    fn client() -> super::PeerClient {
        let credentials = crate::auth::Credentials::development();
        super::PeerClient::new(&credentials, std::time::Duration::from_secs(1), std::time::Duration::from_secs(2))
            .unwrap()
    }

    #[test]
    fn a_peer_used_lately_is_not_warmed_again_until_its_connection_may_have_closed() {
        let c = client();
        let t0 = std::time::Instant::now();
        assert!(c.claim_warm("a:1", t0), "a peer never used is warmed");
        assert!(!c.claim_warm("a:1", t0), "claimed once: a second step does not warm it too");
        assert!(!c.claim_warm("a:1", t0 + super::WARM_FRESH / 2));
        assert!(c.claim_warm("b:1", t0), "peers are told apart");
        assert!(c.claim_warm("a:1", t0 + super::WARM_FRESH), "after WARM_FRESH it is warmed again");
    }

    #[test]
    fn remembered_peers_are_bounded_and_the_oldest_goes_first() {
        let mut used = std::collections::HashMap::new();
        let t0 = std::time::Instant::now();
        for i in 0..super::MAX_REMEMBERED_PEERS {
            super::remember(&mut used, &format!("p{i}"), t0 + std::time::Duration::from_millis(i as u64 + 1));
        }
        super::remember(&mut used, "p0", t0 + std::time::Duration::from_secs(3600));
        super::remember(&mut used, "new", t0 + std::time::Duration::from_secs(3601));
        assert_eq!(used.len(), super::MAX_REMEMBERED_PEERS);
        assert!(used.contains_key("p0"), "used again, so no longer the oldest");
        assert!(!used.contains_key("p1"), "the least recently used is forgotten");
        assert!(used.contains_key("new"));
    }

    #[tokio::test]
    async fn warming_sends_one_cheap_request_and_a_failure_lets_it_try_again() {
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/healthz",
            axum::routing::get(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { "ok" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let c = client();
        let timeout = std::time::Duration::from_secs(2);
        assert!(c.warm(&addr, timeout).await.unwrap(), "a request was sent");
        assert!(!c.warm(&addr, timeout).await.unwrap(), "not again while the connection is fresh");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

        // Nobody listens here: the error is returned, and the peer is not
        // marked as used, so the next step tries again.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        assert!(c.warm(&closed, timeout).await.is_err());
        assert!(c.warm(&closed, timeout).await.is_err(), "tried again, not skipped as fresh");
    }
}
