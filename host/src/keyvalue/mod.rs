//! The host side of `wasi:keyvalue`, both published drafts, on the same
//! [`StateTier`] as `databelt:state`: components written for wasmtime,
//! wasmCloud or Spin run unchanged.
//!
//! - `0.2.0-draft` ([`draft`]): `u64` increment, `u64` list cursors (what
//!   `wasmtime-wasi-keyvalue` and wasmCloud implement).
//! - `0.2.0-draft2` ([`draft2`]): a `cas` resource, `s64` increment, string
//!   cursors (what Spin implements).
//!
//! A bucket is a scope: `open("orders")` opens scope `orders`, and the empty
//! identifier opens [`DEFAULT_BUCKET_SCOPE`]. Limits, TTL purge, quotas,
//! the host's scope allowlist and a function's deploy-time grants apply as
//! for `databelt:state`. Counters are decimal ASCII text (Redis `INCRBY`'s
//! encoding; `databelt:state` counters are 8-byte little-endian).
//!
//! Mount it on any `Linker<T>` whose `T` implements [`KeyValueView`]:
//!
//! ```no_run
//! use databelt_host::keyvalue::{KeyValueCtx, KeyValueCtxView, KeyValueView};
//! use wasmtime::component::{Linker, ResourceTable};
//!
//! struct MyState {
//!     table: ResourceTable,
//!     keyvalue: KeyValueCtx,
//! }
//!
//! impl KeyValueView for MyState {
//!     fn keyvalue(&mut self) -> KeyValueCtxView<'_> {
//!         KeyValueCtxView { ctx: &mut self.keyvalue, table: &mut self.table }
//!     }
//! }
//!
//! fn mount(linker: &mut Linker<MyState>) -> wasmtime::Result<()> {
//!     databelt_host::keyvalue::add_to_linker(linker)
//! }
//! ```

/// What both drafts serve word for word: `store.open`, the plain bucket
/// methods and `batch`. Their generated types differ, so each draft expands
/// these in its own module (where `store`, `batch`, `kv` and `KvResult` name
/// that draft's).
macro_rules! shared_interfaces {
    () => {
        impl store::Host for KeyValueCtxView<'_> {
            fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
                match self.open_bucket(&identifier) {
                    Ok(b) => Ok(Ok(self.table.push(b)?)),
                    Err(e) => kv(Err(e)),
                }
            }
        }

        impl batch::Host for KeyValueCtxView<'_> {
            fn get_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> KvResult<Vec<Option<KeyValue>>> {
                let b = self.table.get(&b)?;
                kv(self.ctx.get_many(b, keys))
            }

            fn set_many(&mut self, b: Resource<Bucket>, key_values: Vec<(String, Vec<u8>)>) -> KvResult<()> {
                let b = self.table.get(&b)?;
                kv(self.ctx.set_many(b, key_values))
            }

            fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
                let b = self.table.get(&b)?;
                kv(self.ctx.delete_many(b, keys))
            }
        }
    };
}

/// The bucket methods both drafts share (inside each `HostBucket` impl).
macro_rules! shared_bucket_methods {
    () => {
        fn get(&mut self, b: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
            let b = self.table.get(&b)?;
            kv(self.ctx.get(b, &key))
        }

        fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
            let b = self.table.get(&b)?;
            kv(self.ctx.set(b, key, value))
        }

        fn delete(&mut self, b: Resource<Bucket>, key: String) -> KvResult<()> {
            let b = self.table.get(&b)?;
            kv(self.ctx.delete(b, &key))
        }

        fn exists(&mut self, b: Resource<Bucket>, key: String) -> KvResult<bool> {
            let b = self.table.get(&b)?;
            kv(self.ctx.exists(b, &key))
        }

        fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
            self.table.delete(b)?;
            self.closed_bucket();
            Ok(())
        }
    };
}

