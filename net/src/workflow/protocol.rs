//! The step protocol between a workflow runner and the hosts: what a host
//! is asked to run and what it reports back. Bodies are postcard.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /workflow/v1/step` | postcard [`StepRequest`] | postcard [`StepResult`] |
//! | `POST /workflow/v1/warm` | postcard [`WarmRequest`] | `202`: the host connects in the background |
//! | `GET /workflow/v1/runs` | | JSON list of run ids with state on this host |
//! | `DELETE /workflow/v1/runs/{run_id}` | | JSON `{"deleted": n}`: the run's state here is gone |
//!
//! Errors are JSON `{"error": kind, "message": text}` with a 4xx/5xx status,
//! as on the host API.

use databelt_types::{FunctionName, RunId, StepName};
use serde::{Deserialize, Serialize};

use crate::continuum::{Locator, Policy, ReadTier};

/// The scope holding workflow hand-off state on every host. Reserved:
/// functions cannot open it (see [`databelt_types::RESERVED_SCOPE_PREFIX`]).
pub const RUN_SCOPE: &str = "databelt.runs";

/// The key of `step`'s output state in run `run_id`.
pub fn state_key(run_id: &RunId, step: &StepName) -> String {
    format!("{run_id}/{step}")
}

/// The prefix, in [`RUN_SCOPE`], of run `run_id`'s run scope
/// (`context.run-state`): key `k` is stored as `{run_id}/s/{k}`. Neither run
/// ids nor step names can contain `/` ([`RunId`], [`StepName`]), so these
/// never collide with outputs, and no run's keys start with another run's
/// prefix.
pub fn run_scope_prefix(run_id: &RunId) -> String {
    format!("{run_id}/s/")
}

/// Where a step's input comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepInput {
    /// The run's input, given inline (entry steps).
    Inline(Vec<u8>),
    /// The output states of the step's predecessors, in the order of its
    /// `after` list. The host reads each through the tiered read path and
    /// concatenates them: the postcard encoding of the tuple of the
    /// predecessors' outputs (one predecessor: its output as is).
    Handed(Vec<Locator>),
}

/// A step that consumes this step's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Successor {
    /// Its name.
    pub step: StepName,
    /// The node it will run on.
    pub node: String,
    /// Its SLO: the longest the transfer of its input may take, ms.
    pub tmax_ms: f64,
}

/// Run one step of a workflow on the receiving host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRequest {
    /// The run.
    pub run_id: RunId,
    /// The step's name in the workflow.
    pub step: StepName,
    /// The function deployed on this host that implements it.
    pub function: FunctionName,
    /// Its input.
    pub input: StepInput,
    /// Who consumes its output; empty for a final step, whose output is
    /// returned in [`StepResult::output`] instead of being stored.
    pub successors: Vec<Successor>,
    /// Where the output goes.
    pub policy: Policy,
    /// Lifetime of the stored output, ms: it expires even if garbage
    /// collection never reaches this host.
    pub ttl_ms: u64,
    /// State fusion: the run's states live in the host's in-memory sandbox
    /// of the run and move in one batch per node.
    pub fusion: bool,
    /// With fusion, also write handed-on states to the host's store.
    pub durable: bool,
    /// Per handed input: this step is its only reader, so a fused local
    /// input is moved out of the sandbox rather than copied.
    pub sole_reader: Vec<bool>,
    /// Where the run's run-scope states are (every copy known); the host
    /// fetches the keys the function declared from here before it starts.
    pub run_states: Vec<Locator>,
    /// Durable copies of handed inputs, read when the copy an input's
    /// locator names is gone (durable runs: the producer's store).
    pub fallbacks: Vec<Locator>,
    /// The step's own deadline, ms (only shortens the host's).
    pub deadline_ms: Option<u64>,
    /// Answer in frames ([`StepFrame`], content type
    /// [`STEP_FRAMES_CONTENT_TYPE`]): a first result as soon as the
    /// hand-offs' targets are elected and their pushes have started
    /// ([`StepResult::pending`]), the final one once every push is
    /// acknowledged. The runner starts the successors while their inputs are
    /// in flight. Not for durable runs, whose step records need the
    /// acknowledgements first.
    pub early_release: bool,
    /// Inputs whose locator names this node but which are still in flight
    /// to it (their producer released early) are waited for up to this
    /// long, ms (capped at [`MAX_ARRIVAL_WAIT_MS`]), before the read goes on
    /// to the other tiers and `fallbacks`; 0: no wait.
    pub arrival_wait_ms: u64,
}

