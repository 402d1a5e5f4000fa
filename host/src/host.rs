//! The standalone host: one Engine, an `InstancePre` per deployed function, a
//! Store per invocation, with deadlines and memory limits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postcard_schema::schema::owned::OwnedNamedType;

use crate::grants::ScopeGrants;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::generated::{Function, FunctionPre};
use crate::bindings::{self, DatabeltCtx, DatabeltCtxView, DatabeltView, HandOff, Invocation, RunScope, StateOps};
use crate::config::{BackendConfig, HostConfig};
use databelt_types::{FunctionName, RunId};

use crate::error::{Error, Result};
use crate::prepared::Cleanup;
use crate::state::{MemoryStore, RedbStore, Sandboxes, StateStore, StateTier};

/// What a deployed function says about itself (from its `describe` export).
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    /// The name it is deployed under.
    pub name: String,
    /// The Rust function's own name.
    pub source_name: String,
    /// Schema of its input.
    pub input_schema: OwnedNamedType,
    /// Schema of its output.
    pub output_schema: OwnedNamedType,
    /// Run-scope keys it declared it reads (prefetched before it starts).
    pub reads: Vec<String>,
    /// The scopes it may open, fixed at deploy time; `None`: every scope
    /// the host allows.
    pub scopes: Option<ScopeGrants>,
}

pub(crate) struct Loaded {
    pre: FunctionPre<InvocationState>,
    pub(crate) info: FunctionInfo,
    /// An instance made ahead of the next invocation (see
    /// [`crate::prepared`]).
    spare: Mutex<Option<Prepared>>,
    /// One is being made (see [`crate::prepared::Spares::reserve`]).
    pub(crate) making: AtomicBool,
    /// This function's invocation counter and duration histogram for the
    /// outcome `ok`, registered on its first invocation (a registry lookup
    /// with its labels per invocation costs as much as a state call); other
    /// outcomes are looked up when they happen.
    ok_metrics: std::sync::OnceLock<(metrics::Counter, metrics::Histogram)>,
}

impl Loaded {
    fn new(pre: FunctionPre<InvocationState>, info: FunctionInfo) -> Loaded {
        Loaded {
            pre,
            info,
            spare: Mutex::new(None),
            making: AtomicBool::new(false),
            ok_metrics: std::sync::OnceLock::new(),
        }
    }

    /// Whether an instance made ahead is waiting.
    pub(crate) fn has_spare(&self) -> bool {
        self.spare.lock().is_ok_and(|s| s.is_some())
    }

    /// The instance made ahead, if one is waiting.
    pub(crate) fn take_spare(&self) -> Option<Prepared> {
        self.spare.lock().ok().and_then(|mut s| s.take())
    }

    /// Keep `prepared` for the next invocation.
    pub(crate) fn put_spare(&self, prepared: Prepared) {
        if let Ok(mut s) = self.spare.lock() {
            *s = Some(prepared);
        }
    }
}

/// An instance and its Store, made with placeholder contexts (see
/// [`Host::begin`]).
pub(crate) struct Prepared {
    store: Store<InvocationState>,
    instance: Function,
}

/// Options of one invocation.
#[derive(Debug, Clone)]
pub struct InvokeOptions {
    /// The workflow run id; a fresh one is generated when `None`.
    pub run_id: Option<RunId>,
    /// Check the input against the function's input schema before running it.
    /// Default true.
    pub validate_input: bool,
    /// Where `context.run-state` lives. `None`: a fresh in-memory scope that
    /// lasts for this invocation and its hand-off chain.
    pub run_scope: Option<RunScope>,
    /// The state tier the function's own scopes use; `None`: the host's.
    /// A workflow step passes a staged tier ([`StateTier::staged`]) so its
    /// writes commit atomically with the step.
    pub state: Option<StateTier>,
    /// This invocation's deadline, ms; it can only shorten the host's
    /// `deadline_ms` (a workflow step's own `deadline_ms`). `None`: the host's.
    pub deadline_ms: Option<u64>,
}

impl Default for InvokeOptions {
    fn default() -> Self {
        InvokeOptions { run_id: None, validate_input: true, run_scope: None, state: None, deadline_ms: None }
    }
}

/// One step that ran.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Which function.
    pub function: String,
    /// Its step number.
    pub step: u32,
    /// Wall time including instantiation.
    pub duration: Duration,
}

/// The result of [`Host::invoke`].
#[derive(Debug, Clone)]
pub struct InvokeOutcome {
    /// The run id the steps shared.
    pub run_id: RunId,
    /// The function whose output this is (the last step of the chain).
    pub function: String,
    /// Its output, postcard-encoded.
    pub output: Vec<u8>,
    /// Every step that ran, in order.
    pub steps: Vec<StepReport>,
    /// State operations of all steps, by tier.
    pub state_ops: StateOps,
    /// Run-scope keys written (and not deleted) by the steps, in order.
    pub run_written: Vec<String>,
}

