//! The Databelt scheduler: which node runs a step (pure logic).
//!
//! As in the paper's prototype, a decision has four stages:
//!
//! 1. **Candidates**: the nodes in the vicinity of the step's input (within
//!    `vicinity_ms` of network latency of it; every node when unset), of the
//!    kinds the step accepts.
//! 2. **Filters** ([`Filter`]): each candidate must pass every enabled one —
//!    resources (cpu, memory, and battery with the solar recharge over the
//!    orbit's sunlit/eclipse periods), network QoS (a path to every input
//!    now and to every successor at the hand-off, under the latency bound and
//!    over the bandwidth floor), link availability (the input paths stay up
//!    for the input transfer, the successor paths for the hand-off), temperature (the heating model's
//!    prediction under the step's load stays under the node's limit) and
//!    power budget.
//! 3. **Scores** ([`Score`]): normalised to 0–1 (latency and bandwidth
//!    against fixed references, so a node's score does not depend on the
//!    other candidates; heat on the paper's 65–75 °C ramp; battery as the
//!    lowest charge fraction over the step), weighted and summed.
//!    When the step has an input-transfer SLO (`input_tmax_ms`) and some
//!    survivors meet it, only those are ranked.
//! 4. **Commit**: the top `top` survivors, best first; equal scores are
//!    ordered by node id, so the same inputs always give the same answer.
//!
//! The baselines of the paper's evaluation live in the same code ([`Policy`]):
//! first-fit, round-robin and random choose among the candidates that pass
//! the resources filter alone.
//!
//! Filters and scores are traits: [`Scheduler::with_filter`] and
//! [`Scheduler::with_score`] plug in more. Which built-in ones run, their
//! weights and the thresholds come from [`SchedulerConfig`], which a
//! workflow can set for all its steps or per step.

pub mod filters;
pub mod models;
pub mod paths;
pub mod scores;

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topology::{Node, NodeKind, Resources, Snapshot, Topology};

pub use paths::PathSummary;

/// A node's changing state: what is in use and how charged and warm it is.
/// [`NodeState::initial`] reads it from the scenario's resources; a
/// simulation or the placement service updates it as steps run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeState {
    /// CPU cores in use.
    pub cpu_used: f64,
    /// Memory in use, MiB.
    pub memory_used_mb: f64,
    /// Power drawn by running work above idle, W.
    pub power_used_w: f64,
    /// Battery charge, Wh (meaningful with a battery model).
    pub battery_wh: f64,
    /// Current temperature, °C.
    pub temperature_c: f64,
}

impl NodeState {
    /// The state the scenario file describes: nothing running, the battery
    /// at `battery_pct` of its capacity, the stated temperature.
    pub fn initial(r: &Resources) -> NodeState {
        NodeState {
            battery_wh: r.battery_wh * r.battery_pct / 100.0,
            temperature_c: r.temperature_c,
            ..NodeState::default()
        }
    }
}

/// A node a step exchanges state with, and how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The node.
    pub node: String,
    /// Bytes moved between it and the chosen node.
    #[serde(default)]
    pub bytes: u64,
}

/// What a step needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Demand {
    /// CPU cores.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: f64,
    /// Power drawn while it runs, W.
    pub power_w: f64,
    /// Expected running time, ms.
    pub duration_ms: u64,
    /// Where its input state is (the first one anchors the vicinity).
    pub inputs: Vec<Endpoint>,
    /// Where its output goes, when known.
    pub successors: Vec<Endpoint>,
    /// Longest one-way path latency to any input or successor, ms.
    pub max_latency_ms: Option<f64>,
    /// Lowest bottleneck bandwidth to any input or successor, Mbit/s.
    pub min_bandwidth_mbps: f64,
    /// The step's SLO for moving its input (`tmax_ms`): when some nodes
    /// that pass every filter can fetch every input within it, only those
    /// are ranked (the others are rejected by `slo`); when none can, all
    /// survivors are (best effort, as the storage election does).
    pub input_tmax_ms: Option<f64>,
    /// Only nodes of these kinds (empty: any).
    pub kinds: Vec<NodeKind>,
    /// Nodes not to consider (e.g. tried already and unreachable).
    pub exclude: Vec<String>,
}

