//! Replicated scopes on emulated links (Enoki's and Cloudburst's
//! comparisons), every figure with its reference measured in the same run:
//!
//! 1. **Read latency** of a function on a satellite: the local replica of a
//!    replicated scope (timed inside the guest, `TimeGets`) vs today's single
//!    remote copy on the cloud, read over the emulated sat — 20 ms — cloud
//!    link by the peer protocol. Target: local ≤ 1 ms, remote ≥ one link RTT
//!    (40 ms).
//! 2. **Convergence** after a write, per hop count, on a chain s0 — s1 — s2
//!    — s3 (10 ms per link, 100 Mbit/s): time until the value is applied on
//!    the replica h hops away, vs the link-time lower bound (h × 10 ms plus
//!    the value's serialisation). Target ≤ 1.2×.
//! 3. **Catch-up**: a replica away for a whole link window misses N writes
//!    of 1 KiB; bytes the links carry toward it (all framing) vs the bytes
//!    of the missed updates (key + value). Target ≤ 1.1×.
//!
//! `cargo bench -p databelt-bench --bench replication`
//! (`DATABELT_REPL_SAMPLES`, default 30; `DATABELT_REPL_MISSED`, default 1000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::time::{Duration, Instant};

use databelt_host::ReplicatedScope;
use databelt_placement::Topology;
use databelt_testbed::{Cluster, ClusterOptions};

const SCOPE: &str = "shared";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A link: its ends, one-way latency (ms) and an optional window `[start, end)` ms.
type LinkSpec<'a> = (&'a str, &'a str, u32, Option<(u64, u64)>);

