//! The Databelt paper's evaluation (`databelt bench paper`)'s evaluation on an emulated
//! testbed on this machine. Starts the scenario's continuum in-process with
//! every link emulated (`databelt-testbed`) and its schedule compressed,
//! runs the wildfire workflow under each policy — stateless, random,
//! strict (the paper's rule for a missed SLO), databelt, databelt + fusion — for the latency experiment (state sizes
//! with the paper's Tmax) and the throughput experiment (2 MB states, N
//! concurrent workflows), and writes `paper.csv`, `summary.md`,
//! `latency.svg`, `throughput.svg` and `steps.csv` (per step of every
//! latency run: where the time over the bound goes).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use databelt_host::{BackendConfig, HostConfig, schema};
use databelt_net::continuum::Policy;
use databelt_net::placement::PlacementClient;
use databelt_net::workflow::{RunOptions, RunReport, Runner, percentile};
use databelt_placement::Snapshot;
use databelt_placement::Topology;
use databelt_testbed::emulator::spec_on;
use databelt_testbed::{Cluster, ClusterOptions};
use futures_util::future::join_all;
use plotters::prelude::*;

use crate::median::{median, median_interval};

/// The paper's Tmax per state size (MB → ms).
pub const PAPER_TMAX: [(u32, f64); 11] = [
    (1, 100.0),
    (5, 150.0),
    (10, 200.0),
    (15, 260.0),
    (20, 330.0),
    (25, 390.0),
    (30, 450.0),
    (35, 520.0),
    (40, 580.0),
    (45, 650.0),
    (50, 710.0),
];

/// Tmax for `mb`: the paper's value, interpolated linearly between sizes.
pub fn tmax_for(mb: f64) -> f64 {
    let mut prev = PAPER_TMAX[0];
    for &(size, tmax) in &PAPER_TMAX {
        let size = f64::from(size);
        if mb <= size {
            let (ps, pt) = (f64::from(prev.0), prev.1);
            return if size == ps { tmax } else { pt + (tmax - pt) * (mb - ps) / (size - ps) };
        }
        prev = (size as u32, tmax);
    }
    prev.1
}

/// The policies compared, as (label, policy, fusion).
pub const POLICIES: [(&str, Policy, bool); 5] = [
    ("stateless", Policy::Stateless, false),
    ("random", Policy::Random, false),
    ("strict", Policy::Strict, false),
    ("databelt", Policy::Databelt, false),
    ("databelt+fusion", Policy::Databelt, true),
];

/// Least runs of a latency case (without `--runs`).
pub const MIN_RUNS: u32 = 3;
/// Most runs of a latency case (without `--runs`).
pub const MAX_RUNS: u32 = 30;
/// Without `--runs`, a latency case runs until its runs' lower bounds add
/// up to this much, ms (within [`MIN_RUNS`]..=[`MAX_RUNS`]). Where a run is
/// short its jitter is large beside it: a 1 MB run of the stated scenario
/// (~0.6 s) crosses a route jittered by ±75 ms, so one run's figure moves by
/// ~7% (one standard deviation) and a median of three by ~5%.
pub const CASE_BOUND_MS: f64 = 20_000.0;

/// How many runs a latency case gets without `--runs`, once its first run
/// has given its lower bound (ms): enough for their bounds to add up to
/// [`CASE_BOUND_MS`], within [`MIN_RUNS`]..=[`MAX_RUNS`] (a bound that is
/// not a positive number gets [`MIN_RUNS`]).
pub fn runs_for(first_bound_ms: f64) -> u32 {
    if !(first_bound_ms.is_finite() && first_bound_ms > 0.0) {
        return MIN_RUNS;
    }
    let wanted = (CASE_BOUND_MS / first_bound_ms).ceil();
    if wanted >= f64::from(MAX_RUNS) { MAX_RUNS } else { (wanted as u32).max(MIN_RUNS) }
}

/// What to run.
pub struct PaperOptions {
    /// Scenario file.
    pub scenario: PathBuf,
    /// Workflow file (the wildfire workflow).
    pub workflow: PathBuf,
    /// Results folder.
    pub out: PathBuf,
    /// Schedule speed-up.
    pub time_scale: u64,
    /// Quick mode (two sizes, two concurrency levels, two runs).
    pub quick: bool,
    /// Keep the cloud node's state in this Redis server (the global tier);
    /// `None`: in memory like the other nodes.
    pub cloud_redis: Option<String>,
    /// Only these state sizes (MB) in the latency experiment (`Some(empty)`:
    /// no latency experiment); `None`: the mode's sizes.
    pub sizes: Option<Vec<u32>>,
    /// Only these concurrency levels in the throughput experiment
    /// (`Some(empty)`: none); `None`: the mode's levels.
    pub levels: Option<Vec<u32>>,
    /// Only these policies (labels of [`POLICIES`]); `None`: all five.
    pub policies: Option<Vec<String>>,
    /// Workflows per latency case (one at a time), the same at every size;
    /// `None`: quick mode's 2, else as many as fill [`CASE_BOUND_MS`] of lower
    /// bound, within [`MIN_RUNS`]..=[`MAX_RUNS`] ([`runs_for`]).
    pub runs: Option<u32>,
}