/// Store data of one invocation (of a function, a command or an app).
pub(crate) struct InvocationState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    databelt: DatabeltCtx,
    keyvalue: crate::keyvalue::KeyValueCtx,
    #[cfg(feature = "http-apps")]
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    #[cfg(feature = "http-apps")]
    pub(crate) hooks: crate::apps::NoOutgoing,
    /// The guest's stderr, kept (bounded) when it is not inherited, to
    /// explain a trap with the guest's own panic message.
    stderr: Option<wasmtime_wasi::p2::pipe::MemoryOutputPipe>,
    limiter: MemoryLimiter,
    /// This invocation's deadline, ms.
    deadline_ms: u64,
}

impl crate::keyvalue::KeyValueView for InvocationState {
    fn keyvalue(&mut self) -> crate::keyvalue::KeyValueCtxView<'_> {
        crate::keyvalue::KeyValueCtxView { ctx: &mut self.keyvalue, table: &mut self.table }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl DatabeltView for InvocationState {
    fn databelt(&mut self) -> DatabeltCtxView<'_> {
        DatabeltCtxView { ctx: &mut self.databelt, table: &mut self.table }
    }
}

/// Caps linear memory and tables, and remembers that it refused a growth so
/// the resulting trap can be reported as a memory-limit error.
struct MemoryLimiter {
    max_memory: usize,
    refused: bool,
}

const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Increments the engine's epoch every tick until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("databelt-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Runtime(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

/// Purges expired entries of the host's state in the background (at most
/// `batch` every `interval`) and drops fusion sandboxes idle past their own
/// TTL, until dropped.
struct Purger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Purger {
    fn start(tier: StateTier, sandboxes: Sandboxes, interval: Duration, batch: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("databelt-purge".into())
            .spawn(move || {
                // Sleep in short steps so that dropping the host is prompt.
                let step = interval.min(Duration::from_millis(50));
                let mut waited = Duration::ZERO;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < interval {
                        continue;
                    }
                    waited = Duration::ZERO;
                    match tier.purge_expired(batch) {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(purged = n, "purged expired entries"),
                        Err(e) => tracing::warn!(error = %e, "purging expired entries failed; retrying next interval"),
                    }
                    match sandboxes.sweep() {
                        Ok(gone) => {
                            for run in gone {
                                tracing::warn!(%run, "dropped an idle fusion sandbox (its run was never cleaned up)");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "sweeping idle sandboxes failed; retrying next interval"),
                    }
                }
            })
            .map_err(|e| Error::Runtime(format!("cannot start the purge thread: {e}")))?;
        Ok(Purger { stop, thread: Some(thread) })
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) struct HostInner {
    engine: Engine,
    linker: Linker<InvocationState>,
    /// The linker of `wasi:http/proxy` apps (async WASI and wasi:http).
    #[cfg(feature = "http-apps")]
    http_linker: Linker<InvocationState>,
    #[cfg(feature = "http-apps")]
    apps: RwLock<HashMap<String, Arc<crate::apps::App>>>,
    tier: StateTier,
    sandboxes: Sandboxes,
    config: HostConfig,
    functions: RwLock<HashMap<String, Arc<Loaded>>>,
    run_counter: AtomicU64,
    slots: crate::slots::Slots,
    body_budget: Arc<crate::budget::ByteBudget>,
    spares: crate::prepared::Spares,
    /// The grants of the placeholder contexts an instance is made with:
    /// none.
    no_scopes: Arc<ScopeGrants>,
    _ticker: EpochTicker,
    _purger: Purger,
}

/// A Databelt host: deploys functions and invokes them with state. Cheap to
/// clone; clones share everything.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

/// Builds a [`Host`].
pub struct HostBuilder {
    config: HostConfig,
    store: Option<Arc<dyn StateStore>>,
}

impl HostBuilder {
    /// Start from `config`.
    pub fn new(config: HostConfig) -> Self {
        HostBuilder { config, store: None }
    }

