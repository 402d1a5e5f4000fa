//! The scheduler evaluation: a simulated day on a constellation generated
//! from orbits, with a stream of workflows from ground regions, placed by
//! the Databelt scheduler and by the paper's baselines (first-fit,
//! round-robin, random) on the same stream (`databelt bench scheduler`).
//!
//! Each workflow is a chain of steps. Its sensor data appear on a satellite
//! over the region (one its ground station sees); every step is placed by
//! the policy under test when its predecessor starts (so its input can move
//! ahead, as on Databelt's data path), runs for its duration on that node
//! (taking cpu, memory and power there, heating it and draining or charging
//! its battery by the node's models), and hands its output to the next step
//! — the last one to the cloud.
//!
//! Measured per policy:
//!
//! - **SLO satisfaction**: steps whose input transfer (path latency plus
//!   serialisation at the bottleneck, at the moment it moves) fit the step's
//!   `tmax_ms`, over all steps;
//! - **temperature-limit violations**: steps that end with their node at or
//!   over its `max_temperature_c`;
//! - **battery depletions**: steps that leave their satellite below the 20%
//!   reserve;
//! - **hand-off bytes**: bytes × hops moved between steps and to the cloud;
//! - **re-placements forced by link windows**: steps whose node, chosen
//!   ahead, could no longer be reached from the input when the input moved
//!   (a link window closed), so the step was placed again;
//! - **re-placements forced by node state**: steps whose node, chosen ahead,
//!   no longer passed the policy's filters when the step started (it had
//!   filled up, heated or drained since), so the step was placed again;
//! - **unplaced**: steps no node could take (the workflow stops there).
//!
//! The simulation is deterministic for a seed; the same stream of workflows
//! (regions, sizes, durations) is offered to every policy.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use databelt_placement::Topology;
use databelt_placement::constellation::{self, CloudSite, ConstellationSpec, Shell};
use databelt_placement::scheduler::{
    Demand, Endpoint, NodeState, Policy, PolicyState, Scheduler, SchedulerConfig, View, models,
};
use databelt_placement::{Node, NodeKind, Resources, Snapshot};
use plotters::prelude::*;
use rand::{Rng, SeedableRng};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The constellation.
    pub spec: ConstellationSpec,
    /// Simulated time, ms.
    pub duration_ms: u64,
    /// A workflow starts this often, ms.
    pub interval_ms: u64,
    /// Steps per workflow.
    pub steps: usize,
    /// Input size of a step, bytes (uniform in the range).
    pub bytes: (u64, u64),
    /// Running time of a step, ms (uniform in the range).
    pub step_ms: (u64, u64),
    /// CPU cores, memory (MiB) and power (W) a step takes.
    pub cpu: f64,
    /// Memory a step takes, MiB.
    pub memory_mb: f64,
    /// Power a step draws, W.
    pub power_w: f64,
    /// A step's input transfer SLO, ms.
    pub tmax_ms: f64,
    /// The scheduler's settings (its policy is set per run).
    pub scheduler: SchedulerConfig,
    /// Seed of the workflow stream and the random baseline.
    pub seed: u64,
}

impl Options {
    /// The full evaluation: a Starlink-like shell (72 × 22 at 550 km, 53°),
    /// 100 ground stations, a cloud, one simulated day, a workflow every
    /// 10 s of three steps.
    pub fn full() -> Options {
        Options {
            spec: ConstellationSpec::starlink_like(),
            duration_ms: 24 * 3_600_000,
            interval_ms: 10_000,
            steps: 3,
            bytes: (1_000_000, 50_000_000),
            step_ms: (30_000, 600_000),
            cpu: 1.0,
            memory_mb: 1024.0,
            power_w: 20.0,
            tmax_ms: 800.0,
            scheduler: SchedulerConfig { vicinity_ms: Some(30.0), ..SchedulerConfig::default() },
            seed: 1,
        }
    }

