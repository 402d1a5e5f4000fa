//! Real components on a real host: every state call, the workflow context,
//! hand-offs, and every bad input the host must refuse cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use common::probe::{Op, Reply};
use common::{guest, memory_host, temp_config};
use databelt_host::{Error, Host, InvokeOptions};

fn s(x: &str) -> String {
    x.to_string()
}

fn call(host: &Host, op: &Op) -> Result<Reply, Error> {
    call_as(host, "probe", op)
}

fn call_as(host: &Host, name: &str, op: &Op) -> Result<Reply, Error> {
    let input = postcard::to_allocvec(op).unwrap();
    let out = host.invoke(name, &input, InvokeOptions::default())?;
    Ok(postcard::from_bytes(&out.output).unwrap())
}

fn probe_host() -> Host {
    let host = memory_host();
    host.deploy_file("probe", &guest("kv_probe")).unwrap();
    host
}

fn set(key: &str, value: &[u8]) -> Op {
    Op::Set { scope: s("t"), key: s(key), value: value.to_vec(), ttl_ms: None, if_not_exists: false }
}

fn get(key: &str) -> Op {
    Op::Get { scope: s("t"), key: s(key) }
}

/// The host still serves after a failure: a write and a read succeed.
fn assert_still_serving(host: &Host) {
    call(host, &set("alive", b"yes")).unwrap();
    assert_eq!(call(host, &get("alive")).unwrap(), Reply::Value(Some(b"yes".to_vec())));
}

#[test]
fn every_state_call_through_a_component() {
    let host = probe_host();
    assert_eq!(call(&host, &get("a")).unwrap(), Reply::Value(None));
    assert_eq!(call(&host, &set("a", b"1")).unwrap(), Reply::Done);
    assert_eq!(call(&host, &get("a")).unwrap(), Reply::Value(Some(b"1".to_vec())));
    assert_eq!(call(&host, &Op::Exists { scope: s("t"), key: s("a") }).unwrap(), Reply::Bool(true));
    let e =
        call(&host, &Op::Set { scope: s("t"), key: s("a"), value: b"2".to_vec(), ttl_ms: None, if_not_exists: true })
            .unwrap_err();
    assert!(e.to_string().contains("precondition-failed"), "{e}");

    let entries = (0..5).map(|i| (format!("k/{i}"), vec![i as u8])).collect();
    call(&host, &Op::SetMany { scope: s("t"), entries }).unwrap();
    let page = call(&host, &Op::ListKeys { scope: s("t"), prefix: s("k/"), cursor: None, limit: Some(3) }).unwrap();
    let Reply::Keys { keys, cursor } = page else { panic!("{page:?}") };
    assert_eq!(keys, vec!["k/0", "k/1", "k/2"]);
    let rest = call(&host, &Op::ListKeys { scope: s("t"), prefix: s("k/"), cursor, limit: Some(3) }).unwrap();
    assert_eq!(rest, Reply::Keys { keys: vec![s("k/3"), s("k/4")], cursor: None });
    let many = call(&host, &Op::GetMany { scope: s("t"), keys: vec![s("k/1"), s("nope"), s("k/4")] }).unwrap();
    assert_eq!(many, Reply::Values(vec![Some(vec![1]), None, Some(vec![4])]));
    call(&host, &Op::DeleteMany { scope: s("t"), keys: vec![s("k/1"), s("k/4")] }).unwrap();
    let many = call(&host, &Op::GetMany { scope: s("t"), keys: vec![s("k/1"), s("k/2")] }).unwrap();
    assert_eq!(many, Reply::Values(vec![None, Some(vec![2])]));
    call(&host, &Op::Delete { scope: s("t"), key: s("a") }).unwrap();
    assert_eq!(call(&host, &get("a")).unwrap(), Reply::Value(None));

    assert_eq!(call(&host, &Op::Increment { scope: s("t"), key: s("c"), delta: 40 }).unwrap(), Reply::Count(40));
    assert_eq!(call(&host, &Op::Increment { scope: s("t"), key: s("c"), delta: 2 }).unwrap(), Reply::Count(42));
    // The documented encoding: 8-byte little-endian s64.
    assert_eq!(call(&host, &get("c")).unwrap(), Reply::Value(Some(42i64.to_le_bytes().to_vec())));
    // The host sees what the guest wrote.
    assert_eq!(host.state().get("t", "c").unwrap(), Some(42i64.to_le_bytes().to_vec()));
}