/// Ask a host to open connections, ahead of a run, to the nodes its steps
/// of the run will hand off to (`POST /workflow/v1/warm`): the runner sends
/// it at the start of a run to the hosts of the steps that do not start at
/// once, so that their first hand-off does not wait for a TCP and TLS
/// handshake over a slow link (see [`crate::continuum::Continuum::warm_toward`]).
/// A host that used a node lately sends it nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmRequest {
    /// The run's policy (under [`Policy::Stateless`] hand-offs go to the
    /// cloud node, whichever node the successors run on).
    pub policy: Policy,
    /// The nodes the host's steps' successors run on; at most
    /// [`MAX_WARM_NODES`].
    pub nodes: Vec<String>,
}

/// Most nodes one [`WarmRequest`] may name.
pub const MAX_WARM_NODES: usize = 64;

/// Content type of a step answer sent in frames.
pub const STEP_FRAMES_CONTENT_TYPE: &str = "application/x-databelt-step-frames";

/// Longest a host waits for an input still in flight to it, ms.
pub const MAX_ARRIVAL_WAIT_MS: u64 = 120_000;

/// Largest frame of a step answer a runner accepts, bytes (a final step's
/// output travels in one).
pub const MAX_STEP_FRAME_BYTES: usize = 512 * 1024 * 1024;

/// One frame of a step answer sent in frames: a little-endian `u32`
/// length, then the postcard encoding of this. A first `Result` whose
/// [`StepResult::pending`] is set is followed by exactly one more frame:
/// the final result, or `Failed` when the step could not be finished after
/// its early answer (its hand-offs' states then stay where the final
/// frame would have said — the producer keeps its copy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepFrame {
    /// A result: early (`pending`) or final.
    Result(StepResult),
    /// The step failed after its early answer.
    Failed {
        /// The error's kind.
        kind: databelt_types::ErrorKind,
        /// What went wrong.
        message: String,
    },
}

impl StepFrame {
    /// The frame with its length prefix.
    pub fn encode(&self) -> postcard::Result<Vec<u8>> {
        let body = postcard::to_stdvec(self)?;
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Split the first whole frame off `buffer`: `Ok(None)` while it is
    /// incomplete; an error for a frame over `max` bytes or one that does not
    /// decode.
    pub fn take(buffer: &mut Vec<u8>, max: usize) -> Result<Option<StepFrame>, String> {
        let Some(head) = buffer.get(..4) else { return Ok(None) };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > max {
            return Err(format!("a step frame of {len} bytes (at most {max})"));
        }
        if buffer.len() < 4 + len {
            return Ok(None);
        }
        let frame = postcard::from_bytes(&buffer[4..4 + len]).map_err(|e| format!("malformed step frame: {e}"))?;
        buffer.drain(..4 + len);
        Ok(Some(frame))
    }
}

/// How one input state was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRead {
    /// The key read.
    pub key: String,
    /// The node the locator named.
    pub locator_node: String,
    /// The tier that served it.
    pub tier: ReadTier,
    /// The node that served it.
    pub node: String,
    /// Its size.
    pub bytes: u64,
    /// Time to read it, µs.
    pub micros: u64,
}

/// Where the output went for the successors on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandOffReport {
    /// The successor steps served by this hand-off.
    pub successors: Vec<StepName>,
    /// The node they run on.
    pub consumer_node: String,
    /// Where the state is now (acknowledged).
    pub locator: Locator,
    /// The elected node, when the policy elected (`None` for stateless).
    pub elected: Option<String>,
    /// Why the state stayed on the producer, when the election said so.
    pub stay_reason: Option<String>,
    /// Bytes sent to another node.
    pub bytes_moved: u64,
    /// Time of election plus transfer, µs.
    pub micros: u64,
    /// Tmax the transfer was held to, ms.
    pub tmax_ms: f64,
    /// The transfer took longer than Tmax, or the election found no node
    /// that meets it (then the state went as near the consumer as the links
    /// allow, or stayed when none was reachable).
    pub slo_violated: bool,
    /// Set when the chosen node could not take the state.
    pub push_failed: Option<String>,
    /// The election used the host's cached topology (service unreachable).
    pub elected_locally: bool,
    /// Every node holding a copy after this hand-off.
    pub copies: Vec<String>,
    /// States moved together in this hand-off (the output plus the run-scope
    /// states the step wrote); 1 with fusion off (those move on their own).
    pub states: u64,
}

