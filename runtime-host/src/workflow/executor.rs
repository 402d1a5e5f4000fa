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

use crate::continuum::{Continuum, Policy};
use crate::error::{Error, Result};
use crate::host::{Host, InvokeOptions};
use crate::serve::{MAX_BODY_BYTES, kind_of, status_for};
use crate::state::SetOptions;
use crate::workflow::protocol::{
    HandOffReport, InputRead, RUN_SCOPE, StepInput, StepRequest, StepResult, Successor, state_key, valid_run_id,
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
    pub async fn execute(&self, request: StepRequest) -> Result<StepResult> {
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
        self.host.function(&request.function)?;
        let run_id = request.run_id.clone();

        let started = Instant::now();
        let mut inputs = Vec::new();
        let input = match request.input {
            StepInput::Inline(bytes) => bytes,
            StepInput::Handed(locators) => {
                let mut joined = Vec::with_capacity(locators.iter().map(|l| l.size_bytes as usize).sum());
                for locator in &locators {
                    let t = Instant::now();
                    let hit = self.continuum.read(&run_id, locator).await?.ok_or_else(|| {
                        Error::Unavailable(format!(
                            "input state `{}` is on no reachable node (its locator named `{}`)",
                            locator.key, locator.node
                        ))
                    })?;
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
        let read_micros = micros(started);

        let t = Instant::now();
        let host = self.host.clone();
        let (function, rid) = (request.function.clone(), run_id.clone());
        let outcome = blocking(move || {
            host.invoke(&function, &input, InvokeOptions { run_id: Some(rid), validate_input: true })
        })
        .await?;
        let invoke_micros = micros(t);
        let output_bytes = outcome.output.len() as u64;
        let node = self.continuum.node_id().to_string();

        if request.successors.is_empty() {
            return Ok(StepResult {
                node,
                inputs,
                read_micros,
                invoke_micros,
                output_bytes,
                store_micros: 0,
                output: Some(outcome.output),
                handoffs: Vec::new(),
            });
        }

        let key = state_key(&run_id, &request.step);
        let t = Instant::now();
        let tier = self.host.state().clone();
        let (k, ttl) = (key.clone(), request.ttl_ms);
        blocking(move || {
            tier.set(RUN_SCOPE, &k, outcome.output, SetOptions { ttl_ms: Some(ttl), if_not_exists: false }).map(|_| ())
        })
        .await?;
        let store_micros = micros(t);

        let mut handoffs = Vec::new();
        for (consumer, successors) in group_by_node(&request.successors, request.policy) {
            let tmax_ms = successors.iter().map(|s| s.tmax_ms).fold(f64::INFINITY, f64::min);
            let p = self
                .continuum
                .propagate_with(request.policy, &run_id, RUN_SCOPE, &key, &consumer, tmax_ms, Some(request.ttl_ms))
                .await?;
            let (elected, stay_reason) = match &p.decision {
                Some(Decision::Propagate { node, .. }) => (Some(node.clone()), None),
                Some(Decision::Stay { reason, .. }) => (Some(node.clone()), Some(format!("{reason:?}"))),
                None => (None, None),
            };
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
            });
        }
        Ok(StepResult {
            node,
            inputs,
            read_micros,
            invoke_micros,
            output_bytes,
            store_micros,
            output: None,
            handoffs,
        })
    }

    /// Run ids with hand-off state on this host.
    pub fn live_runs(&self) -> Result<Vec<String>> {
        let mut runs: Vec<String> = Vec::new();
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
        runs.dedup();
        Ok(runs)
    }

    /// Delete every hand-off state of run `run_id` on this host; returns how
    /// many states were deleted.
    pub fn forget_run(&self, run_id: &str) -> Result<u64> {
        if !valid_run_id(run_id) {
            return Err(Error::BadInput(format!("run id {run_id:?} is not valid")));
        }
        let tier = self.host.state();
        let prefix = format!("{run_id}/");
        let mut deleted = 0;
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
