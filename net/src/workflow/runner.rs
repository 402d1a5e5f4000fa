//! The workflow runner: deploys a workflow's components to the nodes its
//! steps run on, drives a run step by step across the hosts (each step's
//! output handed on by the producing host under the run's policy), reports
//! per step where its input was found, bytes moved and timings, and cleans
//! up the run's state everywhere it went.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use databelt_host::{BackendConfig, Error, Host, HostConfig, Result};
use databelt_placement::{FunctionRequest, NodeKind, StepNode, Topology, Workflow};
use databelt_types::{FunctionName, RunId, StepName};
use futures_util::future::join_all;
use postcard_schema::schema::owned::OwnedNamedType;
use serde::{Deserialize, Serialize};

use crate::continuum::{Locator, Policy, ReadCounts, ReadTier};
use crate::http::{check, unreachable};
use crate::placement::PlacementClient;
use crate::workflow::capability::{self, CAPABILITY_HEADER};
use crate::workflow::protocol::{
    MAX_ARRIVAL_WAIT_MS, MAX_STEP_FRAME_BYTES, MAX_WARM_NODES, STEP_FRAMES_CONTENT_TYPE, StateCounters, StepFrame,
    StepInput, StepRequest, StepResult, Successor, WarmRequest,
};

/// One step, ready to run.
struct Prepared {
    name: StepName,
    function: FunctionName,
    component: Vec<u8>,
    input_schema: OwnedNamedType,
    output_schema: OwnedNamedType,
    node: StepNode,
    tmax_ms: f64,
    after: Vec<StepName>,
    deadline_ms: Option<u64>,
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where output states go.
    pub policy: Policy,
    /// The run id; generated when `None`.
    pub run_id: Option<RunId>,
    /// Lifetime of every hand-off state, ms (a safety net behind garbage
    /// collection). Default 10 minutes.
    pub ttl_ms: u64,
    /// Leave the run's state where it is instead of deleting it at the end.
    pub keep_state: bool,
    /// State fusion on or off for this run; `None`: as the workflow file
    /// says (on by default).
    pub fusion: Option<bool>,
    /// One Tmax for every step of this run, ms; `None`: each step's own.
    pub tmax_ms: Option<f64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            policy: Policy::Databelt,
            run_id: None,
            ttl_ms: 600_000,
            keep_state: false,
            fusion: None,
            tmax_ms: None,
        }
    }
}

/// One step of a finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLine {
    /// The step.
    pub step: StepName,
    /// What the host reported.
    pub result: StepResult,
    /// Wall time of the whole step request as the runner saw it, µs.
    pub wall_micros: u64,
}

/// What garbage collection did at the end of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cleanup {
    /// Nodes asked to delete the run's state.
    pub nodes: Vec<String>,
    /// States deleted, over all nodes.
    pub deleted: u64,
    /// Nodes that could not be reached; their copies expire by TTL.
    pub unreachable: Vec<String>,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The run id.
    pub run_id: RunId,
    /// The workflow.
    pub workflow: String,
    /// The policy used.
    pub policy: Policy,
    /// Steps in the order they finished.
    pub steps: Vec<StepLine>,
    /// Outputs of the final steps (postcard), by step name.
    #[serde(skip)]
    pub outputs: Vec<(StepName, Vec<u8>)>,
    /// End-to-end wall time, µs: until the final steps' outputs are in
    /// (without the acknowledgements of early answers still to come, and
    /// without the clean-up).
    pub total_micros: u64,
    /// State reads per tier.
    pub reads: ReadCounts,
    /// Hand-offs that moved or tried to move state.
    pub transfers: u64,
    /// Hand-offs to a consumer on another node (each is held to its Tmax).
    #[serde(default)]
    pub remote_handoffs: u64,
    /// Hand-offs that missed their Tmax: the transfer took longer, or no
    /// node could be reached within it.
    pub slo_violations: u64,
    /// Bytes sent between nodes by hand-offs.
    pub bytes_moved: u64,
    /// Garbage collection.
    pub cleanup: Cleanup,
    /// Whether state fusion was on.
    pub fusion: bool,
    /// State operations and transfers of all steps.
    pub counters: StateCounters,
}

