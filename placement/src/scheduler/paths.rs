//! What the scheduler needs to know about the path between a candidate and
//! each node its step talks to: the lowest-latency live path's latency, its
//! bottleneck bandwidth and how long its links all stay up. One Dijkstra per
//! endpoint (petgraph's, with a path summary as the cost) serves every
//! candidate of a decision.

use std::ops::Add;

use petgraph::graph::NodeIndex;

use crate::topology::Snapshot;

/// A path folded into what placement weighs. Ordered by latency only (so
/// Dijkstra finds the lowest-latency path); bandwidth and remaining time are
/// the bottleneck and the first link to go along that path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathSummary {
    /// Summed one-way latency, ms.
    pub latency_ms: f64,
    /// Bottleneck bandwidth, bit/s (infinite for the empty path).
    pub bandwidth_bps: f64,
    /// How long every link of the path keeps existing, ms (`u64::MAX`:
    /// always).
    pub remaining_ms: u64,
}

impl Default for PathSummary {
    fn default() -> Self {
        PathSummary { latency_ms: 0.0, bandwidth_bps: f64::INFINITY, remaining_ms: u64::MAX }
    }
}

impl Add for PathSummary {
    type Output = PathSummary;
    fn add(self, other: PathSummary) -> PathSummary {
        PathSummary {
            latency_ms: self.latency_ms + other.latency_ms,
            bandwidth_bps: self.bandwidth_bps.min(other.bandwidth_bps),
            remaining_ms: self.remaining_ms.min(other.remaining_ms),
        }
    }
}

impl PartialOrd for PathSummary {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.latency_ms.partial_cmp(&other.latency_ms)
    }
}

impl PathSummary {
    /// Time to move `bytes` over the path: latency plus serialisation at the
    /// bottleneck, ms.
    pub fn transfer_ms(&self, bytes: u64) -> f64 {
        let serialise = if self.bandwidth_bps.is_finite() && self.bandwidth_bps > 0.0 {
            bytes as f64 * 8.0 / self.bandwidth_bps * 1000.0
        } else {
            0.0
        };
        self.latency_ms + serialise
    }
}

/// Path summaries from one node to every node, indexed by the node's graph
/// index (`None`: not reachable now).
pub fn from_node(snapshot: &Snapshot, start: NodeIndex) -> Vec<Option<PathSummary>> {
    let found = petgraph::algo::dijkstra(&snapshot.graph, start, None, |e| {
        let l = e.weight();
        PathSummary { latency_ms: l.latency_ms, bandwidth_bps: l.bandwidth_bps, remaining_ms: l.remaining_ms }
    });
    let mut out = vec![None; snapshot.graph.node_count()];
    for (ix, summary) in found {
        if let Some(slot) = out.get_mut(ix.index()) {
            *slot = Some(summary);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    #[test]
    fn summary_is_the_lowest_latency_paths_bottleneck_and_first_expiry() {
        let t = Topology::from_toml(
            r#"
period_ms = 1000
[[node]]
id = "a"
kind = "satellite"
[[node]]
id = "b"
kind = "satellite"
[[node]]
id = "c"
kind = "satellite"
[[link]]
a = "a"
b = "b"
latency_ms = 5
bandwidth_mbps = 100
windows = [{ start_ms = 0, end_ms = 400 }]
[[link]]
a = "b"
b = "c"
latency_ms = 5
bandwidth_mbps = 10
[[link]]
a = "a"
b = "c"
latency_ms = 50
bandwidth_mbps = 1000
"#,
        )
        .unwrap();
        let s = t.snapshot(100);
        let paths = from_node(&s, s.index_of("a").unwrap());
        let to_c = paths[s.index_of("c").unwrap().index()].unwrap();
        assert_eq!(to_c.latency_ms, 10.0);
        assert_eq!(to_c.bandwidth_bps, 10e6);
        assert_eq!(to_c.remaining_ms, 300);
        assert_eq!(paths[s.index_of("a").unwrap().index()].unwrap(), PathSummary::default());
        // 1 MB over 10 Mbit/s: 800 ms plus the latency.
        assert!((to_c.transfer_ms(1_000_000) - 810.0).abs() < 1e-9);
        // Once a–b is gone the direct link is the path.
        let later = t.snapshot(500);
        let to_c = from_node(&later, later.index_of("a").unwrap())[later.index_of("c").unwrap().index()].unwrap();
        assert_eq!((to_c.latency_ms, to_c.remaining_ms), (50.0, u64::MAX));
    }
}
