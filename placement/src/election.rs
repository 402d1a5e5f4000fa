//! Election of the node that stores a step's output state (pure logic).
//!
//! The paper's heuristic, corrected. Given the producer's node, the
//! consumer's node, the state size `D` and the step's `Tmax`:
//!
//! 1. Take the shortest path (by latency) from producer to consumer over the
//!    links that exist at the snapshot's instant (petgraph A* with a zero
//!    heuristic, i.e. Dijkstra with the path kept).
//! 2. For each node `n` of the path, the migration time from the producer is
//!    `Tmig(n) = k·(L(n) + J(n)) + 8·D / B(n)` milliseconds, where `L` is the
//!    summed one-way latency of the links up to `n`, `J` their summed jitter
//!    (a margin for the worst case), and `B` the *bottleneck* bandwidth of
//!    those links in bit/s (each link's own bandwidth, not a global average;
//!    `D` is in bytes, hence the 8). `k = 2` covers the data going out and
//!    the receiver's acknowledgement coming back, when the consumer starts
//!    only after the push counts (the receiver has stored it and said so);
//!    `k = 1` when the consumer waits only for the bytes to land
//!    ([`ElectionRequest::one_way`]: its producer answers early and the
//!    acknowledgement is off the consumer's path).
//! 3. A link whose window closes before `Tmig(n)` has elapsed excludes `n`
//!    and every node after it.
//! 4. Walk the path from the consumer backwards and elect the first node
//!    whose `Tmig` fits `Tmax`.
//!    One way, the consumer is elected whenever its links stay up for the
//!    transfer, even past `Tmax`: `Tmax` bounds how long a hand-off holds
//!    the run up, and an early answer holds nothing up but the consumer,
//!    which needs the bytes wherever they stop. Stopping short would only
//!    add its pull of them (a request and a response over the rest of the
//!    path). The SLO is then reported missed ([`Decision::BestEffort`]);
//!    [`Decision::within_tmax`] gives the paper's stop-short answer instead.
//! 5. If no node beyond the producer fits `Tmax`, the SLO cannot be met by
//!    any placement: the consumer will wait longer than `Tmax` for the state
//!    wherever it is, since it must come over the same links. Rather than
//!    leaving the state on the producer (the prototype's choice, which makes
//!    the consumer pull it over the path while it waits), the answer is
//!    [`Decision::BestEffort`]: the node nearest the consumer whose links
//!    stay up for the whole transfer, with the SLO reported missed. Only
//!    when no such node exists does the state stay, and the answer says why.

use petgraph::algo::astar;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topology::Snapshot;

/// What is being decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionRequest {
    /// The node that produced the state (where it is now).
    pub producer: String,
    /// The node where the consuming step will run.
    pub consumer: String,
    /// State size in bytes.
    pub size_bytes: u64,
    /// The step's SLO: the longest the transfer may take, in ms.
    pub tmax_ms: f64,
    /// The consumer waits only for the bytes to land, not for the
    /// receiver's acknowledgement (its producer answers before the push is
    /// acknowledged): the path latency counts once in `Tmig`, not twice.
    #[serde(default)]
    pub one_way: bool,
}

/// One node of the path with its migration time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathNode {
    /// Node id.
    pub node: String,
    /// Migration time from the producer, ms (0 for the producer itself).
    pub tmig_ms: f64,
    /// Whether every link up to this node stays up for the whole transfer.
    pub window_ok: bool,
    /// Summed one-way latency of the links up to this node, ms (no jitter).
    #[serde(default)]
    pub latency_ms: f64,
}

/// Why the state stays where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StayReason {
    /// Producer and consumer are the same node: the state is already local.
    AlreadyLocal,
    /// No path from the producer to the consumer exists at this instant.
    Unreachable,
    /// A path exists but no node beyond the producer can be reached before
    /// a link window on the way closes (or no node fits `Tmax` and the
    /// caller keeps such states on the producer, as the host's `strict`
    /// policy does).
    NoNodeFits,
}