fn topology(nodes: &[&str], links: &[LinkSpec<'_>], period: u64) -> Topology {
    let mut toml = if period > 0 { format!("period_ms = {period}\n") } else { String::new() };
    for id in nodes {
        let kind = if *id == "cloud" { "cloud" } else { "satellite" };
        toml += &format!("[[node]]\nid = \"{id}\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\n");
    }
    for (a, b, lat, window) in links {
        toml += &format!("[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {lat}\nbandwidth_mbps = 100\n");
        if let Some((s, e)) = window {
            toml += &format!("windows = [{{start_ms = {s}, end_ms = {e}}}]\n");
        }
    }
    Topology::from_toml(&toml).unwrap()
}

async fn cluster(t: Topology, replicas: &[&str], dir: &std::path::Path) -> Cluster {
    let (mut host, _d) = common::temp_config();
    host.backend = databelt_host::BackendConfig::Memory;
    host.cache_dir = Some(common::workspace().join("target/guests/cwasm-cache"));
    host.replicated =
        [(SCOPE.to_string(), ReplicatedScope { nodes: replicas.iter().map(|s| s.to_string()).collect() })]
            .into_iter()
            .collect();
    let options = ClusterOptions {
        placement_listen: "127.0.0.1:0".parse().unwrap(),
        host,
        data_dir: dir.to_path_buf(),
        peer_timeout: Duration::from_secs(10),
        emulate: Some(Duration::from_millis(10)),
        replication: databelt_net::replication::ReplicatorConfig {
            idle_check: Duration::from_millis(100),
            backoff: (Duration::from_millis(20), Duration::from_millis(200)),
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..ClusterOptions::default()
    };
    Cluster::start(t, options).await.unwrap()
}

/// The `p` quantile of `v` (sorted in place).
fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn read_latency(samples: usize) {
    let dir = tempfile::tempdir().unwrap();
    let t = topology(&["sat", "cloud"], &[("sat", "cloud", 20, None)], 0);
    let c = cluster(t, &["sat", "cloud"], dir.path()).await;
    let sat = c.node("sat").unwrap();
    let cloud = c.node("cloud").unwrap();
    // The state: 1 KiB, replicated (and, for today's path, one copy on the cloud).
    cloud.host.state().set(SCOPE, "model", vec![7; 1024], Default::default()).unwrap();
    cloud.host.state().set("single", "model", vec![7; 1024], Default::default()).unwrap();
    let t0 = Instant::now();
    while sat.host.state().get(SCOPE, "model").unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sat.host.deploy_file("probe", &common::guest("kv_probe")).unwrap();
    let mut local = Vec::new();
    for _ in 0..samples {
        let op = common::probe::Op::TimeGets { scope: SCOPE.into(), key: "model".into(), n: 1 };
        let input = postcard::to_allocvec(&op).unwrap();
        let h = sat.host.clone();
        let out =
            tokio::task::spawn_blocking(move || h.invoke("probe", &input, Default::default()).unwrap()).await.unwrap();
        let common::probe::Reply::Nanos(n) = postcard::from_bytes(&out.output).unwrap() else { panic!() };
        local.push(Duration::from_nanos(n));
    }
    let addr = sat.executor.continuum().peer_address("cloud").unwrap();
    let run: databelt_host::types::RunId = "bench-read".parse().unwrap();
    let peers = sat.executor.continuum().peers().clone();
    let mut remote = Vec::new();
    for _ in 0..samples {
        let start = Instant::now();
        let v = peers.get(&addr, &run, "single", "model").await.unwrap();
        remote.push(start.elapsed());
        assert_eq!(v.map(|v| v.len()), Some(1024));
    }
    let (l, r) = (percentile(&mut local, 0.5), percentile(&mut remote, 0.5));
    println!(
        "read latency, 1 KiB, function on a satellite (p50 of {samples}): local replica {:.3} ms (p95 {:.3}) vs \
         single remote copy {:.1} ms (p95 {:.1}); link RTT 40 ms; remote/local {:.0}x; targets: local <= 1 ms {}, \
         remote >= RTT {}",
        ms(l),
        ms(percentile(&mut local, 0.95)),
        ms(r),
        ms(percentile(&mut remote, 0.95)),
        r.as_secs_f64() / l.as_secs_f64().max(1e-9),
        if ms(l) <= 1.0 { "met" } else { "NOT met" },
        if ms(r) >= 40.0 { "met" } else { "NOT met" },
    );
}

async fn convergence(samples: usize) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = ["s0", "s1", "s2", "s3"];
    let t = topology(&nodes, &[("s0", "s1", 10, None), ("s1", "s2", 10, None), ("s2", "s3", 10, None)], 0);
    let c = cluster(t, &nodes, dir.path()).await;
    let origin = c.node("s0").unwrap().host.state().clone();
    let value = vec![3u8; 1024];
    // Warm the connections.
    origin.set(SCOPE, "warm", value.clone(), Default::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("convergence after a write of 1 KiB (p50 of {samples}), vs h x 10 ms + serialisation:");
    // Each replica notes when the key being measured becomes readable there,
    // from inside its apply (no polling to compete with the replicators).
    type Probe = std::sync::Arc<std::sync::Mutex<(String, Vec<Option<Instant>>)>>;
    let probe: Probe = std::sync::Arc::new(std::sync::Mutex::new((String::new(), vec![None; 3])));
    for (h, node) in nodes.iter().enumerate().skip(1) {
        let tier = c.node(node).unwrap().host.state().clone();
        let (p, t) = (probe.clone(), tier.clone());
        tier.replication().unwrap().on_change(std::sync::Arc::new(move |_scope: &str| {
            let mut p = p.lock().unwrap();
            if p.1[h - 1].is_none() && !p.0.is_empty() && t.get(SCOPE, &p.0).unwrap().is_some() {
                p.1[h - 1] = Some(Instant::now());
            }
        }));
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for i in 0..samples {
        let key = format!("k{i}");
        *probe.lock().unwrap() = (key.clone(), vec![None; 3]);
        let start = Instant::now();
        origin.set(SCOPE, &key, value.clone(), Default::default()).unwrap();
        loop {
            let seen = probe.lock().unwrap().1.clone();
            if seen.iter().all(Option::is_some) {
                for (h, t) in seen.into_iter().enumerate() {
                    times[h].push(t.unwrap().duration_since(start));
                }
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no convergence");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Let the previous push's acknowledgement come back from the
        // farthest replica (RTT 60 ms): a replicator keeps one push in
        // flight per peer, so a write made while one is unacknowledged
        // waits for it (see the module docs).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (h, t) in times.iter_mut().enumerate() {
        let hops = h + 1;
        // 1 KiB + framing at 100 Mbit/s per link.
        let bound = hops as f64 * 10.0 + hops as f64 * (1200.0 * 8.0 / 100e6) * 1e3;
        let p50 = ms(percentile(t, 0.5));
        println!(
            "  {hops} hop(s): p50 {p50:.1} ms, p95 {:.1} ms; bound {bound:.1} ms; {:.2}x (target <= 1.2x: {})",
            ms(percentile(t, 0.95)),
            p50 / bound,
            if p50 / bound <= 1.2 { "met" } else { "NOT met" }
        );
    }
}

async fn catch_up(missed_writes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let t = topology(
        &["a", "b", "c"],
        &[("a", "b", 5, None), ("a", "c", 10, Some((0, 3000))), ("b", "c", 10, Some((0, 3000)))],
        8000,
    );
    let c = cluster(t, &["a", "b", "c"], dir.path()).await;
    let e = c.emulator.as_ref().unwrap();
    let t0 = Instant::now();
    while e.route("a", "c").unwrap().is_up() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let carried = |c: &Cluster| -> u64 {
        let e = c.emulator.as_ref().unwrap();
        ["a", "b"].iter().map(|n| e.route(n, "c").unwrap().bytes_carried().0).sum()
    };
    let before = carried(&c);
    let a = c.node("a").unwrap().host.state().clone();
    let mut missed = 0usize;
    for i in 0..missed_writes {
        let key = format!("key-{:04}", i % 200);
        let value = vec![(i % 251) as u8; 1024];
        missed += key.len() + value.len();
        a.set(SCOPE, &key, value, Default::default()).unwrap();
    }
    assert!(!e.route("a", "c").unwrap().is_up(), "the writes took longer than c's absence");
    let away_for = t0.elapsed();
    let target = a.replica_vv(SCOPE).unwrap();
    let cn = c.node("c").unwrap().host.state().clone();
    while cn.replica_vv(SCOPE).unwrap() != target {
        assert!(t0.elapsed() < Duration::from_secs(30), "no catch-up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = carried(&c) - before;
    println!(
        "catch-up after a window away ({missed_writes} writes of 1 KiB, {:.1} s into the absence): links carried \
         {sent} bytes for {missed} bytes missed: {:.3}x (target <= 1.1x: {})",
        away_for.as_secs_f64(),
        sent as f64 / missed as f64,
        if sent as f64 / missed as f64 <= 1.1 { "met" } else { "NOT met" }
    );
}

fn main() {
    common::guests_dir();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let samples = env("DATABELT_REPL_SAMPLES", 30);
    rt.block_on(async {
        read_latency(samples).await;
        convergence(samples).await;
        catch_up(env("DATABELT_REPL_MISSED", 1000)).await;
    });
}
