//! Prometheus metrics and request tracing of every Databelt server.
//!
//! The host core (`databelt-host`) records through the `metrics` facade:
//! invocations, their duration, state operations. This layer records the
//! data path (hand-offs, bytes moved, SLO violations, where reads were
//! served) and every HTTP request, and serves them all at `GET /metrics`
//! in the Prometheus text format (`metrics-exporter-prometheus`). Names
//! follow Prometheus conventions; no run id is ever a label. The full list
//! is in docs/observability.md.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for durations, seconds: 100 µs to 60 s.
const SECONDS_BUCKETS: &[f64] =
    &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The process's Prometheus recorder, installed on first use. `None` when
/// another recorder was installed first (an embedder's own): then that one
/// has the metrics and `/metrics` says so.
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new().set_buckets(SECONDS_BUCKETS) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets refused; histograms are summaries");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed; /metrics will be empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "databelt_invocations_total",
        "Function invocations, by node, function and outcome (ok or the error kind)"
    );
    describe_histogram!(
        "databelt_invocation_duration_seconds",
        Unit::Seconds,
        "Invocation wall time including instantiation"
    );
    describe_counter!(
        "databelt_state_operations_total",
        "State calls made by functions, by interface, tier and operation"
    );
    describe_counter!("databelt_state_bytes_total", Unit::Bytes, "Value bytes read or written by state calls");
    describe_counter!("databelt_handoffs_total", "Hand-offs of a step's state toward its successors, by outcome");
    describe_counter!("databelt_handoff_bytes_total", Unit::Bytes, "Bytes a hand-off sent to another node");
    describe_histogram!(
        "databelt_handoff_duration_seconds",
        Unit::Seconds,
        "Election plus transfer time of a hand-off"
    );
    describe_counter!("databelt_slo_violations_total", "Hand-offs that missed their Tmax");
    describe_counter!("databelt_state_reads_total", "Step input reads, by where they were served");
    describe_gauge!(
        "databelt_local_state_availability_ratio",
        "Share of step input reads served by the reading node itself"
    );
    describe_gauge!("databelt_instance_slots_in_use", "Instance slots held now");
    describe_gauge!("databelt_instance_slots", "Instance slots of the host (max_concurrent_instances)");
    describe_gauge!("databelt_invocations_queued", "Invocations waiting for an instance slot");
    describe_gauge!(
        "databelt_prepared_instances",
        "Instances made ahead of their invocations, held now (prepared_instances)"
    );
    describe_counter!(
        "databelt_http_requests_total",
        "HTTP requests served, by server, route family, method and status"
    );
    describe_histogram!(
        "databelt_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request time to the response head"
    );
}

/// The Prometheus text of every metric of this process, after running
/// `update` (which sets the gauges read at scrape time).
pub fn render(update: impl FnOnce()) -> Response {
    let Some(handle) = handle() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed in this process\n",
        )
            .into_response();
    };
    update();
    handle.run_upkeep();
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
}

/// The route family of a path, a bounded label: its first segment when it
/// is one the servers have, `other` otherwise.
fn route_family(path: &str) -> &'static str {
    match path.trim_start_matches('/').split('/').next().unwrap_or_default() {
        "healthz" => "healthz",
        "metrics" => "metrics",
        "functions" => "functions",
        "apps" => "apps",
        "http" => "http",
        "peer" => "peer",
        "workflow" => "workflow",
        "workflows" => "workflows",
        "runs" => "runs",
        "replicas" => "replicas",
        "v1" => "placement",
        _ => "other",
    }
}

/// Middleware: a `tracing` span per request (method, path, node), a child
/// of the trace the request carries (`traceparent`, see
/// [`crate::trace_context`]), and the request counters and latency histogram.
pub async fn track(server: &'static str, node: std::sync::Arc<str>, req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let method = req.method().clone();
    let family = route_family(req.uri().path());
    let span = tracing::debug_span!("http", %method, path = %req.uri().path(), server, node = %node);
    crate::trace_context::adopt_parent(&span, req.headers());
    let started = Instant::now();
    let resp = next.run(req).instrument(span).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("server", server.to_string()), ("route", family.to_string()), ("method", method.to_string())];
    metrics::histogram!("databelt_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    let mut with_status = labels.to_vec();
    with_status.push(("status", status));
    metrics::counter!("databelt_http_requests_total", &with_status).increment(1);
    resp
}

/// Record where one step input was read (`None`: found nowhere).
pub(crate) fn input_read(node: &str, tier: Option<crate::continuum::ReadTier>) {
    use crate::continuum::ReadTier;
    use std::sync::atomic::{AtomicU64, Ordering};
    static LOCAL: AtomicU64 = AtomicU64::new(0);
    static ALL: AtomicU64 = AtomicU64::new(0);
    let served_by = match tier {
        Some(ReadTier::Local) => "local",
        Some(ReadTier::Locator) => "locator",
        Some(ReadTier::Neighbour) => "neighbour",
        Some(ReadTier::Cloud) => "cloud",
        None => "miss",
    };
    metrics::counter!("databelt_state_reads_total", "node" => node.to_string(), "served_by" => served_by).increment(1);
    let local =
        if served_by == "local" { LOCAL.fetch_add(1, Ordering::Relaxed) + 1 } else { LOCAL.load(Ordering::Relaxed) };
    let all = ALL.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::gauge!("databelt_local_state_availability_ratio").set(local as f64 / all as f64);
}

/// Record one hand-off's outcome.
pub(crate) fn hand_off(node: &str, moved_bytes: u64, seconds: f64, slo_violated: bool, push_failed: bool) {
    let outcome = if push_failed {
        "push-failed"
    } else if moved_bytes > 0 {
        "moved"
    } else {
        "stayed"
    };
    let node = node.to_string();
    metrics::counter!("databelt_handoffs_total", "node" => node.clone(), "outcome" => outcome).increment(1);
    metrics::counter!("databelt_handoff_bytes_total", "node" => node.clone()).increment(moved_bytes);
    metrics::histogram!("databelt_handoff_duration_seconds", "node" => node.clone()).record(seconds);
    if slo_violated {
        metrics::counter!("databelt_slo_violations_total", "node" => node).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_families_are_a_bounded_set() {
        assert_eq!(route_family("/functions/x/invoke"), "functions");
        assert_eq!(route_family("/v1/topology"), "placement");
        assert_eq!(route_family("/run-7f3a/whatever"), "other");
        assert_eq!(route_family("/"), "other");
    }
}
