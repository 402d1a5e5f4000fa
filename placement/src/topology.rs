//! The continuum's topology: nodes, links and the time windows during which
//! links exist. Pure data and validation; no I/O.
//!
//! Time is measured in milliseconds from the start of the scenario. A link
//! with windows exists only inside them; windows repeat every `period_ms`
//! (a satellite's ground link rotating along the constellation). A link
//! without windows always exists.

use databelt_types::NodeId;
use std::collections::{HashMap, HashSet};

use petgraph::graph::{NodeIndex, UnGraph};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What kind of place a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    /// A cloud data centre: the global tier.
    Cloud,
    /// An edge or ground station.
    Edge,
    /// A LEO satellite.
    Satellite,
}

/// Resources a node offers (what placement weighs; all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    /// CPU cores.
    pub cpu: f64,
    /// Memory in MiB.
    pub memory_mb: f64,
    /// Power budget in watts (0: unconstrained).
    pub power_w: f64,
    /// Battery charge in percent (100 when mains-powered).
    pub battery_pct: f64,
    /// Current temperature in °C.
    pub temperature_c: f64,
    /// Temperature above which the node takes no more work, in °C (0: none).
    pub max_temperature_c: f64,
    /// Battery capacity in watt-hours (0: no battery model; `battery_pct`
    /// alone then says whether the node has charge).
    pub battery_wh: f64,
    /// What the solar panels deliver while the node is sunlit, W.
    pub solar_w: f64,
    /// What the node draws when idle, W.
    pub idle_w: f64,
    /// When the node is in the Earth's shadow (no solar power), repeating
    /// with the scenario's `period_ms` like link windows; empty: always
    /// sunlit.
    pub eclipse: Vec<Window>,
    /// Steady-state temperature rise per watt of load, °C/W (0: no heating
    /// model; `temperature_c` stays as given).
    pub heat_c_per_w: f64,
    /// Thermal time constant, s: how fast the temperature approaches its
    /// steady state (0 with a heating model: 600 s).
    pub thermal_tau_s: f64,
    /// Temperature of the node with no load at all, °C (its radiator's
    /// equilibrium).
    pub ambient_c: f64,
}

/// One node of the continuum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Unique id, 1-64 bytes of ASCII letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// Cloud, edge or satellite.
    pub kind: NodeKind,
    /// `host:port` of the node's Databelt host (peer protocol); may be empty
    /// in a scenario that is only used for election.
    #[serde(default)]
    pub address: String,
    /// What the node offers.
    #[serde(default)]
    pub resources: Resources,
}

/// A half-open time window `[start_ms, end_ms)` within the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Start, ms from the start of the period.
    pub start_ms: u64,
    /// End (exclusive), ms from the start of the period.
    pub end_ms: u64,
}

/// A bidirectional link between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// One end (a node id).
    pub a: String,
    /// The other end (a node id).
    pub b: String,
    /// One-way latency in milliseconds.
    pub latency_ms: f64,
    /// Jitter (deviation of the latency) in milliseconds.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Bandwidth in megabits per second (10^6 bit/s).
    pub bandwidth_mbps: f64,
    /// When the link exists; empty: always.
    #[serde(default)]
    pub windows: Vec<Window>,
}

/// A whole scenario: nodes, links, and the schedule period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Length of the schedule in ms; link windows repeat with it. Required
    /// when any link has windows.
    #[serde(default)]
    pub period_ms: Option<u64>,
    /// The nodes.
    #[serde(rename = "node", default)]
    pub nodes: Vec<Node>,
    /// The links.
    #[serde(rename = "link", default)]
    pub links: Vec<Link>,
}

/// A TOML parse error as one line, prefixed with the line it points at.
pub(crate) fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let line = e.span().and_then(|s| text.get(..s.start)).map(|before| before.lines().count().max(1));
    match line {
        Some(l) => format!("line {l}: {msg}"),
        None => msg.to_string(),
    }
}

