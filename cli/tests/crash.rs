//! Crash harness: durable wildfire runs on a continuum of real `databelt
//! serve` processes (one per node, redb state on disk) while random nodes are
//! killed with SIGKILL and restarted at random moments, and some invoking
//! clients are killed right after they started their run. Then:
//!
//! - every run finished, exactly once: the alarm step's counter equals the
//!   number of runs, and the counts the runs saw before their own increment
//!   are exactly 0..N-1 (none lost, none doubled);
//! - every output is right (the alarm of the scene the input names);
//! - nothing is left behind on any node (inbox, done records, outgoing
//!   messages, hand-off states) once the runs have ended.
//!
//! A third harness writes to a replicated scope through the session routes
//! while nodes are killed and one is frozen (SIGSTOP): every acknowledged
//! write reaches every replica once the nodes are back.
//!
//! The short version runs in the test suite (`DATABELT_CRASH_RUNS`, default
//! 16 runs); `DATABELT_CRASH_RUNS=200 cargo test -p databelt-cli --test crash
//! -- --nocapture` is the long one, whose counts go in the notes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use databelt_host::state::{RedbStore, StateLimits, StateTier};
use databelt_net::workflow::durable::WORKFLOW_SCOPE;
use databelt_test_support as common;
use serde_json::{Value, json};

const NODES: [&str; 4] = ["cloud", "s1", "s2", "s3"];

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_databelt"))
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct NodeProc {
    id: &'static str,
    addr: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Flags every start of the node gets.
    extra: Vec<String>,
}

impl NodeProc {
    fn start(&mut self, placement: &str) {
        let extra = self.extra.clone();
        let flags: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.start_with(placement, &flags);
    }

