//! The host side of a workflow: run one step (read its input states through
//! the tiered read path, invoke the function, store the output and hand it
//! on under the run's policy) and clean up a finished run's state.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use databelt_placement::Decision;
use databelt_placement::service::HintSource;
use serde_json::json;

use crate::bindings::RunScope;
use crate::continuum::{Continuum, Locator, Policy, Propagation, ReadHit, ReadTier};
use crate::peer::Place;
use crate::error::{Error, Result};
use crate::host::{Host, InvokeOptions};
use crate::serve::{MAX_BODY_BYTES, kind_of, status_for};
use crate::state::{Sandbox, SetOptions, StateTier};
use crate::workflow::protocol::{
    HandOffReport, InputRead, RUN_SCOPE, StateCounters, StepInput, StepRequest, StepResult, Successor,
    run_scope_prefix, state_key, valid_run_id,
};

/// Runs workflow steps on one host. Cheap to clone.
#[derive(Clone)]
pub struct StepExecutor {
    host: Host,
    continuum: Continuum,
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Runtime(format!("worker failed: {e}")))?
}

impl StepExecutor {
    /// Steps run by `host`, whose state moves through `continuum` (built
    /// over the same host's state tier).
    pub fn new(host: Host, continuum: Continuum) -> StepExecutor {
        StepExecutor { host, continuum }
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
        let run_id = request.run_id.clone();
        let result = self.execute_step(request).await;
        if result.is_err()
            && let Ok(Some(sandbox)) = self.host.sandboxes().get(&run_id)
            && sandbox.is_empty().unwrap_or(false)
        {
            // A failed first step leaves no empty sandbox behind.
            let _ = self.host.sandboxes().drop_run(&run_id);
        }
        result
    }

