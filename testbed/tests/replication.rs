//! Replicated scopes on real hosts behind emulated links whose windows open
//! and close: catch-up after a whole window away, and session guarantees
//! for clients that roam between replicas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use databelt_host::ReplicatedScope;
use databelt_net::replication::{SERVED_BY_HEADER, SESSION_HEADER, WAIT_HEADER};
use databelt_testbed::{Cluster, ClusterOptions};

const SCOPE: &str = "shared";

/// Three replicas; links `(a, b, windows)` as `[start, end)` ms of `period`.
/// A link: its ends, one-way latency (ms) and its windows.
type Link<'a> = (&'a str, &'a str, u32, &'a [(u64, u64)]);

fn topology(period: u64, links: &[Link<'_>]) -> databelt_placement::Topology {
    let mut toml = if period > 0 { format!("period_ms = {period}\n") } else { String::new() };
    for id in ["a", "b", "c"] {
        toml += &format!("[[node]]\nid = \"{id}\"\nkind = \"satellite\"\naddress = \"127.0.0.1:0\"\n");
    }
    for (a, b, lat, windows) in links {
        toml += &format!("[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {lat}\nbandwidth_mbps = 100\n");
        if !windows.is_empty() {
            let w: Vec<String> = windows.iter().map(|(s, e)| format!("{{start_ms = {s}, end_ms = {e}}}")).collect();
            toml += &format!("windows = [{}]\n", w.join(", "));
        }
    }
    databelt_placement::Topology::from_toml(&toml).unwrap()
}

async fn cluster(topology: databelt_placement::Topology) -> (Cluster, tempfile::TempDir) {
    let (mut host, dir) = common::temp_config();
    host.backend = databelt_host::BackendConfig::Memory;
    host.replicated = [(SCOPE.to_string(), ReplicatedScope { nodes: vec!["a".into(), "b".into(), "c".into()] })].into();
    let options = ClusterOptions {
        placement_listen: "127.0.0.1:0".parse().unwrap(),
        host,
        data_dir: dir.path().to_path_buf(),
        peer_timeout: Duration::from_secs(10),
        emulate: Some(Duration::from_millis(10)),
        replication: databelt_net::replication::ReplicatorConfig {
            idle_check: Duration::from_millis(100),
            backoff: (Duration::from_millis(20), Duration::from_millis(200)),
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..ClusterOptions::default()
    };
    (Cluster::start(topology, options).await.unwrap(), dir)
}

fn route_up(cluster: &Cluster, from: &str, to: &str) -> bool {
    cluster.emulator.as_ref().unwrap().route(from, to).unwrap().is_up()
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes the emulated routes toward `to` carried (requests, all framing).
fn carried_to(cluster: &Cluster, to: &str) -> u64 {
    let e = cluster.emulator.as_ref().unwrap();
    ["a", "b", "c"].iter().filter(|n| **n != to).map(|n| e.route(n, to).unwrap().bytes_carried().0).sum()
}

fn sent_to(cluster: &Cluster, to: &str) -> u64 {
    cluster
        .nodes
        .iter()
        .filter_map(|n| n.replicator.as_ref())
        .filter_map(|r| r.stats().get(to).copied())
        .map(|s| s.body_bytes)
        .sum()
}

fn values(cluster: &Cluster, node: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let t = cluster.node(node).unwrap().host.state().clone();
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = t.list_keys(SCOPE, "", cursor.as_deref(), Some(500)).unwrap();
        for k in page.keys {
            out.push((k.clone(), t.get(SCOPE, &k).unwrap()));
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_away_for_a_whole_window_catches_up_with_bytes_close_to_what_it_missed() {
    // c is reachable only in the first 1.5 s of every 4 s.
    let t = topology(4000, &[("a", "b", 5, &[]), ("a", "c", 10, &[(0, 1500)]), ("b", "c", 10, &[(0, 1500)])]);
    let (cluster, _dir) = cluster(t).await;
    until("c's window to close", Duration::from_secs(6), || !route_up(&cluster, "a", "c")).await;
    let (before, carried_before) = (sent_to(&cluster, "c"), carried_to(&cluster, "c"));
    let a = cluster.node("a").unwrap().host.state().clone();
    let mut missed = 0usize;
    for i in 0..200 {
        let key = format!("key-{:03}", i % 50);
        let value = vec![(i % 251) as u8; 1024];
        missed += key.len() + value.len();
        a.set(SCOPE, &key, value, Default::default()).unwrap();
    }
    a.increment(SCOPE, "count", 200).unwrap();
    missed += "count".len() + 8;
    assert!(!route_up(&cluster, "a", "c"), "the writes must happen while c is away");
    let c = cluster.node("c").unwrap().host.state().clone();
    assert_eq!(c.replica_vv(SCOPE).unwrap().get(&"a".to_string()), 0, "c got nothing while away");
    let target = a.replica_vv(SCOPE).unwrap();
    until("c to catch up", Duration::from_secs(10), || c.replica_vv(SCOPE).unwrap() == target).await;
    assert_eq!(values(&cluster, "c"), values(&cluster, "a"));
    assert_eq!(c.get(SCOPE, "count").unwrap(), Some(200i64.to_le_bytes().to_vec()));
    // Let the replicators settle (answers in flight, relays that lost the race).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bodies = sent_to(&cluster, "c") - before;
    let carried = carried_to(&cluster, "c") - carried_before;
    let ratio = carried as f64 / missed as f64;
    println!(
        "catch-up: links carried {carried} bytes toward c ({bodies} bytes of push bodies attempted) for {missed} bytes \
         of missed updates (201 writes): {ratio:.3}x"
    );
    assert!(ratio <= 1.1, "catch-up carried {carried} bytes for {missed} missed: {ratio:.3}x");
}

/// A small xorshift generator (a fixed seed per client).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Write {
    counter: u64,
    acked: Instant,
}

/// The staleness of reading `counter` of a key at `at`: how long the first
/// newer acknowledged write had been acknowledged (0 if none was).
fn staleness(writes: &[Write], counter: u64, at: Instant) -> Duration {
    writes
        .iter()
        .find(|w| w.counter == counter + 1 && w.acked <= at)
        .map_or(Duration::ZERO, |w| at.duration_since(w.acked))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// FReD's session test on the emulated testbed: clients roam between three
/// replicas while the links between the replicas open and close; 10% of
/// operations are writes. Each key has one writer (its client), which
/// writes 1, 2, 3, …; so on every read, read-your-writes means a client
/// reads back exactly its own last write, and monotonic reads means no
/// client ever reads a smaller number of a key than it read before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roaming_clients_always_read_their_writes_and_never_go_back_in_time() {
    let t = topology(
        3000,
        &[("a", "b", 10, &[(0, 2000)]), ("b", "c", 10, &[(1000, 3000)]), ("a", "c", 20, &[(0, 500), (1500, 2500)])],
    );
    let (cluster, _dir) = cluster(t).await;
    let http = cluster.credentials.client_builder().unwrap().timeout(Duration::from_secs(15)).build().unwrap();
    let bases: Vec<String> =
        ["a", "b", "c"].iter().map(|n| cluster.credentials.base_url(&cluster.node(n).unwrap().address)).collect();
    const CLIENTS: usize = 4;
    const OPS: usize = 200;
    let writes: std::sync::Arc<std::sync::Mutex<HashMap<String, Vec<Write>>>> = Default::default();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (http, bases, writes) = (http.clone(), bases.clone(), writes.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (client as u64 + 1));
            let mut token: Option<String> = None;
            let mut written: HashMap<String, u64> = HashMap::new();
            let mut seen: HashMap<String, u64> = HashMap::new();
            let (mut stale, mut fallbacks, mut retried) = (Vec::new(), 0u32, 0u32);
            for _ in 0..OPS {
                // Paced, so the run spans the link schedule (3 s).
                tokio::time::sleep(Duration::from_millis(15)).await;
                let replica = rng.below(3) as usize;
                let write = rng.below(10) == 0;
                let key = if write || rng.below(2) == 0 {
                    format!("c{client}-k{}", rng.below(3))
                } else {
                    format!("c{}-k{}", rng.below(CLIENTS as u64), rng.below(3))
                };
                let url = format!("{}/replicas/{SCOPE}/{key}", bases[replica]);
                let started = Instant::now();
                let mut attempt = 0;
                let answer = loop {
                    let next = written.get(&key).copied().unwrap_or(0) + 1;
                    let mut req = if write { http.put(&url).body(next.to_string()) } else { http.get(&url) };
                    req = req.header(WAIT_HEADER, "200");
                    if let Some(t) = &token {
                        req = req.header(SESSION_HEADER, t);
                    }
                    let r = req.send().await.unwrap();
                    if r.status() == 503 && attempt < 20 {
                        // This replica could not cover the session: roam on.
                        attempt += 1;
                        retried += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    break r;
                };
                let status = answer.status().as_u16();
                assert!(status == 200 || status == 204 || status == 404, "{status}: {}", answer.text().await.unwrap());
                token = Some(answer.headers()[SESSION_HEADER].to_str().unwrap().to_string());
                let served_by = answer.headers()[SERVED_BY_HEADER].to_str().unwrap().to_string();
                if served_by != ["a", "b", "c"][replica] {
                    fallbacks += 1;
                }
                if write {
                    let n = written.get(&key).copied().unwrap_or(0) + 1;
                    written.insert(key.clone(), n);
                    writes.lock().unwrap().entry(key).or_default().push(Write { counter: n, acked: Instant::now() });
                    continue;
                }
                let got: u64 = if status == 404 { 0 } else { answer.text().await.unwrap().parse().unwrap() };
                if let Some(mine) = written.get(&key) {
                    assert_eq!(
                        got, *mine,
                        "client {client} read {key} = {got} after writing {mine} (read-your-writes)"
                    );
                }
                let before = seen.get(&key).copied().unwrap_or(0);
                assert!(got >= before, "client {client} read {key} = {got} after reading {before} (monotonic reads)");
                seen.insert(key.clone(), got);
                let history = writes.lock().unwrap();
                stale.push(staleness(history.get(&key).map(Vec::as_slice).unwrap_or(&[]), got, started));
            }
            (stale, fallbacks, retried)
        }));
    }
    let (mut stale, mut fallbacks, mut retried) = (Vec::new(), 0, 0);
    for t in tasks {
        let (s, f, r) = t.await.unwrap();
        stale.extend(s);
        fallbacks += f;
        retried += r;
    }
    stale.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "sessions: {} reads by {CLIENTS} roaming clients, staleness p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; \
         {fallbacks} served by the session's last node, {retried} retried elsewhere",
        stale.len(),
        ms(percentile(&stale, 0.5)),
        ms(percentile(&stale, 0.95)),
        ms(percentile(&stale, 0.99)),
    );
    assert!(stale.len() >= CLIENTS * OPS * 8 / 10 - 20, "about 90% of the operations are reads");
}

