//! One workflow run is one trace across hosts: with an OpenTelemetry layer
//! installed, the runner's `run` span, every host's request spans and every
//! invocation span share the run's trace id, each request span the child of
//! the span that sent it; a durable run started by a client inside a span is
//! in that span's trace, its hosts' messages included. (Its own test binary:
//! the subscriber is global, installed once for both tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use databelt_host::schema;
use databelt_net::workflow::RunOptions;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::json;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// A span's string attribute.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.as_str().to_string())
}

/// The spans every test of this binary exported (each test picks its own
/// trace), and the provider to flush; installed once.
fn collected() -> &'static (Collected, SdkTracerProvider) {
    static INSTALLED: OnceLock<(Collected, SdkTracerProvider)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let collected = Collected::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(collected.clone()).build();
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("databelt_net", tracing::Level::DEBUG)
            .with_target("databelt_host", tracing::Level::DEBUG);
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test")).with_filter(filter);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
        (collected, provider)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_run_is_one_trace_across_its_hosts() {
    let (collected, provider) = collected();

    let (cluster, dir) = common::chain_cluster().await;
    let path = common::chain_workflow(dir.path());
    let runner = common::runner(&cluster, &path).await;
    let input = json!({"trail": [], "data": vec![1u8; 10], "resize": 20_000});
    let input = schema::json_to_postcard(runner.input_schema().unwrap(), &input).unwrap();
    let report = runner.run(input, &RunOptions::default()).await.unwrap();
    let run_id = report.run_id.to_string();
    drop(runner);
    drop(cluster);
    provider.force_flush().unwrap();

    let spans = collected.0.lock().unwrap().clone();
    let run = spans
        .iter()
        .find(|s| s.name == "run" && attribute(s, "run_id").as_deref() == Some(run_id.as_str()))
        .expect("the runner's run span");
    let trace: TraceId = run.span_context.trace_id();
    let in_trace: Vec<&SpanData> = spans.iter().filter(|s| s.span_context.trace_id() == trace).collect();
    let by_id: HashMap<SpanId, &SpanData> = in_trace.iter().map(|s| (s.span_context.span_id(), *s)).collect();

    // Every step's invocation is in the run's trace, on the step's node.
    let invocations: HashSet<(String, String)> = in_trace
        .iter()
        .filter(|s| s.name == "invoke")
        .filter_map(|s| Some((attribute(s, "function")?, attribute(s, "node")?)))
        .collect();
    let expected: HashSet<(String, String)> = [("chain-a", "s1"), ("chain-b", "s3"), ("chain-c", "cloud")]
        .iter()
        .map(|(f, n)| (f.to_string(), n.to_string()))
        .collect();
    assert_eq!(invocations, expected, "every step's invocation in the run's trace");
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "invoke" && attribute(s, "run_id").as_deref() == Some(run_id.as_str()))
            .all(|s| s.span_context.trace_id() == trace),
        "no invocation of the run in another trace"
    );

    // Each host's step request is a child of the run span (sent by the
    // runner, a remote parent); the hand-off pushes between hosts are
    // children of the pushing host's spans.
    let requests: Vec<&SpanData> = in_trace.iter().filter(|s| s.name == "http").copied().collect();
    let step_requests: Vec<&&SpanData> =
        requests.iter().filter(|s| attribute(s, "path").as_deref() == Some("/workflow/v1/step")).collect();
    assert_eq!(step_requests.len(), 3, "one step request per step");
    for s in &step_requests {
        assert_eq!(s.parent_span_id, run.span_context.span_id(), "a step request's parent is the run");
        assert!(s.parent_span_is_remote);
    }
    // The run's clean-up (and the deploys it made) are in its trace too.
    let cleanups: Vec<&&SpanData> =
        requests.iter().filter(|s| attribute(s, "path").is_some_and(|p| p.starts_with("/workflow/v1/runs/"))).collect();
    assert_eq!(cleanups.len(), 3, "one clean-up request per node the run touched");
    let deploys = requests.iter().filter(|s| attribute(s, "path").is_some_and(|p| p.starts_with("/functions/")));
    for s in cleanups.into_iter().chain(deploys) {
        assert_eq!(s.parent_span_id, run.span_context.span_id(), "sent by the runner inside the run");
    }
    let pushes: Vec<&&SpanData> =
        requests.iter().filter(|s| attribute(s, "path").is_some_and(|p| p.starts_with("/peer/v1/"))).collect();
    assert!(!pushes.is_empty(), "the hand-offs crossed hosts inside the trace");
    for p in pushes {
        let parent = by_id.get(&p.parent_span_id).expect("a peer request's parent is a span of the run");
        assert_eq!(parent.name, "http", "sent while serving a step request");
        assert_ne!(attribute(parent, "node"), attribute(p, "node"), "from another host");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_run_is_in_the_trace_of_the_client_that_started_it_messages_included() {
    let (collected, provider) = collected();
    let (cluster, dir) = common::chain_cluster().await;
    let path = common::chain_workflow(dir.path());
    common::runs::deploy(&cluster, "s2", &path).await;
    // The client starts the run from inside a span of its own trace.
    let client_span = tracing::info_span!(target: "databelt_net", "client");
    let trace = client_span.context().span().span_context().trace_id();
    let headers = {
        let _entered = client_span.enter();
        databelt_net::trace_context::current_headers()
    };
    assert!(headers.contains_key("traceparent"));
    let input = json!({"trail": [], "data": [1, 2, 3], "resize": null});
    let r = common::runs::client(&cluster)
        .post(common::runs::url(&cluster, "s2", "/workflows/chain/runs"))
        .headers(headers)
        .json(&input)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let started: serde_json::Value = r.json().await.unwrap();
    let run = started["run_id"].as_str().unwrap().to_string();
    let shown = common::runs::show(&cluster, "s2", &run, 20_000).await;
    assert_eq!(shown["status"], "succeeded", "{shown}");
    drop(cluster);
    provider.force_flush().unwrap();

    let spans = collected.0.lock().unwrap().clone();
    let invocations: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "invoke" && attribute(s, "run_id").as_deref() == Some(run.as_str()))
        .collect();
    let nodes: HashSet<String> = invocations.iter().filter_map(|s| attribute(s, "node")).collect();
    assert_eq!(nodes, ["s1", "s3", "cloud"].iter().map(|n| n.to_string()).collect(), "every step ran");
    let traces: Vec<(String, String)> = invocations
        .iter()
        .map(|s| (attribute(s, "node").unwrap_or_default(), s.span_context.trace_id().to_string()))
        .collect();
    assert!(
        invocations.iter().all(|s| s.span_context.trace_id() == trace),
        "every invocation of the durable run is in the client's trace {trace}: {traces:?}"
    );
    // The hosts' messages to each other (sent at once here; a re-sent one
    // carries the same kept context) are requests in that trace, from
    // more than one host.
    let delivers: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .filter(|s| s.name == "http" && attribute(s, "path").as_deref() == Some("/workflow/v1/deliver"))
        .collect();
    let receivers: HashSet<String> = delivers.iter().filter_map(|s| attribute(s, "node")).collect();
    assert!(receivers.len() >= 2, "messages between hosts in the client's trace: {receivers:?}");
}