/// The election's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    /// Move the state to `node`.
    Propagate {
        /// The elected node.
        node: String,
        /// Its migration time, ms.
        tmig_ms: f64,
        /// Hops between the elected node and the consumer (0: the consumer).
        hops_to_consumer: usize,
        /// The path producer → consumer with each node's migration time.
        path: Vec<PathNode>,
    },
    /// The SLO is missed: no node fits `Tmax` (or, one way, the consumer
    /// does not). Move the state to `node`, the node nearest the consumer
    /// that the transfer can reach while its links stay up: this gets the
    /// state to the consumer soonest.
    BestEffort {
        /// The chosen node.
        node: String,
        /// Its migration time, ms (over `Tmax`).
        tmig_ms: f64,
        /// Hops between the chosen node and the consumer (0: the consumer).
        hops_to_consumer: usize,
        /// The path producer → consumer with each node's migration time.
        path: Vec<PathNode>,
    },
    /// Keep the state on the producer.
    Stay {
        /// Why.
        reason: StayReason,
        /// The path considered (empty when unreachable).
        path: Vec<PathNode>,
    },
}

impl Decision {
    /// The node the state should be on after the decision.
    pub fn target<'a>(&'a self, request: &'a ElectionRequest) -> &'a str {
        match self {
            Decision::Propagate { node, .. } | Decision::BestEffort { node, .. } => node,
            Decision::Stay { .. } => &request.producer,
        }
    }

    /// Whether the decision already says the step's SLO cannot be met: no
    /// node fits `Tmax` ([`Decision::BestEffort`]), or the state cannot
    /// leave the producer although the consumer runs elsewhere.
    pub fn slo_missed(&self) -> bool {
        matches!(
            self,
            Decision::BestEffort { .. }
                | Decision::Stay { reason: StayReason::NoNodeFits | StayReason::Unreachable, .. }
        )
    }

    /// The paper prototype's answer when the SLO is missed: never past
    /// `tmax_ms`. A [`Decision::BestEffort`] becomes the node nearest the
    /// consumer that fits `tmax_ms` (its links up), or a stay on the
    /// producer when none does; other decisions are kept.
    pub fn within_tmax(self, tmax_ms: f64) -> Decision {
        match self {
            Decision::BestEffort { path, .. } => {
                let last = path.len().saturating_sub(1);
                match (1..path.len()).rev().find(|&i| path[i].window_ok && path[i].tmig_ms <= tmax_ms) {
                    Some(i) => Decision::Propagate {
                        node: path[i].node.clone(),
                        tmig_ms: path[i].tmig_ms,
                        hops_to_consumer: last - i,
                        path,
                    },
                    None => Decision::Stay { reason: StayReason::NoNodeFits, path },
                }
            }
            other => other,
        }
    }

    /// The path producer → consumer the decision considered.
    pub fn path(&self) -> &[PathNode] {
        match self {
            Decision::Propagate { path, .. } | Decision::BestEffort { path, .. } | Decision::Stay { path, .. } => path,
        }
    }
}

/// Elect the storage node for `request` on `snapshot`.
pub fn elect(snapshot: &Snapshot, request: &ElectionRequest) -> Result<Decision> {
    if !(request.tmax_ms.is_finite() && request.tmax_ms >= 0.0) {
        return Err(Error::BadRequest(format!("tmax_ms must be a non-negative number, got {}", request.tmax_ms)));
    }
    let producer = snapshot.index_of(&request.producer).ok_or_else(|| Error::UnknownNode(request.producer.clone()))?;
    let consumer = snapshot.index_of(&request.consumer).ok_or_else(|| Error::UnknownNode(request.consumer.clone()))?;
    if producer == consumer {
        let path = vec![PathNode { node: request.producer.clone(), tmig_ms: 0.0, window_ok: true, latency_ms: 0.0 }];
        return Ok(Decision::Stay { reason: StayReason::AlreadyLocal, path });
    }
    let Some((_, path)) = astar(&snapshot.graph, producer, |n| n == consumer, |e| e.weight().latency_ms, |_| 0.0)
    else {
        return Ok(Decision::Stay { reason: StayReason::Unreachable, path: Vec::new() });
    };
    let annotated = annotate(snapshot, &path, request.size_bytes, request.one_way);
    let last = annotated.len() - 1;
    if request.one_way && annotated[last].window_ok {
        // Nothing but the consumer waits on a one-way push (step 4).
        let (node, tmig_ms) = (annotated[last].node.clone(), annotated[last].tmig_ms);
        return Ok(if tmig_ms <= request.tmax_ms {
            Decision::Propagate { node, tmig_ms, hops_to_consumer: 0, path: annotated }
        } else {
            Decision::BestEffort { node, tmig_ms, hops_to_consumer: 0, path: annotated }
        });
    }
    for i in (1..annotated.len()).rev() {
        let n = &annotated[i];
        if n.window_ok && n.tmig_ms <= request.tmax_ms {
            return Ok(Decision::Propagate {
                node: n.node.clone(),
                tmig_ms: n.tmig_ms,
                hops_to_consumer: last - i,
                path: annotated,
            });
        }
    }
    if let Some(i) = (1..annotated.len()).rev().find(|&i| annotated[i].window_ok) {
        return Ok(Decision::BestEffort {
            node: annotated[i].node.clone(),
            tmig_ms: annotated[i].tmig_ms,
            hops_to_consumer: last - i,
            path: annotated,
        });
    }
    Ok(Decision::Stay { reason: StayReason::NoNodeFits, path: annotated })
}

