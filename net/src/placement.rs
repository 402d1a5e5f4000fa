//! The thin placement service (axum, JSON) and its client (reqwest).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/topology` | | `{t_ms, topology}`: the scenario and the service's clock |
//! | `GET /v1/slos/{workflow}` | | `{step: tmax_ms}` |
//! | `PUT /v1/slos/{workflow}` | `{step: tmax_ms}` | 204 |
//! | `POST /v1/hints/storage[?t_ms=]` | [`ElectionRequest`] | [`Decision`] |
//! | `POST /v1/hints/function[?t_ms=]` | [`FunctionRequest`] | [`FunctionPlacement`] |
//! | `POST /v1/kube/filter[?t_ms=]` | kube-scheduler `ExtenderArgs` | `ExtenderFilterResult` |
//! | `POST /v1/kube/prioritize[?t_ms=]` | kube-scheduler `ExtenderArgs` | `HostPriorityList` (0–10) |
//!
//! The two `kube` routes are a kube-scheduler extender backed by the
//! Databelt scheduler ([`databelt_placement::kube`], docs/kubernetes.md).
//!
//! The clock is scenario time: milliseconds since the service started,
//! unless a request pins `t_ms`. Errors are the shared error body
//! `{"error": kind, "message": text}` ([`crate::http`]): `bad-input` (400),
//! `unknown-node` or `unknown-workflow` (404), `no-capacity` (409).
//!
//! [`PlacementClient`] caches the topology it last fetched and elects
//! locally on that cache when the service is unreachable, so state keeps
//! moving without it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use databelt_placement::{
    Decision, ElectionRequest, Error, FunctionPlacement, FunctionRequest, Result, SchedulerConfig, Topology, elect,
    kube, place_function,
};
use databelt_types::{ErrorBody, ErrorKind};

use crate::auth::{Credentials, ServerSecurity};
use crate::http::ApiError;

/// Step name → Tmax in ms, for one workflow.
pub type Slos = BTreeMap<String, f64>;

/// The topology as served, with the service's clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyView {
    /// Scenario time at which it was served, ms.
    pub t_ms: u64,
    /// The scenario.
    pub topology: Topology,
}

struct ServiceState {
    topology: Topology,
    started: Instant,
    slos: RwLock<HashMap<String, Slos>>,
}

/// The placement service; cheap to clone.
#[derive(Clone)]
pub struct PlacementService {
    state: Arc<ServiceState>,
}

#[derive(Deserialize)]
struct At {
    t_ms: Option<u64>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> std::result::Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::from(Error::BadRequest(format!("body is not the expected JSON: {e}"))))
}

impl PlacementService {
    /// A service for `topology` (validated) whose clock starts now.
    pub fn new(topology: Topology) -> Result<PlacementService> {
        topology.validate()?;
        Ok(PlacementService {
            state: Arc::new(ServiceState { topology, started: Instant::now(), slos: RwLock::new(HashMap::new()) }),
        })
    }

    /// The instant the service's clock started (scenario time 0), so an
    /// emulator can follow the same schedule.
    pub fn origin(&self) -> Instant {
        self.state.started
    }

    /// Scenario time now, ms.
    pub fn now_ms(&self) -> u64 {
        self.state.started.elapsed().as_millis() as u64
    }

    /// The topology served.
    pub fn topology(&self) -> &Topology {
        &self.state.topology
    }

