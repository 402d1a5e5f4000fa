//! The kv-probe test guest's input and output, mirrored on the host side.

#![allow(dead_code, missing_docs)]

use serde::{Deserialize, Serialize};

/// Mirror of kv-probe's input (postcard encodes by field order and variant
/// index, so the names here only document).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Op {
    Get { scope: String, key: String },
    Set { scope: String, key: String, value: Vec<u8>, ttl_ms: Option<u64>, if_not_exists: bool },
    Delete { scope: String, key: String },
    Exists { scope: String, key: String },
    ListKeys { scope: String, prefix: String, cursor: Option<String>, limit: Option<u32> },
    GetMany { scope: String, keys: Vec<String> },
    SetMany { scope: String, entries: Vec<(String, Vec<u8>)> },
    DeleteMany { scope: String, keys: Vec<String> },
    Increment { scope: String, key: String, delta: i64 },
    GetVersion { scope: String, key: String },
    Cas { scope: String, key: String, expected: Option<Vec<u8>>, value: Vec<u8> },
    Context,
    HandOff { successor: String, next: Vec<u8> },
    HandOffTwice { successor: String, next: Vec<u8> },
    WriteThenTrap { scope: String, key: String },
    Trap,
    Loop,
    Alloc { mib: u32 },
    GetSet1K { scope: String },
    TimeGets { scope: String, key: String, n: u32 },
}

/// Mirror of kv-probe's output.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Reply {
    Done,
    Value(Option<Vec<u8>>),
    Values(Vec<Option<Vec<u8>>>),
    Bool(bool),
    Keys { keys: Vec<String>, cursor: Option<String> },
    Count(i64),
    Version(Option<Vec<u8>>),
    Swapped(Vec<u8>),
    Stale(Option<(Vec<u8>, Vec<u8>)>),
    Context { run_id: String, function: String, step: u32, node_id: String },
    Nanos(u64),
}