/// Cloudburst's repeatable read: a run of three steps on three replicas
/// reads one key while a writer keeps changing it on every replica. With
/// `repeatable_read`, every step of a run sees the version the first step
/// read; without, later steps see newer versions (the anomaly), which the
/// test observes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeatable_read_keeps_one_version_per_run_and_without_it_the_anomaly_shows() {
    use common::runs::{deploy, start};
    let t = topology(0, &[("a", "b", 5, &[]), ("b", "c", 5, &[])]);
    let (cluster, dir) = cluster(t).await;
    let steps: &[(&str, &str, &str, f64, &[&str])] = &[
        ("r1", "reader", "a", 1000.0, &[]),
        ("r2", "reader", "b", 1000.0, &["r1"]),
        ("r3", "reader", "c", 1000.0, &["r2"]),
    ];
    let on = common::write_workflow(dir.path(), "pinned", "repeatable_read = true", steps);
    let off = common::write_workflow(dir.path(), "unpinned", "", steps);
    deploy(&cluster, "a", &on).await;
    deploy(&cluster, "a", &off).await;
    // The writer: a new version every 2 ms, on a rotating replica.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let tiers: Vec<_> = cluster.nodes.iter().map(|n| n.host.state().clone()).collect();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                tiers[(i % 3) as usize].set(SCOPE, "hot", format!("v{i}").into_bytes(), Default::default()).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let input = serde_json::json!({"scope": SCOPE, "key": "hot", "seen": []});
    let versions = |record: &serde_json::Value| -> Vec<String> {
        assert_eq!(record["status"], "succeeded", "{record}");
        let seen = record["outputs"]["r3"]["seen"].as_array().unwrap();
        seen.iter().map(|s| s.as_str().unwrap().split('=').nth(1).unwrap().to_string()).collect()
    };
    let (mut pinned_runs, mut anomalies) = (0, 0);
    for _ in 0..5 {
        let (_, record) = start(&cluster, "a", "pinned", &input, "?wait_ms=20000").await;
        let v = versions(&record);
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|x| *x == v[0]), "repeatable read: every step saw {}, got {v:?}", v[0]);
        pinned_runs += 1;
        let (_, record) = start(&cluster, "a", "unpinned", &input, "?wait_ms=20000").await;
        let v = versions(&record);
        if v.iter().any(|x| *x != v[0]) {
            anomalies += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    println!("repeatable read: {pinned_runs} runs saw one version each; without it, {anomalies} of 5 runs saw several");
    assert!(anomalies > 0, "without repeatable read, steps of a run should see newer versions");
}