    /// Use this state backend instead of the one the config names.
    pub fn state_store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Create the engine, open the state backend and start the epoch ticker
    /// and the background purge of expired entries.
    pub fn build(self) -> Result<Host> {
        let config = self.config;
        config.validate_for_node()?;
        let store: Arc<dyn StateStore> = match self.store {
            Some(s) => s,
            None => match &config.backend {
                BackendConfig::Memory => Arc::new(MemoryStore::new()),
                BackendConfig::Redb { path } => Arc::new(RedbStore::open(path)?),
                BackendConfig::Redis(r) => Arc::new(crate::state::RedisStore::open(r.clone())?),
            },
        };
        let mut tier = StateTier::new(store, config.limits.clone()).with_allowed_scopes(config.allowed_scopes.clone());
        if !config.replicated.is_empty() {
            let scopes = config.replicated.iter().map(|(s, r)| (s.clone(), r.nodes.clone())).collect();
            tier = tier.with_replication(crate::state::replica::Replication::new(config.node_id.clone(), scopes));
        }
        let engine = new_engine(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(runtime)?;
        bindings::add_to_linker(&mut linker).map_err(runtime)?;
        crate::keyvalue::add_to_linker(&mut linker).map_err(runtime)?;
        #[cfg(feature = "http-apps")]
        let http_linker = {
            let mut http_linker = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut http_linker).map_err(runtime)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker).map_err(runtime)?;
            bindings::add_to_linker(&mut http_linker).map_err(runtime)?;
            crate::keyvalue::add_to_linker(&mut http_linker).map_err(runtime)?;
            http_linker
        };
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(config.epoch_tick_ms))?;
        let slots = crate::slots::Slots::new(
            config.max_concurrent_instances,
            config.max_queued_invocations,
            Duration::from_millis(config.slot_wait_ms),
        );
        let sandboxes = Sandboxes::new(config.limits.clone());
        let body_budget = crate::budget::ByteBudget::new(config.max_body_bytes_in_flight);
        let purger = Purger::start(
            tier.clone(),
            sandboxes.clone(),
            Duration::from_millis(config.purge_interval_ms),
            config.purge_batch as usize,
        )?;
        let spares = crate::prepared::Spares::new(config.prepared_instances as usize);
        let host = Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                #[cfg(feature = "http-apps")]
                http_linker,
                #[cfg(feature = "http-apps")]
                apps: RwLock::new(HashMap::new()),
                sandboxes,
                tier,
                config,
                functions: RwLock::new(HashMap::new()),
                run_counter: AtomicU64::new(0),
                slots,
                body_budget,
                spares,
                no_scopes: Arc::new(ScopeGrants::default()),
                _ticker: ticker,
                _purger: purger,
            }),
        };
        host.redeploy_kept()?;
        Ok(host)
    }
}

fn runtime(e: impl std::fmt::Display) -> Error {
    Error::Runtime(e.to_string())
}

/// Bytes of each pooled linear memory reset in place (only the pages the
/// instance dirtied, found with Linux's `PAGEMAP_SCAN` where the kernel has
/// it) instead of being decommitted with `madvise`: the next instance in the
/// slot takes no page faults there and the host no TLB shoot-downs. Bounds
/// the resident memory the pool keeps at this much per instance slot.
const KEEP_RESIDENT_MEMORY_BYTES: usize = 4 * 1024 * 1024;

/// The same for each pooled table.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 * 1024;

/// Build the one Engine of a host: component model, epoch interruption,
/// pooling allocator sized by the config, compiled-code cache.
fn new_engine(config: &HostConfig) -> Result<Engine> {
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    // Invocations hold at most `max_concurrent_instances` slots (the gate in
    // front of the pool); instances prepared ahead have their own.
    let n = config.max_concurrent_instances.saturating_add(config.prepared_instances);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(8))
        .max_memory_size(config.max_memory_bytes as usize)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY_BYTES.min(config.max_memory_bytes as usize))
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(dir) = &config.cache_dir {
        let dir = std::path::absolute(dir)
            .map_err(|e| Error::Config(format!("compiled-code cache at {}: {e}", dir.display())))?;
        let mut cache_config = wasmtime::CacheConfig::new();
        cache_config.with_directory(&dir);
        let cache = wasmtime::Cache::new(cache_config)
            .map_err(|e| Error::Config(format!("compiled-code cache at {}: {e}", dir.display())))?;
        cfg.cache(Some(cache));
    }
    Engine::new(&cfg).map_err(runtime)
}

/// Reject what is not a component before handing it to the compiler.
pub(crate) fn check_component_bytes(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(Error::InvalidComponent("the file is not a WebAssembly binary (no `\\0asm` header)".into()));
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(Error::CoreModule),
        [_, _, 1, 0] => Ok(()),
        _ => Err(Error::InvalidComponent(format!("unknown WebAssembly version/layer {:?}", &bytes[4..8]))),
    }
}

/// One line describing a wasmtime error (its causes joined).
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        let first = s.lines().next().unwrap_or_default().trim().to_string();
        if !first.is_empty() && !parts.contains(&first) {
            parts.push(first);
        }
    }
    parts.join(": ")
}

impl Host {
    /// A host built from `config` with its default backend.
    pub fn new(config: HostConfig) -> Result<Host> {
        HostBuilder::new(config).build()
    }

    /// The configuration in force.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The state tier, for direct (host-side) reads and writes.
    pub fn state(&self) -> &StateTier {
        &self.inner.tier
    }

    /// The memory budget for request bodies in flight on this host's HTTP
    /// APIs (`max_body_bytes_in_flight`).
    pub fn body_budget(&self) -> &Arc<crate::budget::ByteBudget> {
        &self.inner.body_budget
    }

    /// The fusion sandboxes of the workflow runs active on this host.
    pub fn sandboxes(&self) -> &Sandboxes {
        &self.inner.sandboxes
    }

