//! The host HTTP API (`databelt serve`): deploy, list and invoke functions over HTTP.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /healthz` | | `ok` |
//! | `GET /functions` | | JSON list of deployed functions |
//! | `PUT /functions/{name}[?scopes=a:rw,b:ro]` | component bytes | 201 + JSON description; with `scopes`, the function may open only those scopes (read-write or read-only) |
//! | `DELETE /functions/{name}` | | 204, or 404 |
//! | `POST /functions/{name}/invoke` | JSON (`content-type: application/json`) or postcard (any other type) | JSON `{run_id, function, output, steps}`, or the postcard output with `x-databelt-run-id` |
//! | `GET /state/{scope}?prefix=&cursor=&limit=` | | JSON `{keys, cursor}`: one page of the scope's keys |
//! | `GET /state/{scope}/{key}` | | JSON `{key, found, version, expires_at_ms, hex}` |
//! | `PUT /state/{scope}/{key}` | the value's bytes | 204 |
//! | `DELETE /state/{scope}/{key}` | | 204 |
//! | `GET /apps` | | JSON list of deployed `wasi:http/proxy` apps |
//! | `PUT /apps/{name}` | component bytes | 201 + `{name}` |
//! | `DELETE /apps/{name}` | | 204, or 404 |
//! | any method, `/http/{name}` and `/http/{name}/{path…}` | anything | the app's own answer; the app sees the path after `/http/{name}` |
//!
//! `?run_id=` on invoke sets the run id. Errors are JSON
//! `{"error": kind, "message": text}` with a 4xx/5xx status.

use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use databelt_host::grants::ScopeGrants;
use databelt_host::schema::{json_text_to_postcard, postcard_to_json_text};
use databelt_host::{Error, FunctionInfo, Host, InvokeOptions, InvokeOutcome};
use databelt_types::RunId;

use crate::auth::ServerSecurity;
use crate::http::{ApiError, BodyLimit, blocking, blocking_then_clean, limit_body};

/// Largest request body (component or input) accepted: 64 MiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A deployed function as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionView {
    /// Deployed name.
    pub name: String,
    /// The Rust function's name.
    pub source_name: String,
    /// Input type as a Rust-like expression, then one line per struct or
    /// enum it reaches ([`databelt_host::schema::list_type`]).
    pub input: String,
    /// Output type, written out as `input` is.
    pub output: String,
    /// The scopes it may open (`name:rw,other:ro`), when deployed with an
    /// allowlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
}

impl From<&FunctionInfo> for FunctionView {
    fn from(f: &FunctionInfo) -> Self {
        FunctionView {
            name: f.name.clone(),
            source_name: f.source_name.clone(),
            input: databelt_host::schema::list_type(&f.input_schema),
            output: databelt_host::schema::list_type(&f.output_schema),
            scopes: f.scopes.as_ref().map(ToString::to_string),
        }
    }
}

/// The router of the host API (and the peer routes, with their own run
/// capability bindings).
pub fn router(host: Host) -> Router {
    router_with(host, std::sync::Arc::default())
}

/// The router of the host API and the peer routes, checking run state
/// against `capabilities` (shared with the host's step executor).
pub fn router_with(host: Host, capabilities: std::sync::Arc<crate::workflow::capability::RunCapabilities>) -> Router {
    router_sharing(host, capabilities, std::sync::Arc::default())
}

/// The router of the host API and the peer routes of a host whose step
/// executor is `steps`: run state checked against its capabilities, peer
/// writes notified to its arrivals.
pub fn router_for(host: Host, steps: &crate::workflow::StepExecutor) -> Router {
    router_sharing(host, steps.capabilities(), steps.arrivals())
}

fn router_sharing(
    host: Host,
    capabilities: std::sync::Arc<crate::workflow::capability::RunCapabilities>,
    arrivals: std::sync::Arc<crate::peer::Arrivals>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/functions", get(list))
        .route("/functions/{name}", put(deploy).delete(undeploy).get(describe))
        .route("/functions/{name}/invoke", post(invoke))
        .route("/metrics", get(host_metrics))
        .route("/state/{scope}", get(state_list))
        .route("/state/{scope}/{*key}", get(state_get).put(state_put).delete(state_delete))
        .route("/apps", get(list_apps))
        .route("/apps/{name}", put(deploy_app).delete(undeploy_app))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(host.clone())
        .layer(axum::middleware::from_fn_with_state(
            BodyLimit { budget: host.body_budget().clone(), max_body: MAX_BODY_BYTES },
            limit_body,
        ))
        .merge(crate::peer::router_with_sandboxes(
            host.state().clone(),
            host.sandboxes().clone(),
            host.body_budget().clone(),
            capabilities,
            arrivals,
        ))
        .layer(axum::middleware::map_response(crate::http::json_errors))
        // Apps answer for themselves: their errors are not rewritten.
        .merge(apps_router(host))
}

