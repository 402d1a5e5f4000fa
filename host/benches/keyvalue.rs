//! Peer comparison of a 1 KiB `wasi:keyvalue` set + get round (issue 17 §5),
//! all in one run, the same component (kv-loop) everywhere:
//!
//! - `databelt/memory` and `databelt/redb`: `Host::run_command` on the
//!   Databelt host;
//! - `wasmtime-wasi-keyvalue`: wasmtime's own in-memory host of the draft,
//!   on the same engine, with plain WASI;
//! - `redis`: a Redis SET + GET round trip on loopback from the host side
//!   (what the Databelt prototype kept state in), on a `redis-server` this
//!   benchmark starts and stops.
//!
//! A round's cost is `(T(rounds) - T(0)) / rounds`, so instantiation drops
//! out. Targets: Databelt memory within 1.2× of wasmtime's in-memory host,
//! and at least 20× faster than the Redis round trip.
//!
//! `cargo bench -p databelt-host --bench keyvalue` (set `KV_ROUNDS` for
//! more rounds; default 20000). `KV_PROFILE=databelt` (or `wasmtime`) runs
//! only that candidate's rounds, for a profiler (`perf record`), and prints
//! nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::time::{Duration, Instant};

use databelt_host::{BackendConfig, Host};
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_keyvalue::{WasiKeyValue, WasiKeyValueCtx, WasiKeyValueCtxBuilder};

struct RefState {
    wasi: WasiCtx,
    table: ResourceTable,
    kv: WasiKeyValueCtx,
}

impl WasiView for RefState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// wasmtime's own host of the draft: plain WASI plus wasmtime-wasi-keyvalue.
struct Wasmtime {
    engine: wasmtime::Engine,
    pre: CommandPre<RefState>,
}

impl Wasmtime {
    fn new(engine: &wasmtime::Engine, bytes: &[u8]) -> Wasmtime {
        let component = Component::new(engine, bytes).unwrap();
        let mut linker: Linker<RefState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        wasmtime_wasi_keyvalue::add_to_linker(&mut linker, |h: &mut RefState| WasiKeyValue::new(&h.kv, &mut h.table))
            .unwrap();
        Wasmtime { engine: engine.clone(), pre: CommandPre::new(linker.instantiate_pre(&component).unwrap()).unwrap() }
    }

    fn run(&self, args: &[String]) {
        let state = RefState {
            wasi: WasiCtxBuilder::new().args(args).build(),
            table: ResourceTable::new(),
            kv: WasiKeyValueCtxBuilder::new().build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(u64::MAX / 2);
        let command = self.pre.instantiate(&mut store).unwrap();
        command.wasi_cli_run().call_run(&mut store).unwrap().unwrap();
    }
}

fn args(rounds: u32) -> Vec<String> {
    // wasmtime's in-memory host has only the empty identifier (Databelt: scope `default`).
    vec!["kv-loop".into(), String::new(), rounds.to_string()]
}

/// Per-round cost of `f(rounds)` for every candidate: `(T(rounds) -
/// T(0)) / rounds` per sample, candidates interleaved so that each sample
/// measures them all under the same machine conditions.
fn per_round(samples: usize, rounds: u32, fs: &mut [&mut dyn FnMut(u32)]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![Vec::new(); fs.len()];
    for f in fs.iter_mut() {
        f(rounds / 10);
    }
    for _ in 0..samples {
        for (f, o) in fs.iter_mut().zip(out.iter_mut()) {
            let t = Instant::now();
            f(0);
            let empty = t.elapsed().as_secs_f64();
            let t = Instant::now();
            f(rounds);
            let full = t.elapsed().as_secs_f64();
            o.push((full - empty).max(0.0) / f64::from(rounds));
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The p50 of a candidate's samples.
fn p50(samples: &[f64]) -> Duration {
    Duration::from_secs_f64(median(samples.to_vec()))
}

/// The median over samples of `a / b` measured in the same sample: the
/// ratio the targets are judged on (steadier than a ratio of medians when
/// the machine's speed drifts during the run).
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(a, b)| a / b).collect())
}

fn host(memory: bool) -> (Host, tempfile::TempDir) {
    let (mut config, dir) = common::temp_config();
    if memory {
        config.backend = BackendConfig::Memory;
    }
    config.deadline_ms = 600_000;
    (Host::new(config).unwrap(), dir)
}

/// A redis-server on a free loopback port, stopped on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = tempfile::tempdir().ok()?;
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis { child, port, _dir: dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dropping it stops the server.
        None
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let rounds: u32 = std::env::var("KV_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let samples = 31;
    let bytes = std::fs::read(common::guest("kv-loop")).unwrap();
    let (mem, _d1) = host(true);
    let (redb, _d2) = host(false);
    let reference = Wasmtime::new(mem.engine(), &bytes);
    let run_on = |h: &Host, n: u32| assert_eq!(h.run_command(&bytes, &args(n)).unwrap(), 0);
    match std::env::var("KV_PROFILE").as_deref() {
        Ok("databelt") => return (0..samples).for_each(|_| run_on(&mem, rounds)),
        Ok("wasmtime") => return (0..samples).for_each(|_| reference.run(&args(rounds))),
        Ok(other) => panic!("KV_PROFILE={other}: expected `databelt` or `wasmtime`"),
        Err(_) => {}
    }

    let figures = per_round(
        samples,
        rounds,
        &mut [&mut |n| reference.run(&args(n)), &mut |n| run_on(&mem, n), &mut |n| run_on(&redb, n / 10)],
    );
    // redb rounds are durable commits: the closure runs a tenth as many as
    // `per_round` divides by, so its figure is a tenth of a round.
    let (wasmtime_kv, databelt_mem, databelt_redb) = (p50(&figures[0]), p50(&figures[1]), p50(&figures[2]) * 10);
    let mem_ratio = paired_ratio(&figures[1], &figures[0]);

    let redis = Redis::start();
    let redis_round = redis.as_ref().map(|r| {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", r.port)).unwrap();
        let mut conn = client.get_connection().unwrap();
        let value = vec![7u8; 1024];
        let mut one = |n: u32| {
            for _ in 0..n {
                let _: () = redis::cmd("SET").arg("k").arg(&value).query(&mut conn).unwrap();
                let got: Vec<u8> = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
                assert_eq!(got.len(), 1024);
            }
        };
        p50(&per_round(samples, (rounds / 10).max(1), &mut [&mut one])[0])
    });

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    println!(
        "== wasi:keyvalue 1 KiB set + get round (p50 of {samples} interleaved samples, {rounds} rounds each, same run)"
    );
    println!("wasmtime-wasi-keyvalue (in-memory host)   {:>8.3} µs  (reference)", us(wasmtime_kv));
    println!(
        "databelt/memory                           {:>8.3} µs  = {mem_ratio:.2}× wasmtime (median of paired samples)  [{} ≤ 1.2×]",
        us(databelt_mem),
        verdict(mem_ratio <= 1.2)
    );
    println!(
        "databelt/redb (durable commit per set)    {:>8.3} µs  = {:.2}× wasmtime",
        us(databelt_redb),
        databelt_redb.as_secs_f64() / wasmtime_kv.as_secs_f64()
    );
    match redis_round {
        Some(d) => {
            let x = d.as_secs_f64() / databelt_mem.as_secs_f64();
            println!(
                "redis SET + GET on loopback               {:>8.3} µs  = {x:.1}× databelt/memory  [{} ≥ 20×]",
                us(d),
                verdict(x >= 20.0)
            );
        }
        None => println!("redis: redis-server could not be started (scripts/setup.sh installs it); no figure"),
    }
}