/// Migration time and window check for every node of `path`.
fn annotate(snapshot: &Snapshot, path: &[NodeIndex], size_bytes: u64, one_way: bool) -> Vec<PathNode> {
    let bits = size_bytes as f64 * 8.0;
    let legs = if one_way { 1.0 } else { 2.0 };
    let mut out = Vec::with_capacity(path.len());
    out.push(PathNode { node: snapshot.id_of(path[0]).to_string(), tmig_ms: 0.0, window_ok: true, latency_ms: 0.0 });
    let (mut latency, mut jitter, mut bottleneck, mut shortest_window) = (0.0f64, 0.0f64, f64::INFINITY, u64::MAX);
    for hop in path.windows(2) {
        let link = best_link(snapshot, hop[0], hop[1]);
        latency += link.latency_ms;
        jitter += link.jitter_ms;
        bottleneck = bottleneck.min(link.bandwidth_bps);
        shortest_window = shortest_window.min(link.remaining_ms);
        let tmig = legs * (latency + jitter) + bits / bottleneck * 1000.0;
        let window_ok = out.last().is_some_and(|p: &PathNode| p.window_ok) && (shortest_window as f64) >= tmig;
        out.push(PathNode { node: snapshot.id_of(hop[1]).to_string(), tmig_ms: tmig, window_ok, latency_ms: latency });
    }
    out
}