impl RunReport {
    /// Share of state reads served by the reading node itself.
    pub fn local_availability(&self) -> f64 {
        self.reads.local_availability()
    }
}

/// The `p`-th percentile (0-100) of `values`, nearest rank; 0 when empty.
/// The one percentile rule of run reports, `databelt invoke` and the paper
/// evaluation.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// How long the runner waits for a host to take a warm request.
const WARM_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Most warm requests a runner remembers (beyond that, the stale ones are
/// forgotten; while all are fresh, no more are sent).
const MAX_WARMED_HOSTS: usize = 4096;

/// Which hosts to ask to warm which connections: for every step placed in
/// `nodes`, its node and the nodes its successors run on, other than itself;
/// one entry per host, in step order. Entry steps count only with
/// `entry_steps`: at the start of a run their request goes out at once, and
/// the host connects as the step starts (at deploy time they count).
fn warm_plan<'s>(
    steps: impl Iterator<Item = (&'s StepName, &'s [StepName])> + Clone,
    nodes: &HashMap<StepName, String>,
    entry_steps: bool,
) -> Vec<(String, Vec<String>)> {
    let mut plan: Vec<(String, Vec<String>)> = Vec::new();
    for (name, after) in steps.clone() {
        let Some(host) = nodes.get(name) else { continue };
        if after.is_empty() && !entry_steps {
            continue;
        }
        for (successor, _) in steps.clone().filter(|(_, a)| a.contains(name)) {
            let Some(target) = nodes.get(successor).filter(|t| *t != host) else { continue };
            let at = match plan.iter().position(|(h, _)| h == host) {
                Some(i) => i,
                None => {
                    plan.push((host.clone(), Vec::new()));
                    plan.len() - 1
                }
            };
            if !plan[at].1.contains(target) {
                plan[at].1.push(target.clone());
            }
        }
    }
    plan
}

/// Drives runs of one workflow across a continuum. Cheap to share (`&self`
/// methods); runs may go on concurrently.
pub struct Runner {
    workflow: Workflow,
    steps: Vec<Prepared>,
    placement: PlacementClient,
    http: reqwest::Client,
    deployed: tokio::sync::Mutex<HashSet<(String, FunctionName)>>,
    counter: AtomicU64,
    /// Derives each run's capability (never sent).
    secret: [u8; 32],
    /// When each host was last asked to warm its connections (keyed by
    /// the host, the policy and the nodes named).
    warmed: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Runner {
    /// Load the workflow file at `path` (components relative to it), check
    /// it against the placement service's topology, and describe every
    /// component locally (compiling it; `cache_dir` keeps compiled code).
    pub async fn load(path: &Path, placement: PlacementClient, cache_dir: Option<PathBuf>) -> Result<Runner> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read workflow {}: {e}", path.display())))?;
        let workflow = Workflow::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Runner::new(workflow, &base, placement, cache_dir).await
    }