/// How a decision is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Filters, then weighted scores (the Databelt scheduler).
    #[default]
    Databelt,
    /// The first candidate (in scenario order) with the resources.
    FirstFit,
    /// The next candidate with the resources after the last one chosen.
    RoundRobin,
    /// A uniformly random candidate with the resources (seeded).
    Random,
}

/// The built-in filters, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterKind {
    /// [`filters::ResourcesFit`].
    Resources,
    /// [`filters::NetworkQos`].
    Network,
    /// [`filters::LinkAvailability`].
    Links,
    /// [`filters::Temperature`].
    Temperature,
    /// [`filters::PowerBudget`].
    Power,
}

impl FilterKind {
    /// Every built-in filter, in the order they run.
    pub const ALL: [FilterKind; 5] =
        [FilterKind::Resources, FilterKind::Network, FilterKind::Links, FilterKind::Temperature, FilterKind::Power];

    fn build(self) -> Box<dyn Filter> {
        match self {
            FilterKind::Resources => Box::new(filters::ResourcesFit),
            FilterKind::Network => Box::new(filters::NetworkQos),
            FilterKind::Links => Box::new(filters::LinkAvailability),
            FilterKind::Temperature => Box::new(filters::Temperature),
            FilterKind::Power => Box::new(filters::PowerBudget),
        }
    }
}

/// Weights of the built-in scores (0 turns one off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// [`scores::Latency`]: time to fetch the inputs and hand off the output.
    pub latency: f64,
    /// [`scores::Heat`]: the paper's 65–75 °C ramp.
    pub heat: f64,
    /// [`scores::Battery`]: lowest charge over the step.
    pub battery: f64,
    /// [`scores::Bandwidth`]: bottleneck bandwidth to inputs and successors.
    pub bandwidth: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { latency: 1.0, heat: 1.0, battery: 0.5, bandwidth: 0.25 }
    }
}

/// The scheduler's settings: a workflow's `[scheduler]` table, or a step's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Databelt, or one of the baselines.
    pub policy: Policy,
    /// The built-in filters that run (unset: all of them).
    pub filters: Option<Vec<FilterKind>>,
    /// Score weights.
    pub weights: Weights,
    /// Candidates lie within this latency of the first input, ms (unset:
    /// every node).
    pub vicinity_ms: Option<f64>,
    /// How many ranked nodes a decision commits (the first is chosen; the
    /// others are fall-backs).
    pub top: usize,
    /// Temperature at or below which the heat score is full, °C.
    pub heat_ok_c: f64,
    /// Temperature at or above which the heat score is zero, °C.
    pub heat_stop_c: f64,
    /// Battery charge a satellite keeps in reserve, percent of capacity: a
    /// step that would take it lower is filtered out.
    pub min_battery_pct: f64,
    /// Transfer time that halves the latency score when the step sets no
    /// `max_latency_ms`, ms.
    pub latency_ref_ms: f64,
    /// Bottleneck bandwidth that halves the bandwidth score, Mbit/s.
    pub bandwidth_ref_mbps: f64,
    /// Seed of the random baseline.
    pub seed: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            policy: Policy::Databelt,
            filters: None,
            weights: Weights::default(),
            vicinity_ms: None,
            top: 3,
            heat_ok_c: 65.0,
            heat_stop_c: 75.0,
            min_battery_pct: 20.0,
            latency_ref_ms: 100.0,
            bandwidth_ref_mbps: 100.0,
            seed: 0,
        }
    }
}