#[test]
fn compare_and_swap_through_a_component() {
    let host = probe_host();
    let cas = |expected: Option<Vec<u8>>, v: &[u8]| {
        call(&host, &Op::Cas { scope: s("t"), key: s("x"), expected, value: v.to_vec() }).unwrap()
    };
    let Reply::Swapped(v1) = cas(None, b"a") else { panic!() };
    // Absent expected, present key: stale with the current entry.
    let Reply::Stale(Some((cur, v1b))) = cas(None, b"b") else { panic!() };
    assert_eq!(v1b, v1);
    assert!(cur.ends_with(b"a"));
    let Reply::Swapped(v2) = cas(Some(v1.clone()), b"c") else { panic!() };
    assert_ne!(v1, v2);
    assert!(matches!(cas(Some(v1), b"d"), Reply::Stale(Some(_))));
    assert_eq!(call(&host, &Op::GetVersion { scope: s("t"), key: s("x") }).unwrap(), Reply::Version(Some(v2)));
}

#[test]
fn context_and_hand_off_chain() {
    let host = probe_host();
    host.deploy_file("second", &guest("kv_probe")).unwrap();
    let next = postcard::to_allocvec(&Op::Context).unwrap();
    let input = postcard::to_allocvec(&Op::HandOff { successor: s("second"), next }).unwrap();
    let out = host
        .invoke("probe", &input, InvokeOptions { run_id: Some("run-7".parse().unwrap()), ..Default::default() })
        .unwrap();
    assert_eq!(out.function, "second");
    assert_eq!(out.steps.len(), 2);
    let reply: Reply = postcard::from_bytes(&out.output).unwrap();
    assert_eq!(reply, Reply::Context { run_id: s("run-7"), function: s("second"), step: 1, node_id: s("local") });

    let e = call(&host, &Op::HandOff { successor: s("ghost"), next: vec![] }).unwrap_err();
    assert!(e.to_string().contains("ghost"), "{e}");
    let next = postcard::to_allocvec(&Op::Context).unwrap();
    let e = call(&host, &Op::HandOffTwice { successor: s("second"), next }).unwrap_err();
    assert!(e.to_string().contains("quota-exceeded"), "{e}");
    // A hand-off whose input does not fit the successor is refused before it runs.
    let e = call(&host, &Op::HandOff { successor: s("second"), next: vec![0xff, 0xff, 0xff] }).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e}");
}

#[test]
fn endless_hand_off_chains_stop_at_the_limit() {
    let host = probe_host();
    // An op that hands itself on forever.
    let mut next = postcard::to_allocvec(&Op::Context).unwrap();
    for _ in 0..40 {
        next = postcard::to_allocvec(&Op::HandOff { successor: s("probe"), next }).unwrap();
    }
    let e = host.invoke("probe", &next, InvokeOptions::default()).unwrap_err();
    assert!(matches!(e, Error::TooManySteps(32)), "{e}");
}

#[test]
fn not_wasm_is_refused() {
    let host = probe_host();
    let e = host.deploy("junk", b"this is not wasm at all").unwrap_err();
    assert!(matches!(e, Error::InvalidComponent(_)), "{e}");
    let e = host.deploy("junk", b"\0asm\x0d\x00\x01\x00garbage").unwrap_err();
    assert!(matches!(e, Error::InvalidComponent(_)), "{e}");
    assert!(host.function("junk").is_err(), "nothing deployed");
    assert_still_serving(&host);
}

#[test]
fn core_module_is_refused() {
    let host = probe_host();
    // The smallest valid core module: header only.
    let e = host.deploy("core", b"\0asm\x01\x00\x00\x00").unwrap_err();
    assert!(matches!(e, Error::CoreModule), "{e}");
    assert!(e.to_string().contains("wasm32-wasip2"), "the error says how to fix it: {e}");
    assert_still_serving(&host);
}

#[test]
fn component_of_another_world_is_refused() {
    let host = probe_host();
    let e = host.deploy_file("other", &guest("bench_min")).unwrap_err();
    assert!(matches!(e, Error::WrongWorld(_)), "{e}");
    assert!(host.function("other").is_err());
    assert_still_serving(&host);
}

#[test]
fn redeploy_failure_keeps_the_old_function() {
    let host = probe_host();
    assert!(host.deploy("probe", b"nope").is_err());
    assert_still_serving(&host);
}

