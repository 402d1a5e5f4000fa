//! State fusion on real hosts on loopback: a run's steps on one host share
//! an in-memory sandbox (no store writes, no network for a local hand-off),
//! declared run-scope keys held elsewhere come as one batch per source node,
//! the states a step hands on go as one batch per destination, and a run's
//! sandbox is visible to that run only and dropped when it ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::live_runs;

use std::path::Path;

use databelt_host::schema;
use databelt_net::continuum::Policy;
use databelt_net::workflow::protocol::{RUN_SCOPE, StepInput, StepRequest, StepResult};
use databelt_net::workflow::{RunOptions, RunReport, Runner};
use databelt_testbed::Cluster;
use serde_json::{Value, json};

/// A run id from a literal.
fn rid(id: &str) -> databelt_types::RunId {
    databelt_types::RunId::new(id).unwrap()
}

fn plan(runner: &Runner, write: u32, size: u32, read: u32) -> Vec<u8> {
    let v = json!({"write": write, "first": 0, "next_write": 0, "size": size, "read": read, "found": 0, "bytes": 0, "trail": []});
    schema::json_to_postcard(runner.input_schema().unwrap(), &v).unwrap()
}

fn output(runner: &Runner, report: &RunReport, step: &str) -> Value {
    let (_, bytes) = report.outputs.iter().find(|(s, _)| s == step).expect("output");
    schema::postcard_to_json(runner.output_schema(step).unwrap(), bytes).unwrap()
}

fn step<'a>(report: &'a RunReport, name: &str) -> &'a StepResult {
    &report.steps.iter().find(|l| l.step == name).expect("step").result
}

fn fan_workflow(dir: &Path, name: &str, fusion: bool, steps: &[(&str, &str, f64, &[&str])]) -> std::path::PathBuf {
    let steps: Vec<(&str, &str, &str, f64, &[&str])> =
        steps.iter().map(|(s, node, tmax, after)| (*s, "fan", *node, *tmax, *after)).collect();
    common::write_workflow(dir, name, &format!("fusion = {fusion}"), &steps)
}

fn store_keys(cluster: &Cluster, node: &str) -> usize {
    let n = cluster.nodes.iter().find(|n| n.id == node).unwrap();
    n.host.state().list_keys(RUN_SCOPE, "", None, None).unwrap().keys.len()
}

/// Three steps on one host: the states written by the first are read by
/// the last; with fusion nothing touches the store or the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fused_local_hand_off_makes_no_store_writes_and_no_remote_requests() {
    let (cluster, dir) = common::chain_cluster().await;
    for fusion in [true, false] {
        let path = fan_workflow(
            dir.path(),
            &format!("local-{fusion}"),
            fusion,
            &[("w", "s2", 1000.0, &[]), ("m", "s2", 1000.0, &["w"]), ("r", "s2", 1000.0, &["m"])],
        );
        let runner = common::runner(&cluster, &path).await;
        // w writes 3 states of 64 KiB; r reads them.
        let keep = RunOptions { keep_state: true, ..RunOptions::default() };
        let first = runner.run(plan(&runner, 3, 65_536, 0), &keep).await.unwrap();
        assert_eq!(first.fusion, fusion);
        assert_eq!(store_keys(&cluster, "s2") > 0, !fusion, "fusion {fusion}: states in the store?");
        assert_eq!(live_runs(&cluster).len(), 1, "{:?}", live_runs(&cluster));
        let report = runner.run(plan(&runner, 3, 65_536, 3), &RunOptions::default()).await.unwrap();
        let out = output(&runner, &report, "r");
        assert_eq!((out["found"].clone(), out["bytes"].clone()), (json!(3), json!(3 * 65_536)), "{out}");
        assert_eq!(report.local_availability(), 1.0);
        let c = report.counters;
        assert_eq!(c.remote_requests, 0, "fusion {fusion}: {c:?}");
        if fusion {
            assert_eq!(c.store_ops, 0, "no store operation at all: {c:?}");
            assert!(c.sandbox_ops >= 3 + 3, "{c:?}");
            assert_eq!(step(&report, "w").handoffs[0].states, 4, "output + 3 run states as one group");
        } else {
            assert_eq!(c.sandbox_ops, 0, "{c:?}");
            // 3 run-state writes + 3 reads + 2 outputs stored + 2 read back.
            assert!(c.store_ops >= 10, "{c:?}");
        }
        // The kept run is still there; the finished one left nothing.
        assert_eq!(live_runs(&cluster).len(), 1);
        let node = cluster.nodes.iter().find(|n| n.id == "s2").unwrap();
        node.executor.forget_run(&first.run_id).unwrap();
        assert!(live_runs(&cluster).is_empty(), "{:?}", live_runs(&cluster));
        assert_eq!(store_keys(&cluster, "s2"), 0);
    }
    // Durability asked for: fused, and every handed-on state written through
    // to the store as well.
    let steps: Vec<(&str, &str, &str, f64, &[&str])> =
        vec![("w", "fan", "s2", 1000.0, &[]), ("r", "fan", "s2", 1000.0, &["w"])];
    let path = common::write_workflow(dir.path(), "durable", "durable = true", &steps);
    let runner = common::runner(&cluster, &path).await;
    let keep = RunOptions { keep_state: true, ..RunOptions::default() };
    let report = runner.run(plan(&runner, 2, 1000, 0), &keep).await.unwrap();
    assert!(report.fusion);
    assert_eq!(report.counters.remote_requests, 0);
    assert_eq!(store_keys(&cluster, "s2"), 3, "w's output and its 2 states are durable");
    cluster.nodes.iter().find(|n| n.id == "s2").unwrap().executor.forget_run(&report.run_id).unwrap();
    assert_eq!(store_keys(&cluster, "s2"), 0);
}