impl Topology {
    /// The same scenario with its schedule running `factor` times faster:
    /// the period and every window divided by `factor` (latencies and
    /// bandwidths unchanged), so a constellation that rotates once a minute
    /// rotates every `60 / factor` seconds. `factor` 0 or 1: unchanged.
    pub fn compressed(&self, factor: u64) -> Topology {
        let mut t = self.clone();
        if factor <= 1 {
            return t;
        }
        t.period_ms = t.period_ms.map(|p| (p / factor).max(1));
        for link in &mut t.links {
            for w in &mut link.windows {
                w.start_ms /= factor;
                w.end_ms = (w.end_ms / factor).max(w.start_ms + 1);
            }
        }
        t
    }

    /// Parse TOML and validate it.
    pub fn from_toml(text: &str) -> Result<Topology> {
        let topology: Topology = toml::from_str(text).map_err(|e| Error::Topology(toml_error(text, &e)))?;
        topology.validate()?;
        Ok(topology)
    }

    /// Read and validate a TOML scenario file.
    pub fn from_file(path: &std::path::Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Topology(format!("cannot read {}: {e}", path.display())))?;
        Topology::from_toml(&text).map_err(|e| match e {
            Error::Topology(m) => Error::Topology(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Check every node and link; the first problem is the error.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Topology(m));
        if self.nodes.is_empty() {
            return bad("the topology has no nodes".into());
        }
        let mut ids = HashSet::new();
        for n in &self.nodes {
            if let Err(e) = NodeId::new(n.id.as_str()) {
                return bad(e.to_string());
            }
            if !ids.insert(n.id.as_str()) {
                return bad(format!("node `{}` is defined twice", n.id));
            }
            let r = &n.resources;
            for (name, v) in [
                ("cpu", r.cpu),
                ("memory_mb", r.memory_mb),
                ("power_w", r.power_w),
                ("max_temperature_c", r.max_temperature_c),
                ("battery_wh", r.battery_wh),
                ("solar_w", r.solar_w),
                ("idle_w", r.idle_w),
                ("heat_c_per_w", r.heat_c_per_w),
                ("thermal_tau_s", r.thermal_tau_s),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return bad(format!("node `{}`: resources.{name} must be a non-negative number, got {v}", n.id));
                }
            }
            if !(0.0..=100.0).contains(&r.battery_pct) {
                return bad(format!("node `{}`: resources.battery_pct must be 0-100, got {}", n.id, r.battery_pct));
            }
            if !r.temperature_c.is_finite() || !r.ambient_c.is_finite() {
                return bad(format!("node `{}`: resources.temperature_c and ambient_c must be numbers", n.id));
            }
            if !r.eclipse.is_empty() {
                let Some(period) = self.period_ms else {
                    return bad(format!("node `{}`: has eclipse windows but the topology sets no period_ms", n.id));
                };
                if let Some(w) = r.eclipse.iter().find(|w| w.start_ms >= w.end_ms || w.end_ms > period) {
                    return bad(format!(
                        "node `{}`: eclipse window {}..{} ms is empty, reversed or past the period ({period} ms)",
                        n.id, w.start_ms, w.end_ms
                    ));
                }
            }
        }
        if self.period_ms == Some(0) {
            return bad("period_ms must be at least 1".into());
        }
        let mut pairs = HashSet::new();
        for l in &self.links {
            let name = format!("link {}–{}", l.a, l.b);
            for end in [&l.a, &l.b] {
                if !ids.contains(end.as_str()) {
                    return bad(format!("{name}: unknown node `{end}`"));
                }
            }
            if l.a == l.b {
                return bad(format!("{name}: a link cannot join a node to itself"));
            }
            let key = if l.a < l.b { (l.a.as_str(), l.b.as_str()) } else { (l.b.as_str(), l.a.as_str()) };
            if !pairs.insert(key) {
                return bad(format!("{name}: defined twice"));
            }
            if !l.bandwidth_mbps.is_finite() || l.bandwidth_mbps <= 0.0 {
                return bad(format!("{name}: bandwidth_mbps must be positive, got {}", l.bandwidth_mbps));
            }
            if !l.latency_ms.is_finite() || l.latency_ms < 0.0 {
                return bad(format!("{name}: latency_ms must be non-negative, got {}", l.latency_ms));
            }
            if !l.jitter_ms.is_finite() || l.jitter_ms < 0.0 {
                return bad(format!("{name}: jitter_ms must be non-negative, got {}", l.jitter_ms));
            }
            if l.windows.is_empty() {
                continue;
            }
            let Some(period) = self.period_ms else {
                return bad(format!("{name}: has windows but the topology sets no period_ms"));
            };
            let mut ws = l.windows.clone();
            ws.sort_by_key(|w| w.start_ms);
            for w in &ws {
                if w.start_ms >= w.end_ms {
                    return bad(format!("{name}: window {}..{} ms is empty or reversed", w.start_ms, w.end_ms));
                }
                if w.end_ms > period {
                    return bad(format!(
                        "{name}: window {}..{} ms ends after the period ({period} ms)",
                        w.start_ms, w.end_ms
                    ));
                }
            }
            for pair in ws.windows(2) {
                if pair[1].start_ms < pair[0].end_ms {
                    return bad(format!(
                        "{name}: windows {}..{} and {}..{} ms overlap",
                        pair[0].start_ms, pair[0].end_ms, pair[1].start_ms, pair[1].end_ms
                    ));
                }
            }
        }
        Ok(())
    }