/// Only the scope's replicas may push to it; a malformed push and an
/// unauthenticated client are refused, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_replicas_may_push_and_bad_pushes_change_nothing() {
    let t = topology(0, &[("a", "b", 5, &[]), ("b", "c", 5, &[])]);
    let (mut host, dir) = common::temp_config();
    host.backend = databelt_host::BackendConfig::Memory;
    // Replicated on a and b only; c is a member of the continuum, not a replica.
    host.replicated = [(SCOPE.to_string(), ReplicatedScope { nodes: vec!["a".into(), "b".into()] })].into();
    let options = ClusterOptions {
        placement_listen: "127.0.0.1:0".parse().unwrap(),
        host,
        data_dir: dir.path().to_path_buf(),
        peer_timeout: Duration::from_secs(10),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(t, options).await.unwrap();
    assert!(cluster.node("c").unwrap().replicator.is_none());
    let a = cluster.node("a").unwrap();
    a.host.state().set(SCOPE, "k", b"v".to_vec(), Default::default()).unwrap();
    let before = a.host.state().replica_vv(SCOPE).unwrap();
    let a_addr = cluster.node("c").unwrap().executor.continuum().peer_address("a").unwrap();
    let c_peers = cluster.node("c").unwrap().executor.continuum().peers().clone();
    let push = postcard::to_stdvec(&databelt_net::replication::Push::default()).unwrap();
    let e = c_peers.post_raw(&a_addr, &format!("replicate/{SCOPE}"), push, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::AccessDenied, "{e}");
    // b is a replica, but a garbage body is refused.
    let b_peers = cluster.node("b").unwrap().executor.continuum().peers().clone();
    let e = b_peers
        .post_raw(&a_addr, &format!("replicate/{SCOPE}"), vec![0xff; 40], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::BadInput, "{e}");
    assert_eq!(a.host.state().replica_vv(SCOPE).unwrap(), before, "nothing changed");
    // A client without a token may not read or write.
    let tokenless = databelt_net::auth::Credentials { token: None, ..cluster.credentials.clone() };
    let bare = tokenless.client_builder().unwrap().build().unwrap();
    let url = format!("{}/replicas/{SCOPE}/k", cluster.credentials.base_url(&a.address));
    assert_eq!(bare.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(bare.put(&url).body("x").send().await.unwrap().status(), 401);
    assert_eq!(a.host.state().get(SCOPE, "k").unwrap(), Some(b"v".to_vec()));
}