pub mod draft;
pub mod draft2;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::error::Error;
use crate::grants::{ScopeAccess, ScopeGrants};
use crate::state::{Entry, KeyPage, StateTier};
use databelt_types::ScopeName;

/// The scope the empty bucket identifier opens.
pub const DEFAULT_BUCKET_SCOPE: &str = "default";

/// Buckets one invocation may hold open at once.
const MAX_OPEN_BUCKETS: usize = 1024;

/// `0.2.0-draft` list cursors one invocation may be issued (each is a
/// handle to the last key of a page, kept by the host).
const MAX_DRAFT_CURSORS: usize = 4096;

/// An open bucket: the scope it names and whether the function may write it.
#[derive(Debug, Clone)]
pub struct Bucket {
    scope: String,
    writable: bool,
}

impl Bucket {
    /// The scope this bucket reads and writes.
    pub fn scope(&self) -> &str {
        &self.scope
    }
}

/// A `0.2.0-draft2` compare-and-swap in progress: the entry of one key as
/// `cas.new` read it.
#[derive(Debug, Clone)]
pub struct CasHandle {
    bucket: Bucket,
    key: String,
    read: Option<Entry>,
}

/// Per-invocation `wasi:keyvalue` state that lives in the embedder's Store
/// data.
pub struct KeyValueCtx {
    tier: StateTier,
    grants: Option<Arc<ScopeGrants>>,
    open: usize,
    /// `0.2.0-draft` cursors issued so far: (scope, last key of the page);
    /// cursor `n` is entry `n`.
    draft_cursors: Vec<(String, String)>,
    /// Operations made so far, by [`Op`]; added to the process's metrics
    /// once, when the context is dropped (a metrics registry lookup per
    /// call would cost as much as the call itself).
    counts: [u64; Op::ALL.len()],
}

impl Drop for KeyValueCtx {
    fn drop(&mut self) {
        for (op, n) in Op::ALL.iter().zip(self.counts).filter(|(_, n)| *n > 0) {
            metrics::counter!(
                "databelt_state_operations_total",
                "interface" => "wasi-keyvalue",
                "tier" => "store",
                "op" => op.label()
            )
            .increment(n);
        }
    }
}

impl KeyValueCtx {
    /// A context over `tier`, every scope the tier allows.
    pub fn new(tier: StateTier) -> KeyValueCtx {
        KeyValueCtx { tier, grants: None, open: 0, draft_cursors: Vec::new(), counts: [0; Op::ALL.len()] }
    }

    fn count(&mut self, op: Op) {
        self.counts[op as usize] += 1;
    }

    pub(crate) fn get(&mut self, b: &Bucket, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.count(Op::Get);
        self.tier.get(&b.scope, key)
    }

    pub(crate) fn set(&mut self, b: &Bucket, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.count(Op::Set);
        KeyValueCtxView::writable(b)?;
        self.tier.set(&b.scope, key, value, Default::default()).map(|_| ())
    }

    pub(crate) fn delete(&mut self, b: &Bucket, key: &str) -> Result<(), Error> {
        self.count(Op::Delete);
        KeyValueCtxView::writable(b)?;
        self.tier.delete(&b.scope, key)
    }

    pub(crate) fn exists(&mut self, b: &Bucket, key: &str) -> Result<bool, Error> {
        self.count(Op::Exists);
        self.tier.exists(&b.scope, key)
    }

    /// One page (the host's default page size) after `cursor`, a key.
    pub(crate) fn list(&mut self, b: &Bucket, cursor: Option<&str>) -> Result<KeyPage, Error> {
        self.count(Op::ListKeys);
        self.tier.list_keys(&b.scope, "", cursor, None)
    }

    pub(crate) fn increment(&mut self, b: &Bucket, key: &str, delta: i64) -> Result<i64, Error> {
        self.count(Op::Increment);
        KeyValueCtxView::writable(b)?;
        self.tier.increment_decimal(&b.scope, key, delta)
    }

