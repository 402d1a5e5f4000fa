//! Durable runs: workflows deployed into the continuum once, runs that need
//! no client and survive crashes, hangs and lost links, steps that take
//! effect exactly once.
//!
//! Every host keeps its part of a run in its own store (scope
//! [`WORKFLOW_SCOPE`], reserved): the workflow definitions it takes part in
//! (`def/…`), the invocations waiting for their predecessors (`inbox/…`),
//! the steps it committed (`done/…`), the messages it must still deliver
//! (`out/…`) and, on the run's origin node, the run record (`run/…`).
//! Progress is driven by the hosts, with no coordinator:
//!
//! 1. `POST /workflows/{name}/runs` on any node writes the run record and
//!    one outgoing invocation per entry step, in one transaction, and
//!    answers with the run id. That node is the run's *origin*: it keeps the
//!    record, which the steps report to.
//! 2. Each host's delivery loop sends its outgoing messages until they are
//!    acknowledged. A receiver acknowledges an invocation once it is durable
//!    in its inbox; a fan-in step's inbox entry collects one invocation per
//!    predecessor and runs when it has them all.
//! 3. A step runs with its function's writes staged
//!    ([`databelt_host::state::StagedStore`]) and commits in one transaction
//!    of its host's store: the function's writes, its `done` record, the
//!    removal of its inbox entry, the invocations of its successors and its
//!    report to the origin. A step that crashes before the commit left no
//!    effect and runs again from the inbox; a duplicate delivery of a
//!    committed step is acknowledged and dropped. Its output is written
//!    through to its host's store before it is handed on (the receiver's
//!    sandbox copy is fast; the producer's copy is the durable one, read when
//!    the other is gone).
//! 4. When every step reported, or a step failed for good, or the run's
//!    deadline passed, the origin records the outcome and sends every node a
//!    `forget`: the run's hand-off states, inbox, done records and capability
//!    go; a tombstone keeps late deliveries from reviving it. Records and
//!    tombstones expire after the retention period.
//!
//! Fault points (`fail` crate, compiled in with the `failpoints` feature,
//! for tests): `step-before-commit`, `step-after-commit` (committed, not yet
//! handed on), `run-forget`, and `peer-push` in the peer client.
//!
//! Deliveries back off exponentially (bounded); an unreachable step node is
//! waited for up to the step's `max_wait_ms`, then a step placed by the
//! placement service moves to another node and a pinned step fails the run
//! with a record naming the step, the node and the last error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use databelt_host::state::{ScopedKey, SetOptions, StateTier, Write};
use databelt_host::{Error, Result};
use databelt_placement::{StepNode, Workflow};
use databelt_types::{ErrorKind, FunctionName, RunId, StepName};
use postcard_schema::schema::owned::OwnedNamedType;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::MAX_BODY_BYTES;
use crate::continuum::{Locator, Policy};
use crate::http::{ApiError, BodyLimit, blocking, check, decode_postcard, limit_body, unreachable};
use crate::peer::Place;
use crate::workflow::StepExecutor;
use crate::workflow::capability;
use crate::workflow::protocol::{RUN_SCOPE, StepInput, StepRequest, StepResult, Successor, state_key};

/// Times a step runs again after losing its commit to a concurrent one.
const MAX_CONFLICTS: u32 = 64;

/// Resolves once a step's inbox entry is flushed: whether it was written.
type InboxFlush = tokio::sync::oneshot::Receiver<bool>;

/// The reserved scope holding a host's durable run records.
pub const WORKFLOW_SCOPE: &str = "databelt.workflow";

/// How a host drives durable runs.
#[derive(Debug, Clone)]
pub struct DurableConfig {
    /// Longest one delivery attempt may take (connect, send, durable
    /// acknowledgement).
    pub delivery_timeout: Duration,
    /// First retry delay; it doubles per attempt up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest delay between two attempts.
    pub max_backoff: Duration,
    /// How long a step waits for an unreachable node when its workflow does
    /// not say (`max_wait_ms`), ms.
    pub default_max_wait_ms: u64,
    /// How long a run may take before its origin fails it, when the run does
    /// not say, ms: the bound on a run whose step node accepted the step
    /// and then hung.
    pub default_run_deadline_ms: u64,
    /// How long run records, results and tombstones are kept after a run
    /// ends; hand-off states live for the run's TTL at most, ms.
    pub retention_ms: u64,
    /// Times a step is run again after a retryable failure (a conflict at
    /// commit, an unreachable input) before the run fails.
    pub max_step_attempts: u32,
    /// Messages one delivery round sends at once.
    pub delivery_batch: usize,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            delivery_timeout: Duration::from_secs(2),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            default_max_wait_ms: 30_000,
            default_run_deadline_ms: 300_000,
            retention_ms: 3_600_000,
            max_step_attempts: 5,
            delivery_batch: 32,
        }
    }
}

/// The schemas of one step's function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSchemas {
    /// The step.
    pub step: StepName,
    /// Its input type.
    pub input: OwnedNamedType,
    /// Its output type.
    pub output: OwnedNamedType,
}

/// A deployed workflow as every node that takes part keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowDef {
    /// The workflow file's text.
    pub toml: String,
    /// Each step's schemas.
    pub schemas: Vec<StepSchemas>,
}

/// What `PUT /workflows/{name}` takes (postcard): the workflow file and each
/// step's component.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// The workflow file's text.
    pub toml: String,
    /// Component bytes by step.
    pub components: Vec<(StepName, Vec<u8>)>,
}

/// Options of a durable run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DurableRunOptions {
    /// Where output states go.
    pub policy: Policy,
    /// Lifetime of hand-off states, ms.
    pub ttl_ms: u64,
    /// State fusion.
    pub fusion: bool,
    /// One Tmax for every step, ms; `None`: each step's own.
    pub tmax_ms: Option<f64>,
}

/// One step to run, or one predecessor's share of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invocation {
    /// The run.
    pub run: RunId,
    /// The workflow.
    pub workflow: String,
    /// The step.
    pub step: StepName,
    /// The node keeping the run record.
    pub origin: String,
    /// The run's options.
    pub options: DurableRunOptions,
    /// The run's capability (hosts bind it on first use).
    pub capability: String,
    /// The run's input (entry steps).
    pub input: Option<Vec<u8>>,
    /// Handed inputs so far: producer step, where its output went, and the
    /// producer's durable copy.
    pub handed: Vec<(StepName, Locator, Locator)>,
    /// Every known copy of the run's run-scope states.
    pub run_states: Vec<Locator>,
    /// For a step of the workflow's transaction: the attempt of the
    /// transaction it belongs to (0 for the first; always 0 elsewhere).
    pub attempt: u32,
    /// What the run has seen of replicated scopes.
    pub session: RunSession,
}

/// What a run carries through its steps for replicated scopes: its session
/// (a step runs only on a replica that has applied everything earlier
/// steps read or wrote: read-your-writes, monotonic reads,
/// writes-follow-reads), and under repeatable read the values its steps
/// read or wrote (served again to every later step).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSession {
    /// Per replicated scope, the versions earlier steps saw.
    pub session: databelt_host::state::replica::Session,
    /// Pinned values (repeatable read): key and encoded lattice.
    pub pins: Vec<(ScopedKey, Option<Vec<u8>>)>,
    /// The run's writes to replicated scopes (key and encoded lattice): a
    /// later step runs only where the local value includes them.
    pub written: Vec<(ScopedKey, Vec<u8>)>,
}

impl RunSession {
    /// Join the session of another predecessor (a step that waits for
    /// several): versions merge; of two pins of one key, the first stays.
    pub fn merge(&mut self, other: &RunSession) {
        self.session.merge(&other.session);
        for (k, v) in &other.pins {
            if !self.pins.iter().any(|(p, _)| p == k) {
                self.pins.push((k.clone(), v.clone()));
            }
        }
        for w in &other.written {
            if !self.written.contains(w) {
                self.written.push(w.clone());
            }
        }
    }

    /// What this replica (`tier`) still lacks of the session, if anything.
    fn gap(&self, tier: &StateTier) -> Result<Option<String>> {
        use databelt_host::state::lattice::Lattice;
        for (scope, need) in &self.session.scopes {
            if tier.is_replicated(scope) && !databelt_host::state::replica::covers(&tier.replica_vv(scope)?, need) {
                return Ok(Some(format!("what the run read or wrote of `{scope}`")));
            }
        }
        for (k, v) in &self.written {
            if !tier.is_replicated(&k.scope) {
                continue;
            }
            let Some(local) = tier.replica_value(&k.scope, &k.key)? else {
                return Ok(Some(format!("the run's write of `{}/{}`", k.scope, k.key)));
            };
            let mut joined = local.clone();
            joined.merge(Lattice::decode(v)?);
            if joined != local {
                return Ok(Some(format!("the run's write of `{}/{}`", k.scope, k.key)));
            }
        }
        Ok(None)
    }
}

/// Longest a step waits for its replica to cover the run's session; then
/// its attempt fails with `unavailable` and is retried like any other.
const SESSION_WAIT: Duration = Duration::from_secs(5);

