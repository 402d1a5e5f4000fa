//! Typed (serde + postcard) and raw-bytes access to a state scope.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::wit::databelt::state::{lattice, store};

/// Options of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Time to live in milliseconds; `None` keeps the value until deleted.
    pub ttl_ms: Option<u64>,
    /// Write only if no live value exists (else `PreconditionFailed`).
    pub if_not_exists: bool,
}

impl SetOptions {
    /// Expire the value `ms` milliseconds after the write.
    pub fn ttl_ms(ms: u64) -> Self {
        SetOptions { ttl_ms: Some(ms), if_not_exists: false }
    }

    /// Write only if the key is absent.
    pub fn if_not_exists() -> Self {
        SetOptions { ttl_ms: None, if_not_exists: true }
    }
}

impl From<SetOptions> for store::SetOptions {
    fn from(o: SetOptions) -> Self {
        store::SetOptions { ttl_ms: o.ttl_ms, if_not_exists: o.if_not_exists }
    }
}

/// An opaque version token from [`Scope::get_entry`], for
/// [`Scope::compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(Vec<u8>);

impl Version {
    /// The token's bytes, e.g. to keep it in state or send it elsewhere.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A token from bytes obtained by [`Version::as_bytes`].
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Version(bytes)
    }
}

/// A value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version.
    pub version: Version,
}

/// The outcome of [`Scope::compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas<T> {
    /// Written; the new version.
    Swapped(Version),
    /// Not written: the expectation was stale. The current entry, if any.
    Stale(Option<Versioned<T>>),
}

/// One page of [`Scope::list_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys in ascending byte order.
    pub keys: Vec<String>,
    /// Pass to the next call to continue; `None` when done.
    pub cursor: Option<String>,
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::Encode(e.to_string()))
}

/// Decode a whole value: bytes left over mean the value is not a `T` (for
/// instance an 8-byte counter read as an integer), never a silent misread.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    if !rest.is_empty() {
        let hint = if bytes.len() == 8 {
            " (8 bytes: is it a counter written by `increment`? read it with `Scope::counter`)"
        } else {
            ""
        };
        return Err(Error::Decode(format!(
            "the value is {} bytes but a `{}` took only {}{hint}",
            bytes.len(),
            std::any::type_name::<T>(),
            bytes.len() - rest.len()
        )));
    }
    Ok(value)
}

/// One of the concurrent values of a key in a replicated scope (see
/// [`Scope::siblings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    /// The raw bytes; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// Its hybrid-logical-clock stamp (ms since the Unix epoch << 16, plus
    /// a logical counter); a plain read returns the greatest.
    pub stamp: u64,
    /// The node that wrote it.
    pub node: String,
}

/// A named group of keys on the host (a bucket), shared by every function
/// that opens the same name. Typed methods store values with postcard; the
/// `_bytes` methods store raw bytes.
#[derive(Debug)]
pub struct Scope {
    inner: store::Scope,
}

impl Scope {
    /// Open the scope `name` (1-64 ASCII letters, digits, `-`, `_`, `.`).
    pub fn open(name: &str) -> Result<Scope> {
        Ok(Scope { inner: store::open(name)? })
    }

    /// The run scope of the current workflow run (see [`crate::Context::run_state`]).
    pub fn run_state() -> Result<Scope> {
        Ok(Scope { inner: crate::wit::databelt::state::context::run_state()? })
    }