    /// A small version for tests: 12 × 12 satellites, 12 stations, two
    /// simulated hours.
    pub fn quick() -> Options {
        let mut o = Options::full();
        o.spec = ConstellationSpec::single_shell(Shell {
            name: "sat".into(),
            altitude_km: 550.0,
            inclination_deg: 53.0,
            planes: 12,
            per_plane: 12,
            phasing: 5,
        });
        o.spec.ground_stations = constellation::spread_ground_stations(12, 60.0, 15.0);
        o.spec.cloud = Some(CloudSite::at("cloud", 50.1, 8.7));
        o.spec.sample_ms = 20_000;
        o.duration_ms = 2 * 3_600_000;
        o.interval_ms = 20_000;
        o.scheduler.vicinity_ms = Some(60.0);
        o
    }
}

/// One policy's results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The policy.
    pub policy: String,
    /// Workflows started.
    pub workflows: u64,
    /// Steps that ran.
    pub steps: u64,
    /// Steps whose input transfer met the SLO.
    pub slo_met: u64,
    /// Steps that ended at or over their node's temperature limit.
    pub temperature_violations: u64,
    /// Steps that left their satellite below the battery reserve.
    pub battery_depletions: u64,
    /// Bytes × hops moved between steps and to the cloud.
    pub handoff_byte_hops: u128,
    /// Steps placed again because a link window closed.
    pub replacements: u64,
    /// Steps placed again because their node's state changed.
    pub replacements_state: u64,
    /// Steps no node could take.
    pub unplaced: u64,
    /// Steps per hour of simulated time and how many met the SLO.
    pub hourly: Vec<(u64, u64)>,
    /// Median input-transfer time, ms.
    pub transfer_p50_ms: f64,
    /// Wall-clock time of the run, s.
    pub wall_s: f64,
}

impl Outcome {
    /// SLO satisfaction, percent of steps that ran.
    pub fn slo_pct(&self) -> f64 {
        if self.steps == 0 { 0.0 } else { 100.0 * self.slo_met as f64 / self.steps as f64 }
    }
}

/// A workflow as offered to every policy.
#[derive(Debug, Clone)]
struct Offered {
    start_ms: u64,
    station: usize,
    steps: Vec<(u64, u64)>, // (input bytes, duration)
}

fn offered(options: &Options, stations: usize) -> Vec<Offered> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let mut out = Vec::new();
    let mut t = 0;
    while t < options.duration_ms && stations > 0 {
        let steps = (0..options.steps)
            .map(|_| {
                (
                    rng.random_range(options.bytes.0..=options.bytes.1),
                    rng.random_range(options.step_ms.0..=options.step_ms.1),
                )
            })
            .collect();
        out.push(Offered { start_ms: t, station: rng.random_range(0..stations), steps });
        t += options.interval_ms;
    }
    out
}

/// Events of the simulation, ordered by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A workflow's data appear.
    Arrive(usize),
    /// Step `step` of workflow `workflow` ends on `node`.
    End { workflow: usize, step: usize, node: String },
}

/// Snapshots cached per sample (the scenario changes only at window edges).
struct Snapshots<'a> {
    topology: &'a Topology,
    bucket_ms: u64,
    current: Option<(u64, Snapshot)>,
}

impl<'a> Snapshots<'a> {
    fn at(&mut self, t_ms: u64) -> &Snapshot {
        let period = self.topology.period_ms.unwrap_or(u64::MAX).max(1);
        let bucket = (t_ms % period) / self.bucket_ms;
        if self.current.as_ref().is_some_and(|(b, _)| *b != bucket) {
            self.current = None;
        }
        let (topology, at) = (self.topology, bucket * self.bucket_ms);
        &self.current.get_or_insert_with(|| (bucket, topology.snapshot(at))).1
    }
}

struct Run<'a> {
    topology: &'a Topology,
    nodes: HashMap<&'a str, &'a Node>,
    options: &'a Options,
    scheduler: Scheduler,
    policy: PolicyState,
    states: HashMap<String, NodeState>,
    updated: HashMap<String, u64>,
    outcome: Outcome,
    transfers: Vec<f64>,
}

