//! Transactions across hosts are serializable under any interleaving:
//! proptest draws transactions with one part on each of two hosts (read some
//! keys, write others from what was read), plain single-key writes, and a
//! schedule that interleaves every step of them (execute a part, prepare
//! it, decide). A prepare that conflicts aborts its transaction (every part
//! prepared so far is resolved as aborted); a transaction all of whose parts
//! prepared commits. The committed history — every read with the version it
//! saw, every write with the version it got — must pass the history checker
//! (`state::history::serial_order`), and no lock may be left.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use databelt_host::ErrorKind;
use databelt_host::state::history::{Committed, serial_order};
use databelt_host::state::{MemoryStore, ScopedKey, SetOptions, StagedStore, StateLimits, StateTier};
use proptest::prelude::*;

const KEYS: u64 = 3;

/// One part: read two keys of its host, write a third from them.
#[derive(Debug, Clone)]
struct Part {
    reads: (u64, u64),
    write: u64,
}

#[derive(Debug, Clone)]
enum Job {
    /// A transaction with one part on host 0 and one on host 1.
    Txn([Part; 2]),
    /// A plain write of a key on a host.
    Plain { host: usize, key: u64 },
}

fn part() -> impl Strategy<Value = Part> {
    (0..KEYS, 0..KEYS, 0..KEYS).prop_map(|(a, b, w)| Part { reads: (a, b), write: w })
}

fn job() -> impl Strategy<Value = Job> {
    prop_oneof![
        3 => (part(), part()).prop_map(|(a, b)| Job::Txn([a, b])),
        1 => (0..2usize, 0..KEYS).prop_map(|(host, key)| Job::Plain { host, key }),
    ]
}

/// Where a transaction stands.
enum Stage {
    /// Part `n` is next to execute.
    Execute(usize),
    /// Part `n` executed; it prepares next.
    Prepare(usize, Arc<StagedStore>, Vec<(ScopedKey, Option<u64>)>),
    /// Every part prepared: decide next.
    Decide,
    Done,
}

fn key(host: usize, k: u64) -> ScopedKey {
    ScopedKey::new(format!("h{host}"), format!("k{k}"))
}

fn run(jobs: &[Job], schedule: &[usize]) -> (Vec<Committed>, usize) {
    let hosts: Vec<StateTier> =
        (0..2).map(|_| StateTier::new(Arc::new(MemoryStore::new()), StateLimits::default())).collect();
    let mut stages: Vec<Stage> = jobs.iter().map(|_| Stage::Execute(0)).collect();
    let mut reads: Vec<Vec<(ScopedKey, Option<u64>)>> = jobs.iter().map(|_| Vec::new()).collect();
    let mut history = Vec::new();
    let mut aborted = 0;
    let mut turn = schedule.iter().cycle();
    while stages.iter().any(|s| !matches!(s, Stage::Done)) {
        // The scheduler picks a job that has work left.
        let live: Vec<usize> = (0..jobs.len()).filter(|&i| !matches!(stages[i], Stage::Done)).collect();
        let i = live[turn.next().copied().unwrap_or(0) % live.len()];
        let txn = format!("t{i}");
        let stage = std::mem::replace(&mut stages[i], Stage::Done);
        stages[i] = match (&jobs[i], stage) {
            (Job::Plain { host, key: k }, _) => {
                match hosts[*host].set("s", format!("k{k}"), vec![i as u8], SetOptions::default()) {
                    Ok(v) => history.push(Committed { reads: Vec::new(), writes: vec![(key(*host, *k), v)] }),
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
                }
                Stage::Done
            }
            (Job::Txn(parts), Stage::Execute(n)) => {
                let p = &parts[n];
                let (view, staged) = hosts[n].staged();
                let mut seen = Vec::new();
                let mut sum = 0u8;
                for r in [p.reads.0, p.reads.1] {
                    let e = view.get_entry("s", &format!("k{r}")).unwrap();
                    sum = sum.wrapping_add(e.as_ref().map_or(0, |e| e.value[0]));
                    seen.push((key(n, r), e.map(|e| e.version)));
                }
                view.set("s", format!("k{}", p.write), vec![sum.wrapping_add(1)], SetOptions::default()).unwrap();
                Stage::Prepare(n, staged, seen)
            }
            (Job::Txn(_), Stage::Prepare(n, staged, seen)) => {
                match hosts[n].prepare_staged(&txn, &format!("p{n}"), &staged, Vec::new(), Vec::new(), Vec::new(), &[])
                {
                    Ok(()) => {
                        reads[i].extend(seen);
                        if n == 1 { Stage::Decide } else { Stage::Execute(n + 1) }
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
                        for h in &hosts {
                            h.resolve(&txn, false, Vec::new()).unwrap();
                        }
                        aborted += 1;
                        Stage::Done
                    }
                }
            }
            (Job::Txn(parts), Stage::Decide) => {
                let mut writes = Vec::new();
                for (n, h) in hosts.iter().enumerate() {
                    h.resolve(&txn, true, Vec::new()).unwrap();
                    let w = parts[n].write;
                    writes.push((key(n, w), h.get_entry("s", &format!("k{w}")).unwrap().unwrap().version));
                }
                // Keys carry their host in the history (`h0/k1`).
                history.push(Committed { reads: std::mem::take(&mut reads[i]), writes });
                Stage::Done
            }
            (Job::Txn(_), Stage::Done) => Stage::Done,
        };
    }
    for h in &hosts {
        assert_eq!(h.held_locks().unwrap(), 0, "a lock was left");
        assert!(h.prepared_transactions("").unwrap().is_empty());
    }
    (history, aborted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_interleaving_of_cross_host_transactions_commits_a_serializable_history(
        jobs in proptest::collection::vec(job(), 2..8),
        schedule in proptest::collection::vec(0usize..64, 1..64),
    ) {
        let (history, _aborted) = run(&jobs, &schedule);
        if let Err(e) = serial_order(&history) {
            panic!("not serializable: {e:?}\nhistory: {history:?}");
        }
    }
}

#[test]
fn a_fixed_interleaving_that_would_be_write_skew_aborts_one_side() {
    // t0 reads k0,k1 and writes k2 on both hosts; t1 reads k2 and writes k0
    // on both; interleaved so that each executes before the other prepares.
    let a = Part { reads: (0, 1), write: 2 };
    let b = Part { reads: (2, 2), write: 0 };
    let jobs = [Job::Txn([a.clone(), a]), Job::Txn([b.clone(), b])];
    let (history, aborted) = run(&jobs, &[0, 1, 0, 1, 0, 1, 0, 1]);
    assert!(aborted >= 1, "one of the two must abort: {history:?}");
    serial_order(&history).unwrap();
}
