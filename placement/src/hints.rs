//! Function placement hint: which node should run a function (pure logic).

use petgraph::algo::dijkstra;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topology::{NodeKind, Topology};

/// What a function needs and where its input is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRequest {
    /// The node holding the function's input state (placement prefers
    /// nodes near it).
    pub near: String,
    /// CPU cores the function needs.
    #[serde(default)]
    pub cpu: f64,
    /// Memory in MiB the function needs.
    #[serde(default)]
    pub memory_mb: f64,
    /// Only consider nodes of these kinds (empty: any).
    #[serde(default)]
    pub kinds: Vec<NodeKind>,
}

/// The chosen node and its latency from `near`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionPlacement {
    /// The node to run on.
    pub node: String,
    /// One-way latency from `near`, ms.
    pub latency_ms: f64,
}

/// The reachable node nearest `near` (by latency at `t_ms`) that has the
/// resources, is below its temperature limit and has battery left.
pub fn place_function(topology: &Topology, t_ms: u64, request: &FunctionRequest) -> Result<FunctionPlacement> {
    let snapshot = topology.snapshot(t_ms);
    let start = snapshot.index_of(&request.near).ok_or_else(|| Error::UnknownNode(request.near.clone()))?;
    let distances = dijkstra(&snapshot.graph, start, None, |e| e.weight().latency_ms);
    let mut best: Option<(f64, &str)> = None;
    for node in &topology.nodes {
        let Some(ix) = snapshot.index_of(&node.id) else { continue };
        let Some(&latency) = distances.get(&ix) else { continue };
        let r = &node.resources;
        let fits = (request.kinds.is_empty() || request.kinds.contains(&node.kind))
            && r.cpu >= request.cpu
            && r.memory_mb >= request.memory_mb
            && (r.max_temperature_c == 0.0 || r.temperature_c < r.max_temperature_c)
            && (node.kind != NodeKind::Satellite || r.battery_pct > 0.0);
        if fits && best.is_none_or(|(l, id)| latency < l || (latency == l && node.id.as_str() < id)) {
            best = Some((latency, &node.id));
        }
    }
    best.map(|(latency_ms, node)| FunctionPlacement { node: node.to_string(), latency_ms }).ok_or_else(|| {
        Error::NoCapacity(format!(
            "no reachable node near `{}` has {} cpu and {} MiB",
            request.near, request.cpu, request.memory_mb
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r = |cpu: f64| FunctionRequest { near: "sat1".into(), cpu, memory_mb: 100.0, kinds: vec![] };
        // sat1 is too hot; sat2 is next.
        assert_eq!(place_function(&t, 0, &r(1.0)).unwrap().node, "sat2");
        assert_eq!(place_function(&t, 0, &r(8.0)).unwrap().node, "cloud");
        assert!(matches!(place_function(&t, 0, &r(128.0)), Err(Error::NoCapacity(_))));
        let cloud_only = FunctionRequest { kinds: vec![NodeKind::Cloud], ..r(1.0) };
        assert_eq!(place_function(&t, 0, &cloud_only).unwrap().node, "cloud");
    }
}
