//! The Redis backend: the five store primitives on a Redis server, for a
//! cloud node whose state should live in a managed key-value service.
//!
//! Layout, under the configured key prefix `p` (default `databelt:`):
//!
//! - `p` `r:` `{len(scope)}:{scope}:{key}` — a record: the text
//!   `{version}:{expiry ms or empty}:` followed by the value's bytes;
//! - `p` `i:{scope}` — a sorted set of the scope's keys (all scores 0, so
//!   `ZRANGEBYLEX` pages them in byte order, as the other backends do);
//! - `p` `x` — a sorted set of records with a TTL, scored by expiry;
//! - `p` `v` — the store's version counter.
//!
//! **Atomicity.** A transaction reads its keys' records (one `MGET`, one
//! snapshot), lets `decide` choose the writes, and applies them in one Lua
//! script that first checks that no record it read has changed (by its
//! version) — optimistic concurrency, retried up to
//! [`RedisConfig::max_retries`] times, so transactions are serializable
//! like redb's. A script runs atomically on the server.
//!
//! **Durability.** An acknowledged write is as durable as the server's
//! persistence makes it: run Redis with `appendonly yes` and
//! `appendfsync always` for the guarantee the redb backend gives (the test
//! script does). [`RedisStore::open`] reports a server that does not.
//!
//! **Limits.** Every command has the configured timeout; connections are
//! pooled up to [`RedisConfig::max_connections`], and a call waits for a
//! free one at most the timeout.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Decide, Entry, ScopedKey, StateStore, Versions, Write};
use crate::error::{Error, Result};

/// How to reach the Redis server (`[backend] kind = "redis"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server's URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every key Databelt writes (several hosts may share a server
    /// under different prefixes). Default `databelt:`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Timeout of connecting and of every command, ms. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connections kept open at most. Default 16.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Times a transaction is retried after a concurrent write to a key it
    /// read, before it fails with `unavailable`. Default 100.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

fn default_prefix() -> String {
    "databelt:".into()
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_connections() -> usize {
    16
}
fn default_max_retries() -> u32 {
    100
}

impl RedisConfig {
    /// The server at `url` with the default settings.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: default_prefix(),
            timeout_ms: default_timeout_ms(),
            max_connections: default_max_connections(),
            max_retries: default_max_retries(),
        }
    }
}

