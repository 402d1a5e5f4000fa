//! The one HTTP layer every Databelt API shares (host API, peer protocol,
//! step protocol, placement service): the error body, turning errors into
//! answers and answers back into errors, and running blocking work off the
//! async threads.
//!
//! Every error answer is JSON [`ErrorBody`] — `{"error": <kind>, "message":
//! <text>}` — with the status its [`ErrorKind`] decides. Clients decode the
//! kind from the body ([`check`]), so a remote `precondition-failed` or a
//! guest's `memory-limit-exceeded` arrives as that kind, not as
//! `unavailable`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use databelt_host::budget::ByteBudget;
use databelt_host::{Error, ErrorKind, Result};
use databelt_types::ErrorBody;

/// An error answer of any Databelt HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    /// An answer of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError(ErrorBody { error: kind, message: message.into() })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::new(e.kind(), e.to_string())
    }
}

impl From<databelt_placement::Error> for ApiError {
    fn from(e: databelt_placement::Error) -> Self {
        ApiError::new(e.kind(), e.to_string())
    }
}

/// Middleware for every router: an error answer that is not already an
/// [`ErrorBody`] — one made by axum itself, such as a rejected extractor, a
/// body over the size limit or an unknown route — is rewritten into one, so
/// every answer of every API has the same shape.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let mut body = ErrorBody::decode(status.as_u16(), &text);
    if text.is_empty() && status == StatusCode::NOT_FOUND {
        body.message = "no such route".into();
    }
    let mut answer = (status, axum::Json(body)).into_response();
    // Retry-After and our own headers (e.g. `x-databelt-arriving`) survive.
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n == axum::http::header::RETRY_AFTER || n.as_str().starts_with("x-databelt-"))
    {
        answer.headers_mut().insert(name.clone(), value.clone());
    }
    answer
}

/// What [`limit_body`] enforces for one router: its largest body, and the
/// host's budget for bodies in flight.
#[derive(Clone)]
pub struct BodyLimit {
    /// The host's budget (`max_body_bytes_in_flight`).
    pub budget: Arc<ByteBudget>,
    /// The largest body this router's routes accept.
    pub max_body: usize,
}

/// Middleware on every route that takes a body. Before any of it is read:
/// a `content-length` over the router's limit is refused with 413
/// (`quota-exceeded`); then the body's size (its `content-length`, or the
/// router's limit when it has none) is reserved from the host's budget for
/// bodies in flight, and a request that does not fit is refused with 503
/// (`unavailable`) and `retry-after: 1`. The reservation is held until the
/// answer is ready.
pub async fn limit_body(State(limit): State<BodyLimit>, request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit.max_body as u64) {
        return ApiError::new(
            ErrorKind::QuotaExceeded,
            format!("request body is {n} bytes; the limit is {}", limit.max_body),
        )
        .into_response();
    }
    let has_body = declared.is_some_and(|n| n > 0)
        || request.headers().contains_key(header::TRANSFER_ENCODING)
        || !matches!(*request.method(), Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS);
    let charge = if has_body { declared.unwrap_or(limit.max_body as u64) } else { 0 };
    let Some(reservation) = limit.budget.try_reserve(charge) else {
        let mut answer = ApiError::new(
            ErrorKind::Unavailable,
            format!(
                "the host holds {} of its {} bytes for request bodies in flight; this one ({charge} bytes) must wait",
                limit.budget.used(),
                limit.budget.limit()
            ),
        )
        .into_response();
        answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return answer;
    };
    let answer = next.run(request).await;
    drop(reservation);
    answer
}

/// The status an API answers `e` with.
pub fn status_for(e: &Error) -> StatusCode {
    StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// How long the clients of Databelt's APIs keep an idle connection for
/// reuse: well below the servers' default header/idle timeout (30 s), so a
/// client never picks a pooled connection the server is about to close.
pub const CLIENT_POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Run `f` on the blocking pool (store calls, Wasmtime invocations).
/// The work runs inside the caller's span, so what it records (an
/// invocation's span, its state calls) stays in the caller's trace.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| Error::Runtime(format!("worker failed: {e}")))?
}

/// [`blocking`] for work that answers first and leaves a clean-up
/// ([`databelt_host::Host::invoke_deferring_cleanup`]): the answer is sent
/// back as soon as `f` returns it; the clean-up then runs on the same worker
/// thread, off the answer's path.
pub async fn blocking_then_clean<T: Send + 'static>(
    f: impl FnOnce() -> (Result<T>, Option<databelt_host::Cleanup>) + Send + 'static,
) -> Result<T> {
    let span = tracing::Span::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let (answer, cleanup) = f();
            // The receiver is gone only when the request was dropped.
            let _ = tx.send(answer);
            drop(cleanup);
        })
    });
    rx.await.map_err(|_| Error::Runtime("worker failed before it answered".into()))?
}

/// A transport failure talking to `peer` (connect, timeout, broken body),
/// with the transport's error kept as the source.
pub fn unreachable(peer: &str, e: reqwest::Error) -> Error {
    Error::unreachable(format!("peer {peer}"), e)
}

/// Pass a successful answer through; turn an error answer into the error its
/// body reports ([`Error::Remote`], with the remote kind).
pub async fn check(peer: &str, r: reqwest::Response) -> Result<reqwest::Response> {
    let status = r.status();
    if status.is_success() {
        return Ok(r);
    }
    let body = r.bytes().await.unwrap_or_default();
    let body = ErrorBody::decode(status.as_u16(), &body);
    Err(Error::Remote { peer: format!("peer {peer}"), kind: body.error, message: body.message })
}

/// Decode a postcard body that must be exactly one `T`.
pub fn decode_postcard<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Error::BadInput(format!("{} trailing bytes after a {what}", rest.len()))),
        Err(e) => Err(Error::BadInput(format!("body is not a postcard {what}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_error_answers_with_its_kind_and_status() {
        let cases = [
            (Error::PreconditionFailed("x".into()), 412, "precondition-failed"),
            (Error::MemoryLimitExceeded(1), 422, "memory-limit-exceeded"),
            (Error::Trap("panicked".into()), 422, "trap"),
            (Error::UnknownFunction("f".into()), 404, "unknown-function"),
            (Error::QuotaExceeded("big".into()), 413, "quota-exceeded"),
            (
                Error::Remote { peer: "p".into(), kind: ErrorKind::AccessDenied, message: "no".into() },
                403,
                "access-denied",
            ),
        ];
        for (e, status, kind) in cases {
            let a = ApiError::from(e);
            assert_eq!(a.0.error.as_str(), kind);
            assert_eq!(a.into_response().status().as_u16(), status);
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut body = postcard::to_stdvec(&7u32).unwrap_or_default();
        assert_eq!(decode_postcard::<u32>(&body, "u32").unwrap_or_default(), 7);
        body.push(0);
        assert!(matches!(decode_postcard::<u32>(&body, "u32"), Err(Error::BadInput(_))));
    }
}