#[test]
fn trapping_guest_reports_a_trap() {
    let host = probe_host();
    let e = call(&host, &Op::Trap).unwrap_err();
    assert!(matches!(e, Error::Trap(_)), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");
    // The guest's own panic message and where it panicked, not `unreachable`.
    assert!(e.to_string().contains("the function panicked: deliberate trap (at "), "{e}");
    assert!(e.to_string().contains("src/lib.rs:"), "{e}");
    assert_still_serving(&host);
}

#[test]
fn sdk_counter_helpers_meet_increment_and_a_typed_read_of_a_counter_fails_clearly() {
    let host = probe_host();
    let reply = call(&host, &Op::CounterHelpers { scope: s("t"), key: s("c") }).unwrap();
    let Reply::Counters { incremented, read, typed } = reply else { panic!("{reply:?}") };
    assert_eq!((incremented, read), (7, 7));
    let err = typed.unwrap_err();
    assert!(err.contains("is it a counter") && err.contains("Scope::counter"), "{err}");
    assert_eq!(host.state().get("t", "c").unwrap(), Some(7i64.to_le_bytes().to_vec()));
}

#[test]
fn a_stack_overflow_is_called_so() {
    let host = probe_host();
    let e = call(&host, &Op::Recurse).unwrap_err();
    assert!(matches!(e, Error::Trap(_)), "{e}");
    assert!(e.to_string().contains("stack overflow"), "{e}");
    assert_still_serving(&host);
}

#[test]
fn writes_before_a_trap_stay_and_are_documented_so() {
    // Each state call is atomic on its own; an invocation is not a transaction.
    let host = probe_host();
    let e = call(&host, &Op::WriteThenTrap { scope: s("t"), key: s("w") }).unwrap_err();
    assert!(matches!(e, Error::Trap(_)), "{e}");
    assert_eq!(host.state().get("t", "w").unwrap(), Some(b"written".to_vec()));
}

#[test]
fn looping_guest_is_stopped_at_the_deadline() {
    let host = probe_host();
    let started = std::time::Instant::now();
    let e = call(&host, &Op::Loop).unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded(500)), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "stopped, not hung");
    assert_still_serving(&host);
}

#[test]
fn memory_hungry_guest_hits_the_limit() {
    let host = probe_host();
    let e = call(&host, &Op::Alloc { mib: 64 }).unwrap_err();
    assert!(matches!(e, Error::MemoryLimitExceeded(_)), "{e}");
    // Under the limit works.
    assert_eq!(call(&host, &Op::Alloc { mib: 4 }).unwrap(), Reply::Count(4 * 1024 * 1024));
    assert_still_serving(&host);
}

#[test]
fn malformed_postcard_input_is_refused_before_the_guest_runs() {
    let host = probe_host();
    let e = host.invoke("probe", &[0xff, 0xff, 0xff, 0xff], InvokeOptions::default()).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e}");
    // Without host-side validation the guest's own decoder refuses it.
    let opts = InvokeOptions { validate_input: false, ..Default::default() };
    let e = host.invoke("probe", &[0xff, 0xff, 0xff, 0xff], opts).unwrap_err();
    assert!(matches!(&e, Error::Function(m) if m.contains("malformed input")), "{e}");
    assert_still_serving(&host);
}

#[test]
fn oversize_keys_and_values_are_quota_exceeded_and_write_nothing() {
    let host = probe_host();
    let big_key = "k".repeat(513);
    let e = call(&host, &set(&big_key, b"v")).unwrap_err();
    assert!(e.to_string().contains("quota-exceeded"), "{e}");
    let mut config = temp_config().0;
    config.limits.max_value_bytes = 1024;
    config.backend = databelt_host::BackendConfig::Memory;
    let small = Host::new(config).unwrap();
    small.deploy_file("probe", &guest("kv_probe")).unwrap();
    let e = call(&small, &set("v", &[7u8; 1025])).unwrap_err();
    assert!(e.to_string().contains("quota-exceeded") && e.to_string().contains("1024"), "{e}");
    assert_eq!(small.state().get("t", "v").unwrap(), None, "nothing written");
    assert_still_serving(&small);
}

#[test]
fn failing_batch_writes_nothing() {
    let host = probe_host();
    let too_long = "k".repeat(600);
    let entries = vec![(s("ok1"), vec![1]), (too_long, vec![2]), (s("ok2"), vec![3])];
    let e = call(&host, &Op::SetMany { scope: s("t"), entries }).unwrap_err();
    assert!(e.to_string().contains("quota-exceeded"), "{e}");
    let many = call(&host, &Op::GetMany { scope: s("t"), keys: vec![s("ok1"), s("ok2")] }).unwrap();
    assert_eq!(many, Reply::Values(vec![None, None]));
    let too_many: Vec<(String, Vec<u8>)> = (0..257).map(|i| (format!("b{i}"), vec![])).collect();
    let e = call(&host, &Op::SetMany { scope: s("t"), entries: too_many }).unwrap_err();
    assert!(e.to_string().contains("quota-exceeded"), "{e}");
    assert_eq!(call(&host, &get("b0")).unwrap(), Reply::Value(None));
    assert_still_serving(&host);
}

