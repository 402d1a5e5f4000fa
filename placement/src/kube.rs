//! The kube-scheduler extender API, answered by the Databelt scheduler
//! (pure translation; the placement service serves it over HTTP).
//!
//! kube-scheduler calls an extender with an `ExtenderArgs` (the pod and the
//! candidate nodes, as full `Node` objects or, with `nodeCacheCapable`, as
//! names) on two verbs: **filter** answers an `ExtenderFilterResult` (the
//! nodes that can take the pod, and why each other one cannot), and
//! **prioritize** a `HostPriorityList` (a 0–10 score per node). Scheduler
//! versions differ in how they spell the JSON fields (`pod` / `Pod`,
//! `nodenames` / `NodeNames`, …): both spellings are read; answers use the
//! current lowercase ones, which every version reads (Go's JSON decoding
//! ignores case).
//!
//! A pod opts in by requesting the extended resource [`MANAGED_RESOURCE`]
//! (the scheduler configuration lists it under `managedResources`, so only
//! such pods reach the extender). Its annotations say what the step needs
//! beyond its containers' cpu and memory requests:
//!
//! | annotation | meaning |
//! |---|---|
//! | `databelt.io/input-node` | Databelt node holding the step's input state |
//! | `databelt.io/input-bytes` | its size |
//! | `databelt.io/successor-node` | where the output goes (optional) |
//! | `databelt.io/output-bytes` | the output's size (default: the input's) |
//! | `databelt.io/duration-ms` | expected running time |
//! | `databelt.io/power-w` | power drawn while running |
//! | `databelt.io/max-latency-ms` | longest latency to input or successor |
//! | `databelt.io/tmax-ms` | SLO for fetching the input: nodes that meet it are preferred |
//!
//! A Kubernetes node is the Databelt node named by its `databelt.io/node`
//! label, else the node of the same name. Nodes the scenario does not have
//! fail the filter with that reason.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::scheduler::{Demand, Endpoint, PolicyState, Scheduler, SchedulerConfig, View};
use crate::topology::Topology;

/// The extended resource a pod requests to be placed by Databelt.
pub const MANAGED_RESOURCE: &str = "databelt.io/function";
/// The node label naming a Kubernetes node's Databelt node.
pub const NODE_LABEL: &str = "databelt.io/node";
/// kube-scheduler's highest extender score.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// Object metadata: the parts the extender reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Container resource requests and limits (quantities as Kubernetes writes
/// them: `500m`, `2`, `512Mi`, `1G`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    /// Requests.
    #[serde(default)]
    pub requests: BTreeMap<String, serde_json::Value>,
    /// Limits.
    #[serde(default)]
    pub limits: BTreeMap<String, serde_json::Value>,
}

/// A container: its resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Resources.
    #[serde(default)]
    pub resources: ResourceRequirements,
}

/// A pod spec: its containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodSpec {
    /// Containers.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// A pod: what the extender reads of it (everything else is ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: PodSpec,
}

/// A Kubernetes node: its metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubeNode {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
}

/// A list of nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    /// The nodes.
    #[serde(default)]
    pub items: Vec<KubeNode>,
}

/// What kube-scheduler sends on filter and prioritize.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtenderArgs {
    /// The pod being scheduled.
    #[serde(alias = "Pod")]
    pub pod: Option<Pod>,
    /// Candidate nodes (without `nodeCacheCapable`).
    #[serde(default, alias = "Nodes", skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// Candidate node names (with `nodeCacheCapable`).
    #[serde(default, alias = "NodeNames", alias = "nodeNames", skip_serializing_if = "Option::is_none")]
    pub nodenames: Option<Vec<String>>,
}

/// The answer to filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtenderFilterResult {
    /// The nodes that can take the pod (when full nodes were sent).
    #[serde(default, alias = "Nodes", skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// Their names (when names were sent).
    #[serde(default, alias = "NodeNames", alias = "nodeNames", skip_serializing_if = "Option::is_none")]
    pub nodenames: Option<Vec<String>>,
    /// Nodes that cannot take it now, with why.
    #[serde(default, alias = "FailedNodes", rename = "failedNodes", skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes that cannot take it, and preempting pods would not help.
    #[serde(
        default,
        alias = "FailedAndUnresolvableNodes",
        rename = "failedAndUnresolvableNodes",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// A failure of the whole call (empty: none).
    #[serde(default, alias = "Error", skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One node's score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPriority {
    /// The Kubernetes node name.
    #[serde(alias = "Host")]
    pub host: String,
    /// 0–[`MAX_EXTENDER_PRIORITY`].
    #[serde(alias = "Score")]
    pub score: i64,
}