impl PaperOptions {
    /// The policies to run, checked against [`POLICIES`].
    fn chosen_policies(&self) -> Result<Vec<(&'static str, Policy, bool)>> {
        let Some(wanted) = &self.policies else { return Ok(POLICIES.to_vec()) };
        if let Some(unknown) = wanted.iter().find(|w| !POLICIES.iter().any(|(label, _, _)| label == w)) {
            let known: Vec<&str> = POLICIES.iter().map(|(label, _, _)| *label).collect();
            anyhow::bail!("unknown policy `{unknown}`; the policies are {}", known.join(", "));
        }
        Ok(POLICIES.iter().copied().filter(|(label, _, _)| wanted.iter().any(|w| w == label)).collect())
    }
}

/// One measured case.
#[derive(Debug, Clone)]
pub struct Case {
    /// `latency` or `throughput`.
    pub experiment: &'static str,
    /// Policy label.
    pub policy: &'static str,
    /// State size, MB.
    pub size_mb: u32,
    /// Concurrent workflows.
    pub concurrency: u32,
    /// Runs measured.
    pub runs: usize,
    /// Runs that failed (not in the figures).
    pub failed: usize,
    /// The failures, told apart by message with run ids and addresses left
    /// out ([`failure_kinds`]), commonest first.
    pub failure_kinds: Vec<(String, usize)>,
    /// End-to-end latency p50 / p95, ms.
    pub p50_ms: f64,
    /// p95, ms.
    pub p95_ms: f64,
    /// Workflows per minute.
    pub throughput_per_min: f64,
    /// Share of state reads served by the reading node, %.
    pub local_pct: f64,
    /// Share of hand-offs to another node that missed their Tmax, %.
    pub slo_violation_pct: f64,
    /// Mean time in state operations per run, ms.
    pub storage_ms: f64,
    /// Mean bytes sent between nodes per run (hand-offs, remote reads and
    /// prefetches).
    pub bytes_moved: f64,
    /// Median lower bound per run, ms: compute plus the least time the
    /// placement's hand-offs need on their routes at the scenario's rates,
    /// the links' jitter included ([`databelt_testbed::LinkSpec::expected_delivery_ms`]).
    pub bound_ms: f64,
    /// The same bound with every hand-off at its route's mean latency
    /// ([`databelt_testbed::LinkSpec::mean_delivery_ms`]; the bound before 2026-12-04).
    pub mean_bound_ms: f64,
    /// Median over the runs of each run's end-to-end latency over its own
    /// lower bound (the route a run's hand-offs crossed moves with the
    /// schedule, so the bound can differ between the runs of a case); what
    /// the 1.05× target is judged on. 0 without runs.
    pub ratio_p50: f64,
    /// 95% distribution-free interval of that median: (low, high, its exact
    /// coverage); `None` with fewer than 6 runs ([`crate::median::median_interval`]).
    pub ratio_interval: Option<(f64, f64, f64)>,
}

/// What one case produced.
struct Outcome {
    reports: Vec<RunReport>,
    failures: Vec<String>,
    wall: Duration,
    bounds: Vec<Bound>,
    /// Scenario time each report's bound was taken at.
    times: Vec<u64>,
}

/// A lower bound of a run or of a step's hand-offs, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bound {
    /// Each transfer's last byte at its expected time on the emulated route
    /// (latency, bandwidth and jitter).
    expected: f64,
    /// Each transfer's bytes at the route's mean latency and bandwidth.
    mean: f64,
}

impl std::ops::AddAssign for Bound {
    fn add_assign(&mut self, other: Bound) {
        self.expected += other.expected;
        self.mean += other.mean;
    }
}

/// The least time a step's hand-offs to other nodes need (each successor on
/// another node gets the step's output over the route between them).
fn handoff_bound(report: &RunReport, line: &databelt_net::workflow::StepLine, snapshot: &Snapshot) -> Bound {
    let r = &line.result;
    let node_of = |step: &str| report.steps.iter().find(|l| l.step == step).map(|l| l.result.node.clone());
    let mut bound = Bound::default();
    for h in &r.handoffs {
        for succ in &h.successors {
            let Some(consumer) = node_of(succ) else { continue };
            if consumer == r.node {
                continue;
            }
            if let Some(spec) = spec_on(snapshot, &r.node, &consumer) {
                bound += Bound {
                    expected: spec.expected_delivery_ms(r.output_bytes),
                    mean: spec.mean_delivery_ms(r.output_bytes),
                };
            }
        }
    }
    bound
}