    /// The scope's name.
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// The value under `key`, decoded as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get_bytes(key)?.map(|b| decode(&b)).transpose()
    }

    /// The raw bytes under `key`.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.get(key)?)
    }

    /// Store `value` under `key`.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.set_with(key, value, SetOptions::default())
    }

    /// Store `value` under `key` with options (TTL, if-not-exists).
    pub fn set_with<T: Serialize + ?Sized>(&self, key: &str, value: &T, options: SetOptions) -> Result<()> {
        self.set_bytes(key, &encode(value)?, options)
    }

    /// Store raw bytes under `key`.
    pub fn set_bytes(&self, key: &str, value: &[u8], options: SetOptions) -> Result<()> {
        Ok(self.inner.set(key, value, options.into())?)
    }

    /// Remove `key` (absent keys are fine).
    pub fn delete(&self, key: &str) -> Result<()> {
        Ok(self.inner.delete(key)?)
    }

    /// Whether a live value exists under `key`.
    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.inner.exists(key)?)
    }

    /// One page of keys starting with `prefix`, after `cursor`.
    pub fn list_keys(&self, prefix: &str, cursor: Option<&str>, limit: Option<u32>) -> Result<KeyPage> {
        let page = self.inner.list_keys(prefix, cursor, limit)?;
        Ok(KeyPage { keys: page.keys, cursor: page.cursor })
    }

    /// Every key starting with `prefix`, fetching pages as needed.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_keys(prefix, cursor.as_deref(), None)?;
            all.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// The values of `keys`, decoded, in order; read from one snapshot.
    pub fn get_many<T: DeserializeOwned>(&self, keys: &[&str]) -> Result<Vec<Option<T>>> {
        self.get_many_bytes(keys)?.into_iter().map(|v| v.map(|b| decode(&b)).transpose()).collect()
    }

    /// The raw values of `keys`, in order.
    pub fn get_many_bytes(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        Ok(self.inner.get_many(&keys)?)
    }

    /// Store every entry, all or none.
    pub fn set_many<T: Serialize>(&self, entries: &[(&str, T)]) -> Result<()> {
        let encoded = entries.iter().map(|(k, v)| Ok((k.to_string(), encode(v)?))).collect::<Result<Vec<_>>>()?;
        Ok(self.inner.set_many(&encoded, SetOptions::default().into())?)
    }

    /// Store raw entries, all or none, with options.
    pub fn set_many_bytes(&self, entries: &[(&str, &[u8])], options: SetOptions) -> Result<()> {
        let owned: Vec<(String, Vec<u8>)> = entries.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
        Ok(self.inner.set_many(&owned, options.into())?)
    }

    /// Remove every key, all or none.
    pub fn delete_many(&self, keys: &[&str]) -> Result<()> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        Ok(self.inner.delete_many(&keys)?)
    }

    /// Add `delta` to the counter under `key` (8-byte little-endian s64;
    /// absent = 0) and return the new value, atomically.
    ///
    /// Counters have their own encoding, not postcard: read one with
    /// [`Scope::counter`] and write one with [`Scope::set_counter`] (a typed
    /// `get::<i64>` of a counter fails with a decode error that says so, and
    /// `increment` of a value written by a typed `set` fails with
    /// `precondition-failed`). `wasi:keyvalue` counters are decimal text
    /// instead; see docs/wasi-keyvalue.md.
    ///
    /// ```no_run
    /// # fn f(scope: &databelt::Scope) -> databelt::Result<()> {
    /// scope.set_counter("visits", 5)?;
    /// assert_eq!(scope.increment("visits", 2)?, 7);
    /// assert_eq!(scope.counter("visits")?, 7);
    /// # Ok(()) }
    /// ```
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        Ok(self.inner.increment(key, delta)?)
    }

    /// The counter under `key` (absent: 0). Fails with a decode error when
    /// the value is not an 8-byte counter.
    pub fn counter(&self, key: &str) -> Result<i64> {
        match self.inner.get(key)? {
            None => Ok(0),
            Some(bytes) => {
                let arr: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    Error::Decode(format!(
                        "`{key}` holds {} bytes, not an 8-byte counter (was it written with `set`?)",
                        bytes.len()
                    ))
                })?;
                Ok(i64::from_le_bytes(arr))
            }
        }
    }

    /// Store `value` as the counter under `key`, in the encoding
    /// [`Scope::increment`] uses.
    pub fn set_counter(&self, key: &str, value: i64) -> Result<()> {
        self.set_bytes(key, &value.to_le_bytes(), SetOptions::default())
    }

    /// The value and its version, for [`Scope::compare_and_swap`].
    pub fn get_entry<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        match self.inner.get_entry(key)? {
            Some(e) => Ok(Some(Versioned { value: decode(&e.value)?, version: Version(e.version) })),
            None => Ok(None),
        }
    }

    /// Store `value` if the key's version is still `expected` (`None`: if the
    /// key is absent). On a stale expectation nothing is written and the
    /// current entry is returned.
    pub fn compare_and_swap<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        expected: Option<&Version>,
        value: &T,
    ) -> Result<Cas<T>> {
        let out = self.inner.compare_and_swap(key, expected.map(|v| v.0.as_slice()), &encode(value)?)?;
        Ok(match out {
            store::CasOutcome::Swapped(v) => Cas::Swapped(Version(v)),
            store::CasOutcome::Stale(None) => Cas::Stale(None),
            store::CasOutcome::Stale(Some(e)) => {
                Cas::Stale(Some(Versioned { value: decode(&e.value)?, version: Version(e.version) }))
            }
        })
    }

    /// Add `delta` to the counter under `key` of a *replicated* scope (a PN
    /// counter: additions on every replica are summed, none is lost);
    /// returns the local replica's value after it.
    pub fn counter_add(&self, key: &str, delta: i64) -> Result<i64> {
        Ok(lattice::counter_add(&self.inner, key, delta)?)
    }

    /// The local replica's value of the counter under `key` of a replicated
    /// scope (absent: 0).
    pub fn counter_get(&self, key: &str) -> Result<i64> {
        Ok(lattice::counter_get(&self.inner, key)?)
    }

    /// Add `members` to the set under `key` of a replicated scope (an
    /// OR-set: an add wins over a concurrent remove).
    pub fn set_add(&self, key: &str, members: &[&str]) -> Result<()> {
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        Ok(lattice::set_add(&self.inner, key, &members)?)
    }

    /// Remove `members` from the set under `key` of a replicated scope.
    pub fn set_remove(&self, key: &str, members: &[&str]) -> Result<()> {
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        Ok(lattice::set_remove(&self.inner, key, &members)?)
    }

    /// Whether the set under `key` of a replicated scope holds `member`.
    pub fn set_contains(&self, key: &str, member: &str) -> Result<bool> {
        Ok(lattice::set_contains(&self.inner, key, member)?)
    }

    /// The members of the set under `key` of a replicated scope, ascending.
    pub fn set_members(&self, key: &str) -> Result<Vec<String>> {
        Ok(lattice::set_members(&self.inner, key)?)
    }

    /// Every concurrent value (sibling) of `key` in a replicated scope,
    /// greatest stamp first: [`Scope::get`] returns the first; writing with
    /// [`Scope::set`] replaces all of them.
    pub fn siblings(&self, key: &str) -> Result<Vec<Sibling>> {
        Ok(lattice::siblings(&self.inner, key)?
            .into_iter()
            .map(|s| Sibling { value: s.value, stamp: s.stamp, node: s.node })
            .collect())
    }
}
