//! Durable runs on a continuum of real hosts on loopback: a workflow is
//! deployed once, runs are started by name on any node and finish without
//! the client, every step takes effect exactly once (duplicates are dropped),
//! fan-in waits for every predecessor, failures end in a record, and an
//! ended run leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::runs::{client, cluster_with, deploy, show, start, until_clean, url};
use databelt_net::workflow::durable::{Message, WORKFLOW_SCOPE};
use serde_json::{Value, json};

/// A one-step workflow `slow` whose step `spin` (the kv-probe) runs on s1
/// under its own deadline of `deadline_ms`.
fn slow_workflow(dir: &Path, deadline_ms: u64) -> std::path::PathBuf {
    let path = dir.join("slow.toml");
    let text = format!(
        "name = \"slow\"\n[[step]]\nname = \"spin\"\ncomponent = \"{}\"\nnode = \"s1\"\ntmax_ms = 1000\ndeadline_ms = {deadline_ms}\n",
        common::guest("kv_probe").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_workflow_runs_by_name_without_its_client_and_leaves_nothing_behind() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = common::chain_workflow(dir.path());
    let deployed = deploy(&cluster, "s2", &path).await;
    assert_eq!(deployed["nodes"].as_array().unwrap().len(), 4, "{deployed}");
    // Started on a node that runs no step; the client does not wait.
    let input = json!({"trail": [], "data": [1, 2, 3], "resize": null});
    let (status, started) = start(&cluster, "s2", "chain", &input, "").await;
    assert_eq!(status, 202, "{started}");
    let run = started["run_id"].as_str().unwrap().to_string();
    let record = show(&cluster, "s2", &run, 20_000).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["outputs"]["c"]["trail"], json!(["chain-a@s1", "chain-b@s3", "chain-c@cloud"]));
    // Reports arrive in any order; each step ran once, on its node.
    let mut ran: Vec<(&str, &str)> = record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["node"].as_str().unwrap()))
        .collect();
    ran.sort();
    assert_eq!(ran, [("a", "s1"), ("b", "s3"), ("c", "cloud")]);
    until_clean(&cluster).await;
    // The run is listed on its origin.
    let list: Value = client(&cluster).get(url(&cluster, "s2", "/runs")).send().await.unwrap().json().await.unwrap();
    assert!(list.as_array().unwrap().iter().any(|r| r["run_id"] == run.as_str()), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_counts_once_however_often_it_is_delivered() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = common::write_workflow(dir.path(), "count", "", &[("inc", "kv_probe", "s1", 1000.0, &[])]);
    deploy(&cluster, "cloud", &path).await;
    let op = json!({"Increment": {"scope": "tally", "key": "runs", "delta": 1}});
    let mut runs = Vec::new();
    for _ in 0..10 {
        let (status, started) = start(&cluster, "cloud", "count", &op, "?wait_ms=20000").await;
        assert_eq!(status, 200, "{started}");
        assert_eq!(started["status"], "succeeded", "{started}");
        runs.push(started["run_id"].as_str().unwrap().to_string());
    }
    // Deliver one step again, as a retry after a lost acknowledgement would:
    // before and after the run ended, from the node that sent it first.
    let s1 = cluster.node("s1").unwrap();
    let cloud = cluster.node("cloud").unwrap();
    let node_client = cloud.security.client.client_builder().unwrap().build().unwrap();
    let record: databelt_net::workflow::durable::RunRecord = {
        let bytes = cloud.host.state().get(WORKFLOW_SCOPE, &format!("run/{}", runs[0])).unwrap().unwrap();
        postcard::from_bytes(&bytes).unwrap()
    };
    let invocation = databelt_net::workflow::durable::Invocation {
        run: record.run.clone(),
        workflow: "count".into(),
        step: "inc".parse().unwrap(),
        origin: "cloud".into(),
        options: databelt_net::workflow::durable::DurableRunOptions {
            policy: databelt_net::continuum::Policy::Databelt,
            ttl_ms: 60_000,
            fusion: true,
            tmax_ms: None,
        },
        capability: record.capability.clone(),
        input: Some(
            postcard::to_stdvec(&common::probe::Op::Increment { scope: "tally".into(), key: "runs".into(), delta: 1 })
                .unwrap(),
        ),
        handed: Vec::new(),
        run_states: Vec::new(),
        attempt: 0,
        session: Default::default(),
    };
    for _ in 0..3 {
        let r = node_client
            .post(format!("{}/workflow/v1/deliver", cloud.security.client.base_url(&s1.address)))
            .body(postcard::to_stdvec(&Message::Invoke(invocation.clone())).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s1.host.state().increment("tally", "runs", 0).unwrap(), 10, "ten runs, ten increments");
    // A user's token cannot deliver: the route takes node certificates only.
    let r = client(&cluster)
        .post(url(&cluster, "s1", "/workflow/v1/deliver"))
        .body(postcard::to_stdvec(&Message::Invoke(invocation)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    until_clean(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_waits_for_every_predecessor_and_a_failing_step_fails_the_run_with_a_record() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = common::write_workflow(
        dir.path(),
        "diamond",
        "",
        &[
            ("src", "stage", "s1", 1000.0, &[]),
            ("left", "stage", "s2", 1000.0, &["src"]),
            ("right", "stage", "s3", 1000.0, &["src"]),
            ("join", "merge", "cloud", 1000.0, &["left", "right"]),
        ],
    );
    deploy(&cluster, "s1", &path).await;
    let input = json!({"trail": [], "data": [7], "resize": null});
    let (status, record) = start(&cluster, "s3", "diamond", &input, "?wait_ms=20000").await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["status"], "succeeded", "{record}");
    let steps = record["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4, "each step once: {record}");
    // The join ran once, after both sides: its output carries both trails.
    let trail = &record["outputs"]["join"]["trail"];
    assert_eq!(
        trail,
        &json!(["diamond-src@s1", "diamond-left@s2", "diamond-src@s1", "diamond-right@s3", "diamond-join@cloud"]),
        "{record}"
    );
    until_clean(&cluster).await;

    // A step whose input does not fit: the function fails, the run ends
    // failed with the step and node named, and nothing is left behind.
    let path = common::write_workflow(dir.path(), "bad", "", &[("only", "kv_probe", "s2", 1000.0, &[])]);
    deploy(&cluster, "s1", &path).await;
    let op = json!({"Get": {"scope": "databelt.runs", "key": "x"}});
    let (_, record) = start(&cluster, "s1", "bad", &op, "?wait_ms=20000").await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["failure"]["step"], "only");
    assert_eq!(record["failure"]["node"], "s2");
    until_clean(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_own_deadline_runs_again_then_fails_the_run_with_a_record() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = slow_workflow(dir.path(), 30);
    deploy(&cluster, "cloud", &path).await;
    // Far more gets than 30 ms allow.
    let op = json!({"TimeGets": {"scope": "s", "key": "k", "n": 2_000_000_000u32}});
    let t = Instant::now();
    let (_, record) = start(&cluster, "cloud", "slow", &op, "?wait_ms=30000").await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["failure"]["kind"], "deadline-exceeded", "{record}");
    assert!(record["failure"]["message"].as_str().unwrap().contains("attempt 5"), "{record}");
    assert!(t.elapsed() < Duration::from_secs(10), "bounded: {:?}", t.elapsed());
    until_clean(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_step_whose_node_is_gone_moves_to_another_node() {
    // s1 is too hot to take functions, so the placement step after a step
    // on s1 goes to its nearest neighbour, s2 — which is down.
    let mut toml = String::new();
    for id in ["cloud", "s1", "s2", "s3"] {
        let kind = if id == "cloud" { "cloud" } else { "satellite" };
        let hot = match id {
            "s1" => "resources = { battery_pct = 100, temperature_c = 90, max_temperature_c = 60 }\n",
            "cloud" => "",
            _ => "resources = { battery_pct = 100 }\n",
        };
        toml += &format!("[[node]]\nid = \"{id}\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\n{hot}");
    }
    for (a, b, lat) in [("cloud", "s1", 60), ("s1", "s2", 10), ("s2", "s3", 10)] {
        toml += &format!("[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {lat}\nbandwidth_mbps = 40\n");
    }
    let (mut host, dir) = common::temp_config();
    host.backend = databelt_host::BackendConfig::Memory;
    let mut cluster = cluster_with(databelt_placement::Topology::from_toml(&toml).unwrap(), host, dir.path()).await;
    let path = dir.path().join("moving.toml");
    let stage = common::guest("stage");
    std::fs::write(
        &path,
        format!(
            "name = \"moving\"\n[[step]]\nname = \"a\"\ncomponent = \"{0}\"\nnode = \"s1\"\ntmax_ms = 1000\n\
             [[step]]\nname = \"b\"\ncomponent = \"{0}\"\nnode = \"placement\"\ntmax_ms = 1000\nafter = [\"a\"]\nmax_wait_ms = 500\n",
            stage.display()
        ),
    )
    .unwrap();
    deploy(&cluster, "cloud", &path).await;
    // Where b goes while every node is up: s2.
    let input = json!({"trail": [], "data": [1], "resize": null});
    let (_, record) = start(&cluster, "cloud", "moving", &input, "?wait_ms=20000").await;
    assert_eq!(record["outputs"]["b"]["trail"], json!(["moving-a@s1", "moving-b@s2"]), "{record}");
    cluster.node_mut("s2").unwrap().stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, record) = start(&cluster, "cloud", "moving", &input, "?wait_ms=20000").await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let trail = &record["outputs"]["b"]["trail"];
    assert_eq!(trail[0], "moving-a@s1", "{record}");
    assert_ne!(trail[1], "moving-b@s2", "b moved off the node that is down: {record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_runs_past_its_limit_and_takes_them_again_once_one_ended() {
    let (mut host, dir) = common::temp_config();
    host.backend = databelt_host::BackendConfig::Memory;
    host.max_durable_runs = 1;
    let cluster = cluster_with(common::chain_topology(), host, dir.path()).await;
    let path = slow_workflow(dir.path(), 300);
    deploy(&cluster, "cloud", &path).await;
    // A run that keeps going for a while (five attempts past a 300 ms deadline).
    let slow = json!({"TimeGets": {"scope": "s", "key": "k", "n": 2_000_000_000u32}});
    let (status, first) = start(&cluster, "cloud", "slow", &slow, "").await;
    assert_eq!(status, 202, "{first}");
    let quick = json!({"Get": {"scope": "s", "key": "k"}});
    let (status, refused) = start(&cluster, "cloud", "slow", &quick, "").await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"], "unavailable");
    assert!(refused["message"].as_str().unwrap().contains("max_durable_runs"), "{refused}");
    // Another node takes it.
    let (status, _) = start(&cluster, "s2", "slow", &quick, "?wait_ms=20000").await;
    assert_eq!(status, 200);
    let ended = show(&cluster, "cloud", first["run_id"].as_str().unwrap(), 20_000).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let (status, record) = start(&cluster, "cloud", "slow", &quick, "?wait_ms=20000").await;
    assert_eq!((status, record["status"].as_str()), (200, Some("succeeded")), "{record}");
    until_clean(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_is_failed_by_its_origin_naming_the_steps_not_done() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = slow_workflow(dir.path(), 400);
    deploy(&cluster, "cloud", &path).await;
    let slow = json!({"TimeGets": {"scope": "s", "key": "k", "n": 2_000_000_000u32}});
    let t = Instant::now();
    let (_, record) = start(&cluster, "cloud", "slow", &slow, "?deadline_ms=600&wait_ms=20000").await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["failure"]["kind"], "timeout", "{record}");
    let message = record["failure"]["message"].as_str().unwrap();
    assert!(message.contains("deadline passed") && message.contains("`spin` (node `s1`)"), "{record}");
    // Well before the step's own attempts would have given up (5 × 400 ms + backoff).
    assert!(t.elapsed() < Duration::from_millis(2000), "{:?}", t.elapsed());
    until_clean(&cluster).await;
}