/// Header of `steps.csv`: one line per step of every latency run — where
/// the time between the bound and the end-to-end latency goes.
const STEPS_HEADER: &str = "policy,size_mb,run,step,node,wall_ms,read_ms,invoke_ms,store_ms,handoff_ms,handoff_bound_ms,output_bytes,run_total_ms,run_bound_ms,reads,handoff_mean_bound_ms,run_mean_bound_ms\n";

/// `steps.csv` lines of one case's runs: per step the runner's wall time,
/// the host's read, invoke, store and hand-off times, and the hand-offs'
/// share of the bound (route latency one way plus bytes at its bandwidth,
/// jitter included; then without it, at the end of the line), and where
/// each input was read: `tier@node` per input, `;`-separated
/// (`local@sat4`, `locator@sat2`, …; [`read_list`]).
fn step_rows(policy: &str, size_mb: u32, outcome: &Outcome, topology: &Topology) -> String {
    let mut out = String::new();
    for (run, ((report, bound), t_ms)) in outcome.reports.iter().zip(&outcome.bounds).zip(&outcome.times).enumerate() {
        let snapshot = topology.snapshot(*t_ms);
        for line in &report.steps {
            let r = &line.result;
            let handoff_bound = handoff_bound(report, line, &snapshot);
            out += &format!(
                "{policy},{size_mb},{run},{},{},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{},{:.2},{:.2},{},{:.2},{:.2}\n",
                line.step,
                r.node,
                line.wall_micros as f64 / 1000.0,
                r.read_micros as f64 / 1000.0,
                r.invoke_micros as f64 / 1000.0,
                r.store_micros as f64 / 1000.0,
                r.handoffs.iter().map(|h| h.micros).sum::<u64>() as f64 / 1000.0,
                handoff_bound.expected,
                r.output_bytes,
                report.total_micros as f64 / 1000.0,
                bound.expected,
                read_list(&r.inputs),
                handoff_bound.mean,
                bound.mean
            );
        }
    }
    out
}

/// Where a step's inputs were read, for `steps.csv`: `tier@node` per input
/// in the order the step read them, `;`-separated (no commas, so the CSV
/// needs no quoting); empty for a step that read no handed state.
fn read_list(inputs: &[databelt_net::workflow::protocol::InputRead]) -> String {
    inputs.iter().map(|i| format!("{}@{}", i.tier.name(), i.node)).collect::<Vec<_>>().join(";")
}

fn summarise(
    experiment: &'static str,
    policy: &'static str,
    size_mb: u32,
    concurrency: u32,
    outcome: &Outcome,
) -> Case {
    let (reports, wall, bounds) = (&outcome.reports, outcome.wall, &outcome.bounds);
    let e2e: Vec<f64> = reports.iter().map(|r| r.total_micros as f64 / 1000.0).collect();
    let (mut local, mut reads, mut viol, mut transfers) = (0u64, 0u64, 0u64, 0u64);
    for r in reports {
        local += r.reads.local;
        reads += r.reads.local + r.reads.locator + r.reads.neighbour + r.reads.cloud + r.reads.misses;
        viol += r.slo_violations;
        transfers += r.remote_handoffs;
    }
    let n = reports.len().max(1) as f64;
    let ratios: Vec<f64> = e2e.iter().zip(bounds).map(|(e, b)| e / b.expected.max(1e-9)).collect();
    Case {
        experiment,
        policy,
        size_mb,
        concurrency,
        runs: reports.len(),
        failed: outcome.failures.len(),
        failure_kinds: failure_kinds(&outcome.failures),
        p50_ms: percentile(&e2e, 50.0),
        p95_ms: percentile(&e2e, 95.0),
        throughput_per_min: reports.len() as f64 / wall.as_secs_f64().max(1e-9) * 60.0,
        local_pct: if reads == 0 { 0.0 } else { local as f64 * 100.0 / reads as f64 },
        slo_violation_pct: if transfers == 0 { 0.0 } else { viol as f64 * 100.0 / transfers as f64 },
        storage_ms: reports.iter().map(|r| r.counters.state_micros as f64 / 1000.0).sum::<f64>() / n,
        bytes_moved: reports.iter().map(|r| r.counters.remote_bytes as f64).sum::<f64>() / n,
        bound_ms: percentile(&bounds.iter().map(|b| b.expected).collect::<Vec<_>>(), 50.0),
        mean_bound_ms: percentile(&bounds.iter().map(|b| b.mean).collect::<Vec<_>>(), 50.0),
        ratio_p50: median(&ratios).unwrap_or(0.0),
        ratio_interval: median_interval(&ratios, 0.95),
    }
}