    /// The node called `id`.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The topology as it is at time `t_ms`: the links that exist then.
    pub fn snapshot(&self, t_ms: u64) -> Snapshot {
        Snapshot::new(self, t_ms)
    }
}

impl Link {
    /// How long, from `t_ms`, the link keeps existing: `None` when it does not
    /// exist at `t_ms`, `Some(u64::MAX)` when it always exists.
    pub fn remaining_ms(&self, t_ms: u64, period_ms: Option<u64>) -> Option<u64> {
        if self.windows.is_empty() {
            return Some(u64::MAX);
        }
        let period = period_ms?;
        let phase = t_ms % period;
        let w = self.windows.iter().find(|w| w.start_ms <= phase && phase < w.end_ms)?;
        let mut remaining = w.end_ms - phase;
        // A window ending at the period's end continues into one starting at 0.
        if w.end_ms == period
            && let Some(next) = self.windows.iter().find(|x| x.start_ms == 0)
        {
            remaining = remaining.saturating_add(next.end_ms);
        }
        Some(remaining)
    }
}

/// A link as it exists in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveLink {
    /// One-way latency, ms.
    pub latency_ms: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Bandwidth, bits per second.
    pub bandwidth_bps: f64,
    /// How long the link keeps existing after the snapshot's time, ms
    /// (`u64::MAX`: always).
    pub remaining_ms: u64,
}

/// The end-to-end characteristics of the shortest (by latency) live path
/// between two nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    /// Summed one-way latency, ms.
    pub latency_ms: f64,
    /// Summed jitter, ms.
    pub jitter_ms: f64,
    /// Bottleneck bandwidth, bits per second.
    pub bandwidth_bps: f64,
    /// Links on the path.
    pub hops: usize,
}

/// One link of a route, in the direction of travel.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteHop {
    /// The node the bytes leave.
    pub from: String,
    /// The node they reach.
    pub to: String,
    /// The link as it is now.
    pub link: LiveLink,
}

/// The live graph at one instant, ready for election.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The instant, ms.
    pub t_ms: u64,
    /// Nodes (weights: node ids) and live links.
    pub graph: UnGraph<String, LiveLink>,
    index: HashMap<String, NodeIndex>,
}

impl Snapshot {
    /// The shortest live path from `from` to `to` now, summed up; `None` when
    /// either node is unknown or there is no path. A node to itself: a route
    /// of zero hops (zero latency, unbounded bandwidth).
    pub fn route(&self, from: &str, to: &str) -> Option<Route> {
        let hops = self.route_hops(from, to)?;
        let mut route = Route { latency_ms: 0.0, jitter_ms: 0.0, bandwidth_bps: f64::INFINITY, hops: hops.len() };
        for hop in &hops {
            route.latency_ms += hop.link.latency_ms;
            route.jitter_ms += hop.link.jitter_ms;
            route.bandwidth_bps = route.bandwidth_bps.min(hop.link.bandwidth_bps);
        }
        Some(route)
    }

    /// The links of the shortest live path from `from` to `to` now, in
    /// order; `None` when either node is unknown or there is no path, empty
    /// from a node to itself.
    pub fn route_hops(&self, from: &str, to: &str) -> Option<Vec<RouteHop>> {
        let (a, b) = (self.index_of(from)?, self.index_of(to)?);
        let (_, path) = petgraph::algo::astar(&self.graph, a, |n| n == b, |e| e.weight().latency_ms, |_| 0.0)?;
        let mut hops = Vec::with_capacity(path.len().saturating_sub(1));
        for pair in path.windows(2) {
            let edge = self.graph.find_edge(pair[0], pair[1])?;
            hops.push(RouteHop {
                from: self.graph[pair[0]].clone(),
                to: self.graph[pair[1]].clone(),
                link: self.graph[edge],
            });
        }
        Some(hops)
    }