impl Run<'_> {
    fn resources(&self, id: &str) -> Option<&Resources> {
        self.nodes.get(id).map(|n| &n.resources)
    }

    fn kind(&self, id: &str) -> Option<NodeKind> {
        self.nodes.get(id).map(|n| n.kind)
    }

    /// Bring a node's battery and temperature to `t_ms` under its current
    /// load.
    fn advance(&mut self, id: &str, t_ms: u64) {
        let Some(r) = self.resources(id).cloned() else { return };
        let from = self.updated.get(id).copied().unwrap_or(0);
        let state = self.states.entry(id.to_string()).or_insert_with(|| NodeState::initial(&r));
        if t_ms > from {
            if let Some((_, end)) = models::battery_over(&r, state, self.topology.period_ms, from, t_ms - from, 0.0) {
                state.battery_wh = end;
            }
            state.temperature_c = models::temperature_after(&r, state, t_ms - from, 0.0);
        }
        self.updated.insert(id.to_string(), t_ms.max(from));
    }

    /// Whether `node`, chosen ahead, still takes the step under the policy.
    fn still_accepts(&self, snapshot: &Snapshot, demand: &Demand, node: &str) -> bool {
        let only = Demand {
            exclude: self.topology.nodes.iter().filter(|n| n.id != node).map(|n| n.id.clone()).collect(),
            ..demand.clone()
        };
        let view = View { topology: self.topology, snapshot, states: &self.states };
        match self.scheduler.candidates(&view, &only) {
            Ok(c) => c.first().is_some_and(|c| self.scheduler.accepts(c, demand).is_ok()),
            Err(_) => false,
        }
    }

    fn decide(&mut self, snapshot: &Snapshot, demand: &Demand) -> Option<String> {
        let view = View { topology: self.topology, snapshot, states: &self.states };
        self.scheduler.schedule(&view, demand, &mut self.policy).ok().map(|s| s.chosen)
    }

    fn demand(&self, input_at: &str, bytes: u64, duration_ms: u64, successor: Option<&str>) -> Demand {
        Demand {
            cpu: self.options.cpu,
            memory_mb: self.options.memory_mb,
            power_w: self.options.power_w,
            duration_ms,
            inputs: vec![Endpoint { node: input_at.to_string(), bytes }],
            successors: successor.map(|s| vec![Endpoint { node: s.to_string(), bytes }]).unwrap_or_default(),
            max_latency_ms: None,
            input_tmax_ms: Some(self.options.tmax_ms),
            ..Demand::default()
        }
    }

    /// Move `bytes` from `from` to `to` at `snapshot`'s instant: the
    /// transfer time and hops, `None` without a path.
    fn transfer(snapshot: &Snapshot, from: &str, to: &str, bytes: u64) -> Option<(f64, usize)> {
        if from == to {
            return Some((0.0, 0));
        }
        let hops = snapshot.route_hops(from, to)?;
        let latency: f64 = hops.iter().map(|h| h.link.latency_ms).sum();
        let bottleneck = hops.iter().map(|h| h.link.bandwidth_bps).fold(f64::INFINITY, f64::min);
        Some((latency + bytes as f64 * 8.0 / bottleneck * 1000.0, hops.len()))
    }
}