/// `/http/{name}/…`: requests served by `wasi:http/proxy` apps.
fn apps_router(host: Host) -> Router {
    Router::new()
        .route("/http/{name}", any(serve_app))
        .route("/http/{name}/", any(serve_app))
        .route("/http/{name}/{*path}", any(serve_app))
        .with_state(host.clone())
        .layer(axum::middleware::from_fn_with_state(
            BodyLimit { budget: host.body_budget().clone(), max_body: MAX_BODY_BYTES },
            limit_body,
        ))
}

#[derive(Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Refuse the host's own scopes: operators look at and fix function state.
fn operator_scope(scope: &str) -> Result<(), ApiError> {
    if databelt_types::ScopeName::is_reserved_name(scope) {
        return Err(ApiError::from(Error::AccessDenied(format!(
            "scope `{scope}` is the host's own; it is not changed through the state API"
        ))));
    }
    Ok(())
}

async fn state_list(
    State(host): State<Host>,
    Path(scope): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    operator_scope(&scope)?;
    let page = blocking(move || {
        host.state().list_keys(&scope, q.prefix.as_deref().unwrap_or(""), q.cursor.as_deref(), q.limit)
    })
    .await?;
    Ok(axum::Json(json!({"keys": page.keys, "cursor": page.cursor})).into_response())
}

async fn state_get(State(host): State<Host>, Path((scope, key)): Path<(String, String)>) -> Result<Response, ApiError> {
    operator_scope(&scope)?;
    let shown = key.clone();
    let entry = blocking(move || host.state().get_entry(&scope, &key)).await?;
    let body = match entry {
        Some(e) => {
            json!({"key": shown, "found": true, "version": e.version, "expires_at_ms": e.expires_at_ms, "hex": hex::encode(&e.value)})
        }
        None => json!({"key": shown, "found": false}),
    };
    Ok(axum::Json(body).into_response())
}