    fn new(topology: &Topology, t_ms: u64) -> Snapshot {
        let mut graph = UnGraph::with_capacity(topology.nodes.len(), topology.links.len());
        let mut index = HashMap::with_capacity(topology.nodes.len());
        for n in &topology.nodes {
            index.insert(n.id.clone(), graph.add_node(n.id.clone()));
        }
        for l in &topology.links {
            let (Some(&a), Some(&b)) = (index.get(&l.a), index.get(&l.b)) else { continue };
            if let Some(remaining_ms) = l.remaining_ms(t_ms, topology.period_ms) {
                graph.add_edge(
                    a,
                    b,
                    LiveLink {
                        latency_ms: l.latency_ms,
                        jitter_ms: l.jitter_ms,
                        bandwidth_bps: l.bandwidth_mbps * 1e6,
                        remaining_ms,
                    },
                );
            }
        }
        Snapshot { t_ms, graph, index }
    }

    /// The graph index of node `id`.
    pub fn index_of(&self, id: &str) -> Option<NodeIndex> {
        self.index.get(id).copied()
    }

    /// The id of the node at `ix`.
    pub fn id_of(&self, ix: NodeIndex) -> &str {
        self.graph.node_weight(ix).map_or("", String::as_str)
    }

    /// Live neighbours of `id`, nearest (lowest latency) first.
    pub fn neighbours(&self, id: &str) -> Vec<String> {
        let Some(ix) = self.index_of(id) else { return Vec::new() };
        let mut n: Vec<(f64, String)> = self
            .graph
            .edges(ix)
            .map(|e| {
                let other = if petgraph::visit::EdgeRef::source(&e) == ix {
                    petgraph::visit::EdgeRef::target(&e)
                } else {
                    petgraph::visit::EdgeRef::source(&e)
                };
                (e.weight().latency_ms, self.id_of(other).to_string())
            })
            .collect();
        n.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        n.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
period_ms = 1000
[[node]]
id = "a"
kind = "cloud"
[[node]]
id = "b"
kind = "satellite"
[[link]]
a = "a"
b = "b"
latency_ms = 10
bandwidth_mbps = 40
"#;

    #[test]
    fn parses_and_validates() {
        let t = Topology::from_toml(BASE).unwrap();
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.links[0].bandwidth_mbps, 40.0);
        let s = t.snapshot(0);
        assert_eq!(s.graph.edge_count(), 1);
        assert_eq!(s.neighbours("a"), vec!["b".to_string()]);
    }

    fn err(extra: &str) -> String {
        Topology::from_toml(&format!("{BASE}{extra}")).unwrap_err().to_string()
    }

    #[test]
    fn bad_topologies_say_why() {
        assert!(
            err("[[link]]\na = \"a\"\nb = \"zz\"\nlatency_ms = 1\nbandwidth_mbps = 1\n").contains("unknown node `zz`")
        );
        let neg = Topology::from_toml(&BASE.replace("bandwidth_mbps = 40", "bandwidth_mbps = -4")).unwrap_err();
        assert!(neg.to_string().contains("bandwidth_mbps must be positive"), "{neg}");
        let overlap = BASE.replace(
            "bandwidth_mbps = 40",
            "bandwidth_mbps = 40\nwindows = [{start_ms = 0, end_ms = 500}, {start_ms = 400, end_ms = 900}]",
        );
        let e = Topology::from_toml(&overlap).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
        assert!(err("[[node]]\nid = \"a\"\nkind = \"edge\"\n").contains("defined twice"));
        assert!(err("[[link]]\na = \"b\"\nb = \"a\"\nlatency_ms = 1\nbandwidth_mbps = 1\n").contains("defined twice"));
        let unknown = Topology::from_toml(&format!("{BASE}colour = 1\n")).unwrap_err().to_string();
        assert!(unknown.contains("line"), "{unknown}");
        let past =
            BASE.replace("bandwidth_mbps = 40", "bandwidth_mbps = 40\nwindows = [{start_ms = 0, end_ms = 5000}]");
        assert!(Topology::from_toml(&past).unwrap_err().to_string().contains("after the period"));
        let kind = BASE.replace("kind = \"cloud\"", "kind = \"moon\"");
        assert!(Topology::from_toml(&kind).is_err());
    }