    /// A runner for `workflow`, whose component paths are relative to `base`.
    pub async fn new(
        workflow: Workflow,
        base: &Path,
        placement: PlacementClient,
        cache_dir: Option<PathBuf>,
    ) -> Result<Runner> {
        let view = placement.refresh().await.map_err(|e| Error::unreachable("placement service", e))?;
        workflow.check_nodes(&view.topology).map_err(|e| Error::Config(e.to_string()))?;
        let describer = Host::new(HostConfig {
            backend: BackendConfig::Memory,
            cache_dir,
            max_concurrent_instances: 4,
            ..HostConfig::default()
        })?;
        let order: Vec<StepName> =
            workflow.order().map_err(|e| Error::Config(e.to_string()))?.iter().map(|s| s.name.clone()).collect();
        let mut steps = Vec::new();
        for name in order {
            let Some(s) = workflow.steps.iter().find(|s| s.name == name) else { continue };
            let file = base.join(&s.component);
            let component = std::fs::read(&file).map_err(|e| {
                Error::Config(format!("step `{}`: cannot read component {}: {e}", s.name, file.display()))
            })?;
            let function = FunctionName::for_step(&workflow.name, &s.name);
            let info = describer
                .deploy(&function, &component)
                .map_err(|e| Error::Config(format!("step `{}` ({}): {e}", s.name, file.display())))?;
            steps.push(Prepared {
                name: s.name.clone(),
                function,
                component,
                input_schema: info.input_schema,
                output_schema: info.output_schema,
                node: s.node.clone(),
                tmax_ms: s.tmax_ms,
                after: s.after.clone(),
                deadline_ms: s.deadline_ms,
            });
        }
        let http = placement
            .credentials()
            .client_builder()?
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(crate::http::CLIENT_POOL_IDLE)
            .build()
            .map_err(|e| Error::Runtime(format!("http client: {e}")))?;
        Ok(Runner {
            workflow,
            steps,
            placement,
            http,
            deployed: tokio::sync::Mutex::new(HashSet::new()),
            counter: AtomicU64::new(0),
            secret: rand::random(),
            warmed: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The capability of run `run` of this runner: for tools and tests that
    /// act for the run (a host's peers refuse its run state without it).
    pub fn capability(&self, run: &RunId) -> String {
        capability::derive(&self.secret, run)
    }

    /// The workflow.
    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    /// The input schema of the entry steps (they all take the run's input).
    pub fn input_schema(&self) -> Option<&OwnedNamedType> {
        self.steps.iter().find(|s| s.after.is_empty()).map(|s| &s.input_schema)
    }

    /// The output schema of `step`.
    pub fn output_schema(&self, step: &str) -> Option<&OwnedNamedType> {
        self.steps.iter().find(|s| s.name == step).map(|s| &s.output_schema)
    }

    fn topology(&self) -> Result<Topology> {
        self.placement
            .cached()
            .map(|(t, _)| t)
            .ok_or_else(|| Error::Unavailable("no topology: the placement service was never reached".into()))
    }

    fn address(topology: &Topology, node: &str) -> Result<String> {
        match topology.node(node) {
            Some(n) if !n.address.is_empty() => Ok(n.address.clone()),
            _ => Err(Error::Unavailable(format!("node `{node}` has no address in the topology"))),
        }
    }

    /// Where each step runs in this run: fixed nodes as written; for
    /// `placement` steps, the function hint near the first predecessor's
    /// node (entry steps: near the cloud).
    async fn resolve_nodes(&self, topology: &Topology) -> Result<HashMap<StepName, String>> {
        let cloud = topology.nodes.iter().find(|n| n.kind == NodeKind::Cloud).or(topology.nodes.first());
        let mut nodes: HashMap<StepName, String> = HashMap::new();
        for s in &self.steps {
            let node = match &s.node {
                StepNode::Fixed(n) => n.clone(),
                StepNode::Placement => {
                    let near = match s.after.first() {
                        Some(p) => nodes.get(p).cloned(),
                        None => cloud.map(|n| n.id.clone()),
                    }
                    .ok_or_else(|| Error::Config("the topology has no nodes".into()))?;
                    let request = self.workflow.steps.iter().find(|w| w.name == s.name).map_or_else(
                        || FunctionRequest { near: near.clone(), ..FunctionRequest::default() },
                        |step| self.workflow.placement_request(step, near.clone()),
                    );
                    let (p, _) =
                        self.placement.function_hint(&request).await.map_err(|e| {
                            Error::unreachable(format!("placement service, placing step `{}`", s.name), e)
                        })?;
                    p.node
                }
            };
            nodes.insert(s.name.clone(), node);
        }
        Ok(nodes)
    }

    /// Deploy `step`'s component on `node` unless this runner already did.
    async fn ensure_deployed(&self, step: &Prepared, node: &str, addr: &str) -> Result<()> {
        let key = (node.to_string(), step.function.clone());
        let mut deployed = self.deployed.lock().await;
        if deployed.contains(&key) {
            return Ok(());
        }
        let r = crate::trace_context::inject(self.http.put(format!(
            "{}/functions/{}",
            self.placement.credentials().base_url(addr),
            step.function
        )))
        .body(step.component.clone())
        .send()
        .await
        .map_err(|e| unreachable(addr, e))?;
        check(addr, r)
            .await
            .map_err(|e| Error::Workflow(format!("deploying step `{}` on `{node}`: {e}", step.name)))?;
        deployed.insert(key);
        Ok(())
    }

    /// Deploy every step's component on its node now (placement steps are
    /// deployed when a run places them), and ask the hosts to connect to
    /// their steps' successors' nodes (see [`Runner::run`]), so that a run
    /// started soon after finds the connections open, its first step's too.
    pub async fn deploy(&self) -> Result<()> {
        let topology = self.topology()?;
        let mut fixed = HashMap::new();
        for s in &self.steps {
            if let StepNode::Fixed(node) = &s.node {
                self.ensure_deployed(s, node, &Self::address(&topology, node)?).await?;
                fixed.insert(s.name.clone(), node.clone());
            }
        }
        self.warm_hosts(&topology, &fixed, Policy::Databelt, true);
        Ok(())
    }

    /// Ask the hosts of the steps in `nodes` (entry steps only with
    /// `entry_steps`) to connect to their successors' nodes now (`POST
    /// /workflow/v1/warm`), so that their hand-offs find the connections
    /// open; a host asked for the same nodes within
    /// [`crate::peer::WARM_FRESH`] is not asked again. Nothing is waited
    /// for: a host that does not answer only misses the head start.
    fn warm_hosts(&self, topology: &Topology, nodes: &HashMap<StepName, String>, policy: Policy, entry_steps: bool) {
        let plan = warm_plan(self.steps.iter().map(|s| (&s.name, s.after.as_slice())), nodes, entry_steps);
        let now = Instant::now();
        for (host, targets) in plan {
            {
                let asked = format!("{host} {policy:?} {targets:?}");
                let Ok(mut warmed) = self.warmed.lock() else { return };
                if warmed.get(&asked).is_some_and(|t| now.saturating_duration_since(*t) < crate::peer::WARM_FRESH) {
                    continue;
                }
                if warmed.len() >= MAX_WARMED_HOSTS {
                    warmed.retain(|_, t| now.saturating_duration_since(*t) < crate::peer::WARM_FRESH);
                    if warmed.len() >= MAX_WARMED_HOSTS {
                        // Every one asked just now: this host goes without.
                        continue;
                    }
                }
                warmed.insert(asked, now);
            }
            let Ok(addr) = Self::address(topology, &host) else { continue };
            let request = WarmRequest { policy, nodes: targets.into_iter().take(MAX_WARM_NODES).collect() };
            let Ok(body) = postcard::to_stdvec(&request) else { continue };
            let send = crate::trace_context::inject(
                self.http.post(format!("{}/workflow/v1/warm", self.placement.credentials().base_url(&addr))),
            )
            .timeout(WARM_REQUEST_TIMEOUT)
            .body(body)
            .send();
            tokio::spawn(async move {
                let outcome = match send.await {
                    Ok(r) => check(&addr, r).await.map(|_| ()),
                    Err(e) => Err(unreachable(&addr, e)),
                };
                if let Err(e) = outcome {
                    tracing::debug!(host = %host, error = %e, "asking a host to warm its connections failed");
                }
            });
        }
    }

    /// Run a step on the host at `addr`: its result, and when the host
    /// answered early (hand-offs still in flight) the final result to come.
    async fn post_step(&self, addr: &str, request: &StepRequest) -> Result<(StepResult, Option<FinalResult>)> {
        let body = postcard::to_stdvec(request).map_err(|e| Error::Runtime(format!("encoding a step: {e}")))?;
        let r = crate::trace_context::inject(
            self.http.post(format!("{}/workflow/v1/step", self.placement.credentials().base_url(addr))),
        )
        .header(CAPABILITY_HEADER, capability::derive(&self.secret, &request.run_id))
        .body(body)
        .send()
        .await
        .map_err(|e| unreachable(addr, e))?;
        let r = check(addr, r).await?;
        let framed = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == STEP_FRAMES_CONTENT_TYPE.as_bytes());
        if !framed {
            let bytes = r.bytes().await.map_err(|e| unreachable(addr, e))?;
            let result = crate::http::decode_postcard(&bytes, "StepResult")
                .map_err(|e| Error::Unavailable(format!("host {addr}: malformed step result: {e}")))?;
            return Ok((result, None));
        }
        let mut frames = Frames { response: r, buffer: Vec::new(), addr: addr.to_string() };
        let first = frames.next().await?;
        if !first.pending {
            return Ok((first, None));
        }
        Ok((first, Some(tokio::spawn(async move { frames.next().await }))))
    }

    /// Run the workflow once on `input` (postcard, of the entry steps' input
    /// type). Steps whose predecessors are done run concurrently. The run's
    /// state is deleted everywhere it went at the end, also when a step
    /// fails (unless `keep_state`).
    pub async fn run(&self, input: Vec<u8>, options: &RunOptions) -> Result<RunReport> {
        let run_id = match &options.run_id {
            Some(id) => id.clone(),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                RunId::sanitized(&format!("{}-{:x}-{n}", FunctionName::for_step(&self.workflow.name, "run"), nanos))
            }
        };
        // One span per run: its step requests carry it to every host, so the
        // run is one trace (see `trace_context`).
        let span = tracing::debug_span!("run", run_id = %run_id, workflow = %self.workflow.name);
        tracing::Instrument::instrument(self.run_as(run_id, input, options), span).await
    }

    /// [`Runner::run`] once the run has its id.
    async fn run_as(&self, run_id: RunId, input: Vec<u8>, options: &RunOptions) -> Result<RunReport> {
        let topology = self.topology()?;
        let nodes = self.resolve_nodes(&topology).await?;
        self.warm_hosts(&topology, &nodes, options.policy, false);
        let report = RunReport {
            run_id,
            workflow: self.workflow.name.clone(),
            policy: options.policy,
            steps: Vec::new(),
            outputs: Vec::new(),
            total_micros: 0,
            reads: ReadCounts::default(),
            transfers: 0,
            remote_handoffs: 0,
            slo_violations: 0,
            bytes_moved: 0,
            cleanup: Cleanup::default(),
            fusion: options.fusion.unwrap_or(self.workflow.fusion),
            counters: StateCounters::default(),
        };
        let mut run = Progress {
            input: &input,
            options,
            topology: &topology,
            nodes,
            report,
            handed: HashMap::new(),
            finals: Vec::new(),
            run_states: Vec::new(),
            done: HashSet::new(),
            touched: Vec::new(),
        };
        let started = Instant::now();
        let driven = self.drive(&mut run).await;
        // The run's result is in when its final steps have answered; what
        // follows is bookkeeping (acknowledgements of early answers).
        let elapsed = started.elapsed();
        let outcome = match driven {
            Ok(()) => self.finish(&mut run).await,
            Err(e) => {
                // Let the pushes still in flight land before the clean-up
                // looks for their states.
                for (_, _, last) in std::mem::take(&mut run.finals) {
                    let _ = last.await;
                }
                Err(e)
            }
        };
        let mut report = run.report;
        report.total_micros = elapsed.as_micros() as u64;
        if !options.keep_state {
            report.cleanup = self.cleanup(&report.run_id, &topology, &run.touched).await;
        }
        outcome.map(|()| report)
    }

    /// Run the steps in waves: every step whose predecessors are done runs
    /// at once; each result is recorded before the next wave.
    async fn drive(&self, run: &mut Progress<'_>) -> Result<()> {
        while run.done.len() < self.steps.len() {
            let ready: Vec<&Prepared> = self
                .steps
                .iter()
                .filter(|s| !run.done.contains(&s.name) && s.after.iter().all(|p| run.done.contains(p)))
                .collect();
            if ready.is_empty() {
                return Err(Error::Workflow("no step is ready; the workflow has a cycle".into()));
            }
            let mut requests = Vec::new();
            for s in ready {
                let node = run.nodes.get(&s.name).cloned().unwrap_or_default();
                let addr = Self::address(run.topology, &node)?;
                self.ensure_deployed(s, &node, &addr).await?;
                let request = self.step_request(s, run)?;
                run.touch(&node);
                requests.push((s.name.clone(), node, addr, request));
            }
            let results = join_all(requests.iter().map(|(name, node, addr, request)| async move {
                let t = Instant::now();
                let r = self.post_step(addr, request).await;
                (name, node, r, t.elapsed())
            }))
            .await;
            for (name, node, result, wall) in results {
                let (result, last) = result.map_err(|e| Error::StepFailed {
                    step: name.to_string(),
                    node: node.clone(),
                    source: Box::new(e),
                })?;
                run.record(name, result, wall);
                if let Some(last) = last {
                    run.finals.push((name.clone(), node.clone(), last));
                }
            }
        }
        Ok(())
    }

    /// Wait for the final results of the steps whose hosts answered early
    /// (their hand-offs acknowledged) and take them into the report.
    async fn finish(&self, run: &mut Progress<'_>) -> Result<()> {
        for (name, node, last) in std::mem::take(&mut run.finals) {
            let result = last
                .await
                .unwrap_or_else(|e| Err(Error::Runtime(format!("reading the step's final answer: {e}"))))
                .map_err(|e| Error::StepFailed { step: name.to_string(), node: node.clone(), source: Box::new(e) })?;
            run.settle(&name, result);
        }
        Ok(())
    }

    /// The request that runs step `s` of this run: its input (inline for an
    /// entry step, else the locators its predecessors handed to it), its
    /// successors with their nodes and SLOs, and where the run's states are.
    fn step_request(&self, s: &Prepared, run: &Progress<'_>) -> Result<StepRequest> {
        // An input whose producer has one successor is read once.
        let sole_reader: Vec<bool> =
            s.after.iter().map(|p| self.steps.iter().filter(|c| c.after.contains(p)).count() == 1).collect();
        let mut fallbacks = Vec::new();
        let mut arrival_wait = 0;
        let input = if s.after.is_empty() {
            StepInput::Inline(run.input.to_vec())
        } else {
            let mut locators = Vec::new();
            for p in &s.after {
                let handed = run
                    .handed
                    .get(&(s.name.clone(), p.clone()))
                    .ok_or_else(|| Error::Workflow(format!("step `{}`: no state was handed on by `{p}`", s.name)))?;
                if let Some(producer) = &handed.in_flight_from {
                    // Still in flight: wait for it there, and if it never
                    // lands, read the producer's copy.
                    let t = self.placement.cached().map_or(0, |(_, t)| t);
                    let l = &handed.locator;
                    arrival_wait = arrival_wait.max(arrival_wait_ms(run.topology, t, producer, &l.node, l.size_bytes));
                    fallbacks.push(Locator { node: producer.clone(), ..l.clone() });
                }
                locators.push(handed.locator.clone());
            }
            StepInput::Handed(locators)
        };
        let successors = self
            .steps
            .iter()
            .filter(|c| c.after.contains(&s.name))
            .map(|c| Successor {
                step: c.name.clone(),
                node: run.nodes.get(&c.name).cloned().unwrap_or_default(),
                tmax_ms: run.options.tmax_ms.unwrap_or(c.tmax_ms),
            })
            .collect();
        Ok(StepRequest {
            run_id: run.report.run_id.clone(),
            step: s.name.clone(),
            function: s.function.clone(),
            input,
            successors,
            policy: run.options.policy,
            ttl_ms: run.options.ttl_ms,
            fusion: run.report.fusion,
            durable: self.workflow.durable,
            sole_reader,
            run_states: run.run_states.clone(),
            fallbacks,
            deadline_ms: s.deadline_ms,
            early_release: true,
            arrival_wait_ms: arrival_wait,
        })
    }

    /// Ask every node the run touched to delete its state.
    async fn cleanup(&self, run_id: &RunId, topology: &Topology, nodes: &[String]) -> Cleanup {
        let mut cleanup = Cleanup::default();
        for node in nodes {
            cleanup.nodes.push(node.clone());
            let done: Result<u64> = async {
                let addr = Self::address(topology, node)?;
                let r = crate::trace_context::inject(
                    self.http
                        .delete(format!("{}/workflow/v1/runs/{run_id}", self.placement.credentials().base_url(&addr))),
                )
                .header(CAPABILITY_HEADER, capability::derive(&self.secret, run_id))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_err(|e| unreachable(&addr, e))?;
                let v: serde_json::Value = check(&addr, r).await?.json().await.map_err(|e| unreachable(&addr, e))?;
                Ok(v["deleted"].as_u64().unwrap_or(0))
            }
            .await;
            match done {
                Ok(n) => cleanup.deleted += n,
                Err(e) => {
                    tracing::warn!(%run_id, %node, error = %e, "could not clean up; the state expires by TTL");
                    cleanup.unreachable.push(node.clone());
                }
            }
        }
        cleanup
    }
}

/// The final result of a step whose host answered early.
type FinalResult = tokio::task::JoinHandle<Result<StepResult>>;

/// The frames of a step answer sent in frames, read as they arrive.
struct Frames {
    response: reqwest::Response,
    buffer: Vec<u8>,
    addr: String,
}

impl Frames {
    /// The next result; a `Failed` frame, a malformed one or an answer that
    /// ends before it is an error.
    async fn next(&mut self) -> Result<StepResult> {
        let addr = self.addr.clone();
        let malformed = |m: String| Error::Unavailable(format!("host {addr}: {m}"));
        loop {
            match StepFrame::take(&mut self.buffer, MAX_STEP_FRAME_BYTES).map_err(&malformed)? {
                Some(StepFrame::Result(result)) => return Ok(result),
                Some(StepFrame::Failed { kind, message }) => {
                    return Err(Error::Remote { peer: format!("peer {}", self.addr), kind, message });
                }
                None => {}
            }
            match self.response.chunk().await.map_err(|e| unreachable(&self.addr, e))? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Err(malformed("the step answer ended before its result".into())),
            }
        }
    }
}