async fn state_put(
    State(host): State<Host>,
    Path((scope, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    operator_scope(&scope)?;
    blocking(move || host.state().set(&scope, &key, body.to_vec(), Default::default())).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn state_delete(
    State(host): State<Host>,
    Path((scope, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    operator_scope(&scope)?;
    blocking(move || host.state().delete(&scope, &key)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_apps(State(host): State<Host>) -> axum::Json<Vec<databelt_host::apps::AppInfo>> {
    axum::Json(host.apps_list())
}

async fn deploy_app(State(host): State<Host>, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let info = blocking(move || host.deploy_app(&name, &body)).await?;
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

async fn undeploy_app(State(host): State<Host>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if host.undeploy_app(&name)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::from(Error::UnknownFunction(format!("app `{name}`"))))
    }
}

/// Hand a request to app `name`, its path stripped of `/http/{name}`.
async fn serve_app(
    State(host): State<Host>,
    Path(params): Path<std::collections::HashMap<String, String>>,
    req: axum::extract::Request,
) -> Response {
    let Some(name) = params.get("name").cloned() else {
        return ApiError::from(Error::BadInput("no app name in the path".into())).into_response();
    };
    let (mut parts, body) = req.into_parts();
    let rest = params.get("path").map(String::as_str).unwrap_or("");
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let authority = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
    match format!("http://{authority}/{rest}{query}").parse() {
        Ok(uri) => parts.uri = uri,
        Err(e) => return ApiError::from(Error::BadInput(format!("request path: {e}"))).into_response(),
    }
    let req = axum::http::Request::from_parts(parts, body);
    match host.handle_http(&name, req).await {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => crate::http::json_errors(ApiError::from(e).into_response()).await,
    }
}

/// Serve one node of a continuum on `listener` until `shutdown` resolves:
/// the host API and the peer protocol, and with `steps` the step protocol
/// (`/workflow/v1/...`).
pub async fn serve_node(
    host: Host,
    steps: Option<crate::workflow::StepExecutor>,
    security: ServerSecurity,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The recorder is in place before the first invocation records.
    crate::metrics::handle();
    let limits = crate::server::ConnectionLimits::of(host.config());
    let host_node = host.config().node_id.clone();
    let mut router = match &steps {
        Some(steps) => router_for(host, steps),
        None => router(host),
    };
    // Durable runs ride on the step executor; their delivery loop lives as
    // long as the server.
    let mut _deliveries = None;
    if let Some(steps) = &steps {
        router = router.merge(crate::replication::router(steps.host().state().clone(), steps.continuum().clone()));
    }
    if let Some(steps) = steps {
        let runs = crate::workflow::durable::DurableRuns::new(steps.clone(), Default::default())
            .map_err(std::io::Error::other)?;
        _deliveries = Some(runs.start());
        router = router.merge(steps.router()).merge(runs.router());
    }
    let router = tracked(router, "host", &host_node);
    crate::server::serve(listener, router, limits, security, shutdown).await
}

/// `router` with [`crate::metrics::track`] on every route: a span and the
/// request metrics, labelled with `server` and `node`.
pub fn tracked(router: Router, server: &'static str, node: &str) -> Router {
    let node: std::sync::Arc<str> = node.into();
    router.layer(axum::middleware::from_fn(move |req, next| crate::metrics::track(server, node.clone(), req, next)))
}

/// `GET /metrics`: the process's metrics, with this host's slot gauges.
async fn host_metrics(State(host): State<Host>) -> Response {
    crate::metrics::render(|| {
        let node = host.config().node_id.clone();
        let (in_use, queued) = host.slot_usage();
        metrics::gauge!("databelt_instance_slots_in_use", "node" => node.clone()).set(f64::from(in_use));
        metrics::gauge!("databelt_invocations_queued", "node" => node.clone()).set(f64::from(queued));
        metrics::gauge!("databelt_instance_slots", "node" => node.clone()).set(f64::from(host.slot_capacity()));
        metrics::gauge!("databelt_prepared_instances", "node" => node).set(host.prepared_instances() as f64);
    })
}

/// Serve the API (and the peer routes) on `listener`, secured by
/// `security`, until `shutdown` resolves.
pub async fn serve(
    host: Host,
    security: ServerSecurity,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::metrics::handle();
    let limits = crate::server::ConnectionLimits::of(host.config());
    let node = host.config().node_id.clone();
    crate::server::serve(listener, tracked(router(host), "host", &node), limits, security, shutdown).await
}

async fn list(State(host): State<Host>) -> axum::Json<Vec<FunctionView>> {
    axum::Json(host.functions().iter().map(FunctionView::from).collect())
}

async fn describe(State(host): State<Host>, Path(name): Path<String>) -> Result<axum::Json<FunctionView>, ApiError> {
    Ok(axum::Json(FunctionView::from(&host.function(&name)?)))
}

#[derive(Deserialize)]
struct DeployQuery {
    scopes: Option<String>,
}

async fn deploy(
    State(host): State<Host>,
    Path(name): Path<String>,
    Query(q): Query<DeployQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let scopes = q.scopes.as_deref().map(ScopeGrants::parse).transpose()?;
    let info = blocking(move || host.deploy_with_scopes(&name, &body, scopes)).await?;
    Ok((StatusCode::CREATED, axum::Json(FunctionView::from(&info))).into_response())
}

async fn undeploy(State(host): State<Host>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if host.undeploy(&name)? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::from(Error::UnknownFunction(name))) }
}

#[derive(Deserialize)]
struct InvokeQuery {
    run_id: Option<String>,
}

/// Whether a body starts like a JSON object, array or string.
fn looks_like_json(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| matches!(b, b'{' | b'[' | b'"'))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
}

async fn invoke(
    State(host): State<Host>,
    Path(name): Path<String>,
    Query(q): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let json = is_json(&headers);
    let run_id = q.run_id.map(RunId::new).transpose().map_err(Error::from)?;
    let options = InvokeOptions { run_id, ..InvokeOptions::default() };
    let (outcome, output_json): (InvokeOutcome, Option<Vec<u8>>) = blocking_then_clean(move || {
        let input = if json {
            // Postcard written while the JSON is parsed: no `Value` tree.
            match host.function(&name).and_then(|f| json_text_to_postcard(&f.input_schema, &body)) {
                Ok(input) => input,
                Err(e) => return (Err(e), None),
            }
        } else {
            body.to_vec()
        };
        // Answered first; the Store's teardown and the next instance after.
        let (outcome, cleanup) = host.invoke_deferring_cleanup(&name, &input, options);
        let answer = outcome
            .map_err(|e| match e {
                Error::BadInput(m) if !json && looks_like_json(&body) => Error::BadInput(format!(
                    "{m} (the request has no `content-type: application/json`, so its body was decoded as postcard; it looks like JSON: send that header)"
                )),
                other => other,
            })
            .and_then(|outcome| {
                let output = if json {
                    // JSON text straight from the postcard bytes: no `Value`
                    // tree, which took tens of times a byte array's size.
                    Some(postcard_to_json_text(&host.function(&outcome.function)?.output_schema, &outcome.output)?)
                } else {
                    None
                };
                Ok((outcome, output))
            });
        (answer, Some(cleanup))
    })
    .await?;
    match output_json {
        Some(output) => {
            let steps: Vec<Value> = outcome
                .steps
                .iter()
                .map(|s| json!({"function": s.function, "step": s.step, "micros": s.duration.as_micros() as u64}))
                .collect();
            let head = serde_json::to_vec(&json!({"run_id": outcome.run_id, "function": outcome.function}))
                .map_err(|e| Error::Runtime(e.to_string()))?;
            let steps = serde_json::to_vec(&steps).map_err(|e| Error::Runtime(e.to_string()))?;
            // {"run_id":…,"function":…,"output":<text>,"steps":[…]}
            let mut body = Vec::with_capacity(head.len() + output.len() + steps.len() + 24);
            body.extend_from_slice(&head[..head.len().saturating_sub(1)]);
            body.extend_from_slice(b",\"output\":");
            body.extend_from_slice(&output);
            body.extend_from_slice(b",\"steps\":");
            body.extend_from_slice(&steps);
            body.push(b'}');
            Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        None => {
            let mut resp = outcome.output.into_response();
            if let Ok(v) = HeaderValue::from_str(outcome.run_id.as_str()) {
                resp.headers_mut().insert("x-databelt-run-id", v);
            }
            Ok(resp)
        }
    }
}
