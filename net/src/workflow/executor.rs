//! The host side of a workflow: run one step (read its input states through
//! the tiered read path, invoke the function, store the output and hand it
//! on under the run's policy) and clean up a finished run's state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use databelt_host::state::{Sandbox, SetOptions, StateTier};
use databelt_host::{Error, Host, InvokeOptions, InvokeOutcome, Result, RunScope};
use databelt_placement::Decision;
use databelt_types::RunId;
use futures_util::StreamExt as _;
use serde_json::json;

use crate::api::MAX_BODY_BYTES;
use crate::auth::Caller;
use crate::continuum::{Continuum, Destination, Locator, Policy, Propagation, ReadHit, ReadOutcome, ReadTier};
use crate::http::{ApiError, BodyLimit, blocking, blocking_then_clean, decode_postcard, limit_body};
use crate::peer::{Arrivals, Place};
use crate::workflow::capability::{CAPABILITY_HEADER, RunCapabilities};
use crate::workflow::protocol::{
    HandOffReport, InputRead, MAX_ARRIVAL_WAIT_MS, MAX_WARM_NODES, RUN_SCOPE, STEP_FRAMES_CONTENT_TYPE, StateCounters,
    StepFrame, StepInput, StepRequest, StepResult, Successor, WarmRequest, run_scope_prefix, state_key,
};

/// The pauses before each further try at reading a handed input found
/// nowhere, ms (see `StepRun::read_again`): a few, growing, under 1.5 s
/// in all — long enough for a cut connection's route to change, short
/// against a step's deadline.
pub const READ_RETRY_DELAYS_MS: [u64; 3] = [50, 250, 1000];

/// How long a step's host tries to open a connection to a successor's node
/// ahead of the hand-off ([`Continuum::warm_toward`]): a few round trips of
/// the slowest link, far under a step's deadline.
pub const WARM_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs workflow steps on one host. Cheap to clone.
#[derive(Clone)]
pub struct StepExecutor {
    host: Host,
    continuum: Continuum,
    capabilities: Arc<RunCapabilities>,
    arrivals: Arc<Arrivals>,
}

/// Where an early answer goes: the step's result as soon as its hand-offs'
/// targets are elected (see [`StepRequest::early_release`]).
type EarlyAnswer = tokio::sync::oneshot::Sender<StepResult>;

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

impl StepExecutor {
    /// Steps run by `host`, whose state moves through `continuum` (built
    /// over the same host's state tier).
    pub fn new(host: Host, continuum: Continuum) -> StepExecutor {
        StepExecutor { host, continuum, capabilities: Arc::default(), arrivals: Arc::default() }
    }

    /// The pushes of run state arriving at this host (shared with its peer
    /// routes by [`crate::api::serve_node`]): a step waiting for an input
    /// still in flight waits on them.
    pub fn arrivals(&self) -> Arc<Arrivals> {
        self.arrivals.clone()
    }

    /// The run capability bindings of this host (shared with its peer
    /// routes by [`crate::api::serve_node`]).
    pub fn capabilities(&self) -> Arc<RunCapabilities> {
        self.capabilities.clone()
    }

    /// The host it runs steps on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The continuum this executor hands state through.
    pub fn continuum(&self) -> &Continuum {
        &self.continuum
    }

    /// Run one step. Fails without storing anything when the input cannot be
    /// read or the function fails; a hand-off whose push fails is not an
    /// error (the state stays here and the report says so).
    ///
    /// With `fusion`, the run's states live in this host's sandbox of the
    /// run: an input handed on by a step on this host is taken from it (no
    /// store round trip, no copy for its only reader), declared run-scope
    /// keys held elsewhere are fetched with one batch per node, and the
    /// output travels with the run-scope states the step wrote, one batch
    /// per destination node. Without it, every state is one store operation
    /// and one transfer.
    pub async fn execute(&self, request: StepRequest) -> Result<StepResult> {
        self.execute_in(request, None, None).await
    }

    /// [`Self::execute`], sending the result to `early` as soon as the
    /// hand-offs' targets are elected and before their pushes (only when a
    /// state leaves this node); the returned result is the final one.
    pub async fn execute_early(&self, request: StepRequest, early: EarlyAnswer) -> Result<StepResult> {
        self.execute_in(request, None, Some(early)).await
    }

    /// [`Self::execute`] with the function's own state writes staged over
    /// `staged` (from [`StateTier::staged`]) instead of applied: the caller
    /// commits them with the step's records, or drops them.
    pub async fn execute_staged(&self, request: StepRequest, staged: StateTier) -> Result<StepResult> {
        self.execute_in(request, Some(staged), None).await
    }

    async fn execute_in(
        &self,
        request: StepRequest,
        staged: Option<StateTier>,
        early: Option<EarlyAnswer>,
    ) -> Result<StepResult> {
        let run_id = request.run_id.clone();
        let result = self.execute_step(request, staged, early).await;
        if result.is_err()
            && let Ok(Some(sandbox)) = self.host.sandboxes().get(&run_id)
            && sandbox.is_empty().unwrap_or(false)
        {
            // A failed first step leaves no empty sandbox behind.
            let _ = self.host.sandboxes().drop_run(&run_id);
        }
        result
    }