    /// The engine, for embedders that compile their own components.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<InvocationState> {
        &self.inner.linker
    }

    #[cfg(feature = "http-apps")]
    pub(crate) fn http_linker(&self) -> &Linker<InvocationState> {
        &self.inner.http_linker
    }

    #[cfg(feature = "http-apps")]
    pub(crate) fn apps(&self) -> &RwLock<HashMap<String, Arc<crate::apps::App>>> {
        &self.inner.apps
    }

    pub(crate) fn slots(&self) -> &crate::slots::Slots {
        &self.inner.slots
    }

    /// Instance slots held now, and invocations waiting for one.
    pub fn slot_usage(&self) -> (u32, u32) {
        self.inner.slots.usage()
    }

    /// The instance slots of this host (`max_concurrent_instances`).
    pub fn slot_capacity(&self) -> u32 {
        self.inner.config.max_concurrent_instances
    }

    /// Deploy the component at `path` under `name`.
    pub fn deploy_file(&self, name: &str, path: &Path) -> Result<FunctionInfo> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::InvalidComponent(format!("cannot read {}: {e}", path.display())))?;
        self.deploy(name, &bytes)
    }

    /// Compile, link and check a component, then deploy it under `name`
    /// (replacing a function of that name). A component that fails any check
    /// is rejected and the registry is left as it was.
    pub fn deploy(&self, name: &str, bytes: &[u8]) -> Result<FunctionInfo> {
        self.deploy_with_scopes(name, bytes, None)
    }

    /// [`Host::deploy`], limiting the scopes the function may open to
    /// `scopes` (read-only or read-write each; see [`crate::grants`]).
    pub fn deploy_with_scopes(&self, name: &str, bytes: &[u8], scopes: Option<ScopeGrants>) -> Result<FunctionInfo> {
        let info = self.load_function(name, bytes, scopes)?;
        if let Some(dir) = &self.inner.config.functions_dir {
            // Kept only once it passed every check; written whole or not at all.
            let keep = || -> std::io::Result<()> {
                std::fs::create_dir_all(dir)?;
                let grants = dir.join(format!("{name}.scopes"));
                match &info.scopes {
                    Some(g) => write_whole(&grants, g.to_string().as_bytes())?,
                    None if grants.exists() => std::fs::remove_file(&grants)?,
                    None => {}
                }
                write_whole(&dir.join(format!("{name}.wasm")), bytes)
            };
            keep().map_err(|e| Error::storage_in(format!("cannot keep `{name}` in {}", dir.display()), e))?;
        }
        Ok(info)
    }

    /// Deploy every component kept in the functions directory (at start).
    /// One that no longer loads (this host's engine changed, or the file is
    /// damaged) is skipped with a warning; the others are deployed.
    fn redeploy_kept(&self) -> Result<usize> {
        let Some(dir) = self.inner.config.functions_dir.clone() else { return Ok(0) };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::storage_in(format!("cannot read {}", dir.display()), e)),
        };
        let mut deployed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else { continue };
            #[cfg(feature = "http-apps")]
            if let Some(name) = file.strip_suffix(&format!(".{}", crate::apps::APP_SUFFIX)) {
                match std::fs::read(&path).map_err(|e| Error::InvalidComponent(e.to_string())) {
                    Ok(bytes) => match self.load_app(name, &bytes) {
                        Ok(()) => deployed += 1,
                        Err(e) => tracing::warn!(app = name, error = %e, "a kept app could not be loaded; skipped"),
                    },
                    Err(e) => tracing::warn!(app = name, error = %e, "a kept app could not be read; skipped"),
                }
                continue;
            }
            let Some(name) = file.strip_suffix(".wasm") else {
                continue;
            };
            let loaded = std::fs::read(&path).map_err(|e| Error::InvalidComponent(e.to_string())).and_then(|bytes| {
                let grants = match std::fs::read_to_string(dir.join(format!("{name}.scopes"))) {
                    Ok(text) => Some(ScopeGrants::parse(text.trim())?),
                    Err(_) => None,
                };
                self.load_function(name, &bytes, grants)
            });
            match loaded {
                Ok(_) => deployed += 1,
                Err(e) => tracing::warn!(function = name, error = %e, "a kept deployment could not be loaded; skipped"),
            }
        }
        Ok(deployed)
    }

    /// Run every deploy-time check on a component and describe it as it
    /// would be deployed under `name`, without deploying it.
    pub fn describe(&self, name: &str, bytes: &[u8]) -> Result<FunctionInfo> {
        Ok(self.compile(name, bytes, None)?.1)
    }

    /// Check and register a component under `name` (not kept on disk).
    fn load_function(&self, name: &str, bytes: &[u8], scopes: Option<ScopeGrants>) -> Result<FunctionInfo> {
        let (pre, info) = self.compile(name, bytes, scopes)?;
        let loaded = Arc::new(Loaded::new(pre, info.clone()));
        self.inner
            .functions
            .write()
            .map_err(|_| Error::Runtime("function registry lock poisoned".into()))?
            .insert(name.to_string(), loaded.clone());
        self.prepare_spare(&loaded);
        Ok(info)
    }

    /// Compile, link, check and describe a component.
    fn compile(
        &self,
        name: &str,
        bytes: &[u8],
        scopes: Option<ScopeGrants>,
    ) -> Result<(FunctionPre<InvocationState>, FunctionInfo)> {
        FunctionName::new(name)?;
        check_component_bytes(bytes)?;
        let component = Component::new(&self.inner.engine, bytes).map_err(|e| Error::InvalidComponent(one_line(&e)))?;
        let instance_pre =
            self.inner.linker.instantiate_pre(&component).map_err(|e| Error::WrongWorld(one_line(&e)))?;
        let pre = FunctionPre::new(instance_pre).map_err(|e| Error::WrongWorld(one_line(&e)))?;
        let raw = {
            let invocation = Invocation {
                run_id: "describe".into(),
                function: name.to_string(),
                step: 0,
                node_id: self.inner.config.node_id.clone(),
            };
            let slot = self.inner.slots.acquire()?;
            let described = {
                let Prepared { mut store, instance } = self.make_instance(&pre)?;
                let deadline = self.inner.config.deadline_ms;
                self.begin(&mut store, invocation, self.inner.tier.clone(), None, None, deadline);
                let r = instance.databelt_state_handler().call_describe(&mut store);
                r.map_err(|e| self.classify(&store, e))
            };
            // The Store (and its pooled instance) is gone; now the slot.
            drop(slot);
            described?
        };
        let decode = crate::schema::decode_schema;
        let info = FunctionInfo {
            name: name.to_string(),
            source_name: raw.name,
            input_schema: decode(&raw.input_schema, "input")?,
            output_schema: decode(&raw.output_schema, "output")?,
            reads: raw.reads,
            scopes,
        };
        Ok((pre, info))
    }

    /// Remove a deployed function; returns whether it existed.
    pub fn undeploy(&self, name: &str) -> Result<bool> {
        let mut map =
            self.inner.functions.write().map_err(|_| Error::Runtime("function registry lock poisoned".into()))?;
        if let Some(dir) = &self.inner.config.functions_dir {
            for ext in ["wasm", "scopes"] {
                let _ = std::fs::remove_file(dir.join(format!("{name}.{ext}")));
            }
        }
        Ok(map.remove(name).is_some())
    }

    /// The deployed functions, sorted by name.
    pub fn functions(&self) -> Vec<FunctionInfo> {
        let map = match self.inner.functions.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut v: Vec<FunctionInfo> = map.values().map(|l| l.info.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The description of the function deployed as `name`.
    pub fn function(&self, name: &str) -> Result<FunctionInfo> {
        Ok(self.loaded(name)?.info.clone())
    }

    fn loaded(&self, name: &str) -> Result<Arc<Loaded>> {
        let map = self.inner.functions.read().map_err(|_| Error::Runtime("function registry lock poisoned".into()))?;
        map.get(name).cloned().ok_or_else(|| Error::UnknownFunction(name.to_string()))
    }

    pub(crate) fn fresh_run_id(&self) -> RunId {
        self.new_run_id()
    }

    fn new_run_id(&self) -> RunId {
        let n = self.inner.run_counter.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let raw = format!("{}-{t:x}-{n}", self.inner.config.node_id);
        // A valid node id makes a valid run id: check it rather than copy it.
        match RunId::new(raw) {
            Ok(id) => id,
            Err(_) => RunId::sanitized(&format!("{}-{t:x}-{n}", self.inner.config.node_id)),
        }
    }

    /// An instance of `pre` in a Store with placeholder contexts, ready for
    /// [`Host::begin`]: what every function invocation runs in, whether it
    /// was made ahead or on the invocation's path.
    fn make_instance(&self, pre: &FunctionPre<InvocationState>) -> Result<Prepared> {
        let mut store = self.blank_store(&[]);
        match pre.instantiate(&mut store) {
            Ok(instance) => Ok(Prepared { store, instance }),
            Err(e) => Err(self.classify(&store, e)),
        }
    }

    /// Make an instance of `loaded` ahead of its next invocation, if there is
    /// room for one (see [`crate::prepared`]).
    pub(crate) fn prepare_spare(&self, loaded: &Arc<Loaded>) {
        if !self.inner.spares.reserve(loaded) {
            return;
        }
        let made = self.make_instance(&loaded.pre);
        if let Err(e) = &made {
            tracing::debug!(function = %loaded.info.name, error = %e, "no instance prepared ahead");
        }
        self.inner.spares.keep(loaded, made.ok());
    }

    /// Instances made ahead of their invocations, held now.
    pub fn prepared_instances(&self) -> usize {
        self.inner.spares.count()
    }

    /// A Store for one invocation: WASI (with `args`), Databelt and
    /// wasi:keyvalue contexts over `tier`, the memory limit and the deadline.
    pub(crate) fn new_store(
        &self,
        invocation: Invocation,
        tier: StateTier,
        run_scope: Option<RunScope>,
        grants: Option<Arc<ScopeGrants>>,
        deadline_ms: u64,
        args: &[String],
    ) -> Store<InvocationState> {
        let mut store = self.blank_store(args);
        self.begin(&mut store, invocation, tier, run_scope, grants, deadline_ms);
        store
    }

    /// A Store with WASI (with `args`, stderr kept or inherited), the memory
    /// limit, the host's deadline, and placeholder Databelt and wasi:keyvalue
    /// contexts that refuse every scope (a component's start function runs
    /// in them).
    fn blank_store(&self, args: &[String]) -> Store<InvocationState> {
        let inner = &self.inner;
        let mut wasi = WasiCtxBuilder::new();
        let mut stderr = None;
        if inner.config.inherit_stdio {
            wasi.inherit_stdout().inherit_stderr();
        } else {
            let pipe = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(MAX_KEPT_STDERR);
            wasi.stderr(pipe.clone());
            stderr = Some(pipe);
        }
        wasi.args(args);
        let placeholder = Invocation {
            run_id: String::new(),
            function: String::new(),
            step: 0,
            node_id: inner.config.node_id.clone(),
        };
        let no_scopes = Some(inner.no_scopes.clone());
        let state = InvocationState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            databelt: DatabeltCtx::new(inner.tier.clone(), placeholder).with_grants(no_scopes.clone()),
            keyvalue: crate::keyvalue::KeyValueCtx::new(inner.tier.clone()).with_grants(no_scopes),
            #[cfg(feature = "http-apps")]
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            #[cfg(feature = "http-apps")]
            hooks: crate::apps::NoOutgoing,
            stderr,
            limiter: MemoryLimiter { max_memory: inner.config.max_memory_bytes as usize, refused: false },
            deadline_ms: inner.config.deadline_ms,
        };
        let mut store = Store::new(&inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(deadline_ticks(&inner.config, inner.config.deadline_ms));
        store.epoch_deadline_trap();
        store
    }

    /// Give a Store made by [`Host::blank_store`] the invocation's own
    /// contexts over `tier`, and its deadline from now.
    fn begin(
        &self,
        store: &mut Store<InvocationState>,
        invocation: Invocation,
        tier: StateTier,
        run_scope: Option<RunScope>,
        grants: Option<Arc<ScopeGrants>>,
        deadline_ms: u64,
    ) {
        let host = Arc::downgrade(&self.inner);
        let check: bindings::SuccessorCheck = Arc::new(move |name: &str| {
            host.upgrade().is_some_and(|h| h.functions.read().is_ok_and(|m| m.contains_key(name)))
        });
        let data = store.data_mut();
        data.keyvalue = crate::keyvalue::KeyValueCtx::new(tier.clone()).with_grants(grants.clone());
        let databelt = DatabeltCtx::new(tier, invocation).with_successor_check(check).with_grants(grants);
        data.databelt = match run_scope {
            Some(r) => databelt.with_run_scope(r),
            None => databelt,
        };
        data.deadline_ms = deadline_ms;
        store.set_epoch_deadline(deadline_ticks(&self.inner.config, deadline_ms));
    }

    /// Turn a wasmtime failure into the error that explains it.
    pub(crate) fn classify(&self, store: &Store<InvocationState>, e: wasmtime::Error) -> Error {
        if store.data().limiter.refused {
            return Error::MemoryLimitExceeded(self.inner.config.max_memory_bytes);
        }
        let panic = store.data().stderr.as_ref().and_then(|p| panic_message(&String::from_utf8_lossy(&p.contents())));
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Error::DeadlineExceeded(store.data().deadline_ms),
            Some(Trap::StackOverflow) => Error::Trap("stack overflow: the function recursed too deeply".into()),
            Some(Trap::MemoryOutOfBounds) if shadow_stack_overflow(&one_line(&e)) => Error::Trap(
                "stack overflow: the function recursed too deeply (its stack ran off the start of its linear memory)"
                    .into(),
            ),
            Some(_) => match panic {
                Some(p) => Error::Trap(format!("the function panicked: {p}")),
                None => Error::Trap(one_line(&e)),
            },
            None => Error::Runtime(one_line(&e)),
        }
    }

    /// Check `input` against the input schema of `name`.
    pub fn validate_input(&self, name: &str, input: &[u8]) -> Result<()> {
        let loaded = self.loaded(name)?;
        crate::schema::check_postcard(&loaded.info.input_schema, input)
    }

    /// Run `name` on `input` (postcard), then every successor it hands off
    /// to, and return the last output.
    pub fn invoke(&self, name: &str, input: &[u8], options: InvokeOptions) -> Result<InvokeOutcome> {
        let (outcome, cleanup) = self.invoke_deferring_cleanup(name, input, options);
        cleanup.run();
        outcome
    }

    /// [`Host::invoke`], answering before the clean-up: the last Store's
    /// teardown (and the freeing of its instance slot) and the making of
    /// the next instance of each function that ran are left in the returned
    /// [`Cleanup`]. Hand the answer on, then run it (dropping it runs it
    /// too); see [`crate::prepared`].
    pub fn invoke_deferring_cleanup(
        &self,
        name: &str,
        input: &[u8],
        options: InvokeOptions,
    ) -> (Result<InvokeOutcome>, Cleanup) {
        let mut cleanup = Cleanup::new(self.clone());
        let outcome = self.run_chain(name, input, options, &mut cleanup);
        (outcome, cleanup)
    }

    /// Run `name`, then every successor it hands off to.
    fn run_chain(
        &self,
        name: &str,
        input: &[u8],
        options: InvokeOptions,
        cleanup: &mut Cleanup,
    ) -> Result<InvokeOutcome> {
        let run_id = match options.run_id {
            Some(r) => r,
            None => self.new_run_id(),
        };
        let run_scope = match options.run_scope {
            Some(r) => r,
            None => {
                let ephemeral = crate::state::Sandbox::ephemeral(self.inner.config.limits.clone());
                RunScope::new(ephemeral.tier().clone(), "run", "", true)
            }
        };
        let mut steps = Vec::new();
        let mut state_ops = StateOps::default();
        let mut run_written: Vec<String> = Vec::new();
        let mut function = name.to_string();
        let mut input = input.to_vec();
        let mut step = 0u32;
        loop {
            let loaded = self.loaded(&function)?;
            if options.validate_input || step > 0 {
                crate::schema::check_postcard(&loaded.info.input_schema, &input).map_err(|e| {
                    if step > 0 { Error::BadInput(format!("hand-off to `{function}`: {e}")) } else { e }
                })?;
            }
            let started = Instant::now();
            let invocation = Invocation {
                run_id: run_id.to_string(),
                function: function.clone(),
                step,
                node_id: self.inner.config.node_id.clone(),
            };
            let deadline =
                options.deadline_ms.map_or(self.inner.config.deadline_ms, |d| d.min(self.inner.config.deadline_ms));
            let state = options.state.as_ref();
            let called = self.call_once(&loaded, invocation, &input, &run_scope, state, deadline, cleanup)?;
            steps.push(StepReport { function: function.clone(), step, duration: started.elapsed() });
            state_ops.add(&called.ops);
            for key in called.run_written {
                if !run_written.contains(&key) {
                    run_written.push(key);
                }
            }
            let output = called.output;
            match called.hand_off {
                None => return Ok(InvokeOutcome { run_id, function, output, steps, state_ops, run_written }),
                Some(HandOff { successor, input: next }) => {
                    step += 1;
                    if step >= self.inner.config.max_chain_steps {
                        return Err(Error::TooManySteps(self.inner.config.max_chain_steps));
                    }
                    function = successor;
                    input = next;
                }
            }
        }
    }

    /// One step: wait for an instance slot (after the previous step's Store
    /// and slot are gone), then call in it.
    #[allow(clippy::too_many_arguments)]
    fn call_once(
        &self,
        loaded: &Arc<Loaded>,
        invocation: Invocation,
        input: &[u8],
        run_scope: &RunScope,
        state: Option<&StateTier>,
        deadline_ms: u64,
        cleanup: &mut Cleanup,
    ) -> Result<Called> {
        cleanup.retire_now();
        let started = Instant::now();
        let function = invocation.function.clone();
        let _span = tracing::debug_span!(
            "invoke",
            run_id = %invocation.run_id,
            function = %invocation.function,
            step = invocation.step,
            node = %invocation.node_id
        )
        .entered();
        let called = self.inner.slots.acquire().and_then(|slot| {
            self.call_in_slot(loaded, slot, invocation, input, run_scope, state, deadline_ms, cleanup)
        });
        let register = |outcome: &'static str| {
            let node = self.inner.config.node_id.clone();
            let counter = metrics::counter!("databelt_invocations_total", "node" => node.clone(), "function" => function.clone(), "outcome" => outcome);
            let histogram = metrics::histogram!("databelt_invocation_duration_seconds", "node" => node, "function" => function.clone(), "outcome" => outcome);
            (counter, histogram)
        };
        let registered;
        let (counter, histogram) = match &called {
            Ok(_) => loaded.ok_metrics.get_or_init(|| register("ok")),
            Err(e) => {
                registered = register(e.kind().as_str());
                &registered
            }
        };
        counter.increment(1);
        histogram.record(started.elapsed().as_secs_f64());
        called
    }

    /// One call in `slot`: in the instance made ahead when one is waiting
    /// (else one made now), with the invocation's contexts. The Store and
    /// the slot are then left to `cleanup`.
    #[allow(clippy::too_many_arguments)]
    fn call_in_slot(
        &self,
        loaded: &Arc<Loaded>,
        slot: crate::slots::Slot,
        invocation: Invocation,
        input: &[u8],
        run_scope: &RunScope,
        state: Option<&StateTier>,
        deadline_ms: u64,
        cleanup: &mut Cleanup,
    ) -> Result<Called> {
        let grants = loaded.info.scopes.clone().map(Arc::new);
        let tier = state.unwrap_or(&self.inner.tier).clone();
        let mut prepared = match loaded.take_spare() {
            Some(p) => p,
            None => self.make_instance(&loaded.pre)?,
        };
        self.begin(&mut prepared.store, invocation, tier, Some(run_scope.clone()), grants, deadline_ms);
        let called = self.call_prepared(&mut prepared, input);
        cleanup.finished(prepared, slot, loaded);
        called
    }

    /// Call the function in `prepared` on `input` and collect what it asked
    /// for.
    fn call_prepared(&self, prepared: &mut Prepared, input: &[u8]) -> Result<Called> {
        let Prepared { store, instance } = prepared;
        let result =
            instance.databelt_state_handler().call_handle(&mut *store, input).map_err(|e| self.classify(store, e))?;
        match result {
            Ok(output) => {
                let max = self.inner.config.max_output_bytes;
                if output.len() as u64 > max {
                    return Err(Error::QuotaExceeded(format!(
                        "function output is {} bytes; the limit is {max} (max_output_bytes)",
                        output.len()
                    )));
                }
                let ctx = &mut store.data_mut().databelt;
                if let Some(n) = ctx.hand_off().map(|h| h.input.len()).filter(|n| *n as u64 > max) {
                    return Err(Error::QuotaExceeded(format!(
                        "hand-off input is {n} bytes; the limit is {max} (max_output_bytes)"
                    )));
                }
                Ok(Called {
                    output,
                    hand_off: ctx.take_hand_off(),
                    ops: ctx.state_ops(),
                    run_written: ctx.take_run_written(),
                })
            }
            // A conflict the function passed on is retried like the
            // runtime's own; every other error is the function's answer.
            Err(bindings::generated::databelt::state::types::Error::Conflict(s)) => {
                Err(Error::Conflict(format!("the function returned it: {s}")))
            }
            Err(e) => Err(Error::Function(bindings::wit_error_message(&e))),
        }
    }
}

