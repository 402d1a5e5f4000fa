//! Host configuration: limits and engine settings, with documented defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use databelt_types::{NodeId, ScopeName};

use crate::error::{Error, Result};
pub use crate::state::StateLimits;

/// Which state backend the host uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum BackendConfig {
    /// Volatile, in-process state: lost when the host stops.
    Memory,
    /// Durable state in one redb file (the default: `databelt-state.redb` in
    /// the data directory).
    Redb {
        /// Path of the database file.
        path: PathBuf,
    },
    /// State in a Redis server (a cloud node's managed store), e.g.
    /// `[backend] kind = "redis"`, `url = "redis://127.0.0.1:6379/0"`.
    Redis(crate::state::RedisConfig),
}

/// Everything a [`crate::Host`] can be configured with.
///
/// Loaded from TOML with [`HostConfig::from_toml`]; unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// This host's node id, reported to functions as `node-id`. Default "local".
    pub node_id: String,
    /// Where state lives. Default: redb at `./databelt-data/databelt-state.redb`.
    pub backend: BackendConfig,
    /// Directory of the on-disk compiled-component cache; `None` disables it.
    /// Default `./databelt-data/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Where deployed components are kept (`<name>.wasm`, and
    /// `<name>.scopes` for a scope allowlist) so that deployments survive a
    /// restart: the host deploys them again when it starts. `None` (the
    /// default): deployments live in memory only. [`HostConfig::in_dir`] and
    /// `databelt serve` use `<data dir>/functions`.
    pub functions_dir: Option<PathBuf>,
    /// Wall-clock budget of one invocation, in milliseconds; the guest is
    /// stopped (epoch interruption) once it runs past it. Default 5000.
    pub deadline_ms: u64,
    /// Granularity of the deadline, in milliseconds (one epoch tick). Default 10.
    pub epoch_tick_ms: u64,
    /// Largest linear memory one instance may grow to, in bytes. Default 64 MiB.
    pub max_memory_bytes: u64,
    /// Largest output (or hand-off input) a function may return, in bytes;
    /// a larger one fails the invocation with `quota-exceeded` before the
    /// host converts or stores it. Default 32 MiB (half the default memory
    /// limit).
    pub max_output_bytes: u64,
    /// Instances that can run at once (pooling allocator slots). Default 64.
    pub max_concurrent_instances: u32,
    /// Instances made ahead of their invocations, at most one per function
    /// (the most recently invoked or deployed keep theirs); each holds a
    /// pooling-allocator slot of its own, beside `max_concurrent_instances`.
    /// 0 makes every instance on the invocation's path. Default 8, at most
    /// 1024.
    pub prepared_instances: u32,
    /// Invocations that may wait for a slot when all are busy; more are
    /// refused at once with `unavailable`. Default 1024.
    pub max_queued_invocations: u32,
    /// Longest an invocation waits for a slot, ms; then `unavailable`.
    /// Default 10000.
    pub slot_wait_ms: u64,
    /// Steps one workflow run may chain with hand-offs on this host. Default 32.
    pub max_chain_steps: u32,
    /// Scopes functions may open; `None` allows every valid name.
    pub allowed_scopes: Option<Vec<String>>,
    /// Forward guest stdout/stderr to the host's stderr. Default false.
    pub inherit_stdio: bool,
    /// State-call limits.
    pub limits: StateLimits,
    /// Most bytes of request bodies the host's HTTP APIs hold in memory at
    /// once, over all requests; a request that does not fit is refused with
    /// 503 and `retry-after` before its body is read. Default 512 MiB.
    pub max_body_bytes_in_flight: u64,
    /// Longest a client may take to send a request's headers to the host's
    /// HTTP APIs, and longest a keep-alive connection may stay idle, ms.
    /// Default 30000.
    pub header_read_timeout_ms: u64,
    /// Most connections the host's HTTP APIs keep open at once; one more is
    /// closed as soon as it is accepted. Default 1024.
    pub max_connections: u32,
    /// How often expired entries are purged in the background, ms. Default
    /// 1000.
    pub purge_interval_ms: u64,
    /// Most expired entries one background purge deletes (so at most this many
    /// per `purge_interval_ms`: the purge never holds up state calls for long).
    /// Default 1000.
    pub purge_batch: u32,
    /// Durable runs this node keeps running as their origin; one more start
    /// is refused with `unavailable` (503) until one ends. Default 10000.
    pub max_durable_runs: u32,
    /// Durable-run steps that run at once on this host; more wait, durable
    /// in their inbox, for a turn. Default 64.
    pub max_running_steps: u32,
    /// Scopes kept as a full copy on several nodes (see
    /// docs/replication.md): scope name → its replicas, which must include
    /// this node. Default none.
    pub replicated: std::collections::BTreeMap<String, ReplicatedScope>,
}

