//! Replicated scopes: a scope declared replicated keeps a full copy on each
//! of its replica nodes. Reads and writes are served by the local copy; every
//! local write is also appended to a durable replication log, in the same
//! store transaction, and shipped to the other replicas later (by the
//! network layer) — so an acknowledged write is never lost, whatever link
//! is down.
//!
//! **Values** are [`Lattice`]s: replicas merge what they receive and
//! converge whatever the order, duplication or delay of delivery.
//!
//! **Versions.** Each replica numbers its own writes to a scope 1, 2, 3, …
//! (the dot `origin:seq`). A replica's *version vector* for a scope (kept in
//! the store, beside the log) says, per origin, up to which number it has
//! applied that origin's writes. Log entries are named `origin/seq`, so
//! what a peer lacks is exactly the entries above its vector — found by a
//! range scan per origin, without comparing data (see docs/replication.md
//! for why version vectors and not Merkle summaries).
//!
//! **Causality.** An entry carries its origin's vector at write time
//! (`deps`); a replica applies it only after everything it depends on (and
//! the origin's earlier entries), so every replica applies writes in an
//! order consistent with causality, and a session's reads and writes stay
//! in causal order across replicas.
//!
//! Log entries live in [`REPLICA_SCOPE`]: `vv/{scope}` (the vector),
//! `log/{scope}/{origin}/{seq:020}` (a [`Shipped`] entry).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crdts::{CmRDT, CvRDT, Dot, VClock};
use serde::{Deserialize, Serialize};

use super::lattice::{self, Actor, Lattice, Stamp, Update};
use super::{Entry, ScopedKey, StateTier, Write, Writes};
use crate::error::{Error, Result};

/// The reserved scope of replication logs and version vectors.
pub const REPLICA_SCOPE: &str = "databelt.repl";

/// A version vector (per origin node: how many of its writes were applied).
pub type VersionVector = VClock<Actor>;

/// Called after the local replica of a scope changed (a local write, or
/// entries applied from a peer): what the network layer waits on to ship.
pub type ChangeListener = Arc<dyn Fn(&str) + Send + Sync>;

/// A host's replicated scopes, and its identity as a replica.
pub struct Replication {
    node: Actor,
    scopes: BTreeMap<String, Vec<Actor>>,
    last_stamp: Mutex<Stamp>,
    listeners: Mutex<Vec<ChangeListener>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").field("node", &self.node).field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

impl Replication {
    /// Node `node` replicates each scope of `scopes` with the nodes listed
    /// for it (the list may name `node` itself; it is left out of the peers).
    pub fn new(node: impl Into<Actor>, scopes: BTreeMap<String, Vec<Actor>>) -> Replication {
        Replication { node: node.into(), scopes, last_stamp: Mutex::new(0), listeners: Mutex::new(Vec::new()) }
    }

    /// Call `listener` with the scope's name whenever a replicated scope
    /// changes here.
    pub fn on_change(&self, listener: ChangeListener) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push(listener);
        }
    }

    pub(super) fn changed(&self, scope: &str) {
        let listeners = self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
        for l in listeners {
            l(scope);
        }
    }

    /// This replica's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The replicated scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.keys().map(String::as_str)
    }

    /// Whether `scope` is replicated here.
    pub fn replicates(&self, scope: &str) -> bool {
        self.scopes.contains_key(scope)
    }

    /// The other replicas of `scope`.
    pub fn peers(&self, scope: &str) -> Vec<Actor> {
        self.scopes.get(scope).map(|n| n.iter().filter(|n| **n != self.node).cloned().collect()).unwrap_or_default()
    }

    fn stamp(&self, now_ms: u64) -> Result<Stamp> {
        let mut last = self.last_stamp.lock().map_err(|_| Error::Runtime("clock lock poisoned".into()))?;
        *last = lattice::next_stamp(*last, now_ms);
        Ok(*last)
    }

    fn observe(&self, stamp: Stamp) {
        if let Ok(mut last) = self.last_stamp.lock() {
            *last = (*last).max(stamp);
        }
    }
}

/// One replicated write, as logged and shipped: the key's whole lattice
/// value after the write (so applying it twice, or after a later one,
/// changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipped {
    /// The replica that made the write.
    pub origin: Actor,
    /// Its number among `origin`'s writes to the scope (from 1).
    pub seq: u64,
    /// The key written.
    pub key: String,
    /// `origin`'s version vector just before the write.
    pub deps: VersionVector,
    /// The key's encoded [`Lattice`] after the write.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl Shipped {
    /// Bytes of the write's payload (key and value): what "the size of the
    /// update" means when catch-up traffic is compared to it.
    pub fn payload_bytes(&self) -> usize {
        self.key.len() + self.value.len()
    }
}

/// What a peer lacks of a scope, as far as this replica can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// These entries (lowest first per origin; empty: nothing).
    Entries(Vec<Shipped>),
    /// The log no longer holds entries the peer lacks (trimmed while it was
    /// away): it needs a snapshot of the scope.
    Snapshot,
}

/// A session: per scope, the versions a client (or a run) has read or
/// written. A replica *covers* a session when its vector is at least the
/// session's for every scope the session touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Per scope, the least vector a replica must have applied.
    pub scopes: BTreeMap<String, VersionVector>,
}

