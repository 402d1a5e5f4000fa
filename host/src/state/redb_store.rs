//! Durable backend on redb: one file, ACID transactions, MVCC readers.
//!
//! Layout: one table per scope, named `scope:<name>`, mapping the key to a
//! record (see `encoding`); a `databelt:meta` table holds the last version
//! issued, updated in the same transaction as the writes it versions.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use redb::{
    Database, ReadableDatabase, ReadableTable, Table, TableDefinition, TableError, TableHandle, WriteTransaction,
};

use super::encoding::{decode_record, decode_record_header, encode_record};
use super::{Decide, Entry, ScopedKey, StateStore, Versions, Write};
use crate::error::{Error, Result};

const META: TableDefinition<&str, u64> = TableDefinition::new("databelt:meta");
const LAST_VERSION: &str = "last_version";
const SCOPE_PREFIX: &str = "scope:";

fn scope_table(table_name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(table_name)
}

/// State in a redb database file. Every committed write is on disk (fsync)
/// before the call that made it returns, and concurrent writers share the
/// flush (group commit): callers take turns applying their transaction
/// inside one open redb write transaction, and the last caller to join it
/// commits it durably for everyone, while the next callers gather behind
/// that commit. Readers see a write only once it is durable.
pub struct RedbStore {
    db: Database,
    batch: Mutex<Batch>,
    /// Signalled when a batch's commit has an outcome.
    finished: Condvar,
    /// Callers about to join the open batch: while any are, the batch waits
    /// for them.
    joining: AtomicUsize,
}

/// The open group commit: one redb write transaction shared by its members.
#[derive(Default)]
struct Batch {
    txn: Option<WriteTransaction>,
    /// Number of the open (or next) batch.
    epoch: u64,
    /// Members of the open batch that wrote and wait for its commit.
    writers: usize,
    /// A member failed half-way through its writes: the batch must abort.
    poisoned: Option<String>,
    /// Outcomes of committed batches not yet read by all their writers:
    /// epoch → (outcome, writers still to read it).
    outcomes: HashMap<u64, (std::result::Result<(), String>, usize)>,
    /// Commits done: how many flushes the writes shared.
    commits: u64,
}

/// Why a member's work in a batch failed.
enum Failed {
    /// Before it wrote anything: the batch goes on without it.
    Refused(Error),
    /// After it began writing: the whole batch aborts.
    Writing(Error),
}