/// How long a step waits for an input still in flight from a producer that
/// answered early: three times the transfer's least time over the route at
/// the scenario's rates, plus 2 s, within [`MAX_ARRIVAL_WAIT_MS`]; the
/// longest wait when there is no route now.
fn arrival_wait_ms(topology: &Topology, t_ms: u64, from: &str, to: &str, bytes: u64) -> u64 {
    match topology.snapshot(t_ms).route(from, to) {
        Some(route) => {
            let least = route.latency_ms + bytes as f64 * 8.0 / route.bandwidth_bps.max(1.0) * 1000.0;
            ((3.0 * least + 2000.0) as u64).min(MAX_ARRIVAL_WAIT_MS)
        }
        None => MAX_ARRIVAL_WAIT_MS,
    }
}

/// A state handed to a step.
struct Handed {
    /// Where it is (or is going).
    locator: Locator,
    /// The producer's node, while the push to the locator's node is still
    /// in flight (its host answered early).
    in_flight_from: Option<String>,
}

/// One run while the runner drives it.
struct Progress<'a> {
    /// The run's input (postcard).
    input: &'a [u8],
    options: &'a RunOptions,
    topology: &'a Topology,
    /// The node each step runs on.
    nodes: HashMap<StepName, String>,
    report: RunReport,
    /// Locators handed to each step, by (consumer step, producer step).
    handed: HashMap<(StepName, StepName), Handed>,
    /// Steps whose hosts answered early, with their final answers to come.
    finals: Vec<(StepName, String, FinalResult)>,
    /// Every known copy of the run's run-scope states.
    run_states: Vec<Locator>,
    done: HashSet<StepName>,
    /// Every node that may hold state of the run: what cleanup visits.
    touched: Vec<String>,
}