    pub(crate) fn get_many(&mut self, b: &Bucket, keys: Vec<String>) -> Result<Vec<Option<KeyValue>>, Error> {
        self.count(Op::GetMany);
        let values = self.tier.get_many(&b.scope, &keys)?;
        Ok(keys.into_iter().zip(values).map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    pub(crate) fn set_many(&mut self, b: &Bucket, entries: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        self.count(Op::SetMany);
        KeyValueCtxView::writable(b)?;
        self.tier.set_many(&b.scope, entries, Default::default())
    }

    pub(crate) fn delete_many(&mut self, b: &Bucket, keys: Vec<String>) -> Result<(), Error> {
        self.count(Op::DeleteMany);
        KeyValueCtxView::writable(b)?;
        self.tier.delete_many(&b.scope, keys)
    }

    /// Limit the buckets the function may open to `grants`, as for
    /// `databelt:state`.
    pub fn with_grants(mut self, grants: Option<Arc<ScopeGrants>>) -> KeyValueCtx {
        self.grants = grants;
        self
    }
}

/// Borrowed access to the key-value context and the resource table.
pub struct KeyValueCtxView<'a> {
    /// The per-invocation context.
    pub ctx: &'a mut KeyValueCtx,
    /// The Store's resource table (shared with WASI).
    pub table: &'a mut ResourceTable,
}

/// Implemented by Store data that carries a [`KeyValueCtx`].
pub trait KeyValueView: Send {
    /// Borrow the key-value context and the resource table.
    fn keyvalue(&mut self) -> KeyValueCtxView<'_>;
}

/// The [`HasData`] marker of the `wasi:keyvalue` interfaces: their host data
/// is a [`KeyValueCtxView`]. Use it to mount one interface of one draft at
/// a time with the generated `add_to_linker` functions.
pub struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValueCtxView<'a>;
}

/// Add both drafts of `wasi:keyvalue` (`store`, `atomics`, `batch`) to
/// `linker`.
pub fn add_to_linker<T: KeyValueView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    draft::add_to_linker(linker)?;
    draft2::add_to_linker(linker)
}

/// The `wasi:keyvalue` operations counted in the process's metrics (label
/// `op` of `databelt_state_operations_total`).
#[derive(Clone, Copy)]
enum Op {
    Get,
    Set,
    Delete,
    Exists,
    ListKeys,
    Increment,
    GetMany,
    SetMany,
    DeleteMany,
    CasNew,
    Swap,
}

impl Op {
    const ALL: [Op; 11] = [
        Op::Get,
        Op::Set,
        Op::Delete,
        Op::Exists,
        Op::ListKeys,
        Op::Increment,
        Op::GetMany,
        Op::SetMany,
        Op::DeleteMany,
        Op::CasNew,
        Op::Swap,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::ListKeys => "list-keys",
            Op::Increment => "increment",
            Op::GetMany => "get-many",
            Op::SetMany => "set-many",
            Op::DeleteMany => "delete-many",
            Op::CasNew => "cas-new",
            Op::Swap => "swap",
        }
    }
}

/// A key with its value, as `get-many` answers.
pub(crate) type KeyValue = (String, Vec<u8>);

/// What a `wasi:keyvalue` error case is, for both drafts.
pub(crate) enum Failure {
    NoSuchStore,
    AccessDenied,
    Other(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        use databelt_types::WitErrorCase;
        match e.kind().wit_case() {
            WitErrorCase::NoSuchScope => Failure::NoSuchStore,
            WitErrorCase::AccessDenied => Failure::AccessDenied,
            _ => Failure::Other(e.to_string()),
        }
    }
}