impl Session {
    /// Record that the session read from or wrote to a replica whose vector
    /// for `scope` is `seen` (monotonic reads, read-your-writes).
    pub fn observe(&mut self, scope: &str, seen: &VersionVector) {
        self.scopes.entry(scope.to_string()).or_default().merge(seen.clone());
    }

    /// Join another session (a step with several predecessors).
    pub fn merge(&mut self, other: &Session) {
        for (scope, vv) in &other.scopes {
            self.observe(scope, vv);
        }
    }

    /// Whether a replica at `vv` for `scope` covers this session there.
    pub fn covered_by(&self, scope: &str, vv: &VersionVector) -> bool {
        self.scopes.get(scope).is_none_or(|need| covers(vv, need))
    }
}

/// Whether `have` includes every write `need` includes.
pub fn covers(have: &VersionVector, need: &VersionVector) -> bool {
    need.iter().all(|d| have.get(d.actor) >= d.counter)
}

/// Whether a replica at `vv` can apply `entry` now: it is the origin's next
/// write, and everything it depends on is applied.
pub fn applicable(vv: &VersionVector, entry: &Shipped) -> bool {
    entry.seq == vv.get(&entry.origin).saturating_add(1)
        && entry.deps.iter().all(|d| *d.actor == entry.origin || vv.get(d.actor) >= d.counter)
}

/// The entries of `batch` a replica at `vv` applies, in the order it
/// applies them (repeated passes, since an entry may wait for another one
/// later in the batch); the rest are duplicates or wait for a later batch.
pub fn apply_order(vv: &VersionVector, batch: &[Shipped]) -> Vec<usize> {
    let mut vv = vv.clone();
    let mut order = Vec::new();
    let mut done = vec![false; batch.len()];
    loop {
        let mut progress = false;
        for (i, e) in batch.iter().enumerate() {
            if !done[i] && applicable(&vv, e) {
                vv.apply(Dot::new(e.origin.clone(), e.seq));
                done[i] = true;
                order.push(i);
                progress = true;
            }
        }
        if !progress {
            return order;
        }
    }
}

fn vv_key(scope: &str) -> ScopedKey {
    ScopedKey::new(REPLICA_SCOPE, format!("vv/{scope}"))
}

/// A key's local-write marker: rewritten (a new store version) by every
/// commit of this node that writes the key, and by nothing else. A step's
/// reads of a replicated key are validated at its commit through the
/// marker, not through the key: a write another step of this node made
/// meanwhile is a conflict (the step runs again), while updates applied
/// from other replicas are merged into the step's write (a join) instead.
fn marker_key(scope: &str, key: &str) -> ScopedKey {
    ScopedKey::new(REPLICA_SCOPE, format!("local/{scope}/{key}"))
}

fn log_prefix(scope: &str, origin: &str) -> String {
    format!("log/{scope}/{origin}/")
}

fn log_key(scope: &str, origin: &str, seq: u64) -> ScopedKey {
    ScopedKey::new(REPLICA_SCOPE, format!("{}{seq:020}", log_prefix(scope, origin)))
}

fn decode_vv(entry: Option<&Entry>) -> Result<VersionVector> {
    match entry {
        None => Ok(VersionVector::new()),
        Some(e) => {
            postcard::from_bytes(&e.value).map_err(|e| Error::storage_msg(format!("corrupt version vector: {e}")))
        }
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::storage_msg(format!("cannot encode {what}: {e}")))
}

fn decode_shipped(bytes: &[u8]) -> Result<Shipped> {
    postcard::from_bytes(bytes).map_err(|e| Error::storage_msg(format!("corrupt replication log entry: {e}")))
}

/// The replicated values a workflow run has read or written (encoded
/// lattices; `None`: absent when read), by key. A tier with pins (see
/// [`StateTier::with_pins`]) serves a pinned key from here, and pins what it
/// reads or writes: every step of the run then sees one version of each key.
pub type Pins = BTreeMap<ScopedKey, Option<Vec<u8>>>;

/// Entries of one page of a scope's snapshot, and where the next starts.
pub type SnapshotPage = (Vec<(String, Vec<u8>)>, Option<String>);

impl StateTier {
    /// Replicate the scopes `replication` names: their values become
    /// lattices, and local writes are logged for the other replicas.
    pub fn with_replication(mut self, replication: Replication) -> Self {
        self.replication = Some(Arc::new(replication));
        self.logs_replication = true;
        self
    }

    /// The replication settings, if any scope is replicated.
    pub fn replication(&self) -> Option<&Replication> {
        self.replication.as_deref()
    }

    /// Whether `scope` is replicated on this host.
    pub fn is_replicated(&self, scope: &str) -> bool {
        self.replication.as_ref().is_some_and(|r| r.replicates(scope))
    }

    fn replication_or_err(&self, scope: &str) -> Result<&Replication> {
        self.replication
            .as_deref()
            .filter(|r| r.replicates(scope))
            .ok_or_else(|| Error::PreconditionFailed(format!("scope `{scope}` is not replicated on this host")))
    }

    /// In a step's staged tier, read the key's marker so that the commit
    /// validates it (see [`marker_key`]).
    fn note_read(&self, scope: &str, key: &str) -> Result<()> {
        if !self.logs_replication {
            let m = marker_key(scope, key);
            self.store.get(&m.scope, &m.key)?;
        }
        Ok(())
    }