/// Wait until `tier` covers `session` (bounded by [`SESSION_WAIT`]).
async fn cover_session(tier: &StateTier, session: &RunSession) -> Result<()> {
    if session.session.scopes.is_empty() && session.written.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + SESSION_WAIT;
    loop {
        let (t, s) = (tier.clone(), session.clone());
        match blocking(move || s.gap(&t)).await? {
            None => return Ok(()),
            Some(what) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Unavailable(format!(
                    "this replica has not applied {what} after {} ms",
                    SESSION_WAIT.as_millis()
                )));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// What a step reports to its run's origin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RunEvent {
    /// The step committed.
    StepDone {
        /// The step.
        step: StepName,
        /// What its host reported (a final step's output included).
        result: StepResult,
    },
    /// The step cannot be run; the run fails.
    Failed(Failure),
    /// A step of the transaction prepared: its writes are validated, held
    /// and logged on its node, waiting for the decision.
    Prepared {
        /// The step.
        step: StepName,
        /// The transaction attempt.
        attempt: u32,
        /// Its node.
        node: String,
        /// What its host reported.
        result: StepResult,
        /// For a step where the transaction starts: its invocation, which
        /// the coordinator sends again to retry the transaction.
        invocation: Option<Box<Invocation>>,
    },
    /// A step of the transaction could not prepare: the attempt aborts.
    Aborted {
        /// The step.
        step: StepName,
        /// The transaction attempt.
        attempt: u32,
        /// Why.
        failure: Failure,
        /// Whether another attempt may succeed (a conflict, a timeout).
        retryable: bool,
        /// As in `Prepared`.
        invocation: Option<Box<Invocation>>,
    },
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The step.
    pub step: String,
    /// The node it was to run on.
    pub node: String,
    /// The error's kind.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// A message between hosts (`POST /workflow/v1/deliver`, postcard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Message {
    /// Keep a workflow definition and deploy these steps' components.
    Install(WorkflowDef, Vec<(StepName, Vec<u8>)>),
    /// Run (a share of) a step.
    Invoke(Invocation),
    /// A step's outcome, for the run's origin.
    Report(RunId, RunEvent),
    /// The run is over: delete everything of it here. Carries the attempt
    /// of its transaction that committed, if one did: a part of it still
    /// prepared here commits, every other prepared part aborts.
    Forget(RunId, Option<u32>),
    /// The coordinator's decision on a transaction attempt.
    Decide {
        /// The run.
        run: RunId,
        /// The attempt.
        attempt: u32,
        /// Commit (else abort).
        commit: bool,
    },
}

/// A message a host must still deliver.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outgoing {
    target: String,
    message: Message,
    attempts: u32,
    first_ms: u64,
    next_ms: u64,
    /// Give up (or move the step) after this long unreachable, ms.
    max_wait_ms: u64,
    /// For an invocation of a step placed by the service: the nodes tried.
    movable: Option<Vec<String>>,
    /// The `traceparent` of the span that made the message, so that a
    /// re-sent message joins the trace of the run that sent it.
    trace: Option<String>,
}

/// An [`Outgoing`] as written before it kept a trace context (2026-12-04).
#[derive(Deserialize)]
struct OutgoingUntraced {
    target: String,
    message: Message,
    attempts: u32,
    first_ms: u64,
    next_ms: u64,
    max_wait_ms: u64,
    movable: Option<Vec<String>>,
}

/// Decode a stored outgoing message, of this version or the one before.
fn decode_outgoing(bytes: &[u8]) -> Result<Outgoing> {
    decode::<Outgoing>(bytes, "outgoing message").or_else(|e| match postcard::from_bytes::<OutgoingUntraced>(bytes) {
        Ok(o) => Ok(Outgoing {
            target: o.target,
            message: o.message,
            attempts: o.attempts,
            first_ms: o.first_ms,
            next_ms: o.next_ms,
            max_wait_ms: o.max_wait_ms,
            movable: o.movable,
            trace: None,
        }),
        Err(_) => Err(e),
    })
}

/// How a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Steps are still to run.
    Running,
    /// Every step committed.
    Succeeded,
    /// A step failed for good, or the deadline passed.
    Failed,
}

/// A run as its origin records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub run: RunId,
    /// The workflow.
    pub workflow: String,
    /// How it stands.
    pub status: RunStatus,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// When the origin fails it if it has not ended.
    pub deadline_ms: u64,
    /// Steps that committed, in the order their reports arrived.
    pub steps: Vec<(StepName, StepResult)>,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// Its capability.
    pub capability: String,
    /// How its transaction stands, when the workflow declares one.
    pub txn: Option<TxnProgress>,
}

/// The coordinator's (the origin's) view of a run's transaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TxnProgress {
    /// The current attempt.
    pub attempt: u32,
    /// When the first step of the current attempt prepared (its timeout
    /// runs from then), ms since the Unix epoch.
    pub started_ms: Option<u64>,
    /// Steps prepared in the current attempt: step, node, report.
    pub prepared: Vec<(StepName, String, StepResult)>,
    /// Whether the current attempt committed.
    pub committed: bool,
    /// Attempts aborted so far.
    pub aborts: u32,
    /// Where the transaction starts: each such step's node and invocation.
    pub entries: Vec<(String, Invocation)>,
}

/// The name of attempt `attempt` of `run`'s transaction.
fn txn_id(run: &RunId, attempt: u32) -> String {
    format!("{run}.{attempt}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Runtime(format!("encoding a run record: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::storage_msg(format!("a stored {what} is damaged: {e}")))
}

fn key(k: String) -> ScopedKey {
    ScopedKey::new(WORKFLOW_SCOPE, k)
}

fn put_record(k: String, value: Vec<u8>, expires_at_ms: Option<u64>) -> Write {
    Write::Put { key: key(k), value, expires_at_ms }
}

fn out_key(run: &RunId, step: &str, what: &str, target: &str) -> String {
    format!("out/{run}/{step}/{what}/{target}")
}

/// `e` and its causes on one line, each once.
fn with_causes(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.ends_with(&c) {
            text = format!("{text}: {c}");
        }
        source = cause.source();
    }
    text
}

/// Whether another attempt may succeed.
fn retryable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Unavailable
            | ErrorKind::Timeout
            | ErrorKind::DeadlineExceeded
            | ErrorKind::Conflict
            | ErrorKind::Storage
            | ErrorKind::Unauthenticated
    )
}

/// A loaded workflow definition.
struct Loaded {
    def: WorkflowDef,
    workflow: Workflow,
}

impl Loaded {
    fn step(&self, name: &str) -> Result<&databelt_placement::Step> {
        self.workflow
            .steps
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::BadInput(format!("workflow `{}` has no step `{name}`", self.workflow.name)))
    }

    fn successors(&self, name: &str) -> Vec<&databelt_placement::Step> {
        self.workflow.steps.iter().filter(|s| s.after.iter().any(|a| a == name)).collect()
    }

    fn schemas(&self, step: &str) -> Option<&StepSchemas> {
        self.def.schemas.iter().find(|s| s.step == step)
    }

    /// The key of a step's `done` record: per attempt for a transaction
    /// step (an aborted attempt's steps run again).
    fn done_key(&self, run: &RunId, step: &str, attempt: u32) -> String {
        if self.workflow.in_transaction(step) {
            format!("done/{run}/{step}@{attempt}")
        } else {
            format!("done/{run}/{step}")
        }
    }
}

/// Durable runs on one host; see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct DurableRuns {
    inner: Arc<Inner>,
}

struct Inner {
    executor: StepExecutor,
    http: reqwest::Client,
    config: DurableConfig,
    defs: Mutex<HashMap<String, Arc<Loaded>>>,
    /// Steps running here, and whether one must look at its inbox entry
    /// again when it is done.
    running: Mutex<HashMap<(RunId, StepName), bool>>,
    /// Held by steps that lost commits to concurrent ones.
    serial: tokio::sync::Mutex<()>,
    /// Turns for steps to run (`max_running_steps`).
    turns: Arc<tokio::sync::Semaphore>,
    /// Runs started here and still running (`max_durable_runs`).
    running_runs: std::sync::atomic::AtomicUsize,
    wake: tokio::sync::Notify,
    changed: tokio::sync::Notify,
    secret: [u8; 32],
}

impl DurableRuns {
    /// Durable runs executed by `executor`, whose continuum's placement
    /// client gives the topology and the credentials to reach other hosts.
    pub fn new(executor: StepExecutor, config: DurableConfig) -> Result<DurableRuns> {
        let turns = executor.host().config().max_running_steps.max(1) as usize;
        let http = executor
            .continuum()
            .placement()
            .credentials()
            .client_builder()?
            .connect_timeout(config.delivery_timeout)
            .timeout(config.delivery_timeout)
            .pool_idle_timeout(crate::http::CLIENT_POOL_IDLE)
            .build()
            .map_err(|e| Error::Runtime(format!("http client: {e}")))?;
        Ok(DurableRuns {
            inner: Arc::new(Inner {
                executor,
                http,
                config,
                defs: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                serial: tokio::sync::Mutex::new(()),
                turns: Arc::new(tokio::sync::Semaphore::new(turns)),
                running_runs: std::sync::atomic::AtomicUsize::new(0),
                wake: tokio::sync::Notify::new(),
                changed: tokio::sync::Notify::new(),
                secret: rand::random(),
            }),
        })
    }

    fn tier(&self) -> &StateTier {
        self.inner.executor.host().state()
    }

    fn here(&self) -> &str {
        self.inner.executor.continuum().node_id()
    }