    fn start_with(&mut self, placement: &str, flags: &[&str]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = bin()
            .args(["serve", "--listen", &self.addr, "--node-id", self.id, "--placement", placement])
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--insecure-dev-no-auth"])
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Placement(Child);

impl Drop for Placement {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn up(http: &reqwest::Client, addr: &str) -> bool {
    http.get(format!("http://{addr}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
}

async fn wait_up(http: &reqwest::Client, addr: &str) {
    wait_for(http, addr, "/healthz").await
}

async fn wait_for(http: &reqwest::Client, addr: &str, path: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("http://{addr}{path}")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < until, "{addr} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keys of unfinished work left in a node's run log (definitions, run
/// records and tombstones expire by retention), and its hand-off states.
fn leftovers(data: &Path) -> Vec<String> {
    let store = RedbStore::open(&data.join("databelt-state.redb")).unwrap();
    let tier = StateTier::new(std::sync::Arc::new(store), StateLimits::default());
    let mut left: Vec<String> = tier
        .list_keys(WORKFLOW_SCOPE, "", None, Some(1000))
        .unwrap()
        .keys
        .into_iter()
        .filter(|k| !(k.starts_with("def/") || k.starts_with("run/") || k.starts_with("ended/")))
        .collect();
    left.extend(tier.list_keys("databelt.runs", "", None, Some(1000)).unwrap().keys);
    left.extend(tier.prepared_transactions("").unwrap().into_iter().map(|t| format!("prepared transaction {t}")));
    left
}

/// Once no node holds hand-off state, stop every node and list what each
/// left on its disk ([`leftovers`], prefixed with the node).
async fn stop_and_look(http: &reqwest::Client, nodes: &mut [NodeProc]) -> Vec<String> {
    until_no_live_runs(http, nodes).await;
    // An ended run's `forget` messages may still be in an outbox, waiting
    // out a retry after a node's restart: the outbox's longest backoff is
    // 2 s (`DurableConfig::max_backoff`), so settle for longer than that.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    for n in nodes.iter_mut() {
        n.kill();
    }
    nodes.iter().flat_map(|n| leftovers(&n.data).into_iter().map(|k| format!("{}:{k}", n.id))).collect()
}

/// The state tier on a stopped node's disk.
fn disk_tier(data: &Path) -> StateTier {
    let store = RedbStore::open(&data.join("databelt-state.redb")).unwrap();
    StateTier::new(std::sync::Arc::new(store), StateLimits::default())
}

/// Wait for every run of `started` (run, origin address) to end; their
/// records.
async fn records(http: &reqwest::Client, started: &[(String, String)]) -> Vec<Value> {
    let mut out = Vec::new();
    for (run, origin) in started {
        let until = Instant::now() + Duration::from_secs(180);
        let record = loop {
            let r = http.get(format!("http://{origin}/runs/{run}?wait_ms=5000")).send().await;
            if let Ok(r) = r
                && r.status() == 200
            {
                let v: Value = r.json().await.unwrap();
                if v["status"] != "running" {
                    break v;
                }
            }
            assert!(Instant::now() < until, "run {run} did not end");
        };
        out.push(record);
    }
    out
}

/// Wait until no node holds hand-off state of any run.
async fn until_no_live_runs(http: &reqwest::Client, nodes: &[NodeProc]) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut live = Vec::new();
        for n in nodes {
            let v: Value =
                http.get(format!("http://{}/workflow/v1/runs", n.addr)).send().await.unwrap().json().await.unwrap();
            live.extend(v.as_array().unwrap().iter().map(|r| format!("{}:{r}", n.id)));
        }
        if live.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "hand-off state left behind: {live:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The placement service and one `databelt serve` process per node (redb
/// state under `dir/<node>`), all up; returns the nodes, the placement
/// process and its URL.
async fn continuum(dir: &Path, http: &reqwest::Client) -> (Vec<NodeProc>, Placement, String) {
    let mut nodes: Vec<NodeProc> = NODES
        .iter()
        .map(|id| NodeProc {
            id,
            addr: free_addr(),
            data: dir.join(id),
            log: dir.join(format!("{id}.log")),
            child: None,
            extra: Vec::new(),
        })
        .collect();
    let mut scenario = String::new();
    for n in &nodes {
        let kind = if n.id == "cloud" { "cloud" } else { "satellite" };
        scenario += &format!("[[node]]\nid = \"{}\"\nkind = \"{kind}\"\naddress = \"{}\"\n", n.id, n.addr);
    }
    for (a, b) in [("cloud", "s1"), ("s1", "s2"), ("s2", "s3")] {
        scenario += &format!("[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = 5\nbandwidth_mbps = 1000\n");
    }
    std::fs::write(dir.join("scenario.toml"), scenario).unwrap();
    let paddr = free_addr();
    let placement = Placement(
        bin()
            .args(["placement", "--listen", &paddr, "--insecure-dev-no-auth", "--scenario"])
            .arg(dir.join("scenario.toml"))
            .arg("--data-dir")
            .arg(dir.join("placement"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(http, &paddr, "/v1/topology").await;
    let url = format!("http://{paddr}");
    for n in &mut nodes {
        n.start(&url);
    }
    for n in &nodes {
        wait_up(http, &n.addr).await;
    }
    (nodes, placement, url)
}

/// Restart every node with `flags` and wait until all are up again.
async fn restart_with(nodes: &mut [NodeProc], placement: &str, http: &reqwest::Client, flags: &[&str]) {
    for n in nodes.iter_mut() {
        n.kill();
        n.start_with(placement, flags);
    }
    for n in nodes.iter() {
        wait_up(http, &n.addr).await;
    }
}

/// A small xorshift generator, seeded from the process id.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random node kills: at most one node down at a time (SIGKILL), for
/// 100–600 ms, every 150–450 ms; call [`Chaos::tick`] often.
struct Chaos {
    rng: Rng,
    next: Instant,
    down: Option<(usize, Instant)>,
    kills: usize,
}

impl Chaos {
    fn new() -> Chaos {
        Chaos {
            rng: Rng(0x9e3779b97f4a7c15u64 ^ std::process::id() as u64),
            next: Instant::now() + Duration::from_millis(200),
            down: None,
            kills: 0,
        }
    }

    /// Restart the node that is down when its time is up; kill another
    /// when it is time.
    fn tick(&mut self, nodes: &mut [NodeProc], placement: &str) {
        if let Some((i, back)) = self.down
            && Instant::now() >= back
        {
            nodes[i].start(placement);
            self.down = None;
        }
        if self.down.is_none() && Instant::now() >= self.next {
            let i = (self.rng.next() % nodes.len() as u64) as usize;
            nodes[i].kill();
            self.kills += 1;
            self.down = Some((i, Instant::now() + Duration::from_millis(100 + self.rng.next() % 500)));
            self.next = Instant::now() + Duration::from_millis(150 + self.rng.next() % 300);
        }
    }

    /// Bring the node that is down back.
    fn end(&mut self, nodes: &mut [NodeProc], placement: &str) {
        if let Some((i, _)) = self.down.take() {
            nodes[i].start(placement);
        }
    }
}

/// `databelt deploy` of the workflow file at `path` through node `addr`.
fn deploy(addr: &str, path: &Path) {
    let out = bin().arg("deploy").arg(path).args(["--node", addr, "--insecure-dev-no-auth"]).output().unwrap();
    assert!(out.status.success(), "deploy: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_finish_exactly_once_while_nodes_and_clients_are_killed() {
    let runs: usize = std::env::var("DATABELT_CRASH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let dir = tempfile::tempdir().unwrap();
    databelt_net::tls::install_default_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let (mut nodes, _placement, placement) = continuum(dir.path(), &http).await;
    deploy(&nodes[0].addr, &common::write_wildfire(dir.path(), ""));

    let input = json!({"seed": 42, "tiles": 16, "side": 64});
    let mut started: Vec<(String, String)> = Vec::new(); // (run, origin address)
    let mut client_kills = 0;
    let mut chaos = Chaos::new();
    while started.len() < runs {
        chaos.tick(&mut nodes, &placement);
        let (rng, down) = (&mut chaos.rng, chaos.down);
        // Start a run on a node that is up; every fourth through a CLI
        // client that is killed as soon as the run has started.
        let i = (rng.next() % NODES.len() as u64) as usize;
        if down.is_some_and(|(d, _)| d == i) || !up(&http, &nodes[i].addr).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if started.len() % 4 == 3 {
            let mut client = bin()
                .args(["invoke", "wildfire", "--input", &input.to_string(), "--node", &nodes[i].addr])
                .arg("--insecure-dev-no-auth")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(client.stderr.take().unwrap()).read_line(&mut line).unwrap();
            let _ = client.kill();
            let _ = client.wait();
            if let Some(run) = line.strip_prefix("run ").and_then(|l| l.split_whitespace().next()) {
                started.push((run.to_string(), nodes[i].addr.clone()));
                client_kills += 1;
            }
            continue;
        }
        let r = http.post(format!("http://{}/workflows/wildfire/runs", nodes[i].addr)).json(&input).send().await;
        if let Ok(r) = r
            && r.status() == 202
        {
            let v: Value = r.json().await.unwrap();
            started.push((v["run_id"].as_str().unwrap().to_string(), nodes[i].addr.clone()));
        }
        tokio::time::sleep(Duration::from_millis(60 + rng.next() % 120)).await;
    }
    chaos.end(&mut nodes, &placement);
    let kills = chaos.kills;
    for n in &nodes {
        wait_up(&http, &n.addr).await;
    }

    // Every run ends, succeeded, with the right alarm.
    let mut seen_before = Vec::new();
    for record in records(&http, &started).await {
        assert_eq!(record["status"], "succeeded", "{record}");
        let alarm = &record["outputs"]["alarm"];
        assert_eq!(alarm["fire"], true, "{record}");
        seen_before.push(alarm["raised_before"].as_i64().unwrap());
        // Reports arrive in any order (a killed producer sends its report
        // after it restarts); each step is there once.
        let mut steps: Vec<&str> =
            record["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
        steps.sort();
        assert_eq!(steps, ["alarm", "confirm", "mark", "preprocess"], "each step once: {record}");
    }
    seen_before.sort();
    assert_eq!(seen_before, (0..runs as i64).collect::<Vec<_>>(), "each run's alarm counted exactly once");

    // Nothing left behind: wait for the forgets, then look at every disk.
    let left = stop_and_look(&http, &mut nodes).await;
    // The alarm counter on the cloud's disk: one per run.
    let tier = disk_tier(&nodes[0].data);
    let count = tier.increment("wildfire", "alarms/42", 0).unwrap();
    eprintln!(
        "crash harness: {runs} runs, {kills} node kills (SIGKILL + restart), {client_kills} clients killed; \
         alarm counter {count}; left behind: {}",
        left.len()
    );
    assert_eq!(count, runs as i64, "the last step's counter equals the number of runs");
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Travel bookings (examples/travel: hotel on s1, flight on s2,
/// confirmation on s3, one transaction) started concurrently on random
/// nodes while random nodes are killed and restarted: every booking ends,
/// none is half-done, nothing is overbooked, the committed bookings are
/// serializable ([`common::travel::check`]), and no prepared part or lock
/// is left on any disk. `DATABELT_CRASH_BOOKINGS` sets the number (default
/// 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_never_overbook_while_nodes_are_killed() {
    let bookings: u64 = std::env::var("DATABELT_CRASH_BOOKINGS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let capacity = 25;
    let dir = tempfile::tempdir().unwrap();
    databelt_net::tls::install_default_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (mut nodes, _placement, placement) = continuum(dir.path(), &http).await;
    let txn = "retries = 60\ntimeout_ms = 3000";
    deploy(&nodes[0].addr, &common::write_travel(dir.path(), ["s1", "s2", "s3"], Some(txn)));

    let mut chaos = Chaos::new();
    let mut started: Vec<(String, String)> = Vec::new();
    while (started.len() as u64) < bookings {
        chaos.tick(&mut nodes, &placement);
        let i = (chaos.rng.next() % NODES.len() as u64) as usize;
        if chaos.down.is_some_and(|(d, _)| d == i) {
            continue;
        }
        let id = started.len() as u64;
        let input = common::travel::booking(id, capacity, id % 7 == 6);
        let r = http.post(format!("http://{}/workflows/travel/runs", nodes[i].addr)).json(&input).send().await;
        if let Ok(r) = r
            && r.status() == 202
        {
            let v: Value = r.json().await.unwrap();
            started.push((v["run_id"].as_str().unwrap().to_string(), nodes[i].addr.clone()));
        }
        tokio::time::sleep(Duration::from_millis(5 + chaos.rng.next() % 20)).await;
    }
    // Keep killing while the bookings run, for a while.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        chaos.tick(&mut nodes, &placement);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    chaos.end(&mut nodes, &placement);
    for n in &nodes {
        wait_up(&http, &n.addr).await;
    }
    let outcomes: std::collections::HashMap<u64, Value> =
        records(&http, &started).await.into_iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
    let left = stop_and_look(&http, &mut nodes).await;
    let tiers: Vec<(&str, StateTier)> = nodes.iter().map(|n| (n.id, disk_tier(&n.data))).collect();
    for (id, tier) in &tiers {
        assert_eq!(tier.held_locks().unwrap(), 0, "{id} still holds locks");
    }
    let state = |node: &str, scope: &str, key: &str| {
        tiers.iter().find(|(id, _)| *id == node).unwrap().1.get(scope, key).unwrap()
    };
    let checked = common::travel::check(bookings, capacity, &outcomes, &state);
    eprintln!(
        "travel crash harness: {bookings} bookings, {} node kills (SIGKILL + restart); {} confirmed, {} failed, \
         {} aborted attempts retried; left behind: {}",
        chaos.kills,
        checked.confirmed,
        checked.failed,
        checked.retried,
        left.len()
    );
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(checked.confirmed > 0, "some bookings go through despite the kills");
}

/// A frozen node (SIGSTOP) never hangs a run: while it is frozen, the run
/// waits for it up to the step's `max_wait_ms` (deliveries time out and back
/// off), then fails with a record naming the step and the node; a node
/// thawed within that time lets the run finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_costs_a_run_its_max_wait_never_forever() {
    let dir = tempfile::tempdir().unwrap();
    databelt_net::tls::install_default_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (mut nodes, _placement, url) = continuum(dir.path(), &http).await;
    // A hand-off to a frozen peer gives up after 2 s without a byte.
    restart_with(&mut nodes, &url, &http, &["--peer-read-timeout-ms", "2000"]).await;
    deploy(&nodes[0].addr, &common::write_wildfire(dir.path(), "max_wait_ms = 2500"));
    let signal = |node: &NodeProc, sig: &str| {
        let pid = node.child.as_ref().unwrap().id();
        assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
        if sig == "-STOP" {
            // `kill` returns before every thread of the process has stopped.
            for _ in 0..200 {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("process {pid} did not stop");
        }
    };
    let start = |origin: String| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://{origin}/workflows/wildfire/runs?wait_ms=30000"))
                .json(&json!({"seed": 42, "tiles": 16, "side": 64}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let s2 = &nodes[2];
    assert_eq!(s2.id, "s2");

    // Frozen for longer than max_wait_ms: the run fails, bounded.
    signal(s2, "-STOP");
    let t = Instant::now();
    let record = start(nodes[0].addr.clone()).await;
    let took = t.elapsed();
    signal(s2, "-CONT");
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["failure"]["step"], "mark", "{record}");
    assert_eq!(record["failure"]["node"], "s2", "{record}");
    assert!(
        took < Duration::from_millis(2500 + 2 * 2000 + 3000),
        "max_wait + one delivery timeout + backoff; took {took:?}"
    );
    eprintln!("frozen past max_wait: failed after {took:?}: {}", record["failure"]["message"]);

    // Frozen for less: the run waits and finishes.
    signal(s2, "-STOP");
    let thaw = tokio::spawn({
        let pid = s2.child.as_ref().unwrap().id().to_string();
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
        }
    });
    let record = start(nodes[0].addr.clone()).await;
    thaw.await.unwrap();
    assert_eq!(record["status"], "succeeded", "{record}");
}

/// Writes to a scope replicated on all four nodes, each through a random
/// node's client route, while random nodes are killed (SIGKILL) and
/// restarted and one is frozen (SIGSTOP) for a second: once every node is
/// back, every write that was acknowledged is on every replica, with its
/// value (an acknowledgement means it was in the writer's durable log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_lose_no_acknowledged_write_while_nodes_are_killed_and_frozen() {
    let writes: usize = std::env::var("DATABELT_CRASH_REPLICA_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let dir = tempfile::tempdir().unwrap();
    let http = databelt_net::auth::Credentials::development()
        .client_builder()
        .unwrap()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut nodes, _placement, url) = continuum(dir.path(), &http).await;
    let config = dir.path().join("replicated.toml");
    std::fs::write(&config, "[replicated.shared]\nnodes = [\"cloud\", \"s1\", \"s2\", \"s3\"]\n").unwrap();
    for n in nodes.iter_mut() {
        n.kill();
        n.extra = vec!["--config".into(), config.display().to_string()];
        n.start(&url);
    }
    for n in &nodes {
        wait_up(&http, &n.addr).await;
    }
    let mut chaos = Chaos::new();
    let mut rng = Rng(0x5eed ^ std::process::id() as u64);
    let mut acked: Vec<(String, String)> = Vec::new();
    let (mut refused, mut frozen) = (0usize, None::<(usize, Instant)>);
    for i in 0..writes {
        chaos.tick(&mut nodes, &url);
        if i == writes / 3 {
            // Freeze a node that is up for a second (its peers time out).
            let j = (0..nodes.len()).find(|j| nodes[*j].child.is_some()).unwrap();
            let pid = nodes[j].child.as_ref().unwrap().id();
            assert!(Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
            frozen = Some((j, Instant::now()));
        }
        if let Some((j, since)) = frozen
            && since.elapsed() > Duration::from_secs(1)
        {
            if let Some(c) = nodes[j].child.as_ref() {
                let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
            }
            frozen = None;
        }
        let n = &nodes[(rng.next() % nodes.len() as u64) as usize];
        let (key, value) = (format!("w{i}"), format!("value-{i}"));
        match http.put(format!("http://{}/replicas/shared/{key}", n.addr)).body(value.clone()).send().await {
            Ok(r) if r.status() == 204 => acked.push((key, value)),
            _ => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some((j, _)) = frozen
        && let Some(c) = nodes[j].child.as_ref()
    {
        let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
    }
    chaos.end(&mut nodes, &url);
    for n in &nodes {
        wait_up(&http, &n.addr).await;
    }
    let until = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<String> = Vec::new();
    for n in &nodes {
        for (key, value) in &acked {
            loop {
                let got = http.get(format!("http://{}/replicas/shared/{key}", n.addr)).send().await;
                if let Ok(r) = got
                    && r.status() == 200
                {
                    assert_eq!(r.text().await.unwrap(), *value, "{}:{key}", n.id);
                    break;
                }
                if Instant::now() > until {
                    missing.push(format!("{}:{key}", n.id));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    println!(
        "replicated writes under chaos: {} acknowledged, {refused} refused (node down), {} kills, 1 freeze; \
         missing on some replica after the nodes came back: {}",
        acked.len(),
        chaos.kills,
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged writes missing: {missing:?}");
    assert!(acked.len() > writes / 2, "most writes reach a live node");
}

/// A producer answers early (its hand-off's target elected, the push still
/// to come), so the consumer starts at once and waits for its input. Real
/// processes: with the elected target frozen (SIGSTOP) and then killed
/// (SIGKILL), the push fails after the answer; the consumer's wait runs
/// out and it reads the copy the producer kept, and the run succeeds, its
/// report naming the failed push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_whose_push_fails_is_read_from_the_producer() {
    let dir = tempfile::tempdir().unwrap();
    databelt_net::tls::install_default_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (mut nodes, _placement, url) = continuum(dir.path(), &http).await;
    // A push to (or a read from) a frozen peer gives up after 1 s without a byte.
    restart_with(&mut nodes, &url, &http, &["--peer-read-timeout-ms", "1000"]).await;
    // ~65 kB from s1 to s3 over 5 ms, 1 Gbit/s hops: one way, s2 needs ~6 ms
    // and s3 ~11 ms; under the strict policy (never past Tmax) Tmax 8 elects
    // s2, from where mark pulls it. (The databelt policy would push it on
    // to s3, mark's own node.)
    let workflow = dir.path().join("early.toml");
    std::fs::write(
        &workflow,
        format!(
            "name = \"early\"\n[[step]]\nname = \"preprocess\"\ncomponent = \"{}\"\nnode = \"s1\"\ntmax_ms = 1000\n\n\
             [[step]]\nname = \"mark\"\ncomponent = \"{}\"\nnode = \"s3\"\ntmax_ms = 8\nafter = [\"preprocess\"]\n",
            common::guest("wildfire_preprocess").display(),
            common::guest("wildfire_detect").display()
        ),
    )
    .unwrap();
    let invoke = || {
        let out = bin()
            .arg("invoke")
            .arg(&workflow)
            .args(["--placement", &url, "--insecure-dev-no-auth", "--json", "--policy", "strict"])
            .args(["--input", r#"{"seed": 42, "tiles": 16, "side": 64}"#, "--cache-dir"])
            .arg(dir.path().join("cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    let hand_off = |r: &Value| r["steps"][0]["result"]["handoffs"][0].clone();
    let read = |r: &Value| r["steps"][1]["result"]["inputs"][0].clone();

    let healthy = invoke();
    assert_eq!(hand_off(&healthy)["elected"], "s2", "{healthy}");
    assert_eq!(hand_off(&healthy)["push_failed"], Value::Null, "{healthy}");
    assert_eq!(read(&healthy)["node"], "s2", "{healthy}");

    let s2 = nodes[2].child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-STOP", &s2]).status().unwrap().success());
    let frozen = invoke();
    assert!(Command::new("kill").args(["-CONT", &s2]).status().unwrap().success());
    assert_eq!(hand_off(&frozen)["elected"], "s2", "{frozen}");
    assert!(hand_off(&frozen)["push_failed"].is_string(), "{frozen}");
    assert_eq!(read(&frozen)["node"], "s1", "the producer's copy: {frozen}");

    nodes[2].kill();
    let killed = invoke();
    assert!(hand_off(&killed)["push_failed"].is_string(), "{killed}");
    assert_eq!(read(&killed)["node"], "s1", "{killed}");
    assert_eq!(healthy["outputs"], killed["outputs"], "the same result either way");
    eprintln!(
        "early answers, failed pushes: frozen target {} ms, killed target {} ms (healthy {} ms)",
        frozen["total_micros"].as_u64().unwrap_or(0) / 1000,
        killed["total_micros"].as_u64().unwrap_or(0) / 1000,
        healthy["total_micros"].as_u64().unwrap_or(0) / 1000
    );
}