/// Epoch ticks of a `deadline_ms` deadline (at least one).
fn deadline_ticks(config: &HostConfig, deadline_ms: u64) -> u64 {
    deadline_ms.div_ceil(config.epoch_tick_ms).max(1)
}

/// Bytes of a guest's stderr kept to explain a trap.
const MAX_KEPT_STDERR: usize = 16 * 1024;

/// The panic message a Rust guest printed to stderr before it trapped:
/// `message (at file:line:col)`; `None` when it printed none.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let after = &stderr[start + "panicked at ".len()..];
    let (location, rest) = after.split_once('\n').unwrap_or((after, ""));
    let location = location.trim_end_matches(':');
    let message: Vec<&str> =
        rest.lines().take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace:")).collect();
    let message = message.join(" ");
    let message = message.trim();
    let mut text: String =
        if message.is_empty() { "(no message)".into() } else { message.chars().take(2000).collect() };
    text.push_str(&format!(" (at {location})"));
    Some(text)
}

/// Whether an out-of-bounds access is a shadow-stack overflow: a Rust (or
/// C) guest keeps its stack at the bottom of linear memory, growing down,
/// so an overflow wraps the stack pointer below 0 and faults at an address
/// just under, or over, 4 GiB.
fn shadow_stack_overflow(message: &str) -> bool {
    let Some((_, after)) = message.split_once("wasm address 0x") else { return false };
    let hex: String = after.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&hex, 16).is_ok_and(|a| a >= 0xFFFF_0000)
}

