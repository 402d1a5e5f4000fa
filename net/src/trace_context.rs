//! W3C trace context (`traceparent`, `tracestate`) across nodes.
//!
//! A workflow run crosses hosts: the runner posts each step to its host, a
//! step pushes its output state to the next step's node, a consumer reads
//! its inputs from peers. With an OpenTelemetry layer installed (the CLI's
//! `--otlp-endpoint`, see docs/observability.md), each of those requests
//! carries the sender's current span as a `traceparent` header, and every
//! server's request span takes the incoming one as its parent
//! ([`crate::metrics::track`]), so one run is one trace from the runner
//! through every host.
//!
//! Without such a layer nothing is sent and nothing changes: the current
//! span has no OpenTelemetry context, so [`inject`] adds no header and
//! [`adopt_parent`] has nothing to attach to. A malformed incoming header is
//! ignored (the request span starts its own trace), never an error: tracing
//! is not a reason to refuse a request.
//!
//! All of this is the crate's `opentelemetry` feature (the CLI turns it on).
//! Without it the functions keep their signatures and do nothing, and the
//! network layer needs no `tracing-subscriber` or OpenTelemetry crates.

use axum::http::HeaderMap;
#[cfg(feature = "opentelemetry")]
use axum::http::{HeaderName, HeaderValue};
#[cfg(feature = "opentelemetry")]
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
#[cfg(feature = "opentelemetry")]
use opentelemetry::trace::TraceContextExt as _;
#[cfg(feature = "opentelemetry")]
use opentelemetry_sdk::propagation::TraceContextPropagator;
#[cfg(feature = "opentelemetry")]
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

#[cfg(feature = "opentelemetry")]
/// Writes propagated fields into an HTTP header map, skipping any field
/// that is not a valid header (the propagator only writes valid ones).
struct HeaderInjector<'a>(&'a mut HeaderMap);

#[cfg(feature = "opentelemetry")]
impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Reads propagated fields from an HTTP header map (non-ASCII values read
/// as absent).
#[cfg(feature = "opentelemetry")]
struct HeaderExtractor<'a>(&'a HeaderMap);

#[cfg(feature = "opentelemetry")]
impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// The trace-context headers of the current span: `traceparent` (and
/// `tracestate` when it has one), or none when the current span has no
/// OpenTelemetry context.
pub fn current_headers() -> HeaderMap {
    #[cfg_attr(not(feature = "opentelemetry"), allow(unused_mut))]
    let mut headers = HeaderMap::new();
    #[cfg(feature = "opentelemetry")]
    {
        let context = tracing::Span::current().context();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
        }
    }
    headers
}

/// `request` with the current span's trace-context headers (unchanged when
/// there are none).
pub fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let headers = current_headers();
    if headers.is_empty() { request } else { request.headers(headers) }
}

