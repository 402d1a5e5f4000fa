//! `/metrics` on real hosts and the placement service, scraped after a
//! workflow run: the counts match what the run did. (Its own test binary:
//! the Prometheus recorder is per process.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use databelt_host::schema;
use databelt_net::workflow::RunOptions;
use serde_json::json;

/// `name{labels} value` lines of a Prometheus text body, keyed by the
/// metric name and its labels as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn sum(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_workflow_run_and_carry_no_run_ids() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = common::chain_workflow(dir.path());
    let runner = common::runner(&cluster, &path).await;
    let input = json!({"trail": [], "data": vec![1u8; 10], "resize": 20_000});
    let input = schema::json_to_postcard(runner.input_schema().unwrap(), &input).unwrap();
    let mut reports = Vec::new();
    for _ in 0..2 {
        reports.push(runner.run(input.clone(), &RunOptions::default()).await.unwrap());
    }
    let http = cluster.credentials.client_builder().unwrap().build().unwrap();
    let scrape = |url: String| {
        let http = http.clone();
        async move {
            let resp = http.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ctype.starts_with("text/plain"), "{ctype}");
            resp.text().await.unwrap()
        }
    };
    let node = cluster.node("s3").unwrap();
    let text = scrape(cluster.credentials.base_url(&node.address) + "/metrics").await;
    let s = samples(&text);

    // Each run invoked each of the three functions once, on its own node.
    for (n, f) in [("s1", "chain-a"), ("s3", "chain-b"), ("cloud", "chain-c")] {
        let labels = [format!("node=\"{n}\""), format!("function=\"{f}\""), "outcome=\"ok\"".to_string()];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(sum(&s, "databelt_invocations_total", &labels), 2.0, "{n}/{f}\n{text}");
        assert_eq!(sum(&s, "databelt_invocation_duration_seconds_count", &labels), 2.0, "{n}/{f}");
    }
    // Two hand-offs per run (a→b, b→c), every byte of them counted.
    let moved: u64 =
        reports.iter().flat_map(|r| &r.steps).flat_map(|s| &s.result.handoffs).map(|h| h.bytes_moved).sum();
    assert_eq!(sum(&s, "databelt_handoffs_total", &[]), 4.0, "{text}");
    assert_eq!(sum(&s, "databelt_handoff_bytes_total", &[]), moved as f64);
    let violations: u64 = reports.iter().map(|r| r.slo_violations).sum();
    assert_eq!(sum(&s, "databelt_slo_violations_total", &[]), violations as f64);
    // Reads of step inputs, by where they were served.
    let local: u64 = reports.iter().map(|r| r.reads.local).sum();
    assert_eq!(sum(&s, "databelt_state_reads_total", &["served_by=\"local\""]), local as f64);
    // HTTP requests of the step protocol reached the hosts.
    assert!(sum(&s, "databelt_http_requests_total", &["route=\"workflow\"", "status=\"200\""]) >= 6.0, "{text}");
    assert!(sum(&s, "databelt_instance_slots", &["node=\"s3\""]) >= 1.0);
    // s3's function has an instance made ahead of its next invocation.
    assert!(sum(&s, "databelt_prepared_instances", &["node=\"s3\""]) >= 1.0, "{text}");
    // Names follow the conventions, and no run id is a label.
    for k in s.keys() {
        let name = k.split('{').next().unwrap();
        assert!(name.starts_with("databelt_"), "{k}");
        for r in &reports {
            assert!(!k.contains(r.run_id.as_str()), "a run id is a label: {k}");
        }
    }
    // The placement service serves its own.
    let text = scrape(cluster.placement_url.clone() + "/metrics").await;
    assert!(text.contains("databelt_placement_uptime_seconds"), "{text}");
}
