//! The participant's side of transactions that span several steps (and
//! nodes): a step's staged writes are *prepared* — validated, locked and
//! logged durably — and applied or dropped later, when the transaction's
//! coordinator has decided.
//!
//! A prepared part is one record, `prep/{txn}/{part}` in the reserved scope
//! [`TXN_SCOPE`], written in the same store transaction that validates the
//! part's reads and takes its locks (shared on what it read, exclusive on
//! what it writes; see [`super::locks`]). The lock table in memory is a
//! cache of those records: a host that restarts rebuilds it from them
//! before any state call, so a crash never loses a lock nor leaves one that
//! no record explains. [`StateTier::resolve`] applies (commit) or drops
//! (abort) every part of a transaction on this host, deletes their records
//! and releases their locks, in one store transaction.

use serde::{Deserialize, Serialize};

use super::locks::{Access, LockTable};
use super::{ScopedKey, StagedStore, StagedWrites, StateTier, Write};
use crate::error::{Error, Result};

/// The reserved scope of prepared transaction parts.
pub const TXN_SCOPE: &str = "databelt.txn";

/// What a prepared part keeps until its transaction is decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Orders the parts of one transaction on this host (prepare time, ns).
    seq: u64,
    /// Keys read, held shared.
    reads: Vec<ScopedKey>,
    /// The part's writes, held exclusive, applied on commit.
    writes: Vec<Write>,
    /// Further writes applied on commit only (not locked: log records).
    on_commit: Vec<Write>,
    /// The caller's own data (what it needs to abort or retry the part).
    meta: Vec<u8>,
}

/// A prepared part of a transaction on this host.
#[derive(Debug, Clone)]
pub struct PreparedPart {
    /// The part's name.
    pub part: String,
    /// Its staged writes, to be applied on commit.
    pub writes: Vec<Write>,
    /// What its caller stored with it.
    pub meta: Vec<u8>,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 200 || name.contains('/') {
        return Err(Error::BadInput(format!("a {what} name is 1 to 200 bytes without `/`: `{name}`")));
    }
    Ok(())
}