    async fn execute_step(
        &self,
        mut request: StepRequest,
        staged: Option<StateTier>,
        early: Option<EarlyAnswer>,
    ) -> Result<StepResult> {
        validate(&request)?;
        let info = self.host.function(&request.function)?;
        // Connect to the successors' nodes while the inputs arrive and the
        // function runs, not when its output is ready.
        self.continuum.warm_toward(request.policy, request.successors.iter().map(|s| s.node.as_str()), WARM_TIMEOUT);
        let mut step = StepRun::new(self, &request)?;
        // Durable runs commit a step's records after its acknowledgements.
        step.early = early.filter(|_| staged.is_none() && !request.durable);
        step.staged = staged.clone();
        let started = Instant::now();
        let input = std::mem::replace(&mut request.input, StepInput::Inline(Vec::new()));
        let (input, inputs) = step.read_inputs(input, &request.sole_reader, &request.fallbacks).await?;
        for read in &inputs {
            crate::metrics::input_read(&step.here, Some(read.tier));
        }
        let prefetched = step.prefetch(&info.reads, &request.run_states).await?;
        let read_micros = micros(started);
        let invoked = Instant::now();
        let outcome = step.invoke(&request, input, staged).await?;
        let invoke_micros = micros(invoked);
        step.counters.state_micros += read_micros;
        let output_bytes = outcome.output.len() as u64;
        let written: Vec<String> = outcome.run_written.iter().map(|k| format!("{}{k}", step.prefix)).collect();
        let mut result = StepResult {
            node: step.here.clone(),
            inputs,
            read_micros,
            invoke_micros,
            output_bytes,
            store_micros: 0,
            output: None,
            handoffs: Vec::new(),
            run_states: Vec::new(),
            prefetched,
            counters: StateCounters::default(),
            pending: false,
        };
        if request.successors.is_empty() {
            result.run_states = step.locate_written(&written)?;
            result.output = Some(outcome.output);
        } else {
            let stored = Instant::now();
            let (handoffs, run_states, store_micros) =
                step.store_and_hand_on(&request, outcome.output, &written, &result).await?;
            step.counters.state_micros += micros(stored);
            result.handoffs = handoffs;
            result.run_states = run_states;
            result.store_micros = store_micros;
        }
        result.counters = step.counters;
        Ok(result)
    }

    /// Run ids with hand-off state on this host (in its store or in a
    /// fusion sandbox).
    pub fn live_runs(&self) -> Result<Vec<RunId>> {
        let mut runs: Vec<RunId> = self.host.sandboxes().runs()?;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.host.state().list_keys(RUN_SCOPE, "", cursor.as_deref(), None)?;
            for key in &page.keys {
                // Keys in the run scope start with a valid run id; others are skipped.
                let Ok(run) = RunId::new(key.split('/').next().unwrap_or_default()) else { continue };
                if runs.last().is_none_or(|r| *r != run) {
                    runs.push(run);
                }
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        runs.sort();
        runs.dedup();
        Ok(runs)
    }

    /// Delete every hand-off state of run `run_id` on this host and drop its
    /// fusion sandbox; returns how many states were deleted.
    pub fn forget_run(&self, run_id: &RunId) -> Result<u64> {
        let mut deleted = 0;
        if let Some(sandbox) = self.host.sandboxes().get(run_id)? {
            deleted += sandbox.len()?;
            self.host.sandboxes().drop_run(run_id)?;
        }
        let tier = self.host.state();
        let prefix = format!("{run_id}/");
        loop {
            // Deleting as we go: each page starts again from the front.
            let page = tier.list_keys(RUN_SCOPE, &prefix, None, Some(tier.limits().max_batch_keys.min(1000) as u32))?;
            if page.keys.is_empty() {
                return Ok(deleted);
            }
            deleted += page.keys.len() as u64;
            tier.delete_many(RUN_SCOPE, page.keys)?;
        }
    }

    /// The step routes, to merge into the host's router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/workflow/v1/step", post(step))
            .route("/workflow/v1/warm", post(warm))
            .route("/workflow/v1/runs", get(runs))
            .route("/workflow/v1/runs/{run_id}", delete(forget))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn_with_state(
                BodyLimit { budget: self.host.body_budget().clone(), max_body: MAX_BODY_BYTES },
                limit_body,
            ))
            .with_state(self)
            .layer(axum::middleware::map_response(crate::http::json_errors))
    }
}

/// Check what the step protocol cannot express in types: successors' SLOs,
/// the run-state locators' scope, the sole-reader flags.
fn validate(request: &StepRequest) -> Result<()> {
    if request.successors.iter().any(|s| !(s.tmax_ms.is_finite() && s.tmax_ms >= 0.0)) {
        return Err(Error::BadInput("every successor's tmax_ms must be a non-negative number".into()));
    }
    let prefix = run_scope_prefix(&request.run_id);
    if let Some(l) = request.run_states.iter().find(|l| l.scope != RUN_SCOPE || !l.key.starts_with(&prefix)) {
        return Err(Error::BadInput(format!(
            "run state `{}/{}` is not in this run's scope (`{RUN_SCOPE}/{prefix}…`)",
            l.scope, l.key
        )));
    }
    if let StepInput::Handed(locators) = &request.input
        && !request.sole_reader.is_empty()
        && request.sole_reader.len() != locators.len()
    {
        return Err(Error::BadInput("sole_reader must be empty or have one flag per input".into()));
    }
    Ok(())
}

