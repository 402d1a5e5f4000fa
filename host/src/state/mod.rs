//! The local state tier: a [`StateStore`] backend behind the [`StateTier`],
//! which owns all semantics (limits, TTL, counters, CAS) so that every backend
//! behaves the same.

mod encoding;
pub mod history;
pub mod lattice;
mod limits;
pub mod locks;
mod memory;
pub mod quota;
mod redb_store;
mod redis_store;
pub mod replica;
mod sandbox;
mod staged;
mod tier;
mod txn;

pub use encoding::{
    decode_counter, decode_decimal_counter, decode_version, encode_counter, encode_decimal_counter, encode_version,
};
pub use limits::StateLimits;
pub use memory::MemoryStore;
pub use redb_store::RedbStore;
pub use redis_store::{RedisConfig, RedisStore};
pub use sandbox::{Sandbox, Sandboxes};
pub use staged::{StagedStore, StagedWrites};
pub use tier::{CasOutcome, KeyPage, SetOptions, StateTier};
pub use txn::{PreparedPart, TXN_SCOPE};

use crate::error::Result;

/// A stored value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The version the store gave this write; unique per store, increasing.
    pub version: u64,
    /// When the entry expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    /// Whether the entry is still readable at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|t| now_ms < t)
    }
}

/// A key in a scope: what a transaction reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ScopedKey {
    /// The scope.
    pub scope: String,
    /// The key within it.
    pub key: String,
}

impl ScopedKey {
    /// `key` in `scope`.
    pub fn new(scope: impl Into<String>, key: impl Into<String>) -> ScopedKey {
        ScopedKey { scope: scope.into(), key: key.into() }
    }

    /// Every key of `keys`, in `scope`.
    pub fn all_in(scope: &str, keys: &[String]) -> Vec<ScopedKey> {
        keys.iter().map(|k| ScopedKey::new(scope, k.clone())).collect()
    }
}

/// One mutation decided inside [`StateStore::transact`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Write {
    /// Store `value` under `key` with a fresh version.
    Put {
        /// The key.
        key: ScopedKey,
        /// The value.
        value: Vec<u8>,
        /// Expiry time in milliseconds since the Unix epoch.
        expires_at_ms: Option<u64>,
    },
    /// Remove `key` (absent keys are fine).
    Delete {
        /// The key.
        key: ScopedKey,
    },
}

impl Write {
    /// The key it writes.
    pub fn key(&self) -> &ScopedKey {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }
}

/// The writes a transaction decides: one is held inline (most transactions
/// write one key; an allocation costs as much as a small write), more on
/// the heap.
pub type Writes = smallvec::SmallVec<[Write; 1]>;

/// The versions a transaction's puts were given, in the order of its writes.
pub type Versions = smallvec::SmallVec<[u64; 1]>;

/// Decides the writes of a transaction from the current entries of its keys.
/// Returning an error aborts the transaction with nothing written.
pub type Decide<'a> = dyn FnMut(&[Option<Entry>]) -> Result<Writes> + 'a;

/// A storage backend: raw entries per (scope, key), and atomic transactions.
///
/// Backends store what they are told; expiry filtering, limits and the meaning
/// of counters and versions live in [`StateTier`]. A backend must make
/// [`StateStore::transact`] atomic (all writes or none) and isolated
/// (serializable with every other call).
pub trait StateStore: Send + Sync {
    /// The raw entry under `key` (possibly expired).
    fn get(&self, scope: &str, key: &str) -> Result<Option<Entry>>;

    /// The raw entries under `keys`, read from one snapshot.
    fn get_many(&self, scope: &str, keys: &[String]) -> Result<Vec<Option<Entry>>>;

    /// Up to `limit` keys that start with `prefix`, are greater than `after`
    /// and are live at `now_ms`, ascending; plus whether more keys may follow.
    fn scan(
        &self,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<String>, bool)>;

    /// Read the entries of `keys` (in any scopes), let `decide` choose
    /// writes (in any scopes), and apply them atomically: all or none, and
    /// durable, as the backend promises, before it returns. Returns the
    /// versions given to the `Put` writes, in order.
    fn transact(&self, keys: &[ScopedKey], decide: &mut Decide<'_>) -> Result<Versions>;

    /// Delete at most `limit` entries expired at `now_ms`, without holding
    /// up other calls for longer than that work; returns how many were
    /// deleted (`limit` means more may remain).
    fn purge_expired(&self, now_ms: u64, limit: usize) -> Result<usize>;
}

/// Scopes whose names start with this prefix (in any ASCII case) belong to
/// the host (workflow hand-off state lives in `databelt.runs`). Functions
/// cannot open them; the host and its peers always can, whatever a
/// function's allowlist says.
pub use databelt_types::RESERVED_SCOPE_PREFIX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let e = Entry { value: vec![], version: 1, expires_at_ms: Some(10) };
        assert!(e.is_live(9));
        assert!(!e.is_live(10));
        assert!(Entry { expires_at_ms: None, ..e }.is_live(u64::MAX));
    }
}
