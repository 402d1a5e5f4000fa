//! The state tier's semantics, shared by every backend: validation and
//! limits, TTL, counters, compare-and-swap, paging.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::encoding::{decode_counter, decode_decimal_counter, decode_version, encode_counter, encode_decimal_counter};
use databelt_types::ScopeName;

use super::locks::{Access, LockTable};
use super::quota::{ScopeQuota, Usage, entry_bytes};
use super::staged::{StagedStore, StagedWrites};
use super::{Entry, ScopedKey, StateLimits, StateStore, Versions, Write, Writes};
use crate::error::{Error, Result};

/// Options of a write (mirrors the WIT `set-options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Time to live in milliseconds from the write.
    pub ttl_ms: Option<u64>,
    /// Fail with `PreconditionFailed` if a live value exists.
    pub if_not_exists: bool,
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys in ascending byte order.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` when the listing is complete.
    pub cursor: Option<String>,
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written, with this new version.
    Swapped(u64),
    /// Not written; the current live entry, if any.
    Stale(Option<Entry>),
}

/// The check of a staged transaction at its commit (or prepare): `current`
/// holds the entries of the keys of `reads`, then of `absent`. Fails with
/// `conflict` when an entry read has another version now, with
/// `precondition-failed` when one of `absent` is live.
pub(super) fn validate(
    reads: &[(ScopedKey, Option<u64>)],
    absent: &[ScopedKey],
    current: &[Option<Entry>],
    now: u64,
) -> Result<()> {
    for ((key, seen), entry) in reads.iter().zip(current) {
        if *seen != entry.as_ref().map(|e| e.version) {
            return Err(Error::Conflict(format!("`{}/{}` changed after the step read it", key.scope, key.key)));
        }
    }
    for (key, entry) in absent.iter().zip(current.get(reads.len()..).unwrap_or_default()) {
        if entry.as_ref().is_some_and(|e| e.is_live(now)) {
            return Err(Error::PreconditionFailed(format!("`{}/{}` exists", key.scope, key.key)));
        }
    }
    Ok(())
}

/// A plain state call: refused when it would write (or read-modify-write)
/// a key a prepared transaction holds.
const PLAIN: Option<Access<'static>> = Some(Access::Plain { validate_reads: false });

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How a counter's value is stored.
#[derive(Clone, Copy)]
enum CounterEncoding {
    /// `databelt:state`: 8 bytes, s64 little-endian.
    LittleEndian,
    /// `wasi:keyvalue`: decimal ASCII text.
    Decimal,
}

impl CounterEncoding {
    fn decode(self, bytes: &[u8]) -> Result<i64> {
        match self {
            CounterEncoding::LittleEndian => decode_counter(bytes),
            CounterEncoding::Decimal => decode_decimal_counter(bytes),
        }
    }

    fn encode(self, value: i64) -> Vec<u8> {
        match self {
            CounterEncoding::LittleEndian => encode_counter(value).to_vec(),
            CounterEncoding::Decimal => encode_decimal_counter(value),
        }
    }
}

fn system_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A tier's clock, read once, on first use.
struct LazyNow<'a> {
    tier: &'a StateTier,
    at: std::cell::Cell<Option<u64>>,
}

impl LazyNow<'_> {
    fn get(&self) -> u64 {
        match self.at.get() {
            Some(t) => t,
            None => {
                let t = self.tier.now();
                self.at.set(Some(t));
                t
            }
        }
    }

    /// [`Entry::is_live`], reading the clock only for an entry with a TTL.
    fn is_live(&self, e: &Entry) -> bool {
        e.expires_at_ms.is_none_or(|_| e.is_live(self.get()))
    }
}

/// The local state tier: a backend plus the semantics of the WIT `store`
/// interface. Cheap to clone; clones share the backend.
#[derive(Clone)]
pub struct StateTier {
    pub(super) store: Arc<dyn StateStore>,
    limits: StateLimits,
    allowed_scopes: Option<Arc<[String]>>,
    clock: Clock,
    /// Usage of the scopes that have a quota, once scanned.
    usage: Arc<Mutex<HashMap<String, Usage>>>,
    /// Keys held by prepared transaction parts; `None` until rebuilt from
    /// the prepared records (on first use).
    pub(super) locks: Arc<Mutex<Option<LockTable>>>,
    /// Whether `locks` has been rebuilt (read without the mutex on every
    /// write; set once, never cleared).
    pub(super) locks_loaded: Arc<std::sync::atomic::AtomicBool>,
    /// How many keys `locks` holds, stored whenever it changes (under its
    /// mutex, inside the store transaction that takes the holds), so a
    /// write finds "nothing held" without taking the mutex.
    pub(super) locks_held: Arc<std::sync::atomic::AtomicUsize>,
    /// The replicated scopes, if any (see [`super::replica`]).
    pub(super) replication: Option<Arc<super::replica::Replication>>,
    /// Whether this tier's transactions log writes to replicated scopes
    /// (a step's staged tier does not: its commit on the base tier does).
    pub(super) logs_replication: bool,
    /// Replicated values a workflow run has read or written, served again
    /// to its later steps (repeatable read; see [`super::replica::Pins`]).
    pub(super) pins: Option<Arc<Mutex<super::replica::Pins>>>,
}

impl std::fmt::Debug for StateTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTier").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl StateTier {
    /// A tier over `store` with `limits`, letting functions open any valid scope.
    pub fn new(store: Arc<dyn StateStore>, limits: StateLimits) -> Self {
        StateTier {
            store,
            limits,
            allowed_scopes: None,
            clock: Arc::new(system_clock_ms),
            usage: Arc::new(Mutex::new(HashMap::new())),
            locks: Arc::new(Mutex::new(None)),
            locks_loaded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            locks_held: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            replication: None,
            logs_replication: false,
            pins: None,
        }
    }

    /// Only let functions open the scopes in `allowed`.
    pub fn with_allowed_scopes(mut self, allowed: Option<Vec<String>>) -> Self {
        self.allowed_scopes = allowed.map(Into::into);
        self
    }

    /// Use `clock` (milliseconds since the Unix epoch) for TTLs; for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &StateLimits {
        &self.limits
    }

    pub(super) fn now(&self) -> u64 {
        (self.clock)()
    }

    /// The clock, read on first use only: most values have no TTL, and a
    /// clock read costs as much as the rest of a small get.
    fn lazy_now(&self) -> LazyNow<'_> {
        LazyNow { tier: self, at: std::cell::Cell::new(None) }
    }

    /// Check that `name` may be opened.
    pub fn open_scope(&self, name: &str) -> Result<()> {
        if let Err(e) = ScopeName::new(name) {
            return Err(Error::NoSuchScope(e.to_string()));
        }
        if let Some(allowed) = &self.allowed_scopes
            && !ScopeName::is_reserved_name(name)
            && !allowed.iter().any(|s| s == name)
        {
            return Err(Error::AccessDenied(format!("scope `{name}` is not allowed on this host")));
        }
        Ok(())
    }

    /// Check that `scope` may be opened and `key` is within the limits,
    /// without touching the store (used before accepting a streamed value).
    pub fn check_scope_and_key(&self, scope: &str, key: &str) -> Result<()> {
        self.open_scope(scope)?;
        self.check_key(key)
    }

    pub(super) fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::Other("keys must not be empty".into()));
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(Error::over_limit("key size in bytes", key.len(), self.limits.max_key_bytes));
        }
        Ok(())
    }

    pub(super) fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.limits.max_value_bytes {
            return Err(Error::over_limit("value size in bytes", value.len(), self.limits.max_value_bytes));
        }
        Ok(())
    }

    pub(super) fn check_batch(&self, n: usize) -> Result<()> {
        if n > self.limits.max_batch_keys {
            return Err(Error::over_limit("keys in one batch", n, self.limits.max_batch_keys));
        }
        Ok(())
    }

    fn expiry(&self, opts: &SetOptions, now: &LazyNow<'_>) -> Option<u64> {
        opts.ttl_ms.map(|ttl| now.get().saturating_add(ttl.max(1)))
    }

    /// The live value under `key`.
    pub fn get(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_entry(scope, key)?.map(|e| e.value))
    }

    /// The live entry under `key`, with its version.
    pub fn get_entry(&self, scope: &str, key: &str) -> Result<Option<Entry>> {
        if self.is_replicated(scope) {
            return self.replicated_entry(scope, key);
        }
        self.check_key(key)?;
        let now = self.lazy_now();
        Ok(self.store.get(scope, key)?.filter(|e| now.is_live(e)))
    }

    /// Whether a live value exists under `key`.
    pub fn exists(&self, scope: &str, key: &str) -> Result<bool> {
        Ok(self.get_entry(scope, key)?.is_some())
    }

    /// The quota of `scope`, its usage counted (scanned on first use).
    fn quota_of(&self, scope: &str) -> Result<Option<ScopeQuota>> {
        let Some(quota) = self.limits.scope_quotas.get(scope).copied() else { return Ok(None) };
        let known = self.usage.lock().map_err(|_| Error::Runtime("usage lock poisoned".into()))?.contains_key(scope);
        if !known {
            let now = self.now();
            let (mut usage, mut after) = (Usage::default(), None::<String>);
            loop {
                let (keys, more) = self.store.scan(scope, "", after.as_deref(), 1000, now)?;
                let entries = self.store.get_many(scope, &keys)?;
                for (k, e) in keys.iter().zip(entries) {
                    if let Some(e) = e.filter(|e| e.is_live(now)) {
                        usage = usage.change(None, Some(entry_bytes(k, e.value.len())));
                    }
                }
                match keys.last() {
                    Some(last) if more => after = Some(last.clone()),
                    _ => break,
                }
            }
            self.usage
                .lock()
                .map_err(|_| Error::Runtime("usage lock poisoned".into()))?
                .entry(scope.to_string())
                .or_insert(usage);
        }
        Ok(Some(quota))
    }

    /// [`StateStore::transact`] under the quotas of the scopes of `read` and
    /// `written`: `written` are further keys the writes may touch (read as
    /// well, so that
    /// each write's change of its scope's usage is exact); a write that
    /// would take a scope over its quota aborts the whole transaction with
    /// `quota-exceeded`.
    ///
    /// With `access`, the transaction is refused with `conflict` when a
    /// prepared transaction holds one of its keys against it: `read`, and
    /// the keys of the writes `decide` returns (checked inside the store's
    /// transaction, so atomically with every prepare). `written` need only
    /// name the keys of scopes with a quota or replication log; other
    /// writes are checked whether declared or not.
    pub(super) fn transact(
        &self,
        access: Option<Access<'_>>,
        read: &[ScopedKey],
        written: &[ScopedKey],
        decide: &mut super::Decide<'_>,
    ) -> Result<Versions> {
        let Some(access) = access else { return self.transact_unchecked(read, written, decide) };
        self.load_locks()?;
        self.transact_unchecked(read, written, &mut |current| {
            let writes = decide(current)?;
            if self.locks_held.load(std::sync::atomic::Ordering::Acquire) > 0
                && let Some(table) =
                    self.locks.lock().map_err(|_| Error::Runtime("lock table poisoned".into()))?.as_ref()
            {
                table.check(access, read, writes.iter().map(Write::key))?;
            }
            Ok(writes)
        })
    }

    /// Whether a write to `scope` must be declared to [`Self::transact`]
    /// before it is decided (its scope has a quota or logs replication).
    fn declares_writes(&self, scope: &str) -> bool {
        self.limits.scope_quotas.contains_key(scope) || self.is_replicated(scope)
    }

    fn transact_unchecked(
        &self,
        read: &[ScopedKey],
        written: &[ScopedKey],
        decide: &mut super::Decide<'_>,
    ) -> Result<Versions> {
        let logged = self.logged_scopes(written);
        if logged.is_empty() {
            return self.transact_under_quotas(read, written, decide);
        }
        // Writes to replicated scopes are logged in the same transaction.
        let mut with_vv = read.to_vec();
        with_vv.extend(Self::log_keys(&logged));
        let versions = self.transact_under_quotas(&with_vv, written, &mut |current| {
            let (mine, vvs) = current.split_at(read.len().min(current.len()));
            let mut writes = decide(mine)?;
            self.append_log(&logged, vvs, &mut writes)?;
            Ok(writes)
        })?;
        if let Some(repl) = &self.replication {
            for scope in &logged {
                repl.changed(scope);
            }
        }
        Ok(versions)
    }

    fn transact_under_quotas(
        &self,
        read: &[ScopedKey],
        written: &[ScopedKey],
        decide: &mut super::Decide<'_>,
    ) -> Result<Versions> {
        if self.limits.scope_quotas.is_empty() {
            return self.store.transact(read, decide);
        }
        let mut quotas: Vec<(String, ScopeQuota)> = Vec::new();
        for k in read.iter().chain(written) {
            if !quotas.iter().any(|(s, _)| *s == k.scope)
                && let Some(q) = self.quota_of(&k.scope)?
            {
                quotas.push((k.scope.clone(), q));
            }
        }
        if quotas.is_empty() {
            return self.store.transact(read, decide);
        }
        let mut keys = read.to_vec();
        keys.extend(written.iter().filter(|k| !read.contains(k)).cloned());
        let now = self.now();
        let mut applied = false;
        let result = self.store.transact(&keys, &mut |current| {
            let writes = decide(&current[..read.len().min(current.len())])?;
            let mut sizes: HashMap<&ScopedKey, Option<u64>> = keys
                .iter()
                .zip(current)
                .map(|(k, e)| (k, e.as_ref().filter(|e| e.is_live(now)).map(|e| entry_bytes(&k.key, e.value.len()))))
                .collect();
            let mut usage = self.usage.lock().map_err(|_| Error::Runtime("usage lock poisoned".into()))?;
            let mut changed: Vec<(String, Usage)> = Vec::new();
            for (scope, quota) in &quotas {
                // Invalidated meanwhile (a purge): the next write counts afresh.
                let Some(before) = usage.get(scope).copied() else { continue };
                let mut after = before;
                for w in writes.iter().filter(|w| w.key().scope == *scope) {
                    let (key, new) = match w {
                        Write::Put { key, value, .. } => (key, Some(entry_bytes(&key.key, value.len()))),
                        Write::Delete { key } => (key, None),
                    };
                    let old = sizes.get(key).copied().flatten();
                    after = after.change(old, new);
                    if let Some(size) = sizes.get_mut(key) {
                        *size = new;
                    }
                }
                after.check(before, quota, scope)?;
                changed.push((scope.clone(), after));
            }
            usage.extend(changed);
            applied = true;
            Ok(writes)
        });
        if result.is_err()
            && applied
            && let Ok(mut usage) = self.usage.lock()
        {
            // Counted but not written: count again next time.
            for (scope, _) in &quotas {
                usage.remove(scope);
            }
        }
        result
    }

    /// Count the usage of `scopes` afresh on their next write.
    pub(super) fn forget_usage(&self, scopes: &[String]) {
        if let Ok(mut usage) = self.usage.lock() {
            for s in scopes {
                usage.remove(s);
            }
        }
    }

    /// The usage of `scope` as its quota counts it (`None`: no quota, or not
    /// counted yet).
    pub fn scope_usage(&self, scope: &str) -> Option<Usage> {
        self.usage.lock().ok()?.get(scope).copied()
    }

    /// Store `value` under `key`; returns the new version. An owned `key`
    /// (a `String`) is moved into the store, not copied.
    pub fn set(&self, scope: &str, key: impl Into<String>, value: Vec<u8>, opts: SetOptions) -> Result<u64> {
        // An owned key (as a guest's call lifts it) is moved, not copied.
        let key: String = key.into();
        if self.is_replicated(scope) {
            return self.replicated_set(scope, vec![(key, value)], opts).map(|_| 0);
        }
        self.check_key(&key)?;
        self.check_value(&value)?;
        let now = self.lazy_now();
        let expires_at_ms = self.expiry(&opts, &now);
        // The key is declared (a second copy) only when a read or the
        // scope's quota needs it: allocations are most of a small set.
        let declared = (opts.if_not_exists || self.declares_writes(scope)).then(|| ScopedKey::new(scope, key.as_str()));
        let written = declared.as_slice();
        let read: &[ScopedKey] = if opts.if_not_exists { written } else { &[] };
        let mut put = Some((ScopedKey::new(scope, key), value));
        let versions = self.transact(PLAIN, read, written, &mut |current| {
            if opts.if_not_exists && current.first().is_some_and(|e| e.as_ref().is_some_and(|e| now.is_live(e))) {
                let key = written.first().map_or("", |k| k.key.as_str());
                return Err(Error::PreconditionFailed(format!("`{key}` exists (if-not-exists)")));
            }
            let (key, value) = put.take().ok_or_else(|| Error::Other("transaction retried".into()))?;
            Ok(smallvec::smallvec![Write::Put { key, value, expires_at_ms }])
        })?;
        versions.first().copied().ok_or_else(|| Error::storage_msg("write returned no version"))
    }

    /// Remove `key`.
    pub fn delete(&self, scope: &str, key: &str) -> Result<()> {
        if self.is_replicated(scope) {
            return self.replicated_delete(scope, vec![key.to_string()]);
        }
        self.check_key(key)?;
        let at = ScopedKey::new(scope, key);
        self.transact(PLAIN, &[], std::slice::from_ref(&at), &mut |_| {
            Ok(smallvec::smallvec![Write::Delete { key: at.clone() }])
        })?;
        Ok(())
    }

    /// One page of the live keys starting with `prefix`, after `cursor`.
    pub fn list_keys(&self, scope: &str, prefix: &str, cursor: Option<&str>, limit: Option<u32>) -> Result<KeyPage> {
        if self.is_replicated(scope) {
            return self.replicated_keys(scope, prefix, cursor, limit);
        }
        if prefix.len() > self.limits.max_key_bytes {
            return Err(Error::over_limit("prefix size in bytes", prefix.len(), self.limits.max_key_bytes));
        }
        if let Some(c) = cursor {
            self.check_key(c).map_err(|_| Error::Other(format!("`{c}` is not a cursor this host issued")))?;
        }
        let limit = limit.unwrap_or(self.limits.default_page_size);
        if limit > self.limits.max_page_size {
            return Err(Error::over_limit("page size", limit as usize, self.limits.max_page_size as usize));
        }
        if limit == 0 {
            return Err(Error::Other("page size must be at least 1".into()));
        }
        let (keys, more) = self.store.scan(scope, prefix, cursor, limit as usize, self.now())?;
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    /// The live values of `keys`, in order, from one snapshot.
    pub fn get_many(&self, scope: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if self.is_replicated(scope) {
            return keys.iter().map(|k| self.get(scope, k)).collect();
        }
        self.check_batch(keys.len())?;
        for k in keys {
            self.check_key(k)?;
        }
        let now = self.lazy_now();
        Ok(self
            .store
            .get_many(scope, keys)?
            .into_iter()
            .map(|e| e.filter(|e| now.is_live(e)).map(|e| e.value))
            .collect())
    }

    /// Store every entry atomically.
    pub fn set_many(&self, scope: &str, entries: Vec<(String, Vec<u8>)>, opts: SetOptions) -> Result<()> {
        if self.is_replicated(scope) {
            return self.replicated_set(scope, entries, opts);
        }
        self.check_batch(entries.len())?;
        for (k, v) in &entries {
            self.check_key(k)?;
            self.check_value(v)?;
        }
        let now = self.lazy_now();
        let expires_at_ms = self.expiry(&opts, &now);
        let written: Vec<ScopedKey> = entries.iter().map(|(k, _)| ScopedKey::new(scope, k.clone())).collect();
        let read: Vec<ScopedKey> = if opts.if_not_exists { written.clone() } else { Vec::new() };
        let mut entries = Some(entries);
        self.transact(PLAIN, &read, &written, &mut |current| {
            if let Some(i) = current.iter().position(|e| e.as_ref().is_some_and(|e| now.is_live(e))) {
                return Err(Error::PreconditionFailed(format!("`{}` exists (if-not-exists)", read[i].key)));
            }
            let entries = entries.take().ok_or_else(|| Error::Other("transaction retried".into()))?;
            Ok(entries
                .into_iter()
                .map(|(key, value)| Write::Put { key: ScopedKey::new(scope, key), value, expires_at_ms })
                .collect())
        })?;
        Ok(())
    }

    /// Remove every key atomically.
    pub fn delete_many(&self, scope: &str, keys: Vec<String>) -> Result<()> {
        if self.is_replicated(scope) {
            return self.replicated_delete(scope, keys);
        }
        self.check_batch(keys.len())?;
        for k in &keys {
            self.check_key(k)?;
        }
        let written = ScopedKey::all_in(scope, &keys);
        self.transact(PLAIN, &[], &written, &mut |_| {
            Ok(written.iter().map(|key| Write::Delete { key: key.clone() }).collect())
        })?;
        Ok(())
    }

    /// Add `delta` to the counter under `key`; returns the new value.
    pub fn increment(&self, scope: &str, key: &str, delta: i64) -> Result<i64> {
        if self.is_replicated(scope) {
            return self.replicated_add(scope, key, delta);
        }
        self.add_to_counter(scope, key, delta, CounterEncoding::LittleEndian)
    }

    /// Add `delta` to the decimal ASCII counter under `key` (the
    /// `wasi:keyvalue` encoding, as Redis `INCRBY`); returns the new value.
    /// A value that is not decimal text fails with `precondition-failed`,
    /// changing nothing. Replicated scopes keep their counters as lattices
    /// (`databelt:state/lattice`) and refuse this.
    pub fn increment_decimal(&self, scope: &str, key: &str, delta: i64) -> Result<i64> {
        if self.is_replicated(scope) {
            return Err(Error::PreconditionFailed(format!(
                "scope `{scope}` is replicated: its counters are lattice counters (databelt:state/lattice counter-add), not decimal text"
            )));
        }
        self.add_to_counter(scope, key, delta, CounterEncoding::Decimal)
    }

    fn add_to_counter(&self, scope: &str, key: &str, delta: i64, encoding: CounterEncoding) -> Result<i64> {
        self.check_key(key)?;
        let now = self.now();
        let mut result = 0;
        let at = ScopedKey::new(scope, key);
        self.transact(PLAIN, std::slice::from_ref(&at), &[], &mut |current| {
            let live = current.first().cloned().flatten().filter(|e| e.is_live(now));
            let (old, expires_at_ms) = match &live {
                Some(e) => (encoding.decode(&e.value)?, e.expires_at_ms),
                None => (0, None),
            };
            result = old
                .checked_add(delta)
                .ok_or_else(|| Error::Other(format!("counter `{key}` would overflow: {old} + {delta}")))?;
            Ok(smallvec::smallvec![Write::Put { key: at.clone(), value: encoding.encode(result), expires_at_ms }])
        })?;
        Ok(result)
    }

    /// Write `value` if the key's version is `expected` (`None`: if absent).
    pub fn compare_and_swap(
        &self,
        scope: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<CasOutcome> {
        if self.is_replicated(scope) {
            return Err(Error::PreconditionFailed(format!(
                "scope `{scope}` is replicated: its replicas merge concurrent writes instead of comparing versions, so compare-and-swap is not offered there"
            )));
        }
        self.check_key(key)?;
        self.check_value(&value)?;
        let now = self.now();
        // A token this host never issued can never match.
        let expected = expected.map(decode_version);
        let mut stale = None;
        let mut value = Some(value);
        let at = ScopedKey::new(scope, key);
        let versions = self.transact(PLAIN, std::slice::from_ref(&at), &[], &mut |current| {
            let live = current.first().cloned().flatten().filter(|e| e.is_live(now));
            let matches = match (&expected, &live) {
                (None, None) => true,
                (Some(Some(v)), Some(e)) => *v == e.version,
                _ => false,
            };
            if !matches {
                stale = Some(live);
                return Ok(Writes::new());
            }
            let value = value.take().ok_or_else(|| Error::Other("transaction retried".into()))?;
            Ok(smallvec::smallvec![Write::Put { key: at.clone(), value, expires_at_ms: None }])
        })?;
        match (stale, versions.first()) {
            (Some(current), _) => Ok(CasOutcome::Stale(current)),
            (None, Some(v)) => Ok(CasOutcome::Swapped(*v)),
            (None, None) => Err(Error::storage_msg("swap returned no version")),
        }
    }

    /// A tier for one step's transaction: same limits and scope policy, its
    /// writes staged over this tier's store (quotas are checked when they
    /// are committed), and the staged store to commit with
    /// [`Self::commit_staged`].
    pub fn staged(&self) -> (StateTier, Arc<StagedStore>) {
        let staged = Arc::new(StagedStore::new(self.store.clone()));
        let mut limits = self.limits.clone();
        limits.scope_quotas.clear();
        let tier = StateTier {
            store: staged.clone(),
            limits,
            allowed_scopes: self.allowed_scopes.clone(),
            clock: self.clock.clone(),
            usage: Arc::new(Mutex::new(HashMap::new())),
            // Staged writes touch nothing: locks are checked at the commit.
            locks: Arc::new(Mutex::new(Some(LockTable::default()))),
            locks_loaded: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            locks_held: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            replication: self.replication.clone(),
            logs_replication: false,
            pins: None,
        };
        (tier, staged)
    }

    /// Apply what `staged` holds, plus `extra` writes, in one transaction of
    /// this tier's store, under the scopes' quotas. Fails with `conflict`,
    /// writing nothing, when an entry the step read has changed since; with
    /// `precondition-failed` when one of `absent` exists (a step's log record:
    /// the step has already committed). Returns the versions given to the
    /// `Put` writes: the staged ones (in key order), then `extra`'s.
    pub fn commit_staged(&self, staged: &StagedStore, extra: Vec<Write>, absent: &[ScopedKey]) -> Result<Versions> {
        let StagedWrites { mut reads, writes } = staged.writes()?;
        // Replicated keys are validated through their markers; their
        // staged values are joined with what arrived from other replicas.
        // Only markers of keys the step writes count: a replicated scope
        // promises causal reads, not serializable ones.
        let joined: Vec<ScopedKey> =
            writes.iter().map(|w| w.key().clone()).filter(|k| self.validated_by_marker(k)).collect();
        reads.retain(|(k, _)| {
            !self.validated_by_marker(k) && Self::marked(k).is_none_or(|target| joined.contains(&target))
        });
        let mut read: Vec<ScopedKey> = reads.iter().map(|(k, _)| k.clone()).collect();
        read.extend(absent.iter().cloned());
        let checked = read.len();
        read.extend(joined.iter().cloned());
        let mut all = writes;
        all.extend(extra);
        let written: Vec<ScopedKey> = all.iter().map(|w| w.key().clone()).collect();
        let now = self.now();
        let mut all = Some(all);
        let access = Some(Access::Plain { validate_reads: true });
        self.transact(access, &read, &written, &mut |current| {
            validate(&reads, absent, current, now)?;
            let mut writes = all.take().ok_or_else(|| Error::Other("transaction retried".into()))?;
            for (key, cur) in joined.iter().zip(current.get(checked..).unwrap_or_default()) {
                for w in writes.iter_mut() {
                    if let Write::Put { key: k, value, .. } = w
                        && k == key
                    {
                        *value = Self::join_with_current(cur.as_ref(), std::mem::take(value))?;
                    }
                }
            }
            Ok(writes.into())
        })
    }

    /// Delete at most `limit` entries that have expired by now; returns how
    /// many (`limit` means more may remain). Expired entries are never
    /// readable; this frees their memory or disk.
    pub fn purge_expired(&self, limit: usize) -> Result<usize> {
        let purged = self.store.purge_expired(self.now(), limit)?;
        if purged > 0
            && let Ok(mut usage) = self.usage.lock()
        {
            // Quotas count the purged entries no more: scan again.
            usage.clear();
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryStore, RedbStore, encode_version};
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// What keeps a backend alive while a test uses it (its directory, its server).
    type Keep = Box<dyn std::any::Any>;

    /// The backend conformance suite: every test over `tiers()` runs on the
    /// memory, redb and Redis backends alike.
    fn tiers() -> Vec<(StateTier, Keep)> {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let server = crate::state::redis_store::TestServer::start();
        let redis = crate::state::RedisStore::open(crate::state::RedisConfig::new(server.url.clone())).unwrap();
        vec![
            (StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default()), Box::new(())),
            (StateTier::new(Arc::new(redb), StateLimits::default()), Box::new(dir)),
            (StateTier::new(Arc::new(redis), StateLimits::default()), Box::new(server)),
        ]
    }

    fn quota_tiers(quota: crate::state::quota::ScopeQuota) -> Vec<(StateTier, Keep)> {
        let limits = StateLimits { scope_quotas: [("q".to_string(), quota)].into(), ..StateLimits::default() };
        tiers().into_iter().map(|(t, d)| (StateTier { limits: limits.clone(), ..t }, d)).collect()
    }

    #[test]
    fn a_scope_quota_refuses_growth_before_writing_and_counts_every_write() {
        let quota = crate::state::quota::ScopeQuota { max_bytes: Some(100), max_keys: Some(3) };
        for (t, _d) in quota_tiers(quota) {
            let o = SetOptions::default();
            // Already there before the first quota'd write: counted by the scan.
            t.store
                .transact(&[], &mut |_| {
                    Ok(smallvec::smallvec![Write::Put {
                        key: ScopedKey::new("q", "a"),
                        value: vec![0; 39],
                        expires_at_ms: None
                    }])
                })
                .unwrap();
            t.set("q", "b", vec![0; 19], o).unwrap();
            assert_eq!(t.scope_usage("q"), Some(Usage { bytes: 60, keys: 2 }));
            // 60 + 41 > 100: refused, nothing written.
            let e = t.set("q", "c", vec![0; 40], o).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::QuotaExceeded, "{e}");
            assert_eq!(t.get("q", "c").unwrap(), None);
            // Overwriting counts the difference, not a new key.
            t.set("q", "b", vec![0; 9], o).unwrap();
            assert_eq!(t.scope_usage("q"), Some(Usage { bytes: 50, keys: 2 }));
            t.set("q", "c", vec![0; 9], o).unwrap();
            // A fourth key is over max_keys; set_many is all or nothing.
            let e = t.set_many("q", vec![("d".into(), vec![1]), ("b".into(), vec![])], o).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::QuotaExceeded);
            assert_eq!((t.get("q", "d").unwrap(), t.get("q", "b").unwrap()), (None, Some(vec![0; 9])));
            // Deleting frees; counters and swaps are counted.
            t.delete("q", "c").unwrap();
            assert_eq!(t.increment("q", "n", 5).unwrap(), 5);
            assert_eq!(t.scope_usage("q"), Some(Usage { bytes: 50 + 9, keys: 3 }));
            let e = t.compare_and_swap("q", "z", None, vec![1]).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::QuotaExceeded);
            t.delete_many("q", vec!["a".into(), "n".into()]).unwrap();
            assert_eq!(t.scope_usage("q"), Some(Usage { bytes: 10, keys: 1 }));
            // Other scopes have no quota.
            t.set("free", "k", vec![0; 1000], o).unwrap();
            assert_eq!(t.scope_usage("free"), None);
        }
    }

    #[test]
    fn concurrent_writers_cannot_overrun_a_quota() {
        let quota = crate::state::quota::ScopeQuota { max_bytes: None, max_keys: Some(50) };
        for (t, _d) in quota_tiers(quota) {
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let t = t.clone();
                    std::thread::spawn(move || {
                        (0..20)
                            .filter(|j| t.set("q", format!("{i}-{j}"), vec![1], SetOptions::default()).is_ok())
                            .count()
                    })
                })
                .collect();
            let written: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(written, 50);
            assert_eq!(t.list_keys("q", "", None, Some(1000)).unwrap().keys.len(), 50);
        }
    }

    #[test]
    fn set_get_delete_exists() {
        for (t, _d) in tiers() {
            assert_eq!(t.get("s", "k").unwrap(), None);
            t.set("s", "k", b"v".to_vec(), SetOptions::default()).unwrap();
            assert_eq!(t.get("s", "k").unwrap(), Some(b"v".to_vec()));
            assert_eq!(t.get("other", "k").unwrap(), None, "scopes are separate");
            assert!(t.exists("s", "k").unwrap());
            t.delete("s", "k").unwrap();
            assert!(!t.exists("s", "k").unwrap());
            t.delete("s", "k").unwrap();
        }
    }

    #[test]
    fn ttl_expires_and_if_not_exists() {
        let now = Arc::new(AtomicU64::new(1_000));
        for (t, _d) in tiers() {
            let n = now.clone();
            let t = t.with_clock(move || n.load(Ordering::SeqCst));
            now.store(1_000, Ordering::SeqCst);
            t.set("s", "k", b"v".to_vec(), SetOptions { ttl_ms: Some(50), if_not_exists: false }).unwrap();
            let e = t.set("s", "k", b"w".to_vec(), SetOptions { ttl_ms: None, if_not_exists: true }).unwrap_err();
            assert!(matches!(e, Error::PreconditionFailed(_)));
            assert_eq!(t.get("s", "k").unwrap(), Some(b"v".to_vec()), "failed write changed nothing");
            now.store(1_050, Ordering::SeqCst);
            assert_eq!(t.get("s", "k").unwrap(), None);
            assert!(t.list_keys("s", "", None, None).unwrap().keys.is_empty());
            t.set("s", "k", b"w".to_vec(), SetOptions { ttl_ms: None, if_not_exists: true }).unwrap();
            assert_eq!(t.get("s", "k").unwrap(), Some(b"w".to_vec()));
            t.set("s", "gone", b"x".to_vec(), SetOptions { ttl_ms: Some(1), if_not_exists: false }).unwrap();
            now.store(2_000, Ordering::SeqCst);
            assert_eq!(t.purge_expired(100).unwrap(), 1);
            assert_eq!(t.get("s", "k").unwrap(), Some(b"w".to_vec()));
        }
    }

    #[test]
    fn purging_is_bounded_per_call_and_keeps_live_and_renewed_entries() {
        let now = Arc::new(AtomicU64::new(1_000));
        for (t, _d) in tiers() {
            let n = now.clone();
            let t = t.with_clock(move || n.load(Ordering::SeqCst));
            now.store(1_000, Ordering::SeqCst);
            let short = SetOptions { ttl_ms: Some(10), if_not_exists: false };
            for i in 0..10 {
                t.set(["a", "b"][i % 2], format!("old{i}"), vec![1; 100], short).unwrap();
            }
            for i in 0..5 {
                t.set("a", format!("live{i}"), vec![2; 100], SetOptions::default()).unwrap();
            }
            now.store(2_000, Ordering::SeqCst);
            // Renewed after it expired: a purge must not take the new value.
            t.set("a", "old0", b"renewed".to_vec(), SetOptions::default()).unwrap();
            let mut rounds = Vec::new();
            loop {
                let n = t.purge_expired(4).unwrap();
                rounds.push(n);
                if n == 0 {
                    break;
                }
            }
            assert_eq!(rounds, [4, 4, 1, 0], "at most 4 per call, 9 expired in all");
            assert_eq!(t.get("a", "old0").unwrap(), Some(b"renewed".to_vec()));
            for i in 0..5 {
                assert!(t.exists("a", &format!("live{i}")).unwrap());
            }
            for i in 1..10 {
                assert!(!t.exists(["a", "b"][i % 2], &format!("old{i}")).unwrap());
            }
        }
    }

    #[test]
    fn limits_change_nothing() {
        for (t, _d) in tiers() {
            let big_key = "k".repeat(513);
            assert!(matches!(t.set("s", &big_key, vec![], SetOptions::default()), Err(Error::QuotaExceeded(_))));
            let big = vec![0u8; 16 * 1024 * 1024 + 1];
            assert!(matches!(t.set("s", "k", big.clone(), SetOptions::default()), Err(Error::QuotaExceeded(_))));
            let batch = vec![("a".to_string(), b"1".to_vec()), ("b".to_string(), big)];
            assert!(matches!(t.set_many("s", batch, SetOptions::default()), Err(Error::QuotaExceeded(_))));
            let many: Vec<String> = (0..257).map(|i| format!("k{i}")).collect();
            assert!(matches!(t.get_many("s", &many), Err(Error::QuotaExceeded(_))));
            assert!(t.list_keys("s", "", None, None).unwrap().keys.is_empty(), "nothing was written");
            assert!(matches!(t.list_keys("s", "", None, Some(1001)), Err(Error::QuotaExceeded(_))));
        }
    }

    #[test]
    fn set_many_if_not_exists_is_all_or_nothing() {
        for (t, _d) in tiers() {
            t.set("s", "b", b"old".to_vec(), SetOptions::default()).unwrap();
            let batch = vec![("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())];
            let opts = SetOptions { ttl_ms: None, if_not_exists: true };
            assert!(matches!(t.set_many("s", batch, opts), Err(Error::PreconditionFailed(_))));
            assert_eq!(t.get("s", "a").unwrap(), None);
            assert_eq!(t.get("s", "b").unwrap(), Some(b"old".to_vec()));
            let keys = vec!["a".to_string(), "b".to_string()];
            t.set_many("s", vec![("a".into(), b"1".to_vec())], SetOptions::default()).unwrap();
            assert_eq!(t.get_many("s", &keys).unwrap(), vec![Some(b"1".to_vec()), Some(b"old".to_vec())]);
            t.delete_many("s", keys.clone()).unwrap();
            assert_eq!(t.get_many("s", &keys).unwrap(), vec![None, None]);
        }
    }

    #[test]
    fn increment_counts_and_rejects_non_counters() {
        for (t, _d) in tiers() {
            assert_eq!(t.increment("s", "c", 5).unwrap(), 5);
            assert_eq!(t.increment("s", "c", -7).unwrap(), -2);
            assert_eq!(t.get("s", "c").unwrap(), Some((-2i64).to_le_bytes().to_vec()));
            t.set("s", "text", b"hello".to_vec(), SetOptions::default()).unwrap();
            assert!(matches!(t.increment("s", "text", 1), Err(Error::PreconditionFailed(_))));
            t.set("s", "max", i64::MAX.to_le_bytes().to_vec(), SetOptions::default()).unwrap();
            assert!(matches!(t.increment("s", "max", 1), Err(Error::Other(_))));
            assert_eq!(t.get("s", "max").unwrap(), Some(i64::MAX.to_le_bytes().to_vec()));
        }
    }

    #[test]
    fn decimal_increment_keeps_text_counters_and_changes_nothing_on_foreign_values() {
        for (t, _d) in tiers() {
            t.set("s", "preset", b"5".to_vec(), SetOptions::default()).unwrap();
            assert_eq!(t.increment_decimal("s", "preset", 1).unwrap(), 6);
            assert_eq!(t.increment_decimal("s", "fresh", -3).unwrap(), -3);
            assert_eq!(t.get("s", "fresh").unwrap(), Some(b"-3".to_vec()));
            // Each encoding refuses the other's counter and leaves it as it was.
            t.increment("s", "le", 7).unwrap();
            assert!(matches!(t.increment_decimal("s", "le", 1), Err(Error::PreconditionFailed(_))));
            assert_eq!(t.get("s", "le").unwrap(), Some(7i64.to_le_bytes().to_vec()));
            assert!(matches!(t.increment("s", "preset", 1), Err(Error::PreconditionFailed(_))));
            assert_eq!(t.get("s", "preset").unwrap(), Some(b"6".to_vec()));
            t.set("s", "max", i64::MAX.to_string().into_bytes(), SetOptions::default()).unwrap();
            assert!(matches!(t.increment_decimal("s", "max", 1), Err(Error::Other(_))));
            assert_eq!(t.get("s", "max").unwrap(), Some(i64::MAX.to_string().into_bytes()));
        }
    }

    #[test]
    fn cas_swaps_on_matching_version_and_reports_current_when_stale() {
        for (t, _d) in tiers() {
            assert!(matches!(t.compare_and_swap("s", "k", None, b"a".to_vec()).unwrap(), CasOutcome::Swapped(_)));
            let CasOutcome::Stale(Some(cur)) = t.compare_and_swap("s", "k", None, b"b".to_vec()).unwrap() else {
                panic!("expected stale");
            };
            assert_eq!(cur.value, b"a");
            let tok = encode_version(cur.version);
            let CasOutcome::Swapped(v2) = t.compare_and_swap("s", "k", Some(&tok), b"c".to_vec()).unwrap() else {
                panic!("expected swap");
            };
            assert_ne!(v2, cur.version);
            let CasOutcome::Stale(Some(now)) = t.compare_and_swap("s", "k", Some(&tok), b"d".to_vec()).unwrap() else {
                panic!("old token must be stale");
            };
            assert_eq!(now.value, b"c");
            assert!(matches!(
                t.compare_and_swap("s", "k", Some(b"junk"), b"e".to_vec()).unwrap(),
                CasOutcome::Stale(_)
            ));
            assert_eq!(t.get("s", "k").unwrap(), Some(b"c".to_vec()));
        }
    }

    #[test]
    fn paging_visits_every_key_once() {
        for (t, _d) in tiers() {
            for i in 0..25 {
                t.set("s", format!("p/{i:02}"), vec![], SetOptions::default()).unwrap();
            }
            t.set("s", "q", vec![], SetOptions::default()).unwrap();
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = t.list_keys("s", "p/", cursor.as_deref(), Some(10)).unwrap();
                assert!(page.keys.len() <= 10);
                seen.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let want: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn scope_policy() {
        let t = StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default())
            .with_allowed_scopes(Some(vec!["ok".into()]));
        t.open_scope("ok").unwrap();
        assert!(matches!(t.open_scope("nope"), Err(Error::AccessDenied(_))));
        assert!(matches!(t.open_scope("bad name"), Err(Error::NoSuchScope(_))));
    }

    #[test]
    fn a_transaction_across_scopes_writes_all_or_nothing() {
        for (t, _d) in tiers() {
            let (a, b) = (ScopedKey::new("one", "k"), ScopedKey::new("two", "k"));
            let put = |k: &ScopedKey, v: u8| Write::Put { key: k.clone(), value: vec![v], expires_at_ms: None };
            t.store.transact(&[], &mut |_| Ok(smallvec::smallvec![put(&a, 1), put(&b, 2)])).unwrap();
            assert_eq!((t.get("one", "k").unwrap(), t.get("two", "k").unwrap()), (Some(vec![1]), Some(vec![2])));
            let e = t
                .store
                .transact(&[a.clone(), b.clone()], &mut |current| {
                    assert_eq!(current.iter().flatten().count(), 2, "both scopes are read");
                    Err(Error::PreconditionFailed("refused".into()))
                })
                .unwrap_err();
            assert!(matches!(e, Error::PreconditionFailed(_)));
            t.store
                .transact(&[], &mut |_| Ok(smallvec::smallvec![put(&a, 3), Write::Delete { key: b.clone() }]))
                .unwrap();
            assert_eq!((t.get("one", "k").unwrap(), t.get("two", "k").unwrap()), (Some(vec![3]), None));
        }
    }

    #[test]
    fn concurrent_durable_writers_share_flushes_and_every_write_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Arc::new(RedbStore::open(&path).unwrap());
        let t = StateTier::new(store.clone(), StateLimits::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        t.increment("s", "n", 1).unwrap();
                    }
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
        assert!(store.flushes() < 400, "{} flushes for 400 commits", store.flushes());
        drop((t, store));
        let t = StateTier::new(Arc::new(RedbStore::open(&path).unwrap()), StateLimits::default());
        assert_eq!(t.increment("s", "n", 0).unwrap(), 400);
    }

    #[test]
    fn redb_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let v1 = {
            let t = StateTier::new(Arc::new(RedbStore::open(&path).unwrap()), StateLimits::default());
            t.set("s", "k", b"kept".to_vec(), SetOptions::default()).unwrap()
        };
        let t = StateTier::new(Arc::new(RedbStore::open(&path).unwrap()), StateLimits::default());
        let e = t.get_entry("s", "k").unwrap().unwrap();
        assert_eq!(e.value, b"kept");
        let v2 = t.set("s", "k", b"new".to_vec(), SetOptions::default()).unwrap();
        assert!(v2 > v1, "versions keep increasing across restarts");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Cas { key: u8, use_current: bool, value: u8 },
        Set { key: u8, value: u8 },
        Delete { key: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, any::<bool>(), any::<u8>()).prop_map(|(key, use_current, value)| Op::Cas {
                key,
                use_current,
                value
            }),
            (0u8..3, any::<u8>()).prop_map(|(key, value)| Op::Set { key, value }),
            (0u8..3).prop_map(|key| Op::Delete { key }),
        ]
    }

    proptest! {
        /// CAS against a model: swaps exactly when the token is current (or the
        /// key is absent and no token is given), and versions never repeat.
        #[test]
        fn cas_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
            let t = StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default());
            let mut model: std::collections::HashMap<u8, (u8, u64)> = Default::default();
            let mut seen_versions = std::collections::HashSet::new();
            for op in ops {
                match op {
                    Op::Set { key, value } => {
                        let v = t.set("s", key.to_string(), vec![value], SetOptions::default()).unwrap();
                        prop_assert!(seen_versions.insert(v));
                        model.insert(key, (value, v));
                    }
                    Op::Delete { key } => {
                        t.delete("s", &key.to_string()).unwrap();
                        model.remove(&key);
                    }
                    Op::Cas { key, use_current, value } => {
                        let cur = model.get(&key).copied();
                        let token = if use_current { cur.map(|(_, v)| encode_version(v)) } else { Some(encode_version(u64::MAX)) };
                        let out = t.compare_and_swap("s", &key.to_string(), token.as_deref(), vec![value]).unwrap();
                        let should_swap = match (&token, cur) {
                            (None, None) => true,
                            (Some(_), Some(_)) => use_current,
                            _ => false,
                        };
                        match out {
                            CasOutcome::Swapped(v) => {
                                prop_assert!(should_swap);
                                prop_assert!(seen_versions.insert(v));
                                model.insert(key, (value, v));
                            }
                            CasOutcome::Stale(e) => {
                                prop_assert!(!should_swap);
                                prop_assert_eq!(e.map(|e| (e.value[0], e.version)), cur);
                            }
                        }
                    }
                }
                for k in 0u8..3 {
                    let got = t.get_entry("s", &k.to_string()).unwrap().map(|e| (e.value[0], e.version));
                    prop_assert_eq!(got, model.get(&k).copied());
                }
            }
        }
    }
}