/// One replicated scope of [`HostConfig::replicated`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicatedScope {
    /// The node ids of its replicas, this node among them.
    pub nodes: Vec<String>,
}

/// Most instances a host may make ahead (`prepared_instances`).
pub const MAX_PREPARED_INSTANCES: u32 = 1024;

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            node_id: "local".to_string(),
            backend: BackendConfig::Redb { path: PathBuf::from("databelt-data/databelt-state.redb") },
            cache_dir: Some(PathBuf::from("databelt-data/cache")),
            functions_dir: None,
            deadline_ms: 5_000,
            epoch_tick_ms: 10,
            max_memory_bytes: 64 * 1024 * 1024,
            max_output_bytes: 32 * 1024 * 1024,
            max_concurrent_instances: 64,
            prepared_instances: 8,
            max_queued_invocations: 1024,
            slot_wait_ms: 10_000,
            max_chain_steps: 32,
            allowed_scopes: None,
            inherit_stdio: false,
            limits: StateLimits::default(),
            max_body_bytes_in_flight: 512 * 1024 * 1024,
            header_read_timeout_ms: 30_000,
            max_connections: 1024,
            purge_interval_ms: 1_000,
            purge_batch: 1_000,
            max_durable_runs: 10_000,
            max_running_steps: 64,
            replicated: Default::default(),
        }
    }
}

impl HostConfig {
    /// Check what only holds once the node id is final (a layered file may
    /// be read before a `--node-id` flag): every replicated scope names
    /// this node among its replicas.
    pub fn validate_for_node(&self) -> Result<()> {
        self.validate()?;
        for (scope, r) in &self.replicated {
            if !r.nodes.contains(&self.node_id) {
                return Err(Error::Config(format!(
                    "replicated.{scope}.nodes lists {:?} but not this node (`{}`): list a scope only on its replicas",
                    r.nodes, self.node_id
                )));
            }
        }
        Ok(())
    }