#[test]
fn bad_scope_names_and_policy() {
    let host = probe_host();
    let e = call(&host, &Op::Get { scope: s("no spaces"), key: s("k") }).unwrap_err();
    assert!(e.to_string().contains("no-such-scope"), "{e}");
    let (mut config, _d) = temp_config();
    config.backend = databelt_host::BackendConfig::Memory;
    config.allowed_scopes = Some(vec![s("t")]);
    let strict = Host::new(config).unwrap();
    strict.deploy_file("probe", &guest("kv_probe")).unwrap();
    let e = call(&strict, &Op::Get { scope: s("secret"), key: s("k") }).unwrap_err();
    assert!(e.to_string().contains("access-denied"), "{e}");
    assert_still_serving(&strict);
}

#[test]
fn guests_cannot_open_host_reserved_scopes() {
    use databelt_host::state::SetOptions;
    // No allow-list at all: every ordinary scope is open, `databelt.*` is not.
    let host = probe_host();
    host.state().set("databelt.runs", "run-1/a", b"handed-on state".to_vec(), SetOptions::default()).unwrap();
    for op in [
        Op::Get { scope: s("databelt.runs"), key: s("run-1/a") },
        Op::Set {
            scope: s("databelt.runs"),
            key: s("run-1/a"),
            value: b"forged".to_vec(),
            ttl_ms: None,
            if_not_exists: false,
        },
        Op::Delete { scope: s("databelt.anything"), key: s("k") },
        // The prefix is reserved in any case.
        Op::Set { scope: s("Databelt.runs"), key: s("k"), value: b"x".to_vec(), ttl_ms: None, if_not_exists: false },
        Op::Increment { scope: s("DATABELT.counters"), key: s("k"), delta: 1 },
    ] {
        let e = call(&host, &op).unwrap_err();
        assert!(e.to_string().contains("access-denied"), "{e}");
    }
    let kept = host.state().get("databelt.runs", "run-1/a").unwrap();
    assert_eq!(kept, Some(b"handed-on state".to_vec()), "the guest changed nothing");
    assert_eq!(host.state().get("Databelt.runs", "k").unwrap(), None);
    assert_eq!(host.state().get("DATABELT.counters", "k").unwrap(), None);
    assert_still_serving(&host);
}

#[test]
fn state_survives_a_host_restart() {
    let (config, _dir) = temp_config();
    {
        let host = Host::new(config.clone()).unwrap();
        host.deploy_file("probe", &guest("kv_probe")).unwrap();
        call(&host, &set("durable", b"still here")).unwrap();
        call(&host, &Op::Increment { scope: s("t"), key: s("n"), delta: 5 }).unwrap();
    }
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &guest("kv_probe")).unwrap();
    assert_eq!(call(&host, &get("durable")).unwrap(), Reply::Value(Some(b"still here".to_vec())));
    assert_eq!(call(&host, &Op::Increment { scope: s("t"), key: s("n"), delta: 1 }).unwrap(), Reply::Count(6));
}

#[test]
fn ttl_through_a_component() {
    let host = probe_host();
    call(
        &host,
        &Op::Set { scope: s("t"), key: s("tmp"), value: b"x".to_vec(), ttl_ms: Some(30), if_not_exists: false },
    )
    .unwrap();
    assert_eq!(call(&host, &get("tmp")).unwrap(), Reply::Value(Some(b"x".to_vec())));
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(call(&host, &get("tmp")).unwrap(), Reply::Value(None));
}

#[test]
fn concurrent_increments_are_atomic() {
    let host = probe_host();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    call(&host, &Op::Increment { scope: s("t"), key: s("n"), delta: 1 }).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(call(&host, &Op::Increment { scope: s("t"), key: s("n"), delta: 0 }).unwrap(), Reply::Count(100));
}

#[test]
fn invalid_names_and_unknown_functions() {
    let host = probe_host();
    assert!(matches!(host.deploy("bad name", b""), Err(Error::InvalidName(_))));
    assert!(matches!(host.invoke("ghost", &[], InvokeOptions::default()), Err(Error::UnknownFunction(_))));
    assert!(host.undeploy("probe").unwrap());
    assert!(matches!(host.invoke("probe", &[], InvokeOptions::default()), Err(Error::UnknownFunction(_))));
}