fn record_key(txn: &str, part: &str) -> ScopedKey {
    ScopedKey::new(TXN_SCOPE, format!("prep/{txn}/{part}"))
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    postcard::to_stdvec(record).map_err(|e| Error::Runtime(format!("encoding a prepared record: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Record> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::storage_msg(format!("a prepared transaction record is damaged: {e}")))
}

fn poisoned<T>(_: T) -> Error {
    Error::Runtime("lock table poisoned".into())
}

impl StateTier {
    /// Rebuild the lock table from the prepared records, once.
    pub(super) fn load_locks(&self) -> Result<()> {
        if self.locks_loaded.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        if self.locks.lock().map_err(poisoned)?.is_some() {
            self.locks_loaded.store(true, std::sync::atomic::Ordering::Release);
            return Ok(());
        }
        let mut table = LockTable::default();
        for (key, record) in self.records("prep/")? {
            let Some((txn, part)) = key.strip_prefix("prep/").and_then(|k| k.split_once('/')) else { continue };
            let written: Vec<ScopedKey> = record.writes.iter().map(|w| w.key().clone()).collect();
            table.acquire(txn, part, &record.reads, &written);
        }
        let mut locks = self.locks.lock().map_err(poisoned)?;
        if locks.is_none() {
            self.locks_held.store(table.len(), std::sync::atomic::Ordering::Release);
            *locks = Some(table);
        }
        self.locks_loaded.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Every prepared record whose key starts with `prefix`.
    fn records(&self, prefix: &str) -> Result<Vec<(String, Record)>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (keys, more) = self.store.scan(TXN_SCOPE, prefix, after.as_deref(), 500, 0)?;
            let entries = self.store.get_many(TXN_SCOPE, &keys)?;
            for (k, e) in keys.iter().zip(entries) {
                if let Some(e) = e {
                    out.push((k.clone(), decode(&e.value)?));
                }
            }
            match keys.last() {
                Some(last) if more => after = Some(last.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// Prepare part `part` of transaction `txn` from a step's staged
    /// writes, in one store transaction: check that nothing the step read
    /// has changed and that no other prepared transaction holds its keys
    /// (else `conflict`), that none of `absent` exists (else
    /// `precondition-failed`), then hold its keys, log the part durably, and
    /// apply `now` (the caller's own log records). The staged writes and
    /// `on_commit` are applied by [`Self::resolve`] if the transaction
    /// commits. `meta` is kept for the caller ([`Self::prepared_parts`]).
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_staged(
        &self,
        txn: &str,
        part: &str,
        staged: &StagedStore,
        now: Vec<Write>,
        on_commit: Vec<Write>,
        meta: Vec<u8>,
        absent: &[ScopedKey],
    ) -> Result<()> {
        check_name("transaction", txn)?;
        check_name("transaction part", part)?;
        let StagedWrites { reads, writes } = staged.writes()?;
        let read_keys: Vec<ScopedKey> = reads.iter().map(|(k, _)| k.clone()).collect();
        let written_keys: Vec<ScopedKey> = writes.iter().map(|w| w.key().clone()).collect();
        if let Some(k) = written_keys.iter().find(|k| self.is_replicated(&k.scope)) {
            return Err(Error::PreconditionFailed(format!(
                "scope `{}` is replicated: its replicas merge writes without coordination, so a transaction cannot hold its keys",
                k.scope
            )));
        }
        let at = record_key(txn, part);
        let mut guards = absent.to_vec();
        guards.push(at.clone());
        let mut read = read_keys.clone();
        read.extend(guards.iter().cloned());
        let seq = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let record = encode(&Record { seq, reads: read_keys.clone(), writes, on_commit, meta })?;
        let mut all = now;
        all.push(Write::Put { key: at, value: record, expires_at_ms: None });
        let written: Vec<ScopedKey> = all.iter().map(|w| w.key().clone()).collect();
        let now_ms = self.now();
        self.load_locks()?;
        let locks = self.locks.clone();
        let mut acquired = false;
        let result = self.transact(None, &read, &written, &mut |current| {
            super::tier::validate(&reads, &guards, current, now_ms)?;
            let mut table = locks.lock().map_err(poisoned)?;
            let table = table.get_or_insert_with(LockTable::default);
            table.check(Access::Txn(txn), &read_keys, &written_keys)?;
            table.acquire(txn, part, &read_keys, &written_keys);
            self.locks_held.store(table.len(), std::sync::atomic::Ordering::Release);
            acquired = true;
            Ok(all.iter().cloned().collect())
        });
        if result.is_err()
            && acquired
            && let Some(table) = self.locks.lock().map_err(poisoned)?.as_mut()
        {
            table.release(txn, Some(part));
            self.locks_held.store(table.len(), std::sync::atomic::Ordering::Release);
        }
        result.map(|_| ())
    }

    /// The parts of `txn` prepared on this host, in the order they were
    /// prepared.
    pub fn prepared_parts(&self, txn: &str) -> Result<Vec<PreparedPart>> {
        check_name("transaction", txn)?;
        let mut records = self.records(&format!("prep/{txn}/"))?;
        records.sort_by_key(|(_, r)| r.seq);
        Ok(records
            .into_iter()
            .map(|(k, r)| PreparedPart {
                part: k.rsplit('/').next().unwrap_or_default().to_string(),
                writes: r.writes,
                meta: r.meta,
            })
            .collect())
    }

    /// The transactions whose names start with `prefix` with parts
    /// prepared (and not yet resolved) on this host.
    pub fn prepared_transactions(&self, prefix: &str) -> Result<Vec<String>> {
        let mut txns: Vec<String> = self
            .records(&format!("prep/{prefix}"))?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix("prep/").and_then(|k| k.split_once('/')).map(|(t, _)| t.to_string()))
            .collect();
        txns.dedup();
        Ok(txns)
    }

    /// How many keys prepared transactions hold on this host.
    pub fn held_locks(&self) -> Result<usize> {
        self.load_locks()?;
        Ok(self.locks.lock().map_err(poisoned)?.as_ref().map_or(0, LockTable::len))
    }

    /// Decide `txn` on this host: on commit apply every prepared part's
    /// writes and `on_commit` writes (in prepare order), on abort drop them;
    /// either way delete the parts' records and apply `extra`, in one store
    /// transaction, then release the parts' locks. Resolving a transaction
    /// with nothing prepared here applies `extra` only; resolving twice
    /// changes nothing the second time. Returns the parts resolved.
    ///
    /// Scope quotas are not enforced here (a decided commit must apply);
    /// usage is counted afresh afterwards.
    pub fn resolve(&self, txn: &str, commit: bool, extra: Vec<Write>) -> Result<Vec<String>> {
        check_name("transaction", txn)?;
        for _ in 0..16 {
            let mut records = self.records(&format!("prep/{txn}/"))?;
            records.sort_by_key(|(_, r)| r.seq);
            if records.is_empty() && extra.is_empty() {
                self.release(txn)?;
                return Ok(Vec::new());
            }
            let keys: Vec<ScopedKey> = records.iter().map(|(k, _)| ScopedKey::new(TXN_SCOPE, k.clone())).collect();
            let mut writes = Vec::new();
            let mut parts = Vec::new();
            for ((_, record), key) in records.into_iter().zip(&keys) {
                parts.push(key.key.rsplit('/').next().unwrap_or_default().to_string());
                if commit {
                    writes.extend(record.writes);
                    writes.extend(record.on_commit);
                }
                writes.push(Write::Delete { key: key.clone() });
            }
            writes.extend(extra.iter().cloned());
            let scopes: Vec<String> = writes.iter().map(|w| w.key().scope.clone()).collect();
            let result = self.store.transact(&keys, &mut |current| {
                if current.iter().any(Option::is_none) {
                    return Err(Error::Conflict(format!("transaction `{txn}` was resolved meanwhile")));
                }
                Ok(writes.iter().cloned().collect())
            });
            self.forget_usage(&scopes);
            match result {
                Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
                Ok(_) => {
                    self.release(txn)?;
                    return Ok(parts);
                }
            }
        }
        Err(Error::Conflict(format!("transaction `{txn}` kept changing while it was resolved")))
    }

    fn release(&self, txn: &str) -> Result<()> {
        if let Some(table) = self.locks.lock().map_err(poisoned)?.as_mut() {
            table.release(txn, None);
            self.locks_held.store(table.len(), std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::state::{MemoryStore, RedbStore, SetOptions, StateLimits};
    use std::sync::Arc;

    const O: SetOptions = SetOptions { ttl_ms: None, if_not_exists: false };

    fn memory() -> StateTier {
        StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default())
    }

    /// A part that reads `read` and adds 1 to `counter`.
    fn prepare_increment(host: &StateTier, txn: &str, part: &str, read: &str, counter: &str) -> Result<()> {
        let (tier, staged) = host.staged();
        tier.get("s", read)?;
        tier.increment("s", counter, 1)?;
        host.prepare_staged(txn, part, &staged, Vec::new(), Vec::new(), part.as_bytes().to_vec(), &[])
    }

    #[test]
    fn prepared_writes_change_nothing_until_commit_and_hold_their_keys() {
        let host = memory();
        prepare_increment(&host, "t1", "a", "r", "n").unwrap();
        assert_eq!(host.get("s", "n").unwrap(), None, "nothing applied at prepare");
        assert_eq!(host.held_locks().unwrap(), 2);
        // A plain write of a held key, and another transaction's prepare,
        // conflict and change nothing.
        assert_eq!(host.increment("s", "n", 5).unwrap_err().kind(), ErrorKind::Conflict);
        assert_eq!(host.set("s", "r", vec![1], O).unwrap_err().kind(), ErrorKind::Conflict);
        assert_eq!(prepare_increment(&host, "t2", "a", "x", "n").unwrap_err().kind(), ErrorKind::Conflict);
        assert_eq!(host.get("s", "n").unwrap(), None);
        assert_eq!(host.prepared_transactions("").unwrap(), ["t1"]);
        // Plain reads see the committed value meanwhile; another part may
        // read what t1 only read.
        assert_eq!(host.get("s", "r").unwrap(), None);
        prepare_increment(&host, "t3", "a", "r", "m").unwrap();
        assert_eq!(host.resolve("t1", true, Vec::new()).unwrap(), ["a"]);
        assert_eq!(host.increment("s", "n", 0).unwrap(), 1, "committed and released");
        assert_eq!(host.increment("s", "m", 1).unwrap_err().kind(), ErrorKind::Conflict, "still held by t3");
    }

    #[test]
    fn commit_applies_every_part_in_order_and_abort_applies_none() {
        let host = memory();
        prepare_increment(&host, "t1", "a", "r", "n").unwrap();
        let (tier, staged) = host.staged();
        staged.seed(&host.prepared_parts("t1").unwrap()[0].writes).unwrap();
        assert_eq!(tier.increment("s", "n", 10).unwrap(), 11, "a later part reads the earlier part's writes");
        let log = ScopedKey::new("log", "t1-b");
        let on_commit = vec![Write::Put { key: log.clone(), value: b"done".to_vec(), expires_at_ms: None }];
        host.prepare_staged("t1", "b", &staged, Vec::new(), on_commit, Vec::new(), &[]).unwrap();
        let parts: Vec<String> = host.prepared_parts("t1").unwrap().into_iter().map(|p| p.part).collect();
        assert_eq!(parts, ["a", "b"]);
        assert_eq!(host.resolve("t1", true, Vec::new()).unwrap(), ["a", "b"]);
        assert_eq!(host.increment("s", "n", 0).unwrap(), 11);
        assert_eq!(host.get("log", "t1-b").unwrap(), Some(b"done".to_vec()));
        assert_eq!(host.held_locks().unwrap(), 0);
        assert!(host.resolve("t1", true, Vec::new()).unwrap().is_empty(), "resolving twice changes nothing");
        assert_eq!(host.increment("s", "n", 0).unwrap(), 11);

        prepare_increment(&host, "t2", "a", "r", "n").unwrap();
        let extra =
            vec![Write::Put { key: ScopedKey::new("log", "t2"), value: b"aborted".to_vec(), expires_at_ms: None }];
        assert_eq!(host.resolve("t2", false, extra).unwrap(), ["a"]);
        assert_eq!(host.increment("s", "n", 0).unwrap(), 11, "an aborted part leaves no write");
        assert_eq!(host.get("log", "t2").unwrap(), Some(b"aborted".to_vec()));
        assert_eq!(host.held_locks().unwrap(), 0);
        assert!(host.prepared_transactions("").unwrap().is_empty());
    }

    #[test]
    fn a_prepare_whose_reads_changed_conflicts_and_takes_no_lock() {
        let host = memory();
        let (tier, staged) = host.staged();
        tier.increment("s", "n", 1).unwrap();
        host.increment("s", "n", 1).unwrap();
        let e = host.prepare_staged("t", "a", &staged, Vec::new(), Vec::new(), Vec::new(), &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(host.held_locks().unwrap(), 0);
        assert!(host.prepared_transactions("").unwrap().is_empty());
        // The same part twice: refused, the first stays.
        prepare_increment(&host, "t", "a", "r", "m").unwrap();
        let e = prepare_increment(&host, "t", "a", "r", "m").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{e}");
        assert_eq!(host.prepared_parts("t").unwrap().len(), 1);
        assert_eq!(
            host.prepare_staged("a/b", "p", &host.staged().1, vec![], vec![], vec![], &[]).unwrap_err().kind(),
            ErrorKind::BadInput
        );
    }

    #[test]
    fn locks_survive_a_restart_and_are_released_by_resolving_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let host = StateTier::new(Arc::new(RedbStore::open(&path).unwrap()), StateLimits::default());
            prepare_increment(&host, "t1", "a", "r", "n").unwrap();
        }
        let host = StateTier::new(Arc::new(RedbStore::open(&path).unwrap()), StateLimits::default());
        assert_eq!(host.increment("s", "n", 1).unwrap_err().kind(), ErrorKind::Conflict, "held after the restart");
        assert_eq!(host.held_locks().unwrap(), 2);
        host.resolve("t1", true, Vec::new()).unwrap();
        assert_eq!(host.held_locks().unwrap(), 0);
        assert_eq!(host.increment("s", "n", 1).unwrap(), 2);
    }
}
