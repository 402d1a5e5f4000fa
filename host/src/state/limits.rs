//! The limits of the state tier: owned by the state module, embedded in the
//! host configuration as its `[limits]` table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::quota::ScopeQuota;

/// Limits applied to state calls. Every limit is checked before anything is
/// written; a call over a limit fails with `quota-exceeded` and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateLimits {
    /// Largest key, in bytes of UTF-8. Default 512.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 16 MiB.
    pub max_value_bytes: usize,
    /// Most keys or entries in one `get-many`, `set-many` or `delete-many`.
    /// Default 256.
    pub max_batch_keys: usize,
    /// Page size of `list-keys` when the caller gives none. Default 100.
    pub default_page_size: u32,
    /// Largest page `list-keys` accepts. Default 1000.
    pub max_page_size: u32,
    /// Most value bytes one workflow run's fusion sandbox may hold on this
    /// host (it lives in memory). Default 1 GiB.
    pub max_sandbox_bytes: u64,
    /// Longest a fusion sandbox may stay unused before the host drops it,
    /// ms (a run's own TTL may make it shorter, never longer). Default 10
    /// minutes.
    pub max_sandbox_idle_ms: u64,
    /// Storage quotas per scope (`[limits.scope_quotas.<scope>]`, with
    /// `max_bytes` and `max_keys`; see [`crate::state::quota`]). Default:
    /// none.
    pub scope_quotas: BTreeMap<String, ScopeQuota>,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_key_bytes: 512,
            max_value_bytes: 16 * 1024 * 1024,
            max_batch_keys: 256,
            default_page_size: 100,
            max_page_size: 1000,
            max_sandbox_bytes: 1 << 30,
            max_sandbox_idle_ms: 600_000,
            scope_quotas: BTreeMap::new(),
        }
    }
}