/// The current span's `traceparent`, to keep with work that is sent later
/// (a durable message re-sent by the delivery loop); `None` when the span
/// has no OpenTelemetry context.
pub fn current_traceparent() -> Option<String> {
    current_headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `request` with the trace context `kept` (a `traceparent` kept from when
/// the work was made, see [`current_traceparent`]), or with the current
/// span's when none was kept. A kept value that is not a valid header value
/// is left out (the receiver starts a trace of its own).
pub fn inject_kept(request: reqwest::RequestBuilder, kept: Option<&str>) -> reqwest::RequestBuilder {
    match kept {
        Some(traceparent) => match axum::http::HeaderValue::from_str(traceparent) {
            Ok(value) => request.header("traceparent", value),
            Err(_) => request,
        },
        None => inject(request),
    }
}

/// Make `span` (a span with no parent, for work that outlives the current
/// span, such as a task it spawns) a child of the current span in the
/// trace, without keeping the current span open until `span` ends. Nothing
/// happens when the current span has no OpenTelemetry context.
#[cfg(feature = "opentelemetry")]
pub fn continue_current(span: &tracing::Span) {
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// [`continue_current`] without the `opentelemetry` feature: nothing.
#[cfg(not(feature = "opentelemetry"))]
pub fn continue_current(_span: &tracing::Span) {}

/// Make the trace context an incoming request carries the parent of
/// `span`. Nothing happens when the request carries none, or a malformed
/// one, or when `span` is disabled or has no OpenTelemetry layer.
#[cfg(feature = "opentelemetry")]
pub fn adopt_parent(span: &tracing::Span, headers: &HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if context.span().span_context().is_valid() {
        // A disabled span (its level filtered out) has nothing to attach to.
        let _ = span.set_parent(context);
    }
}

/// Make the trace context an incoming request carries the parent of
/// `span`: without the `opentelemetry` feature, nothing.
#[cfg(not(feature = "opentelemetry"))]
pub fn adopt_parent(_span: &tracing::Span, _headers: &HeaderMap) {}

#[cfg(all(test, not(feature = "opentelemetry")))]
mod tests_without_the_feature {
    use super::*;

    #[test]
    fn without_the_feature_nothing_is_sent_or_adopted() {
        let span = tracing::info_span!("http");
        let _entered = span.enter();
        assert!(current_headers().is_empty());
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            axum::http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        adopt_parent(&span, &headers);
        assert!(current_headers().is_empty());
    }
}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// A subscriber with an OpenTelemetry layer over a tracer provider that
    /// exports nothing: spans get real trace and span ids.
    fn with_otel<T>(f: impl FnOnce() -> T) -> T {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f)
    }

    fn trace_id_of(span: &tracing::Span) -> String {
        span.context().span().span_context().trace_id().to_string()
    }

    #[test]
    fn a_request_sent_inside_a_span_carries_its_trace_and_span_ids() {
        with_otel(|| {
            let span = tracing::info_span!("run");
            let _entered = span.enter();
            let headers = current_headers();
            let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let span_context = span.context().span().span_context().clone();
            assert_eq!(
                traceparent,
                format!("00-{}-{}-01", span_context.trace_id(), span_context.span_id()),
                "version 00, the span's ids, sampled"
            );
        });
    }

    #[test]
    fn a_request_span_continues_the_trace_of_the_request_it_serves() {
        with_otel(|| {
            let (sent, trace_id) = {
                let span = tracing::info_span!("runner");
                let _entered = span.enter();
                (current_headers(), trace_id_of(&span))
            };
            let served = tracing::info_span!("http");
            adopt_parent(&served, &sent);
            assert_eq!(trace_id_of(&served), trace_id, "one trace across the hop");
            // And what the served span sends on carries the same trace.
            let _entered = served.enter();
            let onward = current_headers();
            let onward = onward.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default();
            assert!(onward.starts_with(&format!("00-{trace_id}-")), "{onward}");
        });
    }

    #[test]
    fn a_malformed_or_missing_traceparent_leaves_the_span_its_own_trace() {
        with_otel(|| {
            let own = tracing::info_span!("http");
            let before = trace_id_of(&own);
            let mut headers = HeaderMap::new();
            adopt_parent(&own, &headers);
            headers.insert("traceparent", HeaderValue::from_static("00-not-a-trace-01"));
            adopt_parent(&own, &headers);
            headers.insert(
                "traceparent",
                HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-01"),
            );
            adopt_parent(&own, &headers);
            assert_eq!(trace_id_of(&own), before, "changed nothing");
        });
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_sent() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("run");
            let _entered = span.enter();
            assert!(current_headers().is_empty());
        });
        // No subscriber at all.
        assert!(current_headers().is_empty());
    }

    /// The `traceparent` a request built with `kept` would carry.
    fn sent_traceparent(kept: Option<&str>) -> Option<String> {
        crate::tls::install_default_provider();
        let request = inject_kept(reqwest::Client::new().post("http://127.0.0.1:9/x"), kept).build().ok()?;
        request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    #[test]
    fn a_message_sent_later_carries_the_trace_it_was_made_in() {
        let kept = with_otel(|| {
            let span = tracing::info_span!("run");
            let _entered = span.enter();
            current_traceparent()
        });
        let kept = kept.expect("a span with a context has a traceparent");
        // Sent later, from a span of another trace (the delivery loop's): the
        // kept context wins.
        with_otel(|| {
            let other = tracing::info_span!("delivery");
            let _entered = other.enter();
            assert_eq!(sent_traceparent(Some(&kept)).as_deref(), Some(kept.as_str()));
            // Nothing kept: the current span's.
            let current = current_traceparent().unwrap();
            assert_ne!(current, kept);
            assert_eq!(sent_traceparent(None), Some(current));
        });
        // A kept value that is no header value is left out, not refused.
        assert_eq!(sent_traceparent(Some("bad\nvalue")), None);
        assert_eq!(current_traceparent(), None, "no span: nothing to keep");
    }
}