/// B = 1..5 states written on s1 travel to s2 with w's output; r on s3
/// declared them, so its host fetches them before r starts: one request for
/// all B with fusion, B requests without.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_retrieval_is_one_request_per_source_node_and_offload_one_per_destination() {
    let (cluster, dir) = common::chain_cluster().await;
    for fusion in [true, false] {
        let path = fan_workflow(
            dir.path(),
            &format!("group-{fusion}"),
            fusion,
            &[("w", "s1", 1000.0, &[]), ("m", "s2", 1000.0, &["w"]), ("r", "s3", 1000.0, &["m"])],
        );
        let runner = common::runner(&cluster, &path).await;
        for b in 1..=5u32 {
            let report = runner.run(plan(&runner, b, 10_000, b), &RunOptions::default()).await.unwrap();
            let out = output(&runner, &report, "r");
            assert_eq!(out["found"], json!(b), "fusion {fusion}, B = {b}: {out}");
            assert_eq!(
                out["trail"],
                json!([format!("group-{fusion}-w@s1"), format!("group-{fusion}-m@s2"), format!("group-{fusion}-r@s3")])
            );
            // Offload: w's output and its B states went to s2.
            let w = step(&report, "w");
            assert_eq!(w.handoffs.len(), 1);
            assert_eq!(w.handoffs[0].locator.node, "s2");
            let expected_pushes = if fusion { 1 } else { 1 + u64::from(b) };
            assert_eq!(w.counters.remote_requests, expected_pushes, "fusion {fusion}, B = {b}: {:?}", w.counters);
            assert_eq!(w.handoffs[0].states, if fusion { 1 + u64::from(b) } else { 1 });
            // Retrieval: r's input was moved to s3 already (local); the B
            // declared states were on s2.
            let r = step(&report, "r");
            assert_eq!(r.prefetched, u64::from(b));
            assert_eq!(r.inputs[0].node, "s3");
            let expected_fetches = if fusion { 1 } else { u64::from(b) };
            assert_eq!(r.counters.remote_requests, expected_fetches, "fusion {fusion}, B = {b}: {:?}", r.counters);
            assert_eq!(r.counters.remote_bytes, u64::from(b) * 10_000);
            assert!(live_runs(&cluster).is_empty(), "{:?}", live_runs(&cluster));
        }
    }
}