impl SchedulerConfig {
    /// Refuse settings that cannot mean anything.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadRequest(format!("scheduler: {m}")));
        let w = &self.weights;
        for (name, v) in [
            ("weights.latency", w.latency),
            ("weights.heat", w.heat),
            ("weights.battery", w.battery),
            ("weights.bandwidth", w.bandwidth),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} must be a non-negative number, got {v}"));
            }
        }
        if let Some(v) = self.vicinity_ms
            && (!v.is_finite() || v < 0.0)
        {
            return bad(format!("vicinity_ms must be a non-negative number, got {v}"));
        }
        if self.top == 0 {
            return bad("top must be at least 1".into());
        }
        if !(self.heat_ok_c.is_finite() && self.heat_stop_c.is_finite() && self.heat_ok_c < self.heat_stop_c) {
            return bad(format!("heat_ok_c ({}) must be below heat_stop_c ({})", self.heat_ok_c, self.heat_stop_c));
        }
        for (name, v) in [("latency_ref_ms", self.latency_ref_ms), ("bandwidth_ref_mbps", self.bandwidth_ref_mbps)] {
            if !v.is_finite() || v <= 0.0 {
                return bad(format!("{name} must be a positive number, got {v}"));
            }
        }
        if !(0.0..=100.0).contains(&self.min_battery_pct) {
            return bad(format!("min_battery_pct must be 0-100, got {}", self.min_battery_pct));
        }
        Ok(())
    }
}

/// One candidate as the filters and scores see it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The node.
    pub node: &'a Node,
    /// Its state now.
    pub state: NodeState,
    /// The path to each of the demand's inputs, in order (`None`: no path).
    pub inputs: Vec<Option<PathSummary>>,
    /// The path to each of its successors at the hand-off (the decision's
    /// instant plus the step's `duration_ms`), in order.
    pub successors: Vec<Option<PathSummary>>,
    /// The decision's instant, ms.
    pub t_ms: u64,
    /// The scenario's period (eclipse windows repeat with it).
    pub period_ms: Option<u64>,
}

impl Candidate<'_> {
    /// The paths to inputs and successors together.
    pub fn all_paths(&self) -> impl Iterator<Item = &Option<PathSummary>> {
        self.inputs.iter().chain(self.successors.iter())
    }
}

/// A filter: a candidate passes, or fails with a reason.
pub trait Filter: Send + Sync {
    /// Its name in decisions and rejections.
    fn name(&self) -> &'static str;
    /// `Err(reason)` when `candidate` cannot take the step.
    fn check(
        &self,
        candidate: &Candidate<'_>,
        demand: &Demand,
        config: &SchedulerConfig,
    ) -> std::result::Result<(), String>;
}

/// How a score's raw values become 0–1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Already 0–1, higher better.
    Absolute,
    /// Min–max over the survivors, lower raw value better.
    LowerIsBetter,
    /// Min–max over the survivors, higher raw value better.
    HigherIsBetter,
}

/// A score: a raw value per candidate, scaled to 0–1 across the survivors.
pub trait Score: Send + Sync {
    /// Its name in decisions.
    fn name(&self) -> &'static str;
    /// How its raw values are scaled.
    fn scale(&self) -> Scale;
    /// The raw value for `candidate` (finite).
    fn raw(&self, candidate: &Candidate<'_>, demand: &Demand, config: &SchedulerConfig) -> f64;
}

/// A node that passed every filter, with its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// The node.
    pub node: String,
    /// Weighted score, 0–1 (baselines: 0).
    pub score: f64,
    /// Highest one-way latency to an input or successor, ms.
    pub latency_ms: f64,
}

/// A candidate a filter turned away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The node.
    pub node: String,
    /// The filter's name.
    pub filter: String,
    /// Why.
    pub reason: String,
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The node that runs the step.
    pub chosen: String,
    /// The committed nodes, best first (`chosen` first).
    pub ranked: Vec<Ranked>,
    /// Candidates filtered out, with the first filter each failed.
    pub rejected: Vec<Rejection>,
    /// How many candidates the vicinity held.
    pub candidates: usize,
}

/// The round-robin baseline's position and the random baseline's generator,
/// kept between decisions.
#[derive(Debug, Clone)]
pub struct PolicyState {
    next: usize,
    rng: rand::rngs::StdRng,
}

impl PolicyState {
    /// A fresh state; `seed` drives the random baseline.
    pub fn new(seed: u64) -> PolicyState {
        PolicyState { next: 0, rng: rand::rngs::StdRng::seed_from_u64(seed) }
    }
}

