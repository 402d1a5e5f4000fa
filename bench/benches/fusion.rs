//! State fusion benchmark (issue: "function state fusion"), the paper's
//! setting: one function retrieves B = 1..5 states of 10 MB each, held on
//! another node behind an emulated 40 Mbit/s link with 20 ms ± 8 ms one-way
//! delay (`databelt-testbed`'s user-space link), or held on its own node.
//!
//! Measured per B, in the same run, with fusion off (the reference: one
//! store operation and one request per state) and on (one in-memory sandbox
//! per run, one batch request per source node):
//! - *remote*: `w@src → m@src → r@dst`; `w` writes the B states on `src`,
//!   `r` on `dst` declared them and reads them: the host fetches them before
//!   `r` starts (fused: one batch; single: B requests) through the link;
//! - *local*: `w@src → r@src`: the states never leave `src`.
//!
//! The figures are storage-operation latencies (`StateCounters::state_micros`):
//! `r`'s (fetching the declared states plus its own state calls) and the
//! whole run's (also `w`'s writes and every hand-on). Printed: each mode's
//! median, `r`'s requests, fused/single, and the transfer floor of the link
//! (B × 10 MB at 40 Mbit/s plus one round trip).
//!
//! `DATABELT_FUSION_MB` (default 10), `DATABELT_FUSION_MAX_B` (default 5)
//! and `DATABELT_FUSION_SAMPLES` (default 1) shrink or grow the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use databelt_host::{BackendConfig, schema};
use databelt_net::workflow::{RunOptions, RunReport, Runner};
use databelt_testbed::cluster::Advertise;
use databelt_testbed::{Cluster, ClusterOptions};
use databelt_testbed::{Link, LinkSpec};
use serde_json::json;

