//! Storage quotas per scope (issue 13 §3): the most bytes (keys plus
//! values) and keys a scope of the host's store may hold, configured as
//! `[limits.scope_quotas.<scope>]`. A write that would take a scope over its
//! quota fails with `quota-exceeded` and writes nothing.
//!
//! Usage is counted by [`crate::state::StateTier`]: a scope's usage is
//! scanned once (live entries), then every write to it changes it by its
//! exact delta inside the write's own transaction, so concurrent writers
//! cannot overrun it. Entries that expire still count until the background
//! purge removes them; after each purge the usage is scanned again. This
//! module is the arithmetic, apart from I/O.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A scope's quota; an absent bound is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeQuota {
    /// Most bytes of keys and values.
    pub max_bytes: Option<u64>,
    /// Most keys.
    pub max_keys: Option<u64>,
}

/// What a scope holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of keys and values.
    pub bytes: u64,
    /// Keys.
    pub keys: u64,
}

/// The size an entry of `key` with a value of `value_len` bytes counts for.
pub fn entry_bytes(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

impl Usage {
    /// Replace an entry of `old` bytes (absent: `None`) by one of `new`
    /// bytes (deleted: `None`).
    pub fn change(self, old: Option<u64>, new: Option<u64>) -> Usage {
        let bytes = self.bytes.saturating_sub(old.unwrap_or(0)).saturating_add(new.unwrap_or(0));
        let keys = match (old, new) {
            (None, Some(_)) => self.keys.saturating_add(1),
            (Some(_), None) => self.keys.saturating_sub(1),
            _ => self.keys,
        };
        Usage { bytes, keys }
    }

    /// `Ok` when `self` fits `quota` or does not grow past `before` (a write
    /// that shrinks an over-quota scope is let through).
    pub fn check(self, before: Usage, quota: &ScopeQuota, scope: &str) -> Result<()> {
        if let Some(max) = quota.max_bytes
            && self.bytes > max
            && self.bytes > before.bytes
        {
            return Err(Error::QuotaExceeded(format!(
                "scope `{scope}` would hold {} bytes; its quota is {max}",
                self.bytes
            )));
        }
        if let Some(max) = quota.max_keys
            && self.keys > max
            && self.keys > before.keys
        {
            return Err(Error::QuotaExceeded(format!(
                "scope `{scope}` would hold {} keys; its quota is {max}",
                self.keys
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_follows_puts_overwrites_and_deletes() {
        let u = Usage::default().change(None, Some(10)).change(None, Some(5));
        assert_eq!(u, Usage { bytes: 15, keys: 2 });
        let u = u.change(Some(10), Some(3));
        assert_eq!(u, Usage { bytes: 8, keys: 2 }, "an overwrite changes bytes, not keys");
        let u = u.change(Some(5), None).change(None, None);
        assert_eq!(u, Usage { bytes: 3, keys: 1 });
    }

    #[test]
    fn growth_past_a_bound_is_refused_and_shrinking_is_not() {
        let q = ScopeQuota { max_bytes: Some(10), max_keys: Some(2) };
        let before = Usage { bytes: 8, keys: 2 };
        assert!(before.change(None, Some(1)).check(before, &q, "s").is_err(), "a third key");
        assert!(before.change(Some(4), Some(7)).check(before, &q, "s").is_err(), "11 bytes");
        assert!(before.change(Some(4), Some(6)).check(before, &q, "s").is_ok(), "10 bytes");
        let over = Usage { bytes: 50, keys: 9 };
        assert!(over.change(Some(10), None).check(over, &q, "s").is_ok(), "shrinking an over-quota scope");
        assert!(over.change(None, Some(1)).check(over, &ScopeQuota::default(), "s").is_ok(), "no bounds");
    }
}