/// Lower bound of one run: the functions' compute time plus, for every
/// hand-off, the least time its bytes need from the producer's node to the
/// consumer's at the scenario's rates now (one way, no acknowledgement):
/// with the links' jitter, the expected arrival of the last byte (see
/// [`databelt_testbed::LinkSpec::expected_delivery_ms`]), and at the mean latency.
fn lower_bound(report: &RunReport, topology: &Topology, t_ms: u64) -> Bound {
    let snapshot = topology.snapshot(t_ms);
    let mut bound = Bound::default();
    for line in &report.steps {
        let compute = line.result.invoke_micros as f64 / 1000.0;
        bound += Bound { expected: compute, mean: compute };
        bound += handoff_bound(report, line, &snapshot);
    }
    bound
}

async fn run_case(
    runner: &Runner,
    placement: &PlacementClient,
    topology: &Topology,
    input: &[u8],
    options: &RunOptions,
    concurrency: u32,
    into: &mut Outcome,
) {
    let started = Instant::now();
    let results = join_all((0..concurrency).map(|_| runner.run(input.to_vec(), options))).await;
    into.wall += started.elapsed();
    let t_ms = placement.cached().map(|(_, t)| t).unwrap_or(0);
    for r in results {
        match r {
            Ok(report) => {
                into.bounds.push(lower_bound(&report, topology, t_ms));
                into.times.push(t_ms);
                into.reports.push(report);
            }
            Err(e) => into.failures.push(e.to_string()),
        }
    }
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            reports: Vec::new(),
            failures: Vec::new(),
            wall: Duration::ZERO,
            bounds: Vec::new(),
            times: Vec::new(),
        }
    }
}

/// Run the evaluation and write the results; returns the cases.
pub async fn run(options: PaperOptions) -> Result<Vec<Case>> {
    let topology = Topology::from_file(&options.scenario)?.compressed(options.time_scale);
    let dir = tempfile_dir()?;
    let host = HostConfig {
        backend: BackendConfig::Memory,
        max_concurrent_instances: 64,
        max_memory_bytes: 512 * 1024 * 1024,
        max_output_bytes: 256 * 1024 * 1024,
        deadline_ms: 300_000,
        limits: databelt_host::StateLimits { max_value_bytes: 64 * 1024 * 1024, ..Default::default() },
        cache_dir: Some(dir.join("cache")),
        ..HostConfig::default()
    };
    let cluster = Cluster::start(
        topology.clone(),
        ClusterOptions {
            placement_listen: "127.0.0.1:0".parse()?,
            host,
            data_dir: dir.clone(),
            peer_timeout: Duration::from_secs(600),
            advertise: None,
            emulate: Some(Duration::from_millis(50)),
            insecure_development: false,
            replication: Default::default(),
            cloud_backend: options
                .cloud_redis
                .as_ref()
                .map(|url| BackendConfig::Redis(databelt_host::state::RedisConfig::new(url.clone()))),
        },
    )
    .await?;
    let placement = PlacementClient::new(&cluster.placement_url, &cluster.credentials, Duration::from_secs(2))?;
    placement.refresh().await?;
    let runner =
        Runner::load(&options.workflow, placement.clone(), Some(dir.join("cache"))).await.with_context(|| {
            format!("loading {} (build the components first: scripts/bench-paper.sh)", options.workflow.display())
        })?;
    // Functions are deployed before anything is measured (the first run
    // would otherwise count the uploads and compilations).
    runner.deploy().await.context("deploying the workflow's functions")?;
    let scene = |mb: u32| -> Result<Vec<u8>> {
        let input = serde_json::json!({"seed": 42, "tiles": mb, "side": 1000});
        let schema = runner.input_schema().ok_or_else(|| anyhow::anyhow!("the workflow has no entry step"))?;
        Ok(schema::json_to_postcard(schema, &input)?)
    };
    let (mut sizes, runs, mut levels): (Vec<u32>, u32, Vec<u32>) = if options.quick {
        (vec![1, 5], 2, vec![5, 10])
    } else {
        ((0..=10).map(|i| if i == 0 { 1 } else { i * 5 }).collect(), MIN_RUNS, (1..=10).map(|i| i * 5).collect())
    };
    if let Some(chosen) = &options.sizes {
        sizes.clone_from(chosen);
    }
    if let Some(chosen) = &options.levels {
        levels.clone_from(chosen);
    }
    let runs = options.runs.or(options.quick.then_some(runs));
    let policies = options.chosen_policies()?;
    let total = (sizes.len() + levels.len()) * policies.len();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let mut cases = Vec::new();
    let mut steps_csv = String::from(STEPS_HEADER);
    for &mb in &sizes {
        let input = scene(mb)?;
        for &(label, policy, fusion) in &policies {
            bar.set_message(format!("latency {mb} MB {label}"));
            let o = RunOptions {
                policy,
                fusion: Some(fusion),
                tmax_ms: Some(tmax_for(f64::from(mb))),
                ..RunOptions::default()
            };
            let mut outcome = Outcome::new();
            run_case(&runner, &placement, &topology, &input, &o, 1, &mut outcome).await;
            // The count is fixed by the first run's bound (a model figure,
            // not a sample of the jitter), so when to stop depends on no
            // measured latency.
            let wanted = runs.unwrap_or_else(|| runs_for(outcome.bounds.first().map_or(0.0, |b| b.expected)));
            for _ in 1..wanted {
                run_case(&runner, &placement, &topology, &input, &o, 1, &mut outcome).await;
            }
            cases.push(summarise("latency", label, mb, 1, &outcome));
            steps_csv += &step_rows(label, mb, &outcome, &topology);
            bar.inc(1);
            log_case(&bar, cases.last());
        }
    }
    let input = scene(2)?;
    for &n in &levels {
        for &(label, policy, fusion) in &policies {
            bar.set_message(format!("throughput {n} concurrent {label}"));
            let o = RunOptions { policy, fusion: Some(fusion), tmax_ms: Some(tmax_for(2.0)), ..RunOptions::default() };
            let mut outcome = Outcome::new();
            run_case(&runner, &placement, &topology, &input, &o, n, &mut outcome).await;
            cases.push(summarise("throughput", label, 2, n, &outcome));
            bar.inc(1);
            log_case(&bar, cases.last());
        }
    }
    bar.finish_with_message("done");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&options.out).with_context(|| format!("cannot create {}", options.out.display()))?;
    write_csv(&options.out.join("paper.csv"), &cases)?;
    let steps_path = options.out.join("steps.csv");
    std::fs::write(&steps_path, steps_csv).with_context(|| format!("cannot write {}", steps_path.display()))?;
    std::fs::write(options.out.join("summary.md"), summary(&cases, &options))?;
    let size = |c: &Case| (f64::from(c.size_mb), c.p50_ms);
    plot(&options.out.join("latency.svg"), &cases, "latency", "state size (MB)", "end-to-end p50 (ms)", size, true)?;
    let per_concurrency = |c: &Case| (f64::from(c.concurrency), c.throughput_per_min);
    plot(
        &options.out.join("throughput.svg"),
        &cases,
        "throughput",
        "concurrent workflows",
        "workflows / min",
        per_concurrency,
        false,
    )?;
    Ok(cases)
}

