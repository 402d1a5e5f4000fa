//! Durable backend on redb: one file, ACID transactions, MVCC readers.
//!
//! Layout: one table per scope, named `scope:<name>`, mapping the key to a
//! record (see `encoding`); a `databelt:meta` table holds the last version
//! issued, updated in the same transaction as the writes it versions.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle};

use super::encoding::{decode_record, decode_record_header, encode_record};
use super::{Decide, Entry, StateStore, Write};
use crate::error::{Error, Result};

const META: TableDefinition<&str, u64> = TableDefinition::new("databelt:meta");
const LAST_VERSION: &str = "last_version";
const SCOPE_PREFIX: &str = "scope:";

fn scope_table(table_name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(table_name)
}

/// State in a redb database file. Every committed write is on disk (fsync)
/// before the call that made it returns.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Open the database at `path`, creating it (and its directory) if needed.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::storage_in(format!("cannot create {}", dir.display()), e))?;
        }
        let db = Database::create(path).map_err(|e| Error::storage_in(format!("cannot open {}", path.display()), e))?;
        Ok(RedbStore { db })
    }
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

    fn transact(&self, scope: &str, keys: &[String], decide: &mut Decide<'_>) -> Result<Vec<u64>> {
        let name = format!("{SCOPE_PREFIX}{scope}");
        let txn = self.db.begin_write().map_err(Error::storage)?;
        let versions = {
            let mut table = txn.open_table(scope_table(&name)).map_err(Error::storage)?;
            let current = keys
                .iter()
                .map(|k| match table.get(k.as_str()).map_err(Error::storage)? {
                    Some(v) => decode_record(v.value()).map(Some),
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>>>()?;
            // On error the transaction is dropped uncommitted: nothing written.
            let writes = decide(&current)?;
            let mut meta = txn.open_table(META).map_err(Error::storage)?;
            let mut version = meta.get(LAST_VERSION).map_err(Error::storage)?.map_or(0, |v| v.value());
            let mut versions = Vec::new();
            for w in writes {
                match w {
                    Write::Put { key, value, expires_at_ms } => {
                        version += 1;
                        versions.push(version);
                        let record = encode_record(version, expires_at_ms, &value);
                        table.insert(key.as_str(), record.as_slice()).map_err(Error::storage)?;
                    }
                    Write::Delete { key } => {
                        table.remove(key.as_str()).map_err(Error::storage)?;
                    }
                }
            }
            if !versions.is_empty() {
                meta.insert(LAST_VERSION, version).map_err(Error::storage)?;
            }
            versions
        };
        txn.commit().map_err(Error::storage)?;
        Ok(versions)
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
        let txn = self.db.begin_write().map_err(Error::storage)?;
        let mut purged = 0;
        {
            for (name, key) in &found {
                let mut table = txn.open_table(scope_table(name)).map_err(Error::storage)?;
                let still = table.get(key.as_str()).map_err(Error::storage)?.is_some_and(|v| expired_at(v.value()));
                if still {
                    table.remove(key.as_str()).map_err(Error::storage)?;
                    purged += 1;
                }
            }
        }
        txn.commit().map_err(Error::storage)?;
        Ok(purged)
    }
}