/// A Kubernetes quantity in base units (`500m` → 0.5, `1Ki` → 1024,
/// `2G` → 2e9, `1e3` → 1000).
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = q.strip_suffix(suffix) {
            return number.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(|v| v * factor);
        }
    }
    for (suffix, factor) in [("P", 1e15), ("E", 1e18)] {
        if let Some(number) = q.strip_suffix(suffix) {
            return number.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(|v| v * factor);
        }
    }
    q.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

fn quantity(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::String(s) => parse_quantity(s),
        serde_json::Value::Number(n) => n.as_f64().filter(|v| v.is_finite() && *v >= 0.0),
        _ => None,
    }
}

impl Pod {
    fn display_name(&self) -> String {
        match &self.metadata.namespace {
            Some(ns) => format!("{ns}/{}", self.metadata.name),
            None => self.metadata.name.clone(),
        }
    }

    /// Whether the pod asks to be placed by Databelt.
    pub fn is_managed(&self) -> bool {
        self.spec.containers.iter().any(|c| {
            c.resources.requests.contains_key(MANAGED_RESOURCE) || c.resources.limits.contains_key(MANAGED_RESOURCE)
        })
    }

    /// The scheduler's demand for this pod: its containers' cpu and memory
    /// requests (limits where a request is missing) and its annotations.
    pub fn demand(&self) -> Result<Demand> {
        let bad = |m: String| Error::BadRequest(format!("pod `{}`: {m}", self.display_name()));
        let mut cpu = 0.0;
        let mut memory_bytes = 0.0;
        for c in &self.spec.containers {
            let r = &c.resources;
            for (name, total) in [("cpu", &mut cpu), ("memory", &mut memory_bytes)] {
                if let Some(v) = r.requests.get(name).or_else(|| r.limits.get(name)) {
                    *total +=
                        quantity(v).ok_or_else(|| bad(format!("container `{}`: bad {name} quantity {v}", c.name)))?;
                }
            }
        }
        let a = &self.metadata.annotations;
        let number = |key: &str| -> Result<Option<f64>> {
            a.get(key)
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .ok_or_else(|| bad(format!("annotation {key} must be a non-negative number, got `{v}`")))
                })
                .transpose()
        };
        let bytes = number("databelt.io/input-bytes")?.unwrap_or(0.0) as u64;
        let output_bytes = number("databelt.io/output-bytes")?.map_or(bytes, |b| b as u64);
        Ok(Demand {
            cpu,
            memory_mb: memory_bytes / (1024.0 * 1024.0),
            power_w: number("databelt.io/power-w")?.unwrap_or(0.0),
            duration_ms: number("databelt.io/duration-ms")?.unwrap_or(0.0) as u64,
            inputs: a
                .get("databelt.io/input-node")
                .map(|n| vec![Endpoint { node: n.clone(), bytes }])
                .unwrap_or_default(),
            successors: a
                .get("databelt.io/successor-node")
                .map(|n| vec![Endpoint { node: n.clone(), bytes: output_bytes }])
                .unwrap_or_default(),
            max_latency_ms: number("databelt.io/max-latency-ms")?,
            input_tmax_ms: number("databelt.io/tmax-ms")?,
            ..Demand::default()
        })
    }
}

/// The candidates as (Kubernetes name, Databelt id), in the order sent.
fn candidates(args: &ExtenderArgs) -> Result<(Vec<(String, String)>, bool)> {
    if let Some(list) = &args.nodes {
        let pairs = list
            .items
            .iter()
            .map(|n| {
                let id = n.metadata.labels.get(NODE_LABEL).cloned().unwrap_or_else(|| n.metadata.name.clone());
                (n.metadata.name.clone(), id)
            })
            .collect();
        return Ok((pairs, true));
    }
    if let Some(names) = &args.nodenames {
        return Ok((names.iter().map(|n| (n.clone(), n.clone())).collect(), false));
    }
    Err(Error::BadRequest("ExtenderArgs has neither nodes nor nodenames".into()))
}

struct Judged {
    ok: Vec<(String, f64)>,
    failed: BTreeMap<String, String>,
    unknown: BTreeMap<String, String>,
}