/// The world a decision is taken in.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The scenario.
    pub topology: &'a Topology,
    /// Its live links at the decision's instant.
    pub snapshot: &'a Snapshot,
    /// Node states that differ from [`NodeState::initial`].
    pub states: &'a HashMap<String, NodeState>,
}

/// The scheduler: a configuration and the filters and scores it runs.
pub struct Scheduler {
    config: SchedulerConfig,
    filters: Vec<Box<dyn Filter>>,
    scores: Vec<(Box<dyn Score>, f64)>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .field("filters", &self.filters.iter().map(|x| x.name()).collect::<Vec<_>>())
            .field("scores", &self.scores.iter().map(|(s, w)| (s.name(), *w)).collect::<Vec<_>>())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler with the built-in filters and scores `config` enables.
    pub fn new(config: SchedulerConfig) -> Result<Scheduler> {
        config.validate()?;
        let filters = match &config.filters {
            None => FilterKind::ALL.iter().map(|k| k.build()).collect(),
            Some(kinds) => {
                let mut seen = Vec::new();
                for k in kinds {
                    if seen.contains(k) {
                        return Err(Error::BadRequest(format!("scheduler: filter {k:?} listed twice")));
                    }
                    seen.push(*k);
                }
                seen.into_iter().map(FilterKind::build).collect()
            }
        };
        let w = &config.weights;
        let scores: Vec<(Box<dyn Score>, f64)> = vec![
            (Box::new(scores::Latency), w.latency),
            (Box::new(scores::Heat), w.heat),
            (Box::new(scores::Battery), w.battery),
            (Box::new(scores::Bandwidth), w.bandwidth),
        ];
        Ok(Scheduler { config, filters, scores: scores.into_iter().filter(|(_, w)| *w > 0.0).collect() })
    }

    /// Add a filter of your own (runs after the built-in ones).
    pub fn with_filter(mut self, filter: Box<dyn Filter>) -> Scheduler {
        self.filters.push(filter);
        self
    }

    /// Add a score of your own with `weight` (> 0; others are ignored).
    pub fn with_score(mut self, score: Box<dyn Score>, weight: f64) -> Scheduler {
        if weight.is_finite() && weight > 0.0 {
            self.scores.push((score, weight));
        }
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The names of the filters that run, in order.
    pub fn filter_names(&self) -> Vec<&'static str> {
        self.filters.iter().map(|f| f.name()).collect()
    }

    /// Whether `candidate` passes every filter this scheduler runs (what a
    /// chosen node always does); `Err` names the first that fails.
    pub fn passes(&self, candidate: &Candidate<'_>, demand: &Demand) -> std::result::Result<(), Rejection> {
        for f in &self.filters {
            f.check(candidate, demand, &self.config).map_err(|reason| Rejection {
                node: candidate.node.id.clone(),
                filter: f.name().to_string(),
                reason,
            })?;
        }
        Ok(())
    }

    /// Whether `candidate` may take the step under this scheduler's policy:
    /// every filter for the Databelt policy, the resources filter for the
    /// baselines. For re-checking a node chosen ahead of time before the
    /// step starts there.
    pub fn accepts(&self, candidate: &Candidate<'_>, demand: &Demand) -> std::result::Result<(), Rejection> {
        match self.config.policy {
            Policy::Databelt => self.passes(candidate, demand),
            _ => {
                let fit = filters::ResourcesFit;
                fit.check(candidate, demand, &self.config).map_err(|reason| Rejection {
                    node: candidate.node.id.clone(),
                    filter: fit.name().into(),
                    reason,
                })
            }
        }
    }