/// One step while it runs on this host: where its run's states live here
/// (the run's sandbox with fusion, else the store) and what it has counted.
struct StepRun<'a> {
    executor: &'a StepExecutor,
    run_id: RunId,
    here: String,
    prefix: String,
    sandbox: Option<Sandbox>,
    local: StateTier,
    counters: StateCounters,
    /// The step's staged tier, in a durable run.
    staged: Option<StateTier>,
    /// Where the early answer goes, until it is sent.
    early: Option<EarlyAnswer>,
    /// How long an input still in flight to this node is waited for.
    arrival_wait: Duration,
}

impl<'a> StepRun<'a> {
    fn new(executor: &'a StepExecutor, request: &StepRequest) -> Result<StepRun<'a>> {
        // The run's sandbox here lives for the run's TTL when this step makes
        // it (capped by the host); the host's timer drops it after that.
        let sandbox = if request.fusion {
            Some(executor.host.sandboxes().open_with_ttl(&request.run_id, request.ttl_ms)?)
        } else {
            None
        };
        let local = match &sandbox {
            Some(s) => s.tier().clone(),
            None => executor.host.state().clone(),
        };
        Ok(StepRun {
            executor,
            run_id: request.run_id.clone(),
            here: executor.continuum.node_id().to_string(),
            prefix: run_scope_prefix(&request.run_id),
            sandbox,
            local,
            counters: StateCounters::default(),
            staged: None,
            early: None,
            arrival_wait: Duration::from_millis(request.arrival_wait_ms.min(MAX_ARRIVAL_WAIT_MS)),
        })
    }

    fn continuum(&self) -> &Continuum {
        &self.executor.continuum
    }

    /// Where this host keeps the run's states.
    fn local_place(&self) -> Place {
        if self.sandbox.is_some() { Place::Sandbox } else { Place::Store }
    }

    /// The step's input: inline, or its predecessors' handed states read
    /// through the sandbox (fused, local) or the tiered read path, and
    /// concatenated in order.
    async fn read_inputs(
        &mut self,
        input: StepInput,
        sole_reader: &[bool],
        fallbacks: &[Locator],
    ) -> Result<(Vec<u8>, Vec<InputRead>)> {
        let locators = match input {
            StepInput::Inline(bytes) => return Ok((bytes, Vec::new())),
            StepInput::Handed(locators) => locators,
        };
        let mut reads = Vec::new();
        let mut joined = Vec::with_capacity(locators.iter().map(|l| l.size_bytes as usize).sum());
        for (i, locator) in locators.iter().enumerate() {
            let t = Instant::now();
            let sole = sole_reader.get(i).copied().unwrap_or(false);
            let hit = match self.read_one(locator, sole, true).await? {
                ReadOutcome::Found(hit) => hit,
                ReadOutcome::Absent { locator_unreachable } => match self.read_fallback(locator, fallbacks).await? {
                    ReadOutcome::Found(hit) => hit,
                    ReadOutcome::Absent { locator_unreachable: fallback_unreachable } => {
                        let unreachable = locator_unreachable.or(fallback_unreachable);
                        self.read_again(locator, sole, fallbacks, unreachable).await?
                    }
                },
            };
            reads.push(InputRead {
                key: locator.key.clone(),
                locator_node: locator.node.clone(),
                tier: hit.tier,
                node: hit.node,
                bytes: hit.value.len() as u64,
                micros: micros(t),
            });
            if locators.len() == 1 {
                joined = hit.value;
            } else {
                joined.extend_from_slice(&hit.value);
            }
        }
        Ok((joined, reads))
    }

    /// One handed state: from this host's sandbox when it was handed here
    /// fused (moved out when this step is its only reader), else through the
    /// continuum's read path — waiting for it first, with `wait`, when it
    /// may still be in flight.
    async fn read_one(&mut self, locator: &Locator, sole: bool, wait: bool) -> Result<ReadOutcome> {
        let wait = wait && !self.arrival_wait.is_zero();
        if locator.node == self.here && wait {
            self.await_arrival(locator).await?;
        }
        let fused_local = match &self.sandbox {
            Some(sb) if locator.node == self.here && locator.place == Place::Sandbox => {
                if sole {
                    sb.take(&locator.scope, &locator.key)?
                } else {
                    sb.tier().get(&locator.scope, &locator.key)?
                }
            }
            _ => None,
        };
        if let Some(value) = fused_local {
            self.counters.local(true, value.len() as u64);
            return Ok(ReadOutcome::Found(ReadHit { value, tier: ReadTier::Local, node: self.here.clone() }));
        }
        let read = if locator.node != self.here && wait {
            let now = tokio::time::Instant::now();
            let (deadline, cap) = (now + self.arrival_wait, now + Duration::from_millis(MAX_ARRIVAL_WAIT_MS));
            self.continuum().read_in_flight(&self.run_id, locator, deadline, cap).await?
        } else {
            self.continuum().read_outcome(&self.run_id, locator).await?
        };
        if let ReadOutcome::Found(hit) = &read {
            if hit.tier == ReadTier::Local {
                self.counters.local(false, hit.value.len() as u64);
            } else {
                self.counters.remote(hit.value.len() as u64);
            }
        }
        Ok(read)
    }

    /// Ask again, at most [`READ_RETRY_DELAYS_MS`]`.len()` times, for an
    /// input found nowhere (its locator, then its fallbacks), when asking
    /// again can find it:
    /// - its locator's node or a fallback's could not be asked
    ///   (`unreachable`: a link window closed mid-transfer and cut the
    ///   connection, a timeout); the next try goes over the route the
    ///   topology has then;
    /// - its producer had a fallback copy but dropped it: the push landed
    ///   while this step looked elsewhere, so the locator's node has it now
    ///   (one more look, after every try whose fallback was found empty: a
    ///   push can land between a try's look at the locator and its look at
    ///   the fallback).
    ///
    /// Otherwise, or when the tries run out, the step fails with
    /// `unavailable`, saying why.
    async fn read_again(
        &mut self,
        locator: &Locator,
        sole: bool,
        fallbacks: &[Locator],
        mut unreachable: Option<String>,
    ) -> Result<ReadHit> {
        let had_fallback = fallbacks.iter().any(|f| f.key == locator.key && f.scope == locator.scope);
        let mut tries = 0;
        for delay in READ_RETRY_DELAYS_MS {
            if unreachable.is_none() && (tries > 0 || !had_fallback) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            tries += 1;
            tracing::debug!(run = %self.run_id, key = %locator.key, tries, unreachable = ?unreachable, "input found nowhere; asking again");
            let at_locator = match self.read_one(locator, sole, false).await? {
                ReadOutcome::Found(hit) => return Ok(hit),
                ReadOutcome::Absent { locator_unreachable } => locator_unreachable,
            };
            let at_fallback = match self.read_fallback(locator, fallbacks).await? {
                ReadOutcome::Found(hit) => return Ok(hit),
                ReadOutcome::Absent { locator_unreachable } => locator_unreachable,
            };
            if had_fallback && at_fallback.is_none() {
                // The producer drops its copy only once the push has landed:
                // a fallback found empty means the locator's node has it now,
                // even if it did not a moment ago, when this try looked there.
                if let ReadOutcome::Found(hit) = self.read_one(locator, sole, false).await? {
                    return Ok(hit);
                }
            }
            unreachable = at_locator.or(at_fallback);
        }
        let why = match unreachable {
            Some(e) => format!("; a node that may hold it could not be asked ({} tries): {e}", tries + 1),
            None => String::new(),
        };
        Err(Error::Unavailable(format!(
            "input state `{}` is on no reachable node (its locator named `{}`){why}",
            locator.key, locator.node
        )))
    }

    /// Wait until the state `locator` names is here: a producer that
    /// answered early may still be pushing it. Returns at once when it is
    /// here. A push of the run that has started arriving is waited for to
    /// its end; otherwise the wait is the request's `arrival_wait_ms` for a
    /// push to start, and all in all at most [`MAX_ARRIVAL_WAIT_MS`]. When
    /// it runs out the read goes on as usual (other tiers, then the
    /// fallbacks).
    async fn await_arrival(&self, locator: &Locator) -> Result<()> {
        let started = tokio::time::Instant::now();
        let (deadline, cap) = (started + self.arrival_wait, started + Duration::from_millis(MAX_ARRIVAL_WAIT_MS));
        let arrivals = self.executor.arrivals.clone();
        loop {
            // Listen before looking, so a push ending in between is not missed.
            let notified = arrivals.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_here(locator)? {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            let receiving = arrivals.receiving(&self.run_id);
            if now >= cap || (now >= deadline && !receiving) {
                tracing::debug!(run = %self.run_id, key = %locator.key, "input still not here; reading on");
                return Ok(());
            }
            // Past the first deadline only a push in progress keeps the step
            // here: look again when it ends, or each second.
            let until = if now < deadline { deadline } else { (now + Duration::from_secs(1)).min(cap) };
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }

    /// Whether this node holds the state `locator` names (in its sandbox of
    /// the run or its store, as the locator says).
    fn is_here(&self, locator: &Locator) -> Result<bool> {
        match locator.place {
            Place::Sandbox => match &self.sandbox {
                Some(sb) => sb.tier().exists(&locator.scope, &locator.key),
                None => match self.executor.host.sandboxes().get(&self.run_id)? {
                    Some(sb) => sb.tier().exists(&locator.scope, &locator.key),
                    None => Ok(false),
                },
            },
            Place::Store => self.executor.host.state().exists(&locator.scope, &locator.key),
        }
    }

    /// Send the early answer (once): `template` with the planned hand-offs,
    /// marked pending. Nothing is sent when every state stays here (the
    /// final answer follows at once) or no early answer was asked for.
    fn release(&mut self, template: &StepResult, store_micros: u64, planned: &[HandOffReport], run_states: &[Locator]) {
        if !planned.iter().any(|h| h.locator.node != self.here) {
            return;
        }
        let Some(early) = self.early.take() else { return };
        let mut result = template.clone();
        result.store_micros = store_micros;
        result.handoffs = planned.to_vec();
        result.run_states = run_states.to_vec();
        result.counters = self.counters;
        result.pending = true;
        // The caller may have gone; the step finishes either way.
        let _ = early.send(result);
    }

    /// `locator`'s state from a durable copy named in `fallbacks` (the
    /// producer's store, in durable runs), when the copy the locator names is
    /// gone (a sandbox lost with a crashed host).
    async fn read_fallback(&mut self, locator: &Locator, fallbacks: &[Locator]) -> Result<ReadOutcome> {
        let mut locator_unreachable = None;
        for fallback in fallbacks.iter().filter(|f| f.key == locator.key && f.scope == locator.scope) {
            match self.continuum().read_outcome(&self.run_id, fallback).await {
                Ok(ReadOutcome::Found(hit)) => {
                    self.counters.remote(hit.value.len() as u64);
                    return Ok(ReadOutcome::Found(hit));
                }
                Ok(ReadOutcome::Absent { locator_unreachable: Some(e) }) => locator_unreachable = Some(e),
                Ok(ReadOutcome::Absent { locator_unreachable: None }) => {}
                Err(e) => {
                    tracing::debug!(run = %self.run_id, node = %fallback.node, error = %e, "fallback read failed")
                }
            }
        }
        Ok(ReadOutcome::Absent { locator_unreachable })
    }

    /// Fetch the declared run-scope keys that are not here from the nodes
    /// that hold them (one batch per node with fusion, one request per key
    /// without); returns how many were fetched.
    async fn prefetch(&mut self, reads: &[String], known: &[Locator]) -> Result<u64> {
        // (node, place) → keys to fetch from it.
        let mut groups: Vec<((String, Place), Vec<String>)> = Vec::new();
        for k in reads {
            let full = format!("{}{k}", self.prefix);
            if self.local.exists(RUN_SCOPE, &full)? {
                continue;
            }
            let Some(l) = known.iter().find(|l| l.key == full && l.node != self.here) else { continue };
            let source = (l.node.clone(), l.place);
            match groups.iter_mut().find(|(s, _)| *s == source) {
                Some((_, keys)) => keys.push(full),
                None => groups.push((source, vec![full])),
            }
        }
        let mut fetched = 0;
        for ((node, place), keys) in groups {
            let found = self.fetch_from(&node, place, keys).await?;
            fetched += found.len() as u64;
            self.keep_fetched(found).await?;
        }
        Ok(fetched)
    }

    /// The values of `keys` that `node` holds in `place`.
    async fn fetch_from(&mut self, node: &str, place: Place, keys: Vec<String>) -> Result<Vec<(String, Vec<u8>)>> {
        let values = if self.sandbox.is_some() {
            let values = self.continuum().fetch_batch(&self.run_id, node, place, RUN_SCOPE, keys.clone()).await?;
            let bytes = values.iter().flatten().map(|v| v.len() as u64).sum();
            self.counters.remote(bytes);
            self.counters.local(place == Place::Sandbox, bytes);
            values
        } else {
            let mut values = Vec::with_capacity(keys.len());
            for k in &keys {
                let value = self.continuum().fetch(&self.run_id, node, place, RUN_SCOPE, k).await?;
                let bytes = value.as_ref().map_or(0, |v| v.len() as u64);
                self.counters.remote(bytes);
                self.counters.local(place == Place::Sandbox, bytes);
                values.push(value);
            }
            values
        };
        Ok(keys.into_iter().zip(values).filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    /// Store fetched run states here: one batch into the sandbox, or one
    /// store write each.
    async fn keep_fetched(&mut self, found: Vec<(String, Vec<u8>)>) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let options = SetOptions { ttl_ms: None, if_not_exists: false };
        if self.sandbox.is_some() {
            self.counters.local(true, found.iter().map(|(_, v)| v.len() as u64).sum());
            self.local.set_many(RUN_SCOPE, found, options)?;
            return Ok(());
        }
        for (k, v) in found {
            self.counters.local(false, v.len() as u64);
            let tier = self.local.clone();
            blocking(move || tier.set(RUN_SCOPE, &k, v, options).map(|_| ())).await?;
        }
        Ok(())
    }

    /// Run the function, with the run scope in the sandbox or the store.
    async fn invoke(
        &mut self,
        request: &StepRequest,
        input: Vec<u8>,
        state: Option<StateTier>,
    ) -> Result<InvokeOutcome> {
        let host = self.executor.host.clone();
        let function = request.function.clone();
        let run_scope = RunScope::new(self.local.clone(), RUN_SCOPE, &self.prefix, self.sandbox.is_some());
        let options = InvokeOptions {
            run_id: Some(self.run_id.clone()),
            validate_input: true,
            run_scope: Some(run_scope),
            state,
            deadline_ms: request.deadline_ms,
        };
        // Answered first; the Store's teardown and the next instance after.
        let outcome = blocking_then_clean(move || {
            let (outcome, cleanup) = host.invoke_deferring_cleanup(&function, &input, options);
            (outcome, Some(cleanup))
        })
        .await?;
        let ops = outcome.state_ops;
        self.counters.store_ops += ops.store_ops;
        self.counters.store_bytes += ops.store_bytes;
        self.counters.sandbox_ops += ops.sandbox_ops;
        self.counters.sandbox_bytes += ops.sandbox_bytes;
        self.counters.state_micros += ops.micros;
        Ok(outcome)
    }

    /// Where the run-scope states a final step wrote are (here).
    fn locate_written(&self, written: &[String]) -> Result<Vec<Locator>> {
        let mut located = Vec::new();
        for k in written {
            if let Some(v) = self.local.get(RUN_SCOPE, k)? {
                located.push(Locator {
                    scope: RUN_SCOPE.to_string(),
                    key: k.clone(),
                    node: self.here.clone(),
                    size_bytes: v.len() as u64,
                    place: self.local_place(),
                });
            }
        }
        Ok(located)
    }

    /// Store the output (and with fusion the run states the step wrote) and
    /// hand them on to the successors' nodes; returns the hand-offs, where
    /// the run states went, and the time to store, µs.
    async fn store_and_hand_on(
        &mut self,
        request: &StepRequest,
        output: Vec<u8>,
        written: &[String],
        template: &StepResult,
    ) -> Result<(Vec<HandOffReport>, Vec<Locator>, u64)> {
        let key = state_key(&self.run_id, &request.step);
        let t = Instant::now();
        if let Some(sb) = self.sandbox.clone() {
            let mut entries = vec![(key, output)];
            for k in written {
                if let Some(v) = sb.take(RUN_SCOPE, k)? {
                    entries.push((k.clone(), v));
                }
            }
            if request.durable {
                // In a durable run the copy is staged and written by the
                // step's commit (one flush for both); otherwise now.
                let tier = self.staged.clone().unwrap_or_else(|| self.executor.host.state().clone());
                let (copy, ttl) = (entries.clone(), request.ttl_ms);
                let bytes: u64 = copy.iter().map(|(_, v)| v.len() as u64).sum();
                blocking(move || {
                    tier.set_many(RUN_SCOPE, copy, SetOptions { ttl_ms: Some(ttl), if_not_exists: false })
                })
                .await?;
                self.counters.local(false, bytes);
            }
            let store_micros = micros(t);
            let (h, r) = self.hand_on_fused(request, &sb, entries, template, store_micros).await?;
            return Ok((h, r, store_micros));
        }
        let output_bytes = output.len() as u64;
        let tier = self.executor.host.state().clone();
        let (k, ttl) = (key.clone(), request.ttl_ms);
        blocking(move || {
            tier.set(RUN_SCOPE, &k, output, SetOptions { ttl_ms: Some(ttl), if_not_exists: false }).map(|_| ())
        })
        .await?;
        self.counters.local(false, output_bytes);
        let store_micros = micros(t);
        let (h, r) = self.hand_on_single(request, &key, written, template, store_micros).await?;
        Ok((h, r, store_micros))
    }

    /// Fused hand-on: the output and the run-scope states the step wrote go
    /// as one batch to each destination's sandbox; what stays here stays in
    /// this host's sandbox. Every target is elected first (and the early
    /// answer sent), then the batches are pushed.
    async fn hand_on_fused(
        &mut self,
        request: &StepRequest,
        sandbox: &Sandbox,
        mut entries: Vec<(String, Vec<u8>)>,
        template: &StepResult,
        store_micros: u64,
    ) -> Result<(Vec<HandOffReport>, Vec<Locator>)> {
        let one_way = self.early.is_some();
        let groups = group_by_node(&request.successors, request.policy);
        let states: Vec<(String, u64)> = entries.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
        let mut plans = Vec::with_capacity(groups.len());
        for (consumer, successors) in &groups {
            let to = destination(request, consumer, successors, one_way);
            plans.push(self.continuum().plan_batch(&to, Place::Sandbox, RUN_SCOPE, states.clone()).await?);
        }
        let n = groups.len();
        let options = SetOptions { ttl_ms: Some(request.ttl_ms), if_not_exists: false };
        // With an early answer this node is the consumers' fallback: it holds a
        // copy, made before the answer, until the pushes are over (one that
        // failed keeps it).
        let mut staged = one_way && plans.iter().any(|p| p.propagation.node != self.here);
        if staged {
            match sandbox.tier().set_many(RUN_SCOPE, entries.clone(), options) {
                Ok(()) => self.counters.local(true, states.iter().map(|(_, size)| size).sum()),
                Err(e) => {
                    // Over the sandbox's limit: the consumers wait for the push alone.
                    tracing::warn!(run = %self.run_id, error = %e, "no fallback copy on the producer");
                    staged = false;
                }
            }
        }
        if self.early.is_some() {
            let mut planned = Vec::with_capacity(plans.len());
            let mut run_states = Vec::new();
            for ((consumer, successors), plan) in groups.iter().zip(&plans) {
                let p = &plan.propagation;
                let copies = vec![p.node.clone()];
                planned.push(hand_off_report(
                    consumer,
                    successors,
                    destination(request, consumer, successors, one_way).tmax_ms,
                    p,
                    copies,
                    &self.here,
                ));
                run_states.extend((1..p.states.len()).filter_map(|i| p.locator_of(i)));
            }
            self.release(template, store_micros, &planned, &run_states);
        }
        let mut kept_here = false;
        let mut handoffs = Vec::new();
        let mut run_states = Vec::new();
        for (i, ((consumer, successors), plan)) in groups.iter().zip(plans).enumerate() {
            let to = destination(request, consumer, successors, one_way);
            let batch = if i + 1 == n { std::mem::take(&mut entries) } else { entries.clone() };
            let mut p = self.continuum().push_batch(plan, &to, batch).await;
            if p.node == self.here {
                if !kept_here && !staged {
                    let bytes = p.entries.iter().map(|(_, v)| v.len() as u64).sum();
                    self.counters.local(true, bytes);
                    sandbox.tier().set_many(RUN_SCOPE, std::mem::take(&mut p.entries), options)?;
                }
                kept_here = true;
            } else {
                self.counters.remote(p.bytes_moved);
                self.counters.local(true, p.bytes_moved);
            }
            run_states.extend((1..p.states.len()).filter_map(|i| p.locator_of(i)));
            let mut copies = vec![p.node.clone()];
            if p.push_failed.is_none() && p.node != self.here && kept_here {
                copies.insert(0, self.here.clone());
            }
            record_hand_off(&p, &self.here);
            handoffs.push(hand_off_report(consumer, successors, to.tmax_ms, &p, copies, &self.here));
        }
        if staged && !kept_here {
            // Every push landed: the fallback copy is not needed.
            sandbox.tier().delete_many(RUN_SCOPE, states.into_iter().map(|(k, _)| k).collect())?;
        }
        Ok((handoffs, run_states))
    }

    /// Unfused hand-on: the output, then each run-scope state the step
    /// wrote, each stored and moved on its own. With no run-scope states
    /// written, every target is elected first (and the early answer sent),
    /// then the outputs are pushed; otherwise each hand-off goes in turn
    /// (the run states' pushes would race an early answer).
    async fn hand_on_single(
        &mut self,
        request: &StepRequest,
        key: &str,
        written: &[String],
        template: &StepResult,
        store_micros: u64,
    ) -> Result<(Vec<HandOffReport>, Vec<Locator>)> {
        let one_way = self.early.is_some() && written.is_empty();
        let groups = group_by_node(&request.successors, request.policy);
        let mut plans = Vec::with_capacity(groups.len());
        if self.early.is_some() && written.is_empty() {
            for (consumer, successors) in &groups {
                let to = destination(request, consumer, successors, one_way);
                plans.push(self.continuum().plan_stored(&to, RUN_SCOPE, key).await?);
            }
            let planned: Vec<HandOffReport> = groups
                .iter()
                .zip(&plans)
                .map(|((consumer, successors), plan)| {
                    let p = &plan.propagation;
                    let tmax = destination(request, consumer, successors, one_way).tmax_ms;
                    hand_off_report(consumer, successors, tmax, p, vec![self.here.clone(), p.node.clone()], &self.here)
                })
                .collect();
            self.release(template, store_micros, &planned, &[]);
        }
        let mut plans = plans.into_iter();
        let mut handoffs = Vec::new();
        let mut run_states = Vec::new();
        for (consumer, successors) in &groups {
            let to = destination(request, consumer, successors, one_way);
            let p = match plans.next() {
                Some(plan) => self.continuum().push_stored(plan, &to).await?,
                None => self.continuum().propagate_with(&to, RUN_SCOPE, key).await?,
            };
            count_single(&mut self.counters, &p, &self.here);
            for k in written {
                let q = self.continuum().propagate_with(&to, RUN_SCOPE, k).await?;
                count_single(&mut self.counters, &q, &self.here);
                run_states.push(q.locator());
            }
            record_hand_off(&p, &self.here);
            let mut report = hand_off_report(consumer, successors, to.tmax_ms, &p, p.copies.clone(), &self.here);
            report.states = 1;
            handoffs.push(report);
        }
        Ok((handoffs, run_states))
    }
}

/// Where a hand-off to the successors on `consumer` goes: the run's policy,
/// the tightest Tmax among them, the run's TTL; `one_way` when the step
/// answers early (the consumers wait for the bytes, not the acknowledgement).
fn destination<'r>(
    request: &'r StepRequest,
    consumer: &'r str,
    successors: &[&Successor],
    one_way: bool,
) -> Destination<'r> {
    Destination {
        policy: request.policy,
        run_id: &request.run_id,
        consumer,
        tmax_ms: successors.iter().map(|s| s.tmax_ms).fold(f64::INFINITY, f64::min),
        ttl_ms: Some(request.ttl_ms),
        one_way,
    }
}

/// The report of one hand-off.
fn hand_off_report(
    consumer: &str,
    successors: &[&Successor],
    tmax_ms: f64,
    p: &Propagation,
    copies: Vec<String>,
    here: &str,
) -> HandOffReport {
    let (elected, stay_reason) = decision_fields(&p.decision, here);
    HandOffReport {
        successors: successors.iter().map(|s| s.step.clone()).collect(),
        consumer_node: consumer.to_string(),
        locator: p.locator(),
        elected,
        stay_reason,
        bytes_moved: p.bytes_moved,
        micros: p.duration.as_micros() as u64,
        tmax_ms,
        slo_violated: p.slo_violated,
        push_failed: p.push_failed.clone(),
        elected_locally: p.elected_locally(),
        copies,
        states: p.states.len() as u64,
    }
}

/// Count a finished propagation in the host's metrics.
fn record_hand_off(p: &Propagation, here: &str) {
    crate::metrics::hand_off(here, p.bytes_moved, p.duration.as_secs_f64(), p.slo_violated, p.push_failed.is_some());
}

/// The elected node and the reason for staying, as the report shows them.
fn decision_fields(decision: &Option<Decision>, here: &str) -> (Option<String>, Option<String>) {
    match decision {
        Some(Decision::Propagate { node, .. }) => (Some(node.clone()), None),
        Some(Decision::BestEffort { node, .. }) => (Some(node.clone()), None),
        Some(Decision::Stay { reason, .. }) => (Some(here.to_string()), Some(format!("{reason:?}"))),
        None => (None, None),
    }
}

/// Count one unfused propagation: reading the state back from the store,
/// and, when it moved, the request and the receiver's store write.
fn count_single(counters: &mut StateCounters, p: &Propagation, here: &str) {
    if p.node != here {
        counters.local(false, p.bytes_moved);
        counters.remote(p.bytes_moved);
        counters.local(false, p.bytes_moved);
    }
}

/// Successors grouped by the node they run on (one hand-off per node); under
/// the stateless policy one group: everything goes to the cloud once.
fn group_by_node(successors: &[Successor], policy: Policy) -> Vec<(String, Vec<&Successor>)> {
    let mut groups: Vec<(String, Vec<&Successor>)> = Vec::new();
    for s in successors {
        let node = if policy == Policy::Stateless { "" } else { s.node.as_str() };
        match groups.iter_mut().find(|(n, _)| n == node) {
            Some((_, g)) => g.push(s),
            None => groups.push((node.to_string(), vec![s])),
        }
    }
    if policy == Policy::Stateless {
        for (n, g) in &mut groups {
            *n = g.first().map(|s| s.node.clone()).unwrap_or_default();
        }
    }
    groups
}

/// Check the run capability a step or clean-up request carries.
fn check_capability(executor: &StepExecutor, headers: &HeaderMap, run: &RunId) -> Result<()> {
    let capability = headers.get(CAPABILITY_HEADER).and_then(|v| v.to_str().ok());
    let idle = Duration::from_millis(executor.host.state().limits().max_sandbox_idle_ms);
    executor.capabilities.check(run, capability, idle, Instant::now())
}

async fn step(
    State(executor): State<StepExecutor>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    let request: StepRequest = decode_postcard(&body, "StepRequest")?;
    if let Some(axum::Extension(caller)) = &caller
        && !caller.may_invoke(Some(request.function.as_str()))
    {
        return Err(Error::AccessDenied(format!("the caller may not invoke `{}`", request.function)).into());
    }
    check_capability(&executor, &headers, &request.run_id)?;
    if let Some(capability) = headers.get(CAPABILITY_HEADER).and_then(|v| v.to_str().ok()) {
        // This host's peer requests for the run carry it on.
        executor.continuum.peers().carry(&request.run_id, capability);
    }
    if request.early_release {
        return step_in_frames(executor, request).await;
    }
    let result = executor.execute(request).await?;
    let bytes = postcard::to_stdvec(&result).map_err(|e| Error::Runtime(format!("encoding the step result: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `POST /workflow/v1/warm`: connect to the nodes named, in the background
/// (nothing is waited for; a node not in the topology is skipped).
async fn warm(State(executor): State<StepExecutor>, body: Bytes) -> std::result::Result<StatusCode, ApiError> {
    let request: WarmRequest = decode_postcard(&body, "WarmRequest")?;
    if request.nodes.len() > MAX_WARM_NODES {
        return Err(Error::BadInput(format!(
            "a warm request names {} nodes; at most {MAX_WARM_NODES}",
            request.nodes.len()
        ))
        .into());
    }
    executor.continuum.warm_toward(request.policy, request.nodes.iter().map(String::as_str), WARM_TIMEOUT);
    Ok(StatusCode::ACCEPTED)
}

/// Answer a step in frames: the early result as soon as it is sent, then
/// the final one. The step runs in its own task, so it finishes (its pushes
/// acknowledged) even when the runner goes away after the first frame. A
/// step that fails before its early answer gets an ordinary error answer.
async fn step_in_frames(executor: StepExecutor, request: StepRequest) -> std::result::Result<Response, ApiError> {
    let (early_tx, early_rx) = tokio::sync::oneshot::channel();
    let task =
        tokio::spawn(tracing::Instrument::in_current_span(
            async move { executor.execute_early(request, early_tx).await },
        ));
    let frame = |f: &StepFrame| {
        f.encode().map(Bytes::from).map_err(|e| Error::Runtime(format!("encoding the step result: {e}")))
    };
    let joined = |r: std::result::Result<Result<StepResult>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(Error::Runtime(format!("the step's task failed: {e}"))))
    };
    let body = match early_rx.await {
        // No early answer was sent: the step is over; answer as usual.
        Err(_) => {
            let result = joined(task.await)?;
            axum::body::Body::from(frame(&StepFrame::Result(result))?)
        }
        Ok(first) => {
            let first = frame(&StepFrame::Result(first))?;
            let rest = async move {
                let last = match joined(task.await) {
                    Ok(result) => StepFrame::Result(result),
                    Err(e) => StepFrame::Failed { kind: e.kind(), message: e.to_string() },
                };
                frame(&last).map_err(|e| std::io::Error::other(e.to_string()))
            };
            let frames = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::once(rest));
            axum::body::Body::from_stream(frames)
        }
    };
    Ok(([(header::CONTENT_TYPE, STEP_FRAMES_CONTENT_TYPE)], body).into_response())
}

async fn runs(State(executor): State<StepExecutor>) -> std::result::Result<axum::Json<Vec<RunId>>, ApiError> {
    let runs = blocking(move || executor.live_runs()).await?;
    Ok(axum::Json(runs))
}

async fn forget(
    State(executor): State<StepExecutor>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> std::result::Result<Response, ApiError> {
    let run_id = RunId::new(run_id).map_err(Error::from)?;
    check_capability(&executor, &headers, &run_id)?;
    executor.capabilities.forget(&run_id);
    executor.continuum.peers().drop_run(&run_id);
    let deleted = blocking(move || executor.forget_run(&run_id)).await?;
    Ok((StatusCode::OK, axum::Json(json!({"deleted": deleted}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn succ(step: &str, node: &str) -> Successor {
        Successor { step: step.parse().unwrap_or_else(|e| panic!("{e}")), node: node.into(), tmax_ms: 10.0 }
    }

    #[test]
    fn successors_on_one_node_share_a_hand_off() {
        let s = [succ("a", "n1"), succ("b", "n2"), succ("c", "n1")];
        let g = group_by_node(&s, Policy::Databelt);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].0.as_str(), g[0].1.len()), ("n1", 2));
        assert_eq!((g[1].0.as_str(), g[1].1.len()), ("n2", 1));
        let g = group_by_node(&s, Policy::Stateless);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].1.len(), 3);
    }
}
