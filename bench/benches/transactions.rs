//! Cost of transactions (examples/travel: hotel on s1, flight on s2,
//! confirmation on s3), transactional vs the same three steps without a
//! transaction, on a continuum of four hosts with emulated links (cloud —
//! 20 ms — s1 — 10 ms — s2 — 10 ms — s3, 100 Mbit/s) and redb state, runs
//! started on s1, in the same process:
//!
//! - latency at low contention: bookings one at a time, each on its own
//!   hotel and flight (`DATABELT_TXN_RUNS`, default 20, interleaved), p50 and
//!   p95, the ratio of the p50s (target ≤ 1.5×), and each against the link
//!   latency lower bound (s1→s2 + s2→s3 + the report s3→s1 = 40 ms);
//! - throughput at 10, 50 and 100 concurrent bookings on distinct hotels
//!   and flights (target ≥ 0.5× plain at 100);
//! - contention: 50 concurrent bookings of one hot hotel and one flight
//!   (capacity for all): aborted attempts per booking, and throughput.
//!
//! `cargo bench -p databelt-bench --bench transactions`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::time::{Duration, Instant};

use databelt_net::workflow::durable::Bundle;
use databelt_net::workflow::percentile;
use databelt_placement::{Topology, Workflow};
use databelt_testbed::{Cluster, ClusterOptions};
use serde_json::{Value, json};

/// The links' one-way latency on the path a booking's messages take, ms.
const LOWER_BOUND_MS: f64 = 40.0;

fn topology() -> Topology {
    let mut toml = String::new();
    for id in ["cloud", "s1", "s2", "s3"] {
        let kind = if id == "cloud" { "cloud" } else { "satellite" };
        toml += &format!("[[node]]\nid = \"{id}\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\n");
    }
    for (a, b, lat) in [("cloud", "s1", 20), ("s1", "s2", 10), ("s2", "s3", 10)] {
        toml += &format!("[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {lat}\nbandwidth_mbps = 100\n");
    }
    Topology::from_toml(&toml).unwrap()
}

struct Bench {
    http: reqwest::Client,
    base: String,
}

