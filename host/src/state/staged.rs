//! A step's transaction: a [`StateStore`] that stages a function's writes
//! over the host's store instead of applying them, remembers the version of
//! every entry it read, and applies the staged writes in one transaction of
//! the host's store at the end ([`crate::state::StateTier::commit_staged`]),
//! together with the caller's own writes (a workflow step's output and log
//! records) — provided nothing it read has changed meanwhile (optimistic
//! concurrency control, checked at commit).
//!
//! What a function observes inside a step: reads see the committed state of
//! the host plus the step's own staged writes (read-your-writes); nothing of
//! an earlier, abandoned attempt of the same step. Key listings merge the
//! two but are not checked at commit (a key added by another commit meanwhile
//! is not a conflict). Versions of staged writes are provisional: a CAS
//! token taken from a write of this step works within the step; after the
//! commit the entry has its real version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{Decide, Entry, ScopedKey, StateStore, Versions, Write};
use crate::error::{Error, Result};

/// Provisional versions of staged writes start here (far above any version
/// a store issues in practice), so they never equal a committed version.
const PROVISIONAL: u64 = 1 << 62;

#[derive(Default)]
struct Staged {
    /// Staged puts (`Some`) and deletes (`None`).
    writes: BTreeMap<ScopedKey, Option<Entry>>,
    /// The version of each key's entry when the step first read it (`None`:
    /// absent).
    reads: HashMap<ScopedKey, Option<u64>>,
    next_version: u64,
}

/// Writes staged over a base store; see the module docs.
pub struct StagedStore {
    base: Arc<dyn StateStore>,
    staged: Mutex<Staged>,
}

/// What a staged step would commit: the entries it read, with the version it
/// saw, and its writes.
#[derive(Debug, Clone, Default)]
pub struct StagedWrites {
    /// Keys read and the version seen (`None`: absent).
    pub reads: Vec<(ScopedKey, Option<u64>)>,
    /// The writes, in key order.
    pub writes: Vec<Write>,
}

impl StagedWrites {
    /// Whether the step wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::storage_msg("staged writes lock poisoned by a panic")
}

impl StagedStore {
    /// Nothing staged over `base`.
    pub fn new(base: Arc<dyn StateStore>) -> StagedStore {
        StagedStore { base, staged: Mutex::new(Staged::default()) }
    }

    /// Stage `writes` as if the step had made them (they are not reads):
    /// what earlier parts of the same transaction wrote on this host, so
    /// that a later part reads them.
    pub fn seed(&self, writes: &[Write]) -> Result<()> {
        let mut staged = self.staged.lock().map_err(poisoned)?;
        for w in writes {
            staged.next_version += 1;
            let version = PROVISIONAL + staged.next_version;
            let entry = match w {
                Write::Put { value, expires_at_ms, .. } => {
                    Some(Entry { value: value.clone(), version, expires_at_ms: *expires_at_ms })
                }
                Write::Delete { .. } => None,
            };
            staged.writes.insert(w.key().clone(), entry);
        }
        Ok(())
    }

    /// Take the staged writes of `scope` out (they are no longer committed
    /// with the rest): for a caller that applies them on its own.
    pub fn take_scope(&self, scope: &str) -> Result<Vec<Write>> {
        let mut staged = self.staged.lock().map_err(poisoned)?;
        let keys: Vec<ScopedKey> = staged.writes.keys().filter(|k| k.scope == scope).cloned().collect();
        Ok(keys
            .into_iter()
            .filter_map(|key| {
                staged.writes.remove(&key).map(|e| match e {
                    Some(e) => Write::Put { key, value: e.value, expires_at_ms: e.expires_at_ms },
                    None => Write::Delete { key },
                })
            })
            .collect())
    }

    /// The reads and writes to commit (the store keeps them: a commit that
    /// fails can be retried or abandoned).
    pub fn writes(&self) -> Result<StagedWrites> {
        let staged = self.staged.lock().map_err(poisoned)?;
        let writes = staged
            .writes
            .iter()
            .map(|(key, e)| match e {
                Some(e) => Write::Put { key: key.clone(), value: e.value.clone(), expires_at_ms: e.expires_at_ms },
                None => Write::Delete { key: key.clone() },
            })
            .collect();
        Ok(StagedWrites { reads: staged.reads.iter().map(|(k, v)| (k.clone(), *v)).collect(), writes })
    }

    /// The staged entry of `key` (`Some(None)`: staged delete), or the base
    /// entry, remembering the version read.
    fn read(&self, staged: &mut Staged, key: &ScopedKey, base: Option<Entry>) -> Option<Entry> {
        if let Some(e) = staged.writes.get(key) {
            return e.clone();
        }
        staged.reads.entry(key.clone()).or_insert(base.as_ref().map(|e| e.version));
        base
    }
}

impl StateStore for StagedStore {
    fn get(&self, scope: &str, key: &str) -> Result<Option<Entry>> {
        let at = ScopedKey::new(scope, key);
        let base = self.base.get(scope, key)?;
        let mut staged = self.staged.lock().map_err(poisoned)?;
        Ok(self.read(&mut staged, &at, base))
    }