/// Without a terminal the bar is hidden: log one line per case instead.
fn log_case(bar: &indicatif::ProgressBar, case: Option<&Case>) {
    if let (true, Some(c)) = (bar.is_hidden(), case) {
        eprintln!(
            "[{}/{}] {} {} MB ×{} {}: p50 {:.0} ms, {:.1}/min, local {:.0}%, failed {}",
            bar.position(),
            bar.length().unwrap_or(0),
            c.experiment,
            c.size_mb,
            c.concurrency,
            c.policy,
            c.p50_ms,
            c.throughput_per_min,
            c.local_pct,
            c.failed
        );
    }
}

/// The failures of a case told apart by what they say: each message with
/// its run ids (`…-run-…`) and socket addresses (`127.0.0.1:40663`) replaced
/// by `<run>` and `<addr>`, counted, commonest first (ties in the order
/// first seen).
pub fn failure_kinds(failures: &[String]) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for failure in failures {
        let shape = failure_shape(failure);
        match kinds.iter_mut().find(|(k, _)| *k == shape) {
            Some((_, n)) => *n += 1,
            None => kinds.push((shape, 1)),
        }
    }
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    kinds
}

/// `message` with run ids and socket addresses masked (see [`failure_kinds`]).
fn failure_shape(message: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let trimmed = word.trim_end_matches(['.', ':']);
        let tail = &word[trimmed.len()..];
        let is_addr = trimmed.rsplit_once(':').is_some_and(|(host, port)| {
            !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && host.parse::<std::net::IpAddr>().is_ok()
        });
        if trimmed.contains("-run-") {
            out.push_str("<run>");
            out.push_str(tail);
        } else if is_addr {
            out.push_str("<addr>");
            out.push_str(tail);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in message.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("databelt-paper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn write_csv(path: &Path, cases: &[Case]) -> Result<()> {
    let mut text = String::from(
        "experiment,policy,size_mb,concurrency,runs,failed,e2e_p50_ms,e2e_p95_ms,throughput_per_min,local_availability_pct,slo_violation_pct,storage_op_ms,bytes_moved,lower_bound_ms,mean_latency_bound_ms,run_bound_ratio_p50,run_bound_ratio_low95,run_bound_ratio_high95\n",
    );
    for c in cases {
        let (low, high) = match c.ratio_interval {
            Some((low, high, _)) => (format!("{low:.3}"), format!("{high:.3}")),
            None => (String::new(), String::new()),
        };
        text += &format!(
            "{},{},{},{},{},{},{:.1},{:.1},{:.2},{:.1},{:.1},{:.1},{:.0},{:.1},{:.1},{:.3},{low},{high}\n",
            c.experiment,
            c.policy,
            c.size_mb,
            c.concurrency,
            c.runs,
            c.failed,
            c.p50_ms,
            c.p95_ms,
            c.throughput_per_min,
            c.local_pct,
            c.slo_violation_pct,
            c.storage_ms,
            c.bytes_moved,
            c.bound_ms,
            c.mean_bound_ms,
            c.ratio_p50
        );
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn find<'a>(cases: &'a [Case], experiment: &str, policy: &str, size: u32, n: u32) -> Option<&'a Case> {
    cases.iter().find(|c| c.experiment == experiment && c.policy == policy && c.size_mb == size && c.concurrency == n)
}

/// The Markdown summary: both tables and the targets, met or not.
pub fn summary(cases: &[Case], options: &PaperOptions) -> String {
    let mut md = format!(
        "# Databelt paper evaluation ({})\n\nScenario `{}`, schedule ×{}, every link emulated; workflow `{}`.\n\n",
        match (
            options.quick,
            options.sizes.is_some() || options.levels.is_some() || options.policies.is_some() || options.runs.is_some(),
        ) {
            (_, true) => "partial: chosen sizes, levels, policies or runs",
            (true, false) => "quick",
            (false, false) => "full",
        },
        options.scenario.display(),
        options.time_scale,
        options.workflow.display()
    );
    md += "## Latency (one workflow at a time)\n\n| size MB | policy | p50 ms | p95 ms | local % | SLO viol. % | storage ms | bytes moved | bound ms | p50/bound | p50/mean-latency bound | runs | run/bound p50 [95%] |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for c in cases.iter().filter(|c| c.experiment == "latency") {
        md += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} |\n",
            c.size_mb,
            c.policy,
            c.p50_ms,
            c.p95_ms,
            c.local_pct,
            c.slo_violation_pct,
            c.storage_ms,
            c.bytes_moved,
            c.bound_ms,
            c.p50_ms / c.bound_ms.max(1e-9),
            c.p50_ms / c.mean_bound_ms.max(1e-9),
            c.runs,
            ratio_with_interval(c)
        );
    }
    md += "\n## Throughput (2 MB states)\n\n| concurrent | policy | workflows/min | p50 ms | p95 ms | local % | SLO viol. % |\n|---|---|---|---|---|---|---|\n";
    for c in cases.iter().filter(|c| c.experiment == "throughput") {
        md += &format!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} |\n",
            c.concurrency, c.policy, c.throughput_per_min, c.p50_ms, c.p95_ms, c.local_pct, c.slo_violation_pct
        );
    }
    let failed: Vec<&Case> = cases.iter().filter(|c| c.failed > 0).collect();
    if !failed.is_empty() {
        md += "\n## Failed runs (left out of the figures)\n\n";
        for c in failed {
            md +=
                &format!("- {} {} MB ×{} {}: {} failed\n", c.experiment, c.size_mb, c.concurrency, c.policy, c.failed);
            for (message, n) in &c.failure_kinds {
                md += &format!("  - {n}× {message}\n");
            }
        }
    }
    md += "\n## Targets\n\n";
    md += &targets(cases);
    md += "- fusion ≥ 50% lower storage-op latency at B = 5: measured by `cargo bench -p databelt-host --bench fusion` (see docs/continuum.md)\n";
    md
}