impl Bench {
    async fn deploy(&self, path: &std::path::Path) {
        let toml = std::fs::read_to_string(path).unwrap();
        let wf = Workflow::from_toml(&toml).unwrap();
        let components = wf.steps.iter().map(|s| (s.name.clone(), std::fs::read(&s.component).unwrap())).collect();
        let r = self
            .http
            .put(format!("{}/workflows/{}", self.base, wf.name))
            .body(postcard::to_stdvec(&Bundle { toml, components }).unwrap())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    /// Book once and wait; the record and the time it took, ms.
    async fn book(&self, workflow: &str, hotel: &str, flight: &str, id: u64) -> (Value, f64) {
        let input = json!({"id": id, "hotel": hotel, "flight": flight, "capacity": 1000, "decline": false});
        let t = Instant::now();
        let r = self
            .http
            .post(format!("{}/workflows/{workflow}/runs?wait_ms=120000", self.base))
            .json(&input)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        (v, t.elapsed().as_secs_f64() * 1000.0)
    }

    /// `n` bookings at once (`hot_hotel`, `hot_flight`: all of one hotel,
    /// one flight); bookings per second, and the attempts aborted over all
    /// of them.
    async fn burst(&self, workflow: &str, n: u64, first_id: u64, hot: (bool, bool)) -> (f64, u64) {
        let t = Instant::now();
        let all = futures_util::future::join_all((first_id..first_id + n).map(|id| async move {
            let hotel = if hot.0 { "hot".to_string() } else { format!("h{id}") };
            let flight = if hot.1 { "hot".to_string() } else { format!("f{id}") };
            self.book(workflow, &hotel, &flight, id).await.0
        }))
        .await;
        let secs = t.elapsed().as_secs_f64();
        for v in &all {
            assert_eq!(v["status"], "succeeded", "{v}");
        }
        let aborts = all.iter().map(|v| v["transaction"]["aborts"].as_u64().unwrap_or(0)).sum();
        (n as f64 / secs, aborts)
    }
}

fn main() {
    let runs: usize = std::env::var("DATABELT_TXN_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let (mut host, dir) = common::temp_config();
        host.max_concurrent_instances = 16;
        let options = ClusterOptions {
            placement_listen: "127.0.0.1:0".parse().unwrap(),
            host,
            data_dir: dir.path().to_path_buf(),
            peer_timeout: Duration::from_secs(10),
            advertise: None,
            emulate: Some(Duration::from_millis(50)),
            insecure_development: false,
            replication: Default::default(),
            cloud_backend: None,
        };
        let cluster = Cluster::start(topology(), options).await.unwrap();
        let http = cluster.credentials.client_builder().unwrap().build().unwrap();
        let base = cluster.credentials.base_url(&cluster.node("s1").unwrap().address);
        let bench = Bench { http, base };
        let nodes = ["s1", "s2", "s3"];
        let txn = common::write_travel(dir.path(), nodes, Some("retries = 200\ntimeout_ms = 10000"));
        bench.deploy(&txn).await;
        let plain_dir = dir.path().join("plain");
        std::fs::create_dir_all(&plain_dir).unwrap();
        let plain = common::write_travel(&plain_dir, nodes, None);
        let text = std::fs::read_to_string(&plain).unwrap().replacen("name = \"travel\"", "name = \"plain\"", 1);
        std::fs::write(&plain, text).unwrap();
        bench.deploy(&plain).await;

        let mut id = 0u64;
        let mut next = || {
            id += 1;
            id
        };
        // Warm both.
        for _ in 0..3 {
            let i = next();
            bench.book("travel", &format!("h{i}"), &format!("f{i}"), i).await;
            let i = next();
            bench.book("plain", &format!("h{i}"), &format!("f{i}"), i).await;
        }
        let (mut t, mut p) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let i = next();
            let (v, ms) = bench.book("plain", &format!("h{i}"), &format!("f{i}"), i).await;
            assert_eq!(v["status"], "succeeded", "{v}");
            p.push(ms);
            let i = next();
            let (v, ms) = bench.book("travel", &format!("h{i}"), &format!("f{i}"), i).await;
            assert_eq!(v["status"], "succeeded", "{v}");
            t.push(ms);
        }
        let (tp50, pp50) = (percentile(&t, 50.0), percentile(&p, 50.0));
        println!();
        println!("travel booking, 4 hosts, emulated links (cloud-20ms-s1-10ms-s2-10ms-s3), redb, started on s1:");
        println!("latency, one booking at a time on its own hotel and flight ({runs} each, interleaved):");
        println!(
            "  plain (3 steps, no transaction): p50 {pp50:.1} ms, p95 {:.1} ms ({:.2}× the {LOWER_BOUND_MS} ms link lower bound)",
            percentile(&p, 95.0),
            pp50 / LOWER_BOUND_MS
        );
        println!(
            "  transactional:                   p50 {tp50:.1} ms, p95 {:.1} ms ({:.2}× the lower bound)",
            percentile(&t, 95.0),
            tp50 / LOWER_BOUND_MS
        );
        println!("  ratio of the p50s: {:.2}× (target ≤ 1.5×)", tp50 / pp50);
        println!("throughput, concurrent bookings on distinct hotels and flights:");
        println!("  | concurrent | plain bookings/s | transactional bookings/s | ratio | aborted attempts |");
        for n in [10u64, 50, 100] {
            let first = id + 1;
            id += n;
            let (plain_rate, _) = bench.burst("plain", n, first, (false, false)).await;
            let first = id + 1;
            id += n;
            let (txn_rate, aborts) = bench.burst("travel", n, first, (false, false)).await;
            println!(
                "  | {n} | {plain_rate:.1} | {txn_rate:.1} | {:.2}× | {aborts} |{}",
                txn_rate / plain_rate,
                if n == 100 { " (target ≥ 0.5×)" } else { "" }
            );
        }
        let n = 50;
        println!("contention, {n} concurrent bookings:");
        for (what, hot) in [("one hotel, one flight", (true, true)), ("distinct hotels, one flight", (false, true))] {
            let first = id + 1;
            id += n;
            let (plain_rate, _) = bench.burst("plain", n, first, hot).await;
            let first = id + 1;
            id += n;
            let (txn_rate, aborts) = bench.burst("travel", n, first, hot).await;
            println!(
                "  {what}: plain {plain_rate:.1} bookings/s; transactional {txn_rate:.1} bookings/s ({:.2}×); \
                 {aborts} aborted attempts retried ({:.2} per booking, {:.0}% of attempts)",
                txn_rate / plain_rate,
                aborts as f64 / n as f64,
                100.0 * aborts as f64 / (aborts + n) as f64
            );
        }
    });
}