#[test]
fn invocations_beyond_the_instance_slots_queue_and_all_succeed() {
    // 4 slots, 48 invocations at once, each holding its slot for a while:
    // they queue for a slot instead of failing on the pooling allocator.
    let (mut config, _dir) = common::temp_config();
    config.backend = databelt_host::BackendConfig::Memory;
    config.max_concurrent_instances = 4;
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &guest("kv_probe")).unwrap();
    call(&host, &set("k", &[7; 1024])).unwrap();
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..48)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                let r = call(&host, &Op::TimeGets { scope: s("t"), key: s("k"), n: 5_000 });
                (r, t.elapsed())
            })
        })
        .collect();
    let mut times = Vec::new();
    for t in threads {
        let (r, took) = t.join().unwrap();
        assert!(matches!(r, Ok(Reply::Nanos(_))), "{r:?}");
        times.push(took);
    }
    times.sort();
    println!(
        "48 invocations on 4 slots: all succeeded in {:?}; per invocation p50 {:?}, p95 {:?}",
        started.elapsed(),
        times[times.len() / 2],
        times[times.len() * 95 / 100]
    );
    assert_still_serving(&host);
}

#[test]
fn a_full_slot_queue_is_unavailable_at_once() {
    let (mut config, _dir) = common::temp_config();
    config.backend = databelt_host::BackendConfig::Memory;
    config.max_concurrent_instances = 1;
    config.max_queued_invocations = 0;
    config.deadline_ms = 2_000;
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &guest("kv_probe")).unwrap();
    let busy = {
        let host = host.clone();
        std::thread::spawn(move || call(&host, &Op::Loop))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let e = call(&host, &get("k")).unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("instance slots"), "{e}");
    assert!(matches!(busy.join().unwrap(), Err(Error::DeadlineExceeded(_))));
    assert!(call(&host, &get("k")).is_ok(), "the slot is free again");
}

#[test]
fn an_output_over_the_limit_fails_with_quota_exceeded_before_conversion() {
    let (mut config, _dir) = common::temp_config();
    config.backend = databelt_host::BackendConfig::Memory;
    config.max_output_bytes = 64 * 1024;
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &guest("kv_probe")).unwrap();
    use databelt_host::state::SetOptions;
    host.state().set("t", "big", vec![1; 100 * 1024], SetOptions::default()).unwrap();
    host.state().set("t", "small", vec![2; 10 * 1024], SetOptions::default()).unwrap();
    let e = call(&host, &get("big")).unwrap_err();
    assert!(matches!(&e, Error::QuotaExceeded(m) if m.contains("max_output_bytes")), "{e}");
    assert!(matches!(call(&host, &get("small")).unwrap(), Reply::Value(Some(v)) if v.len() == 10 * 1024));
    // A hand-off carrying more than the limit fails the same way.
    let e = call(&host, &Op::HandOff { successor: s("probe"), next: vec![0; 100 * 1024] }).unwrap_err();
    assert!(matches!(&e, Error::QuotaExceeded(m) if m.contains("hand-off")), "{e}");
    assert_still_serving(&host);
}

/// Per-function scope allowlists (issue 13 §3): a function deployed with
/// `t:ro` reads `t` but cannot write it, and cannot open any other scope;
/// the same component deployed without grants can. Refused calls change
/// nothing.
#[test]
fn a_function_opens_only_its_granted_scopes_and_writes_only_read_write_ones() {
    use databelt_host::grants::ScopeGrants;
    let host = probe_host();
    call(&host, &set("k", b"before")).unwrap();
    let bytes = std::fs::read(guest("kv_probe")).unwrap();
    let info = host.deploy_with_scopes("reader", &bytes, Some(ScopeGrants::parse("t:ro,w:rw").unwrap())).unwrap();
    assert_eq!(info.scopes.unwrap().to_string(), "t:ro,w:rw");

    assert_eq!(call_as(&host, "reader", &get("k")).unwrap(), Reply::Value(Some(b"before".to_vec())));
    for op in [
        set("k", b"after"),
        Op::Delete { scope: s("t"), key: s("k") },
        Op::SetMany { scope: s("t"), entries: vec![(s("k"), b"x".to_vec())] },
        Op::Increment { scope: s("t"), key: s("n"), delta: 1 },
    ] {
        // The guest gets the WIT `access-denied` case and reports it.
        let e = call_as(&host, "reader", &op).unwrap_err();
        assert!(e.to_string().contains("access-denied"), "{op:?}: {e}");
    }
    let e = call_as(&host, "reader", &Op::Get { scope: s("other"), key: s("k") }).unwrap_err();
    assert!(e.to_string().contains("access-denied"), "{e}");
    call_as(
        &host,
        "reader",
        &Op::Set { scope: s("w"), key: s("k"), value: vec![1], ttl_ms: None, if_not_exists: false },
    )
    .unwrap();

    // Nothing the refused calls tried is there.
    assert_eq!(call(&host, &get("k")).unwrap(), Reply::Value(Some(b"before".to_vec())));
    assert_eq!(call(&host, &get("n")).unwrap(), Reply::Value(None));
    // Without grants the same component writes `t`.
    call(&host, &set("k", b"after")).unwrap();
}