/// A case's median run/bound ratio with its 95% interval, `1.03 [1.01–1.05]`
/// (`1.03 [–]` with too few runs for one).
fn ratio_with_interval(c: &Case) -> String {
    match c.ratio_interval {
        Some((low, high, _)) => format!("{:.2} [{low:.2}–{high:.2}]", c.ratio_p50),
        None => format!("{:.2} [–]", c.ratio_p50),
    }
}

/// The evaluation's targets, each with the policy it is judged on and its
/// figure; a target whose cases were not run says so instead of a verdict.
fn targets(cases: &[Case]) -> String {
    let check = |ok: bool| if ok { "met" } else { "**not met**" };
    let worst = |v: &[(u32, f64)]| v.iter().map(|x| x.1).fold(0.0f64, f64::max);
    let sizes = |v: &[(u32, f64)]| v.iter().map(|(s, r)| format!("{s} MB {r:.2}")).collect::<Vec<_>>().join(", ");
    let latency = |policy: &str| -> Vec<&Case> {
        cases.iter().filter(|c| c.experiment == "latency" && c.policy == policy).collect()
    };
    let mut md = String::new();
    let e2e: Vec<(u32, f64)> = latency("databelt+fusion")
        .iter()
        .filter_map(|c| {
            let s = find(cases, "latency", "stateless", c.size_mb, 1)?;
            Some((c.size_mb, c.p50_ms / s.p50_ms.max(1e-9)))
        })
        .collect();
    md += &if e2e.is_empty() {
        "- databelt+fusion end to end ≤ 0.30× stateless at every size: not measured (no latency cases of both)\n".into()
    } else {
        format!(
            "- databelt+fusion end to end ≤ 0.30× stateless at every size: worst {:.2}× ({}) — {}\n",
            worst(&e2e),
            check(worst(&e2e) <= 0.30),
            sizes(&e2e)
        )
    };
    let thr: Vec<(u32, f64)> = cases
        .iter()
        .filter(|c| c.experiment == "throughput" && c.policy == "databelt+fusion")
        .filter_map(|c| {
            let s = find(cases, "throughput", "stateless", 2, c.concurrency)?;
            Some((c.concurrency, c.throughput_per_min / s.throughput_per_min.max(1e-9)))
        })
        .collect();
    md += &if thr.is_empty() {
        "- databelt+fusion throughput ≥ 2× stateless: not measured (no throughput cases of both)\n".into()
    } else {
        let least = thr.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
        format!("- databelt+fusion throughput ≥ 2× stateless: least {least:.2}× ({})\n", check(least >= 2.0))
    };
    let fused: Vec<&Case> = cases.iter().filter(|c| c.policy == "databelt+fusion").collect();
    if !fused.is_empty() {
        let local = fused.iter().map(|c| c.local_pct).fold(f64::INFINITY, f64::min);
        md += &format!(
            "- databelt+fusion local state availability ≥ 95%: least {local:.1}% ({})\n",
            check(local >= 95.0)
        );
        let viol = fused.iter().map(|c| c.slo_violation_pct).fold(0.0f64, f64::max);
        md += &format!("- databelt+fusion 0 SLO violations: most {viol:.1}% ({})\n", check(viol == 0.0));
    }
    for policy in ["databelt", "databelt+fusion"] {
        let cases = latency(policy);
        let bound: Vec<(u32, f64)> = cases.iter().map(|c| (c.size_mb, c.ratio_p50)).collect();
        let Some(worst_case) = cases.iter().max_by(|a, b| a.ratio_p50.total_cmp(&b.ratio_p50)) else {
            continue;
        };
        let over: Vec<(u32, f64)> = bound.iter().copied().filter(|x| x.1 > 1.05).collect();
        let interval = match worst_case.ratio_interval {
            Some((low, high, _)) => format!("95% interval {low:.2}–{high:.2}"),
            None => format!("{} runs: too few for a 95% interval", worst_case.runs),
        };
        md += &format!(
            "- {policy} within 1.05× of the lower bound at every size (median run/bound): worst {:.2}× at {} MB, {interval} ({}){}\n",
            worst(&bound),
            worst_case.size_mb,
            check(over.is_empty()),
            if over.is_empty() { String::new() } else { format!(" — over at {}", sizes(&over)) }
        );
    }
    md
}