    fn get_many(&self, scope: &str, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        let base = self.base.get_many(scope, keys)?;
        let mut staged = self.staged.lock().map_err(poisoned)?;
        Ok(keys.iter().zip(base).map(|(k, b)| self.read(&mut staged, &ScopedKey::new(scope, k.clone()), b)).collect())
    }

    fn scan(
        &self,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<String>, bool)> {
        let staged = self.staged.lock().map_err(poisoned)?;
        let in_range =
            |k: &ScopedKey| k.scope == scope && k.key.starts_with(prefix) && after.is_none_or(|a| k.key.as_str() > a);
        let deleted = staged.writes.iter().filter(|(k, e)| in_range(k) && e.is_none()).count();
        // Enough base keys that `limit` survive the staged deletes.
        let (base, base_more) = self.base.scan(scope, prefix, after, limit.saturating_add(deleted), now_ms)?;
        let mut keys: std::collections::BTreeSet<String> = base.into_iter().collect();
        for (k, e) in staged.writes.iter().filter(|(k, _)| in_range(k)) {
            match e {
                Some(e) if e.is_live(now_ms) => keys.insert(k.key.clone()),
                _ => keys.remove(&k.key),
            };
        }
        let more = base_more || keys.len() > limit;
        Ok((keys.into_iter().take(limit).collect(), more))
    }

    fn transact(&self, keys: &[ScopedKey], decide: &mut Decide<'_>) -> Result<Versions> {
        let mut staged = self.staged.lock().map_err(poisoned)?;
        let mut current = Vec::with_capacity(keys.len());
        for k in keys {
            let base = if staged.writes.contains_key(k) { None } else { self.base.get(&k.scope, &k.key)? };
            current.push(self.read(&mut staged, k, base));
        }
        let writes = decide(&current)?;
        let mut versions = Versions::new();
        for w in writes {
            match w {
                Write::Put { key, value, expires_at_ms } => {
                    staged.next_version += 1;
                    let version = PROVISIONAL + staged.next_version;
                    versions.push(version);
                    staged.writes.insert(key, Some(Entry { value, version, expires_at_ms }));
                }
                Write::Delete { key } => {
                    staged.writes.insert(key, None);
                }
            }
        }
        Ok(versions)
    }

    fn purge_expired(&self, _now_ms: u64, _limit: usize) -> Result<usize> {
        // The host's purge runs on the base store.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryStore, SetOptions, StateLimits, StateTier};

    fn base() -> StateTier {
        StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default())
    }

    #[test]
    fn staged_writes_are_read_back_but_change_nothing_until_committed() {
        let host = base();
        host.set("s", "a", b"old".to_vec(), SetOptions::default()).unwrap();
        let (tier, staged) = host.staged();
        tier.set("s", "a", b"new".to_vec(), SetOptions::default()).unwrap();
        tier.set("s", "b", b"b".to_vec(), SetOptions::default()).unwrap();
        assert_eq!(tier.increment("s", "n", 2).unwrap(), 2);
        tier.delete("s", "gone").unwrap();
        assert_eq!(tier.get("s", "a").unwrap(), Some(b"new".to_vec()), "read-your-writes");
        assert_eq!(tier.list_keys("s", "", None, None).unwrap().keys, ["a", "b", "n"]);
        assert_eq!(host.get("s", "a").unwrap(), Some(b"old".to_vec()), "nothing applied yet");
        assert!(!host.exists("s", "b").unwrap());
        host.commit_staged(&staged, Vec::new(), &[]).unwrap();
        assert_eq!(host.get("s", "a").unwrap(), Some(b"new".to_vec()));
        assert_eq!(host.increment("s", "n", 0).unwrap(), 2);
    }

    #[test]
    fn a_commit_whose_reads_changed_meanwhile_conflicts_and_changes_nothing() {
        let host = base();
        let (tier, staged) = host.staged();
        assert_eq!(tier.increment("s", "n", 1).unwrap(), 1);
        tier.set("s", "other", b"x".to_vec(), SetOptions::default()).unwrap();
        // Another step commits an increment of the same counter first.
        host.increment("s", "n", 5).unwrap();
        let e = host.commit_staged(&staged, Vec::new(), &[]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict, "{e}");
        assert_eq!(host.increment("s", "n", 0).unwrap(), 5);
        assert!(!host.exists("s", "other").unwrap(), "all or nothing");
    }

    #[test]
    fn a_commit_refuses_when_a_guard_key_exists_and_applies_extra_writes_atomically() {
        let host = base();
        let (tier, staged) = host.staged();
        tier.set("s", "k", b"v".to_vec(), SetOptions::default()).unwrap();
        let done = ScopedKey::new("log", "run/step");
        let extra = vec![Write::Put { key: done.clone(), value: b"result".to_vec(), expires_at_ms: None }];
        host.commit_staged(&staged, extra.clone(), std::slice::from_ref(&done)).unwrap();
        assert_eq!(host.get("log", "run/step").unwrap(), Some(b"result".to_vec()));
        // The same step again: already committed, nothing changes.
        let (tier, staged) = host.staged();
        tier.set("s", "k", b"again".to_vec(), SetOptions::default()).unwrap();
        let e = host.commit_staged(&staged, extra, std::slice::from_ref(&done)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::PreconditionFailed);
        assert_eq!(host.get("s", "k").unwrap(), Some(b"v".to_vec()));
    }
}