/// Per-scope quotas (issue 13 §3), through a real component: the write that
/// would take scope `t` over 2 keys gets `quota-exceeded` and writes
/// nothing; an overwrite within the quota still works.
#[test]
fn a_scope_quota_is_reported_to_the_guest_as_quota_exceeded() {
    let (mut config, _dir) = temp_config();
    config.backend = databelt_host::BackendConfig::Memory;
    config
        .limits
        .scope_quotas
        .insert("t".into(), databelt_host::state::quota::ScopeQuota { max_bytes: Some(1000), max_keys: Some(2) });
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &guest("kv_probe")).unwrap();
    call(&host, &set("a", b"1")).unwrap();
    call(&host, &set("b", b"2")).unwrap();
    let e = call(&host, &set("c", b"3")).unwrap_err();
    assert!(e.to_string().contains("quota-exceeded"), "{e}");
    assert_eq!(call(&host, &get("c")).unwrap(), Reply::Value(None));
    call(&host, &set("b", b"22")).unwrap();
    let e = call(&host, &set("big", &[0; 2000])).unwrap_err();
    assert!(e.to_string().contains("quota-exceeded"), "{e}");
}

#[test]
fn deployments_survive_a_restart_and_an_undeploy_is_kept_too() {
    let (config, _dir) = common::temp_config();
    {
        let host = Host::new(config.clone()).unwrap();
        host.deploy_with_scopes(
            "probe",
            &std::fs::read(common::guest("kv_probe")).unwrap(),
            Some(databelt_host::grants::ScopeGrants::parse("kept:rw").unwrap()),
        )
        .unwrap();
        host.deploy_file("gone", &common::guest("kv_probe")).unwrap();
        assert!(host.undeploy("gone").unwrap());
        // A damaged kept file does not stop the host from starting.
        let dir = config.functions_dir.clone().unwrap();
        std::fs::write(dir.join("broken.wasm"), b"not wasm").unwrap();
    }
    let host = Host::new(config).unwrap();
    let names: Vec<String> = host.functions().into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["probe"], "probe redeployed, `gone` stays undeployed, `broken` skipped");
    assert_eq!(host.function("probe").unwrap().scopes.map(|g| g.to_string()), Some("kept:rw".to_string()));
    // The kept allowlist is in force: the probe's default scope is refused.
    let e = call_as(&host, "probe", &set("k", b"v")).unwrap_err();
    assert!(e.to_string().contains("access-denied"), "{e}");
}

#[test]
fn a_write_to_a_key_a_prepared_transaction_holds_is_a_typed_conflict_that_changes_nothing() {
    let host = probe_host();
    call(&host, &set("held", b"before")).unwrap();
    // A transaction prepared on this host writes `t/held`.
    let tier = host.state();
    let (staged_tier, staged) = tier.staged();
    staged_tier.set("t", "held", b"txn".to_vec(), databelt_host::state::SetOptions::default()).unwrap();
    tier.prepare_staged("run-1.0", "step", &staged, Vec::new(), Vec::new(), Vec::new(), &[]).unwrap();

    // The function's write fails with the WIT `conflict` case, which it
    // passed on; the host reports a retryable conflict.
    let e = call(&host, &set("held", b"mine")).unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("t/held") && e.to_string().contains("run-1.0"), "{e}");
    // Reads see the committed value meanwhile.
    assert_eq!(call(&host, &get("held")).unwrap(), Reply::Value(Some(b"before".to_vec())));
    // Decided: the transaction's write applies and the key is free again.
    tier.resolve("run-1.0", true, Vec::new()).unwrap();
    assert_eq!(call(&host, &get("held")).unwrap(), Reply::Value(Some(b"txn".to_vec())));
    call(&host, &set("held", b"mine")).unwrap();
    assert_eq!(call(&host, &get("held")).unwrap(), Reply::Value(Some(b"mine".to_vec())));
}

/// A host whose scope `shared` is replicated with node `b`.
fn replica_host(node: &str) -> Host {
    let (mut config, _d) = temp_config();
    config.backend = databelt_host::BackendConfig::Memory;
    config.node_id = s(node);
    config.replicated = [(s("shared"), databelt_host::ReplicatedScope { nodes: vec![s("a"), s("b")] })].into();
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &guest("kv_probe")).unwrap();
    host
}

/// Ship everything `from` has logged to `to` (what the replicator does).
fn ship(from: &Host, to: &Host) {
    use databelt_host::state::replica::{Missing, VersionVector};
    let Missing::Entries(e) = from.state().replica_missing("shared", &VersionVector::new(), usize::MAX).unwrap() else {
        panic!("snapshot")
    };
    to.state().replica_apply("shared", &e).unwrap();
}

