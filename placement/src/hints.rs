//! Function placement: which node should run a function. A thin front over
//! the [`scheduler`](crate::scheduler) for one step whose input lies at
//! `near` (pure logic).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::scheduler::{Demand, Endpoint, PolicyState, Scheduler, SchedulerConfig, View};
use crate::topology::{NodeKind, Topology};

/// What a function needs and where its input is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionRequest {
    /// The node holding the function's input state (placement prefers
    /// nodes near it).
    pub near: String,
    /// Size of the input state at `near`, bytes (weighs the transfer).
    #[serde(default)]
    pub input_bytes: u64,
    /// CPU cores the function needs.
    #[serde(default)]
    pub cpu: f64,
    /// Memory in MiB the function needs.
    #[serde(default)]
    pub memory_mb: f64,
    /// Power the function draws while it runs, W.
    #[serde(default)]
    pub power_w: f64,
    /// How long it is expected to run, ms.
    #[serde(default)]
    pub duration_ms: u64,
    /// Where its output goes next, when known.
    #[serde(default)]
    pub successors: Vec<Endpoint>,
    /// Longest one-way latency to its input or successors, ms.
    #[serde(default)]
    pub max_latency_ms: Option<f64>,
    /// The step's SLO for moving its input, ms: nodes that meet it are
    /// preferred whenever there are any.
    #[serde(default)]
    pub input_tmax_ms: Option<f64>,
    /// Only consider nodes of these kinds (empty: any).
    #[serde(default)]
    pub kinds: Vec<NodeKind>,
    /// Nodes not to consider (e.g. tried already and unreachable).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Scheduler settings (unset: the defaults, see
    /// [`SchedulerConfig`]).
    #[serde(default)]
    pub scheduler: Option<SchedulerConfig>,
}

/// The chosen node and its latency from `near`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionPlacement {
    /// The node to run on.
    pub node: String,
    /// Highest one-way latency from the node to the input or a successor,
    /// ms.
    pub latency_ms: f64,
    /// The scheduler's score of `node`, 0–1.
    #[serde(default)]
    pub score: f64,
    /// The next-best nodes that passed every filter, best first.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

impl FunctionRequest {
    /// The scheduler's demand for this request.
    pub fn demand(&self) -> Demand {
        Demand {
            cpu: self.cpu,
            memory_mb: self.memory_mb,
            power_w: self.power_w,
            duration_ms: self.duration_ms,
            inputs: vec![Endpoint { node: self.near.clone(), bytes: self.input_bytes }],
            successors: self.successors.clone(),
            max_latency_ms: self.max_latency_ms,
            min_bandwidth_mbps: 0.0,
            input_tmax_ms: self.input_tmax_ms,
            kinds: self.kinds.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

/// Where the scheduler (configured by `request.scheduler`) runs the function
/// at `t_ms`, every node in its initial state: the best node that has the
/// resources, a path to its input under the latency bound, stays below its
/// temperature limit and keeps its battery reserve.
pub fn place_function(topology: &Topology, t_ms: u64, request: &FunctionRequest) -> Result<FunctionPlacement> {
    let scheduler = Scheduler::new(request.scheduler.clone().unwrap_or_default())?;
    let snapshot = topology.snapshot(t_ms);
    let states = HashMap::new();
    let view = View { topology, snapshot: &snapshot, states: &states };
    let mut policy = PolicyState::new(scheduler.config().seed);
    let decision = scheduler.schedule(&view, &request.demand(), &mut policy)?;
    let first = decision.ranked.first();
    Ok(FunctionPlacement {
        node: decision.chosen.clone(),
        latency_ms: first.map_or(0.0, |r| r.latency_ms),
        score: first.map_or(0.0, |r| r.score),
        fallbacks: decision.ranked.iter().skip(1).map(|r| r.node.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn nearest_node_with_resources_and_temperature_headroom() {
        let t = Topology::from_toml(
            r#"
[[node]]
id = "sat1"
kind = "satellite"
resources = { cpu = 1, memory_mb = 512, battery_pct = 80, temperature_c = 70, max_temperature_c = 60 }
[[node]]
id = "sat2"
kind = "satellite"
resources = { cpu = 4, memory_mb = 2048, battery_pct = 80, temperature_c = 20, max_temperature_c = 60 }
[[node]]
id = "cloud"
kind = "cloud"
resources = { cpu = 64, memory_mb = 65536, battery_pct = 100 }
[[link]]
a = "sat1"
b = "sat2"
latency_ms = 10
bandwidth_mbps = 40
[[link]]
a = "sat1"
b = "cloud"
latency_ms = 60
bandwidth_mbps = 90
"#,
        )
        .unwrap();
        let r = |cpu: f64| FunctionRequest { near: "sat1".into(), cpu, memory_mb: 100.0, ..FunctionRequest::default() };
        // sat1 is too hot; sat2 is next.
        assert_eq!(place_function(&t, 0, &r(1.0)).unwrap().node, "sat2");
        assert_eq!(place_function(&t, 0, &r(8.0)).unwrap().node, "cloud");
        assert!(matches!(place_function(&t, 0, &r(128.0)), Err(Error::NoCapacity(_))));
        let cloud_only = FunctionRequest { kinds: vec![NodeKind::Cloud], ..r(1.0) };
        assert_eq!(place_function(&t, 0, &cloud_only).unwrap().node, "cloud");
    }
}
