//! Lattice values of replicated scopes: each key of a replicated scope holds
//! one [`Lattice`], and replicas merge what they receive with
//! [`Lattice::merge`], in any order, any number of times, without
//! coordination. Pure logic over the `crdts` crate, tested alone.
//!
//! - A **register** (plain bytes) keeps concurrent writes as siblings, each
//!   under its vector clock ([`crdts::MVReg`]). A plain read returns the
//!   sibling with the greatest stamp (hybrid logical clock, then node id):
//!   last writer wins, and functions that ask see every sibling. A write
//!   replaces every sibling the writer has seen. A delete is a write of a
//!   tombstone sibling.
//! - A **counter** is a PN counter ([`crdts::PNCounter`]): each node counts its
//!   own increments and decrements; the value is their sum.
//! - A **set** of strings is an OR-set without tombstones
//!   ([`crdts::Orswot`]): an add wins over a concurrent remove.
//!
//! A scope is then a map of lattices, merged key by key. Two replicas that
//! made a key different kinds concurrently keep the higher kind (register <
//! counter < set), which is still a lattice (a lexicographic sum); a typed
//! operation on a key of another kind fails and changes nothing.

use crdts::{CmRDT, CvRDT, MVReg, Orswot, PNCounter};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A node id: the actor of every CRDT operation a node makes.
pub type Actor = String;

/// A hybrid-logical-clock stamp: milliseconds since the Unix epoch in the
/// upper 48 bits, a logical counter in the lower 16. Later writes that saw
/// earlier ones always get greater stamps, whatever the wall clocks say.
pub type Stamp = u64;

/// The next stamp after `last` at wall-clock time `now_ms`.
pub fn next_stamp(last: Stamp, now_ms: u64) -> Stamp {
    (now_ms << 16).max(last.saturating_add(1))
}

/// One sibling of a register: its bytes (`None`: deleted), its stamp and the
/// node that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sibling {
    /// When it was written (hybrid logical clock).
    pub stamp: Stamp,
    /// The node that wrote it.
    pub node: Actor,
    /// The bytes; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

impl Sibling {
    fn order(&self) -> (Stamp, &str) {
        (self.stamp, &self.node)
    }
}

/// The kind of a lattice value (what typed operations expect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Plain bytes, last writer wins, siblings kept.
    Register,
    /// A PN counter.
    Counter,
    /// An OR-set of strings.
    Set,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Register => "register",
            Kind::Counter => "counter",
            Kind::Set => "set",
        })
    }
}

/// The value of one key of a replicated scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lattice {
    /// Bytes with siblings (multi-value register).
    Register(MVReg<Sibling, Actor>),
    /// A PN counter.
    Counter(PNCounter<Actor>),
    /// An OR-set of strings.
    Set(Orswot<String, Actor>),
}

impl Lattice {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Lattice::Register(_) => Kind::Register,
            Lattice::Counter(_) => Kind::Counter,
            Lattice::Set(_) => Kind::Set,
        }
    }

    /// Decode a stored value.
    pub fn decode(bytes: &[u8]) -> Result<Lattice> {
        postcard::from_bytes(bytes).map_err(|e| Error::storage_msg(format!("corrupt replicated value: {e}")))
    }

    /// Encode for storing and shipping.
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_allocvec(self).map_err(|e| Error::storage_msg(format!("cannot encode a replicated value: {e}")))
    }

    /// Join `other` into `self` (commutative, associative, idempotent).
    pub fn merge(&mut self, other: Lattice) {
        match (self, other) {
            (Lattice::Register(a), Lattice::Register(b)) => a.merge(b),
            (Lattice::Counter(a), Lattice::Counter(b)) => a.merge(b),
            (Lattice::Set(a), Lattice::Set(b)) => a.merge(b),
            (this, other) => {
                if other.kind() > this.kind() {
                    *this = other;
                }
            }
        }
    }

    /// The siblings of a register, greatest stamp first; empty for other kinds.
    pub fn siblings(&self) -> Vec<Sibling> {
        let Lattice::Register(reg) = self else { return Vec::new() };
        let mut all = reg.read().val;
        all.sort_by(|a, b| b.order().cmp(&a.order()));
        all.dedup();
        all
    }

    /// The greatest stamp of a register's siblings (0 when none).
    pub fn max_stamp(&self) -> Stamp {
        self.siblings().first().map_or(0, |s| s.stamp)
    }

    /// What a plain read returns: a register's last-written bytes (`None`
    /// when that was a delete), a counter's value as the 8-byte
    /// little-endian s64 of `databelt:state`, a set's members as JSON.
    pub fn plain_value(&self) -> Result<Option<Vec<u8>>> {
        match self {
            Lattice::Register(_) => Ok(self.siblings().into_iter().next().and_then(|s| s.value)),
            Lattice::Counter(_) => Ok(Some(super::encode_counter(self.counter()?).to_vec())),
            Lattice::Set(_) => serde_json::to_vec(&self.members())
                .map(Some)
                .map_err(|e| Error::storage_msg(format!("cannot encode set members: {e}"))),
        }
    }

    /// A counter's value (errors when it does not fit an s64).
    pub fn counter(&self) -> Result<i64> {
        match self {
            Lattice::Counter(c) => {
                let v = c.read();
                i64::try_from(&v).map_err(|_| Error::Other(format!("counter value {v} does not fit an s64")))
            }
            other => Err(wrong_kind(other.kind(), Kind::Counter)),
        }
    }

    /// A set's members in ascending order; empty for other kinds.
    pub fn members(&self) -> Vec<String> {
        let Lattice::Set(s) = self else { return Vec::new() };
        let mut m: Vec<String> = s.read().val.into_iter().collect();
        m.sort();
        m
    }

    /// Whether a set holds `member`.
    pub fn contains(&self, member: &str) -> bool {
        matches!(self, Lattice::Set(s) if s.contains(&member.to_string()).val)
    }
}

