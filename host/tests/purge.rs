//! Expired entries are purged in the background on a real host, and their
//! memory and disk come back. One test binary of its own, so resident memory
//! is not disturbed by other tests running in the same process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use databelt_host::state::{MemoryStore, RedbStore, SetOptions, StateStore};
use databelt_host::{BackendConfig, HostBuilder, HostConfig};

const MIB: usize = 1 << 20;

/// Resident memory of this process, bytes.
fn rss() -> usize {
    databelt_test_support::resident_bytes() as usize
}

fn config() -> HostConfig {
    HostConfig { purge_interval_ms: 100, purge_batch: 1000, cache_dir: None, ..HostConfig::default() }
}

/// Wait until none of `keys` has a raw entry in `store` (expired entries
/// included); panics after `within`.
fn wait_purged(store: &dyn StateStore, scope: &str, keys: &[String], within: Duration) {
    let started = Instant::now();
    while keys.iter().any(|k| store.get(scope, k).unwrap().is_some()) {
        assert!(started.elapsed() < within, "expired entries were not purged within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn expired_entries_free_their_memory_and_reuse_their_disk() {
    // Memory backend: 40 × 8 MiB with a short TTL; once purged, resident
    // memory is back within 32 MiB of where it started.
    let store = Arc::new(MemoryStore::new());
    let host = HostBuilder::new(HostConfig { backend: BackendConfig::Memory, ..config() })
        .state_store(store.clone())
        .build()
        .unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("blob{i}")).collect();
    let before = rss();
    let ttl = SetOptions { ttl_ms: Some(1_500), if_not_exists: false };
    for (i, k) in keys.iter().enumerate() {
        host.state().set("blobs", k, vec![i as u8 + 1; 8 * MIB], ttl).unwrap();
    }
    let full = rss();
    assert!(full >= before + 300 * MIB, "the values are resident: {} MiB → {} MiB", before / MIB, full / MIB);
    wait_purged(store.as_ref(), "blobs", &keys, Duration::from_secs(10));
    let after = rss();
    println!(
        "memory backend: RSS {} MiB → {} MiB with 320 MiB stored → {} MiB after purge",
        before / MIB,
        full / MIB,
        after / MIB
    );
    assert!(after <= before + 32 * MIB, "memory came back: {} MiB before, {} MiB after", before / MIB, after / MIB);
    drop(host);

    // redb backend: three rounds of 20 × 8 MiB that expire; freed pages are
    // reused, so the file does not grow round after round.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let host = HostBuilder::new(HostConfig { backend: BackendConfig::Redb { path: path.clone() }, ..config() })
        .state_store(store.clone())
        .build()
        .unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("blob{i}")).collect();
    let mut sizes = Vec::new();
    for round in 0..3u8 {
        for k in &keys {
            host.state().set("blobs", k, vec![round + 1; 8 * MIB], ttl).unwrap();
        }
        sizes.push(std::fs::metadata(&path).unwrap().len() as usize);
        wait_purged(store.as_ref(), "blobs", &keys, Duration::from_secs(10));
    }
    println!(
        "redb backend: file after each round of 160 MiB: {:?} MiB",
        sizes.iter().map(|s| s / MIB).collect::<Vec<_>>()
    );
    assert!(sizes[2] <= sizes[0] + sizes[0] / 2, "the file reuses purged pages: {sizes:?}");
    assert!(host.state().list_keys("blobs", "", None, None).unwrap().keys.is_empty());
}