/// States on two nodes: `w1@s1` writes s0, s1 and they stay there (its
/// successor's SLO is 0 and the `strict` policy keeps states that miss
/// their SLO); `w2@s2` writes s2..s4, which stay on s2 the same way; `r@s3` declared s0..s4: its host fetches them
/// with one request per source node when fused, one per state otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declared_states_on_two_nodes_take_one_request_per_node() {
    let (cluster, dir) = common::chain_cluster().await;
    for fusion in [true, false] {
        let path = fan_workflow(
            dir.path(),
            &format!("two-{fusion}"),
            fusion,
            &[("w1", "s1", 1000.0, &[]), ("w2", "s2", 0.0, &["w1"]), ("r", "s3", 0.0, &["w2"])],
        );
        let runner = common::runner(&cluster, &path).await;
        // Every step reads s0..s4 (w1 and w2 find what exists by then).
        let v = json!({"write": 2, "first": 0, "next_write": 3, "size": 5000, "read": 5, "found": 0, "bytes": 0, "trail": []});
        let input = schema::json_to_postcard(runner.input_schema().unwrap(), &v).unwrap();
        let report = runner.run(input, &RunOptions { policy: Policy::Strict, ..RunOptions::default() }).await.unwrap();
        let out = output(&runner, &report, "r");
        assert_eq!((out["found"].clone(), out["bytes"].clone()), (json!(5), json!(5 * 5000)), "fusion {fusion}: {out}");
        let w1 = step(&report, "w1");
        assert_eq!(w1.handoffs[0].locator.node, "s1", "w2's SLO of 0 ms keeps w1's output and states on s1");
        let r = step(&report, "r");
        assert_eq!(r.prefetched, 5);
        // The input: one read from s2. The states: s0, s1 from s1, s2..s4 from s2.
        let expected = if fusion { 1 + 2 } else { 1 + 5 };
        assert_eq!(r.counters.remote_requests, expected, "fusion {fusion}: {:?}", r.counters);
        assert!(live_runs(&cluster).is_empty(), "{:?}", live_runs(&cluster));
    }
}

/// Two runs on the same hosts at once: neither sees the other's run scope,
/// a run's sandbox is gone when it ends, and a plain invocation (no
/// workflow) gets a run scope of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runs_sandbox_is_visible_to_that_run_only_and_dropped_at_its_end() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = fan_workflow(dir.path(), "iso", true, &[("w", "s1", 1000.0, &[]), ("r", "s1", 1000.0, &["w"])]);
    let runner = common::runner(&cluster, &path).await;
    let keep = RunOptions { keep_state: true, ..RunOptions::default() };
    // Run A writes s0..s3 and keeps its state.
    let a = runner.run(plan(&runner, 4, 100, 0), &keep).await.unwrap();
    let s1 = cluster.nodes.iter().find(|n| n.id == "s1").unwrap();
    let sandbox = s1.host.sandboxes().get(&a.run_id).unwrap().expect("run A's sandbox");
    assert!(!sandbox.is_empty().unwrap());
    // Run B, on the same host, reads s0..s3 first: it finds none of A's.
    let b = runner.run(plan(&runner, 0, 0, 4), &RunOptions::default()).await.unwrap();
    assert_eq!(output(&runner, &b, "r")["found"], json!(0));
    assert!(s1.host.sandboxes().get(&b.run_id).unwrap().is_none(), "run B's sandbox is dropped");
    assert!(s1.host.sandboxes().get(&a.run_id).unwrap().is_some(), "run A's is untouched");
    // A peer asking for A's states under another run id gets nothing.
    let peers = databelt_net::peer::PeerClient::new(
        &s1.security.client,
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let key = format!("{}/s/s0", a.run_id);
    let sandbox_get = |run: databelt_types::RunId| {
        let (peers, address, key) = (peers.clone(), s1.address.clone(), key.clone());
        async move { peers.get_from(&address, &run, databelt_net::peer::Place::Sandbox, RUN_SCOPE, &key).await }
    };
    // Even a node of the continuum needs a run's capability for its state
    // (issue 13 §3): without one, 401; with another run's, 403; under
    // another run id (with that run's capability), nothing of A's.
    let e = sandbox_get(a.run_id.clone()).await.unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::Unauthenticated, "{e}");
    peers.carry(&a.run_id, &runner.capability(&b.run_id));
    let e = sandbox_get(a.run_id.clone()).await.unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::AccessDenied, "{e}");
    let other = rid("someone-else");
    peers.carry(&other, "someone else's own capability");
    assert_eq!(sandbox_get(other).await.unwrap(), None);
    peers.carry(&a.run_id, &runner.capability(&a.run_id));
    assert_eq!(sandbox_get(a.run_id.clone()).await.unwrap(), Some(vec![0u8; 100]));
    // A malformed sandbox header is refused and changes nothing.
    let node = &s1.security.client;
    let r = node
        .client_builder()
        .unwrap()
        .build()
        .unwrap()
        .put(format!("{}/peer/v1/state/{RUN_SCOPE}/{}%2Fs%2Fs9", node.base_url(&s1.address), a.run_id))
        .header("x-databelt-run-id", a.run_id.as_str())
        .header("x-databelt-sandbox", "yes")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let s9 = format!("{}/s/s9", a.run_id);
    assert_eq!(sandbox.tier().get(RUN_SCOPE, &s9).unwrap(), None);
    assert_eq!(s1.host.state().get(RUN_SCOPE, &s9).unwrap(), None);
    s1.executor.forget_run(&a.run_id).unwrap();
    assert!(s1.host.sandboxes().get(&a.run_id).unwrap().is_none());

    // A plain invocation has a run scope for itself alone.
    s1.host.deploy_file("fan-plain", &common::guest("fan")).unwrap();
    let input = plan(&runner, 2, 10, 2);
    let out = s1.host.invoke("fan-plain", &input, Default::default()).unwrap();
    assert_eq!(out.run_written, ["s0", "s1"]);
    assert_eq!(out.state_ops.sandbox_ops, 4, "2 reads (nothing there yet) + 2 writes");
    assert_eq!(out.state_ops.store_ops, 0);
}