/// The lowest-latency live link between two adjacent nodes of the path.
fn best_link(snapshot: &Snapshot, a: NodeIndex, b: NodeIndex) -> crate::topology::LiveLink {
    snapshot
        .graph
        .edges(a)
        .filter(|e| e.target() == b || e.source() == b)
        .map(|e| *e.weight())
        .min_by(|x, y| x.latency_ms.total_cmp(&y.latency_ms))
        .unwrap_or(crate::topology::LiveLink {
            latency_ms: f64::INFINITY,
            jitter_ms: 0.0,
            bandwidth_bps: 0.0,
            remaining_ms: 0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;
    use proptest::prelude::*;

    fn chain(n: usize, bandwidth: &[f64], window_end: Option<u64>) -> Topology {
        let mut text = String::from("period_ms = 100000\n");
        for i in 0..n {
            text += &format!("[[node]]\nid = \"n{i}\"\nkind = \"satellite\"\n");
        }
        for i in 0..n - 1 {
            text += &format!(
                "[[link]]\na = \"n{i}\"\nb = \"n{}\"\nlatency_ms = 10\njitter_ms = 1\nbandwidth_mbps = {}\n",
                i + 1,
                bandwidth[i % bandwidth.len()]
            );
            if let (Some(end), 0) = (window_end, i) {
                text += &format!("windows = [{{start_ms = 0, end_ms = {end}}}]\n");
            }
        }
        Topology::from_toml(&text).unwrap()
    }

    fn req(p: &str, c: &str, size: u64, tmax: f64) -> ElectionRequest {
        ElectionRequest { producer: p.into(), consumer: c.into(), size_bytes: size, tmax_ms: tmax, one_way: false }
    }

    #[test]
    fn worked_example_from_the_docs() {
        // n0 -> n4, 4 hops of 10 ms ± 1 ms, 40 Mbit/s; 1 MB state.
        // Tmig(n_k) = 2·(11k) + 8e6/40e6·1000 = 22k + 200 ms.
        let t = chain(5, &[40.0], None);
        let d = elect(&t.snapshot(0), &req("n0", "n4", 1_000_000, 250.0)).unwrap();
        match d {
            Decision::Propagate { node, tmig_ms, hops_to_consumer, path } => {
                assert_eq!(node, "n2");
                assert!((tmig_ms - 244.0).abs() < 1e-9, "{tmig_ms}");
                assert_eq!(hops_to_consumer, 2);
                assert!((path[4].tmig_ms - 288.0).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        let all = elect(&t.snapshot(0), &req("n0", "n4", 1_000_000, 300.0)).unwrap();
        assert!(matches!(all, Decision::Propagate { ref node, .. } if node == "n4"));
    }

    #[test]
    fn a_consumer_that_waits_only_for_the_bytes_counts_the_latency_once() {
        // Tmax 250: two-way, n4 needs 22·4 + 200 = 288 ms and n2 is elected;
        // one-way it needs 11·4 + 200 = 244 ms and the consumer itself fits.
        let t = chain(5, &[40.0], None);
        let one_way = ElectionRequest { one_way: true, ..req("n0", "n4", 1_000_000, 250.0) };
        match elect(&t.snapshot(0), &one_way).unwrap() {
            Decision::Propagate { node, tmig_ms, path, .. } => {
                assert_eq!(node, "n4");
                assert!((tmig_ms - 244.0).abs() < 1e-9, "{tmig_ms}");
                assert!((path[2].latency_ms - 20.0).abs() < 1e-9, "{path:?}");
            }
            other => panic!("{other:?}"),
        }
        let two_way = elect(&t.snapshot(0), &req("n0", "n4", 1_000_000, 250.0)).unwrap();
        assert!(matches!(two_way, Decision::Propagate { ref node, .. } if node == "n2"), "{two_way:?}");
    }

    #[test]
    fn one_way_the_consumer_is_elected_past_tmax_and_the_slo_reported_missed() {
        // Tmax 230: one-way the consumer needs 244 ms, n3 233, n2 222. The
        // paper's rule stops at n2; one way, the state goes to the consumer.
        let t = chain(5, &[40.0], None);
        let r = ElectionRequest { one_way: true, ..req("n0", "n4", 1_000_000, 230.0) };
        let d = elect(&t.snapshot(0), &r).unwrap();
        assert!(
            matches!(&d, Decision::BestEffort { node, hops_to_consumer: 0, tmig_ms, .. } if node == "n4" && (*tmig_ms - 244.0).abs() < 1e-9),
            "{d:?}"
        );
        assert!(d.slo_missed());
        let strict = d.within_tmax(230.0);
        assert!(matches!(&strict, Decision::Propagate { node, hops_to_consumer: 2, .. } if node == "n2"), "{strict:?}");
        assert!(!strict.slo_missed());
        // Nothing fits at all: the paper's rule keeps the state home.
        let none = elect(&t.snapshot(0), &ElectionRequest { one_way: true, ..req("n0", "n4", 1_000_000, 100.0) })
            .unwrap()
            .within_tmax(100.0);
        assert!(matches!(none, Decision::Stay { reason: StayReason::NoNodeFits, .. }), "{none:?}");
        // A consumer whose link closes mid-transfer is not elected one way either.
        let closed = chain(3, &[40.0], Some(1000));
        let d =
            elect(&closed.snapshot(900), &ElectionRequest { one_way: true, ..req("n0", "n2", 1_000_000, 10_000.0) })
                .unwrap();
        assert!(matches!(d, Decision::Stay { reason: StayReason::NoNodeFits, .. }), "{d:?}");
    }

    #[test]
    fn bottleneck_bandwidth_and_units() {
        // 80 Mbit/s then 8 Mbit/s: 1 MB takes 1000 ms over the bottleneck.
        let t = chain(3, &[80.0, 8.0], None);
        let d = elect(&t.snapshot(0), &req("n0", "n2", 1_000_000, 1000.0)).unwrap();
        // n2: 2·22 + 1000 = 1044 > 1000; n1: 2·11 + 100 = 122.
        assert!(matches!(d, Decision::Propagate { ref node, .. } if node == "n1"), "{d:?}");
    }

    #[test]
    fn nothing_fits_or_unreachable_says_why() {
        let t = chain(3, &[1.0], None);
        // 50 MB over 1 Mbit/s in 10 ms: nobody fits; the links stay up, so
        // the state goes all the way to the consumer and the SLO is missed.
        let d = elect(&t.snapshot(0), &req("n0", "n2", 50_000_000, 10.0)).unwrap();
        assert!(
            matches!(&d, Decision::BestEffort { node, hops_to_consumer: 0, tmig_ms, .. } if node == "n2" && *tmig_ms > 10.0),
            "{d:?}"
        );
        assert!(d.slo_missed());
        assert_eq!(d.target(&req("n0", "n2", 50_000_000, 10.0)), "n2");
        let closed = chain(3, &[40.0], Some(1000));
        let d = elect(&closed.snapshot(5000), &req("n0", "n2", 1000, 1000.0)).unwrap();
        assert!(matches!(d, Decision::Stay { reason: StayReason::Unreachable, .. }), "{d:?}");
        assert!(d.slo_missed());
        let d = elect(&closed.snapshot(0), &req("n1", "n1", 1000, 1000.0)).unwrap();
        assert!(matches!(d, Decision::Stay { reason: StayReason::AlreadyLocal, .. }));
        assert!(!d.slo_missed());
        assert!(matches!(elect(&closed.snapshot(0), &req("n0", "x", 1, 1.0)), Err(Error::UnknownNode(_))));
        assert!(elect(&closed.snapshot(0), &req("n0", "n1", 1, f64::NAN)).is_err());
    }

    #[test]
    fn a_window_closing_mid_transfer_excludes_the_nodes_behind_it() {
        // First link closes at 1000 ms; at t = 900 only 100 ms remain.
        let t = chain(3, &[40.0], Some(1000));
        let d = elect(&t.snapshot(900), &req("n0", "n2", 1_000_000, 10_000.0)).unwrap();
        assert!(matches!(d, Decision::Stay { reason: StayReason::NoNodeFits, .. }), "{d:?}");
        // A Tmax nobody meets does not send the state through a closing link
        // either: best effort stops short of it.
        let mut text = String::from("period_ms = 100000\n");
        for i in 0..4 {
            text += &format!("[[node]]\nid = \"n{i}\"\nkind = \"satellite\"\n");
        }
        for i in 0..3 {
            text += &format!(
                "[[link]]\na = \"n{i}\"\nb = \"n{}\"\nlatency_ms = 10\njitter_ms = 1\nbandwidth_mbps = 40\n",
                i + 1
            );
        }
        text += "windows = [{start_ms = 0, end_ms = 500}]\n";
        let late = Topology::from_toml(&text).unwrap();
        // At t = 300 the last link has 200 ms left; Tmig(n3) = 266, Tmig(n2) = 244.
        let d = elect(&late.snapshot(300), &req("n0", "n3", 1_000_000, 50.0)).unwrap();
        assert!(matches!(&d, Decision::BestEffort { node, hops_to_consumer: 1, .. } if node == "n2"), "{d:?}");
        let d = elect(&late.snapshot(0), &req("n0", "n3", 1_000_000, 50.0)).unwrap();
        assert!(matches!(&d, Decision::BestEffort { node, hops_to_consumer: 0, .. } if node == "n3"), "{d:?}");
        let d = elect(&t.snapshot(0), &req("n0", "n2", 1_000_000, 10_000.0)).unwrap();
        assert!(matches!(d, Decision::Propagate { ref node, .. } if node == "n2"), "{d:?}");
    }

    fn arb_topology() -> impl Strategy<Value = Topology> {
        (3usize..30, proptest::collection::vec((0usize..30, 0usize..30, 1u32..50, 0u32..10, 1u32..200), 2..80))
            .prop_map(|(n, links)| {
                let mut text = String::from("period_ms = 10000\n");
                for i in 0..n {
                    text += &format!("[[node]]\nid = \"n{i}\"\nkind = \"edge\"\n");
                }
                let mut seen = std::collections::HashSet::new();
                for (a, b, lat, jit, bw) in links {
                    let (a, b) = (a % n, b % n);
                    if a == b || !seen.insert((a.min(b), a.max(b))) {
                        continue;
                    }
                    text += &format!(
                        "[[link]]\na = \"n{a}\"\nb = \"n{b}\"\nlatency_ms = {lat}\njitter_ms = {jit}\nbandwidth_mbps = {bw}\n"
                    );
                }
                Topology::from_toml(&text).unwrap()
            })
    }

    proptest! {
        #[test]
        fn elected_node_is_on_the_path_fits_and_is_nearest(
            t in arb_topology(), p in 0usize..30, c in 0usize..30, size in 0u64..20_000_000, tmax in 0.0f64..3000.0
        ) {
            let n = t.nodes.len();
            let r = req(&format!("n{}", p % n), &format!("n{}", c % n), size, tmax);
            let d = elect(&t.snapshot(0), &r).unwrap();
            match d {
                Decision::Propagate { node, tmig_ms, hops_to_consumer, path } => {
                    let pos = path.iter().position(|x| x.node == node).expect("elected node on the path");
                    prop_assert_eq!(path.first().map(|x| x.node.as_str()), Some(r.producer.as_str()));
                    prop_assert_eq!(path.last().map(|x| x.node.as_str()), Some(r.consumer.as_str()));
                    prop_assert!(tmig_ms <= tmax);
                    prop_assert_eq!(hops_to_consumer, path.len() - 1 - pos);
                    for nearer in &path[pos + 1..] {
                        prop_assert!(!(nearer.window_ok && nearer.tmig_ms <= tmax), "a nearer node fits: {:?}", nearer);
                    }
                    // Migration time never decreases along the path.
                    for w in path.windows(2) {
                        prop_assert!(w[1].tmig_ms >= w[0].tmig_ms);
                    }
                }
                Decision::BestEffort { node, tmig_ms, hops_to_consumer, path } => {
                    let pos = path.iter().position(|x| x.node == node).expect("chosen node on the path");
                    prop_assert!(pos > 0 && path[pos].window_ok && tmig_ms > tmax);
                    prop_assert_eq!(hops_to_consumer, path.len() - 1 - pos);
                    for x in &path[1..] {
                        prop_assert!(!(x.window_ok && x.tmig_ms <= tmax), "a node fits: {:?}", x);
                    }
                    for nearer in &path[pos + 1..] {
                        prop_assert!(!nearer.window_ok, "a nearer node is reachable: {:?}", nearer);
                    }
                }
                Decision::Stay { reason: StayReason::NoNodeFits, path } => {
                    for x in &path[1..] {
                        prop_assert!(!x.window_ok);
                    }
                }
                Decision::Stay { reason: StayReason::AlreadyLocal, .. } => prop_assert_eq!(&r.producer, &r.consumer),
                Decision::Stay { reason: StayReason::Unreachable, path } => {
                    prop_assert!(path.is_empty());
                    let s = t.snapshot(0);
                    let (a, b) = (s.index_of(&r.producer).unwrap(), s.index_of(&r.consumer).unwrap());
                    prop_assert!(!petgraph::algo::has_path_connecting(&s.graph, a, b, None));
                }
            }
        }

        #[test]
        fn one_way_elects_the_consumer_when_its_links_hold_and_within_tmax_never_passes_tmax(
            t in arb_topology(), p in 0usize..30, c in 0usize..30, size in 0u64..20_000_000, tmax in 0.0f64..3000.0
        ) {
            let n = t.nodes.len();
            let r = ElectionRequest { one_way: true, ..req(&format!("n{}", p % n), &format!("n{}", c % n), size, tmax) };
            let d = elect(&t.snapshot(0), &r).unwrap();
            let path = d.path().to_vec();
            if path.len() > 1 && path[path.len() - 1].window_ok {
                prop_assert_eq!(d.target(&r), r.consumer.as_str());
                prop_assert_eq!(d.slo_missed(), path[path.len() - 1].tmig_ms > tmax);
            } else {
                // Otherwise the two-way rules hold, with one-way times.
                let two = elect(&t.snapshot(0), &ElectionRequest { one_way: false, ..r.clone() }).unwrap();
                prop_assert_eq!(std::mem::discriminant(&d), std::mem::discriminant(&two));
            }
            match d.within_tmax(tmax) {
                Decision::Propagate { tmig_ms, node, path, .. } => {
                    prop_assert!(tmig_ms <= tmax);
                    let pos = path.iter().position(|x| x.node == node).expect("on the path");
                    for nearer in &path[pos + 1..] {
                        prop_assert!(!(nearer.window_ok && nearer.tmig_ms <= tmax), "a nearer node fits: {:?}", nearer);
                    }
                }
                Decision::BestEffort { .. } => prop_assert!(false, "within_tmax never answers best effort"),
                Decision::Stay { .. } => {}
            }
        }
    }
}