    /// Start the delivery loop, after resuming what this host's log holds:
    /// interrupted steps run again, pending deliveries are sent. The loop
    /// stops when the returned handle is dropped.
    pub fn start(&self) -> DeliveryLoop {
        let runs = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = runs.resume().await {
                tracing::warn!(error = %e, "resuming durable runs");
            }
            let mut last_watch = Instant::now();
            loop {
                let next = match runs.deliver_due().await {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery round failed");
                        Duration::from_millis(200)
                    }
                };
                if last_watch.elapsed() >= Duration::from_millis(500) {
                    last_watch = Instant::now();
                    if let Err(e) = runs.watch_deadlines().await {
                        tracing::warn!(error = %e, "checking run deadlines");
                    }
                }
                let _ = tokio::time::timeout(next.min(Duration::from_millis(500)), runs.inner.wake.notified()).await;
            }
        });
        DeliveryLoop(task)
    }

    // ---------------------------------------------------------------- store

    fn read<T: for<'de> Deserialize<'de>>(&self, k: &str, what: &str) -> Result<Option<T>> {
        self.tier().get(WORKFLOW_SCOPE, k)?.map(|v| decode(&v, what)).transpose()
    }

    fn keys(&self, prefix: &str, limit: u32) -> Result<Vec<String>> {
        Ok(self.tier().list_keys(WORKFLOW_SCOPE, prefix, None, Some(limit))?.keys)
    }

    fn apply(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let tier = self.tier().clone();
        let staged = tier.staged().1;
        tier.commit_staged(&staged, writes, &[]).map(|_| ())
    }

    fn loaded(&self, workflow: &str) -> Result<Arc<Loaded>> {
        if let Some(l) = self.inner.defs.lock().map_err(|_| Error::Runtime("defs lock".into()))?.get(workflow) {
            return Ok(l.clone());
        }
        let def: WorkflowDef = self
            .read(&format!("def/{workflow}"), "workflow definition")?
            .ok_or_else(|| Error::UnknownWorkflow(format!("no workflow named `{workflow}` is deployed here")))?;
        let loaded = Arc::new(Loaded {
            workflow: Workflow::from_toml(&def.toml).map_err(|e| Error::Config(e.to_string()))?,
            def,
        });
        if let Ok(mut defs) = self.inner.defs.lock() {
            defs.insert(workflow.to_string(), loaded.clone());
        }
        Ok(loaded)
    }

    // --------------------------------------------------------------- deploy

    /// Deploy a workflow into the continuum: check it, describe its
    /// components, and install it on every node of the topology (each keeps
    /// the definition; each step's component goes to its node, a step placed
    /// by the service to every node). Fails naming a node that could not
    /// take it; deploying again is harmless.
    pub async fn deploy(&self, bundle: Bundle) -> Result<Vec<String>> {
        let workflow = Workflow::from_toml(&bundle.toml).map_err(|e| Error::BadInput(e.to_string()))?;
        let topology = self.topology()?;
        workflow.check_nodes(&topology).map_err(|e| Error::BadInput(e.to_string()))?;
        let mut schemas = Vec::new();
        for s in &workflow.steps {
            let component = bundle
                .components
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, c)| c)
                .ok_or_else(|| Error::BadInput(format!("no component for step `{}`", s.name)))?;
            let host = self.inner.executor.host().clone();
            let (name, bytes) = (FunctionName::for_step(&workflow.name, &s.name), component.clone());
            let info = blocking(move || host.describe(name.as_str(), &bytes))
                .await
                .map_err(|e| Error::BadInput(format!("step `{}`: {e}", s.name)))?;
            schemas.push(StepSchemas { step: s.name.clone(), input: info.input_schema, output: info.output_schema });
        }
        let def = WorkflowDef { toml: bundle.toml.clone(), schemas };
        let mut nodes = Vec::new();
        for node in &topology.nodes {
            let components: Vec<(StepName, Vec<u8>)> = workflow
                .steps
                .iter()
                .filter(|s| match &s.node {
                    StepNode::Fixed(n) => *n == node.id,
                    StepNode::Placement => true,
                })
                .filter_map(|s| bundle.components.iter().find(|(n, _)| *n == s.name).cloned())
                .collect();
            let message = Message::Install(def.clone(), components);
            self.send(&node.id, &message, None)
                .await
                .map_err(|e| Error::Unavailable(format!("installing on node `{}`: {e}", node.id)))?;
            nodes.push(node.id.clone());
        }
        Ok(nodes)
    }

    async fn install(&self, def: WorkflowDef, components: Vec<(StepName, Vec<u8>)>) -> Result<()> {
        let workflow = Workflow::from_toml(&def.toml).map_err(|e| Error::BadInput(e.to_string()))?;
        for (step, bytes) in components {
            let host = self.inner.executor.host().clone();
            let name = FunctionName::for_step(&workflow.name, &step);
            blocking(move || host.deploy(name.as_str(), &bytes)).await?;
        }
        let name = workflow.name.clone();
        self.apply(vec![put_record(format!("def/{name}"), encode(&def)?, None)])?;
        if let Ok(mut defs) = self.inner.defs.lock() {
            defs.remove(&name);
        }
        Ok(())
    }

    // ----------------------------------------------------------------- runs

    /// Start a run of `workflow` on `input` (postcard of the entry steps'
    /// input type) with this node as its origin; returns its id at once.
    pub async fn start_run(
        &self,
        workflow: &str,
        input: Vec<u8>,
        options: DurableRunOptions,
        deadline_ms: Option<u64>,
    ) -> Result<RunId> {
        let loaded = self.loaded(workflow)?;
        let max = self.inner.executor.host().config().max_durable_runs as usize;
        let counted = self.inner.running_runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if counted >= max {
            self.inner.running_runs.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return Err(Error::Unavailable(format!(
                "this node already has {max} durable runs running (max_durable_runs); try again later or start the run \
                 on another node"
            )));
        }
        let started = self.start_counted(&loaded, workflow, input, options, deadline_ms).await;
        if started.is_err() {
            self.inner.running_runs.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        started
    }

    async fn start_counted(
        &self,
        loaded: &Loaded,
        workflow: &str,
        input: Vec<u8>,
        options: DurableRunOptions,
        deadline_ms: Option<u64>,
    ) -> Result<RunId> {
        let entries: Vec<&databelt_placement::Step> =
            loaded.workflow.steps.iter().filter(|s| s.after.is_empty()).collect();
        for s in &entries {
            if let Some(schemas) = loaded.schemas(&s.name) {
                databelt_host::schema::check_postcard(&schemas.input, &input)?;
            }
        }
        let started = now_ms();
        let run = RunId::sanitized(&format!("{workflow}-{}-{started:x}-{:08x}", self.here(), rand::random::<u32>()));
        let capability = capability::derive(&self.inner.secret, &run);
        let deadline = started + deadline_ms.unwrap_or(self.inner.config.default_run_deadline_ms);
        let record = RunRecord {
            run: run.clone(),
            workflow: workflow.to_string(),
            status: RunStatus::Running,
            started_ms: started,
            finished_ms: None,
            deadline_ms: deadline,
            steps: Vec::new(),
            failure: None,
            capability: capability.clone(),
            txn: loaded.workflow.transaction.as_ref().map(|_| TxnProgress::default()),
        };
        let mut direct = Vec::new();
        let mut writes =
            vec![put_record(format!("run/{run}"), encode(&record)?, Some(deadline + self.inner.config.retention_ms))];
        writes.push(put_record(
            format!("deadline/{run}"),
            deadline.to_le_bytes().to_vec(),
            Some(deadline + self.inner.config.retention_ms),
        ));
        for s in entries {
            let invocation = Invocation {
                run: run.clone(),
                workflow: workflow.to_string(),
                step: s.name.clone(),
                origin: self.here().to_string(),
                options,
                capability: capability.clone(),
                input: Some(input.clone()),
                handed: Vec::new(),
                run_states: Vec::new(),
                attempt: 0,
                session: RunSession::default(),
            };
            writes.push(self.outgoing_invocation(&loaded.workflow, s, invocation, &mut direct).await?);
        }
        self.apply(writes)?;
        self.send_now(direct);
        Ok(run)
    }

    /// The record of a run that started on this node.
    pub fn record(&self, run: &RunId) -> Result<Option<RunRecord>> {
        self.read(&format!("run/{run}"), "run record")
    }

    /// How many runs that started on this node are still running.
    fn count_running(&self) -> Result<usize> {
        let (mut running, mut cursor) = (0, None::<String>);
        loop {
            let page = self.tier().list_keys(WORKFLOW_SCOPE, "run/", cursor.as_deref(), Some(1000))?;
            for k in &page.keys {
                if self.read::<RunRecord>(k, "run record")?.is_some_and(|r| r.status == RunStatus::Running) {
                    running += 1;
                }
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(running),
            }
        }
    }

    /// The records of runs that started on this node (at most `limit`).
    pub fn records(&self, limit: u32) -> Result<Vec<RunRecord>> {
        let mut records = Vec::new();
        for k in self.keys("run/", limit)? {
            if let Some(r) = self.read::<RunRecord>(&k, "run record")? {
                records.push(r);
            }
        }
        Ok(records)
    }

    /// Wait up to `timeout` for run `run` to end; its record then.
    pub async fn wait(&self, run: &RunId, timeout: Duration) -> Result<Option<RunRecord>> {
        let until = Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            let record = self.record(run)?;
            match &record {
                Some(r) if r.status == RunStatus::Running && Instant::now() < until => {}
                _ => return Ok(record),
            }
            let _ = tokio::time::timeout(until.saturating_duration_since(Instant::now()), changed).await;
        }
    }

    /// The node step `s` runs on in this run, chosen by `here` (its
    /// predecessor's node, or the origin).
    async fn node_for(&self, workflow: &Workflow, s: &databelt_placement::Step) -> String {
        match &s.node {
            StepNode::Fixed(n) => n.clone(),
            StepNode::Placement => {
                let request = workflow.placement_request(s, self.here().to_string());
                match self.inner.executor.continuum().placement().function_hint(&request).await {
                    Ok((p, _)) => p.node,
                    // The service is away: every node has the component; run it here.
                    Err(_) => self.here().to_string(),
                }
            }
        }
    }

    async fn outgoing_invocation(
        &self,
        workflow: &Workflow,
        s: &databelt_placement::Step,
        invocation: Invocation,
        direct: &mut Vec<(String, Outgoing)>,
    ) -> Result<Write> {
        let target = self.node_for(workflow, s).await;
        let movable = matches!(s.node, StepNode::Placement).then(|| vec![target.clone()]);
        let k = out_key(&invocation.run, &s.name, &format!("invoke-from-{}", self.here()), "step");
        self.outgoing_direct(k, target, Message::Invoke(invocation), s.max_wait_ms, movable, direct)
    }

    fn outgoing(
        &self,
        k: String,
        target: String,
        message: Message,
        max_wait_ms: Option<u64>,
        movable: Option<Vec<String>>,
    ) -> Result<Write> {
        let now = now_ms();
        let o = Outgoing {
            target,
            message,
            attempts: 0,
            first_ms: now,
            next_ms: now,
            max_wait_ms: max_wait_ms.unwrap_or(self.inner.config.default_max_wait_ms),
            movable,
            trace: crate::trace_context::current_traceparent(),
        };
        Ok(put_record(k, encode(&o)?, Some(now + self.inner.config.retention_ms)))
    }

    /// A message its writer sends itself right after its commit: the
    /// delivery loop leaves it alone for one delivery timeout (and takes it
    /// over if it is still there then).
    fn outgoing_direct(
        &self,
        k: String,
        target: String,
        message: Message,
        max_wait_ms: Option<u64>,
        movable: Option<Vec<String>>,
        direct: &mut Vec<(String, Outgoing)>,
    ) -> Result<Write> {
        let write = self.outgoing(k.clone(), target, message, max_wait_ms, movable)?;
        let Write::Put { key, value, expires_at_ms } = write else { return Ok(write) };
        let mut o = decode_outgoing(&value)?;
        o.next_ms = o.first_ms + self.inner.config.delivery_timeout.as_millis() as u64 + 1000;
        let value = encode(&o)?;
        direct.push((k, o));
        Ok(Write::Put { key, value, expires_at_ms })
    }

    /// Send messages just committed by their writer; each one acknowledged
    /// is deleted, the others are left to the delivery loop.
    fn send_now(&self, direct: Vec<(String, Outgoing)>) {
        for (k, o) in direct {
            let runs = self.clone();
            let span = tracing::Span::current();
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    match runs.send(&o.target, &o.message, o.trace.as_deref()).await {
                        Ok(()) => {
                            let _ = runs.apply(vec![Write::Delete { key: key(k) }]);
                        }
                        Err(e) => {
                            // Back off from now, as the delivery loop would.
                            let _ = runs.after_failure(k, o, e);
                            runs.inner.wake.notify_one();
                        }
                    }
                },
                span,
            ));
        }
    }

    // ------------------------------------------------------------- delivery

    fn topology(&self) -> Result<databelt_placement::Topology> {
        self.topology_at().map(|(topology, _)| topology)
    }

    /// The cached topology and the scenario instant it is at.
    fn topology_at(&self) -> Result<(databelt_placement::Topology, u64)> {
        self.inner
            .executor
            .continuum()
            .placement()
            .cached()
            .ok_or_else(|| Error::Unavailable("no topology: the placement service was never reached".into()))
    }

    /// Send `message` to `node` (handled in place when it is this node), in
    /// the trace `trace` (kept with the message) or the current span's.
    async fn send(&self, node: &str, message: &Message, trace: Option<&str>) -> Result<()> {
        if node == self.here() {
            return Box::pin(self.receive(message.clone())).await;
        }
        let topology = self.topology()?;
        let addr = topology
            .node(node)
            .map(|n| n.address.clone())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Error::Unavailable(format!("node `{node}` has no address in the topology")))?;
        let url = format!(
            "{}/workflow/v1/deliver",
            self.inner.executor.continuum().placement().credentials().base_url(&addr)
        );
        let request = self.inner.http.post(url);
        let r = crate::trace_context::inject_kept(request, trace)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(encode(message)?)
            .send()
            .await
            .map_err(|e| unreachable(&addr, e))?;
        check(&addr, r).await.map(|_| ())
    }

    /// Deliver every due outgoing message once; returns how long until the
    /// next one is due.
    async fn deliver_due(&self) -> Result<Duration> {
        let now = now_ms();
        let mut due = Vec::new();
        let mut next = Duration::from_millis(500);
        let runs = self.clone();
        let pending: Vec<(String, Outgoing)> = blocking(move || {
            let mut v = Vec::new();
            for k in runs.keys("out/", 1000)? {
                if let Some(bytes) = runs.tier().get(WORKFLOW_SCOPE, &k)? {
                    v.push((k, decode_outgoing(&bytes)?));
                }
            }
            Ok(v)
        })
        .await?;
        for (k, o) in pending {
            if o.next_ms <= now {
                if due.len() < self.inner.config.delivery_batch {
                    due.push((k, o));
                }
            } else {
                next = next.min(Duration::from_millis(o.next_ms - now));
            }
        }
        if due.len() == self.inner.config.delivery_batch {
            next = Duration::ZERO;
        }
        let results = futures_util::future::join_all(
            due.iter().map(|(_, o)| self.send(&o.target, &o.message, o.trace.as_deref())),
        )
        .await;
        for ((k, o), result) in due.into_iter().zip(results) {
            match result {
                Ok(()) => self.apply(vec![Write::Delete { key: key(k) }])?,
                Err(e) => {
                    let backoff = self.after_failure(k, o, e)?;
                    next = next.min(backoff);
                }
            }
        }
        Ok(next)
    }

    /// Where a placed step goes when the nodes in `tried` could not take
    /// it: the scheduler's choice among the others (on the cached
    /// topology); when every other node fails its filters, the first
    /// untried node in scenario order, so the run still gets a chance.
    fn replace_step(&self, inv: &Invocation, tried: &[String]) -> Result<Option<String>> {
        let (topology, t) = self.topology_at()?;
        let scheduled = self.loaded(&inv.workflow).ok().and_then(|loaded| {
            let step = loaded.step(&inv.step).ok()?;
            let mut request = loaded.workflow.placement_request(step, self.here().to_string());
            request.exclude = tried.to_vec();
            databelt_placement::place_function(&topology, t, &request).ok()
        });
        Ok(match scheduled {
            Some(p) => Some(p.node),
            None => topology.nodes.iter().map(|n| n.id.clone()).find(|n| !tried.contains(n)),
        })
    }

    /// A delivery failed: back off, move the step, or give up.
    fn after_failure(&self, k: String, mut o: Outgoing, e: Error) -> Result<Duration> {
        let now = now_ms();
        let config = &self.inner.config;
        let waited = now.saturating_sub(o.first_ms);
        let permanent = !retryable(e.kind());
        tracing::debug!(target = %o.target, error = %e, attempts = o.attempts, "delivery failed");
        if permanent || waited >= o.max_wait_ms {
            // A step placed by the service moves to a node not yet tried.
            if !permanent
                && let (Some(tried), Message::Invoke(inv)) = (&mut o.movable, &o.message)
                && let Some(other) = self.replace_step(inv, tried)?
            {
                tracing::warn!(from = %o.target, to = %other, "moving a step to another node");
                tried.push(other.clone());
                o.target = other;
                o.attempts = 0;
                o.first_ms = now;
                o.next_ms = now;
                self.apply(vec![put_record(k, encode(&o)?, Some(now + config.retention_ms))])?;
                return Ok(Duration::ZERO);
            }
            let mut writes = vec![Write::Delete { key: key(k) }];
            match &o.message {
                Message::Invoke(inv) => {
                    let failure = Failure {
                        step: inv.step.to_string(),
                        node: o.target.clone(),
                        kind: e.kind().as_str().to_string(),
                        message: format!("could not deliver the step for {waited} ms: {}", with_causes(&e)),
                    };
                    writes.push(self.outgoing(
                        out_key(&inv.run, &inv.step, "report-failed", &inv.origin),
                        inv.origin.clone(),
                        Message::Report(inv.run.clone(), RunEvent::Failed(failure)),
                        Some(config.retention_ms),
                        None,
                    )?);
                }
                other => {
                    tracing::warn!(target = %o.target, error = %e, message = ?std::mem::discriminant(other), "giving up a delivery")
                }
            }
            self.apply(writes)?;
            return Ok(Duration::ZERO);
        }
        o.attempts += 1;
        let exp = config.min_backoff.saturating_mul(1u32 << o.attempts.min(16));
        let backoff = exp.min(config.max_backoff);
        // Jitter: between half and the whole backoff.
        let backoff = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        o.next_ms = now + backoff.as_millis() as u64;
        self.apply(vec![put_record(k, encode(&o)?, Some(now + config.retention_ms))])?;
        Ok(backoff)
    }

    /// Handle a message from another host (or this one).
    async fn receive(&self, message: Message) -> Result<()> {
        match message {
            Message::Install(def, components) => self.install(def, components).await,
            Message::Invoke(invocation) => self.accept(invocation).await,
            Message::Report(run, event) => {
                let runs = self.clone();
                blocking(move || runs.report(&run, event)).await?;
                self.inner.changed.notify_waiters();
                self.inner.wake.notify_one();
                Ok(())
            }
            Message::Forget(run, committed) => {
                let runs = self.clone();
                blocking(move || runs.forget(&run, committed)).await?;
                self.inner.wake.notify_one();
                Ok(())
            }
            Message::Decide { run, attempt, commit } => {
                let tier = self.tier().clone();
                let resolved = blocking(move || tier.resolve(&txn_id(&run, attempt), commit, Vec::new())).await?;
                if !resolved.is_empty() {
                    tracing::debug!(txn = %attempt, commit, parts = ?resolved, "resolved a transaction");
                }
                // A commit may have released its outside successors.
                self.inner.wake.notify_one();
                Ok(())
            }
        }
    }

    /// Take (a predecessor's share of) an invocation into the inbox,
    /// durably; run the step when every predecessor has handed on. The
    /// entry is merged in a transaction that conflicts with any other change
    /// of it (or of the step's `done` record) since it was read.
    async fn accept(&self, invocation: Invocation) -> Result<()> {
        let loaded = self.loaded(&invocation.workflow)?;
        let after = loaded.step(&invocation.step)?.after.clone();
        let (run, name) = (invocation.run.clone(), invocation.step.clone());
        let done_key = loaded.done_key(&run, &name, invocation.attempt);
        let tier = self.tier().clone();
        let ttl = self.inner.config.retention_ms;
        let mut attempt = 0;
        loop {
            let (view_tier, incoming, after, done_key) =
                (tier.clone(), invocation.clone(), after.clone(), done_key.clone());
            // Merge the share into the inbox entry (staged; not yet written).
            let merged = blocking(move || {
                let (view, staged) = view_tier.staged();
                let done = view.exists(WORKFLOW_SCOPE, &done_key)?;
                let ended = view.exists(WORKFLOW_SCOPE, &format!("ended/{}", incoming.run))?;
                if done || ended {
                    return Ok(None);
                }
                let inbox = format!("inbox/{}/{}", incoming.run, incoming.step);
                let mut merged = match view.get(WORKFLOW_SCOPE, &inbox)? {
                    Some(bytes) => {
                        let stored = decode::<Invocation>(&bytes, "inbox entry")?;
                        // Shares of an aborted transaction attempt give way
                        // to the next attempt's; late ones are dropped.
                        match stored.attempt.cmp(&incoming.attempt) {
                            std::cmp::Ordering::Less => incoming.clone(),
                            std::cmp::Ordering::Equal => stored,
                            std::cmp::Ordering::Greater => return Ok(None),
                        }
                    }
                    None => incoming.clone(),
                };
                for h in &incoming.handed {
                    if !merged.handed.iter().any(|(p, _, _)| *p == h.0) {
                        merged.handed.push(h.clone());
                    }
                }
                for l in &incoming.run_states {
                    merged.run_states.retain(|m| m.key != l.key);
                    merged.run_states.push(l.clone());
                }
                if merged.input.is_none() {
                    merged.input = incoming.input.clone();
                }
                merged.session.merge(&incoming.session);
                let complete = after.iter().all(|p| merged.handed.iter().any(|(q, _, _)| q == p));
                let options = SetOptions { ttl_ms: Some(ttl), if_not_exists: false };
                view.set(WORKFLOW_SCOPE, &inbox, encode(&merged)?, options)?;
                Ok(Some((staged, merged, complete)))
            })
            .await?;
            let Some((staged, merged, complete)) = merged else { return Ok(()) };
            // A complete entry's step starts now, while the entry is being
            // flushed; it commits only once the entry is durable (and runs
            // from the store again if it never became so).
            let durable = complete.then(|| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.spawn_step(run.clone(), name.clone(), Some((merged, rx)));
                tx
            });
            let commit_tier = tier.clone();
            let written = blocking(move || commit_tier.commit_staged(&staged, Vec::new(), &[])).await;
            if let Some(tx) = durable {
                let _ = tx.send(written.is_ok());
            }
            match written {
                Err(e) if e.kind() == ErrorKind::Conflict && attempt < 16 => attempt += 1,
                Err(e) => return Err(e),
                Ok(_) => {
                    if complete {
                        // The entry is durable now: make sure a run of the
                        // step reads it, even if the one started above gave
                        // up before the flush ended.
                        self.spawn_step(run, name, None);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Run step `name` of `run` unless it is running here: from `first`
    /// (an entry being flushed, and whether it became durable) the first
    /// time, else from its inbox entry.
    fn spawn_step(&self, run: RunId, name: StepName, first: Option<(Invocation, InboxFlush)>) {
        let Ok(mut running) = self.inner.running.lock() else { return };
        if let Some(again) = running.get_mut(&(run.clone(), name.clone())) {
            // Running: it looks at the inbox once more before it stops.
            *again = true;
            return;
        }
        running.insert((run.clone(), name.clone()), false);
        drop(running);
        let runs = self.clone();
        // In the trace of what started the step (a delivered message, a
        // run's start), without holding that request's span open.
        let span = tracing::info_span!(parent: None, "durable_step", run_id = %run, step = %name);
        crate::trace_context::continue_current(&span);
        let task = async move {
            // Wait for a turn (the entry is durable meanwhile, or its
            // sender still holds it).
            let Ok(_turn) = runs.inner.turns.clone().acquire_owned().await else { return };
            let mut first = first;
            loop {
                if let Err(e) = runs.run_step(&run, &name, first.take()).await {
                    tracing::warn!(%run, step = %name, error = %e, "running a step");
                }
                let Ok(mut running) = runs.inner.running.lock() else { break };
                match running.get_mut(&(run.clone(), name.clone())) {
                    Some(again) if *again => *again = false,
                    _ => {
                        running.remove(&(run.clone(), name.clone()));
                        break;
                    }
                }
            }
            runs.inner.wake.notify_one();
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Run a step whose inbox entry is complete and commit it, retrying
    /// what may succeed again; a step that cannot run fails its run.
    async fn run_step(&self, run: &RunId, name: &StepName, mut first: Option<(Invocation, InboxFlush)>) -> Result<()> {
        let (mut attempt, mut conflicts) = (0, 0u32);
        loop {
            let (invocation, flush) = match first.take() {
                Some((invocation, flush)) => (invocation, Some(flush)),
                None => match self.read::<Invocation>(&format!("inbox/{run}/{name}"), "inbox entry")? {
                    Some(invocation) => (invocation, None),
                    None => return Ok(()), // committed meanwhile, or forgotten
                },
            };
            // A step that lost a commit to a concurrent one runs again, and
            // from its second conflict on, one such step at a time on this
            // host: contended keys make progress instead of thrashing.
            let serial = if conflicts >= 2 { Some(self.inner.serial.lock().await) } else { None };
            let outcome = self.try_step(&invocation, flush).await;
            drop(serial);
            let error = match outcome {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.kind() == ErrorKind::PreconditionFailed
                        && ["/done/", "/ended/", "/prep/"].iter().any(|k| e.to_string().contains(k)) =>
                {
                    return Ok(());
                }
                Err(e) => e,
            };
            let loaded = self.loaded(&invocation.workflow)?;
            let in_txn = loaded.workflow.in_transaction(name);
            let entry = loaded.workflow.transaction_entry(name);
            let conflict = error.cause_kind() == ErrorKind::Conflict;
            // A step where its transaction starts holds nothing yet: it runs
            // again here. A later step of a transaction does not wait for
            // keys another one holds: its attempt aborts (no-wait).
            if conflict && conflicts < MAX_CONFLICTS && (!in_txn || entry) {
                conflicts += 1;
                let jitter = rand::random::<u64>() % (5 * u64::from(conflicts.min(20)) + 1);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                continue;
            }
            attempt += 1;
            let give_up = !retryable(error.cause_kind())
                || attempt >= self.inner.config.max_step_attempts
                || (in_txn && conflict);
            if give_up {
                let failure = Failure {
                    step: name.to_string(),
                    node: self.here().to_string(),
                    kind: error.cause_kind().as_str().to_string(),
                    message: format!("{} (attempt {attempt})", with_causes(&error)),
                };
                let (what, event) = if in_txn {
                    let event = RunEvent::Aborted {
                        step: name.clone(),
                        attempt: invocation.attempt,
                        failure,
                        retryable: retryable(error.cause_kind()),
                        invocation: entry.then(|| Box::new(invocation.clone())),
                    };
                    (format!("report-aborted-{}", invocation.attempt), event)
                } else {
                    ("report-failed".to_string(), RunEvent::Failed(failure))
                };
                let writes = vec![
                    Write::Delete { key: key(format!("inbox/{run}/{name}")) },
                    self.outgoing(
                        out_key(run, name, &what, &invocation.origin),
                        invocation.origin.clone(),
                        Message::Report(run.clone(), event),
                        Some(self.inner.config.retention_ms),
                        None,
                    )?,
                ];
                self.apply(writes)?;
                self.inner.wake.notify_one();
                return Ok(());
            }
            let backoff =
                self.inner.config.min_backoff.saturating_mul(1 << attempt.min(8)).min(self.inner.config.max_backoff);
            tokio::time::sleep(backoff).await;
        }
    }

    /// One attempt of a step: run it with its writes staged, then commit
    /// them with its records, successors' invocations and report.
    async fn try_step(&self, invocation: &Invocation, flush: Option<InboxFlush>) -> Result<()> {
        let loaded = self.loaded(&invocation.workflow)?;
        let step = loaded.step(&invocation.step)?;
        let (run, name) = (&invocation.run, &invocation.step);
        let executor = &self.inner.executor;
        let idle = Duration::from_millis(executor.host().state().limits().max_sandbox_idle_ms.max(1));

        executor.capabilities().check(run, Some(&invocation.capability), idle, Instant::now())?;
        executor.continuum().peers().carry(run, &invocation.capability);
        let successors_steps = loaded.successors(name);
        let mut successors = Vec::new();
        for c in &successors_steps {
            successors.push(Successor {
                step: c.name.clone(),
                node: self.node_for(&loaded.workflow, c).await,
                tmax_ms: invocation.options.tmax_ms.unwrap_or(c.tmax_ms),
            });
        }
        let (input, fallbacks) = if step.after.is_empty() {
            (StepInput::Inline(invocation.input.clone().unwrap_or_default()), Vec::new())
        } else {
            let mut locators = Vec::new();
            let mut fallbacks = Vec::new();
            for p in &step.after {
                let (_, l, f) = invocation
                    .handed
                    .iter()
                    .find(|(q, _, _)| q == p)
                    .ok_or_else(|| Error::Workflow(format!("step `{name}`: nothing handed on by `{p}`")))?;
                locators.push(l.clone());
                fallbacks.push(f.clone());
            }
            (StepInput::Handed(locators), fallbacks)
        };
        let sole_reader = step.after.iter().map(|p| loaded.successors(p).len() == 1).collect();
        let request = StepRequest {
            run_id: run.clone(),
            step: name.clone(),
            function: FunctionName::for_step(&invocation.workflow, name),
            input,
            successors: successors.clone(),
            policy: invocation.options.policy,
            ttl_ms: invocation.options.ttl_ms,
            fusion: invocation.options.fusion,
            // The producer's store keeps the durable copy of what it hands on.
            durable: true,
            sole_reader,
            run_states: invocation.run_states.clone(),
            fallbacks,
            deadline_ms: step.deadline_ms,
            // Step records are committed after the acknowledgements.
            early_release: false,
            arrival_wait_ms: 0,
        };
        let tier = executor.host().state().clone();
        // Replicated scopes: this replica must have applied what earlier
        // steps of the run read and wrote.
        cover_session(&tier, &invocation.session).await?;
        let (staged_tier, staged) = tier.staged();
        let pins = loaded.workflow.repeatable_read.then(|| {
            std::sync::Arc::new(std::sync::Mutex::new(
                invocation.session.pins.iter().cloned().collect::<databelt_host::state::replica::Pins>(),
            ))
        });
        let staged_tier = match &pins {
            Some(p) => staged_tier.with_pins(p.clone()),
            None => staged_tier,
        };
        let workflow = &loaded.workflow;
        let in_txn = workflow.in_transaction(name);
        let txn = txn_id(run, invocation.attempt);
        if in_txn {
            // Earlier steps of the same attempt prepared here: this one
            // reads their writes.
            let (t, id) = (tier.clone(), txn.clone());
            for part in blocking(move || t.prepared_parts(&id)).await? {
                staged.seed(&part.writes)?;
            }
        }
        let result = executor.execute_staged(request, staged_tier).await?;
        let session = self.session_after(&tier, &invocation.session, &staged, pins.as_deref())?;
        // The commit: done record, inbox entry gone, successors, report.
        // A transaction step prepares instead: the same, except that its
        // writes and its successors outside the transaction wait for the
        // decision.
        let expires = now_ms() + self.inner.config.retention_ms;
        let done = key(loaded.done_key(run, name, invocation.attempt));
        let mut on_commit = Vec::new();
        let mut extra = vec![
            Write::Put { key: done.clone(), value: encode(&result)?, expires_at_ms: Some(expires) },
            Write::Delete { key: key(format!("inbox/{run}/{name}")) },
        ];
        let mut direct = Vec::new();
        let mut run_states = invocation.run_states.clone();
        for l in &result.run_states {
            run_states.retain(|m| m.key != l.key);
            run_states.push(l.clone());
        }
        let output_key = state_key(run, name);
        for (c, succ) in successors_steps.iter().zip(&successors) {
            let Some(h) = result.handoffs.iter().find(|h| h.successors.contains(&c.name)) else { continue };
            let fallback = Locator {
                scope: RUN_SCOPE.to_string(),
                key: output_key.clone(),
                node: self.here().to_string(),
                size_bytes: result.output_bytes,
                place: Place::Store,
            };
            let share = Invocation {
                run: run.clone(),
                workflow: invocation.workflow.clone(),
                step: c.name.clone(),
                origin: invocation.origin.clone(),
                options: invocation.options,
                capability: invocation.capability.clone(),
                input: None,
                handed: vec![(name.clone(), h.locator.clone(), fallback)],
                run_states: run_states.clone(),
                attempt: if workflow.in_transaction(&c.name) { invocation.attempt } else { 0 },
                session: session.clone(),
            };
            let movable = matches!(c.node, StepNode::Placement).then(|| vec![succ.node.clone()]);
            let what = if workflow.in_transaction(&c.name) {
                format!("invoke-from-{name}@{}", invocation.attempt)
            } else {
                format!("invoke-from-{name}")
            };
            let k = out_key(run, &c.name, &what, "step");
            if in_txn && !workflow.in_transaction(&c.name) {
                // Runs once the transaction committed.
                on_commit.push(self.outgoing(k, succ.node.clone(), Message::Invoke(share), c.max_wait_ms, movable)?);
            } else {
                extra.push(self.outgoing_direct(
                    k,
                    succ.node.clone(),
                    Message::Invoke(share),
                    c.max_wait_ms,
                    movable,
                    &mut direct,
                )?);
            }
        }
        let (what, event) = if in_txn {
            let event = RunEvent::Prepared {
                step: name.clone(),
                attempt: invocation.attempt,
                node: self.here().to_string(),
                result,
                invocation: workflow.transaction_entry(name).then(|| Box::new(invocation.clone())),
            };
            (format!("report-prepared-{}", invocation.attempt), event)
        } else {
            ("report-done".to_string(), RunEvent::StepDone { step: name.clone(), result })
        };
        extra.push(self.outgoing_direct(
            out_key(run, name, &what, &invocation.origin),
            invocation.origin.clone(),
            Message::Report(run.clone(), event),
            Some(self.inner.config.retention_ms),
            None,
            &mut direct,
        )?);
        fail::fail_point!("step-before-commit", |_| Err(Error::Unavailable("fail point step-before-commit".into())));
        if let Some(flush) = flush
            && !flush.await.unwrap_or(false)
        {
            // The inbox entry it started from was never written: run again
            // from the store (the conflict path).
            return Err(Error::Conflict("the step's inbox entry was not written".into()));
        }
        // Not if the step committed already, nor if its run has ended
        // (failed by its deadline meanwhile): then nothing of it takes effect.
        let guards = [done, key(format!("ended/{run}"))];
        if in_txn {
            // The run's own hand-off states are private to the run: they
            // are written now, so that the successors can read them.
            extra.extend(staged.take_scope(RUN_SCOPE)?);
            let part = name.to_string();
            blocking(move || tier.prepare_staged(&txn, &part, &staged, extra, on_commit, Vec::new(), &guards)).await?;
        } else {
            blocking(move || tier.commit_staged(&staged, extra, &guards)).await?;
        }
        // Committed, not yet handed on: the delivery loop sends it later.
        fail::fail_point!("step-after-commit", |_| Ok(()));
        self.send_now(direct);
        Ok(())
    }

    /// The run's session after a step: what this replica has applied of
    /// each replicated scope the step read or wrote, the step's replicated
    /// writes, and (repeatable read) its pins.
    fn session_after(
        &self,
        tier: &StateTier,
        before: &RunSession,
        staged: &databelt_host::state::StagedStore,
        pins: Option<&std::sync::Mutex<databelt_host::state::replica::Pins>>,
    ) -> Result<RunSession> {
        let mut session = before.clone();
        if tier.replication().is_none() {
            return Ok(session);
        }
        // Only the scopes the step read or wrote: a busy scope the run never
        // touches must not hold up its later steps.
        let done = staged.writes()?;
        let mut touched: std::collections::BTreeSet<String> = done
            .reads
            .iter()
            .map(|(k, _)| &k.scope)
            .chain(done.writes.iter().map(|w| &w.key().scope))
            .filter(|s| tier.is_replicated(s))
            .cloned()
            .collect();
        if let Some(pins) = pins {
            let pins = pins.lock().map_err(|_| Error::Runtime("pins lock poisoned".into()))?;
            touched.extend(pins.keys().map(|k| k.scope.clone()));
        }
        for scope in &touched {
            session.session.observe(scope, &tier.replica_vv(scope)?);
        }
        for w in done.writes {
            if let Write::Put { key, value, .. } = w
                && tier.is_replicated(&key.scope)
            {
                session.written.retain(|(k, _)| *k != key);
                session.written.push((key, value));
            }
        }
        if let Some(pins) = pins {
            let pins = pins.lock().map_err(|_| Error::Runtime("pins lock poisoned".into()))?;
            session.pins = pins.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        Ok(session)
    }

    /// Apply a step's report to the run record (origin); end the run when
    /// it is complete or failed.
    fn report(&self, run: &RunId, event: RunEvent) -> Result<()> {
        self.update_record(run, |record, loaded| {
            let mut writes = Vec::new();
            match &event {
                RunEvent::StepDone { step, result } => {
                    if record.steps.iter().any(|(s, _)| s == step) {
                        return Ok(None);
                    }
                    record.steps.push((step.clone(), result.clone()));
                    self.check_done(record, loaded);
                }
                RunEvent::Failed(failure) => {
                    record.status = RunStatus::Failed;
                    record.failure = Some(failure.clone());
                }
                RunEvent::Prepared { step, attempt, node, result, invocation } => {
                    let Some(txn) = record.txn.as_mut() else { return Ok(None) };
                    if let Some(i) = invocation
                        && !txn.entries.iter().any(|(_, e)| e.step == i.step)
                    {
                        txn.entries.push((node.clone(), (**i).clone()));
                    }
                    if *attempt < txn.attempt || (*attempt == txn.attempt && txn.committed) {
                        // Decided already: tell the late participant again.
                        let commit = *attempt == txn.attempt;
                        writes.push(self.decision(run, *attempt, commit, node)?);
                        if !commit
                            && !txn.committed
                            && loaded.workflow.transaction_entry(step)
                            && !txn.prepared.iter().any(|(s, _, _)| s == step)
                            && let Some(i) = invocation
                        {
                            // It missed the retry: it starts the current attempt now.
                            writes.push(self.retry_invocation(i, txn.attempt, txn.aborts, node)?);
                        }
                        return Ok(Some(writes));
                    }
                    if *attempt > txn.attempt || txn.prepared.iter().any(|(s, _, _)| s == step) {
                        return Ok(None);
                    }
                    txn.prepared.push((step.clone(), node.clone(), result.clone()));
                    if txn.started_ms.is_none() {
                        let started = now_ms();
                        txn.started_ms = Some(started);
                        let timeout = loaded.workflow.transaction.as_ref().map_or(10_000, |t| t.timeout_ms);
                        writes.push(self.txn_deadline(run, started + timeout, txn.attempt)?);
                    }
                    let all = loaded
                        .workflow
                        .transaction
                        .as_ref()
                        .is_some_and(|t| t.steps.iter().all(|s| txn.prepared.iter().any(|(p, _, _)| p == s)));
                    if all {
                        // The decision: commit, durable with this record.
                        txn.committed = true;
                        let mut nodes: Vec<&String> = txn.prepared.iter().map(|(_, n, _)| n).collect();
                        nodes.sort();
                        nodes.dedup();
                        for n in nodes {
                            writes.push(self.decision(run, txn.attempt, true, n)?);
                        }
                        writes.push(Write::Delete { key: key(format!("txn-deadline/{run}")) });
                        let prepared: Vec<(StepName, StepResult)> =
                            txn.prepared.iter().map(|(s, _, r)| (s.clone(), r.clone())).collect();
                        record.steps.extend(prepared);
                        self.check_done(record, loaded);
                    }
                }
                RunEvent::Aborted { step, attempt, failure, retryable, invocation } => {
                    let Some(txn) = record.txn.as_mut() else { return Ok(None) };
                    if let Some(i) = invocation
                        && !txn.entries.iter().any(|(_, e)| e.step == i.step)
                    {
                        txn.entries.push((failure.node.clone(), (**i).clone()));
                    }
                    if *attempt != txn.attempt || txn.committed {
                        return Ok(Some(writes));
                    }
                    tracing::debug!(%run, %step, attempt, "a transaction step could not prepare");
                    writes.extend(self.abort_attempt(record, loaded, failure.clone(), *retryable)?);
                }
            }
            Ok(Some(writes))
        })
    }

    /// Mark the run succeeded when every step is done.
    fn check_done(&self, record: &mut RunRecord, loaded: &Loaded) {
        if loaded.workflow.steps.iter().all(|s| record.steps.iter().any(|(d, _)| *d == s.name)) {
            record.status = RunStatus::Succeeded;
        }
    }

    /// The coordinator's decision on `attempt` for `node`, to deliver.
    fn decision(&self, run: &RunId, attempt: u32, commit: bool, node: &str) -> Result<Write> {
        self.outgoing(
            out_key(run, "txn", &format!("decide-{attempt}"), node),
            node.to_string(),
            Message::Decide { run: run.clone(), attempt, commit },
            Some(self.inner.config.retention_ms),
            None,
        )
    }

    /// The transaction's deadline index entry: when attempt `attempt`
    /// aborts if it has not committed.
    fn txn_deadline(&self, run: &RunId, at_ms: u64, attempt: u32) -> Result<Write> {
        let mut value = at_ms.to_le_bytes().to_vec();
        value.extend(attempt.to_le_bytes());
        Ok(put_record(format!("txn-deadline/{run}"), value, Some(at_ms + self.inner.config.retention_ms)))
    }

    /// Send `invocation` (where the transaction starts) again, for attempt
    /// `attempt`, after a jittered backoff that grows with `aborts`.
    fn retry_invocation(&self, invocation: &Invocation, attempt: u32, aborts: u32, node: &str) -> Result<Write> {
        let mut again = invocation.clone();
        again.attempt = attempt;
        let k = out_key(&invocation.run, &invocation.step, &format!("invoke-retry@{attempt}"), "step");
        let write = self.outgoing(k, node.to_string(), Message::Invoke(again), None, None)?;
        let Write::Put { key, value, expires_at_ms } = write else { return Ok(write) };
        let mut o = decode_outgoing(&value)?;
        let cap = self.inner.config.min_backoff.saturating_mul(1 << aborts.min(6)).min(self.inner.config.max_backoff);
        o.next_ms += (cap.as_millis() as f64 * rand::random::<f64>()) as u64;
        Ok(Write::Put { key, value: encode(&o)?, expires_at_ms })
    }

    /// Abort the current attempt of the run's transaction: tell every node
    /// that prepared, then retry (when `retryable` and retries remain) or
    /// fail the run.
    fn abort_attempt(
        &self,
        record: &mut RunRecord,
        loaded: &Loaded,
        failure: Failure,
        retryable: bool,
    ) -> Result<Vec<Write>> {
        let run = record.run.clone();
        let Some(txn) = record.txn.as_mut() else { return Ok(Vec::new()) };
        let mut writes = Vec::new();
        let mut nodes: Vec<&String> = txn.prepared.iter().map(|(_, n, _)| n).collect();
        nodes.sort();
        nodes.dedup();
        for n in nodes {
            writes.push(self.decision(&run, txn.attempt, false, n)?);
        }
        writes.push(Write::Delete { key: key(format!("txn-deadline/{run}")) });
        let retries = loaded.workflow.transaction.as_ref().map_or(0, |t| t.retries);
        if retryable && txn.aborts < retries {
            txn.aborts += 1;
            txn.attempt += 1;
            txn.prepared.clear();
            txn.started_ms = None;
            for (node, invocation) in &txn.entries {
                writes.push(self.retry_invocation(invocation, txn.attempt, txn.aborts, node)?);
            }
        } else {
            record.status = RunStatus::Failed;
            let mut failure = failure;
            failure.message = format!(
                "the transaction aborted (attempt {} of {}): {}",
                txn.attempt + 1,
                retries + 1,
                failure.message
            );
            record.failure = Some(failure);
        }
        Ok(writes)
    }

    /// Change the record of a running run with `change` (which says whether
    /// it changed anything) and save it, in a transaction that conflicts
    /// with any other change of the record since it was read (reports
    /// arrive concurrently); when the run has ended, send every node a
    /// `forget` in the same transaction.
    fn update_record(
        &self,
        run: &RunId,
        mut change: impl FnMut(&mut RunRecord, &Loaded) -> Result<Option<Vec<Write>>>,
    ) -> Result<()> {
        let tier = self.tier();
        for _ in 0..MAX_CONFLICTS {
            let (view, staged) = tier.staged();
            let Some(bytes) = view.get(WORKFLOW_SCOPE, &format!("run/{run}"))? else { return Ok(()) };
            let mut record: RunRecord = decode(&bytes, "run record")?;
            if record.status != RunStatus::Running {
                return Ok(());
            }
            let loaded = self.loaded(&record.workflow)?;
            let Some(mut writes) = change(&mut record, &loaded)? else { return Ok(()) };
            let ended = record.status != RunStatus::Running;
            writes.extend(self.record_writes(record)?);
            match tier.commit_staged(&staged, writes, &[]).map(|_| ()) {
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Ok(()) if ended => {
                    let _ = self.inner.running_runs.fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| Some(n.saturating_sub(1)),
                    );
                    return Ok(());
                }
                other => return other,
            }
        }
        Err(Error::Conflict(format!("the record of run `{run}` kept changing")))
    }

    /// The writes that save `record`, and when it has ended, send every
    /// node a `forget`.
    fn record_writes(&self, mut record: RunRecord) -> Result<Vec<Write>> {
        let retention = self.inner.config.retention_ms;
        let mut writes = Vec::new();
        if record.status != RunStatus::Running {
            let now = now_ms();
            record.finished_ms = Some(now);
            let committed = record.txn.as_ref().filter(|t| t.committed).map(|t| t.attempt);
            writes.push(Write::Delete { key: key(format!("txn-deadline/{}", record.run)) });
            for node in self.topology()?.nodes {
                writes.push(self.outgoing(
                    out_key(&record.run, "run", "forget", &node.id),
                    node.id.clone(),
                    Message::Forget(record.run.clone(), committed),
                    Some(retention),
                    None,
                )?);
            }
        }
        let expires = record.finished_ms.unwrap_or(record.deadline_ms) + retention;
        if record.status != RunStatus::Running {
            writes.push(Write::Delete { key: key(format!("deadline/{}", record.run)) });
        }
        writes.push(put_record(format!("run/{}", record.run), encode(&record)?, Some(expires)));
        Ok(writes)
    }

    /// Fail runs of this origin whose deadline passed.
    async fn watch_deadlines(&self) -> Result<()> {
        let runs = self.clone();
        let ended = blocking(move || {
            let now = now_ms();
            let mut ended = 0;
            // A small index, `deadline/{run}` → the deadline, of the runs
            // still running: no run record is read until its deadline passed.
            for k in runs.keys("deadline/", 1000)? {
                let Some(bytes) = runs.tier().get(WORKFLOW_SCOPE, &k)? else { continue };
                let deadline = bytes.try_into().map(u64::from_le_bytes).unwrap_or(0);
                let Some(run) = k.strip_prefix("deadline/").and_then(|r| RunId::new(r).ok()) else { continue };
                if deadline > now {
                    continue;
                }
                if !runs.record(&run)?.is_some_and(|r| r.status == RunStatus::Running) {
                    runs.apply(vec![Write::Delete { key: key(k) }])?;
                    continue;
                }
                runs.update_record(&run, |record, loaded| {
                    let pending: Vec<String> = loaded
                        .workflow
                        .steps
                        .iter()
                        .filter(|s| !record.steps.iter().any(|(d, _)| *d == s.name))
                        .map(|s| match &s.node {
                            StepNode::Fixed(n) => format!("`{}` (node `{n}`)", s.name),
                            StepNode::Placement => format!("`{}` (placed by the service)", s.name),
                        })
                        .collect();
                    record.status = RunStatus::Failed;
                    record.failure = Some(Failure {
                        step: pending.first().cloned().unwrap_or_default(),
                        node: String::new(),
                        kind: ErrorKind::Timeout.as_str().to_string(),
                        message: format!("the run's deadline passed with steps {} not done", pending.join(", ")),
                    });
                    Ok(Some(Vec::new()))
                })?;
                ended += 1;
            }
            // Transaction attempts not prepared in time abort (and retry).
            for k in runs.keys("txn-deadline/", 1000)? {
                let Some(bytes) = runs.tier().get(WORKFLOW_SCOPE, &k)? else { continue };
                let (Some(at), Some(attempt)) = (
                    bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes),
                    bytes.get(8..12).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes),
                ) else {
                    continue;
                };
                let Some(run) = k.strip_prefix("txn-deadline/").and_then(|r| RunId::new(r).ok()) else { continue };
                if at > now {
                    continue;
                }
                runs.update_record(&run, |record, loaded| {
                    let Some(txn) = record.txn.as_ref().filter(|t| t.attempt == attempt && !t.committed) else {
                        return Ok(Some(vec![Write::Delete { key: key(format!("txn-deadline/{run}")) }]));
                    };
                    let timeout = loaded.workflow.transaction.as_ref().map_or(0, |t| t.timeout_ms);
                    let missing: Vec<String> = loaded
                        .workflow
                        .transaction
                        .iter()
                        .flat_map(|t| t.steps.iter())
                        .filter(|s| !txn.prepared.iter().any(|(p, _, _)| p == *s))
                        .map(|s| format!("`{s}`"))
                        .collect();
                    let failure = Failure {
                        step: missing.first().cloned().unwrap_or_default(),
                        node: String::new(),
                        kind: ErrorKind::Timeout.as_str().to_string(),
                        message: format!(
                            "steps {} did not prepare within the transaction's timeout ({timeout} ms)",
                            missing.join(", ")
                        ),
                    };
                    runs.abort_attempt(record, loaded, failure, true).map(Some)
                })?;
                ended += 1;
            }
            Ok(ended)
        })
        .await?;
        if ended > 0 {
            self.inner.changed.notify_waiters();
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Delete everything of `run` on this host and leave a tombstone.
    fn forget(&self, run: &RunId, committed: Option<u32>) -> Result<()> {
        fail::fail_point!("run-forget", |_| Err(Error::Unavailable("fail point run-forget".into())));
        // Parts of the run's transaction still prepared here: the committed
        // attempt's apply, every other attempt's are dropped.
        let prefix = format!("{run}.");
        for txn in self.tier().prepared_transactions(&prefix)? {
            if txn.strip_prefix(&prefix).is_none_or(|a| a.parse::<u32>().is_err()) {
                continue; // another run's
            }
            let commit = committed.is_some_and(|a| txn == txn_id(run, a));
            self.tier().resolve(&txn, commit, Vec::new())?;
        }
        let executor = &self.inner.executor;
        executor.capabilities().forget(run);
        executor.continuum().peers().drop_run(run);
        executor.forget_run(run)?;
        let mut writes = Vec::new();
        for prefix in [format!("inbox/{run}/"), format!("done/{run}/"), format!("out/{run}/")] {
            for k in self.keys(&prefix, 1000)? {
                // A forget for everyone else still goes out from here.
                if !k.ends_with("/forget/") && !k.contains("/run/forget/") {
                    writes.push(Write::Delete { key: key(k) });
                }
            }
        }
        writes.push(put_record(format!("ended/{run}"), Vec::new(), Some(now_ms() + self.inner.config.retention_ms)));
        self.apply(writes)
    }

    /// At start: run again every complete inbox entry (its step was
    /// interrupted), and deliver what is pending.
    async fn resume(&self) -> Result<()> {
        let runs = self.clone();
        let running = blocking(move || runs.count_running()).await?;
        self.inner.running_runs.fetch_add(running, std::sync::atomic::Ordering::SeqCst);
        let runs = self.clone();
        let entries: Vec<Invocation> = blocking(move || {
            let mut v = Vec::new();
            for k in runs.keys("inbox/", 1000)? {
                if let Some(i) = runs.read::<Invocation>(&k, "inbox entry")? {
                    v.push(i);
                }
            }
            Ok(v)
        })
        .await?;
        for invocation in entries {
            let Ok(loaded) = self.loaded(&invocation.workflow) else { continue };
            let Ok(step) = loaded.step(&invocation.step) else { continue };
            if step.after.iter().all(|p| invocation.handed.iter().any(|(q, _, _)| q == p)) {
                self.spawn_step(invocation.run.clone(), invocation.step.clone(), None);
            }
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// The run and deploy routes, to merge into the host's router.
    pub fn router(self) -> Router {
        let budget = self.inner.executor.host().body_budget().clone();
        Router::new()
            .route("/workflows/{name}", put(deploy_route))
            .route("/workflows/{name}/runs", post(start_route))
            .route("/runs", get(list_route))
            .route("/runs/{run}", get(show_route))
            .route("/workflow/v1/deliver", post(deliver_route))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn_with_state(BodyLimit { budget, max_body: MAX_BODY_BYTES }, limit_body))
            .with_state(self)
            .layer(axum::middleware::map_response(crate::http::json_errors))
    }

    /// A run record as JSON: outputs converted through their schemas.
    pub fn record_json(&self, record: &RunRecord) -> Value {
        let loaded = self.loaded(&record.workflow).ok();
        let mut outputs = serde_json::Map::new();
        let mut steps = Vec::new();
        for (step, result) in &record.steps {
            steps.push(json!({
                "step": step.as_str(),
                "node": result.node,
                "invoke_micros": result.invoke_micros,
                "read_micros": result.read_micros,
                "output_bytes": result.output_bytes,
            }));
            if let Some(out) = &result.output {
                let value = loaded
                    .as_ref()
                    .and_then(|l| l.schemas(step))
                    .and_then(|s| databelt_host::schema::postcard_to_json(&s.output, out).ok())
                    .unwrap_or_else(|| json!({"postcard_bytes": out.len()}));
                outputs.insert(step.to_string(), value);
            }
        }
        json!({
            "run_id": record.run.as_str(),
            "workflow": record.workflow,
            "status": record.status,
            "started_ms": record.started_ms,
            "finished_ms": record.finished_ms,
            "steps": steps,
            "outputs": outputs,
            "failure": record.failure,
            "transaction": record.txn.as_ref().map(|t| json!({
                "attempt": t.attempt,
                "aborts": t.aborts,
                "committed": t.committed,
            })),
        })
    }
}

/// The delivery loop of a host's durable runs; stops when dropped.
pub struct DeliveryLoop(tokio::task::JoinHandle<()>);

impl Drop for DeliveryLoop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn deploy_route(
    State(runs): State<DurableRuns>,
    Path(name): Path<String>,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    let bundle: Bundle = decode_postcard(&body, "Bundle")?;
    let workflow = Workflow::from_toml(&bundle.toml).map_err(|e| Error::BadInput(e.to_string()))?;
    if workflow.name != name {
        return Err(Error::BadInput(format!("the path names `{name}`, the workflow file `{}`", workflow.name)).into());
    }
    let nodes = runs.deploy(bundle).await?;
    Ok((StatusCode::OK, axum::Json(json!({"workflow": name, "nodes": nodes}))).into_response())
}

#[derive(Deserialize)]
struct StartQuery {
    policy: Option<String>,
    fusion: Option<bool>,
    ttl_ms: Option<u64>,
    tmax_ms: Option<f64>,
    deadline_ms: Option<u64>,
    wait_ms: Option<u64>,
}

async fn start_route(
    State(runs): State<DurableRuns>,
    Path(name): Path<String>,
    Query(q): Query<StartQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    let loaded = runs.loaded(&name)?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let input = if json_body {
        let entry = loaded
            .workflow
            .steps
            .iter()
            .find(|s| s.after.is_empty())
            .and_then(|s| loaded.schemas(&s.name))
            .ok_or_else(|| Error::Workflow("the workflow has no entry step".into()))?;
        databelt_host::schema::json_text_to_postcard(&entry.input, &body)?
    } else {
        body.to_vec()
    };
    let policy = match q.policy.as_deref() {
        None => Policy::Databelt,
        Some(p) => p.parse::<Policy>()?,
    };
    let options = DurableRunOptions {
        policy,
        ttl_ms: q.ttl_ms.unwrap_or(600_000),
        fusion: q.fusion.unwrap_or(loaded.workflow.fusion),
        tmax_ms: q.tmax_ms,
    };
    let run = runs.start_run(&name, input, options, q.deadline_ms).await?;
    if let Some(wait) = q.wait_ms {
        let record = runs.wait(&run, Duration::from_millis(wait.min(600_000))).await?;
        if let Some(r) = record {
            return Ok((StatusCode::OK, axum::Json(runs.record_json(&r))).into_response());
        }
    }
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"run_id": run.as_str(), "status": RunStatus::Running})))
        .into_response())
}

#[derive(Deserialize)]
struct ShowQuery {
    wait_ms: Option<u64>,
}

async fn show_route(
    State(runs): State<DurableRuns>,
    Path(run): Path<String>,
    Query(q): Query<ShowQuery>,
) -> std::result::Result<Response, ApiError> {
    let run = RunId::new(run).map_err(Error::from)?;
    let record = runs.wait(&run, Duration::from_millis(q.wait_ms.unwrap_or(0).min(600_000))).await?;
    let record =
        record.ok_or_else(|| Error::UnknownWorkflow(format!("no run `{run}` started on this node (or it expired)")))?;
    Ok(axum::Json(runs.record_json(&record)).into_response())
}

async fn list_route(State(runs): State<DurableRuns>) -> std::result::Result<Response, ApiError> {
    let r = runs.clone();
    let records = blocking(move || r.records(1000)).await?;
    let list: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({"run_id": r.run.as_str(), "workflow": r.workflow, "status": r.status,
                   "started_ms": r.started_ms, "finished_ms": r.finished_ms})
        })
        .collect();
    Ok(axum::Json(list).into_response())
}

