//! Workflows across a continuum of real hosts on loopback (`Cluster`, the
//! engine of `databelt up`): steps run on their nodes, outputs are handed on
//! under each policy, reads are counted per tier, failures do not lose state,
//! and a finished run leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::live_runs;

use std::path::Path;
use std::time::Duration;

use databelt_host::{BackendConfig, HostConfig, schema};
use databelt_net::continuum::{Policy, ReadTier};
use databelt_net::peer::Place;
use databelt_net::workflow::protocol::{MAX_WARM_NODES, RUN_SCOPE, StepInput, StepRequest, WarmRequest};
use databelt_net::workflow::{RunOptions, RunReport, Runner};
use databelt_placement::Topology;
use databelt_testbed::{Cluster, ClusterOptions};
use serde_json::{Value, json};

async fn cluster() -> (Cluster, tempfile::TempDir) {
    common::chain_cluster().await
}

/// A cluster's options on loopback: `host` on every node, state under
/// `dir`, links emulated at `emulate` ticks (none: not emulated).
fn loopback_options(host: HostConfig, dir: &Path, peer_timeout: Duration, emulate: Option<Duration>) -> ClusterOptions {
    ClusterOptions {
        placement_listen: "127.0.0.1:0".parse().unwrap(),
        host,
        data_dir: dir.to_path_buf(),
        peer_timeout,
        emulate,
        ..ClusterOptions::default()
    }
}

fn workflow(dir: &Path, name: &str, steps: &[(&str, &str, &str, f64, &[&str])]) -> std::path::PathBuf {
    common::write_workflow(dir, name, "", steps)
}

async fn runner(cluster: &Cluster, path: &Path) -> Runner {
    common::runner(cluster, path).await
}

fn input(runner: &Runner, size: usize, resize: Option<u32>) -> Vec<u8> {
    let v = json!({"trail": [], "data": vec![1u8; size], "resize": resize});
    schema::json_to_postcard(runner.input_schema().unwrap(), &v).unwrap()
}

