//! Election benchmark: one election on topologies of 10 … 10,000 nodes of
//! degree ~4 (the prototype took 1 / 13 / 162 / 832 ms; the target is
//! ≤ 5 ms at 10,000 nodes).
//!
//! Reference measured in the same run: one plain single-source petgraph
//! Dijkstra over the same snapshot (the shortest-path work any election
//! must do). The summary prints the p50 of each and their ratio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::Criterion;
use databelt_placement::{ElectionRequest, Topology, elect};

/// A connected graph: a ring plus `n` pseudo-random chords (degree ~4),
/// latencies 1-50 ms, bandwidth 10-200 Mbit/s.
fn topology(n: usize) -> Topology {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text = String::with_capacity(n * 200);
    for i in 0..n {
        text += &format!("[[node]]\nid = \"n{i}\"\nkind = \"satellite\"\n");
    }
    let mut seen = std::collections::HashSet::new();
    let mut add = |a: usize, b: usize, text: &mut String, lat: u64, bw: u64| {
        if a != b && seen.insert((a.min(b), a.max(b))) {
            *text += &format!(
                "[[link]]\na = \"n{a}\"\nb = \"n{b}\"\nlatency_ms = {lat}\njitter_ms = 2\nbandwidth_mbps = {bw}\n"
            );
        }
    };
    for i in 0..n {
        let (lat, bw) = (1 + next() % 50, 10 + next() % 190);
        add(i, (i + 1) % n, &mut text, lat, bw);
    }
    for _ in 0..n {
        let (a, b) = ((next() % n as u64) as usize, (next() % n as u64) as usize);
        let (lat, bw) = (1 + next() % 50, 10 + next() % 190);
        add(a, b, &mut text, lat, bw);
    }
    Topology::from_toml(&text).expect("generated topology")
}

fn p50(n: usize, mut f: impl FnMut()) -> Duration {
    let mut s: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    s.sort();
    s[n / 2]
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let mut rows = Vec::new();
    for (n, prototype_ms) in [(10usize, 1.0f64), (100, 13.0), (1_000, 162.0), (10_000, 832.0)] {
        let t = topology(n);
        let snapshot = t.snapshot(0);
        // Producer and consumer far apart on the ring.
        let request = ElectionRequest {
            producer: "n0".into(),
            consumer: format!("n{}", n / 2),
            size_bytes: 10_000_000,
            tmax_ms: 400.0,
            one_way: false,
        };
        elect(&snapshot, &request).expect("election");
        let start = snapshot.index_of("n0").expect("n0");
        criterion.bench_function(&format!("elect/{n}-nodes"), |b| b.iter(|| elect(&snapshot, &request)));
        criterion.bench_function(&format!("dijkstra-reference/{n}-nodes"), |b| {
            b.iter(|| petgraph::algo::dijkstra(&snapshot.graph, start, None, |e| e.weight().latency_ms))
        });
        let rounds = if n >= 10_000 { 101 } else { 1001 };
        let e = p50(rounds, || {
            std::hint::black_box(elect(&snapshot, &request).ok());
        });
        let with_snapshot = p50(rounds / 4 + 1, || {
            std::hint::black_box(elect(&t.snapshot(0), &request).ok());
        });
        let d = p50(rounds, || {
            std::hint::black_box(petgraph::algo::dijkstra(&snapshot.graph, start, None, |e| e.weight().latency_ms));
        });
        rows.push((n, e, with_snapshot, d, prototype_ms));
    }
    criterion.final_summary();
    println!("\n== election summary (p50, same run)");
    println!(
        "{:>7} {:>12} {:>16} {:>14} {:>9} {:>12}",
        "nodes", "elect", "snapshot+elect", "dijkstra ref", "ratio", "prototype"
    );
    for (n, e, s, d, proto) in rows {
        let ms = |x: Duration| x.as_secs_f64() * 1e3;
        println!(
            "{n:>7} {:>9.3} ms {:>13.3} ms {:>11.3} ms {:>8.2}× {:>9.0} ms{}",
            ms(e),
            ms(s),
            ms(d),
            ms(e) / ms(d),
            proto,
            if n == 10_000 { if ms(e) <= 5.0 { "  [meets ≤ 5 ms]" } else { "  [MISSES ≤ 5 ms]" } } else { "" }
        );
    }
}