    /// The key a marker key marks (`None`: not a marker).
    pub(super) fn marked(key: &ScopedKey) -> Option<ScopedKey> {
        if key.scope != REPLICA_SCOPE {
            return None;
        }
        let (scope, k) = key.key.strip_prefix("local/")?.split_once('/')?;
        Some(ScopedKey::new(scope, k))
    }

    /// Whether a staged read of `key` is validated through its marker
    /// instead (a key of a replicated scope).
    pub(super) fn validated_by_marker(&self, key: &ScopedKey) -> bool {
        self.is_replicated(&key.scope)
    }

    /// The value a step commits to a replicated key: its staged lattice
    /// joined with what the key holds now (updates applied from other
    /// replicas since the step read it).
    pub(super) fn join_with_current(current: Option<&Entry>, staged: Vec<u8>) -> Result<Vec<u8>> {
        let Some(cur) = current else { return Ok(staged) };
        let mut joined = Lattice::decode(&cur.value)?;
        joined.merge(Lattice::decode(&staged)?);
        joined.encode()
    }

    /// Serve replicated keys from (and record them in) `pins`: a workflow
    /// step's tier under repeatable read.
    pub fn with_pins(mut self, pins: Arc<Mutex<Pins>>) -> Self {
        self.pins = Some(pins);
        self
    }

    fn pinned(&self, scope: &str, key: &str) -> Result<Option<Option<Vec<u8>>>> {
        let Some(pins) = &self.pins else { return Ok(None) };
        let pins = pins.lock().map_err(|_| Error::Runtime("pins lock poisoned".into()))?;
        Ok(pins.get(&ScopedKey::new(scope, key)).cloned())
    }

    fn pin(&self, scope: &str, key: &str, value: Option<Vec<u8>>) -> Result<()> {
        if let Some(pins) = &self.pins {
            let mut pins = pins.lock().map_err(|_| Error::Runtime("pins lock poisoned".into()))?;
            pins.insert(ScopedKey::new(scope, key), value);
        }
        Ok(())
    }

    /// The key's lattice value in the local replica (or as pinned).
    pub fn replica_value(&self, scope: &str, key: &str) -> Result<Option<Lattice>> {
        self.replication_or_err(scope)?;
        self.check_scope_and_key(scope, key)?;
        let bytes = match self.pinned(scope, key)? {
            Some(pinned) => pinned,
            None => {
                self.note_read(scope, key)?;
                let read = self.store.get(scope, key)?.map(|e| e.value);
                self.pin(scope, key, read.clone())?;
                read
            }
        };
        bytes.map(|b| Lattice::decode(&b)).transpose()
    }

    /// Apply `updates` (to keys of `scope`) atomically to the local
    /// replica; each key that changes is logged for the other replicas when
    /// the write commits. Returns the keys' values after the updates.
    pub fn replica_update(&self, scope: &str, updates: Vec<(String, Update)>) -> Result<Vec<Option<Lattice>>> {
        let repl = self.replication_or_err(scope)?;
        self.open_scope(scope)?;
        self.check_batch(updates.len())?;
        for (k, u) in &updates {
            self.check_key(k)?;
            if let Update::Put(Some(v)) = u {
                self.check_value(v)?;
            }
        }
        let keys: Vec<ScopedKey> = updates.iter().map(|(k, _)| ScopedKey::new(scope, k.clone())).collect();
        for (k, _) in &updates {
            self.note_read(scope, k)?;
        }
        let stamp = repl.stamp(self.now())?;
        let node = repl.node.clone();
        let mut result = Vec::new();
        self.transact(Some(super::locks::Access::Plain { validate_reads: false }), &keys, &keys, &mut |current| {
            let mut values: BTreeMap<&str, Option<Lattice>> = BTreeMap::new();
            for ((k, _), e) in updates.iter().zip(current) {
                if !values.contains_key(k.as_str()) {
                    values.insert(k, e.as_ref().map(|e| Lattice::decode(&e.value)).transpose()?);
                }
            }
            let mut changed: Vec<&str> = Vec::new();
            for (k, u) in &updates {
                let cur = values.get(k.as_str()).cloned().flatten();
                let next = lattice::apply(cur.clone(), &node, stamp, u.clone())?;
                if next != cur {
                    changed.push(k);
                }
                values.insert(k, next);
            }
            result = updates.iter().map(|(k, _)| values.get(k.as_str()).cloned().flatten()).collect();
            let mut writes = Vec::new();
            for k in changed.iter().copied().collect::<std::collections::BTreeSet<_>>() {
                if let Some(Some(v)) = values.get(k) {
                    let value = v.encode()?;
                    self.check_value(&value)?;
                    writes.push(Write::Put { key: ScopedKey::new(scope, k), value, expires_at_ms: None });
                }
            }
            Ok(writes.into())
        })?;
        for ((k, _), v) in updates.iter().zip(&result) {
            self.pin(scope, k, v.as_ref().map(Lattice::encode).transpose()?)?;
        }
        Ok(result)
    }