#[test]
fn lattice_calls_through_a_component_merge_concurrent_writes_of_two_replicas() {
    let (a, b) = (replica_host("a"), replica_host("b"));
    let sh = || s("shared");
    let add = |delta| Op::CounterAdd { scope: sh(), key: s("hits"), delta };
    assert_eq!(call(&a, &add(5)).unwrap(), Reply::Count(5));
    assert_eq!(call(&b, &add(-2)).unwrap(), Reply::Count(-2));
    let members = |m: &[&str]| m.iter().map(|x| s(x)).collect::<Vec<_>>();
    call(&a, &Op::SetAdd { scope: sh(), key: s("tags"), members: members(&["fire", "smoke"]) }).unwrap();
    call(&b, &Op::SetAdd { scope: sh(), key: s("tags"), members: members(&["flood"]) }).unwrap();
    call(&a, &Op::Set { scope: sh(), key: s("note"), value: b"from a".to_vec(), ttl_ms: None, if_not_exists: false })
        .unwrap();
    call(&b, &Op::Set { scope: sh(), key: s("note"), value: b"from b".to_vec(), ttl_ms: None, if_not_exists: false })
        .unwrap();
    ship(&a, &b);
    ship(&b, &a);
    for h in [&a, &b] {
        assert_eq!(call(h, &Op::CounterGet { scope: sh(), key: s("hits") }).unwrap(), Reply::Count(3));
        // A plain read of a replicated counter is the 8-byte s64 of `increment`.
        assert_eq!(
            call(h, &Op::Get { scope: sh(), key: s("hits") }).unwrap(),
            Reply::Value(Some(3i64.to_le_bytes().to_vec()))
        );
        assert_eq!(
            call(h, &Op::SetMembers { scope: sh(), key: s("tags") }).unwrap(),
            Reply::Members(members(&["fire", "flood", "smoke"]))
        );
        assert_eq!(
            call(h, &Op::SetContains { scope: sh(), key: s("tags"), member: s("flood") }).unwrap(),
            Reply::Bool(true)
        );
        let Reply::Siblings(sib) = call(h, &Op::Siblings { scope: sh(), key: s("note") }).unwrap() else { panic!() };
        assert_eq!(sib.len(), 2, "both concurrent writes are kept");
        // The plain read is the greatest stamp's, the same on both replicas.
        assert_eq!(call(h, &Op::Get { scope: sh(), key: s("note") }).unwrap(), Reply::Value(sib[0].0.clone()));
    }
    // A write that saw both siblings replaces them.
    call(&a, &Op::Set { scope: sh(), key: s("note"), value: b"merged".to_vec(), ttl_ms: None, if_not_exists: false })
        .unwrap();
    ship(&a, &b);
    let Reply::Siblings(sib) = call(&b, &Op::Siblings { scope: sh(), key: s("note") }).unwrap() else { panic!() };
    assert_eq!(sib.iter().map(|x| x.0.clone()).collect::<Vec<_>>(), vec![Some(b"merged".to_vec())]);
}

#[test]
fn lattice_calls_that_cannot_hold_fail_and_change_nothing() {
    let a = replica_host("a");
    let sh = || s("shared");
    let before = a.state().replica_vv("shared").unwrap();
    // Not a replicated scope.
    let e = call(&a, &Op::CounterAdd { scope: s("t"), key: s("k"), delta: 1 }).unwrap_err();
    assert!(e.to_string().contains("precondition-failed"), "{e}");
    assert_eq!(call(&a, &Op::Get { scope: s("t"), key: s("k") }).unwrap(), Reply::Value(None));
    // A counter is not a set; CAS and TTL cannot hold across replicas.
    call(&a, &Op::CounterAdd { scope: sh(), key: s("n"), delta: 1 }).unwrap();
    let logged = a.state().replica_vv("shared").unwrap();
    for op in [
        Op::SetAdd { scope: sh(), key: s("n"), members: vec![s("x")] },
        Op::Cas { scope: sh(), key: s("n"), expected: None, value: vec![1] },
        Op::Set { scope: sh(), key: s("t"), value: vec![1], ttl_ms: Some(10), if_not_exists: false },
        Op::SetAdd { scope: sh(), key: s("m"), members: vec![s("")] },
    ] {
        let e = call(&a, &op).unwrap_err();
        assert!(
            e.to_string().contains("precondition-failed") || e.to_string().contains("quota-exceeded"),
            "{op:?}: {e}"
        );
    }
    assert_eq!(a.state().replica_vv("shared").unwrap(), logged, "nothing more was logged");
    assert_ne!(before, logged);
    assert_eq!(call(&a, &Op::CounterGet { scope: sh(), key: s("n") }).unwrap(), Reply::Count(1));
    assert_eq!(call(&a, &Op::Get { scope: sh(), key: s("t") }).unwrap(), Reply::Value(None));
}