async fn deliver_route(State(runs): State<DurableRuns>, body: Bytes) -> std::result::Result<Response, ApiError> {
    let message: Message = decode_postcard(&body, "Message")?;
    runs.receive(message).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_messages_stored_before_they_kept_a_trace_still_decode() {
        #[derive(Serialize)]
        struct Before {
            target: String,
            message: Message,
            attempts: u32,
            first_ms: u64,
            next_ms: u64,
            max_wait_ms: u64,
            movable: Option<Vec<String>>,
        }
        let message = Message::Forget(RunId::new("r-1").unwrap(), Some(2));
        let before = Before {
            target: "s2".into(),
            message: message.clone(),
            attempts: 3,
            first_ms: 10,
            next_ms: 20,
            max_wait_ms: 30,
            movable: Some(vec!["s1".into()]),
        };
        let o = decode_outgoing(&encode(&before).unwrap()).unwrap();
        assert_eq!((o.target.as_str(), o.attempts, o.first_ms, o.next_ms, o.max_wait_ms), ("s2", 3, 10, 20, 30));
        assert_eq!((o.movable.clone(), o.trace.clone()), (Some(vec!["s1".to_string()]), None));
        let traced = Outgoing { trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()), ..o };
        let again = decode_outgoing(&encode(&traced).unwrap()).unwrap();
        assert_eq!(again.trace, traced.trace, "kept through a store round trip");
        let e = decode_outgoing(&[0xff, 0xff]).expect_err("damaged");
        assert!(e.to_string().contains("outgoing message is damaged"), "{e}");
    }

    #[test]
    fn only_failures_that_may_pass_are_retried() {
        assert!(retryable(ErrorKind::Unavailable));
        assert!(retryable(ErrorKind::Conflict));
        assert!(!retryable(ErrorKind::FunctionError));
        assert!(!retryable(ErrorKind::BadInput));
    }
}