/// Simulate one policy over `workflows`.
fn simulate(topology: &Topology, options: &Options, policy: Policy, workflows: &[Offered]) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let config = SchedulerConfig { policy, seed: options.seed, ..options.scheduler.clone() };
    let mut run = Run {
        topology,
        nodes: topology.nodes.iter().map(|n| (n.id.as_str(), n)).collect(),
        options,
        scheduler: Scheduler::new(config)?,
        policy: PolicyState::new(options.seed),
        states: HashMap::new(),
        updated: HashMap::new(),
        outcome: Outcome { policy: policy_name(policy).into(), ..Outcome::default() },
        transfers: Vec::new(),
    };
    let stations: Vec<&str> =
        topology.nodes.iter().filter(|n| n.kind == NodeKind::Edge).map(|n| n.id.as_str()).collect();
    let cloud = topology.nodes.iter().find(|n| n.kind == NodeKind::Cloud).map(|n| n.id.clone());
    let mut snapshots = Snapshots { topology, bucket_ms: options.spec.sample_ms.max(1), current: None };
    let hours = options.duration_ms.div_ceil(3_600_000) as usize;
    run.outcome.hourly = vec![(0, 0); hours.max(1)];
    // Where each workflow's next step is placed ahead, and where its data are.
    let mut planned: HashMap<usize, String> = HashMap::new();
    let mut queue: BinaryHeap<Reverse<(u64, Event)>> =
        workflows.iter().enumerate().map(|(i, w)| Reverse((w.start_ms, Event::Arrive(i)))).collect();

    while let Some(Reverse((t, event))) = queue.pop() {
        if t >= options.duration_ms {
            continue;
        }
        let snapshot = snapshots.at(t);
        let (workflow, step, input_at) = match event {
            Event::Arrive(i) => {
                run.outcome.workflows += 1;
                // The data appear on a satellite the region's station sees.
                let station = stations[workflows[i].station];
                let Some(sensor) =
                    snapshot.neighbours(station).into_iter().find(|n| run.kind(n) == Some(NodeKind::Satellite))
                else {
                    // No satellite over the region now: nothing to process.
                    continue;
                };
                (i, 0, sensor)
            }
            Event::End { workflow, step, node } => {
                // The step is done: release its node.
                run.advance(&node, t);
                if let Some(s) = run.states.get_mut(&node) {
                    s.cpu_used = (s.cpu_used - options.cpu).max(0.0);
                    s.memory_used_mb = (s.memory_used_mb - options.memory_mb).max(0.0);
                    s.power_used_w = (s.power_used_w - options.power_w).max(0.0);
                }
                if step + 1 == options.steps {
                    // The last output goes to the cloud.
                    if let Some(cloud) = &cloud {
                        let bytes = workflows[workflow].steps[step].0;
                        if let Some((_, hops)) = Run::transfer(snapshot, &node, cloud, bytes) {
                            run.outcome.handoff_byte_hops += u128::from(bytes) * hops as u128;
                        }
                    }
                    continue;
                }
                (workflow, step + 1, node)
            }
        };
        let (bytes, duration) = workflows[workflow].steps[step];
        let next_hint = if step + 1 < options.steps { None } else { cloud.as_deref() };
        // The node chosen ahead, if it can still be reached; else place now.
        let ahead = planned.remove(&workflow);
        let demand = run.demand(&input_at, bytes, duration, next_hint);
        let node = match ahead {
            Some(n) if Run::transfer(snapshot, &input_at, &n, bytes).is_none() => {
                run.outcome.replacements += 1;
                run.decide(snapshot, &demand)
            }
            Some(n) if !run.still_accepts(snapshot, &demand, &n) => {
                run.outcome.replacements_state += 1;
                run.decide(snapshot, &demand)
            }
            Some(n) => Some(n),
            None => run.decide(snapshot, &demand),
        };
        let Some(node) = node else {
            run.outcome.unplaced += 1;
            continue;
        };
        let (transfer_ms, hops) = Run::transfer(snapshot, &input_at, &node, bytes).unwrap_or((f64::INFINITY, 0));
        run.outcome.handoff_byte_hops += u128::from(bytes) * hops as u128;
        run.outcome.steps += 1;
        let hour = ((t / 3_600_000) as usize).min(run.outcome.hourly.len() - 1);
        run.outcome.hourly[hour].0 += 1;
        if transfer_ms <= options.tmax_ms {
            run.outcome.slo_met += 1;
            run.outcome.hourly[hour].1 += 1;
        }
        if transfer_ms.is_finite() {
            run.transfers.push(transfer_ms);
        }
        // Take the node for the step and judge how it ends.
        run.advance(&node, t);
        let kind = run.kind(&node);
        if let (Some(r), Some(state)) = (run.resources(&node).cloned(), run.states.get_mut(&node)) {
            state.cpu_used += options.cpu;
            state.memory_used_mb += options.memory_mb;
            state.power_used_w += options.power_w;
            let after = models::temperature_after(&r, state, duration, 0.0);
            if r.max_temperature_c > 0.0 && after >= r.max_temperature_c {
                run.outcome.temperature_violations += 1;
            }
            if kind == Some(NodeKind::Satellite)
                && let Some((low, _)) = models::battery_over(&r, state, topology.period_ms, t, duration, 0.0)
                && low < r.battery_wh * options.scheduler.min_battery_pct / 100.0
            {
                run.outcome.battery_depletions += 1;
            }
        }
        // Place the next step ahead, from this node, so its input can move.
        if step + 1 < options.steps {
            let (next_bytes, next_duration) = workflows[workflow].steps[step + 1];
            let hint = if step + 2 < options.steps { None } else { cloud.as_deref() };
            let d = run.demand(&node, next_bytes, next_duration, hint);
            if let Some(next) = run.decide(snapshot, &d) {
                planned.insert(workflow, next);
            }
        }
        queue.push(Reverse((t + duration, Event::End { workflow, step, node })));
    }
    run.transfers.sort_by(f64::total_cmp);
    run.outcome.transfer_p50_ms = run.transfers.get(run.transfers.len() / 2).copied().unwrap_or(0.0);
    run.outcome.wall_s = started.elapsed().as_secs_f64();
    Ok(run.outcome)
}

