//! The state tier alone, without WebAssembly: a 1 KiB `StateTier::set` +
//! `get` on the memory backend against a `std` `HashMap` insert + get of the
//! same value, measured in the same run. It shows how much of the
//! `wasi:keyvalue` round (`--bench keyvalue`) the tier's semantics cost:
//! key and value limits, TTLs, quotas, the prepared-transaction lock check,
//! versions and the store's lock.
//!
//! `cargo bench -p databelt-host --bench tier` (`TIER_ROUNDS`, default
//! 1,000,000 per sample; 15 interleaved samples).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use databelt_host::StateLimits;
use databelt_host::state::{MemoryStore, StateTier};

fn main() {
    let rounds: u32 = std::env::var("TIER_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let tier = StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default());
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    let value = vec![7u8; 1024];
    let (mut tier_ns, mut map_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..rounds {
            tier.set("default", "k", black_box(value.clone()), Default::default()).unwrap();
            let got = tier.get("default", "k").unwrap().unwrap();
            assert_eq!(black_box(got).len(), 1024);
        }
        let a = t.elapsed().as_secs_f64() * 1e9 / f64::from(rounds);
        let t = Instant::now();
        for _ in 0..rounds {
            map.insert("k".to_string(), black_box(value.clone()));
            let got = map.get("k").cloned().unwrap();
            assert_eq!(black_box(got).len(), 1024);
        }
        let b = t.elapsed().as_secs_f64() * 1e9 / f64::from(rounds);
        tier_ns.push(a);
        map_ns.push(b);
        ratios.push(a / b);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("== 1 KiB set + get, no WebAssembly (p50 of 15 interleaved samples, {rounds} rounds each, same run)");
    println!("std HashMap insert + get (reference)   {:>7.0} ns", median(map_ns));
    println!(
        "StateTier memory set + get             {:>7.0} ns  = {:.2}× HashMap (median of paired samples)",
        median(tier_ns),
        median(ratios)
    );
}