fn output(runner: &Runner, report: &RunReport, step: &str) -> Value {
    let (_, bytes) = report.outputs.iter().find(|(s, _)| s == step).expect("output");
    schema::postcard_to_json(runner.output_schema(step).unwrap(), bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_on_its_nodes_and_reads_its_state_locally() {
    let (cluster, dir) = cluster().await;
    let path = workflow(
        dir.path(),
        "chain",
        &[
            ("a", "stage", "s1", 1000.0, &[]),
            ("b", "stage", "s3", 1000.0, &["a"]),
            ("c", "stage", "cloud", 1000.0, &["b"]),
        ],
    );
    let runner = runner(&cluster, &path).await;
    let report = runner.run(input(&runner, 10, Some(50_000)), &RunOptions::default()).await.unwrap();

    let out = output(&runner, &report, "c");
    assert_eq!(out["trail"], json!(["chain-a@s1", "chain-b@s3", "chain-c@cloud"]));
    assert_eq!(out["data"].as_array().unwrap().len(), 50_000);
    let steps: Vec<(&str, &str)> = report.steps.iter().map(|l| (l.step.as_str(), l.result.node.as_str())).collect();
    assert_eq!(steps, [("a", "s1"), ("b", "s3"), ("c", "cloud")]);
    // Generous SLOs: each output was moved all the way to its consumer
    // before the consumer started, so every read was local.
    let b = &report.steps[1].result;
    assert_eq!(b.inputs.len(), 1);
    assert_eq!((b.inputs[0].tier, b.inputs[0].node.as_str()), (ReadTier::Local, "s3"));
    assert_eq!(report.reads.local, 2);
    assert_eq!(report.local_availability(), 1.0);
    assert_eq!(report.steps[0].result.handoffs[0].locator.node, "s3");
    assert!(report.bytes_moved > 100_000, "{}", report.bytes_moved);
    assert_eq!(report.slo_violations, 0);
    // Garbage collection: nothing of the run is left anywhere. (With fusion,
    // each input's only reader took it out of the sandbox, so what is left to
    // delete are the empty sandboxes.)
    assert!(report.cleanup.unreachable.is_empty());
    assert_eq!(live_runs(&cluster), Vec::<(String, Vec<databelt_types::RunId>)>::new());
    let unfused = RunOptions { fusion: Some(false), ..RunOptions::default() };
    let report = runner.run(input(&runner, 10, Some(50_000)), &unfused).await.unwrap();
    assert_eq!(output(&runner, &report, "c")["trail"], json!(["chain-a@s1", "chain-b@s3", "chain-c@cloud"]));
    assert!(report.cleanup.deleted >= 2, "{:?}", report.cleanup);
    assert_eq!(live_runs(&cluster), Vec::<(String, Vec<databelt_types::RunId>)>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tight_slo_sends_the_state_to_the_consumer_late_or_under_strict_stops_it_one_hop_away() {
    let (cluster, dir) = cluster().await;
    // ~100 kB state; b waits only for the bytes (a answers early), so Tmig
    // counts the latency once: Tmig(s2) ≈ 11 + 20 = 31 ms, Tmig(s3) ≈ 22 + 20 =
    // 42 ms; Tmax 35 fits s2 only.
    let path = workflow(dir.path(), "tight", &[("a", "stage", "s1", 1000.0, &[]), ("b", "stage", "s3", 35.0, &["a"])]);
    let runner = runner(&cluster, &path).await;
    // databelt: nothing but b waits on the push, so the state goes all the
    // way (stopping short would add b's pull), and the SLO is reported missed.
    let report = runner.run(input(&runner, 1, Some(100_000)), &RunOptions::default()).await.unwrap();
    let h = &report.steps[0].result.handoffs[0];
    assert_eq!((h.elected.as_deref(), h.locator.node.as_str()), (Some("s3"), "s3"));
    assert!(h.slo_violated, "{h:?}");
    let read = &report.steps[1].result.inputs[0];
    assert_eq!(read.node.as_str(), "s3");
    assert_eq!(report.local_availability(), 1.0);
    assert!(live_runs(&cluster).is_empty());
    // strict (the paper's rule): never past Tmax — s2, and b reads it there.
    let strict = RunOptions { policy: Policy::Strict, ..RunOptions::default() };
    let report = runner.run(input(&runner, 1, Some(100_000)), &strict).await.unwrap();
    let h = &report.steps[0].result.handoffs[0];
    assert_eq!((h.elected.as_deref(), h.locator.node.as_str()), (Some("s2"), "s2"));
    let read = &report.steps[1].result.inputs[0];
    assert_eq!((read.tier, read.node.as_str()), (ReadTier::Locator, "s2"));
    assert_eq!(report.local_availability(), 0.0);
    assert!(live_runs(&cluster).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_and_fan_in_hand_each_consumer_its_inputs_in_order() {
    let (cluster, dir) = cluster().await;
    let path = workflow(
        dir.path(),
        "fan",
        &[
            ("a", "stage", "s1", 1000.0, &[]),
            ("b", "stage", "s2", 1000.0, &["a"]),
            ("c", "stage", "s3", 1000.0, &["a"]),
            ("d", "merge", "s3", 1000.0, &["b", "c"]),
        ],
    );
    let runner = runner(&cluster, &path).await;
    let report = runner.run(input(&runner, 3, None), &RunOptions::default()).await.unwrap();
    let out = output(&runner, &report, "d");
    assert_eq!(
        out["trail"],
        json!(["fan-a@s1", "fan-b@s2", "fan-a@s1", "fan-c@s3", "fan-d@s3"]),
        "d's input is (b's output, c's output), in `after` order"
    );
    assert_eq!(out["data"].as_array().unwrap().len(), 6);
    // a's output went to two nodes: one hand-off per consumer node.
    let a = &report.steps.iter().find(|l| l.step == "a").unwrap().result;
    let mut consumers: Vec<&str> = a.handoffs.iter().map(|h| h.consumer_node.as_str()).collect();
    consumers.sort();
    assert_eq!(consumers, ["s2", "s3"]);
    let d = &report.steps.iter().find(|l| l.step == "d").unwrap().result;
    assert_eq!(d.inputs.len(), 2);
    assert!(d.inputs.iter().all(|i| i.tier == ReadTier::Local), "{:?}", d.inputs);
    assert!(live_runs(&cluster).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policies_differ_in_where_state_goes_and_after_many_runs_nothing_is_left() {
    let (cluster, dir) = cluster().await;
    let path = workflow(
        dir.path(),
        "pol",
        &[
            ("a", "stage", "s1", 1000.0, &[]),
            ("b", "stage", "s3", 1000.0, &["a"]),
            ("c", "stage", "s2", 1000.0, &["b"]),
        ],
    );
    let runner = runner(&cluster, &path).await;
    let mut availability = Vec::new();
    for round in 0..3 {
        for policy in Policy::ALL {
            let options = RunOptions { policy, ..RunOptions::default() };
            let report = runner.run(input(&runner, 100, Some(20_000)), &options).await.unwrap();
            let out = output(&runner, &report, "c");
            assert_eq!(out["trail"], json!(["pol-a@s1", "pol-b@s3", "pol-c@s2"]), "{policy}");
            if policy == Policy::Stateless {
                // Everything is kept in the cloud, and only there.
                for l in &report.steps {
                    for h in &l.result.handoffs {
                        assert_eq!(h.locator.node, "cloud");
                        assert_eq!(h.copies, ["cloud"]);
                    }
                }
                assert!(report.steps[1..].iter().all(|l| l.result.inputs[0].node == "cloud"));
            }
            if policy == Policy::Random {
                for h in report.steps.iter().flat_map(|l| &l.result.handoffs) {
                    assert!(["s1", "s2", "s3"].contains(&h.locator.node.as_str()), "off the path: {h:?}");
                }
            }
            if round == 0 {
                availability.push((policy, report.local_availability()));
            }
            assert!(report.cleanup.unreachable.is_empty());
        }
    }
    assert_eq!(availability[0], (Policy::Stateless, 0.0));
    assert_eq!(availability[2], (Policy::Databelt, 1.0));
    // Nine runs under three policies: nothing is left behind on any node.
    assert_eq!(live_runs(&cluster), Vec::<(String, Vec<databelt_types::RunId>)>::new());

    // Unless asked to keep it; then it is there until the run is forgotten.
    let options = RunOptions { keep_state: true, run_id: Some("kept-1".parse().unwrap()), ..RunOptions::default() };
    runner.run(input(&runner, 1, None), &options).await.unwrap();
    assert!(!live_runs(&cluster).is_empty());
    for n in &cluster.nodes {
        n.executor.forget_run(&"kept-1".parse().unwrap()).unwrap();
    }
    assert!(live_runs(&cluster).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_elected_node_or_a_dead_placement_service_does_not_stop_the_run() {
    let (mut cluster, dir) = cluster().await;
    let path = workflow(dir.path(), "faults", &[("a", "stage", "s1", 1000.0, &[]), ("b", "stage", "s3", 35.0, &["a"])]);
    let runner = runner(&cluster, &path).await;
    runner.deploy().await.unwrap();

    // s2 (the node a tight SLO elects under the paper's rule) is down: the
    // push fails, the state stays on s1, the locator says s1, and b reads
    // it from there.
    cluster.node_mut("s2").unwrap().stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let strict = RunOptions { policy: Policy::Strict, ..RunOptions::default() };
    let report = runner.run(input(&runner, 1, Some(100_000)), &strict).await.unwrap();
    let h = &report.steps[0].result.handoffs[0];
    assert_eq!(h.elected.as_deref(), Some("s2"));
    assert!(h.push_failed.is_some());
    assert_eq!((h.locator.node.as_str(), h.bytes_moved), ("s1", 0));
    let read = &report.steps[1].result.inputs[0];
    assert_eq!((read.tier, read.node.as_str()), (ReadTier::Locator, "s1"));
    assert_eq!(output(&runner, &report, "b")["trail"], json!(["faults-a@s1", "faults-b@s3"]));
    // The dead node cannot be cleaned; it is reported, the others are.
    assert!(live_runs(&cluster).is_empty());

    // The placement service is down too: hosts elect on their cached
    // topology and the run still completes.
    cluster.stop_placement();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = runner.run(input(&runner, 1, Some(1000)), &RunOptions::default()).await.unwrap();
    let h = &report.steps[0].result.handoffs[0];
    assert!(h.elected_locally, "{h:?}");
    assert_eq!(h.locator.node, "s3");
    assert_eq!(report.local_availability(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_step_requests_are_refused_and_change_nothing() {
    let (cluster, dir) = cluster().await;
    let path = workflow(dir.path(), "bad", &[("a", "stage", "s1", 1000.0, &[]), ("b", "stage", "s2", 1000.0, &["a"])]);
    let runner = runner(&cluster, &path).await;
    runner.deploy().await.unwrap();
    let s1 = cluster.node("s1").unwrap();
    let http = cluster.credentials.client_builder().unwrap().build().unwrap();
    let url = format!("{}/workflow/v1/step", cluster.credentials.base_url(&s1.address));
    let post = |body: Vec<u8>| {
        http.post(&url)
            .header(databelt_net::workflow::capability::CAPABILITY_HEADER, "test capability")
            .body(body)
            .send()
    };

    // Not postcard at all.
    let r = post(b"\xff\xff\xff garbage".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let good = StepRequest {
        run_id: "r-1".parse().unwrap(),
        step: "a".parse().unwrap(),
        function: "bad-a".parse().unwrap(),
        input: StepInput::Inline(input(&runner, 1, None)),
        successors: vec![databelt_net::workflow::protocol::Successor {
            step: "b".parse().unwrap(),
            node: "s2".into(),
            tmax_ms: 100.0,
        }],
        policy: Policy::Databelt,
        ttl_ms: 60_000,
        fusion: true,
        durable: false,
        sole_reader: Vec::new(),
        run_states: Vec::new(),
        fallbacks: Vec::new(),
        deadline_ms: None,
        early_release: false,
        arrival_wait_ms: 0,
    };
    let bad = |f: &dyn Fn(&mut StepRequest)| {
        let mut r = good.clone();
        f(&mut r);
        postcard::to_stdvec(&r).unwrap()
    };
    // A run id the typed API cannot even build: the request's first field
    // (a postcard string: one length byte, then "r-1") rewritten on the wire.
    let with_run_id = |id: &str| {
        let mut body = vec![id.len() as u8];
        body.extend_from_slice(id.as_bytes());
        body.extend_from_slice(&postcard::to_stdvec(&good).unwrap()[4..]);
        body
    };
    assert_eq!(postcard::from_bytes::<StepRequest>(&with_run_id("r-2")).unwrap().run_id, "r-2");
    for (body, status) in [
        (with_run_id("has/slash"), 400),
        (with_run_id(""), 400),
        (bad(&|r| r.function = "nope".parse().unwrap()), 404),
        (bad(&|r| r.successors[0].tmax_ms = -1.0), 400),
        (bad(&|r| r.input = StepInput::Inline(vec![0xff; 3])), 400),
        (
            bad(&|r| {
                r.run_states = vec![databelt_net::continuum::Locator {
                    scope: RUN_SCOPE.into(),
                    key: "another-run/s/k".into(),
                    node: "s1".into(),
                    size_bytes: 1,
                    place: Place::Sandbox,
                }]
            }),
            400,
        ),
    ] {
        let r = post(body).await.unwrap();
        assert_eq!(r.status(), status);
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert!(live_runs(&cluster).is_empty(), "a refused step stored nothing");
    assert_eq!(s1.host.state().list_keys(RUN_SCOPE, "", None, None).unwrap().keys.len(), 0);

    // A handed input that is nowhere: the step fails with a clear error.
    let missing = bad(&|r| {
        r.input = StepInput::Handed(vec![databelt_net::continuum::Locator {
            scope: RUN_SCOPE.into(),
            key: "r-1/zz".into(),
            node: "s3".into(),
            size_bytes: 10,
            place: Place::Store,
        }])
    });
    let r = post(missing).await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("no reachable node"), "{v}");

    // The run endpoint: a bad run id is refused.
    let r = http
        .delete(format!("{}/workflow/v1/runs/bad%2Fid", cluster.credentials.base_url(&s1.address)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// The shipped example: examples/wildfire/wildfire.toml on the paper's
/// testbed (scenarios/paper-testbed.toml, moved to free ports). The real
/// components find the fire tiles the generator planted, every input is read
/// where it runs, and a scene with no fire raises no alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wildfire_example_runs_on_the_paper_testbed() {
    common::guests_dir();
    let root = common::workspace();
    let scenario = std::fs::read_to_string(root.join("scenarios/paper-testbed.toml")).unwrap();
    let mut free = String::new();
    for line in scenario.lines() {
        if line.starts_with("address") {
            free += "address = \"127.0.0.1:0\"\n";
        } else {
            free += line;
            free += "\n";
        }
    }
    let (mut host, dir) = common::temp_config();
    host.backend = BackendConfig::Memory;
    let options = loopback_options(host, dir.path(), Duration::from_secs(10), None);
    let cluster = Cluster::start(Topology::from_toml(&free).unwrap(), options).await.unwrap();
    let runner = runner(&cluster, &root.join("examples/wildfire/wildfire.toml")).await;
    let schema = runner.input_schema().unwrap();

    let scene = schema::json_to_postcard(schema, &json!({"seed": 42, "tiles": 16, "side": 64})).unwrap();
    let report = runner.run(scene.clone(), &RunOptions::default()).await.unwrap();
    let steps: Vec<(&str, &str)> = report.steps.iter().map(|s| (s.step.as_str(), s.result.node.as_str())).collect();
    assert_eq!(steps, [("preprocess", "sat2"), ("mark", "sat4"), ("confirm", "sat6"), ("alarm", "cloud")]);
    let alarm = output(&runner, &report, "alarm");
    assert_eq!(alarm["fire"], json!(true), "{alarm}");
    assert_eq!(alarm["tiles"], json!([0, 7, 14]), "{alarm}");
    assert_eq!(alarm["raised_before"], json!(0));
    assert_eq!(report.local_availability(), 1.0);
    assert_eq!(report.slo_violations, 0);
    // 16 tiles of 64×64 pixels went sat2 → sat4 → sat6.
    assert!(report.bytes_moved > 2 * 16 * 64 * 64, "{}", report.bytes_moved);

    let again = runner.run(scene.clone(), &RunOptions::default()).await.unwrap();
    assert_eq!(output(&runner, &again, "alarm")["raised_before"], json!(1), "the cloud's alarm counter persists");

    let calm = schema::json_to_postcard(schema, &json!({"seed": 1, "tiles": 3, "side": 32})).unwrap();
    let report = runner.run(calm, &RunOptions::default()).await.unwrap();
    let alarm = output(&runner, &report, "alarm");
    assert_eq!(alarm["fire"], json!(false), "plain noise is not a fire: {alarm}");
    assert_eq!(alarm["tiles"], json!([]));

    let huge = schema::json_to_postcard(schema, &json!({"seed": 1, "tiles": 100000, "side": 1000})).unwrap();
    let err = runner.run(huge, &RunOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("pixels"), "{err}");
    assert!(live_runs(&cluster).is_empty(), "{:?}", live_runs(&cluster));
}

/// With link emulation, a hand-off takes the scenario's time: s1 → s3 is two
/// 10 ms hops (± 1 ms) at 40 Mbit/s, so pushing 200 kB costs at least one
/// way of latency and 40 ms of serialisation, and the reader still finds its
/// input locally. The cloud node, behind its 60 ms link, answers a remote
/// read only after a round trip over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emulated_links_move_state_at_the_scenarios_speed() {
    let (mut host, dir) = common::temp_config();
    host.backend = BackendConfig::Memory;
    let options = loopback_options(host, dir.path(), Duration::from_secs(10), Some(Duration::from_millis(50)));
    let cluster = Cluster::start(common::chain_topology(), options).await.unwrap();
    assert!(cluster.emulator.is_some());
    let path = workflow(dir.path(), "slow", &[("a", "stage", "s1", 1000.0, &[]), ("b", "stage", "s3", 1000.0, &["a"])]);
    let runner = runner(&cluster, &path).await;
    let report = runner.run(input(&runner, 10, Some(200_000)), &RunOptions::default()).await.unwrap();
    let h = &report.steps[0].result.handoffs[0];
    assert_eq!(h.locator.node, "s3");
    let floor_ms = 19.0 + 200_000.0 * 8.0 / 40e6 * 1000.0;
    assert!(
        h.micros as f64 / 1000.0 >= floor_ms,
        "hand-off took {} µs, the link allows no less than {floor_ms} ms",
        h.micros
    );
    assert_eq!(report.local_availability(), 1.0);
    // The producer answered early: the runner had a's answer (and started
    // b) before the hand-off was acknowledged; the final answer that came
    // after it carries the hand-off as it ended.
    let a = &report.steps[0];
    assert!(!a.result.pending && h.bytes_moved >= 200_000 && h.copies == ["s3"], "{h:?}");
    assert!(
        a.wall_micros < a.result.read_micros + a.result.invoke_micros + h.micros,
        "the answer ({} µs) waited for the hand-off ({} µs)",
        a.wall_micros,
        h.micros
    );
    assert!(report.steps[1].result.read_micros > 0);

    // Unfused, with the stateless policy: b reads its input from the cloud,
    // a request and a 200 kB answer over s3 → s2 → s1 → cloud (80 ms ± 3 each way).
    let stateless = RunOptions { policy: Policy::Stateless, fusion: Some(false), ..RunOptions::default() };
    let report = runner.run(input(&runner, 10, Some(200_000)), &stateless).await.unwrap();
    let read = &report.steps[1].result.inputs[0];
    assert_eq!((read.tier, read.node.as_str()), (ReadTier::Locator, "cloud"));
    assert!(read.micros >= 2 * 77_000 + 40_000, "read from the cloud took {} µs", read.micros);
    assert!(live_runs(&cluster).is_empty());
}

/// The warm-up scenario: cloud — s1 — s2 — s3 and s3 — cloud, where s1 → s2
/// is slow (10 Mbit/s) and every other link fast, s3 → cloud 80 ms; the
/// chain a (s1) → b (s2) → c (s3) → d (cloud) of stage steps.
async fn warm_up_cluster() -> (std::sync::Arc<Cluster>, Runner, tempfile::TempDir) {
    let mut toml = String::new();
    for id in ["cloud", "s1", "s2", "s3"] {
        let kind = if id == "cloud" { "cloud" } else { "satellite" };
        toml += &format!("[[node]]\nid = \"{id}\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\n");
    }
    for (a, b, lat, mbps) in
        [("cloud", "s1", 60, 1000), ("s1", "s2", 10, 10), ("s2", "s3", 10, 1000), ("s3", "cloud", 80, 1000)]
    {
        toml += &format!(
            "[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {lat}\njitter_ms = 1\nbandwidth_mbps = {mbps}\n"
        );
    }
    let (mut host, dir) = common::temp_config();
    host.backend = BackendConfig::Memory;
    let options = loopback_options(host, dir.path(), Duration::from_secs(20), Some(Duration::from_millis(50)));
    let topology = Topology::from_toml(&toml).unwrap();
    let cluster = std::sync::Arc::new(Cluster::start(topology, options).await.unwrap());
    let path = workflow(
        dir.path(),
        "warm",
        &[
            ("a", "stage", "s1", 5000.0, &[]),
            ("b", "stage", "s2", 5000.0, &["a"]),
            ("c", "stage", "s3", 5000.0, &["b"]),
            ("d", "stage", "cloud", 5000.0, &["c"]),
        ],
    );
    let runner = runner(&cluster, &path).await;
    (cluster, runner, dir)
}

/// At the start of a run, the runner asks the hosts of later steps to
/// connect to their successors' nodes. Here c (on s3) gets its request only
/// after a's 1 MB has crossed the slow s1 → s2 link (b answers early when
/// its own short push starts), and its input arrives ~20 ms later: were s3
/// to connect only then, its hand-off to the cloud, 80 ms away, would find
/// the handshake still under way and open a second connection. Connected
/// at the start, s3's connection is seen before half of a's 1 MB has
/// crossed, and the hand-off uses it. A second run opens nothing new.
/// (Causal order and connection counts, not timing.) Nothing is deployed
/// ahead: the run deploys its steps itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_connect_to_their_successors_nodes_when_the_run_starts() {
    let (cluster, runner, _dir) = warm_up_cluster().await;
    let route = |from: &str, to: &str| cluster.emulator.as_ref().unwrap().route(from, to).unwrap();
    // Malformed and oversize warm requests are refused and open nothing.
    let http = cluster.credentials.client_builder().unwrap().build().unwrap();
    let warm_url = cluster.credentials.base_url(&cluster.node("s3").unwrap().address) + "/workflow/v1/warm";
    let too_many = WarmRequest { policy: Policy::Databelt, nodes: vec!["cloud".to_string(); MAX_WARM_NODES + 1] };
    for body in [vec![0xff; 8], postcard::to_stdvec(&too_many).unwrap()] {
        let r = http.post(&warm_url).body(body).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad-input");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(route("s3", "cloud").connections(), 0);
    let watcher = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let e = cluster.emulator.as_ref().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while e.route("s3", "cloud").unwrap().connections() == 0 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            e.route("s1", "s2").unwrap().bytes_carried().0
        })
    };
    let report = runner.run(input(&runner, 10, Some(1_000_000)), &RunOptions::default()).await.unwrap();
    let crossed_when_connected = watcher.await.unwrap();
    assert!(
        crossed_when_connected < 500_000,
        "s3 connected to the cloud only after {crossed_when_connected} bytes of a's 1 MB had crossed s1 → s2"
    );
    let c = report.steps.iter().find(|s| s.step.as_str() == "c").unwrap();
    assert_eq!(c.result.handoffs[0].locator.node, "cloud", "c's output went to the cloud");
    assert_eq!(route("s3", "cloud").connections(), 1, "the hand-off used the connection opened ahead");

    // Within the freshness window nothing new is opened.
    let carried = route("s3", "cloud").bytes_carried();
    let report = runner.run(input(&runner, 10, Some(1000)), &RunOptions::default()).await.unwrap();
    assert_eq!(report.steps.len(), 4);
    assert_eq!(route("s3", "cloud").connections(), 1, "the pooled connection served the second run");
    assert!(route("s3", "cloud").bytes_carried().0 > carried.0, "the second hand-off crossed it");
    assert!(live_runs(&cluster).is_empty());
}

/// `Runner::deploy` also asks every host to connect to its steps'
/// successors' nodes, the first step's included: each hop of the chain has
/// its connection before any run, and a run started then opens none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_deploy_a_run_finds_every_hop_connected() {
    let (cluster, runner, _dir) = warm_up_cluster().await;
    let hops = [("s1", "s2"), ("s2", "s3"), ("s3", "cloud")];
    let connections =
        || hops.map(|(a, b)| cluster.emulator.as_ref().unwrap().route(a, b).unwrap().connections()).to_vec();
    assert_eq!(connections(), [0, 0, 0]);
    runner.deploy().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connections() != [1, 1, 1] && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(connections(), [1, 1, 1], "every hop connected by the deploy");
    // Each warm-up holds its connection for two round trips (the handshake,
    // then `GET /healthz`), at most ~330 ms here; a hand-off due before
    // that ends opens a second one. Let them end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = runner.run(input(&runner, 10, Some(100_000)), &RunOptions::default()).await.unwrap();
    assert_eq!(report.steps.len(), 4);
    assert_eq!(connections(), [1, 1, 1], "the run's hand-offs used those connections");
    assert!(live_runs(&cluster).is_empty());
}

/// 50 runs at once against 16 instance slots per host (issue 13 §6): the
/// invocations beyond the slots wait in the host's bounded queue instead of
/// failing, so every run succeeds. Prints the p50 and p95 of the runs'
/// end-to-end times (a figure, not an assertion: timing is not tested).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_runs_on_sixteen_slots_all_succeed() {
    let (mut host, dir) = common::temp_config();
    host.backend = BackendConfig::Memory;
    host.max_concurrent_instances = 16;
    let options = loopback_options(host, dir.path(), Duration::from_secs(30), None);
    let cluster = Cluster::start(common::chain_topology(), options).await.unwrap();
    let path = workflow(
        dir.path(),
        "many",
        &[
            ("a", "stage", "s1", 1000.0, &[]),
            ("b", "stage", "s2", 1000.0, &["a"]),
            ("c", "stage", "s3", 1000.0, &["b"]),
        ],
    );
    let runner = std::sync::Arc::new(runner(&cluster, &path).await);
    runner.deploy().await.unwrap();
    let runs: Vec<_> = (0..50)
        .map(|_| {
            let runner = runner.clone();
            tokio::spawn(async move { runner.run(input(&runner, 1000, Some(20_000)), &RunOptions::default()).await })
        })
        .collect();
    let mut totals = Vec::new();
    for run in runs {
        let report = run.await.unwrap().unwrap();
        assert_eq!(report.steps.len(), 3);
        totals.push(report.total_micros as f64 / 1000.0);
    }
    let p = |q| databelt_net::workflow::percentile(&totals, q);
    eprintln!(
        "50 concurrent runs on 16 slots per host: all succeeded; end-to-end p50 {:.1} ms, p95 {:.1} ms",
        p(50.0),
        p(95.0)
    );
    assert_eq!(totals.len(), 50);
    assert!(live_runs(&cluster).is_empty(), "every run cleaned up");
}

/// A handed input whose node cannot be reached for a moment (its route is
/// down, as when a link window closes mid-transfer) is asked for again, a
/// bounded number of times, and read once the route is back; a node that
/// stays unreachable fails the step with `unavailable` after those tries,
/// saying which node could not be asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_whose_node_is_cut_off_for_a_moment_is_asked_for_again_and_read() {
    let (mut host, dir) = common::temp_config();
    host.backend = BackendConfig::Memory;
    // The emulator puts a route taken down by hand back up on its
    // next tick: at most a second later.
    let options = loopback_options(host, dir.path(), Duration::from_secs(10), Some(Duration::from_millis(1000)));
    let mut cluster = Cluster::start(common::chain_topology(), options).await.unwrap();
    let path = workflow(dir.path(), "cut", &[("a", "stage", "s3", 1000.0, &[]), ("b", "stage", "s1", 1000.0, &["a"])]);
    let runner = runner(&cluster, &path).await;
    runner.deploy().await.unwrap();
    let value = input(&runner, 10, None);
    let ttl = databelt_host::state::SetOptions { ttl_ms: Some(60_000), if_not_exists: false };
    let s3 = cluster.node("s3").unwrap();
    for run in ["r-1", "r-2"] {
        s3.host.state().set(RUN_SCOPE, format!("{run}/a"), value.clone(), ttl).unwrap();
    }
    let request = |run: &str| StepRequest {
        run_id: run.parse().unwrap(),
        step: "b".parse().unwrap(),
        function: "cut-b".parse().unwrap(),
        input: StepInput::Handed(vec![databelt_net::continuum::Locator {
            scope: RUN_SCOPE.into(),
            key: format!("{run}/a"),
            node: "s3".into(),
            size_bytes: value.len() as u64,
            place: Place::Store,
        }]),
        successors: Vec::new(),
        policy: Policy::Databelt,
        ttl_ms: 60_000,
        fusion: false,
        durable: false,
        sole_reader: Vec::new(),
        run_states: Vec::new(),
        fallbacks: Vec::new(),
        deadline_ms: None,
        early_release: false,
        arrival_wait_ms: 0,
    };

    // Down right after a tick of the emulator put it back up: it stays down
    // for about a second, past the first two tries (50 and 300 ms).
    let route = cluster.emulator.as_ref().unwrap().route("s1", "s3").unwrap();
    route.set_up(false);
    while !route.is_up() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    route.set_up(false);
    let s1 = cluster.node("s1").unwrap();
    for run in ["r-1", "r-2"] {
        s1.executor.continuum().peers().carry(&run.parse().unwrap(), "test capability");
    }
    let t = std::time::Instant::now();
    let result = s1.executor.execute(request("r-1")).await.unwrap();
    let took = t.elapsed();
    let read = &result.inputs[0];
    assert_eq!((read.tier, read.node.as_str()), (ReadTier::Locator, "s3"), "{read:?}");
    assert!(took >= Duration::from_millis(300), "the first tries found the route down; took {took:?}");
    assert!(route.is_up());
    assert_eq!(s3.host.state().get(RUN_SCOPE, "r-1/a").unwrap(), Some(value.clone()), "the read moved nothing");

    // A node that stays unreachable: the step fails after the bounded tries.
    cluster.node_mut("s3").unwrap().stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    let err = cluster.node("s1").unwrap().executor.execute(request("r-2")).await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.kind(), databelt_host::ErrorKind::Unavailable, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("no reachable node")
            && message.contains("could not be asked (4 tries)")
            && message.contains("127.0.0.1"),
        "{message}"
    );
    assert!(took >= Duration::from_millis(1300) && took < Duration::from_secs(10), "bounded tries took {took:?}");
}