/// Applies a transaction's writes if none of the records it read changed.
/// KEYS: the read records, then per write its record and scope index, then
/// the expiry index and the version counter. ARGV: the number of reads,
/// each read's expected header (`""`: absent), then per write its kind
/// (`P`/`D`), its index member, its expiry (`""`: none) and its value.
const APPLY: &str = r#"
local n = tonumber(ARGV[1])
for i = 1, n do
  local cur = redis.call('GET', KEYS[i])
  local want = ARGV[1 + i]
  if want == '' then
    if cur then return {-1} end
  else
    if (not cur) or string.sub(cur, 1, #want) ~= want then return {-1} end
  end
end
local xkey = KEYS[#KEYS - 1]
local vkey = KEYS[#KEYS]
local out = {}
local a = 2 + n
local k = n + 1
while a <= #ARGV do
  local kind, member, expiry, value = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local rkey, ikey = KEYS[k], KEYS[k + 1]
  if kind == 'P' then
    local v = redis.call('INCR', vkey)
    redis.call('SET', rkey, v .. ':' .. expiry .. ':' .. value)
    redis.call('ZADD', ikey, 0, member)
    if expiry == '' then
      redis.call('ZREM', xkey, rkey)
    else
      redis.call('ZADD', xkey, tonumber(expiry), rkey)
    end
    out[#out + 1] = v
  else
    redis.call('DEL', rkey)
    redis.call('ZREM', ikey, member)
    redis.call('ZREM', xkey, rkey)
  end
  a = a + 4
  k = k + 2
end
return out
"#;

/// Deletes up to ARGV[2] records expired at ARGV[1] (ms). KEYS: the expiry
/// index. ARGV[3]: the key prefix (to find each record's scope index).
const PURGE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local plen = #ARGV[3] + 2
for _, rkey in ipairs(due) do
  local rest = string.sub(rkey, plen + 1)
  local colon = string.find(rest, ':', 1, true)
  local slen = tonumber(string.sub(rest, 1, colon - 1))
  local scope = string.sub(rest, colon + 1, colon + slen)
  local key = string.sub(rest, colon + slen + 2)
  redis.call('DEL', rkey)
  redis.call('ZREM', ARGV[3] .. 'i:' .. scope, key)
  redis.call('ZREM', KEYS[1], rkey)
end
return #due
"#;

/// State in a Redis server.
pub struct RedisStore {
    client: redis::Client,
    config: RedisConfig,
    pool: Mutex<Vec<redis::Connection>>,
    /// Connections handed out.
    out: Mutex<usize>,
    freed: Condvar,
    apply: redis::Script,
    purge: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("config", &self.config).finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::storage_msg("redis pool lock poisoned by a panic")
}

fn storage(what: &str, e: redis::RedisError) -> Error {
    if e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        Error::Unavailable(format!("redis: {what}: {e}"))
    } else {
        Error::storage_msg(format!("redis: {what}: {e}"))
    }
}

/// A pooled connection, returned on drop (dropped instead after an error).
struct Lease<'a> {
    store: &'a RedisStore,
    conn: Option<redis::Connection>,
    broken: bool,
}

impl Lease<'_> {
    fn conn(&mut self) -> Result<&mut redis::Connection> {
        self.conn.as_mut().ok_or_else(|| Error::Runtime("redis connection already returned".into()))
    }

    fn run<T>(&mut self, what: &str, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T> {
        let r = f(self.conn()?);
        if let Err(e) = &r
            && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
        {
            self.broken = true;
        }
        r.map_err(|e| storage(what, e))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && !self.broken
            && let Ok(mut pool) = self.store.pool.lock()
        {
            pool.push(c);
        }
        if let Ok(mut out) = self.store.out.lock() {
            *out = out.saturating_sub(1);
        }
        self.store.freed.notify_one();
    }
}

impl RedisStore {
    /// Connect to the server `config` names (one connection, to check it).
    pub fn open(config: RedisConfig) -> Result<RedisStore> {
        if config.max_connections == 0 || config.timeout_ms == 0 {
            return Err(Error::Config("redis: max_connections and timeout_ms must be at least 1".into()));
        }
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::Config(format!("redis: `{}` is not a Redis URL: {e}", config.url)))?;
        let store = RedisStore {
            client,
            config,
            pool: Mutex::new(Vec::new()),
            out: Mutex::new(0),
            freed: Condvar::new(),
            apply: redis::Script::new(APPLY),
            purge: redis::Script::new(PURGE),
        };
        let mut lease = store.lease()?;
        let fsync: Vec<String> = lease
            .run("CONFIG GET", |c| redis::cmd("CONFIG").arg("GET").arg("appendfsync").query(c))
            .unwrap_or_default();
        if fsync.get(1).map(String::as_str) != Some("always") {
            tracing::warn!(
                url = %store.config.url,
                "redis does not fsync every write (appendfsync is not `always`): an acknowledged write may be lost in a crash"
            );
        }
        drop(lease);
        Ok(store)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn lease(&self) -> Result<Lease<'_>> {
        {
            let mut out = self.out.lock().map_err(poisoned)?;
            let deadline = std::time::Instant::now() + self.timeout();
            while *out >= self.config.max_connections {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(Error::Unavailable(format!(
                        "redis: all {} connections busy for {} ms",
                        self.config.max_connections, self.config.timeout_ms
                    )));
                }
                out = self.freed.wait_timeout(out, left).map_err(poisoned)?.0;
            }
            *out += 1;
        }
        let pooled = self.pool.lock().map_err(poisoned)?.pop();
        let mut lease = Lease { store: self, conn: None, broken: false };
        lease.conn = Some(match pooled {
            Some(c) => c,
            None => {
                let c = self.client.get_connection_with_timeout(self.timeout()).map_err(|e| storage("connect", e))?;
                c.set_read_timeout(Some(self.timeout())).map_err(|e| storage("set timeout", e))?;
                c.set_write_timeout(Some(self.timeout())).map_err(|e| storage("set timeout", e))?;
                c
            }
        });
        Ok(lease)
    }

    fn record_key(&self, scope: &str, key: &str) -> String {
        format!("{}r:{}:{scope}:{key}", self.config.prefix, scope.len())
    }

    fn index_key(&self, scope: &str) -> String {
        format!("{}i:{scope}", self.config.prefix)
    }

    fn expiry_key(&self) -> String {
        format!("{}x", self.config.prefix)
    }

    fn version_key(&self) -> String {
        format!("{}v", self.config.prefix)
    }
}