impl RedbStore {
    /// Open the database at `path`, creating it (and its directory) if needed.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::storage_in(format!("cannot create {}", dir.display()), e))?;
        }
        let db = Database::create(path).map_err(|e| Error::storage_in(format!("cannot open {}", path.display()), e))?;
        Ok(RedbStore {
            db,
            batch: Mutex::new(Batch::default()),
            finished: Condvar::new(),
            joining: AtomicUsize::new(0),
        })
    }

    /// Durable commits (flushes) since the store was opened; with
    /// concurrent writers it is below the number of write transactions.
    pub fn flushes(&self) -> u64 {
        self.batch.lock().map_or(0, |b| b.commits)
    }

    /// Run `work` inside the open batch and return once the batch is on
    /// disk. A `Refused` failure leaves the batch as it was; a `Writing`
    /// failure aborts the whole batch (its other members get an error too).
    fn in_batch<T>(&self, work: impl FnOnce(&WriteTransaction) -> std::result::Result<T, Failed>) -> Result<T> {
        let poisoned = || Error::storage_msg("group commit lock poisoned");
        self.joining.fetch_add(1, Ordering::SeqCst);
        let locked = self.batch.lock();
        self.joining.fetch_sub(1, Ordering::SeqCst);
        let mut b = locked.map_err(|_| poisoned())?;
        if b.txn.is_none() {
            // Waits here while the previous batch commits: the callers that
            // arrive meanwhile queue on the lock and join this batch.
            b.txn = Some(self.db.begin_write().map_err(Error::storage)?);
            b.epoch += 1;
        }
        let epoch = b.epoch;
        let Some(txn) = b.txn.as_ref() else { return Err(Error::storage_msg("no open write transaction")) };
        let result = work(txn);
        match &result {
            Ok(_) => b.writers += 1,
            Err(Failed::Writing(e)) => {
                b.poisoned.get_or_insert_with(|| e.to_string());
            }
            Err(Failed::Refused(_)) => {}
        }
        if self.joining.load(Ordering::SeqCst) == 0 {
            // The last to join commits for everyone.
            let txn = b.txn.take();
            let writers = std::mem::take(&mut b.writers);
            let abort = b.poisoned.take();
            drop(b);
            let outcome = match (txn, abort) {
                (Some(txn), None) if writers > 0 => txn.commit().map_err(|e| e.to_string()),
                (Some(txn), None) => txn.abort().map_err(|e| e.to_string()),
                (_, Some(why)) => Err(format!("a write in the same group commit failed: {why}")),
                (None, None) => Err("the write transaction vanished".to_string()),
            };
            b = self.batch.lock().map_err(|_| poisoned())?;
            if writers > 0 {
                b.commits += 1;
                b.outcomes.insert(epoch, (outcome, writers));
            }
            self.finished.notify_all();
        }
        let versions = match result {
            Ok(v) => v,
            Err(Failed::Refused(e) | Failed::Writing(e)) => return Err(e),
        };
        loop {
            if let Some((outcome, readers)) = b.outcomes.get_mut(&epoch) {
                let outcome = outcome.clone();
                *readers -= 1;
                if *readers == 0 {
                    b.outcomes.remove(&epoch);
                }
                return outcome.map(|()| versions).map_err(Error::storage_msg);
            }
            b = self.finished.wait(b).map_err(|_| poisoned())?;
        }
    }
}

/// The table of `scope` in `txn`, opened once per transaction.
fn open_scope<'t, 'm>(
    txn: &'t WriteTransaction,
    tables: &'m mut BTreeMap<String, Table<'t, &'static str, &'static [u8]>>,
    scope: &str,
) -> Result<&'m mut Table<'t, &'static str, &'static [u8]>> {
    if !tables.contains_key(scope) {
        let name = format!("{SCOPE_PREFIX}{scope}");
        let table = txn.open_table(scope_table(&name)).map_err(Error::storage)?;
        tables.insert(scope.to_string(), table);
    }
    tables.get_mut(scope).ok_or_else(|| Error::storage_msg("table vanished"))
}

