//! Test guest: each input is one operation, so host tests can drive every
//! state call and every failure mode through a real component.

use databelt::{Cas, Context, Error, Scope, SetOptions, Version};
use databelt_probe_protocol::{Op, Reply};

fn open(name: &str) -> Result<Scope, Error> {
    Scope::open(name)
}

#[databelt::function]
fn probe(ctx: &Context, input: Op) -> Result<Reply, Error> {
    Ok(match input {
        Op::Get { scope, key } => Reply::Value(open(&scope)?.get_bytes(&key)?),
        Op::Set { scope, key, value, ttl_ms, if_not_exists } => {
            open(&scope)?.set_bytes(&key, &value, SetOptions { ttl_ms, if_not_exists })?;
            Reply::Done
        }
        Op::Delete { scope, key } => {
            open(&scope)?.delete(&key)?;
            Reply::Done
        }
        Op::Exists { scope, key } => Reply::Bool(open(&scope)?.exists(&key)?),
        Op::ListKeys { scope, prefix, cursor, limit } => {
            let page = open(&scope)?.list_keys(&prefix, cursor.as_deref(), limit)?;
            Reply::Keys { keys: page.keys, cursor: page.cursor }
        }
        Op::GetMany { scope, keys } => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            Reply::Values(open(&scope)?.get_many_bytes(&keys)?)
        }
        Op::SetMany { scope, entries } => {
            let entries: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            open(&scope)?.set_many_bytes(&entries, SetOptions::default())?;
            Reply::Done
        }
        Op::DeleteMany { scope, keys } => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            open(&scope)?.delete_many(&keys)?;
            Reply::Done
        }
        Op::Increment { scope, key, delta } => Reply::Count(open(&scope)?.increment(&key, delta)?),
        Op::GetVersion { scope, key } => {
            let e = open(&scope)?.get_entry::<Vec<u8>>(&key).or_else(|e| match e {
                // Raw values are not postcard; only the version matters here.
                Error::Decode(_) => Ok(None),
                other => Err(other),
            })?;
            Reply::Version(e.map(|e| version_bytes(&e.version)))
        }
        Op::Cas { scope, key, expected, value } => {
            let s = open(&scope)?;
            let expected = expected.map(version_from);
            match s.compare_and_swap(&key, expected.as_ref(), &value)? {
                Cas::Swapped(v) => Reply::Swapped(version_bytes(&v)),
                Cas::Stale(cur) => Reply::Stale(cur.map(|c| (c.value, version_bytes(&c.version)))),
            }
        }
        Op::Context => Reply::Context {
            run_id: ctx.run_id().into(),
            function: ctx.function().into(),
            step: ctx.step(),
            node_id: ctx.node_id().into(),
        },
        Op::HandOff { successor, next } => {
            ctx.hand_off_bytes(&successor, &next)?;
            Reply::Done
        }
        Op::HandOffTwice { successor, next } => {
            ctx.hand_off_bytes(&successor, &next)?;
            ctx.hand_off_bytes(&successor, &next)?;
            Reply::Done
        }
        Op::WriteThenTrap { scope, key } => {
            open(&scope)?.set_bytes(&key, b"written", SetOptions::default())?;
            panic!("deliberate trap after a write");
        }
        Op::Trap => panic!("deliberate trap"),
        #[allow(clippy::empty_loop)]
        Op::Loop => loop {
            std::hint::black_box(());
        },
        Op::Alloc { mib } => {
            let mut v: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib {
                v.push(vec![1u8; 1024 * 1024]);
            }
            Reply::Count(v.iter().map(|b| b.len() as i64).sum())
        }
        Op::GetSet1K { scope } => {
            let s = open(&scope)?;
            let got = s.get_bytes("in")?.unwrap_or_default();
            let mut out = [0u8; 1024];
            out[0] = got.first().copied().unwrap_or(0).wrapping_add(1);
            s.set_bytes("out", &out, SetOptions::default())?;
            Reply::Done
        }
        Op::TimeGets { scope, key, n } => {
            let s = open(&scope)?;
            let start = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(s.get_bytes(&key)?);
            }
            Reply::Nanos(start.elapsed().as_nanos() as u64)
        }
        Op::CounterAdd { scope, key, delta } => Reply::Count(open(&scope)?.counter_add(&key, delta)?),
        Op::CounterGet { scope, key } => Reply::Count(open(&scope)?.counter_get(&key)?),
        Op::SetAdd { scope, key, members } => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            open(&scope)?.set_add(&key, &members)?;
            Reply::Done
        }
        Op::SetRemove { scope, key, members } => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            open(&scope)?.set_remove(&key, &members)?;
            Reply::Done
        }
        Op::SetContains { scope, key, member } => Reply::Bool(open(&scope)?.set_contains(&key, &member)?),
        Op::SetMembers { scope, key } => Reply::Members(open(&scope)?.set_members(&key)?),
        Op::Siblings { scope, key } => {
            Reply::Siblings(open(&scope)?.siblings(&key)?.into_iter().map(|s| (s.value, s.stamp, s.node)).collect())
        }
        Op::Recurse => Reply::Count(recurse(std::hint::black_box(1))),
        Op::CallsInThisInstance => {
            static CALLS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            Reply::Count(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
        }
        Op::CounterHelpers { scope, key } => {
            let s = open(&scope)?;
            s.set_counter(&key, 5)?;
            let incremented = s.increment(&key, 2)?;
            let read = s.counter(&key)?;
            let typed = s.get::<i64>(&key).map(|v| v.unwrap_or_default()).map_err(|e| e.to_string());
            Reply::Counters { incremented, read, typed }
        }
    })
}

/// Recurses until the stack runs out.
#[allow(unconditional_recursion)]
fn recurse(n: i64) -> i64 {
    let local = std::hint::black_box([n; 32]);
    recurse(local[3] + 1) + local[7]
}

fn version_bytes(v: &Version) -> Vec<u8> {
    v.as_bytes().to_vec()
}

fn version_from(bytes: Vec<u8>) -> Version {
    Version::from_bytes(bytes)
}