impl Progress<'_> {
    fn touch(&mut self, node: &str) {
        if !self.touched.iter().any(|n| n == node) {
            self.touched.push(node.to_string());
        }
    }

    /// Take in what a host reported for step `name`: reads per tier,
    /// hand-offs (and the locators they give to successors), run-state
    /// copies, counters, a final output.
    fn record(&mut self, name: &StepName, result: StepResult, wall: Duration) {
        for read in &result.inputs {
            match read.tier {
                ReadTier::Local => self.report.reads.local += 1,
                ReadTier::Locator => self.report.reads.locator += 1,
                ReadTier::Neighbour => self.report.reads.neighbour += 1,
                ReadTier::Cloud => self.report.reads.cloud += 1,
            }
        }
        for h in &result.handoffs {
            // An early answer: the producer and the target may both hold it.
            self.touch(&result.node);
            self.touch(&h.locator.node);
            let in_flight_from = (result.pending && h.locator.node != result.node).then(|| result.node.clone());
            for succ in &h.successors {
                let handed = Handed { locator: h.locator.clone(), in_flight_from: in_flight_from.clone() };
                self.handed.insert((succ.clone(), name.clone()), handed);
            }
        }
        if !result.pending {
            self.count_handoffs(&result);
        }
        self.take_run_states(&result);
        if !result.pending {
            self.report.counters.add(&result.counters);
        }
        if let Some(out) = &result.output {
            self.report.outputs.push((name.clone(), out.clone()));
        }
        self.done.insert(name.clone());
        self.report.steps.push(StepLine { step: name.clone(), result, wall_micros: wall.as_micros() as u64 });
    }

    /// The run-state copies a step reported replace older ones of the same
    /// keys. An early answer's copies are still in flight: the producer's
    /// node is listed after each (where they stay if the push fails; a
    /// later step fetches from there only what has not reached it).
    fn take_run_states(&mut self, result: &StepResult) {
        if result.run_states.is_empty() {
            return;
        }
        self.run_states.retain(|l| !result.run_states.iter().any(|n| n.key == l.key));
        for l in &result.run_states {
            self.touch(&l.node);
            self.run_states.push(l.clone());
            if result.pending && l.node != result.node {
                self.run_states.push(Locator { node: result.node.clone(), ..l.clone() });
            }
        }
    }

    /// What a step's hand-offs did, once they are acknowledged.
    fn count_handoffs(&mut self, result: &StepResult) {
        for h in &result.handoffs {
            for c in &h.copies {
                self.touch(c);
            }
            if h.locator.node != result.node || h.push_failed.is_some() {
                self.report.transfers += 1;
            }
            if h.consumer_node != result.node {
                self.report.remote_handoffs += 1;
            }
            self.report.slo_violations += u64::from(h.slo_violated);
            self.report.bytes_moved += h.bytes_moved;
        }
    }

    /// Take in the final result of step `name`, whose host answered early:
    /// its hand-offs and counters as they ended (the step line keeps the
    /// runner's wall time of the early answer).
    fn settle(&mut self, name: &StepName, result: StepResult) {
        self.count_handoffs(&result);
        self.take_run_states(&result);
        self.report.counters.add(&result.counters);
        if let Some(line) = self.report.steps.iter_mut().find(|l| &l.step == name) {
            line.result = result;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_later_steps_are_asked_to_warm_their_successors_nodes_once_each() {
        let n = |s: &str| -> StepName { s.parse().unwrap() };
        // a (entry, on x) -> b (on y) -> c (on z) and d (on y) -> e (on w);
        // d's successor e also on w; c's successor f on z itself.
        let steps: Vec<(StepName, Vec<StepName>)> = vec![
            (n("a"), vec![]),
            (n("b"), vec![n("a")]),
            (n("d"), vec![n("a")]),
            (n("c"), vec![n("b")]),
            (n("e"), vec![n("b"), n("d")]),
            (n("f"), vec![n("c")]),
        ];
        let nodes: HashMap<StepName, String> = [("a", "x"), ("b", "y"), ("d", "y"), ("c", "z"), ("e", "w"), ("f", "z")]
            .into_iter()
            .map(|(s, h)| (n(s), h.to_string()))
            .collect();
        let plan = warm_plan(steps.iter().map(|(s, a)| (s, a.as_slice())), &nodes, false);
        assert_eq!(
            plan,
            vec![("y".to_string(), vec!["z".to_string(), "w".to_string()])],
            "the entry host x is left out, y names w once, z hands off to itself only"
        );
        // At deploy time the entry step's host counts too.
        let plan = warm_plan(steps.iter().map(|(s, a)| (s, a.as_slice())), &nodes, true);
        assert_eq!(plan[0], ("x".to_string(), vec!["y".to_string()]));
        assert_eq!(plan[1..], [("y".to_string(), vec!["z".to_string(), "w".to_string()])]);
        let missing: HashMap<StepName, String> = HashMap::new();
        assert!(warm_plan(steps.iter().map(|(s, a)| (s, a.as_slice())), &missing, true).is_empty());
    }

    #[test]
    fn function_names_are_valid_for_any_step_name() {
        assert_eq!(FunctionName::for_step("wildfire", "detect.1").as_str(), "wildfire-detect_1");
        let long = FunctionName::for_step(&"w".repeat(60), "step");
        assert!(FunctionName::is_valid(&long) && long.len() == 64);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 95.0), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