    /// The candidates of a decision with their paths: the nodes of the
    /// accepted kinds within the vicinity of the first input, in scenario
    /// order. An input or successor the scenario does not have is an error.
    ///
    /// Paths to the inputs are those of `view.snapshot` (the input moves
    /// now); paths to the successors are those of the topology at the
    /// hand-off, `duration_ms` later (in a moving constellation the route
    /// the output takes is rarely the one that exists when the step starts).
    pub fn candidates<'a>(&self, view: &View<'a>, demand: &Demand) -> Result<Vec<Candidate<'a>>> {
        let snapshot = view.snapshot;
        let later = (!demand.successors.is_empty() && demand.duration_ms > 0)
            .then(|| view.topology.snapshot(snapshot.t_ms.saturating_add(demand.duration_ms)));
        let at_handoff = later.as_ref().unwrap_or(snapshot);
        let endpoint_paths = |endpoints: &[Endpoint], at: &Snapshot| -> Result<Vec<Vec<Option<PathSummary>>>> {
            endpoints
                .iter()
                .map(|e| {
                    let ix = at.index_of(&e.node).ok_or_else(|| Error::UnknownNode(e.node.clone()))?;
                    Ok(paths::from_node(at, ix))
                })
                .collect()
        };
        let inputs = endpoint_paths(&demand.inputs, snapshot)?;
        let successors = endpoint_paths(&demand.successors, at_handoff)?;
        let excluded: std::collections::HashSet<&str> = demand.exclude.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for node in &view.topology.nodes {
            if (!demand.kinds.is_empty() && !demand.kinds.contains(&node.kind)) || excluded.contains(node.id.as_str()) {
                continue;
            }
            let (Some(ix), Some(later_ix)) = (snapshot.index_of(&node.id), at_handoff.index_of(&node.id)) else {
                continue;
            };
            let to_inputs: Vec<Option<PathSummary>> =
                inputs.iter().map(|m| m.get(ix.index()).copied().flatten()).collect();
            if let (Some(limit), Some(first)) = (self.config.vicinity_ms, to_inputs.first())
                && first.is_none_or(|p| p.latency_ms > limit)
            {
                continue;
            }
            out.push(Candidate {
                node,
                state: view.states.get(&node.id).cloned().unwrap_or_else(|| NodeState::initial(&node.resources)),
                inputs: to_inputs,
                successors: successors.iter().map(|m| m.get(later_ix.index()).copied().flatten()).collect(),
                t_ms: snapshot.t_ms,
                period_ms: view.topology.period_ms,
            });
        }
        Ok(out)
    }

    /// Decide where `demand` runs. `state` carries the baselines' cursor and
    /// generator between decisions (the Databelt policy does not use it).
    pub fn schedule(&self, view: &View<'_>, demand: &Demand, state: &mut PolicyState) -> Result<Schedule> {
        let candidates = self.candidates(view, demand)?;
        let count = candidates.len();
        match self.config.policy {
            Policy::Databelt => self.rank(candidates, demand),
            baseline => {
                let fit = filters::ResourcesFit;
                let mut rejected = Vec::new();
                let mut fitting = Vec::new();
                for c in candidates {
                    match fit.check(&c, demand, &self.config) {
                        Ok(()) => fitting.push(c),
                        Err(reason) => {
                            rejected.push(Rejection { node: c.node.id.clone(), filter: fit.name().into(), reason })
                        }
                    }
                }
                if fitting.is_empty() {
                    return Err(no_node(demand, count, &rejected));
                }
                let pick = match baseline {
                    Policy::RoundRobin => {
                        let i = state.next % fitting.len();
                        state.next = state.next.wrapping_add(1);
                        i
                    }
                    Policy::Random => state.rng.random_range(0..fitting.len()),
                    _ => 0,
                };
                let c = &fitting[pick];
                let ranked = vec![Ranked { node: c.node.id.clone(), score: 0.0, latency_ms: worst_latency(c) }];
                Ok(Schedule { chosen: c.node.id.clone(), ranked, rejected, candidates: count })
            }
        }
    }

    fn rank(&self, candidates: Vec<Candidate<'_>>, demand: &Demand) -> Result<Schedule> {
        let count = candidates.len();
        let mut rejected = Vec::new();
        let mut survivors = Vec::new();
        for c in candidates {
            match self.passes(&c, demand) {
                Ok(()) => survivors.push(c),
                Err(r) => rejected.push(r),
            }
        }
        if survivors.is_empty() {
            return Err(no_node(demand, count, &rejected));
        }
        if let Some(tmax) = demand.input_tmax_ms {
            let fetch = |c: &Candidate<'_>| input_transfer_ms(c, demand);
            if survivors.iter().any(|c| fetch(c) <= tmax) {
                let (meet, miss): (Vec<_>, Vec<_>) = survivors.into_iter().partition(|c| fetch(c) <= tmax);
                for c in miss {
                    rejected.push(Rejection {
                        node: c.node.id.clone(),
                        filter: "slo".into(),
                        reason: format!(
                            "fetching the input takes {:.0} ms, over the step's {tmax} ms (other nodes meet it)",
                            fetch(&c)
                        ),
                    });
                }
                survivors = meet;
            }
        }
        let mut totals = vec![0.0f64; survivors.len()];
        let weight_sum: f64 = self.scores.iter().map(|(_, w)| w).sum();
        for (score, weight) in &self.scores {
            let raw: Vec<f64> = survivors.iter().map(|c| score.raw(c, demand, &self.config)).collect();
            let scaled = scale(&raw, score.scale());
            for (t, s) in totals.iter_mut().zip(scaled) {
                *t += weight * s;
            }
        }
        let mut ranked: Vec<Ranked> = survivors
            .iter()
            .zip(totals)
            .map(|(c, t)| Ranked {
                node: c.node.id.clone(),
                score: if weight_sum > 0.0 { t / weight_sum } else { 0.0 },
                latency_ms: worst_latency(c),
            })
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.node.cmp(&b.node)));
        ranked.truncate(self.config.top);
        let chosen = ranked.first().map(|r| r.node.clone()).unwrap_or_default();
        Ok(Schedule { chosen, ranked, rejected, candidates: count })
    }
}