    #[test]
    fn windows_decide_which_links_exist() {
        let t = Topology::from_toml(
            &BASE.replace("bandwidth_mbps = 40", "bandwidth_mbps = 40\nwindows = [{start_ms = 100, end_ms = 300}]"),
        )
        .unwrap();
        assert_eq!(t.snapshot(50).graph.edge_count(), 0);
        let s = t.snapshot(1150);
        assert_eq!(s.graph.edge_count(), 1);
        assert_eq!(s.graph.edge_weights().next().unwrap().remaining_ms, 150);
        assert_eq!(t.snapshot(300).graph.edge_count(), 0);
    }

    #[test]
    fn a_window_at_the_period_end_wraps() {
        let l = Link {
            a: "a".into(),
            b: "b".into(),
            latency_ms: 1.0,
            jitter_ms: 0.0,
            bandwidth_mbps: 1.0,
            windows: vec![Window { start_ms: 0, end_ms: 100 }, Window { start_ms: 900, end_ms: 1000 }],
        };
        assert_eq!(l.remaining_ms(950, Some(1000)), Some(150));
        assert_eq!(l.remaining_ms(500, Some(1000)), None);
    }
}

#[cfg(test)]
mod scenario_tests {
    use super::*;

    #[test]
    fn the_paper_testbed_scenario_loads_and_rotates() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/paper-testbed.toml");
        let t = Topology::from_file(&path).unwrap();
        assert_eq!(t.nodes.len(), 9);
        assert_eq!(t.nodes.iter().filter(|n| n.kind == NodeKind::Satellite).count(), 7);
        // Minute 0: the ground link is on sat1; minute 3: on sat4; minute 7 wraps to sat1.
        assert!(t.snapshot(0).neighbours("cloud").contains(&"sat1".to_string()));
        let at3 = t.snapshot(3 * 60_000 + 5);
        assert!(at3.neighbours("cloud").contains(&"sat4".to_string()));
        assert!(!at3.neighbours("cloud").contains(&"sat1".to_string()));
        assert!(t.snapshot(7 * 60_000).neighbours("cloud").contains(&"sat1".to_string()));
    }

    #[test]
    fn routes_sum_latency_and_jitter_and_take_the_bottleneck() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/paper-testbed.toml")).unwrap();
        let t = Topology::from_toml(&text).unwrap();
        let s = t.snapshot(0);
        let r = s.route("sat2", "sat6").unwrap();
        assert_eq!(r.hops, 4);
        assert!((r.latency_ms - 40.0).abs() < 1e-9 && (r.jitter_ms - 36.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.bandwidth_bps, 40e6);
        // Minute 0: the ground link is at sat1, so sat3 → cloud goes sat3-sat2-sat1-cloud.
        let g = s.route("sat3", "cloud").unwrap();
        assert_eq!(g.hops, 3);
        assert!((g.latency_ms - 80.0).abs() < 1e-9, "{g:?}");
        assert_eq!(s.route("sat1", "sat1").unwrap().hops, 0);
        assert!(s.route("sat1", "nowhere").is_none());
    }

    #[test]
    fn compressed_schedules_keep_their_shape() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/paper-testbed.toml")).unwrap();
        let t = Topology::from_toml(&text).unwrap();
        let fast = t.compressed(12);
        fast.validate().unwrap();
        assert_eq!(fast.period_ms, t.period_ms.map(|p| p / 12));
        assert_eq!(fast.links[0].latency_ms, t.links[0].latency_ms);
        // What was minute 3 (ground link at sat4) is now second 15.
        for (slow, quick) in [(3 * 60_000 + 1, 15_001), (60_000 * 6 + 5, 30_001)] {
            assert_eq!(t.snapshot(slow).neighbours("cloud"), fast.snapshot(quick).neighbours("cloud"));
        }
        assert_eq!(t.compressed(1), t);
    }
}