/// The policies compared, in table order.
pub const POLICIES: [Policy; 4] = [Policy::Databelt, Policy::FirstFit, Policy::RoundRobin, Policy::Random];

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Databelt => "databelt",
        Policy::FirstFit => "first-fit",
        Policy::RoundRobin => "round-robin",
        Policy::Random => "random",
    }
}

/// Generate the constellation and simulate every policy on the same
/// workflow stream.
pub fn run(options: &Options) -> Result<(Topology, Vec<Outcome>)> {
    let topology = constellation::generate(&options.spec)?;
    let stations = topology.nodes.iter().filter(|n| n.kind == NodeKind::Edge).count();
    let workflows = offered(options, stations);
    let mut outcomes = Vec::new();
    for policy in POLICIES {
        outcomes.push(simulate(&topology, options, policy, &workflows)?);
    }
    Ok((topology, outcomes))
}

/// The results as a Markdown table with the setup above it.
pub fn markdown(topology: &Topology, options: &Options, outcomes: &[Outcome]) -> String {
    let sats = topology.nodes.iter().filter(|n| n.kind == NodeKind::Satellite).count();
    let stations = topology.nodes.iter().filter(|n| n.kind == NodeKind::Edge).count();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{sats} satellites, {stations} ground stations, a cloud; {:.1} simulated hours; a workflow of {} steps every \
         {} s from a random station's region; inputs {}–{} MB, steps {}–{} s, {} cpu / {} MiB / {} W each; input \
         transfer SLO {} ms; candidates within {} ms of the input.\n",
        options.duration_ms as f64 / 3_600_000.0,
        options.steps,
        options.interval_ms / 1000,
        options.bytes.0 / 1_000_000,
        options.bytes.1 / 1_000_000,
        options.step_ms.0 / 1000,
        options.step_ms.1 / 1000,
        options.cpu,
        options.memory_mb,
        options.power_w,
        options.tmax_ms,
        options.scheduler.vicinity_ms.map_or("∞".to_string(), |v| v.to_string()),
    );
    md += "| policy | steps | SLO met | transfer p50 | temperature violations | battery depletions | hand-off GB·hops | re-placements (link windows) | re-placements (node state) | unplaced |\n";
    md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for o in outcomes {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1}% | {:.0} ms | {} | {} | {:.1} | {} | {} | {} |",
            o.policy,
            o.steps,
            o.slo_pct(),
            o.transfer_p50_ms,
            o.temperature_violations,
            o.battery_depletions,
            o.handoff_byte_hops as f64 / 1e9,
            o.replacements,
            o.replacements_state,
            o.unplaced
        );
    }
    md
}

/// Write `scheduler.md`, `scheduler-slo.svg` (SLO satisfaction per hour)
/// and `scheduler-faults.svg` (violations, depletions, re-placements per
/// policy) into `out`.
pub fn write(out: &Path, topology: &Topology, options: &Options, outcomes: &[Outcome]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("scheduler.md"), markdown(topology, options, outcomes))?;
    plot_hourly(&out.join("scheduler-slo.svg"), outcomes)?;
    plot_faults(&out.join("scheduler-faults.svg"), outcomes)?;
    Ok(())
}