/// The longest time to fetch one of the inputs (they move in parallel), ms;
/// infinite without a path.
pub fn input_transfer_ms(c: &Candidate<'_>, demand: &Demand) -> f64 {
    demand
        .inputs
        .iter()
        .zip(&c.inputs)
        .map(|(e, p)| p.map_or(f64::INFINITY, |p| p.transfer_ms(e.bytes)))
        .fold(0.0, f64::max)
}

fn worst_latency(c: &Candidate<'_>) -> f64 {
    c.all_paths().flatten().map(|p| p.latency_ms).fold(0.0, f64::max)
}

fn scale(raw: &[f64], how: Scale) -> Vec<f64> {
    // An infinite value (a local path's bandwidth) counts as the best
    // finite one: being local is not infinitely better than a good link.
    let finite_max = raw.iter().copied().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    let finite_max = if finite_max.is_finite() { finite_max } else { 1.0 };
    let raw: Vec<f64> = raw
        .iter()
        .map(|v| match v {
            v if v.is_finite() => *v,
            v if *v == f64::INFINITY => finite_max,
            _ => 0.0,
        })
        .collect();
    match how {
        Scale::Absolute => raw.iter().map(|v| v.clamp(0.0, 1.0)).collect(),
        Scale::LowerIsBetter | Scale::HigherIsBetter => {
            let (lo, hi) = raw.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            raw.iter()
                .map(|v| {
                    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
                        1.0
                    } else if how == Scale::LowerIsBetter {
                        (hi - v) / (hi - lo)
                    } else {
                        (v - lo) / (hi - lo)
                    }
                })
                .collect()
        }
    }
}

fn no_node(demand: &Demand, candidates: usize, rejected: &[Rejection]) -> Error {
    let near = demand.inputs.first().map_or("anywhere", |e| e.node.as_str());
    if candidates == 0 {
        return Error::NoCapacity(format!("no node of the accepted kinds lies in the vicinity of `{near}`"));
    }
    let mut by_filter: Vec<(String, usize)> = Vec::new();
    for r in rejected {
        match by_filter.iter_mut().find(|(f, _)| *f == r.filter) {
            Some((_, n)) => *n += 1,
            None => by_filter.push((r.filter.clone(), 1)),
        }
    }
    let why: Vec<String> = by_filter.iter().map(|(f, n)| format!("{n} by {f}")).collect();
    let example = rejected.first().map(|r| format!(" (e.g. `{}`: {})", r.node, r.reason)).unwrap_or_default();
    Error::NoCapacity(format!(
        "none of the {candidates} candidates near `{near}` passes the filters: {} rejected{example}",
        why.join(", ")
    ))
}

#[cfg(test)]
mod tests;