/// A forged step request with `ttl_ms = 0` used to make its host drop every
/// other run's idle sandbox. Now a sandbox's idle TTL is fixed when it is
/// created and a timer sweeps it: the forged run's own sandbox goes, the
/// kept run's stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_zero_ttl_cannot_drop_another_runs_sandbox() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = fan_workflow(dir.path(), "kept", true, &[("w", "s2", 1000.0, &[]), ("r", "s3", 1000.0, &["w"])]);
    let runner = common::runner(&cluster, &path).await;
    let keep = RunOptions { keep_state: true, ..RunOptions::default() };
    let kept = runner.run(plan(&runner, 2, 1000, 0), &keep).await.unwrap();
    let before = live_runs(&cluster);
    assert!(!before.is_empty());

    // The forged step: a valid request for another run, ttl 0, on s2.
    let s2 = cluster.node("s2").unwrap();
    let forged = StepRequest {
        run_id: rid("forged"),
        step: "w".parse().unwrap(),
        function: databelt_types::FunctionName::for_step("kept", "w"),
        input: StepInput::Inline(plan(&runner, 1, 10, 0)),
        successors: Vec::new(),
        policy: Policy::Databelt,
        ttl_ms: 0,
        fusion: true,
        durable: false,
        sole_reader: Vec::new(),
        run_states: Vec::new(),
        fallbacks: Vec::new(),
        deadline_ms: None,
        early_release: false,
        arrival_wait_ms: 0,
    };
    // Sent by a node of the continuum: authenticated, and still harmless.
    let node = &s2.security.client;
    let r = node
        .client_builder()
        .unwrap()
        .build()
        .unwrap()
        .post(format!("{}/workflow/v1/step", node.base_url(&s2.address)))
        .header(databelt_net::workflow::capability::CAPABILITY_HEADER, "forger's own capability")
        .body(postcard::to_stdvec(&forged).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Two sweeps of the host's timer (every second by default).
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(live_runs(&cluster), before, "the kept run's sandboxes are all still there");
    assert!(s2.host.sandboxes().get(&rid("forged")).unwrap().is_none(), "the forged run's own sandbox went");

    // A client (even an admin) that knows the kept run's id but not its
    // capability can neither run a step in it nor delete it (issue 13 §3).
    let user = cluster.credentials.client_builder().unwrap().build().unwrap();
    let steal = StepRequest { run_id: kept.run_id.clone(), ..forged.clone() };
    let r = user
        .post(format!("{}/workflow/v1/step", cluster.credentials.base_url(&s2.address)))
        .header(databelt_net::workflow::capability::CAPABILITY_HEADER, "a guess")
        .body(postcard::to_stdvec(&steal).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for node in &cluster.nodes {
        let url = format!("{}/workflow/v1/runs/{}", cluster.credentials.base_url(&node.address), kept.run_id);
        let r = user.delete(&url).header(databelt_net::workflow::capability::CAPABILITY_HEADER, "a guess").send();
        assert!(matches!(r.await.unwrap().status().as_u16(), 403 | 200), "403 where the run is bound");
    }
    assert_eq!(live_runs(&cluster), before, "the kept run's sandboxes are all still there");
    for node in &cluster.nodes {
        node.executor.forget_run(&kept.run_id).unwrap();
    }
    assert!(live_runs(&cluster).is_empty());
}
