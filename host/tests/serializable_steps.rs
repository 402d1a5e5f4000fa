//! Steps' transactions are serializable: concurrent staged transactions
//! (read some keys, write others from what they read) commit with
//! optimistic validation (`StateTier::commit_staged`, retried on conflict),
//! on the memory and the redb backend; the history of what committed — every
//! read with the version it saw, every write with the version it got — is
//! then checked by the history checker (`state::history::serial_order`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use databelt_host::state::history::{Committed, serial_order};
use databelt_host::state::{MemoryStore, RedbStore, SetOptions, StateLimits, StateStore, StateTier, Write};
use databelt_host::{ErrorKind, state::ScopedKey};

const KEYS: u64 = 4;

fn run_history(store: Arc<dyn StateStore>, threads: u64, per_thread: u64) -> (Vec<Committed>, u64) {
    let tier = StateTier::new(store, StateLimits::default());
    let history = Arc::new(Mutex::new(Vec::new()));
    let conflicts = Arc::new(Mutex::new(0u64));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (tier, history, conflicts) = (tier.clone(), history.clone(), conflicts.clone());
            s.spawn(move || {
                let mut rng = 0x2545F4914F6CDD1Du64 ^ (t + 1).wrapping_mul(0x9E3779B97F4A7C15);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                for _ in 0..per_thread {
                    let (a, b, w) = (next() % KEYS, next() % KEYS, next() % KEYS);
                    loop {
                        let (view, staged) = tier.staged();
                        let read = |k: u64| {
                            view.get("s", &format!("k{k}"))
                                .unwrap()
                                .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
                        };
                        let sum = read(a).max(read(b));
                        view.set("s", format!("k{w}"), (sum + 1).to_le_bytes().to_vec(), SetOptions::default())
                            .unwrap();
                        let staged_writes = staged.writes().unwrap();
                        match tier.commit_staged(&staged, Vec::new(), &[]) {
                            Ok(versions) => {
                                let keys = staged_writes.writes.iter().filter_map(|w| match w {
                                    Write::Put { key, .. } => Some(key.clone()),
                                    Write::Delete { .. } => None,
                                });
                                let writes: Vec<(ScopedKey, u64)> = keys.zip(versions).collect();
                                history.lock().unwrap().push(Committed { reads: staged_writes.reads, writes });
                                break;
                            }
                            Err(e) if e.kind() == ErrorKind::Conflict => {
                                // Back off a little, as a step does.
                                *conflicts.lock().unwrap() += 1;
                                std::thread::sleep(std::time::Duration::from_micros(50 + next() % 500));
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
        }
    });
    let history = std::mem::take(&mut *history.lock().unwrap());
    let conflicts = *conflicts.lock().unwrap();
    (history, conflicts)
}

#[test]
fn concurrent_step_transactions_commit_a_serializable_history() {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<(&str, Arc<dyn StateStore>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("redb", Arc::new(RedbStore::open(&dir.path().join("h.redb")).unwrap())),
    ];
    for (name, store) in stores {
        let (history, conflicts) = run_history(store, 8, 60);
        assert_eq!(history.len(), 480, "{name}: every transaction committed once");
        let order = serial_order(&history).unwrap_or_else(|e| panic!("{name}: not serializable: {e:?}"));
        assert_eq!(order.len(), history.len());
        eprintln!("{name}: 480 transactions serializable; {conflicts} conflicts were retried");
    }
}

#[test]
fn writes_applied_without_validation_are_caught_by_the_checker() {
    // The same transactions, but each write applied as a plain write
    // (no read check): lost updates appear, and the checker sees them.
    let tier = StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default());
    let ((view1, staged1), (view2, staged2)) = (tier.staged(), tier.staged());
    // Both read k0 (absent) and write k0.
    assert_eq!(view1.get("s", "k0").unwrap(), None);
    assert_eq!(view2.get("s", "k0").unwrap(), None);
    view1.set("s", "k0", vec![1], SetOptions::default()).unwrap();
    view2.set("s", "k0", vec![2], SetOptions::default()).unwrap();
    let mut history = Vec::new();
    for staged in [&staged1, &staged2] {
        let w = staged.writes().unwrap();
        let Write::Put { key, value, .. } = w.writes[0].clone() else { panic!("a put") };
        let version = tier.set(&key.scope, &key.key, value, SetOptions::default()).unwrap();
        history.push(Committed { reads: w.reads, writes: vec![(key, version)] });
    }
    assert!(serial_order(&history).is_err(), "a lost update is not serializable");
    // With validation, the second commit is refused instead.
    let tier = StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default());
    let ((v1, s1), (v2, s2)) = (tier.staged(), tier.staged());
    assert_eq!((v1.get("s", "k0").unwrap(), v2.get("s", "k0").unwrap()), (None, None));
    v1.set("s", "k0", vec![1], SetOptions::default()).unwrap();
    v2.set("s", "k0", vec![2], SetOptions::default()).unwrap();
    tier.commit_staged(&s1, Vec::new(), &[]).unwrap();
    assert_eq!(tier.commit_staged(&s2, Vec::new(), &[]).unwrap_err().kind(), ErrorKind::Conflict);
}