const COLOURS: [RGBColor; 4] = [RED, BLUE, GREEN, MAGENTA];

fn plot_hourly(path: &Path, outcomes: &[Outcome]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot {}: {e}", path.display());
    let hours = outcomes.iter().map(|o| o.hourly.len()).max().unwrap_or(1) as f64;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("SLO satisfaction per simulated hour", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..hours, 0f64..105f64)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("hour").y_desc("steps meeting the SLO, %").draw().map_err(|e| err(&e))?;
    for (o, colour) in outcomes.iter().zip(COLOURS) {
        let points: Vec<(f64, f64)> = o
            .hourly
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(h, (n, met))| (h as f64 + 0.5, 100.0 * *met as f64 / *n as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(o.policy.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    // The legend sits below the curves' usual range, off the data.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn plot_faults(path: &Path, outcomes: &[Outcome]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot {}: {e}", path.display());
    type Metric = (&'static str, fn(&Outcome) -> u64);
    let metrics: [Metric; 5] = [
        ("temperature violations", |o| o.temperature_violations),
        ("battery depletions", |o| o.battery_depletions),
        ("re-placed (links)", |o| o.replacements),
        ("re-placed (state)", |o| o.replacements_state),
        ("unplaced", |o| o.unplaced),
    ];
    let y_max = outcomes.iter().flat_map(|o| metrics.iter().map(move |(_, f)| f(o))).max().unwrap_or(1).max(1) as f64;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = outcomes.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("Faults per policy over the run", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..metrics.len() as f64, 0f64..y_max * 1.25)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(metrics.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.26 {
                metrics.get(i).map_or(String::new(), |m| m.0.to_string())
            } else {
                String::new()
            }
        })
        .y_desc("steps")
        .draw()
        .map_err(|e| err(&e))?;
    for (k, (o, colour)) in outcomes.iter().zip(COLOURS).enumerate() {
        let bars = metrics.iter().enumerate().map(|(i, (_, f))| {
            let x0 = i as f64 + 0.1 + 0.8 * k as f64 / n;
            let x1 = x0 + 0.8 / n * 0.9;
            Rectangle::new([(x0, 0.0), (x1, f(o) as f64)], colour.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(o.policy.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
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

    fn tiny() -> Options {
        let mut o = Options::quick();
        o.duration_ms = 1_800_000;
        o.interval_ms = 30_000;
        o
    }

    #[test]
    fn every_policy_sees_the_same_stream_and_the_run_is_deterministic() {
        let o = tiny();
        let (topology, first) = run(&o).unwrap();
        let (_, again) = run(&o).unwrap();
        let strip = |v: &[Outcome]| v.iter().map(|x| Outcome { wall_s: 0.0, ..x.clone() }).collect::<Vec<_>>();
        assert_eq!(strip(&first), strip(&again));
        assert!(first.iter().all(|x| x.workflows == first[0].workflows && x.workflows == 60), "{first:?}");
        assert!(first.iter().all(|x| x.steps > 0), "{first:?}");
        let md = markdown(&topology, &o, &first);
        for p in ["databelt", "first-fit", "round-robin", "random"] {
            assert!(md.contains(&format!("| {p} |")), "{md}");
        }
    }

    #[test]
    fn databelt_meets_the_slo_more_often_than_random_placement() {
        let (_, outcomes) = run(&tiny()).unwrap();
        let by = |p: &str| outcomes.iter().find(|o| o.policy == p).unwrap().clone();
        let (databelt, random) = (by("databelt"), by("random"));
        assert!(databelt.slo_pct() > random.slo_pct(), "{databelt:?} vs {random:?}");
        assert!(databelt.handoff_byte_hops < random.handoff_byte_hops, "{databelt:?} vs {random:?}");
        assert_eq!(databelt.temperature_violations, 0, "{databelt:?}");
    }

    #[test]
    fn results_are_written_as_markdown_and_svg() {
        let o = tiny();
        let (topology, outcomes) = run(&o).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &topology, &o, &outcomes).unwrap();
        for f in ["scheduler.md", "scheduler-slo.svg", "scheduler-faults.svg"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.len() > 200, "{f}");
        }
    }
}