fn judge(topology: &Topology, t_ms: u64, config: &SchedulerConfig, args: &ExtenderArgs) -> Result<Judged> {
    let pod = args.pod.as_ref().ok_or_else(|| Error::BadRequest("ExtenderArgs has no pod".into()))?;
    let (pairs, _) = candidates(args)?;
    let mut demand = pod.demand()?;
    let mut failed = BTreeMap::new();
    let mut unknown = BTreeMap::new();
    let mut wanted: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, id) in &pairs {
        if topology.node(id).is_none() {
            unknown.insert(name.clone(), format!("Databelt node `{id}` is not in the scenario"));
        } else {
            wanted.entry(id.as_str()).or_default().push(name.as_str());
        }
    }
    demand.exclude =
        topology.nodes.iter().filter(|n| !wanted.contains_key(n.id.as_str())).map(|n| n.id.clone()).collect();
    let mut ok = Vec::new();
    if !wanted.is_empty() {
        // Every survivor ranked: kube-scheduler weighs them all.
        let config = SchedulerConfig { top: topology.nodes.len().max(1), vicinity_ms: None, ..config.clone() };
        let scheduler = Scheduler::new(config)?;
        let snapshot = topology.snapshot(t_ms);
        let states = HashMap::new();
        let view = View { topology, snapshot: &snapshot, states: &states };
        let candidates = scheduler.candidates(&view, &demand)?;
        match scheduler.schedule(&view, &demand, &mut PolicyState::new(0)) {
            Ok(schedule) => {
                for r in &schedule.ranked {
                    for name in wanted.get(r.node.as_str()).into_iter().flatten() {
                        ok.push((name.to_string(), r.score));
                    }
                }
                for r in &schedule.rejected {
                    for name in wanted.get(r.node.as_str()).into_iter().flatten() {
                        failed.insert(name.to_string(), format!("databelt {}: {}", r.filter, r.reason));
                    }
                }
            }
            Err(Error::NoCapacity(_)) => {
                for c in &candidates {
                    if let Err(r) = scheduler.passes(c, &demand) {
                        for name in wanted.get(r.node.as_str()).into_iter().flatten() {
                            failed.insert(name.to_string(), format!("databelt {}: {}", r.filter, r.reason));
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        }
        // A node of an unaccepted kind is not a candidate at all.
        for (id, names) in &wanted {
            for name in names {
                if !ok.iter().any(|(n, _)| n == name) && !failed.contains_key(*name) {
                    failed.insert(name.to_string(), format!("databelt: `{id}` is not a candidate for this pod"));
                }
            }
        }
    }
    Ok(Judged { ok, failed, unknown })
}

/// The filter verb. A request kube-scheduler cannot have meant (no pod, no
/// nodes) is an error; a pod whose annotations are malformed or name an
/// unknown input node gets every node failed with the reason in `error`.
pub fn filter(
    topology: &Topology,
    t_ms: u64,
    config: &SchedulerConfig,
    args: &ExtenderArgs,
) -> Result<ExtenderFilterResult> {
    if args.pod.is_none() {
        return Err(Error::BadRequest("ExtenderArgs has no pod".into()));
    }
    let (_, full) = candidates(args)?;
    let judged = match judge(topology, t_ms, config, args) {
        Ok(j) => j,
        Err(e @ (Error::UnknownNode(_) | Error::BadRequest(_))) => {
            return Ok(ExtenderFilterResult { error: e.to_string(), ..ExtenderFilterResult::default() });
        }
        Err(e) => return Err(e),
    };
    let passing: Vec<&str> = judged.ok.iter().map(|(n, _)| n.as_str()).collect();
    let mut result = ExtenderFilterResult {
        failed_nodes: judged.failed,
        failed_and_unresolvable_nodes: judged.unknown,
        ..ExtenderFilterResult::default()
    };
    if full {
        let items = args
            .nodes
            .iter()
            .flat_map(|l| l.items.iter())
            .filter(|n| passing.contains(&n.metadata.name.as_str()))
            .cloned()
            .collect();
        result.nodes = Some(NodeList { items });
    } else {
        let names = args.nodenames.iter().flatten().filter(|n| passing.contains(&n.as_str())).cloned().collect();
        result.nodenames = Some(names);
    }
    Ok(result)
}

/// The prioritize verb: the Databelt score of every candidate that passes
/// the filters, scaled to 0–10; 0 for the others.
pub fn prioritize(
    topology: &Topology,
    t_ms: u64,
    config: &SchedulerConfig,
    args: &ExtenderArgs,
) -> Result<Vec<HostPriority>> {
    let judged = judge(topology, t_ms, config, args)?;
    let (pairs, _) = candidates(args)?;
    Ok(pairs
        .iter()
        .map(|(name, _)| {
            let score = judged.ok.iter().find(|(n, _)| n == name).map_or(0.0, |(_, s)| *s);
            HostPriority { host: name.clone(), score: (score * MAX_EXTENDER_PRIORITY as f64).round() as i64 }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        for (q, v) in [
            ("500m", 0.5),
            ("2", 2.0),
            ("1Ki", 1024.0),
            ("512Mi", 512.0 * 1024.0 * 1024.0),
            ("1Gi", 1024f64.powi(3)),
            ("2G", 2e9),
            ("1e3", 1000.0),
            ("1.5", 1.5),
            ("100k", 1e5),
        ] {
            assert_eq!(parse_quantity(q), Some(v), "{q}");
        }
        for bad in ["", "abc", "-1", "1Xi", "NaN", "inf"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