/// State operations and transfers caused by one step (and summed per run).
/// Operations on another host caused by this step's requests count here
/// too: an unfused push of B states is B store writes on the receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounters {
    /// Operations on a host's store.
    pub store_ops: u64,
    /// Value bytes they read or wrote.
    pub store_bytes: u64,
    /// Operations on a run's in-memory sandbox.
    pub sandbox_ops: u64,
    /// Value bytes they read or wrote.
    pub sandbox_bytes: u64,
    /// Requests to other hosts (reads, prefetches, pushes).
    pub remote_requests: u64,
    /// Value bytes those requests moved.
    pub remote_bytes: u64,
    /// Time spent on state: reading inputs and prefetching, the function's
    /// own state calls, storing the output and handing states on, µs.
    pub state_micros: u64,
}

impl StateCounters {
    /// Add `other` to these counts.
    pub fn add(&mut self, other: &StateCounters) {
        self.store_ops += other.store_ops;
        self.store_bytes += other.store_bytes;
        self.sandbox_ops += other.sandbox_ops;
        self.sandbox_bytes += other.sandbox_bytes;
        self.remote_requests += other.remote_requests;
        self.remote_bytes += other.remote_bytes;
        self.state_micros += other.state_micros;
    }

    fn op(&mut self, in_sandbox: bool, bytes: u64) {
        if in_sandbox {
            self.sandbox_ops += 1;
            self.sandbox_bytes += bytes;
        } else {
            self.store_ops += 1;
            self.store_bytes += bytes;
        }
    }

    /// Count one local operation of `bytes` in the sandbox or the store.
    pub fn local(&mut self, in_sandbox: bool, bytes: u64) {
        self.op(in_sandbox, bytes);
    }

    /// Count one request to another host moving `bytes`.
    pub fn remote(&mut self, bytes: u64) {
        self.remote_requests += 1;
        self.remote_bytes += bytes;
    }
}

/// What a host reports for one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The node that ran it.
    pub node: String,
    /// How each input state was read (empty for inline input).
    pub inputs: Vec<InputRead>,
    /// Time to read every input, µs.
    pub read_micros: u64,
    /// Time to run the function (instantiate + call + its own state calls), µs.
    pub invoke_micros: u64,
    /// Size of the output.
    pub output_bytes: u64,
    /// Time to store the output locally, µs (0 for a final step).
    pub store_micros: u64,
    /// The output of a final step; `None` when it was handed on.
    pub output: Option<Vec<u8>>,
    /// One per consumer node (one in all under the stateless policy).
    pub handoffs: Vec<HandOffReport>,
    /// Where the run-scope states this step wrote are now (a locator per
    /// copy; the key is the full key in [`RUN_SCOPE`]).
    pub run_states: Vec<Locator>,
    /// Declared run-scope keys fetched from other nodes before the function
    /// started.
    pub prefetched: u64,
    /// State operations and transfers of this step.
    pub counters: StateCounters,
    /// An early answer: the hand-offs' pushes were still in flight, so
    /// their `bytes_moved`, `micros`, `slo_violated` (beyond what the
    /// election foresaw), `push_failed` and `copies`, and the transfer
    /// counters, are not known yet; the final frame has them. Each
    /// hand-off's locator names the elected target.
    pub pending: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> StepResult {
        StepResult {
            node: "s1".into(),
            inputs: Vec::new(),
            read_micros: 1,
            invoke_micros: 2,
            output_bytes: 3,
            store_micros: 4,
            output: Some(vec![7; 100]),
            handoffs: Vec::new(),
            run_states: Vec::new(),
            prefetched: 0,
            counters: StateCounters::default(),
            pending: true,
        }
    }

    #[test]
    fn frames_split_at_any_byte_and_come_out_whole_and_in_order() {
        let first = StepFrame::Result(result());
        let last = StepFrame::Failed { kind: databelt_types::ErrorKind::Unavailable, message: "gone".into() };
        let wire: Vec<u8> = [first.encode().unwrap(), last.encode().unwrap()].concat();
        for cut in 0..wire.len() {
            let mut buffer = wire[..cut].to_vec();
            let mut got = Vec::new();
            while let Some(f) = StepFrame::take(&mut buffer, 1 << 20).unwrap() {
                got.push(f);
            }
            buffer.extend_from_slice(&wire[cut..]);
            while let Some(f) = StepFrame::take(&mut buffer, 1 << 20).unwrap() {
                got.push(f);
            }
            assert_eq!(got, [first.clone(), last.clone()], "cut at {cut}");
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn oversize_or_malformed_frames_are_refused() {
        let mut big = StepFrame::Result(result()).encode().unwrap();
        let e = StepFrame::take(&mut big, 10).unwrap_err();
        assert!(e.contains("at most 10"), "{e}");
        let mut garbage = vec![3, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(StepFrame::take(&mut garbage, 1 << 20).unwrap_err().contains("malformed"));
        assert_eq!(garbage.len(), 7, "nothing consumed");
    }
}