/// The operations both drafts share; the drafts only convert types.
impl KeyValueCtxView<'_> {
    pub(crate) fn open_bucket(&mut self, identifier: &str) -> Result<Bucket, Error> {
        let scope = if identifier.is_empty() { DEFAULT_BUCKET_SCOPE } else { identifier };
        self.ctx.tier.open_scope(scope)?;
        if ScopeName::is_reserved_name(scope) {
            return Err(Error::AccessDenied(format!(
                "bucket `{scope}` is reserved for the host (names starting with `{}`, in any case)",
                databelt_types::RESERVED_SCOPE_PREFIX
            )));
        }
        if self.ctx.open >= MAX_OPEN_BUCKETS {
            return Err(Error::over_limit("open buckets", self.ctx.open + 1, MAX_OPEN_BUCKETS));
        }
        let writable = match &self.ctx.grants {
            None => true,
            Some(grants) => match grants.access(scope) {
                Some(access) => access == ScopeAccess::ReadWrite,
                None => {
                    return Err(Error::AccessDenied(format!(
                        "this function may not open bucket `{scope}` (deployed with scopes `{grants}`)"
                    )));
                }
            },
        };
        self.ctx.open += 1;
        Ok(Bucket { scope: scope.to_string(), writable })
    }

    pub(crate) fn closed_bucket(&mut self) {
        self.ctx.open = self.ctx.open.saturating_sub(1);
    }

    fn writable(bucket: &Bucket) -> Result<(), Error> {
        if bucket.writable {
            return Ok(());
        }
        Err(Error::AccessDenied(format!("bucket `{}` is read-only for this function", bucket.scope)))
    }

    /// Issue a `0.2.0-draft` cursor for the page that ended at `last` key.
    pub(crate) fn issue_draft_cursor(&mut self, b: &Bucket, last: String) -> Result<u64, Error> {
        if self.ctx.draft_cursors.len() >= MAX_DRAFT_CURSORS {
            return Err(Error::over_limit(
                "list cursors in one invocation",
                self.ctx.draft_cursors.len() + 1,
                MAX_DRAFT_CURSORS,
            ));
        }
        self.ctx.draft_cursors.push((b.scope.clone(), last));
        Ok(self.ctx.draft_cursors.len() as u64 - 1)
    }

    /// The key a `0.2.0-draft` cursor stands for; it must have been issued
    /// by this invocation for this bucket's scope.
    pub(crate) fn draft_cursor(&self, b: &Bucket, cursor: u64) -> Result<String, Error> {
        usize::try_from(cursor)
            .ok()
            .and_then(|i| self.ctx.draft_cursors.get(i))
            .filter(|(scope, _)| *scope == b.scope)
            .map(|(_, key)| key.clone())
            .ok_or_else(|| {
                Error::Other(format!("cursor {cursor} was not issued to this invocation for bucket `{}`", b.scope))
            })
    }

    pub(crate) fn cas_read(&mut self, b: &Bucket, key: String) -> Result<CasHandle, Error> {
        self.ctx.counts[Op::CasNew as usize] += 1;
        Self::writable(b)?;
        let read = self.ctx.tier.get_entry(&b.scope, &key)?;
        Ok(CasHandle { bucket: b.clone(), key, read })
    }

    /// Swap `cas` to `value`: `Ok(None)` when written, `Ok(Some(current))`
    /// when the key changed since `cas` read it (nothing written).
    pub(crate) fn cas_swap(&mut self, cas: &CasHandle, value: Vec<u8>) -> Result<Option<CasHandle>, Error> {
        self.ctx.counts[Op::Swap as usize] += 1;
        use crate::state::{CasOutcome, encode_version};
        let expected = cas.read.as_ref().map(|e| encode_version(e.version));
        match self.ctx.tier.compare_and_swap(&cas.bucket.scope, &cas.key, expected.as_deref(), value)? {
            CasOutcome::Swapped(_) => Ok(None),
            CasOutcome::Stale(current) => {
                Ok(Some(CasHandle { bucket: cas.bucket.clone(), key: cas.key.clone(), read: current }))
            }
        }
    }
}
