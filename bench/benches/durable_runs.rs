//! Overhead of durable, exactly-once runs (issue: "durable runs vs today's
//! path"): the wildfire workflow end to end on a continuum of four hosts on
//! loopback with redb state (`Cluster`), run `DATABELT_DURABLE_RUNS` times
//! (default 30) each way, interleaved, in the same process:
//!
//! - reference: today's path — a `Runner` drives the run from the client,
//!   step by step over the step protocol;
//! - durable: the workflow deployed once, each run started by name on a node
//!   (`POST /workflows/wildfire/runs?wait_ms=…`), driven by the hosts, every
//!   step committed exactly once with its successors' invocations, outputs
//!   written through to the producer's store.
//!
//! Prints the p50 and p95 of each and the ratio of the p50s (target ≤ 1.15×).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::time::{Duration, Instant};

use databelt_host::schema;
use databelt_net::workflow::durable::Bundle;
use databelt_net::workflow::{RunOptions, percentile};
use databelt_placement::{Topology, Workflow};
use databelt_testbed::{Cluster, ClusterOptions};
use serde_json::json;

fn topology() -> Topology {
    let mut toml = String::new();
    for id in ["cloud", "s1", "s2", "s3"] {
        let kind = if id == "cloud" { "cloud" } else { "satellite" };
        toml += &format!("[[node]]\nid = \"{id}\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\n");
    }
    for (a, b) in [("cloud", "s1"), ("s1", "s2"), ("s2", "s3")] {
        toml += &format!("[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = 5\nbandwidth_mbps = 1000\n");
    }
    Topology::from_toml(&toml).unwrap()
}

fn main() {
    let runs: usize = std::env::var("DATABELT_DURABLE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let (host, dir) = common::temp_config();
        let options = ClusterOptions {
            placement_listen: "127.0.0.1:0".parse().unwrap(),
            host,
            data_dir: dir.path().to_path_buf(),
            peer_timeout: Duration::from_secs(10),
            advertise: None,
            emulate: None,
            insecure_development: false,
            replication: Default::default(),
            cloud_backend: None,
        };
        let cluster = Cluster::start(topology(), options).await.unwrap();
        let path = common::write_wildfire(dir.path(), "");
        let runner = cluster.runner(&path, Some(common::workspace().join("target/guests/cwasm-cache"))).await.unwrap();
        runner.deploy().await.unwrap();
        let input_json = json!({"seed": 42, "tiles": 16, "side": 64});
        let input = schema::json_to_postcard(runner.input_schema().unwrap(), &input_json).unwrap();

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
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());

        let durable = || async {
            let t = Instant::now();
            let r = http
                .post(format!("{base}/workflows/wildfire/runs?wait_ms=60000"))
                .json(&input_json)
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["status"], "succeeded", "{v}");
            t.elapsed().as_secs_f64() * 1000.0
        };
        let today = || async {
            let t = Instant::now();
            runner.run(input.clone(), &RunOptions::default()).await.unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        };
        // Warm both paths.
        for _ in 0..3 {
            durable().await;
            today().await;
        }
        let (mut d, mut r) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            r.push(today().await);
            d.push(durable().await);
        }
        let (rp50, dp50) = (percentile(&r, 50.0), percentile(&d, 50.0));
        println!();
        println!("wildfire end to end, 4 hosts on loopback, redb, {runs} runs each, interleaved:");
        println!("  today's path (client-driven Runner): p50 {rp50:.1} ms, p95 {:.1} ms", percentile(&r, 95.0));
        println!("  durable, exactly-once runs:          p50 {dp50:.1} ms, p95 {:.1} ms", percentile(&d, 95.0));
        println!("  ratio of the p50s: {:.2}× (target ≤ 1.15×)", dp50 / rp50);
    });
}