    async fn execute_step(&self, mut request: StepRequest) -> Result<StepResult> {
        if !valid_run_id(&request.run_id) {
            return Err(Error::BadInput(format!(
                "run id {:?} is not 1-128 ASCII letters, digits, '-', '_' or '.'",
                request.run_id
            )));
        }
        if request.step.is_empty() || request.step.len() > 64 || request.step.contains('/') {
            return Err(Error::BadInput(format!("step name {:?} is not 1-64 bytes without '/'", request.step)));
        }
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
        let info = self.host.function(&request.function)?;
        let run_id = request.run_id.clone();
        let here = self.continuum.node_id().to_string();
        let fused = request.fusion;
        // Sandboxes of runs that were never garbage-collected go after their TTL.
        for gone in self.host.sandboxes().sweep_idle(request.ttl_ms)? {
            tracing::warn!(run = %gone, "dropped an idle fusion sandbox (its run was never cleaned up)");
        }
        let sandbox = if fused { Some(self.host.sandboxes().open(&run_id)?) } else { None };
        let local_tier = match &sandbox {
            Some(s) => s.tier().clone(),
            None => self.host.state().clone(),
        };
        let local_place = if fused { Place::Sandbox } else { Place::Store };
        let mut counters = StateCounters::default();

        // 1. Inputs.
        let started = Instant::now();
        let mut inputs = Vec::new();
        let input = match std::mem::replace(&mut request.input, StepInput::Inline(Vec::new())) {
            StepInput::Inline(bytes) => bytes,
            StepInput::Handed(locators) => {
                let mut joined = Vec::with_capacity(locators.iter().map(|l| l.size_bytes as usize).sum());
                for (i, locator) in locators.iter().enumerate() {
                    let t = Instant::now();
                    let sole = request.sole_reader.get(i).copied().unwrap_or(false);
                    let fused_local = match &sandbox {
                        Some(sb) if locator.node == here && locator.place == Place::Sandbox => {
                            if sole { sb.take(&locator.scope, &locator.key)? } else { sb.tier().get(&locator.scope, &locator.key)? }
                        }
                        _ => None,
                    };
                    let hit = match fused_local {
                        Some(value) => {
                            counters.local(true, value.len() as u64);
                            ReadHit { value, tier: ReadTier::Local, node: here.clone() }
                        }
                        None => {
                            let hit = self.continuum.read(&run_id, locator).await?.ok_or_else(|| {
                                Error::Unavailable(format!(
                                    "input state `{}` is on no reachable node (its locator named `{}`)",
                                    locator.key, locator.node
                                ))
                            })?;
                            if hit.tier == ReadTier::Local {
                                counters.local(false, hit.value.len() as u64);
                            } else {
                                counters.remote(hit.value.len() as u64);
                            }
                            hit
                        }
                    };
                    inputs.push(InputRead {
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
                joined
            }
        };

        // 2. Declared run-scope keys held elsewhere: one batch per node
        //    (fused) or one request per key.
        let prefetched = self.prefetch(&run_id, &info.reads, &request.run_states, &local_tier, fused, &mut counters).await?;
        let read_micros = micros(started);

        // 3. The function, with the run scope in the sandbox or the store.
        let t = Instant::now();
        let host = self.host.clone();
        let (function, rid) = (request.function.clone(), run_id.clone());
        let run_scope = RunScope::new(local_tier.clone(), RUN_SCOPE, &prefix, fused);
        let outcome = blocking(move || {
            host.invoke(
                &function,
                &input,
                InvokeOptions { run_id: Some(rid), validate_input: true, run_scope: Some(run_scope) },
            )
        })
        .await?;
        let invoke_micros = micros(t);
        let ops = outcome.state_ops;
        counters.store_ops += ops.store_ops;
        counters.store_bytes += ops.store_bytes;
        counters.sandbox_ops += ops.sandbox_ops;
        counters.sandbox_bytes += ops.sandbox_bytes;
        counters.state_micros += ops.micros + read_micros;
        let output_bytes = outcome.output.len() as u64;
        let written: Vec<String> = outcome.run_written.iter().map(|k| format!("{prefix}{k}")).collect();
        let at_here = |key: &str, size: u64| Locator {
            scope: RUN_SCOPE.to_string(),
            key: key.to_string(),
            node: here.clone(),
            size_bytes: size,
            place: local_place,
        };

        if request.successors.is_empty() {
            let mut run_states = Vec::new();
            for k in &written {
                if let Some(v) = local_tier.get(RUN_SCOPE, k)? {
                    run_states.push(at_here(k, v.len() as u64));
                }
            }
            return Ok(StepResult {
                node: here,
                inputs,
                read_micros,
                invoke_micros,
                output_bytes,
                store_micros: 0,
                output: Some(outcome.output),
                handoffs: Vec::new(),
                run_states,
                prefetched,
                counters,
            });
        }

        // 4. Store the output and hand it on.
        let key = state_key(&run_id, &request.step);
        let t = Instant::now();
        let (handoffs, run_states, store_micros) = if let Some(sb) = &sandbox {
            let mut entries = vec![(key.clone(), outcome.output)];
            for k in &written {
                if let Some(v) = sb.take(RUN_SCOPE, k)? {
                    entries.push((k.clone(), v));
                }
            }
            if request.durable {
                let tier = self.host.state().clone();
                let (copy, ttl) = (entries.clone(), request.ttl_ms);
                let bytes: u64 = copy.iter().map(|(_, v)| v.len() as u64).sum();
                blocking(move || tier.set_many(RUN_SCOPE, copy, SetOptions { ttl_ms: Some(ttl), if_not_exists: false }))
                    .await?;
                counters.local(false, bytes);
            }
            let store_micros = micros(t);
            let (h, r) = self.hand_on_fused(&request, sb, entries, &mut counters).await?;
            (h, r, store_micros)
        } else {
            let tier = self.host.state().clone();
            let (k, ttl) = (key.clone(), request.ttl_ms);
            blocking(move || {
                tier.set(RUN_SCOPE, &k, outcome.output, SetOptions { ttl_ms: Some(ttl), if_not_exists: false })
                    .map(|_| ())
            })
            .await?;
            counters.local(false, output_bytes);
            let store_micros = micros(t);
            let (h, r) = self.hand_on_single(&request, &key, &written, &mut counters).await?;
            (h, r, store_micros)
        };
        counters.state_micros += micros(t);
        Ok(StepResult {
            node: here,
            inputs,
            read_micros,
            invoke_micros,
            output_bytes,
            store_micros,
            output: None,
            handoffs,
            run_states,
            prefetched,
            counters,
        })
    }

    /// Fetch the declared run-scope keys that are not here from the nodes
    /// that hold them; returns how many were fetched.
    async fn prefetch(
        &self,
        run_id: &str,
        reads: &[String],
        known: &[Locator],
        local: &StateTier,
        fused: bool,
        counters: &mut StateCounters,
    ) -> Result<u64> {
        let here = self.continuum.node_id();
        let prefix = run_scope_prefix(run_id);
        // (node, place) → keys to fetch from it.
        let mut groups: Vec<((String, Place), Vec<String>)> = Vec::new();
        for k in reads {
            let full = format!("{prefix}{k}");
            if local.exists(RUN_SCOPE, &full)? {
                continue;
            }
            let Some(l) = known.iter().find(|l| l.key == full && l.node != here) else { continue };
            let source = (l.node.clone(), l.place);
            match groups.iter_mut().find(|(s, _)| *s == source) {
                Some((_, keys)) => keys.push(full),
                None => groups.push((source, vec![full])),
            }
        }
        let options = SetOptions { ttl_ms: None, if_not_exists: false };
        let mut fetched = 0;
        for ((node, place), keys) in groups {
            let mut found: Vec<(String, Vec<u8>)> = Vec::new();
            if fused {
                let values = self.continuum.fetch_batch(run_id, &node, place, RUN_SCOPE, keys.clone()).await?;
                let bytes = values.iter().flatten().map(|v| v.len() as u64).sum();
                counters.remote(bytes);
                counters.local(place == Place::Sandbox, bytes);
                found.extend(keys.into_iter().zip(values).filter_map(|(k, v)| v.map(|v| (k, v))));
            } else {
                for k in keys {
                    let value = self.continuum.fetch(run_id, &node, place, RUN_SCOPE, &k).await?;
                    let bytes = value.as_ref().map_or(0, |v| v.len() as u64);
                    counters.remote(bytes);
                    counters.local(place == Place::Sandbox, bytes);
                    if let Some(v) = value {
                        found.push((k, v));
                    }
                }
            }
            fetched += found.len() as u64;
            if found.is_empty() {
                continue;
            }
            if fused {
                counters.local(true, found.iter().map(|(_, v)| v.len() as u64).sum());
                local.set_many(RUN_SCOPE, found, options)?;
            } else {
                for (k, v) in found {
                    counters.local(false, v.len() as u64);
                    let tier = local.clone();
                    let o = options;
                    blocking(move || tier.set(RUN_SCOPE, &k, v, o).map(|_| ())).await?;
                }
            }
        }
        Ok(fetched)
    }

    /// Fused hand-on: the output and the run-scope states the step wrote go
    /// as one batch to each destination's sandbox; what stays here stays in
    /// this host's sandbox.
    async fn hand_on_fused(
        &self,
        request: &StepRequest,
        sandbox: &Sandbox,
        mut entries: Vec<(String, Vec<u8>)>,
        counters: &mut StateCounters,
    ) -> Result<(Vec<HandOffReport>, Vec<Locator>)> {
        let here = self.continuum.node_id().to_string();
        let sizes: Vec<(String, u64)> = entries.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
        let groups = group_by_node(&request.successors, request.policy);
        let n = groups.len();
        let mut kept_here = false;
        let mut handoffs = Vec::new();
        let mut run_states = Vec::new();
        for (i, (consumer, successors)) in groups.into_iter().enumerate() {
            let tmax_ms = successors.iter().map(|s| s.tmax_ms).fold(f64::INFINITY, f64::min);
            let batch = if i + 1 == n { std::mem::take(&mut entries) } else { entries.clone() };
            let p = self
                .continuum
                .propagate_batch(
                    request.policy,
                    &request.run_id,
                    Place::Sandbox,
                    RUN_SCOPE,
                    batch,
                    &consumer,
                    tmax_ms,
                    Some(request.ttl_ms),
                )
                .await?;
            if p.node == here {
                if !kept_here {
                    let bytes = p.entries.iter().map(|(_, v)| v.len() as u64).sum();
                    counters.local(true, bytes);
                    sandbox.tier().set_many(
                        RUN_SCOPE,
                        p.entries,
                        SetOptions { ttl_ms: Some(request.ttl_ms), if_not_exists: false },
                    )?;
                    kept_here = true;
                }
            } else {
                counters.remote(p.bytes_moved);
                counters.local(true, p.bytes_moved);
            }
            let locator = |key: &str, size: u64| Locator {
                scope: RUN_SCOPE.to_string(),
                key: key.to_string(),
                node: p.node.clone(),
                size_bytes: size,
                place: Place::Sandbox,
            };
            let (output_key, output_size) = sizes[0].clone();
            run_states.extend(sizes[1..].iter().map(|(k, size)| locator(k, *size)));
            let (elected, stay_reason) = decision_fields(&p.decision, &here);
            let mut copies = vec![p.node.clone()];
            if p.push_failed.is_none() && p.node != here && kept_here {
                copies.insert(0, here.clone());
            }
            handoffs.push(HandOffReport {
                successors: successors.iter().map(|s| s.step.clone()).collect(),
                consumer_node: consumer,
                locator: locator(&output_key, output_size),
                elected,
                stay_reason,
                bytes_moved: p.bytes_moved,
                micros: p.duration.as_micros() as u64,
                tmax_ms,
                slo_violated: p.slo_violated,
                push_failed: p.push_failed,
                elected_locally: p.source == HintSource::LocalCache && p.decision.is_some(),
                copies,
                states: sizes.len() as u64,
            });
        }
        Ok((handoffs, run_states))
    }

    /// Unfused hand-on: the output, then each run-scope state the step
    /// wrote, each stored and moved on its own.
    async fn hand_on_single(
        &self,
        request: &StepRequest,
        key: &str,
        written: &[String],
        counters: &mut StateCounters,
    ) -> Result<(Vec<HandOffReport>, Vec<Locator>)> {
        let here = self.continuum.node_id().to_string();
        let mut handoffs = Vec::new();
        let mut run_states = Vec::new();
        for (consumer, successors) in group_by_node(&request.successors, request.policy) {
            let tmax_ms = successors.iter().map(|s| s.tmax_ms).fold(f64::INFINITY, f64::min);
            let ttl = Some(request.ttl_ms);
            let p = self
                .continuum
                .propagate_with(request.policy, &request.run_id, RUN_SCOPE, key, &consumer, tmax_ms, ttl)
                .await?;
            count_single(counters, &p, &here);
            for k in written {
                let q = self
                    .continuum
                    .propagate_with(request.policy, &request.run_id, RUN_SCOPE, k, &consumer, tmax_ms, ttl)
                    .await?;
                count_single(counters, &q, &here);
                run_states.push(q.locator);
            }
            let (elected, stay_reason) = decision_fields(&p.decision, &here);
            handoffs.push(HandOffReport {
                successors: successors.iter().map(|s| s.step.clone()).collect(),
                consumer_node: consumer,
                locator: p.locator,
                elected,
                stay_reason,
                bytes_moved: p.bytes_moved,
                micros: p.duration.as_micros() as u64,
                tmax_ms,
                slo_violated: p.slo_violated,
                push_failed: p.push_failed,
                elected_locally: p.source == HintSource::LocalCache && p.decision.is_some(),
                copies: p.copies,
                states: 1,
            });
        }
        Ok((handoffs, run_states))
    }

    /// Run ids with hand-off state on this host (in its store or in a
    /// fusion sandbox).
    pub fn live_runs(&self) -> Result<Vec<String>> {
        let mut runs: Vec<String> = self.host.sandboxes().runs()?;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.host.state().list_keys(RUN_SCOPE, "", cursor.as_deref(), None)?;
            for key in &page.keys {
                let run = key.split('/').next().unwrap_or_default();
                if runs.last().is_none_or(|r| r != run) {
                    runs.push(run.to_string());
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
    pub fn forget_run(&self, run_id: &str) -> Result<u64> {
        if !valid_run_id(run_id) {
            return Err(Error::BadInput(format!("run id {run_id:?} is not valid")));
        }
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
            .route("/workflow/v1/runs", get(runs))
            .route("/workflow/v1/runs/{run_id}", delete(forget))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self)
    }
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
    if p.locator.node != here {
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

struct StepError(Error);

impl IntoResponse for StepError {
    fn into_response(self) -> Response {
        let body = json!({"error": kind_of(&self.0), "message": self.0.to_string()});
        (status_for(&self.0), axum::Json(body)).into_response()
    }
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError(e)
    }
}

async fn step(State(executor): State<StepExecutor>, body: Bytes) -> std::result::Result<Response, StepError> {
    let request: StepRequest =
        postcard::from_bytes(&body).map_err(|e| Error::BadInput(format!("malformed step request: {e}")))?;
    let result = executor.execute(request).await?;
    let bytes = postcard::to_stdvec(&result).map_err(|e| Error::Runtime(format!("encoding the step result: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn runs(State(executor): State<StepExecutor>) -> std::result::Result<axum::Json<Vec<String>>, StepError> {
    let runs = blocking(move || executor.live_runs()).await?;
    Ok(axum::Json(runs))
}

async fn forget(
    State(executor): State<StepExecutor>,
    Path(run_id): Path<String>,
) -> std::result::Result<Response, StepError> {
    let deleted = blocking(move || executor.forget_run(&run_id)).await?;
    Ok((StatusCode::OK, axum::Json(json!({"deleted": deleted}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn succ(step: &str, node: &str) -> Successor {
        Successor { step: step.into(), node: node.into(), tmax_ms: 10.0 }
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