    /// A configuration whose state, cache and files all live below `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        HostConfig {
            backend: BackendConfig::Redb { path: dir.join("databelt-state.redb") },
            cache_dir: Some(dir.join("cache")),
            functions_dir: Some(dir.join("functions")),
            ..HostConfig::default()
        }
    }

    /// Parse and validate a TOML configuration; what it leaves out keeps
    /// [`HostConfig::default`].
    pub fn from_toml(text: &str) -> Result<Self> {
        HostConfig::default().layered(text)
    }

    /// This configuration with the TOML `text` laid over it: every field the
    /// text sets replaces this one's (tables such as `[limits]` field by
    /// field, `[backend]` as a whole), every other field stays. The result
    /// is validated. This is how defaults → config file → flags are layered.
    pub fn layered(&self, text: &str) -> Result<Self> {
        // Read the text alone first: unknown fields and wrong types are
        // reported with the line they are on.
        toml::from_str::<HostConfig>(text).map_err(|e| Error::Config(toml_error(text, &e)))?;
        let over: toml::Table = toml::from_str(text).map_err(|e| Error::Config(toml_error(text, &e)))?;
        let mut base = toml::Table::try_from(self).map_err(|e| Error::Config(format!("defaults: {e}")))?;
        if over.contains_key("backend") {
            // A backend is one choice with its own fields: never merged.
            base.remove("backend");
        }
        let (sets_cache, sets_scopes) = (over.contains_key("cache_dir"), over.contains_key("allowed_scopes"));
        merge(&mut base, over);
        let mut config: HostConfig = toml::Value::Table(base)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.message().trim().to_string()))?;
        // TOML has no null: an optional field that is `None` here was left out
        // above and came back as its global default. Keep ours unless the
        // text set it.
        if !sets_cache {
            config.cache_dir = self.cache_dir.clone();
        }
        if !sets_scopes {
            config.allowed_scopes = self.allowed_scopes.clone();
        }
        config.validate()?;
        Ok(config)
    }

    /// The deadline as a [`Duration`].
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Check that every value is usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if let Err(e) = NodeId::new(self.node_id.as_str()) {
            return bad(format!("node_id: {e}"));
        }
        for (scope, r) in &self.replicated {
            match ScopeName::new(scope.as_str()) {
                Err(e) => return bad(format!("replicated.{scope}: {e}")),
                Ok(s) if s.is_reserved() => {
                    return bad(format!("replicated.{scope}: scopes of the host cannot be replicated"));
                }
                Ok(_) => {}
            }
            if let Some(bad_node) = r.nodes.iter().find(|n| NodeId::new(n.as_str()).is_err()) {
                return bad(format!("replicated.{scope}.nodes: `{bad_node}` is not a node id"));
            }
        }
        if self.epoch_tick_ms == 0 {
            return bad("epoch_tick_ms must be at least 1".into());
        }
        if self.deadline_ms < self.epoch_tick_ms {
            return bad(format!(
                "deadline_ms ({}) must be at least epoch_tick_ms ({})",
                self.deadline_ms, self.epoch_tick_ms
            ));
        }
        if self.max_memory_bytes < 1024 * 1024 {
            return bad(format!("max_memory_bytes must be at least 1 MiB, got {}", self.max_memory_bytes));
        }
        if self.max_output_bytes == 0 {
            return bad("max_output_bytes must be at least 1".into());
        }
        if self.max_concurrent_instances == 0 {
            return bad("max_concurrent_instances must be at least 1".into());
        }
        if self.prepared_instances > MAX_PREPARED_INSTANCES {
            return bad(format!(
                "prepared_instances must be at most {MAX_PREPARED_INSTANCES}, got {}",
                self.prepared_instances
            ));
        }
        if self.max_body_bytes_in_flight < 1024 * 1024 {
            return bad(format!(
                "max_body_bytes_in_flight must be at least 1 MiB, got {}",
                self.max_body_bytes_in_flight
            ));
        }
        if self.header_read_timeout_ms < 100 {
            return bad(format!("header_read_timeout_ms must be at least 100, got {}", self.header_read_timeout_ms));
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.purge_interval_ms < 10 {
            return bad(format!("purge_interval_ms must be at least 10, got {}", self.purge_interval_ms));
        }
        if self.purge_batch == 0 {
            return bad("purge_batch must be at least 1".into());
        }
        if self.max_durable_runs == 0 || self.max_running_steps == 0 {
            return bad("max_durable_runs and max_running_steps must be at least 1".into());
        }
        if self.max_chain_steps == 0 {
            return bad("max_chain_steps must be at least 1".into());
        }
        let l = &self.limits;
        if l.max_key_bytes == 0
            || l.max_value_bytes == 0
            || l.max_batch_keys == 0
            || l.max_sandbox_bytes == 0
            || l.max_sandbox_idle_ms == 0
        {
            return bad("limits must be at least 1".into());
        }
        if l.default_page_size == 0 || l.default_page_size > l.max_page_size {
            return bad(format!(
                "limits.default_page_size ({}) must be between 1 and max_page_size ({})",
                l.default_page_size, l.max_page_size
            ));
        }
        if let Some(scopes) = &self.allowed_scopes {
            for s in scopes {
                if let Err(e) = ScopeName::new(s.as_str()) {
                    return bad(format!("allowed_scopes: {e}"));
                }
            }
        }
        Ok(())
    }
}

