//! Run capabilities (issue 13 §3): a secret the runner derives for each run
//! and sends with every step request and clean-up of that run
//! ([`CAPABILITY_HEADER`]). A host binds a run to the digest of the first
//! capability it sees for it and refuses a later request for the run with
//! another one (403), so a client or node that learns a run id cannot run
//! steps in, read, or delete someone else's run.
//!
//! Bindings live as long as the run is active on the host: a clean-up
//! (`DELETE /workflow/v1/runs/{id}`) ends one, and one idle longer than the
//! host's `max_sandbox_idle_ms` is forgotten. At most [`MAX_BOUND_RUNS`] are
//! held; a new run beyond that is refused with `unavailable`.
//!
//! A host that got a run's capability with a step carries it on in its
//! peer requests for the run ([`crate::peer::PeerClient::carry`]), and the
//! peer routes demand it for run state (the `databelt.runs` scope and run
//! sandboxes), from the same bindings.
//!
//! Limit: the binding is trust on first use (docs/security.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use databelt_host::{Error, Result};
use databelt_types::RunId;
use sha2::Digest as _;

/// The header carrying a run's capability.
pub const CAPABILITY_HEADER: &str = "x-databelt-run-capability";
/// Most runs a host holds a capability for at once.
pub const MAX_BOUND_RUNS: usize = 100_000;

/// The capability of `run` for a runner whose secret is `secret`: hex of
/// SHA-256(secret ‖ run id). Runners keep their secret to themselves.
pub fn derive(secret: &[u8; 32], run: &RunId) -> String {
    let mut h = sha2::Sha256::new();
    h.update(secret);
    h.update(run.as_str().as_bytes());
    hex::encode(h.finalize())
}

/// The runs a host has bound to a capability.
#[derive(Debug, Default)]
pub struct RunCapabilities {
    bound: Mutex<HashMap<RunId, ([u8; 32], Instant)>>,
}

impl RunCapabilities {
    /// Check `capability` for `run` at `now`, binding the run on first use;
    /// bindings idle longer than `idle` are dropped first.
    pub fn check(&self, run: &RunId, capability: Option<&str>, idle: Duration, now: Instant) -> Result<()> {
        let capability = capability.ok_or_else(|| {
            Error::Unauthenticated(format!(
                "a request for run `{run}` must carry its capability (`{CAPABILITY_HEADER}`)"
            ))
        })?;
        let digest: [u8; 32] = sha2::Sha256::digest(capability.as_bytes()).into();
        let mut bound = self.bound.lock().map_err(|_| Error::Runtime("run capability lock poisoned".into()))?;
        if let Some((known, last)) = bound.get_mut(run)
            && now.saturating_duration_since(*last) <= idle
        {
            if *known != digest {
                return Err(Error::AccessDenied(format!("wrong capability for run `{run}`")));
            }
            *last = now;
            return Ok(());
        }
        if bound.len() >= MAX_BOUND_RUNS {
            bound.retain(|_, (_, last)| now.saturating_duration_since(*last) <= idle);
            if bound.len() >= MAX_BOUND_RUNS {
                return Err(Error::Unavailable(format!("this host holds {MAX_BOUND_RUNS} active runs")));
            }
        }
        bound.insert(run.clone(), (digest, now));
        Ok(())
    }

    /// Forget `run` (its clean-up).
    pub fn forget(&self, run: &RunId) {
        if let Ok(mut bound) = self.bound.lock() {
            bound.remove(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_capability_binds_the_run_until_it_is_forgotten_or_idle() {
        let caps = RunCapabilities::default();
        let run = RunId::new("r1").unwrap_or_else(|e| panic!("{e}"));
        let idle = Duration::from_secs(60);
        let t0 = Instant::now();
        assert!(caps.check(&run, None, idle, t0).is_err(), "no capability");
        caps.check(&run, Some("a"), idle, t0).unwrap_or_else(|e| panic!("{e}"));
        caps.check(&run, Some("a"), idle, t0).unwrap_or_else(|e| panic!("{e}"));
        let e = caps.check(&run, Some("b"), idle, t0).unwrap_err();
        assert_eq!(e.kind(), databelt_host::ErrorKind::AccessDenied);
        caps.forget(&run);
        caps.check(&run, Some("b"), idle, t0).unwrap_or_else(|e| panic!("{e}"));
        let later = t0 + Duration::from_secs(61);
        caps.check(&run, Some("c"), idle, later).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn derived_capabilities_differ_per_run_and_secret() {
        let r1 = RunId::new("r1").unwrap_or_else(|e| panic!("{e}"));
        let r2 = RunId::new("r2").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(derive(&[0; 32], &r1), derive(&[0; 32], &r2));
        assert_ne!(derive(&[0; 32], &r1), derive(&[1; 32], &r1));
        assert_eq!(derive(&[0; 32], &r1).len(), 64);
    }
}
