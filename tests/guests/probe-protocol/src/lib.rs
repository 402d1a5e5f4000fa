//! The kv-probe test guest's protocol: its input ([`Op`], one state call or
//! failure mode each) and output ([`Reply`]). One definition, used by the
//! guest and by the host tests that drive it: postcard encodes by position,
//! so two hand-kept copies could drift apart silently.

#![allow(missing_docs)]

/// One operation.
#[databelt::data]
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Get {
        scope: String,
        key: String,
    },
    Set {
        scope: String,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        if_not_exists: bool,
    },
    Delete {
        scope: String,
        key: String,
    },
    Exists {
        scope: String,
        key: String,
    },
    ListKeys {
        scope: String,
        prefix: String,
        cursor: Option<String>,
        limit: Option<u32>,
    },
    GetMany {
        scope: String,
        keys: Vec<String>,
    },
    SetMany {
        scope: String,
        entries: Vec<(String, Vec<u8>)>,
    },
    DeleteMany {
        scope: String,
        keys: Vec<String>,
    },
    Increment {
        scope: String,
        key: String,
        delta: i64,
    },
    GetVersion {
        scope: String,
        key: String,
    },
    Cas {
        scope: String,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    },
    Context,
    HandOff {
        successor: String,
        next: Vec<u8>,
    },
    HandOffTwice {
        successor: String,
        next: Vec<u8>,
    },
    /// Write `key`, then panic (trap).
    WriteThenTrap {
        scope: String,
        key: String,
    },
    Trap,
    Loop,
    /// Allocate and touch this many MiB.
    Alloc {
        mib: u32,
    },
    /// Read a 1 KiB value once and write one (the invocation benchmark).
    GetSet1K {
        scope: String,
    },
    /// Time `n` reads of `key` from inside the guest; returns nanoseconds.
    TimeGets {
        scope: String,
        key: String,
        n: u32,
    },
    /// `lattice.counter-add`.
    CounterAdd {
        scope: String,
        key: String,
        delta: i64,
    },
    /// `lattice.counter-get`.
    CounterGet {
        scope: String,
        key: String,
    },
    /// `lattice.set-add`.
    SetAdd {
        scope: String,
        key: String,
        members: Vec<String>,
    },
    /// `lattice.set-remove`.
    SetRemove {
        scope: String,
        key: String,
        members: Vec<String>,
    },
    /// `lattice.set-contains`.
    SetContains {
        scope: String,
        key: String,
        member: String,
    },
    /// `lattice.set-members`.
    SetMembers {
        scope: String,
        key: String,
    },
    /// `lattice.siblings`.
    Siblings {
        scope: String,
        key: String,
    },
    /// Recurse without bound: a stack overflow.
    Recurse,
    /// The SDK's counter helpers: `set_counter(5)`, `increment(2)`,
    /// `counter`, then a typed `get::<i64>` of the counter.
    CounterHelpers {
        scope: String,
        key: String,
    },
    /// Count this call in a static of the guest and return the count: 1
    /// when every invocation gets an instance of its own.
    CallsInThisInstance,
}

/// What an operation returned.
#[databelt::data]
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Done,
    Value(Option<Vec<u8>>),
    Values(Vec<Option<Vec<u8>>>),
    Bool(bool),
    Keys {
        keys: Vec<String>,
        cursor: Option<String>,
    },
    Count(i64),
    Version(Option<Vec<u8>>),
    Swapped(Vec<u8>),
    Stale(Option<(Vec<u8>, Vec<u8>)>),
    Context {
        run_id: String,
        function: String,
        step: u32,
        node_id: String,
    },
    Nanos(u64),
    Members(Vec<String>),
    /// Siblings: value, stamp, node.
    Siblings(Vec<(Option<Vec<u8>>, u64, String)>),
    /// What the counter helpers returned: `increment`, `counter`, and the
    /// typed read (`Ok` value or the error's text).
    Counters {
        incremented: i64,
        read: i64,
        typed: Result<i64, String>,
    },
}
