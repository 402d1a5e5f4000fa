//! Fusion sandboxes: one in-memory state tier per workflow run on a host.
//! The steps of a run that execute on the same host hand states to each
//! other here — no store round trip, no copy for the last reader — and the
//! run's `context.run-state` scope lives here. A sandbox is visible only
//! through its run id and is dropped when the run ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::StateLimits;
use crate::error::{Error, Result};
use crate::state::{MemoryStore, StateTier};

/// One run's sandbox.
#[derive(Clone)]
pub struct Sandbox {
    store: Arc<MemoryStore>,
    tier: StateTier,
}

impl Sandbox {
    fn new(limits: StateLimits) -> Sandbox {
        let store = Arc::new(MemoryStore::new());
        Sandbox { tier: StateTier::new(store.clone(), limits), store }
    }

    /// The sandbox as a state tier (same limits and semantics as the host's).
    pub fn tier(&self) -> &StateTier {
        &self.tier
    }

    /// Remove `scope/key` and return its bytes without copying them; `None`
    /// when absent or expired.
    pub fn take(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(self.store.take(scope, key)?.filter(|e| e.is_live(now)).map(|e| e.value))
    }

    /// Bytes held.
    pub fn value_bytes(&self) -> Result<u64> {
        self.store.value_bytes()
    }

    /// States held.
    pub fn len(&self) -> Result<u64> {
        self.store.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// The sandboxes of the runs active on one host. Cheap to clone.
#[derive(Clone)]
pub struct Sandboxes {
    runs: Arc<Mutex<HashMap<String, Sandbox>>>,
    limits: StateLimits,
}

fn poisoned<T>(_: T) -> Error {
    Error::Storage("sandbox registry lock poisoned by a panic".into())
}

impl Sandboxes {
    /// No sandboxes yet; each one created will enforce `limits`.
    pub fn new(limits: StateLimits) -> Sandboxes {
        Sandboxes { runs: Arc::new(Mutex::new(HashMap::new())), limits }
    }

    /// The sandbox of `run_id`, created if it does not exist.
    pub fn open(&self, run_id: &str) -> Result<Sandbox> {
        let mut runs = self.runs.lock().map_err(poisoned)?;
        Ok(runs.entry(run_id.to_string()).or_insert_with(|| Sandbox::new(self.limits.clone())).clone())
    }

    /// The sandbox of `run_id`, if it exists.
    pub fn get(&self, run_id: &str) -> Result<Option<Sandbox>> {
        Ok(self.runs.lock().map_err(poisoned)?.get(run_id).cloned())
    }

    /// Drop the sandbox of `run_id`; returns the bytes it held.
    pub fn drop_run(&self, run_id: &str) -> Result<u64> {
        let gone = self.runs.lock().map_err(poisoned)?.remove(run_id);
        match gone {
            Some(s) => s.value_bytes(),
            None => Ok(0),
        }
    }

    /// Run ids with a sandbox here.
    pub fn runs(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self.runs.lock().map_err(poisoned)?.keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SetOptions;

    #[test]
    fn runs_are_isolated_and_dropped() {
        let boxes = Sandboxes::new(StateLimits::default());
        let a = boxes.open("run-a").unwrap();
        a.tier().set("s", "k", b"only a".to_vec(), SetOptions::default()).unwrap();
        let b = boxes.open("run-b").unwrap();
        assert_eq!(b.tier().get("s", "k").unwrap(), None, "run b cannot see run a's state");
        assert_eq!(boxes.open("run-a").unwrap().tier().get("s", "k").unwrap(), Some(b"only a".to_vec()));
        assert_eq!(boxes.runs().unwrap(), ["run-a", "run-b"]);
        assert_eq!(boxes.drop_run("run-a").unwrap(), 6);
        assert!(boxes.get("run-a").unwrap().is_none());
        assert_eq!(boxes.open("run-a").unwrap().tier().get("s", "k").unwrap(), None, "a new sandbox starts empty");
    }

    #[test]
    fn take_moves_the_bytes_out() {
        let boxes = Sandboxes::new(StateLimits::default());
        let s = boxes.open("r").unwrap();
        let value = vec![7u8; 1 << 20];
        let ptr = value.as_ptr();
        s.tier().set("s", "k", value, SetOptions::default()).unwrap();
        let taken = s.take("s", "k").unwrap().unwrap();
        assert_eq!(taken.as_ptr(), ptr, "the same buffer, not a copy");
        assert_eq!(s.take("s", "k").unwrap(), None);
    }
}
