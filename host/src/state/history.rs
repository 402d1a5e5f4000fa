//! Checking a history of committed transactions for serializability (pure
//! logic, no I/O): the check behind the claim that workflow steps, which
//! commit with optimistic validation ([`crate::state::StateTier::commit_staged`]),
//! are serializable.
//!
//! Each committed transaction names the version of every entry it read
//! (`None`: absent) and the version its commit gave every entry it wrote.
//! Versions come from one store, so they order the writes of each key. The
//! direct serialization graph has an edge `a → b` when
//! - `b` read a version `a` wrote (write → read),
//! - `b` wrote the next version of a key after `a`'s (write → write), or
//! - `a` read a version of a key and `b` wrote the next one (read → write,
//!   the anti-dependency);
//!
//! and the history is serializable (conflict-serializable) exactly when that
//! graph has no cycle (Adya's DSG). Deletes are not modelled: histories given
//! here write with versions only.

use std::collections::HashMap;

use petgraph::algo::toposort;
use petgraph::graph::DiGraph;

use super::ScopedKey;

/// One committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The entries it read and the version it saw (`None`: absent).
    pub reads: Vec<(ScopedKey, Option<u64>)>,
    /// The entries it wrote and the version its commit gave them.
    pub writes: Vec<(ScopedKey, u64)>,
}

/// Why a history is not serializable: a cycle of transactions (indices into
/// the history), or a read of a version nobody in the history wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSerializable {
    /// These transactions depend on each other in a cycle; one of them is
    /// named.
    Cycle(usize),
    /// Transaction `reader` read version `version` of `key`, which no
    /// transaction of the history wrote.
    UnknownVersion {
        /// The reader.
        reader: usize,
        /// The key.
        key: ScopedKey,
        /// The version it claims to have read.
        version: u64,
    },
}

/// Check that `history` is conflict-serializable; returns an order in which
/// its transactions could have run one at a time.
pub fn serial_order(history: &[Committed]) -> Result<Vec<usize>, NotSerializable> {
    // Per key: (version, writer), ascending.
    let mut writers: HashMap<&ScopedKey, Vec<(u64, usize)>> = HashMap::new();
    for (t, c) in history.iter().enumerate() {
        for (key, version) in &c.writes {
            writers.entry(key).or_default().push((*version, t));
        }
    }
    for w in writers.values_mut() {
        w.sort_unstable();
    }
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<_> = (0..history.len()).map(|t| graph.add_node(t)).collect();
    let mut edge = |a: usize, b: usize| {
        if a != b {
            graph.update_edge(nodes[a], nodes[b], ());
        }
    };
    for w in writers.values() {
        for pair in w.windows(2) {
            edge(pair[0].1, pair[1].1);
        }
    }
    for (reader, c) in history.iter().enumerate() {
        for (key, seen) in &c.reads {
            let w = writers.get(key).map(Vec::as_slice).unwrap_or_default();
            // The first write after the version read (all of them when it read
            // the initial absence).
            let next = match seen {
                None => 0,
                Some(v) => match w.binary_search_by_key(v, |(version, _)| *version) {
                    Ok(i) => {
                        edge(w[i].1, reader);
                        i + 1
                    }
                    Err(_) => {
                        return Err(NotSerializable::UnknownVersion { reader, key: key.clone(), version: *v });
                    }
                },
            };
            if let Some((_, writer)) = w.get(next) {
                edge(reader, *writer);
            }
        }
    }
    toposort(&graph, None)
        .map(|order| order.into_iter().map(|n| graph[n]).collect())
        .map_err(|cycle| NotSerializable::Cycle(graph[cycle.node_id()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> ScopedKey {
        ScopedKey::new("s", name)
    }

    #[test]
    fn a_serial_history_is_serializable_in_its_order() {
        // t0 writes x@1; t1 reads x@1 and writes y@2; t2 reads y@2.
        let h = vec![
            Committed { reads: vec![(k("x"), None)], writes: vec![(k("x"), 1)] },
            Committed { reads: vec![(k("x"), Some(1))], writes: vec![(k("y"), 2)] },
            Committed { reads: vec![(k("y"), Some(2))], writes: vec![] },
        ];
        assert_eq!(serial_order(&h), Ok(vec![0, 1, 2]));
    }

    #[test]
    fn a_lost_update_is_a_cycle() {
        // Both read x absent and both write it: each must precede the other.
        let h = vec![
            Committed { reads: vec![(k("x"), None)], writes: vec![(k("x"), 1)] },
            Committed { reads: vec![(k("x"), None)], writes: vec![(k("x"), 2)] },
        ];
        assert!(matches!(serial_order(&h), Err(NotSerializable::Cycle(_))));
    }

    #[test]
    fn write_skew_is_a_cycle() {
        // t0 reads y and writes x; t1 reads x and writes y; both saw the
        // initial state.
        let h = vec![
            Committed { reads: vec![(k("x"), None), (k("y"), None)], writes: vec![(k("x"), 1)] },
            Committed { reads: vec![(k("x"), None), (k("y"), None)], writes: vec![(k("y"), 2)] },
        ];
        assert!(matches!(serial_order(&h), Err(NotSerializable::Cycle(_))));
    }

    #[test]
    fn a_read_of_a_version_nobody_wrote_is_reported() {
        let h = vec![Committed { reads: vec![(k("x"), Some(7))], writes: vec![] }];
        assert_eq!(serial_order(&h), Err(NotSerializable::UnknownVersion { reader: 0, key: k("x"), version: 7 }));
    }
}