fn wrong_kind(found: Kind, wanted: Kind) -> Error {
    Error::PreconditionFailed(format!("the key holds a replicated {found}, not a {wanted}"))
}

/// An operation a node makes on one key of a replicated scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Write bytes (`None`: delete), replacing every sibling seen.
    Put(Option<Vec<u8>>),
    /// Add to a counter (negative: subtract).
    Add(i64),
    /// Add members to a set.
    Insert(Vec<String>),
    /// Remove members from a set (those seen; a concurrent add wins).
    Remove(Vec<String>),
}

impl Update {
    /// The kind of value it makes or needs.
    pub fn kind(&self) -> Kind {
        match self {
            Update::Put(_) => Kind::Register,
            Update::Add(_) => Kind::Counter,
            Update::Insert(_) | Update::Remove(_) => Kind::Set,
        }
    }
}

/// Apply `update`, made by `node` at `stamp` (only registers use it), to
/// `current` (`None`: the key is absent). A delete of an absent key, or a
/// remove from an absent set, changes nothing (`Ok(None)`); a typed
/// operation on a key of another kind fails.
pub fn apply(current: Option<Lattice>, node: &str, stamp: Stamp, update: Update) -> Result<Option<Lattice>> {
    let kind = update.kind();
    if let Some(cur) = &current
        && cur.kind() != kind
    {
        // A delete of a set removes every member; other kinds cannot be deleted.
        if let (Update::Put(None), Lattice::Set(_)) = (&update, cur) {
            let all = cur.members();
            return apply(current, node, stamp, Update::Remove(all));
        }
        return Err(wrong_kind(cur.kind(), kind));
    }
    let actor = node.to_string();
    match update {
        Update::Put(value) => {
            if value.is_none() && current.as_ref().is_none_or(|c| c.plain_value().ok().flatten().is_none()) {
                return Ok(None);
            }
            let mut reg = match current {
                Some(Lattice::Register(r)) => r,
                _ => MVReg::new(),
            };
            let stamp = stamp.max(Lattice::Register(reg.clone()).max_stamp().saturating_add(1));
            let ctx = reg.read_ctx().derive_add_ctx(actor.clone());
            let op = reg.write(Sibling { stamp, node: actor, value }, ctx);
            reg.apply(op);
            Ok(Some(Lattice::Register(reg)))
        }
        Update::Add(delta) => {
            let mut c = match current {
                Some(Lattice::Counter(c)) => c,
                _ => PNCounter::new(),
            };
            let before = Lattice::Counter(c.clone()).counter()?;
            before
                .checked_add(delta)
                .ok_or_else(|| Error::Other(format!("counter would overflow: {before} + {delta}")))?;
            let op = if delta >= 0 {
                c.inc_many(actor, delta.unsigned_abs())
            } else {
                c.dec_many(actor, delta.unsigned_abs())
            };
            c.apply(op);
            Ok(Some(Lattice::Counter(c)))
        }
        Update::Insert(members) => {
            let mut s = match current {
                Some(Lattice::Set(s)) => s,
                _ => Orswot::new(),
            };
            if members.is_empty() {
                return Ok(Some(Lattice::Set(s)));
            }
            let op = s.add_all(members, s.read_ctx().derive_add_ctx(actor));
            s.apply(op);
            Ok(Some(Lattice::Set(s)))
        }
        Update::Remove(members) => {
            let Some(Lattice::Set(mut s)) = current else { return Ok(None) };
            let op = s.rm_all(members, s.read_ctx().derive_rm_ctx());
            s.apply(op);
            Ok(Some(Lattice::Set(s)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn replica(node: &str, updates: &[(u8, Update)]) -> Option<Lattice> {
        let mut cur = None;
        for (stamp, u) in updates {
            if let Ok(next) = apply(cur.clone(), node, *stamp as u64, u.clone()) {
                cur = next;
            }
        }
        cur
    }

    fn update() -> impl Strategy<Value = Update> {
        prop_oneof![
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)).prop_map(Update::Put),
            (-5i64..5).prop_map(Update::Add),
            proptest::collection::vec("[a-d]", 0..3).prop_map(Update::Insert),
            proptest::collection::vec("[a-d]", 0..3).prop_map(Update::Remove),
        ]
    }

    /// Three values made by three nodes from random updates of one kind
    /// (mixed kinds are covered by `kinds_merge_by_rank`).
    fn values() -> impl Strategy<Value = Vec<Lattice>> {
        (0usize..3, proptest::collection::vec(proptest::collection::vec((any::<u8>(), update()), 1..6), 3)).prop_map(
            |(kind, per_node)| {
                per_node
                    .iter()
                    .enumerate()
                    .filter_map(|(i, ups)| {
                        let ups: Vec<(u8, Update)> = ups
                            .iter()
                            .map(|(s, u)| {
                                let u = match (kind, u.clone()) {
                                    (0, Update::Put(v)) => Update::Put(v),
                                    (0, _) => Update::Put(Some(vec![*s])),
                                    (1, Update::Add(d)) => Update::Add(d),
                                    (1, _) => Update::Add(1),
                                    (_, u @ (Update::Insert(_) | Update::Remove(_))) => u,
                                    (_, _) => Update::Insert(vec!["z".into()]),
                                };
                                (*s, u)
                            })
                            .collect();
                        replica(&format!("n{i}"), &ups)
                    })
                    .collect()
            },
        )
    }

    fn join(mut a: Lattice, b: &Lattice) -> Lattice {
        a.merge(b.clone());
        a
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(v in values()) {
            prop_assume!(v.len() == 3);
            let (a, b, c) = (&v[0], &v[1], &v[2]);
            prop_assert_eq!(join(a.clone(), b), join(b.clone(), a));
            prop_assert_eq!(join(join(a.clone(), b), c), join(a.clone(), &join(b.clone(), c)));
            prop_assert_eq!(join(a.clone(), a), a.clone());
            // What readers see agrees too.
            prop_assert_eq!(join(a.clone(), b).plain_value().ok(), join(b.clone(), a).plain_value().ok());
        }
    }

    #[test]
    fn concurrent_register_writes_stay_siblings_and_the_latest_stamp_wins_a_plain_read() {
        let a = apply(None, "a", 10, Update::Put(Some(b"from a".to_vec()))).unwrap().unwrap();
        let b = apply(None, "b", 20, Update::Put(Some(b"from b".to_vec()))).unwrap().unwrap();
        let merged = join(a.clone(), &b);
        assert_eq!(merged.siblings().len(), 2);
        assert_eq!(merged.plain_value().unwrap(), Some(b"from b".to_vec()));
        // A write that saw both replaces both, even with an older wall clock.
        let next = apply(Some(merged.clone()), "a", 5, Update::Put(Some(b"resolved".to_vec()))).unwrap().unwrap();
        assert_eq!(next.siblings().len(), 1);
        assert!(next.max_stamp() > 20);
        assert_eq!(join(next.clone(), &merged), next);
    }

    #[test]
    fn counters_sum_every_node_and_sets_let_adds_win_over_concurrent_removes() {
        let a = apply(None, "a", 0, Update::Add(5)).unwrap().unwrap();
        let b = apply(None, "b", 0, Update::Add(-8)).unwrap().unwrap();
        let m = join(a, &b);
        assert_eq!(m.counter().unwrap(), -3);
        assert_eq!(m.plain_value().unwrap(), Some((-3i64).to_le_bytes().to_vec()));

        let s = apply(None, "a", 0, Update::Insert(vec!["x".into(), "y".into()])).unwrap().unwrap();
        let removed = apply(Some(s.clone()), "a", 0, Update::Remove(vec!["x".into()])).unwrap().unwrap();
        let readded = apply(Some(s.clone()), "b", 0, Update::Insert(vec!["x".into()])).unwrap().unwrap();
        let m = join(removed, &readded);
        assert_eq!(m.members(), vec!["x".to_string(), "y".to_string()]);
        assert!(m.contains("x"));
    }

    #[test]
    fn a_typed_operation_on_another_kind_fails_and_kinds_merge_by_rank() {
        let c = apply(None, "a", 0, Update::Add(1)).unwrap();
        let e = apply(c.clone(), "a", 0, Update::Put(Some(vec![1]))).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::PreconditionFailed);
        let r = apply(None, "b", 0, Update::Put(Some(vec![1]))).unwrap().unwrap();
        let c = c.unwrap();
        assert_eq!(join(r.clone(), &c), c);
        assert_eq!(join(c.clone(), &r), c);
        // Deleting an absent key or removing from an absent set changes nothing.
        assert_eq!(apply(None, "a", 0, Update::Put(None)).unwrap(), None);
        assert_eq!(apply(None, "a", 0, Update::Remove(vec!["x".into()])).unwrap(), None);
    }

    #[test]
    fn stamps_grow_past_the_last_one_whatever_the_wall_clock_says() {
        let s = next_stamp(0, 1000);
        assert_eq!(s, 1000 << 16);
        assert_eq!(next_stamp(s, 999), s + 1);
        assert_eq!(next_stamp(s, 1001), 1001 << 16);
    }
}