/// Split a record into its header (`{version}:{expiry}:`) and entry.
fn decode(raw: &[u8]) -> Result<(usize, Entry)> {
    let bad = || Error::storage_msg(format!("corrupt redis record of {} bytes", raw.len()));
    let first = raw.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let second = first + 1 + raw[first + 1..].iter().position(|b| *b == b':').ok_or_else(bad)?;
    let version = std::str::from_utf8(&raw[..first]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let expiry = &raw[first + 1..second];
    let expires_at_ms = if expiry.is_empty() {
        None
    } else {
        Some(std::str::from_utf8(expiry).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?)
    };
    Ok((second + 1, Entry { value: raw[second + 1..].to_vec(), version, expires_at_ms }))
}

impl StateStore for RedisStore {
    fn get(&self, scope: &str, key: &str) -> Result<Option<Entry>> {
        let k = self.record_key(scope, key);
        let raw: Option<Vec<u8>> = self.lease()?.run("GET", |c| redis::cmd("GET").arg(&k).query(c))?;
        raw.map(|r| decode(&r).map(|(_, e)| e)).transpose()
    }

    fn get_many(&self, scope: &str, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ks: Vec<String> = keys.iter().map(|k| self.record_key(scope, k)).collect();
        let raw: Vec<Option<Vec<u8>>> = self.lease()?.run("MGET", |c| redis::cmd("MGET").arg(&ks).query(c))?;
        raw.into_iter().map(|r| r.map(|r| decode(&r).map(|(_, e)| e)).transpose()).collect()
    }

    fn scan(
        &self,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<String>, bool)> {
        let index = self.index_key(scope);
        let mut lease = self.lease()?;
        let mut start: Vec<u8> = match after {
            Some(a) if a >= prefix => [b"(".as_slice(), a.as_bytes()].concat(),
            _ => [b"[".as_slice(), prefix.as_bytes()].concat(),
        };
        let (mut keys, batch) = (Vec::new(), (limit + 1).clamp(16, 1000));
        loop {
            let page: Vec<Vec<u8>> = lease.run("ZRANGEBYLEX", |c| {
                redis::cmd("ZRANGEBYLEX").arg(&index).arg(&start).arg("+").arg("LIMIT").arg(0).arg(batch).query(c)
            })?;
            let last = page.last().cloned();
            let names: Vec<String> = page
                .into_iter()
                .map(|k| String::from_utf8(k).map_err(|_| Error::storage_msg("redis: a key that is not UTF-8")))
                .collect::<Result<_>>()?;
            let within: Vec<&String> = names.iter().take_while(|k| k.starts_with(prefix)).collect();
            let ended = within.len() < names.len() || names.len() < batch;
            if !within.is_empty() {
                let ks: Vec<String> = within.iter().map(|k| self.record_key(scope, k)).collect();
                let raw: Vec<Option<Vec<u8>>> = lease.run("MGET", |c| redis::cmd("MGET").arg(&ks).query(c))?;
                for (k, r) in within.iter().zip(raw) {
                    let Some(r) = r else { continue };
                    if decode(&r)?.1.is_live(now_ms) {
                        if keys.len() == limit {
                            return Ok((keys, true));
                        }
                        keys.push((*k).clone());
                    }
                }
            }
            match last {
                Some(l) if !ended => start = [b"(".as_slice(), l.as_slice()].concat(),
                _ => return Ok((keys, false)),
            }
        }
    }

    fn transact(&self, keys: &[ScopedKey], decide: &mut Decide<'_>) -> Result<Versions> {
        let read_keys: Vec<String> = keys.iter().map(|k| self.record_key(&k.scope, &k.key)).collect();
        let mut lease = self.lease()?;
        for _ in 0..=self.config.max_retries {
            let raw: Vec<Option<Vec<u8>>> = if read_keys.is_empty() {
                Vec::new()
            } else {
                lease.run("MGET", |c| redis::cmd("MGET").arg(&read_keys).query(c))?
            };
            let mut current = Vec::with_capacity(raw.len());
            let mut expected: Vec<Vec<u8>> = Vec::with_capacity(raw.len());
            for r in &raw {
                match r {
                    Some(r) => {
                        let (header, entry) = decode(r)?;
                        expected.push(r[..header].to_vec());
                        current.push(Some(entry));
                    }
                    None => {
                        expected.push(Vec::new());
                        current.push(None);
                    }
                }
            }
            let writes = decide(&current)?;
            let mut invocation = self.apply.prepare_invoke();
            for k in &read_keys {
                invocation.key(k);
            }
            invocation.arg(read_keys.len());
            for e in &expected {
                invocation.arg(e.as_slice());
            }
            for w in &writes {
                let key = w.key();
                invocation.key(self.record_key(&key.scope, &key.key)).key(self.index_key(&key.scope));
                match w {
                    Write::Put { value, expires_at_ms, .. } => {
                        let expiry = expires_at_ms.map(|t| t.to_string()).unwrap_or_default();
                        invocation.arg("P").arg(&key.key).arg(expiry).arg(value.as_slice());
                    }
                    Write::Delete { .. } => {
                        invocation.arg("D").arg(&key.key).arg("").arg("");
                    }
                }
            }
            invocation.key(self.expiry_key()).key(self.version_key());
            let out: Vec<i64> = lease.run("transaction script", |c| invocation.invoke(c))?;
            if out.first() == Some(&-1) {
                // A record it read changed meanwhile: read and decide again.
                continue;
            }
            return out
                .into_iter()
                .map(|v| u64::try_from(v).map_err(|_| Error::storage_msg("redis: a negative version")))
                .collect();
        }
        Err(Error::Unavailable(format!(
            "redis: a transaction over {} keys conflicted {} times in a row",
            keys.len(),
            self.config.max_retries + 1
        )))
    }

    fn purge_expired(&self, now_ms: u64, limit: usize) -> Result<usize> {
        let mut invocation = self.purge.prepare_invoke();
        invocation.key(self.expiry_key()).arg(now_ms).arg(limit).arg(&self.config.prefix);
        let n: i64 = self.lease()?.run("purge script", |c| invocation.invoke(c))?;
        Ok(n.max(0) as usize)
    }
}

/// A `redis-server` on a free loopback port for one test, with append-only
/// fsync-always persistence in a temporary directory; stopped on drop.
#[cfg(test)]
pub(crate) struct TestServer {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    /// Its URL.
    pub(crate) url: String,
}

#[cfg(test)]
impl TestServer {
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub(crate) fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is not installed: scripts/test.sh installs it (or `apt-get install redis-server`)");
        let url = format!("redis://127.0.0.1:{port}/");
        let server = TestServer { child, _dir: dir, url };
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < until, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }
}

#[cfg(test)]
impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_their_header_and_refuse_garbage() {
        let (h, e) = decode(b"12:34:abc").unwrap();
        assert_eq!((h, e.version, e.expires_at_ms, e.value.as_slice()), (6, 12, Some(34), b"abc".as_slice()));
        let (_, e) = decode(b"7::a:b").unwrap();
        assert_eq!((e.version, e.expires_at_ms, e.value.as_slice()), (7, None, b"a:b".as_slice()));
        for bad in [b"".as_slice(), b"12", b"x:1:", b"1:y:"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_url_or_zero_limits_are_config_errors() {
        assert_eq!(RedisStore::open(RedisConfig::new("nope://x")).unwrap_err().kind(), crate::ErrorKind::Config);
        let zero = RedisConfig { max_connections: 0, ..RedisConfig::new("redis://127.0.0.1:1") };
        assert_eq!(RedisStore::open(zero).unwrap_err().kind(), crate::ErrorKind::Config);
    }
}
