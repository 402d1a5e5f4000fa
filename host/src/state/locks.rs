//! The lock table of prepared transactions: which keys a prepared part of
//! a cross-step transaction holds, shared or exclusive, until its
//! transaction is decided. Pure logic; the durable truth is the prepared
//! records (see [`crate::state::StateTier::prepare_staged`]), from which the
//! table is rebuilt when a host starts.
//!
//! Locks are never waited for: a request that meets a conflicting hold is
//! refused at once with `conflict` (no-wait), so no cycle of waiters, hence
//! no deadlock, can form.

use std::collections::HashMap;

use super::ScopedKey;
use crate::error::{Error, Result};

/// One part's hold on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    txn: String,
    part: String,
    exclusive: bool,
}

/// Who asks for access to keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// A plain state call or a step outside any transaction: may read a
    /// key held shared, must not write a held key, nor read one held
    /// exclusively when it commits what it read (`validate_reads`).
    Plain {
        /// Whether the read keys are validated (a step's reads): then an
        /// exclusive hold on one is a conflict.
        validate_reads: bool,
    },
    /// A part of transaction `txn`: its own holds never conflict.
    Txn(&'a str),
}

/// Keys held by prepared transaction parts.
#[derive(Debug, Default)]
pub struct LockTable {
    holds: HashMap<ScopedKey, Vec<Hold>>,
}

impl LockTable {
    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.holds.len()
    }

    /// Check that `access` may read `read` and write `written`; the error
    /// names the first key held against it.
    pub fn check<'k>(
        &self,
        access: Access<'_>,
        read: &[ScopedKey],
        written: impl IntoIterator<Item = &'k ScopedKey>,
    ) -> Result<()> {
        if self.holds.is_empty() {
            return Ok(());
        }
        let foreign = |h: &Hold| match access {
            Access::Txn(txn) => h.txn != txn,
            Access::Plain { .. } => true,
        };
        for key in written {
            if let Some(h) = self.holds.get(key).and_then(|hs| hs.iter().find(|h| foreign(h))) {
                return Err(held(key, h));
            }
        }
        let reads_checked = !matches!(access, Access::Plain { validate_reads: false });
        if reads_checked {
            for key in read {
                if let Some(h) = self.holds.get(key).and_then(|hs| hs.iter().find(|h| h.exclusive && foreign(h))) {
                    return Err(held(key, h));
                }
            }
        } else {
            // A plain read-modify-write (increment, compare-and-swap) writes
            // the key it reads.
            for key in read {
                if let Some(h) = self.holds.get(key).and_then(|hs| hs.iter().find(|h| foreign(h))) {
                    return Err(held(key, h));
                }
            }
        }
        Ok(())
    }

    /// Let part `part` of `txn` hold `read` shared and `written` exclusive.
    /// Call after [`Self::check`] with `Access::Txn(txn)` passed.
    pub fn acquire(&mut self, txn: &str, part: &str, read: &[ScopedKey], written: &[ScopedKey]) {
        for (keys, exclusive) in [(written, true), (read, false)] {
            for key in keys {
                let holds = self.holds.entry(key.clone()).or_default();
                let hold = Hold { txn: txn.to_string(), part: part.to_string(), exclusive };
                if !holds.contains(&hold) {
                    holds.push(hold);
                }
            }
        }
    }

    /// Drop every hold of `txn` (all its parts when `part` is `None`).
    pub fn release(&mut self, txn: &str, part: Option<&str>) {
        self.holds.retain(|_, holds| {
            holds.retain(|h| !(h.txn == txn && part.is_none_or(|p| h.part == p)));
            !holds.is_empty()
        });
    }
}

fn held(key: &ScopedKey, h: &Hold) -> Error {
    Error::Conflict(format!(
        "`{}/{}` is {} by transaction `{}`, prepared and not yet decided",
        key.scope,
        key.key,
        if h.exclusive { "written" } else { "read" },
        h.txn
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> ScopedKey {
        ScopedKey::new("s", s)
    }

    #[test]
    fn a_write_hold_excludes_other_writers_and_validated_readers_but_not_plain_readers() {
        let mut t = LockTable::default();
        t.acquire("t1", "a", &[k("r")], &[k("w")]);
        let plain_step = Access::Plain { validate_reads: true };
        assert!(t.check(plain_step, &[k("w")], &[]).is_err(), "a step reading a key being written conflicts");
        assert!(t.check(plain_step, &[k("r")], &[]).is_ok(), "shared read holds let readers through");
        assert!(t.check(plain_step, &[], &[k("r")]).is_err(), "nobody writes a key a transaction read");
        assert!(t.check(Access::Plain { validate_reads: false }, &[k("r")], &[]).is_err(), "read-modify-write");
        assert!(t.check(Access::Txn("t2"), &[k("r")], &[]).is_ok());
        assert!(t.check(Access::Txn("t2"), &[k("w")], &[]).is_err());
        assert!(t.check(Access::Txn("t1"), &[k("w")], &[k("w"), k("r")]).is_ok(), "own holds never conflict");
        let e = t.check(Access::Txn("t2"), &[], &[k("w")]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        assert!(e.to_string().contains("s/w") && e.to_string().contains("t1"), "{e}");
    }

    #[test]
    fn release_drops_one_part_or_the_whole_transaction_and_nothing_else() {
        let mut t = LockTable::default();
        t.acquire("t1", "a", &[], &[k("x")]);
        t.acquire("t1", "b", &[], &[k("y")]);
        t.acquire("t2", "a", &[k("z")], &[]);
        t.release("t1", Some("a"));
        assert!(t.check(Access::Txn("t3"), &[], &[k("x")]).is_ok());
        assert!(t.check(Access::Txn("t3"), &[], &[k("y")]).is_err());
        t.release("t1", None);
        assert_eq!(t.len(), 1);
        t.release("t2", None);
        assert!(t.is_empty());
    }
}