    /// Register the SLOs of a workflow.
    pub fn set_slos(&self, workflow: &str, slos: Slos) -> Result<()> {
        if let Some((step, v)) = slos.iter().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
            return Err(Error::BadRequest(format!("Tmax of step `{step}` must be a non-negative number, got {v}")));
        }
        let mut map = self.state.slos.write().map_err(|_| Error::Unavailable("slo table lock poisoned".into()))?;
        map.insert(workflow.to_string(), slos);
        Ok(())
    }

    /// The axum router of the service.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/topology", get(topology))
            .route("/v1/slos/{workflow}", get(get_slos).put(put_slos))
            .route("/v1/hints/storage", post(storage_hint))
            .route("/v1/hints/function", post(function_hint))
            .route("/v1/kube/filter", post(kube_filter))
            .route("/v1/kube/prioritize", post(kube_prioritize))
            .route("/metrics", get(service_metrics))
            .with_state(self.clone())
            .layer(axum::middleware::map_response(crate::http::json_errors))
    }

    /// Serve on `listener`, secured by `security`, until `shutdown`
    /// resolves. The members `security` admits should be the topology's
    /// nodes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        security: ServerSecurity,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let limits = crate::server::ConnectionLimits::default();
        crate::metrics::handle();
        let router = crate::api::tracked(self.router(), "placement", "placement");
        crate::server::serve(listener, router, limits, security, shutdown).await.map_err(|e| Error::Io(e.to_string()))
    }

    /// Start serving on `addr` in the background of the current tokio
    /// runtime; returns the bound address and a handle that stops it.
    pub async fn spawn(
        self,
        addr: SocketAddr,
        security: ServerSecurity,
    ) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| Error::Io(format!("cannot bind {addr}: {e}")))?;
        let bound = listener.local_addr().map_err(|e| Error::Io(e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = self
                .serve(listener, security, async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok((bound, tx))
    }
}

async fn topology(State(s): State<PlacementService>) -> axum::Json<TopologyView> {
    axum::Json(TopologyView { t_ms: s.now_ms(), topology: s.state.topology.clone() })
}

/// `GET /metrics`: the process's metrics, with the topology's gauges.
async fn service_metrics(State(s): State<PlacementService>) -> Response {
    crate::metrics::render(|| {
        let slos = s.state.slos.read().map(|m| m.len()).unwrap_or(0);
        metrics::gauge!("databelt_placement_workflows_with_slos").set(slos as f64);
        metrics::gauge!("databelt_placement_uptime_seconds").set(s.state.started.elapsed().as_secs_f64());
    })
}

async fn get_slos(State(s): State<PlacementService>, Path(workflow): Path<String>) -> Response {
    let found = s.state.slos.read().ok().and_then(|m| m.get(&workflow).cloned());
    match found {
        Some(slos) => axum::Json(slos).into_response(),
        None => ApiError::new(ErrorKind::UnknownWorkflow, format!("no SLOs for `{workflow}`")).into_response(),
    }
}

async fn put_slos(
    State(s): State<PlacementService>,
    Path(workflow): Path<String>,
    body: axum::body::Bytes,
) -> std::result::Result<StatusCode, ApiError> {
    let slos: Slos = json_body(&body)?;
    s.set_slos(&workflow, slos)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn storage_hint(
    State(s): State<PlacementService>,
    Query(at): Query<At>,
    body: axum::body::Bytes,
) -> std::result::Result<axum::Json<Decision>, ApiError> {
    let request: ElectionRequest = json_body(&body)?;
    let t = at.t_ms.unwrap_or_else(|| s.now_ms());
    Ok(axum::Json(elect(&s.state.topology.snapshot(t), &request)?))
}

async fn function_hint(
    State(s): State<PlacementService>,
    Query(at): Query<At>,
    body: axum::body::Bytes,
) -> std::result::Result<axum::Json<FunctionPlacement>, ApiError> {
    let request: FunctionRequest = json_body(&body)?;
    let t = at.t_ms.unwrap_or_else(|| s.now_ms());
    Ok(axum::Json(place_function(&s.state.topology, t, &request)?))
}

async fn kube_filter(
    State(s): State<PlacementService>,
    Query(at): Query<At>,
    body: axum::body::Bytes,
) -> std::result::Result<axum::Json<kube::ExtenderFilterResult>, ApiError> {
    let args: kube::ExtenderArgs = json_body(&body)?;
    let t = at.t_ms.unwrap_or_else(|| s.now_ms());
    Ok(axum::Json(kube::filter(&s.state.topology, t, &SchedulerConfig::default(), &args)?))
}

async fn kube_prioritize(
    State(s): State<PlacementService>,
    Query(at): Query<At>,
    body: axum::body::Bytes,
) -> std::result::Result<axum::Json<Vec<kube::HostPriority>>, ApiError> {
    let args: kube::ExtenderArgs = json_body(&body)?;
    let t = at.t_ms.unwrap_or_else(|| s.now_ms());
    Ok(axum::Json(kube::prioritize(&s.state.topology, t, &SchedulerConfig::default(), &args)?))
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HintSource {
    /// The placement service answered.
    Service,
    /// The service was unreachable; elected locally on the cached topology.
    LocalCache,
}

struct Cached {
    view: TopologyView,
    fetched: Instant,
}

/// A host's client of the placement service, with a topology cache.
#[derive(Clone)]
pub struct PlacementClient {
    base: String,
    credentials: Credentials,
    http: reqwest::Client,
    cache: Arc<Mutex<Option<Cached>>>,
    /// Circuit breaker: after the service failed to answer a hint, hints are
    /// elected locally without asking it until this instant.
    open_until: Arc<Mutex<Option<Instant>>>,
    cooldown: Duration,
}

/// How long hints skip a service that failed to answer, by default.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(5);

impl PlacementClient {
    /// A client for the service at `base` (e.g. `https://127.0.0.1:7300`),
    /// presenting `credentials`, with a request timeout of `timeout`.
    pub fn new(base: &str, credentials: &Credentials, timeout: Duration) -> Result<PlacementClient> {
        let http = credentials
            .client_builder()
            .map_err(|e| Error::Io(e.to_string()))?
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(crate::http::CLIENT_POOL_IDLE)
            .build()
            .map_err(|e| Error::Io(e.to_string()))?;
        Ok(PlacementClient {
            base: base.trim_end_matches('/').to_string(),
            credentials: credentials.clone(),
            http,
            cache: Arc::new(Mutex::new(None)),
            open_until: Arc::new(Mutex::new(None)),
            cooldown: BREAKER_COOLDOWN,
        })
    }

    /// Skip the service for `cooldown` after it failed to answer a hint
    /// (default [`BREAKER_COOLDOWN`]).
    pub fn with_breaker_cooldown(mut self, cooldown: Duration) -> PlacementClient {
        self.cooldown = cooldown;
        self
    }

    /// Whether hints skip the service now (it failed within the cooldown).
    pub fn breaker_open(&self) -> bool {
        self.open_until.lock().ok().and_then(|o| *o).is_some_and(|t| Instant::now() < t)
    }

    /// Record how the service answered a hint: a failure opens the breaker
    /// (a hung service costs one timeout per cooldown, not one per hint); an
    /// answer closes it.
    fn breaker_saw(&self, failed: bool) {
        if let Ok(mut o) = self.open_until.lock() {
            *o = failed.then(|| Instant::now() + self.cooldown);
        }
    }

    /// Ask the service for a hint unless the breaker is open.
    async fn hint<B: Serialize, T: serde::de::DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        if self.breaker_open() {
            return Err(Error::Unavailable("the placement service failed recently (circuit breaker open)".into()));
        }
        let answer = self.post_json(path, body).await;
        self.breaker_saw(matches!(answer, Err(Error::Unavailable(_))));
        answer
    }

    /// The credentials this client presents (other clients of the same
    /// process, such as a runner's, present the same).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A client that never had a service: it elects on `topology` alone
    /// (clock starting now).
    pub fn seed(&self, topology: Topology) {
        if let Ok(mut c) = self.cache.lock() {
            *c = Some(Cached { view: TopologyView { t_ms: 0, topology }, fetched: Instant::now() });
        }
    }

    /// Fetch the topology and refresh the cache.
    pub async fn refresh(&self) -> Result<TopologyView> {
        let view: TopologyView = self.get_json("/v1/topology").await?;
        view.topology.validate()?;
        if let Ok(mut c) = self.cache.lock() {
            *c = Some(Cached { view: view.clone(), fetched: Instant::now() });
        }
        Ok(view)
    }

    /// The cached topology and the scenario time it implies now.
    pub fn cached(&self) -> Option<(Topology, u64)> {
        let c = self.cache.lock().ok()?;
        c.as_ref().map(|c| (c.view.topology.clone(), c.view.t_ms + c.fetched.elapsed().as_millis() as u64))
    }

    /// The storage node for `request`: asked of the service, or elected
    /// locally on the cached topology when the service cannot be reached.
    pub async fn storage_hint(&self, request: &ElectionRequest) -> Result<(Decision, HintSource)> {
        match self.hint::<_, Decision>("/v1/hints/storage", request).await {
            Ok(d) => {
                if self.cached().is_none() {
                    let _ = self.refresh().await;
                }
                Ok((d, HintSource::Service))
            }
            Err(Error::Unavailable(why)) => {
                let Some((topology, t)) = self.cached() else {
                    return Err(Error::Unavailable(format!("{why}; and no topology is cached")));
                };
                tracing::debug!(%why, "placement service unreachable; electing on the cached topology");
                Ok((elect(&topology.snapshot(t), request)?, HintSource::LocalCache))
            }
            Err(e) => Err(e),
        }
    }

    /// A node for a function.
    pub async fn function_hint(&self, request: &FunctionRequest) -> Result<(FunctionPlacement, HintSource)> {
        match self.hint::<_, FunctionPlacement>("/v1/hints/function", request).await {
            Ok(p) => Ok((p, HintSource::Service)),
            Err(Error::Unavailable(why)) => {
                let (topology, t) =
                    self.cached().ok_or_else(|| Error::Unavailable(format!("{why}; and no topology is cached")))?;
                Ok((place_function(&topology, t, request)?, HintSource::LocalCache))
            }
            Err(e) => Err(e),
        }
    }

    /// The SLOs of `workflow`.
    pub async fn slos(&self, workflow: &str) -> Result<Slos> {
        self.get_json(&format!("/v1/slos/{workflow}")).await
    }

    /// Register the SLOs of `workflow`.
    pub async fn set_slos(&self, workflow: &str, slos: &Slos) -> Result<()> {
        let url = format!("{}/v1/slos/{workflow}", self.base);
        let r = crate::trace_context::inject(self.http.put(&url).json(slos))
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("{url}: {e}")))?;
        check(r).await.map(|_| ())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let r = crate::trace_context::inject(self.http.get(&url))
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("{url}: {e}")))?;
        let r = check(r).await?;
        r.json().await.map_err(|e| Error::Unavailable(format!("{url}: bad answer: {e}")))
    }

    async fn post_json<B: Serialize, T: serde::de::DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let r = crate::trace_context::inject(self.http.post(&url).json(body))
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("{url}: {e}")))?;
        let r = check(r).await?;
        r.json().await.map_err(|e| Error::Unavailable(format!("{url}: bad answer: {e}")))
    }
}

/// Turn an error answer into the error its body reports. Kinds the client
/// acts on keep their meaning (an unreachable or failing service is
/// `Unavailable`, which makes the client elect on its cached topology).
async fn check(r: reqwest::Response) -> Result<reqwest::Response> {
    let status = r.status();
    if status.is_success() {
        return Ok(r);
    }
    let body = r.bytes().await.unwrap_or_default();
    let ErrorBody { error, message } = ErrorBody::decode(status.as_u16(), &body);
    Err(match error {
        ErrorKind::BadInput | ErrorKind::InvalidName => Error::BadRequest(message),
        ErrorKind::UnknownNode => {
            let node = message.strip_prefix("unknown node `").and_then(|m| m.strip_suffix('`'));
            Error::UnknownNode(node.unwrap_or(&message).to_string())
        }
        ErrorKind::NoCapacity => Error::NoCapacity(message),
        kind => Error::Unavailable(format!("{kind} (status {status}): {message}")),
    })
}