/// What one call of a function left behind.
struct Called {
    output: Vec<u8>,
    hand_off: Option<HandOff>,
    ops: StateOps,
    run_written: Vec<String>,
}

/// Write `bytes` to `path` whole or not at all (a temporary file renamed
/// over it after an fsync).
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn a_rust_panic_is_read_back_from_stderr() {
        let stderr = "some log line\nthread '<unnamed>' panicked at src/lib.rs:12:9:\nindex out of bounds: the len is 3 but the index is 7\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "index out of bounds: the len is 3 but the index is 7 (at src/lib.rs:12:9)"
        );
        assert_eq!(panic_message("thread 'main' panicked at a.rs:1:1:\n").unwrap(), "(no message) (at a.rs:1:1)");
        assert_eq!(panic_message("nothing here"), None);
    }

    #[test]
    fn a_wrapped_stack_pointer_is_a_stack_overflow() {
        use super::shadow_stack_overflow;
        assert!(shadow_stack_overflow("memory fault at wasm address 0x100000078 in linear memory of size 0x110000"));
        assert!(shadow_stack_overflow("memory fault at wasm address 0xfffffff0 in linear memory"));
        assert!(!shadow_stack_overflow("memory fault at wasm address 0x2000000 in linear memory of size 0x110000"));
        assert!(!shadow_stack_overflow("out of bounds"));
    }
}