    /// A plain read of a replicated key: the register's last-written bytes
    /// (a counter as its 8-byte s64, a set as its JSON members); the version
    /// is the local copy's.
    pub(super) fn replicated_entry(&self, scope: &str, key: &str) -> Result<Option<Entry>> {
        self.check_scope_and_key(scope, key)?;
        if self.pins.is_some() {
            // A pinned version has no version of this store.
            let value = self.replica_value(scope, key)?.map(|v| v.plain_value()).transpose()?.flatten();
            return Ok(value.map(|value| Entry { value, version: 0, expires_at_ms: None }));
        }
        self.note_read(scope, key)?;
        let Some(e) = self.store.get(scope, key)? else { return Ok(None) };
        let value = Lattice::decode(&e.value)?.plain_value()?;
        Ok(value.map(|value| Entry { value, version: e.version, expires_at_ms: None }))
    }

    fn refuse_options(scope: &str, opts: super::SetOptions) -> Result<()> {
        if opts.ttl_ms.is_some() || opts.if_not_exists {
            return Err(Error::PreconditionFailed(format!(
                "scope `{scope}` is replicated: its values have no TTL and `if-not-exists` cannot hold across replicas"
            )));
        }
        Ok(())
    }

    pub(super) fn replicated_set(
        &self,
        scope: &str,
        entries: Vec<(String, Vec<u8>)>,
        opts: super::SetOptions,
    ) -> Result<()> {
        Self::refuse_options(scope, opts)?;
        self.replica_update(scope, entries.into_iter().map(|(k, v)| (k, Update::Put(Some(v)))).collect())?;
        Ok(())
    }

    pub(super) fn replicated_delete(&self, scope: &str, keys: Vec<String>) -> Result<()> {
        self.replica_update(scope, keys.into_iter().map(|k| (k, Update::Put(None))).collect())?;
        Ok(())
    }

    pub(super) fn replicated_add(&self, scope: &str, key: &str, delta: i64) -> Result<i64> {
        let after = self.replica_update(scope, vec![(key.to_string(), Update::Add(delta))])?;
        match after.into_iter().next().flatten() {
            Some(v) => v.counter(),
            None => Ok(0),
        }
    }