const LINK: LinkSpec = LinkSpec { latency_ms: 20.0, jitter_ms: 8.0, bandwidth_mbps: 40.0 };

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn plan(runner: &Runner, write: u32, size: u32, read: u32) -> Vec<u8> {
    let v = json!({"write": write, "first": 0, "next_write": 0, "size": size, "read": read, "found": 0, "bytes": 0, "trail": []});
    schema::json_to_postcard(runner.input_schema().expect("schema"), &v).expect("plan")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Sample {
    /// `r`'s storage-operation latency, ms.
    ms: f64,
    /// `r`'s requests to other hosts.
    requests: u64,
    /// The whole run's storage-operation latency (every step), ms.
    run_ms: f64,
}

async fn measure(runner: &Runner, b: u32, size: u32, fusion: bool) -> Sample {
    let options = RunOptions { fusion: Some(fusion), ..RunOptions::default() };
    let report: RunReport = runner.run(plan(runner, b, size, b), &options).await.expect("run");
    let r = &report.steps.iter().find(|l| l.step == "r").expect("step r").result;
    assert_eq!(r.prefetched as u32 + if r.node == "src" { b } else { 0 }, b, "every declared state was found");
    Sample {
        ms: r.counters.state_micros as f64 / 1000.0,
        requests: r.counters.remote_requests,
        run_ms: report.counters.state_micros as f64 / 1000.0,
    }
}

/// A runner of the workflow at `path` on `cluster`, sharing the tests'
/// compiled-code cache.
async fn runner(cluster: &Cluster, path: &std::path::Path) -> Runner {
    cluster.runner(path, Some(common::workspace().join("target/guests/cwasm-cache"))).await.unwrap()
}

fn main() {
    let mb = env("DATABELT_FUSION_MB", 10);
    let max_b = env("DATABELT_FUSION_MAX_B", 5);
    let samples = env("DATABELT_FUSION_SAMPLES", 1).max(1);
    let size = mb * 1_000_000;
    common::guests_dir();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let toml = "[[node]]\nid = \"src\"\nkind = \"edge\"\naddress = \"127.0.0.1:0\"\n\
                    [[node]]\nid = \"dst\"\nkind = \"cloud\"\naddress = \"127.0.0.1:0\"\n\
                    [[link]]\na = \"src\"\nb = \"dst\"\nlatency_ms = 20\njitter_ms = 8\nbandwidth_mbps = 40\n";
        // Every connection to `src` passes through the emulated link.
        let links: Arc<Mutex<HashMap<String, Link>>> = Arc::default();
        let held = links.clone();
        let advertise = Advertise(Arc::new(move |node: &str, addr: SocketAddr| {
            if node != "src" {
                return Ok(addr);
            }
            let link = Link::start("127.0.0.1:0".parse().expect("addr"), addr, LINK)
                .map_err(|e| databelt_host::Error::Config(e.to_string()))?;
            let front = link.addr();
            held.lock().expect("links").insert(node.to_string(), link);
            Ok(front)
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut host, _config_dir) = common::temp_config();
        host.backend = BackendConfig::Redb { path: dir.path().join("unused.redb") };
        host.max_memory_bytes = 256 * 1024 * 1024;
        host.deadline_ms = 600_000;
        let options = ClusterOptions {
            placement_listen: "127.0.0.1:0".parse().expect("addr"),
            host,
            data_dir: dir.path().to_path_buf(),
            peer_timeout: Duration::from_secs(600),
            advertise: Some(advertise),
            emulate: None,
            insecure_development: false,
            replication: Default::default(),
            cloud_backend: None,
        };
        let topology = databelt_placement::Topology::from_toml(toml).expect("topology");
        let cluster = Cluster::start(topology, options).await.expect("cluster");
        let steps_remote: Vec<(&str, &str, &str, f64, &[&str])> = vec![
            ("w", "fan", "src", 600_000.0, &[]),
            ("m", "fan", "src", 600_000.0, &["w"]),
            ("r", "fan", "dst", 600_000.0, &["m"]),
        ];
        let steps_local: Vec<(&str, &str, &str, f64, &[&str])> =
            vec![("w", "fan", "src", 600_000.0, &[]), ("r", "fan", "src", 600_000.0, &["w"])];
        let remote = runner(&cluster, &common::write_workflow(dir.path(), "remote", "", &steps_remote)).await;
        let local = runner(&cluster, &common::write_workflow(dir.path(), "local", "", &steps_local)).await;
        println!(
            "fusion benchmark: B states of {mb} MB; link {} Mbit/s, {} ms ± {} ms one way; {samples} sample(s); backend redb",
            LINK.bandwidth_mbps, LINK.latency_ms, LINK.jitter_ms
        );
        println!(
            "{:<8} {:>3} {:>11} {:>4} {:>11} {:>4} {:>7} {:>10} | {:>13} {:>13} {:>7}",
            "where", "B", "single ms", "req", "fused ms", "req", "ratio", "floor ms", "run single ms", "run fused ms", "ratio"
        );
        for (label, runner) in [("remote", &remote), ("local", &local)] {
            for b in 1..=max_b {
                let (mut single, mut fused) = (Vec::new(), Vec::new());
                let (mut run_single, mut run_fused) = (Vec::new(), Vec::new());
                let (mut single_req, mut fused_req) = (0, 0);
                for _ in 0..samples {
                    let s = measure(runner, b, size, false).await;
                    single.push(s.ms);
                    run_single.push(s.run_ms);
                    single_req = s.requests;
                    let f = measure(runner, b, size, true).await;
                    fused.push(f.ms);
                    run_fused.push(f.run_ms);
                    fused_req = f.requests;
                }
                let (s, f) = (median(single), median(fused));
                let (rs, rf) = (median(run_single), median(run_fused));
                let floor = if label == "remote" {
                    LINK.serialisation((b * size) as usize).as_secs_f64() * 1000.0 + 2.0 * LINK.latency_ms
                } else {
                    0.0
                };
                println!(
                    "{label:<8} {b:>3} {s:>11.1} {single_req:>4} {f:>11.1} {fused_req:>4} {:>7.2} {floor:>10.1} | {rs:>13.1} {rf:>13.1} {:>7.2}",
                    f / s,
                    rf / rs
                );
            }
        }
        println!("left: r's retrieval of the B states (ratio = fused/single; floor = the link's transfer time + one round trip)");
        println!("right: the whole run's storage-operation time (w's writes and hand-on, r's retrieval and reads)");
        println!("target: fused ≤ 0.50× single at B = 5 (the paper: up to 20% lower)");
        drop(links);
    });
}
