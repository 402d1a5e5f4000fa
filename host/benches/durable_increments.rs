//! Durable increments per second from concurrent invocations on one host
//! (issue: "group commit").
//!
//! `threads` callers each invoke the kv-probe function `per_thread` times;
//! every invocation is one `increment` state call. The same load runs on the
//! memory backend (the reference, measured in the same run) and on the redb
//! backend, where every increment is on disk before the call returns and
//! concurrent commits share flushes (group commit). Prints both rates, the
//! ratio and the flushes the redb commits shared, against the targets:
//! ≥ 10,000 durable increments/s and ≥ 0.25× the memory backend.
//!
//! `cargo bench -p databelt-host --bench durable_increments [-- THREADS PER_THREAD]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::time::Instant;

use common::probe::{Op, Reply};
use std::sync::Arc;

use databelt_host::state::RedbStore;
use databelt_host::{BackendConfig, Host, HostBuilder, InvokeOptions};

fn host(memory: bool) -> (Host, Option<Arc<RedbStore>>, tempfile::TempDir) {
    let (mut config, dir) = common::temp_config();
    config.max_concurrent_instances = 64;
    let (host, redb) = if memory {
        config.backend = BackendConfig::Memory;
        (Host::new(config).expect("host"), None)
    } else {
        let store = Arc::new(RedbStore::open(&dir.path().join("bench.redb")).expect("redb"));
        (HostBuilder::new(config).state_store(store.clone()).build().expect("host"), Some(store))
    };
    host.deploy_file("probe", &common::guest("kv_probe")).expect("deploy kv-probe");
    (host, redb, dir)
}

/// Increments per second with `threads` concurrent callers (checked: every
/// increment counted once: `round` names fresh counters).
fn rate(host: &Host, round: &str, threads: usize, per_thread: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let input = postcard::to_stdvec(&Op::Increment {
                    scope: "bench".into(),
                    key: format!("{round}{}", t % 4),
                    delta: 1,
                })
                .expect("encode");
                for _ in 0..per_thread {
                    let out = host.invoke("probe", &input, InvokeOptions::default()).expect("invoke");
                    assert!(matches!(postcard::from_bytes::<Reply>(&out.output), Ok(Reply::Count(_))));
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let total: i64 = (0..4)
        .map(|k| {
            host.state()
                .get("bench", &format!("{round}{k}"))
                .unwrap()
                .map_or(0, |v| i64::from_le_bytes(v.try_into().unwrap()))
        })
        .sum();
    assert_eq!(total as usize, threads * per_thread, "every increment counted once");
    (threads * per_thread) as f64 / elapsed
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let threads = args.first().copied().unwrap_or(64);
    let per_thread = args.get(1).copied().unwrap_or(300);
    let (memory, _, _m) = host(true);
    let (durable, redb, _d) = host(false);
    let flushes = || redb.as_ref().map_or(0, |r| r.flushes());
    // Warm both (compiled code, instance pool).
    rate(&memory, "warm", threads, 20);
    rate(&durable, "warm", threads, 20);
    let flushes_before = flushes();
    let reference = rate(&memory, "n", threads, per_thread);
    let figure = rate(&durable, "n", threads, per_thread);
    let flushes = flushes().saturating_sub(flushes_before);
    let ratio = figure / reference;
    println!();
    println!("durable increments, {threads} concurrent callers × {per_thread} invocations (one increment each):");
    println!("  memory backend (reference): {reference:>9.0} /s");
    println!(
        "  redb, group commit:         {figure:>9.0} /s   ({flushes} flushes for {} commits)",
        threads * per_thread
    );
    println!(
        "  ratio to the memory backend: {ratio:.2}× (target ≥ 0.25×); target ≥ 10,000/s: {}",
        if figure >= 10_000.0 { "met" } else { "NOT met" }
    );
}