/// A host on the memory backend keeping up to `prepared` instances made
/// ahead.
fn host_preparing(prepared: u32) -> (Host, tempfile::TempDir) {
    let (mut config, dir) = common::temp_config();
    config.backend = databelt_host::BackendConfig::Memory;
    config.prepared_instances = prepared;
    (Host::new(config).unwrap(), dir)
}

#[test]
fn every_invocation_runs_in_an_instance_of_its_own_whether_made_ahead_or_not() {
    for prepared in [0, 8] {
        let (host, _dir) = host_preparing(prepared);
        host.deploy_file("probe", &guest("kv_probe")).unwrap();
        let expected = if prepared == 0 { 0 } else { 1 };
        assert_eq!(host.prepared_instances(), expected, "a deploy makes the first instance ahead ({prepared})");
        for _ in 0..5 {
            assert_eq!(call(&host, &Op::CallsInThisInstance).unwrap(), Reply::Count(1), "fresh instance ({prepared})");
            assert_eq!(host.prepared_instances(), expected, "the next one is ready after each call ({prepared})");
        }
        // An answer first, the clean-up after: the next instance is made then.
        let input = postcard::to_allocvec(&Op::CallsInThisInstance).unwrap();
        let (out, cleanup) = host.invoke_deferring_cleanup("probe", &input, InvokeOptions::default());
        assert_eq!(postcard::from_bytes::<Reply>(&out.unwrap().output).unwrap(), Reply::Count(1));
        assert_eq!(host.prepared_instances(), 0, "the instance made ahead was used ({prepared})");
        assert_eq!(host.slot_usage().0, 1, "the answered invocation's slot is held until its clean-up");
        cleanup.run();
        assert_eq!(host.slot_usage().0, 0, "and freed by it");
        assert_eq!(host.prepared_instances(), expected, "the clean-up made the next one ({prepared})");
    }
}

#[test]
fn prepared_instances_stay_within_their_limit_the_least_recently_prepared_giving_theirs_up() {
    let (host, _dir) = host_preparing(2);
    for name in ["a", "b", "c"] {
        host.deploy_file(name, &guest("kv_probe")).unwrap();
        assert!(host.prepared_instances() <= 2, "after deploying {name}: {}", host.prepared_instances());
    }
    assert_eq!(host.prepared_instances(), 2);
    for name in ["a", "b", "c", "a", "a", "b"] {
        assert_eq!(call_as(&host, name, &Op::CallsInThisInstance).unwrap(), Reply::Count(1));
        assert_eq!(host.prepared_instances(), 2, "after calling {name}");
    }
    // Every function still runs, with or without an instance made ahead.
    for name in ["a", "b", "c"] {
        assert_eq!(call_as(&host, name, &Op::CallsInThisInstance).unwrap(), Reply::Count(1));
    }
    // An undeployed function's instance goes with it; a redeployed one never
    // runs in an instance of its old version.
    assert!(host.undeploy("c").unwrap());
    host.deploy_file("a", &guest("reader")).unwrap();
    let e = call_as(&host, "a", &Op::CallsInThisInstance).unwrap_err();
    assert_eq!(e.kind(), databelt_host::ErrorKind::BadInput, "the new `a` has another input type: {e}");
    assert!(host.prepared_instances() <= 2);
}

#[test]
fn a_host_with_one_slot_and_instances_made_ahead_serves_chains_and_concurrent_calls() {
    // The chain's first step keeps no slot while the next one waits for it,
    // and prepared instances never take an invocation's slot.
    let (mut config, _dir) = common::temp_config();
    config.backend = databelt_host::BackendConfig::Memory;
    config.max_concurrent_instances = 1;
    config.prepared_instances = 1;
    config.slot_wait_ms = 5_000;
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &guest("kv_probe")).unwrap();
    let hand_off = Op::HandOff { successor: s("probe"), next: postcard::to_allocvec(&Op::Context).unwrap() };
    let out = host.invoke("probe", &postcard::to_allocvec(&hand_off).unwrap(), InvokeOptions::default()).unwrap();
    assert_eq!(out.steps.len(), 2, "both steps ran on one slot");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || call(&host, &Op::CallsInThisInstance))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), Reply::Count(1));
    }
    assert_eq!(host.slot_usage(), (0, 0));
}
