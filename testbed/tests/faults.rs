//! Durable runs under in-process fault points (`fail` crate; the
//! `failpoints` feature of `databelt-net`): commits that fail before they
//! happen, steps that committed but were not handed on, hand-off pushes that
//! fail, clean-ups that fail. Each costs retries, never an effect: every run
//! ends, its alarm counted once, and nothing is left behind.
//!
//! A test binary of its own: fault points are process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use databelt_net::workflow::durable::Bundle;
use databelt_placement::Workflow;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_points_cost_retries_never_effects() {
    let scenario = fail::FailScenario::setup();
    let (cluster, dir) = common::chain_cluster().await;
    let path = common::write_wildfire(dir.path(), "");
    let toml = std::fs::read_to_string(&path).unwrap();
    let wf = Workflow::from_toml(&toml).unwrap();
    let components = wf.steps.iter().map(|s| (s.name.clone(), std::fs::read(&s.component).unwrap())).collect();
    let http = cluster.credentials.client_builder().unwrap().build().unwrap();
    let base = cluster.credentials.base_url(&cluster.node("s2").unwrap().address);
    let r = http
        .put(format!("{base}/workflows/wildfire"))
        .body(postcard::to_stdvec(&Bundle { toml, components }).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    fail::cfg("step-before-commit", "3*return").unwrap();
    fail::cfg("step-after-commit", "1*return").unwrap();
    fail::cfg("peer-push", "2*return").unwrap();
    fail::cfg("run-forget", "3*return").unwrap();
    let runs = 5;
    let mut seen = Vec::new();
    for _ in 0..runs {
        let r = http
            .post(format!("{base}/workflows/wildfire/runs?wait_ms=30000"))
            .json(&json!({"seed": 7, "tiles": 16, "side": 64}))
            .send()
            .await
            .unwrap();
        let record: Value = r.json().await.unwrap();
        assert_eq!(record["status"], "succeeded", "{record}");
        assert_eq!(record["steps"].as_array().unwrap().len(), 4, "{record}");
        seen.push(record["outputs"]["alarm"]["raised_before"].as_i64().unwrap());
    }
    seen.sort();
    assert_eq!(seen, (0..runs).collect::<Vec<_>>(), "each alarm counted once");
    eprintln!("fault points after the runs: {:?}", fail::list());
    let cloud = cluster.node("cloud").unwrap();
    assert_eq!(cloud.host.state().increment("wildfire", "alarms/7", 0).unwrap(), runs);

    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let left = common::leftovers(&cluster);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scenario.teardown();
}