fn plot(
    path: &Path,
    cases: &[Case],
    experiment: &str,
    x_desc: &str,
    y_desc: &str,
    point: impl Fn(&Case) -> (f64, f64),
    with_bound: bool,
) -> Result<()> {
    let chosen: Vec<&Case> = cases.iter().filter(|c| c.experiment == experiment).collect();
    let x_max = chosen.iter().map(|c| point(c).0).fold(1.0f64, f64::max) * 1.05;
    let y_max = chosen.iter().map(|c| point(c).1).fold(1.0f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{experiment} per policy"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| err(&e))?;
    let colours = [RED, BLUE, CYAN, GREEN, MAGENTA];
    for ((label, _, _), colour) in POLICIES.iter().zip(colours) {
        let mut points: Vec<(f64, f64)> = chosen.iter().filter(|c| c.policy == *label).map(|c| point(c)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled()))).map_err(|e| err(&e))?;
    }
    // The lower bound of the databelt+fusion runs (compute plus the least
    // transfer time their placement forces), dashed, beside the policies.
    if with_bound {
        let mut points: Vec<(f64, f64)> = chosen
            .iter()
            .filter(|c| c.policy == "databelt+fusion" && c.bound_ms > 0.0)
            .map(|c| (point(c).0, c.bound_ms))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = BLACK.stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(points, 6, 4, style))
            .map_err(|e| err(&e))?
            .label("lower bound (databelt+fusion)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    // Latency and throughput both rise to the right: the upper left is free
    // of data.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmax_follows_the_paper_and_interpolates() {
        assert_eq!(tmax_for(1.0), 100.0);
        assert_eq!(tmax_for(50.0), 710.0);
        assert_eq!(tmax_for(2.0), 112.5);
        assert_eq!(tmax_for(60.0), 710.0);
    }

    #[test]
    fn failures_are_counted_by_what_they_say_not_by_run_or_port() {
        let failures = [
            "step `alarm` on node `cloud`: peer 127.0.0.1:7200: unavailable: input state `wildfire-run-18ede01e8f29b662-119/confirm` is on no reachable node; could not be asked (4 tries): peer 127.0.0.1:40663: error sending request",
            "step `mark` on node `sat4`: peer 127.0.0.1:7205: unavailable: input state `wildfire-run-18eddfc1b2ca15ba-15/preprocess` is on no reachable node",
            "step `alarm` on node `cloud`: peer 127.0.0.1:7200: unavailable: input state `wildfire-run-18ede01e8f29b662-7/confirm` is on no reachable node; could not be asked (4 tries): peer 127.0.0.1:35813: error sending request",
        ]
        .map(String::from);
        let kinds = failure_kinds(&failures);
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert_eq!(kinds[0].1, 2);
        assert_eq!(
            kinds[0].0,
            "step `alarm` on node `cloud`: peer <addr>: unavailable: input state `<run>/confirm` is on no reachable node; could not be asked (4 tries): peer <addr>: error sending request"
        );
        assert_eq!(
            kinds[1],
            (failures[1].replace("127.0.0.1:7205", "<addr>").replace("wildfire-run-18eddfc1b2ca15ba-15", "<run>"), 1)
        );
        // Nothing to mask: the message stays as it is.
        assert_eq!(
            failure_kinds(&["deadline exceeded after 300000 ms.".into()]),
            [("deadline exceeded after 300000 ms.".into(), 1)]
        );
        assert!(failure_kinds(&[]).is_empty());
    }

    fn case(experiment: &'static str, policy: &'static str, size_mb: u32, p50_ms: f64, bound_ms: f64) -> Case {
        Case {
            experiment,
            policy,
            size_mb,
            concurrency: 1,
            runs: 3,
            failed: 0,
            failure_kinds: Vec::new(),
            p50_ms,
            p95_ms: p50_ms,
            throughput_per_min: 60_000.0 / p50_ms,
            local_pct: 100.0,
            slo_violation_pct: 0.0,
            storage_ms: 1.0,
            bytes_moved: 1.0,
            bound_ms,
            mean_bound_ms: bound_ms,
            ratio_p50: p50_ms / bound_ms,
            ratio_interval: None,
        }
    }

    #[test]
    fn a_case_runs_until_its_bounds_fill_the_budget_within_the_limits() {
        assert_eq!(runs_for(570.0), MAX_RUNS, "1 MB stated: 35 wanted, capped");
        assert_eq!(runs_for(2200.0), 10);
        assert_eq!(runs_for(4320.0), 5);
        assert_eq!(runs_for(CASE_BOUND_MS / 2.0), MIN_RUNS, "never under the least");
        assert_eq!(runs_for(21_000.0), MIN_RUNS);
        for nonsense in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(runs_for(nonsense), MIN_RUNS, "{nonsense}");
        }
    }

    #[test]
    fn targets_name_their_policy_list_sizes_over_the_bound_and_skip_what_was_not_run() {
        let mut fused = case("latency", "databelt+fusion", 1, 618.0, 600.0);
        fused.ratio_interval = Some((1.01, 1.06, 0.96));
        let cases = [
            case("latency", "stateless", 1, 2000.0, 600.0),
            case("latency", "databelt", 1, 654.0, 600.0),
            case("latency", "databelt", 5, 2040.0, 2000.0),
            fused,
        ];
        let md = targets(&cases);
        assert!(
            md.contains(
                "databelt+fusion end to end ≤ 0.30× stateless at every size: worst 0.31× (**not met**) — 1 MB 0.31"
            ),
            "{md}"
        );
        assert!(md.contains("databelt+fusion throughput ≥ 2× stateless: not measured"), "{md}");
        assert!(md.contains("- databelt within 1.05× of the lower bound at every size (median run/bound): worst 1.09× at 1 MB, 3 runs: too few for a 95% interval (**not met**) — over at 1 MB 1.09\n"), "{md}");
        assert!(
            md.contains("- databelt+fusion within 1.05× of the lower bound at every size (median run/bound): worst 1.03× at 1 MB, 95% interval 1.01–1.06 (met)\n"),
            "{md}"
        );
        assert!(!md.contains("inf"), "{md}");
        assert_eq!(
            targets(&[]),
            "- databelt+fusion end to end ≤ 0.30× stateless at every size: not measured (no latency cases of both)\n- databelt+fusion throughput ≥ 2× stateless: not measured (no throughput cases of both)\n"
        );
    }

    #[test]
    fn reads_are_listed_as_tier_at_node_without_commas() {
        use databelt_net::continuum::ReadTier;
        use databelt_net::workflow::protocol::InputRead;
        let read = |tier, node: &str| InputRead {
            key: "r/a".into(),
            locator_node: "sat4".into(),
            tier,
            node: node.into(),
            bytes: 1,
            micros: 1,
        };
        assert_eq!(read_list(&[]), "");
        let list = read_list(&[read(ReadTier::Local, "sat4"), read(ReadTier::Neighbour, "sat5")]);
        assert_eq!(list, "local@sat4;neighbour@sat5");
        assert!(!list.contains(','));
    }
}