impl StateStore for RedbStore {
    fn get(&self, scope: &str, key: &str) -> Result<Option<Entry>> {
        let name = format!("{SCOPE_PREFIX}{scope}");
        let txn = self.db.begin_read().map_err(Error::storage)?;
        let table = match txn.open_table(scope_table(&name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(Error::storage(e)),
        };
        match table.get(key).map_err(Error::storage)? {
            Some(v) => decode_record(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn get_many(&self, scope: &str, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        let name = format!("{SCOPE_PREFIX}{scope}");
        let txn = self.db.begin_read().map_err(Error::storage)?;
        let table = match txn.open_table(scope_table(&name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(Error::storage(e)),
        };
        keys.iter()
            .map(|k| match table.get(k.as_str()).map_err(Error::storage)? {
                Some(v) => decode_record(v.value()).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    fn scan(
        &self,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<String>, bool)> {
        let name = format!("{SCOPE_PREFIX}{scope}");
        let txn = self.db.begin_read().map_err(Error::storage)?;
        let table = match txn.open_table(scope_table(&name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), false)),
            Err(e) => return Err(Error::storage(e)),
        };
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut keys = Vec::new();
        let mut more = false;
        for item in table.range(start..).map_err(Error::storage)? {
            let (k, v) = item.map_err(Error::storage)?;
            let k = k.value();
            if Some(k) == after {
                continue;
            }
            if !k.starts_with(prefix) {
                break;
            }
            let (_, expires) = decode_record_header(v.value())
                .ok_or_else(|| Error::storage_msg(format!("corrupt record under `{k}`")))?;
            if expires.is_some_and(|t| now_ms >= t) {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(k.to_string());
        }
        Ok((keys, more))
    }

    fn transact(&self, keys: &[ScopedKey], decide: &mut Decide<'_>) -> Result<Versions> {
        self.in_batch(|txn| {
            let mut tables: BTreeMap<String, Table<'_, &'static str, &'static [u8]>> = BTreeMap::new();
            let mut current = Vec::with_capacity(keys.len());
            for k in keys {
                let table = open_scope(txn, &mut tables, &k.scope).map_err(Failed::Refused)?;
                let entry = table.get(k.key.as_str()).map_err(|e| Failed::Refused(Error::storage(e)))?;
                current.push(match entry {
                    Some(v) => Some(decode_record(v.value()).map_err(Failed::Refused)?),
                    None => None,
                });
            }
            // An error here writes nothing: the batch goes on without us.
            let writes = decide(&current).map_err(Failed::Refused)?;
            let w = |e: redb::Error| Failed::Writing(Error::storage(e));
            let mut meta = txn.open_table(META).map_err(|e| w(e.into()))?;
            let mut version = meta.get(LAST_VERSION).map_err(|e| w(e.into()))?.map_or(0, |v| v.value());
            let mut versions = Versions::new();
            for write in writes {
                match write {
                    Write::Put { key, value, expires_at_ms } => {
                        version += 1;
                        versions.push(version);
                        let record = encode_record(version, expires_at_ms, &value);
                        let table = open_scope(txn, &mut tables, &key.scope).map_err(Failed::Writing)?;
                        table.insert(key.key.as_str(), record.as_slice()).map_err(|e| w(e.into()))?;
                    }
                    Write::Delete { key } => {
                        let table = open_scope(txn, &mut tables, &key.scope).map_err(Failed::Writing)?;
                        table.remove(key.key.as_str()).map_err(|e| w(e.into()))?;
                    }
                }
            }
            if !versions.is_empty() {
                meta.insert(LAST_VERSION, version).map_err(|e| w(e.into()))?;
            }
            Ok(versions)
        })
    }

    fn purge_expired(&self, now_ms: u64, limit: usize) -> Result<usize> {
        let expired_at = |v: &[u8]| decode_record_header(v).is_some_and(|(_, exp)| exp.is_some_and(|t| t <= now_ms));
        // Find up to `limit` expired keys with a read transaction (writers go
        // on meanwhile) ...
        let mut found: Vec<(String, String)> = Vec::new();
        {
            let txn = self.db.begin_read().map_err(Error::storage)?;
            let names: Vec<String> = txn
                .list_tables()
                .map_err(Error::storage)?
                .map(|h| h.name().to_string())
                .filter(|n| n.starts_with(SCOPE_PREFIX))
                .collect();
            'tables: for name in names {
                let table = txn.open_table(scope_table(&name)).map_err(Error::storage)?;
                for item in table.iter().map_err(Error::storage)? {
                    if found.len() >= limit {
                        break 'tables;
                    }
                    let (k, v) = item.map_err(Error::storage)?;
                    if expired_at(v.value()) {
                        found.push((name.clone(), k.value().to_string()));
                    }
                }
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        // ... then delete them in one write transaction, each only if it is
        // still expired (a write since may have renewed it).
        self.in_batch(|txn| {
            let w = |e: redb::Error| Failed::Writing(Error::storage(e));
            let mut purged = 0;
            for (name, key) in &found {
                let mut table = txn.open_table(scope_table(name)).map_err(|e| w(e.into()))?;
                let still = table.get(key.as_str()).map_err(|e| w(e.into()))?.is_some_and(|v| expired_at(v.value()));
                if still {
                    table.remove(key.as_str()).map_err(|e| w(e.into()))?;
                    purged += 1;
                }
            }
            Ok(purged)
        })
    }
}
