//! Where the `databelt` process sends its diagnostics: human-readable logs to
//! stderr (filtered by `RUST_LOG`), and — when switched on — the `tracing`
//! spans of the host and network layers to an OpenTelemetry collector over
//! OTLP/HTTP (protobuf).
//!
//! The exporter is on when `--otlp-endpoint URL` is given, or when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! variables are set; the other `OTEL_*` variables (headers, timeout,
//! `OTEL_SERVICE_NAME`, `OTEL_BSP_*` batch settings) keep their standard
//! meaning. Which spans are exported is chosen by `DATABELT_OTLP_FILTER`
//! (an `EnvFilter` directive, default [`DEFAULT_EXPORT_FILTER`]).
//!
//! Export never blocks or fails a request: spans go to a bounded queue
//! (2,048 by default, `OTEL_BSP_MAX_QUEUE_SIZE`; beyond it they are dropped
//! and counted by the SDK), a background thread posts them in batches, and
//! each post has a timeout ([`EXPORT_TIMEOUT`] unless
//! `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise). An unreachable collector
//! costs the spans, nothing else.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The spans exported when `DATABELT_OTLP_FILTER` is unset: every HTTP
/// request a host or the placement service serves, every invocation, and
/// each state call as an event of its invocation's span.
pub const DEFAULT_EXPORT_FILTER: &str = "databelt_host=trace,databelt_net=debug,databelt_placement=debug";

/// How long one export post may take before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the exporter alive; flushes and stops it when dropped, so spans
/// recorded just before the process exits still reach the collector.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            eprintln!("warning: OpenTelemetry exporter did not flush: {e}");
        }
    }
}

/// Whether the standard environment asks for an OTLP exporter.
fn endpoint_from_env() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The traces URL for a collector's base URL: OTLP/HTTP serves traces at
/// `/v1/traces` below it.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// Install the process's subscriber: stderr logs, plus the OTLP exporter when
/// `endpoint` is given or the environment names one. Call once, before any
/// Tokio runtime starts (the exporter's client has its own thread).
pub fn init(endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(EnvFilter::from_default_env());
    if endpoint.is_none() && !endpoint_from_env() {
        tracing_subscriber::registry().with(logs).init();
        return Ok(Telemetry { provider: None });
    }
    // The exporter's HTTP client (reqwest) takes rustls's process-wide
    // crypto provider; the CLI's one is ring.
    databelt_net::tls::install_default_provider();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(base) = endpoint {
        exporter = exporter.with_endpoint(traces_url(base));
    }
    if std::env::var_os("OTEL_EXPORTER_OTLP_TIMEOUT").is_none()
        && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_none()
    {
        exporter = exporter.with_timeout(EXPORT_TIMEOUT);
    }
    let exporter = exporter.build().context("cannot set up the OTLP trace exporter")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("databelt");
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let filter = match std::env::var("DATABELT_OTLP_FILTER") {
        Ok(directives) => EnvFilter::try_new(&directives)
            .with_context(|| format!("DATABELT_OTLP_FILTER is not a filter: {directives:?}"))?,
        Err(_) => EnvFilter::new(DEFAULT_EXPORT_FILTER),
    };
    let spans = tracing_opentelemetry::layer().with_tracer(provider.tracer("databelt")).with_filter(filter);
    tracing_subscriber::registry().with(logs).with(spans).init();
    Ok(Telemetry { provider: Some(provider) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
    }

    #[test]
    fn default_export_filter_parses() {
        assert!(EnvFilter::try_new(DEFAULT_EXPORT_FILTER).is_ok());
    }
}
