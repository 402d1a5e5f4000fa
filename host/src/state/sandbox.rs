//! Fusion sandboxes: one in-memory state tier per workflow run on a host.
//! The steps of a run that execute on the same host hand states to each
//! other here — no store round trip, no copy for the last reader — and the
//! run's `context.run-state` scope lives here. A sandbox is visible only
//! through its run id and is dropped when the run ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use databelt_types::RunId;

use crate::error::{Error, Result};
use crate::state::{Decide, Entry, MemoryStore, ScopedKey, StateLimits, StateStore, StateTier, Versions};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A memory store that refuses writes taking it over `cap` value bytes (the
/// refused transaction writes nothing).
struct CappedStore {
    inner: MemoryStore,
    used: AtomicU64,
    cap: u64,
}

impl StateStore for CappedStore {
    fn get(&self, scope: &str, key: &str) -> Result<Option<Entry>> {
        self.inner.get(scope, key)
    }

    fn get_many(&self, scope: &str, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        self.inner.get_many(scope, keys)
    }

    fn scan(
        &self,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<String>, bool)> {
        self.inner.scan(scope, prefix, after, limit, now_ms)
    }

    fn transact(&self, keys: &[ScopedKey], decide: &mut Decide<'_>) -> Result<Versions> {
        let mut check = |added: u64, freed: u64| -> Result<()> {
            let after = (self.used.load(Ordering::SeqCst) + added).saturating_sub(freed);
            if added > freed && after > self.cap {
                return Err(Error::QuotaExceeded(format!(
                    "the run's sandbox would hold {after} bytes; the limit is {} (limits.max_sandbox_bytes)",
                    self.cap
                )));
            }
            self.used.store(after, Ordering::SeqCst);
            Ok(())
        };
        self.inner.transact_checked(keys, decide, Some(&mut check))
    }

    fn purge_expired(&self, now_ms: u64, limit: usize) -> Result<usize> {
        let n = self.inner.purge_expired(now_ms, limit)?;
        if n > 0 {
            self.used.store(self.inner.value_bytes()?, Ordering::SeqCst);
        }
        Ok(n)
    }
}

/// One run's sandbox.
#[derive(Clone)]
pub struct Sandbox {
    store: Arc<CappedStore>,
    tier: StateTier,
    touched_ms: Arc<AtomicU64>,
    /// How long the sandbox may stay unused before the sweep drops it, ms;
    /// fixed when it is created.
    idle_ttl_ms: u64,
}

impl Sandbox {
    fn new(limits: StateLimits, idle_ttl_ms: u64) -> Sandbox {
        let cap = limits.max_sandbox_bytes;
        let store = Arc::new(CappedStore { inner: MemoryStore::new(), used: AtomicU64::new(0), cap });
        Sandbox {
            tier: StateTier::new(store.clone(), limits),
            store,
            touched_ms: Arc::new(AtomicU64::new(now_ms())),
            idle_ttl_ms,
        }
    }

    /// A sandbox of its own for one invocation that is not part of a
    /// workflow run (its run scope lives and dies with the invocation): not
    /// registered with any [`Sandboxes`], so nothing else can reach it.
    pub fn ephemeral(limits: StateLimits) -> Sandbox {
        let ttl = limits.max_sandbox_idle_ms;
        Sandbox::new(limits, ttl)
    }

    /// How long it may stay unused before the sweep drops it, ms.
    pub fn idle_ttl_ms(&self) -> u64 {
        self.idle_ttl_ms
    }

    /// The sandbox as a state tier (same limits and semantics as the host's).
    pub fn tier(&self) -> &StateTier {
        &self.tier
    }

    /// Remove `scope/key` and return its bytes without copying them; `None`
    /// when absent or expired.
    pub fn take(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let taken = self.store.inner.take(scope, key)?;
        if let Some(e) = &taken {
            let _ = self
                .store
                .used
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| Some(u.saturating_sub(e.value.len() as u64)));
        }
        Ok(taken.filter(|e| e.is_live(now_ms())).map(|e| e.value))
    }

    /// Bytes held.
    pub fn value_bytes(&self) -> Result<u64> {
        self.store.inner.value_bytes()
    }

    /// States held.
    pub fn len(&self) -> Result<u64> {
        self.store.inner.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// The sandboxes of the runs active on one host. Cheap to clone.
#[derive(Clone)]
pub struct Sandboxes {
    runs: Arc<Mutex<HashMap<RunId, Sandbox>>>,
    limits: StateLimits,
}

fn poisoned<T>(_: T) -> Error {
    Error::storage_msg("sandbox registry lock poisoned by a panic")
}

impl Sandboxes {
    /// No sandboxes yet; each one created will enforce `limits`.
    pub fn new(limits: StateLimits) -> Sandboxes {
        Sandboxes { runs: Arc::new(Mutex::new(HashMap::new())), limits }
    }

    /// The sandbox of `run_id`, created if it does not exist with the
    /// longest idle TTL the limits allow (`limits.max_sandbox_idle_ms`).
    pub fn open(&self, run_id: &RunId) -> Result<Sandbox> {
        self.open_with_ttl(run_id, self.limits.max_sandbox_idle_ms)
    }

    /// The sandbox of `run_id`; when this creates it, it may stay unused for
    /// `idle_ttl_ms` (at most `limits.max_sandbox_idle_ms`) before
    /// [`Sandboxes::sweep`] drops it. An existing sandbox keeps its own TTL:
    /// no later request changes it, so a request for one run can never
    /// shorten another run's sandbox.
    pub fn open_with_ttl(&self, run_id: &RunId, idle_ttl_ms: u64) -> Result<Sandbox> {
        let ttl = idle_ttl_ms.min(self.limits.max_sandbox_idle_ms);
        let mut runs = self.runs.lock().map_err(poisoned)?;
        let sandbox = runs.entry(run_id.clone()).or_insert_with(|| Sandbox::new(self.limits.clone(), ttl)).clone();
        sandbox.touched_ms.store(now_ms(), Ordering::SeqCst);
        Ok(sandbox)
    }

    /// The sandbox of `run_id`, if it exists.
    pub fn get(&self, run_id: &RunId) -> Result<Option<Sandbox>> {
        let sandbox = self.runs.lock().map_err(poisoned)?.get(run_id).cloned();
        if let Some(s) = &sandbox {
            s.touched_ms.store(now_ms(), Ordering::SeqCst);
        }
        Ok(sandbox)
    }

    /// Drop every sandbox unused for longer than its own idle TTL (a run
    /// whose garbage collection never came); returns the run ids dropped.
    /// The host calls this on a timer; nothing a request says changes when a
    /// sandbox goes.
    pub fn sweep(&self) -> Result<Vec<RunId>> {
        let now = now_ms();
        let mut runs = self.runs.lock().map_err(poisoned)?;
        let idle: Vec<RunId> = runs
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.touched_ms.load(Ordering::SeqCst)) > s.idle_ttl_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            runs.remove(id);
        }
        Ok(idle)
    }

    /// Drop the sandbox of `run_id`; returns the bytes it held.
    pub fn drop_run(&self, run_id: &RunId) -> Result<u64> {
        let gone = self.runs.lock().map_err(poisoned)?.remove(run_id);
        match gone {
            Some(s) => s.value_bytes(),
            None => Ok(0),
        }
    }

    /// Run ids with a sandbox here.
    pub fn runs(&self) -> Result<Vec<RunId>> {
        let mut ids: Vec<RunId> = self.runs.lock().map_err(poisoned)?.keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SetOptions;

    fn run(id: &str) -> RunId {
        RunId::new(id).unwrap()
    }

    #[test]
    fn runs_are_isolated_and_dropped() {
        let boxes = Sandboxes::new(StateLimits::default());
        let a = boxes.open(&run("run-a")).unwrap();
        a.tier().set("s", "k", b"only a".to_vec(), SetOptions::default()).unwrap();
        let b = boxes.open(&run("run-b")).unwrap();
        assert_eq!(b.tier().get("s", "k").unwrap(), None, "run b cannot see run a's state");
        assert_eq!(boxes.open(&run("run-a")).unwrap().tier().get("s", "k").unwrap(), Some(b"only a".to_vec()));
        assert_eq!(boxes.runs().unwrap(), ["run-a", "run-b"]);
        assert_eq!(boxes.drop_run(&run("run-a")).unwrap(), 6);
        assert!(boxes.get(&run("run-a")).unwrap().is_none());
        assert_eq!(
            boxes.open(&run("run-a")).unwrap().tier().get("s", "k").unwrap(),
            None,
            "a new sandbox starts empty"
        );
    }

    #[test]
    fn a_sandbox_over_its_byte_limit_refuses_the_write_and_keeps_what_it_had() {
        let limits = StateLimits { max_sandbox_bytes: 1000, ..StateLimits::default() };
        let boxes = Sandboxes::new(limits);
        let s = boxes.open(&run("r")).unwrap();
        s.tier().set("s", "a", vec![1; 600], SetOptions::default()).unwrap();
        let e = s.tier().set("s", "b", vec![2; 600], SetOptions::default()).unwrap_err();
        assert!(matches!(e, Error::QuotaExceeded(_)), "{e}");
        assert_eq!(s.tier().get("s", "b").unwrap(), None);
        // Replacing a value counts only the difference; freeing makes room.
        s.tier().set("s", "a", vec![3; 900], SetOptions::default()).unwrap();
        assert!(s.take("s", "a").unwrap().is_some());
        s.tier().set("s", "b", vec![2; 1000], SetOptions::default()).unwrap();
        let e = s.tier().set_many("s", vec![("c".into(), vec![0; 1])], SetOptions::default()).unwrap_err();
        assert!(matches!(e, Error::QuotaExceeded(_)));
        s.tier().delete("s", "b").unwrap();
        s.tier().set("s", "c", vec![0; 1000], SetOptions::default()).unwrap();
    }

    #[test]
    fn idle_sandboxes_are_swept_on_their_own_ttl() {
        let boxes = Sandboxes::new(StateLimits { max_sandbox_idle_ms: 60_000, ..StateLimits::default() });
        boxes.open_with_ttl(&run("old"), 20).unwrap();
        boxes.open_with_ttl(&run("long"), 10_000).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        boxes.open_with_ttl(&run("new"), 20).unwrap();
        // A later open with a shorter TTL does not change an existing sandbox's.
        boxes.open_with_ttl(&run("long"), 0).unwrap();
        assert_eq!(boxes.sweep().unwrap(), ["old"]);
        assert_eq!(boxes.runs().unwrap(), ["long", "new"]);
        assert_eq!(boxes.get(&run("long")).unwrap().map(|s| s.idle_ttl_ms()), Some(10_000));
        let capped = boxes.open_with_ttl(&run("huge"), u64::MAX).unwrap();
        assert_eq!(capped.idle_ttl_ms(), 60_000, "no sandbox outlives the host's limit");
    }

    #[test]
    fn take_moves_the_bytes_out() {
        let boxes = Sandboxes::new(StateLimits::default());
        let s = boxes.open(&run("r")).unwrap();
        let value = vec![7u8; 1 << 20];
        let ptr = value.as_ptr();
        s.tier().set("s", "k", value, SetOptions::default()).unwrap();
        let taken = s.take("s", "k").unwrap().unwrap();
        assert_eq!(taken.as_ptr(), ptr, "the same buffer, not a copy");
        assert_eq!(s.take("s", "k").unwrap(), None);
    }
}