    /// A page of the keys with a live value (deleted registers are left out,
    /// so a page may hold fewer keys than asked while more follow).
    pub(super) fn replicated_keys(
        &self,
        scope: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<super::KeyPage> {
        self.open_scope(scope)?;
        let limit = limit.unwrap_or(self.limits().default_page_size);
        if limit == 0 || limit > self.limits().max_page_size {
            return Err(Error::over_limit("page size", limit as usize, self.limits().max_page_size as usize));
        }
        let (keys, more) = self.store.scan(scope, prefix, cursor, limit as usize, self.now())?;
        let values = self.store.get_many(scope, &keys)?;
        let next = if more { keys.last().cloned() } else { None };
        let mut live = Vec::with_capacity(keys.len());
        for (k, v) in keys.into_iter().zip(values) {
            if let Some(v) = v
                && Lattice::decode(&v.value)?.plain_value()?.is_some()
            {
                live.push(k);
            }
        }
        Ok(super::KeyPage { keys: live, cursor: next })
    }

    /// The local replica's version vector of `scope`.
    pub fn replica_vv(&self, scope: &str) -> Result<VersionVector> {
        self.replication_or_err(scope)?;
        let key = vv_key(scope);
        decode_vv(self.store.get(&key.scope, &key.key)?.as_ref())
    }

    /// The replicated scopes among the keys a transaction writes, when this
    /// tier logs its writes (staged tiers do not: their commit does).
    pub(super) fn logged_scopes(&self, written: &[ScopedKey]) -> Vec<String> {
        let Some(repl) = self.replication.as_ref().filter(|_| self.logs_replication) else { return Vec::new() };
        let mut scopes: Vec<String> =
            written.iter().filter(|k| repl.replicates(&k.scope)).map(|k| k.scope.clone()).collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// The keys to read (the scopes' vectors) along with a transaction that
    /// writes to the replicated `scopes`.
    pub(super) fn log_keys(scopes: &[String]) -> Vec<ScopedKey> {
        scopes.iter().map(|s| vv_key(s)).collect()
    }

    /// Append, to `writes`, a log entry per write to a replicated scope and
    /// the scopes' new vectors; `vvs` are the entries of [`Self::log_keys`].
    pub(super) fn append_log(&self, scopes: &[String], vvs: &[Option<Entry>], writes: &mut Writes) -> Result<()> {
        let Some(repl) = self.replication.as_ref() else { return Ok(()) };
        let mut log = Vec::new();
        for (scope, entry) in scopes.iter().zip(vvs) {
            let mut vv = decode_vv(entry.as_ref())?;
            let before = writes.len();
            for w in writes.iter().take(before).filter(|w| w.key().scope == *scope) {
                let Write::Put { key, value, .. } = w else {
                    return Err(Error::Other(format!(
                        "`{scope}/{}` is replicated: delete it with a state call (a tombstone), not a raw delete",
                        w.key().key
                    )));
                };
                Lattice::decode(value)?;
                let deps = vv.clone();
                let dot = vv.inc(repl.node.clone());
                vv.apply(dot.clone());
                let shipped = Shipped {
                    origin: repl.node.clone(),
                    seq: dot.counter,
                    key: key.key.clone(),
                    deps,
                    value: value.clone(),
                };
                log.push(Write::Put {
                    key: log_key(scope, &repl.node, dot.counter),
                    value: encode("a log entry", &shipped)?,
                    expires_at_ms: None,
                });
                // A fresh version of the key's marker: steps of this node
                // that read the key before conflict at their commit.
                log.push(Write::Put { key: marker_key(scope, &key.key), value: Vec::new(), expires_at_ms: None });
            }
            log.push(Write::Put { key: vv_key(scope), value: encode("a version vector", &vv)?, expires_at_ms: None });
        }
        writes.extend(log);
        Ok(())
    }

    /// What a peer at `peer` lacks of `scope`: up to about `max_bytes` of log
    /// entries (always the next one of each origin, so a batch never starves
    /// an origin), or [`Missing::Snapshot`] when the log was trimmed past it.
    pub fn replica_missing(&self, scope: &str, peer: &VersionVector, max_bytes: usize) -> Result<Missing> {
        let mine = self.replica_vv(scope)?;
        let now = self.now();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for pass in 0..2 {
            for dot in mine.iter() {
                let origin = dot.actor.as_str();
                let from = out
                    .iter()
                    .filter(|e: &&Shipped| e.origin == origin)
                    .map(|e| e.seq)
                    .max()
                    .unwrap_or(peer.get(dot.actor));
                if from >= dot.counter {
                    continue;
                }
                let prefix = log_prefix(scope, origin);
                let after = format!("{prefix}{from:020}");
                let limit = if pass == 0 { 1 } else { 256 };
                let (keys, _) = self.store.scan(REPLICA_SCOPE, &prefix, Some(&after), limit, now)?;
                let entries = self.store.get_many(REPLICA_SCOPE, &keys)?;
                let mut expect = from + 1;
                for e in entries.into_iter().flatten() {
                    let shipped = decode_shipped(&e.value)?;
                    if shipped.seq != expect {
                        return Ok(Missing::Snapshot);
                    }
                    if pass == 1 && bytes >= max_bytes {
                        break;
                    }
                    expect += 1;
                    bytes += shipped.payload_bytes();
                    out.push(shipped);
                }
                if pass == 0 && expect == from + 1 {
                    // Nothing logged above the peer's vector, yet we have more.
                    return Ok(Missing::Snapshot);
                }
            }
        }
        out.sort_by(|a, b| (&a.origin, a.seq).cmp(&(&b.origin, b.seq)));
        Ok(Missing::Entries(out))
    }

    /// Apply what a peer shipped: every entry that is next in line (in an
    /// order consistent with causality) is merged into the key's value and
    /// logged for relaying, with the new vector, in one store transaction.
    /// Duplicates change nothing; entries that must wait are left for a
    /// later batch. Returns how many were applied and the vector after.
    pub fn replica_apply(&self, scope: &str, batch: &[Shipped]) -> Result<(usize, VersionVector)> {
        let repl = self.replication_or_err(scope)?;
        for e in batch {
            self.check_key(&e.key)?;
            Lattice::decode(&e.value).map_err(|err| Error::BadInput(format!("entry {}:{}: {err}", e.origin, e.seq)))?;
        }
        let mut keys = vec![vv_key(scope)];
        let mut targets: Vec<&str> = batch.iter().map(|e| e.key.as_str()).collect();
        targets.sort();
        targets.dedup();
        keys.extend(targets.iter().map(|k| ScopedKey::new(scope, *k)));
        let mut outcome = (0, VersionVector::new());
        self.store.transact(&keys, &mut |current| {
            let mut vv = decode_vv(current.first().cloned().flatten().as_ref())?;
            let order = apply_order(&vv, batch);
            let mut values: BTreeMap<&str, Option<Lattice>> = BTreeMap::new();
            for (k, e) in targets.iter().zip(current.iter().skip(1)) {
                values.insert(k, e.as_ref().map(|e| Lattice::decode(&e.value)).transpose()?);
            }
            let mut writes = Vec::new();
            for &i in &order {
                let e = &batch[i];
                let incoming = Lattice::decode(&e.value)?;
                repl.observe(incoming.max_stamp());
                let slot = values.entry(e.key.as_str()).or_insert(None);
                match slot {
                    Some(v) => v.merge(incoming),
                    None => *slot = Some(incoming),
                }
                vv.apply(Dot::new(e.origin.clone(), e.seq));
                writes.push(Write::Put {
                    key: log_key(scope, &e.origin, e.seq),
                    value: encode("a log entry", e)?,
                    expires_at_ms: None,
                });
            }
            let touched: std::collections::BTreeSet<&str> = order.iter().map(|&i| batch[i].key.as_str()).collect();
            for k in touched {
                if let Some(Some(v)) = values.get(k) {
                    writes.push(Write::Put { key: ScopedKey::new(scope, k), value: v.encode()?, expires_at_ms: None });
                }
            }
            writes.push(Write::Put {
                key: vv_key(scope),
                value: encode("a version vector", &vv)?,
                expires_at_ms: None,
            });
            outcome = (order.len(), vv);
            Ok(writes.into())
        })?;
        if outcome.0 > 0 {
            repl.changed(scope);
        }
        Ok(outcome)
    }

    /// Delete log entries of `scope` that every replica has applied (`acked`:
    /// the least vector among the other replicas), and beyond that every
    /// entry but the newest `keep` of each origin (a replica that lacks a
    /// trimmed entry gets a snapshot instead). Returns how many went.
    pub fn replica_trim(&self, scope: &str, acked: &VersionVector, keep: u64) -> Result<usize> {
        let mine = self.replica_vv(scope)?;
        let now = self.now();
        let mut gone = 0;
        for dot in mine.iter() {
            let upto = acked.get(dot.actor).max(dot.counter.saturating_sub(keep));
            if upto == 0 {
                continue;
            }
            let prefix = log_prefix(scope, dot.actor);
            loop {
                let (keys, _) = self.store.scan(REPLICA_SCOPE, &prefix, None, 500, now)?;
                let doomed: Vec<ScopedKey> = keys
                    .iter()
                    .filter(|k| k[prefix.len()..].parse::<u64>().is_ok_and(|s| s <= upto))
                    .map(|k| ScopedKey::new(REPLICA_SCOPE, k.clone()))
                    .collect();
                if doomed.is_empty() {
                    break;
                }
                let n = doomed.len();
                self.store.transact(&[], &mut |_| {
                    Ok(doomed.iter().map(|key| Write::Delete { key: key.clone() }).collect())
                })?;
                gone += n;
                if n < keys.len() {
                    break;
                }
            }
        }
        Ok(gone)
    }

    /// One page of `scope`'s values (encoded lattices), after `cursor`.
    pub fn replica_snapshot(&self, scope: &str, cursor: Option<&str>, limit: usize) -> Result<SnapshotPage> {
        self.replication_or_err(scope)?;
        let (keys, more) = self.store.scan(scope, "", cursor, limit.max(1), self.now())?;
        let values = self.store.get_many(scope, &keys)?;
        let next = if more { keys.last().cloned() } else { None };
        let page = keys.into_iter().zip(values).filter_map(|(k, v)| v.map(|v| (k, v.value))).collect();
        Ok((page, next))
    }

    /// Merge a page of a peer's snapshot; with `vv` (the last page), take in
    /// the peer's vector as well: the values merged include every write it
    /// names.
    pub fn replica_merge(
        &self,
        scope: &str,
        page: &[(String, Vec<u8>)],
        vv: Option<&VersionVector>,
    ) -> Result<VersionVector> {
        let repl = self.replication_or_err(scope)?;
        let mut incoming = Vec::with_capacity(page.len());
        for (k, v) in page {
            self.check_key(k)?;
            incoming.push(Lattice::decode(v).map_err(|e| Error::BadInput(format!("snapshot value `{k}`: {e}")))?);
        }
        let mut keys = vec![vv_key(scope)];
        keys.extend(page.iter().map(|(k, _)| ScopedKey::new(scope, k.clone())));
        let mut after = VersionVector::new();
        self.store.transact(&keys, &mut |current| {
            let mut mine = decode_vv(current.first().cloned().flatten().as_ref())?;
            let mut writes = Vec::new();
            for (((k, _), theirs), e) in page.iter().zip(&incoming).zip(current.iter().skip(1)) {
                repl.observe(theirs.max_stamp());
                let mut v = match e {
                    Some(e) => Lattice::decode(&e.value)?,
                    None => theirs.clone(),
                };
                v.merge(theirs.clone());
                writes.push(Write::Put {
                    key: ScopedKey::new(scope, k.clone()),
                    value: v.encode()?,
                    expires_at_ms: None,
                });
            }
            if let Some(vv) = vv {
                mine.merge(vv.clone());
                writes.push(Write::Put {
                    key: vv_key(scope),
                    value: encode("a version vector", &mine)?,
                    expires_at_ms: None,
                });
            }
            after = mine;
            Ok(writes.into())
        })?;
        repl.changed(scope);
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryStore, StateLimits};
    use proptest::prelude::*;

    fn replica(node: &str) -> StateTier {
        let scopes = [("r".to_string(), vec!["a".to_string(), "b".to_string(), "c".to_string()])].into();
        StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default())
            .with_replication(Replication::new(node, scopes))
    }

    fn everything(t: &StateTier) -> Vec<Shipped> {
        match t.replica_missing("r", &VersionVector::new(), usize::MAX).unwrap() {
            Missing::Entries(e) => e,
            Missing::Snapshot => panic!("snapshot"),
        }
    }

    fn state(t: &StateTier) -> Vec<(String, Option<Vec<u8>>)> {
        let keys = t.list_keys("r", "", None, Some(1000)).unwrap().keys;
        keys.iter()
            .map(|k| (k.clone(), t.replica_value("r", k).unwrap().and_then(|v| v.plain_value().unwrap())))
            .collect()
    }

    #[test]
    fn local_writes_are_logged_atomically_and_a_peer_gets_exactly_what_it_lacks() {
        let a = replica("a");
        a.replica_update("r", vec![("x".into(), Update::Add(2))]).unwrap();
        a.replica_update("r", vec![("x".into(), Update::Add(3)), ("y".into(), Update::Put(Some(b"hi".to_vec())))])
            .unwrap();
        let vv = a.replica_vv("r").unwrap();
        assert_eq!(vv.get(&"a".to_string()), 3);
        let all = everything(&a);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let mut peer = VersionVector::new();
        peer.apply(Dot::new("a".to_string(), 2));
        let Missing::Entries(rest) = a.replica_missing("r", &peer, usize::MAX).unwrap() else { panic!() };
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].seq, 3);

