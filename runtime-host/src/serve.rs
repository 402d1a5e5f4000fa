//! `databelt serve`: deploy, list and invoke functions over HTTP.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /healthz` | | `ok` |
//! | `GET /functions` | | JSON list of deployed functions |
//! | `PUT /functions/{name}` | component bytes | 201 + JSON description |
//! | `DELETE /functions/{name}` | | 204, or 404 |
//! | `POST /functions/{name}/invoke` | JSON (`content-type: application/json`) or postcard (any other type) | JSON `{run_id, function, output, steps}`, or the postcard output with `x-databelt-run-id` |
//!
//! `?run_id=` on invoke sets the run id. Errors are JSON
//! `{"error": kind, "message": text}` with a 4xx/5xx status.

use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;
use crate::host::{FunctionInfo, Host, InvokeOptions, InvokeOutcome};
use crate::schema::{json_to_postcard, postcard_to_json};

/// Largest request body (component or input) accepted: 64 MiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The HTTP status for each error.
pub fn status_for(e: &Error) -> StatusCode {
    match e {
        Error::UnknownFunction(_) => StatusCode::NOT_FOUND,
        Error::InvalidFunctionName(_)
        | Error::InvalidComponent(_)
        | Error::CoreModule
        | Error::WrongWorld(_)
        | Error::BadInput(_)
        | Error::NoSuchScope(_)
        | Error::Other(_) => StatusCode::BAD_REQUEST,
        Error::AccessDenied(_) => StatusCode::FORBIDDEN,
        Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
        Error::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Function(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::DeadlineExceeded(_) | Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Workflow(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A short machine-readable name for each error.
pub fn kind_of(e: &Error) -> &'static str {
    match e {
        Error::NoSuchScope(_) => "no-such-scope",
        Error::AccessDenied(_) => "access-denied",
        Error::QuotaExceeded(_) => "quota-exceeded",
        Error::PreconditionFailed(_) => "precondition-failed",
        Error::Timeout(_) => "timeout",
        Error::Unavailable(_) => "unavailable",
        Error::Other(_) => "other",
        Error::InvalidComponent(_) => "invalid-component",
        Error::CoreModule => "core-module",
        Error::WrongWorld(_) => "wrong-world",
        Error::UnknownFunction(_) => "unknown-function",
        Error::InvalidFunctionName(_) => "invalid-function-name",
        Error::BadInput(_) => "bad-input",
        Error::Trap(_) => "trap",
        Error::DeadlineExceeded(_) => "deadline-exceeded",
        Error::MemoryLimitExceeded(_) => "memory-limit-exceeded",
        Error::Function(_) => "function-error",
        Error::TooManySteps(_) => "too-many-steps",
        Error::Workflow(_) => "workflow",
        Error::Config(_) => "config",
        Error::Storage(_) => "storage",
        Error::Runtime(_) => "runtime",
    }
}

struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": kind_of(&self.0), "message": self.0.to_string()});
        (status_for(&self.0), axum::Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// A deployed function as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionView {
    /// Deployed name.
    pub name: String,
    /// The Rust function's name.
    pub source_name: String,
    /// Input type, as Rust-like pseudocode.
    pub input: String,
    /// Output type, as Rust-like pseudocode.
    pub output: String,
}

impl From<&FunctionInfo> for FunctionView {
    fn from(f: &FunctionInfo) -> Self {
        FunctionView {
            name: f.name.clone(),
            source_name: f.source_name.clone(),
            input: f.input_schema.to_pseudocode(),
            output: f.output_schema.to_pseudocode(),
        }
    }
}

/// The router of the host API.
pub fn router(host: Host) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/functions", get(list))
        .route("/functions/{name}", put(deploy).delete(undeploy).get(describe))
        .route("/functions/{name}/invoke", post(invoke))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(host.clone())
        .merge(crate::peer::router_with_sandboxes(host.state().clone(), host.sandboxes().clone()))
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    host: Host,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(host)).with_graceful_shutdown(shutdown).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(Error::Runtime(format!("worker failed: {e}"))))?
        .map_err(ApiError)
}

async fn list(State(host): State<Host>) -> axum::Json<Vec<FunctionView>> {
    axum::Json(host.functions().iter().map(FunctionView::from).collect())
}

async fn describe(State(host): State<Host>, Path(name): Path<String>) -> Result<axum::Json<FunctionView>, ApiError> {
    Ok(axum::Json(FunctionView::from(&host.function(&name)?)))
}

async fn deploy(State(host): State<Host>, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let info = blocking(move || host.deploy(&name, &body)).await?;
    Ok((StatusCode::CREATED, axum::Json(FunctionView::from(&info))).into_response())
}

async fn undeploy(State(host): State<Host>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if host.undeploy(&name)? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError(Error::UnknownFunction(name))) }
}

#[derive(Deserialize)]
struct InvokeQuery {
    run_id: Option<String>,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn invoke(
    State(host): State<Host>,
    Path(name): Path<String>,
    Query(q): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let json = is_json(&headers);
    let options = InvokeOptions { run_id: q.run_id, ..InvokeOptions::default() };
    let (outcome, output_json): (InvokeOutcome, Option<Value>) = blocking(move || {
        let input = if json {
            let value: Value =
                serde_json::from_slice(&body).map_err(|e| Error::BadInput(format!("body is not JSON: {e}")))?;
            json_to_postcard(&host.function(&name)?.input_schema, &value)?
        } else {
            body.to_vec()
        };
        let outcome = host.invoke(&name, &input, options)?;
        let output = if json {
            Some(postcard_to_json(&host.function(&outcome.function)?.output_schema, &outcome.output)?)
        } else {
            None
        };
        Ok((outcome, output))
    })
    .await?;
    match output_json {
        Some(output) => {
            let steps: Vec<Value> = outcome
                .steps
                .iter()
                .map(|s| json!({"function": s.function, "step": s.step, "micros": s.duration.as_micros() as u64}))
                .collect();
            let body = json!({"run_id": outcome.run_id, "function": outcome.function, "output": output, "steps": steps});
            Ok(axum::Json(body).into_response())
        }
        None => {
            let mut resp = outcome.output.into_response();
            if let Ok(v) = HeaderValue::from_str(&outcome.run_id) {
                resp.headers_mut().insert("x-databelt-run-id", v);
            }
            Ok(resp)
        }
    }
}
