//! Volatile in-process backend.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::RwLock;

use super::{Decide, Entry, ScopedKey, StateStore, Versions, Write};
use crate::error::{Error, Result};

/// Scope names hash with foldhash (randomly seeded per map): SipHash cost
/// as much as the rest of a 1 KiB set.
type ScopeMap = HashMap<String, BTreeMap<String, Entry>, foldhash::fast::RandomState>;

#[derive(Default)]
struct Inner {
    scopes: ScopeMap,
    last_version: u64,
}

impl Inner {
    fn entry(&self, key: &ScopedKey) -> Option<&Entry> {
        self.scopes.get(&key.scope).and_then(|s| s.get(&key.key))
    }
}

/// State kept in memory: fast, shared by every function on the host, lost when
/// the host stops. Transactions hold one write lock, so they are serializable.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remove the entry under `key` and hand back its bytes without copying
    /// them (the fusion sandbox's hand-off to the last reader).
    pub fn take(&self, scope: &str, key: &str) -> Result<Option<Entry>> {
        let mut inner = self.inner.write().map_err(poisoned)?;
        Ok(inner.scopes.get_mut(scope).and_then(|s| s.remove(key)))
    }

    /// [`StateStore::transact`], with `check(added, freed)` — the value
    /// bytes the decided writes add and free — called before anything is
    /// applied; an error from it aborts the transaction. Runs under the
    /// store's write lock, so checks are serialised with every write.
    pub(crate) fn transact_checked(
        &self,
        keys: &[ScopedKey],
        decide: &mut Decide<'_>,
        check: Option<&mut dyn FnMut(u64, u64) -> Result<()>>,
    ) -> Result<Versions> {
        let mut inner = self.inner.write().map_err(poisoned)?;
        // A blind write reads nothing: no call to collect an empty list.
        let current: Vec<Option<Entry>> =
            if keys.is_empty() { Vec::new() } else { keys.iter().map(|k| inner.entry(k).cloned()).collect() };
        let writes = decide(&current)?;
        if let Some(check) = check {
            let old = |key: &ScopedKey| inner.entry(key).map_or(0, |e| e.value.len() as u64);
            let (mut added, mut freed) = (0u64, 0u64);
            for w in &writes {
                match w {
                    Write::Put { key, value, .. } => {
                        added += value.len() as u64;
                        freed += old(key);
                    }
                    Write::Delete { key } => freed += old(key),
                }
            }
            check(added, freed)?;
        }
        let mut version = inner.last_version;
        let mut versions = Versions::with_capacity(writes.len());
        for w in writes {
            match w {
                Write::Put { key, value, expires_at_ms } => {
                    version += 1;
                    versions.push(version);
                    let entry = Entry { value, version, expires_at_ms };
                    match inner.scopes.get_mut(&key.scope) {
                        Some(s) => {
                            s.insert(key.key, entry);
                        }
                        None => {
                            inner.scopes.insert(key.scope, BTreeMap::from([(key.key, entry)]));
                        }
                    }
                }
                Write::Delete { key } => {
                    if let Some(s) = inner.scopes.get_mut(&key.scope) {
                        s.remove(&key.key);
                    }
                }
            }
        }
        inner.last_version = version;
        Ok(versions)
    }

    /// Entries held (expired ones included until purged).
    pub fn len(&self) -> Result<u64> {
        let inner = self.inner.read().map_err(poisoned)?;
        Ok(inner.scopes.values().map(|s| s.len() as u64).sum())
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Bytes of every value held.
    pub fn value_bytes(&self) -> Result<u64> {
        let inner = self.inner.read().map_err(poisoned)?;
        Ok(inner.scopes.values().flat_map(|s| s.values()).map(|e| e.value.len() as u64).sum())
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::storage_msg("in-memory store lock poisoned by a panic")
}

impl StateStore for MemoryStore {
    fn get(&self, scope: &str, key: &str) -> Result<Option<Entry>> {
        let inner = self.inner.read().map_err(poisoned)?;
        Ok(inner.scopes.get(scope).and_then(|s| s.get(key)).cloned())
    }

    fn get_many(&self, scope: &str, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        let inner = self.inner.read().map_err(poisoned)?;
        let s = inner.scopes.get(scope);
        Ok(keys.iter().map(|k| s.and_then(|s| s.get(k)).cloned()).collect())
    }

    fn scan(
        &self,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<String>, bool)> {
        let inner = self.inner.read().map_err(poisoned)?;
        let Some(s) = inner.scopes.get(scope) else { return Ok((Vec::new(), false)) };
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut keys = Vec::new();
        let mut more = false;
        for (k, e) in s.range((start, Bound::Unbounded)) {
            if !k.starts_with(prefix) {
                break;
            }
            if !e.is_live(now_ms) {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(k.clone());
        }
        Ok((keys, more))
    }

    fn transact(&self, keys: &[ScopedKey], decide: &mut Decide<'_>) -> Result<Versions> {
        self.transact_checked(keys, decide, None)
    }

    fn purge_expired(&self, now_ms: u64, limit: usize) -> Result<usize> {
        let mut inner = self.inner.write().map_err(poisoned)?;
        let mut n = 0;
        for s in inner.scopes.values_mut() {
            if n >= limit {
                break;
            }
            let expired: Vec<String> =
                s.iter().filter(|(_, e)| !e.is_live(now_ms)).map(|(k, _)| k.clone()).take(limit - n).collect();
            for k in &expired {
                s.remove(k);
            }
            n += expired.len();
        }
        inner.scopes.retain(|_, s| !s.is_empty());
        Ok(n)
    }
}
