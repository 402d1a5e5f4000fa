//! A Starlink-like shell at full size: 72 planes × 22 satellites at 550 km,
//! 53° (1,584 satellites), 100 ground stations and a cloud, generated from
//! the orbits.
//!
//! Measures: generating the scenario; writing and reading it as TOML; a
//! topology snapshot at one instant; one storage election (target ≤ 5 ms);
//! one scheduling decision of the Databelt policy (target ≤ 10 ms). The
//! reference measured in the same run is one plain single-source petgraph
//! Dijkstra over the same snapshot. The summary prints p50s and ratios.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::Criterion;
use databelt_placement::constellation::{self, ConstellationSpec};
use databelt_placement::scheduler::{Demand, Endpoint, PolicyState, Scheduler, SchedulerConfig, View};
use databelt_placement::{ElectionRequest, Topology, elect};

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
    let mut criterion = Criterion::default().sample_size(10).configure_from_args();
    let spec = ConstellationSpec::starlink_like();
    let started = Instant::now();
    let topology = constellation::generate(&spec).expect("generate");
    let generate_once = started.elapsed();
    let text = toml::to_string(&topology).expect("toml");
    let windowed = topology.links.iter().filter(|l| !l.windows.is_empty()).count();
    println!(
        "scenario: {} nodes, {} links ({windowed} with windows), period {} ms, TOML {:.1} MB",
        topology.nodes.len(),
        topology.links.len(),
        topology.period_ms.unwrap_or(0),
        text.len() as f64 / 1e6
    );

    criterion.bench_function("constellation/generate", |b| b.iter(|| constellation::generate(&spec)));
    criterion.bench_function("constellation/read-toml", |b| b.iter(|| Topology::from_toml(&text)));
    let t_ms = 600_000;
    criterion.bench_function("constellation/snapshot", |b| b.iter(|| topology.snapshot(t_ms)));
    let snapshot = topology.snapshot(t_ms);

    // A ground station's state goes to a satellite on the far side of the
    // shell (the election's hard case: many hops).
    let request = ElectionRequest {
        producer: "gs-10".into(),
        consumer: "sat-40-11".into(),
        size_bytes: 5_000_000,
        tmax_ms: 400.0,
        one_way: false,
    };
    elect(&snapshot, &request).expect("election");
    let start = snapshot.index_of("gs-10").expect("gs-10");
    let dijkstra = || petgraph::algo::dijkstra(&snapshot.graph, start, None, |e| e.weight().latency_ms);
    criterion.bench_function("constellation/elect", |b| b.iter(|| elect(&snapshot, &request)));
    criterion.bench_function("constellation/dijkstra-reference", |b| b.iter(dijkstra));

    // A step whose 5 MB input is at a satellite and whose output goes to the
    // cloud, candidates within 40 ms of the input.
    let scheduler =
        Scheduler::new(SchedulerConfig { vicinity_ms: Some(40.0), ..SchedulerConfig::default() }).expect("scheduler");
    let unbounded = Scheduler::new(SchedulerConfig::default()).expect("scheduler");
    let demand = Demand {
        cpu: 1.0,
        memory_mb: 512.0,
        power_w: 10.0,
        duration_ms: 2_000,
        inputs: vec![Endpoint { node: "sat-3-4".into(), bytes: 5_000_000 }],
        successors: vec![Endpoint { node: "cloud".into(), bytes: 100_000 }],
        max_latency_ms: Some(200.0),
        ..Demand::default()
    };
    let states = HashMap::new();
    let view = View { topology: &topology, snapshot: &snapshot, states: &states };
    let decision = scheduler.schedule(&view, &demand, &mut PolicyState::new(0)).expect("schedule");
    println!(
        "decision: {} of {} candidates ({} rejected), ranked {:?}",
        decision.chosen,
        decision.candidates,
        decision.rejected.len(),
        decision.ranked.iter().map(|r| (&r.node, (r.score * 1000.0).round() / 1000.0)).collect::<Vec<_>>()
    );
    criterion.bench_function("constellation/schedule-vicinity-40ms", |b| {
        b.iter(|| scheduler.schedule(&view, &demand, &mut PolicyState::new(0)))
    });
    criterion.bench_function("constellation/schedule-all-nodes", |b| {
        b.iter(|| unbounded.schedule(&view, &demand, &mut PolicyState::new(0)))
    });
    criterion.final_summary();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let gen_ = p50(5, || {
        std::hint::black_box(constellation::generate(&spec).ok());
    });
    let read = p50(5, || {
        std::hint::black_box(Topology::from_toml(&text).ok());
    });
    let snap = p50(101, || {
        std::hint::black_box(topology.snapshot(t_ms));
    });
    let e = p50(501, || {
        std::hint::black_box(elect(&snapshot, &request).ok());
    });
    let d = p50(501, || {
        std::hint::black_box(dijkstra());
    });
    let s = p50(201, || {
        std::hint::black_box(scheduler.schedule(&view, &demand, &mut PolicyState::new(0)).ok());
    });
    let all = p50(101, || {
        std::hint::black_box(unbounded.schedule(&view, &demand, &mut PolicyState::new(0)).ok());
    });
    let verdict = |v: f64, target: f64| if v <= target { "meets" } else { "MISSES" };
    println!("\n== constellation summary (1,584 satellites + 100 stations + cloud; p50, same run)");
    println!("generate (first run {:.0} ms)      {:>10.1} ms", ms(generate_once), ms(gen_));
    println!("read TOML ({:.1} MB)              {:>10.1} ms", text.len() as f64 / 1e6, ms(read));
    println!("snapshot at an instant            {:>10.3} ms  {:>6.2}× dijkstra", ms(snap), ms(snap) / ms(d));
    println!("dijkstra reference                {:>10.3} ms", ms(d));
    println!(
        "elect                             {:>10.3} ms  {:>6.2}× dijkstra  [{} ≤ 5 ms]",
        ms(e),
        ms(e) / ms(d),
        verdict(ms(e), 5.0)
    );
    println!(
        "schedule (vicinity 40 ms)         {:>10.3} ms  {:>6.2}× dijkstra  [{} ≤ 10 ms]",
        ms(s),
        ms(s) / ms(d),
        verdict(ms(s), 10.0)
    );
    println!(
        "schedule (every node a candidate) {:>10.3} ms  {:>6.2}× dijkstra  [{} ≤ 10 ms]",
        ms(all),
        ms(all) / ms(d),
        verdict(ms(all), 10.0)
    );
}