/// Lay `over` onto `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A TOML parse error as one line, with the line it points at.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let line = e.span().and_then(|s| text.get(..s.start)).map(|before| before.lines().count().max(1));
    match line {
        Some(l) => format!("line {l}: {}", e.message().trim()),
        None => e.message().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicated_scopes_must_name_this_node_and_cannot_be_host_scopes() {
        let base = "node_id = \"sat1\"\n[backend]\nkind = \"memory\"\n";
        let ok =
            HostConfig::from_toml(&format!("{base}[replicated.fire-map]\nnodes = [\"sat1\", \"edge\"]\n")).unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.replicated["fire-map"].nodes, vec!["sat1".to_string(), "edge".to_string()]);
        for (bad, says) in [
            ("[replicated.fire-map]\nnodes = [\"edge\"]\n", "but not this node"),
            ("[replicated.\"databelt.runs\"]\nnodes = [\"sat1\"]\n", "cannot be replicated"),
            ("[replicated.fire-map]\nnodes = [\"sat1\", \"a/b\"]\n", "not a node id"),
        ] {
            let e = HostConfig::from_toml(&format!("{base}{bad}")).and_then(|c| c.validate_for_node()).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        let e = HostConfig::from_toml(&format!("{base}[replicated.x]\nnodes = []\nextra = 1\n")).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }

    #[test]
    fn a_redis_backend_is_configured_by_url_with_documented_defaults() {
        let c = HostConfig::from_toml("[backend]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n").unwrap();
        assert_eq!(c.backend, BackendConfig::Redis(crate::state::RedisConfig::new("redis://127.0.0.1:6379/0")));
        let e = HostConfig::from_toml("[backend]\nkind = \"redis\"\nurl = \"x\"\nport = 1\n").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn defaults_are_valid() {
        HostConfig::default().validate().unwrap();
    }

    #[test]
    fn toml_round_trip_and_partial() {
        let c = HostConfig::from_toml(
            "node_id = \"sat1\"\ndeadline_ms = 100\n[backend]\nkind = \"memory\"\n[limits]\nmax_key_bytes = 64\n",
        )
        .unwrap();
        assert_eq!(c.node_id, "sat1");
        assert_eq!(c.deadline_ms, 100);
        assert_eq!(c.backend, BackendConfig::Memory);
        assert_eq!(c.limits.max_key_bytes, 64);
        assert_eq!(c.limits.max_value_bytes, StateLimits::default().max_value_bytes);
    }

    #[test]
    fn a_file_is_laid_over_any_base() {
        let base = HostConfig {
            max_concurrent_instances: 16,
            cache_dir: None,
            backend: BackendConfig::Memory,
            limits: StateLimits { max_key_bytes: 99, ..StateLimits::default() },
            ..HostConfig::default()
        };
        let c = base.layered("deadline_ms = 700\n[limits]\nmax_batch_keys = 7\n").unwrap();
        assert_eq!((c.deadline_ms, c.max_concurrent_instances), (700, 16), "set fields replace, others stay");
        assert_eq!((c.limits.max_key_bytes, c.limits.max_batch_keys), (99, 7), "tables merge field by field");
        assert_eq!((c.cache_dir, c.backend), (None, BackendConfig::Memory), "absent optional fields stay None");
        let c = base.layered("[backend]\nkind = \"redb\"\npath = \"x.redb\"\n").unwrap();
        assert_eq!(c.backend, BackendConfig::Redb { path: PathBuf::from("x.redb") });
        assert_eq!(base.layered("").unwrap(), base, "an empty file changes nothing");
        let e = base.layered("\n\ndeadline_ms = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "errors name their line: {e}");
    }

    #[test]
    fn bad_config_files_are_rejected_with_a_reason() {
        let unknown = HostConfig::from_toml("nodeid = \"x\"").unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
        let tick = HostConfig::from_toml("epoch_tick_ms = 0").unwrap_err();
        assert!(tick.to_string().contains("epoch_tick_ms"), "{tick}");
        let scope = HostConfig::from_toml("allowed_scopes = [\"no spaces\"]").unwrap_err();
        assert!(scope.to_string().contains("no spaces"), "{scope}");
        let syntax = HostConfig::from_toml("deadline_ms = ").unwrap_err();
        assert!(matches!(syntax, Error::Config(_)));
        let page = HostConfig::from_toml("[limits]\ndefault_page_size = 5000").unwrap_err();
        assert!(page.to_string().contains("default_page_size"), "{page}");
    }
}