        let b = replica("b");
        let (n, vv_b) = b.replica_apply("r", &all).unwrap();
        assert_eq!((n, vv_b.clone()), (3, vv));
        assert_eq!(b.replica_value("r", "x").unwrap().unwrap().counter().unwrap(), 5);
        // A duplicate changes nothing.
        assert_eq!(b.replica_apply("r", &all).unwrap().0, 0);
        // b relays what it applied.
        assert_eq!(everything(&b), all);
    }

    #[test]
    fn a_steps_staged_writes_are_logged_when_it_commits_and_not_before() {
        let a = replica("a");
        let (step, staged) = a.staged();
        step.increment("r", "n", 4).unwrap();
        step.set("r", "s", b"v".to_vec(), crate::state::SetOptions::default()).unwrap();
        assert_eq!(step.get("r", "n").unwrap(), Some(4i64.to_le_bytes().to_vec()));
        // Nothing logged, nothing visible, before the commit.
        assert_eq!(a.replica_vv("r").unwrap(), VersionVector::new());
        assert_eq!(a.get("r", "n").unwrap(), None);
        a.commit_staged(&staged, Vec::new(), &[]).unwrap();
        assert_eq!(a.replica_vv("r").unwrap().get(&"a".to_string()), 2);
        assert_eq!(everything(&a).len(), 2);
        assert_eq!(a.get("r", "s").unwrap(), Some(b"v".to_vec()));
        // Options that cannot hold across replicas are refused, changing nothing.
        let ttl = crate::state::SetOptions { ttl_ms: Some(5), if_not_exists: false };
        assert!(a.set("r", "t", b"x".to_vec(), ttl).is_err());
        assert!(a.compare_and_swap("r", "s", None, b"y".to_vec()).is_err());
        assert_eq!(a.replica_vv("r").unwrap().get(&"a".to_string()), 2);
        // A delete is a logged tombstone: gone from reads and listings.
        a.delete("r", "s").unwrap();
        assert_eq!(a.get("r", "s").unwrap(), None);
        assert_eq!(a.list_keys("r", "", None, None).unwrap().keys, vec!["n".to_string()]);
        assert_eq!(a.replica_vv("r").unwrap().get(&"a".to_string()), 3);
    }

    #[test]
    fn a_pinned_tier_reads_one_version_of_a_key_whatever_changes_after() {
        let a = replica("a");
        a.replica_update("r", vec![("k".into(), Update::Put(Some(b"v1".to_vec())))]).unwrap();
        let pins = Arc::new(Mutex::new(Pins::new()));
        let (step, _) = a.staged();
        let step = step.with_pins(pins.clone());
        assert_eq!(step.get("r", "k").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(step.get("r", "absent").unwrap(), None);
        // Another writer changes both keys; the run keeps its versions.
        a.replica_update("r", vec![("k".into(), Update::Put(Some(b"v2".to_vec())))]).unwrap();
        a.replica_update("r", vec![("absent".into(), Update::Add(1))]).unwrap();
        let (next, _) = a.staged();
        let next = next.with_pins(pins.clone());
        assert_eq!(next.get("r", "k").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(next.get("r", "absent").unwrap(), None);
        // Without pins, the new versions.
        assert_eq!(a.get("r", "k").unwrap(), Some(b"v2".to_vec()));
        // The run's own write is what it reads next.
        next.increment("r", "n", 3).unwrap();
        let (last, _) = a.staged();
        assert_eq!(last.with_pins(pins).get("r", "n").unwrap(), Some(3i64.to_le_bytes().to_vec()));
    }

    #[test]
    fn a_step_merges_what_other_replicas_wrote_meanwhile_but_conflicts_with_a_local_writer() {
        let (a, b) = (replica("a"), replica("b"));
        a.replica_update("r", vec![("n".into(), Update::Add(1))]).unwrap();
        // A step on a reads and adds; meanwhile b's addition arrives.
        let (step, staged) = a.staged();
        assert_eq!(step.increment("r", "n", 10).unwrap(), 11);
        b.replica_update("r", vec![("n".into(), Update::Add(100))]).unwrap();
        a.replica_apply("r", &everything(&b)).unwrap();
        a.commit_staged(&staged, Vec::new(), &[]).unwrap();
        assert_eq!(a.replica_value("r", "n").unwrap().unwrap().counter().unwrap(), 111, "nothing lost");
        // Another step of a commits first: the late one conflicts, changing nothing.
        let (slow, staged) = a.staged();
        slow.increment("r", "n", 5).unwrap();
        a.increment("r", "n", 1000).unwrap();
        let e = a.commit_staged(&staged, Vec::new(), &[]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict, "{e}");
        assert_eq!(a.replica_value("r", "n").unwrap().unwrap().counter().unwrap(), 1111);
    }

    #[test]
    fn an_entry_waits_for_what_it_depends_on() {
        let (a, b, c) = (replica("a"), replica("b"), replica("c"));
        a.replica_update("r", vec![("k".into(), Update::Put(Some(b"1".to_vec())))]).unwrap();
        b.replica_apply("r", &everything(&a)).unwrap();
        b.replica_update("r", vec![("k".into(), Update::Put(Some(b"2".to_vec())))]).unwrap();
        let from_b: Vec<Shipped> = everything(&b).into_iter().filter(|e| e.origin == "b").collect();
        // c has not seen a's write: b's, which read it, must wait.
        assert_eq!(c.replica_apply("r", &from_b).unwrap().0, 0);
        assert_eq!(c.replica_value("r", "k").unwrap(), None);
        let mut both = from_b.clone();
        both.extend(everything(&a));
        assert_eq!(c.replica_apply("r", &both).unwrap().0, 2);
        assert_eq!(state(&c), vec![("k".to_string(), Some(b"2".to_vec()))]);
    }

    #[test]
    fn a_trimmed_log_asks_for_a_snapshot_and_the_snapshot_converges() {
        let a = replica("a");
        for i in 0..10 {
            a.replica_update("r", vec![(format!("k{}", i % 3), Update::Add(1))]).unwrap();
        }
        assert_eq!(a.replica_trim("r", &VersionVector::new(), 4).unwrap(), 6);
        let b = replica("b");
        assert_eq!(a.replica_missing("r", &VersionVector::new(), usize::MAX).unwrap(), Missing::Snapshot);
        let (page, next) = a.replica_snapshot("r", None, 2).unwrap();
        assert!(next.is_some());
        b.replica_merge("r", &page, None).unwrap();
        let (rest, next) = a.replica_snapshot("r", next.as_deref(), 10).unwrap();
        assert_eq!(next, None);
        let vv = b.replica_merge("r", &rest, Some(&a.replica_vv("r").unwrap())).unwrap();
        assert_eq!(vv, a.replica_vv("r").unwrap());
        assert_eq!(state(&a), state(&b));
        // After the snapshot, what is left of the log is enough.
        a.replica_update("r", vec![("k0".into(), Update::Add(1))]).unwrap();
        let Missing::Entries(e) = a.replica_missing("r", &vv, usize::MAX).unwrap() else { panic!() };
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn sessions_are_covered_only_by_replicas_that_applied_what_they_saw() {
        let a = replica("a");
        a.replica_update("r", vec![("k".into(), Update::Add(1))]).unwrap();
        let mut s = Session::default();
        s.observe("r", &a.replica_vv("r").unwrap());
        let b = replica("b");
        assert!(!s.covered_by("r", &b.replica_vv("r").unwrap()));
        assert!(s.covered_by("other", &b.replica_vv("r").unwrap()));
        b.replica_apply("r", &everything(&a)).unwrap();
        assert!(s.covered_by("r", &b.replica_vv("r").unwrap()));
    }

    fn op() -> impl Strategy<Value = (usize, u8, Update)> {
        (
            0usize..3,
            0u8..4,
            prop_oneof![
                (0u8..3).prop_map(|v| Update::Put(Some(vec![v]))),
                (-3i64..4).prop_map(Update::Add),
                "[ab]".prop_map(|m| Update::Insert(vec![m])),
                "[ab]".prop_map(|m| Update::Remove(vec![m])),
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
        /// Three replicas write concurrently; what they ship is delivered
        /// in random batches, reordered and duplicated, through partitions
        /// (a replica hears only some peers for a while); once every entry
        /// has reached everyone, all three hold the same state.
        #[test]
        fn replicas_converge_whatever_the_delivery_order_duplicates_and_partitions(
            ops in proptest::collection::vec(op(), 1..30),
            deliveries in proptest::collection::vec((0usize..3, 0usize..3, any::<u64>(), 1usize..6), 0..40),
        ) {
            let nodes = [replica("a"), replica("b"), replica("c")];
            let keys = ["k0", "k1", "k2", "k3"];
            let mut ops = ops.into_iter();
            for (from, to, shuffle, take) in deliveries {
                if let Some((n, k, u)) = ops.next() {
                    let _ = nodes[n].replica_update("r", vec![(keys[k as usize].to_string(), u)]);
                }
                // A partial, shuffled, duplicated batch from one to another.
                let mut batch = everything(&nodes[from]);
                let len = batch.len().max(1);
                batch.rotate_left((shuffle as usize) % len);
                batch.truncate(take * 2);
                let dup = batch.clone();
                batch.extend(dup);
                nodes[to].replica_apply("r", &batch).unwrap();
            }
            for (n, k, u) in ops {
                let _ = nodes[n].replica_update("r", vec![(keys[k as usize].to_string(), u)]);
            }
            // Heal: everyone hears everyone until nothing changes.
            for _ in 0..4 {
                for from in 0..3 {
                    for to in 0..3 {
                        let batch = everything(&nodes[from]);
                        nodes[to].replica_apply("r", &batch).unwrap();
                    }
                }
            }
            let s0 = state(&nodes[0]);
            prop_assert_eq!(&s0, &state(&nodes[1]));
            prop_assert_eq!(&s0, &state(&nodes[2]));
            let v0 = nodes[0].replica_vv("r").unwrap();
            prop_assert_eq!(&v0, &nodes[1].replica_vv("r").unwrap());
            prop_assert_eq!(&v0, &nodes[2].replica_vv("r").unwrap());
        }
    }
}
