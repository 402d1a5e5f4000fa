//! Workflow definitions: steps, where they run, their SLOs, and the DAG
//! they form (chains, fan-out, fan-in). Pure parsing and validation; the
//! runner that executes a workflow across hosts builds on it.
//!
//! ```toml
//! name = "wildfire"
//! fusion = true                   # default; false = one store op and one transfer per state
//!
//! [[step]]
//! name = "preprocess"
//! component = "preprocess.wasm"   # relative to the workflow file
//! node = "sat2"                   # or "placement": the service decides
//! tmax_ms = 100                   # SLO for moving this step's input state
//!
//! [[step]]
//! name = "detect"
//! component = "detect.wasm"
//! node = "sat4"
//! tmax_ms = 150
//! after = ["preprocess"]          # predecessors; several = fan-in
//! max_wait_ms = 30000             # durable runs: wait this long for the node
//! deadline_ms = 2000              # the function's own deadline (≤ the host's)
//! needs = { cpu = 1, memory_mb = 256, power_w = 5, duration_ms = 800 }  # for placement
//! scheduler = { policy = "first-fit" }  # this step's own scheduler settings
//!
//! [scheduler]                     # every placed step's scheduler settings
//! weights = { latency = 1, heat = 1, battery = 0.5, bandwidth = 0.25 }
//! vicinity_ms = 40
//!
//! [transaction]                   # durable runs: these steps commit all or nothing
//! steps = ["preprocess", "detect"]
//! retries = 5                     # whole-transaction retries after a conflict
//! timeout_ms = 10000              # an attempt not prepared by then aborts
//! ```

use std::collections::HashMap;

use petgraph::algo::toposort;
use petgraph::graph::DiGraph;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use databelt_types::StepName;

use crate::hints::FunctionRequest;
use crate::scheduler::SchedulerConfig;
use crate::topology::{Topology, toml_error};

/// Where a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum StepNode {
    /// On this node.
    Fixed(String),
    /// Wherever the placement service's function hint says.
    Placement,
}

impl From<String> for StepNode {
    fn from(s: String) -> Self {
        if s == "placement" { StepNode::Placement } else { StepNode::Fixed(s) }
    }
}

impl From<StepNode> for String {
    fn from(n: StepNode) -> Self {
        match n {
            StepNode::Fixed(s) => s,
            StepNode::Placement => "placement".into(),
        }
    }
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the workflow ([`StepName`]: 1-64 letters, digits, `-`,
    /// `_`, `.`; checked when the file is read).
    pub name: StepName,
    /// Path of the component, relative to the workflow file.
    pub component: String,
    /// Where it runs.
    pub node: StepNode,
    /// The longest the transfer of this step's input state may take, ms.
    pub tmax_ms: f64,
    /// Steps whose output this step consumes (none: an entry step).
    #[serde(default)]
    pub after: Vec<StepName>,
    /// Durable runs: how long a step waits for its node to come back (a
    /// satellite out of range) before the run fails — or, for a step placed
    /// by the placement service, before it is placed on another node; ms.
    /// `None`: the host's default.
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    /// The step's own deadline for its function, ms; it can only shorten
    /// the host's `deadline_ms`. A step past it fails that attempt (in a
    /// durable run it runs again, up to the host's attempts).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// What the step needs where it runs; the scheduler weighs it for a
    /// step with `node = "placement"`.
    #[serde(default)]
    pub needs: Needs,
    /// This step's scheduler settings (unset: the workflow's).
    #[serde(default)]
    pub scheduler: Option<SchedulerConfig>,
}

/// What a step needs on the node that runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Needs {
    /// CPU cores.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: f64,
    /// Power drawn while it runs, W.
    pub power_w: f64,
    /// Expected running time, ms.
    pub duration_ms: u64,
}

/// A workflow: a DAG of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Its name (SLOs are registered under it).
    pub name: String,
    /// The steps.
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
    /// State fusion (default on): steps of a run on the same host share an
    /// in-memory sandbox, states move in one batch per node. `false` stores
    /// and moves every state on its own, for comparison.
    #[serde(default = "fusion_default")]
    pub fusion: bool,
    /// With fusion on, also write every handed-on state to the host's store
    /// (durable with redb); default off.
    #[serde(default)]
    pub durable: bool,
    /// Durable runs: steps that form one serializable, all-or-nothing
    /// transaction (see docs/transactions.md).
    #[serde(default)]
    pub transaction: Option<Transaction>,
    /// Durable runs: repeatable reads of replicated scopes (default off).
    /// Every step of a run sees the version of a replicated key that an
    /// earlier step of the run read (or wrote), even if the key changed
    /// since or the step runs on another replica: the run carries those
    /// values with it (see docs/replication.md for the cost).
    #[serde(default)]
    pub repeatable_read: bool,
    /// Scheduler settings for every step with `node = "placement"` (a
    /// step's own `scheduler` replaces them; unset: the defaults).
    #[serde(default)]
    pub scheduler: Option<SchedulerConfig>,
}

/// Steps of a workflow that commit as one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// The steps. Steps after them see their effects; no step outside the
    /// set may lie between two of them.
    pub steps: Vec<StepName>,
    /// How many times the runtime retries the whole transaction after an
    /// attempt aborted on a conflict or a timeout (default 5); a step that
    /// fails for good aborts it without retry.
    #[serde(default = "retries_default")]
    pub retries: u32,
    /// An attempt whose steps have not all prepared this long after it
    /// started is aborted, ms (default 10000): the longest a participant
    /// holds its locks while its coordinator is up.
    #[serde(default = "txn_timeout_default")]
    pub timeout_ms: u64,
}

fn retries_default() -> u32 {
    5
}

fn txn_timeout_default() -> u64 {
    10_000
}

impl Transaction {
    /// Whether `step` is part of the transaction.
    pub fn contains(&self, step: &str) -> bool {
        self.steps.iter().any(|s| s == step)
    }
}

fn fusion_default() -> bool {
    true
}

impl Workflow {
    /// Parse TOML and validate the DAG (not the nodes: see
    /// [`Workflow::check_nodes`]).
    pub fn from_toml(text: &str) -> Result<Workflow> {
        let workflow: Workflow =
            toml::from_str(text).map_err(|e| Error::BadRequest(format!("workflow, {}", toml_error(text, &e))))?;
        workflow.order()?;
        Ok(workflow)
    }

    /// The steps in an order where every step comes after its
    /// predecessors; errors on duplicates, unknown predecessors and cycles.
    pub fn order(&self) -> Result<Vec<&Step>> {
        let bad = |m: String| Err(Error::BadRequest(format!("workflow `{}`: {m}", self.name)));
        if self.steps.is_empty() {
            return bad("has no steps".into());
        }
        if let Some(Err(Error::BadRequest(m))) = self.scheduler.as_ref().map(SchedulerConfig::validate) {
            return bad(m);
        }
        let mut graph = DiGraph::<usize, ()>::new();
        let mut index = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            if !(s.tmax_ms.is_finite() && s.tmax_ms >= 0.0) {
                return bad(format!("step `{}`: tmax_ms must be a non-negative number", s.name));
            }
            if s.component.is_empty() {
                return bad(format!("step `{}`: component is empty", s.name));
            }
            let n = &s.needs;
            if ![n.cpu, n.memory_mb, n.power_w].iter().all(|v| v.is_finite() && *v >= 0.0) {
                return bad(format!("step `{}`: needs must be non-negative numbers", s.name));
            }
            if let Some(Err(Error::BadRequest(m))) = s.scheduler.as_ref().map(SchedulerConfig::validate) {
                return bad(format!("step `{}`: {m}", s.name));
            }
            if index.insert(s.name.as_str(), graph.add_node(i)).is_some() {
                return bad(format!("step `{}` is defined twice", s.name));
            }
        }
        for s in &self.steps {
            for p in &s.after {
                let Some(&from) = index.get(p.as_str()) else {
                    return bad(format!("step `{}` comes after unknown step `{p}`", s.name));
                };
                graph.add_edge(from, index[s.name.as_str()], ());
            }
        }
        let order: Vec<&Step> = match toposort(&graph, None) {
            Ok(order) => order.into_iter().map(|n| &self.steps[graph[n]]).collect(),
            Err(cycle) => {
                return bad(format!("steps form a cycle through `{}`", self.steps[graph[cycle.node_id()]].name));
            }
        };
        if let Some(txn) = &self.transaction {
            if txn.steps.is_empty() {
                return bad("the transaction has no steps".into());
            }
            for (i, t) in txn.steps.iter().enumerate() {
                if !index.contains_key(t.as_str()) {
                    return bad(format!("the transaction names unknown step `{t}`"));
                }
                if txn.steps[..i].contains(t) {
                    return bad(format!("the transaction names step `{t}` twice"));
                }
            }
            if txn.timeout_ms == 0 {
                return bad("the transaction's timeout_ms must be at least 1".into());
            }
            // Outside steps that come after a transaction step run once it
            // committed: none of them may lead into the transaction again.
            let mut after_txn: Vec<&str> = Vec::new();
            for s in &order {
                let from_txn = s.after.iter().any(|p| txn.contains(p) || after_txn.contains(&p.as_str()));
                if txn.contains(&s.name) {
                    if let Some(p) = s.after.iter().find(|p| after_txn.contains(&p.as_str())) {
                        return bad(format!(
                            "step `{p}` lies between transaction steps (before `{}`); it would have to run before \
                             the transaction commits",
                            s.name
                        ));
                    }
                } else if from_txn {
                    after_txn.push(s.name.as_str());
                }
            }
        }
        Ok(order)
    }

    /// The scheduler settings for `step`: its own, else the workflow's,
    /// else the defaults.
    pub fn scheduler_for(&self, step: &Step) -> SchedulerConfig {
        step.scheduler.clone().or_else(|| self.scheduler.clone()).unwrap_or_default()
    }

    /// The function-placement request for `step` when its input is at
    /// `near`.
    pub fn placement_request(&self, step: &Step, near: String) -> FunctionRequest {
        FunctionRequest {
            near,
            cpu: step.needs.cpu,
            memory_mb: step.needs.memory_mb,
            power_w: step.needs.power_w,
            duration_ms: step.needs.duration_ms,
            max_latency_ms: None,
            input_tmax_ms: Some(step.tmax_ms),
            scheduler: Some(self.scheduler_for(step)),
            ..FunctionRequest::default()
        }
    }

    /// Whether `step` belongs to the workflow's transaction.
    pub fn in_transaction(&self, step: &str) -> bool {
        self.transaction.as_ref().is_some_and(|t| t.contains(step))
    }

    /// Whether `step` is where the transaction starts: a transaction step
    /// none of whose predecessors is one.
    pub fn transaction_entry(&self, step: &str) -> bool {
        self.in_transaction(step)
            && self
                .steps
                .iter()
                .find(|s| s.name == step)
                .is_some_and(|s| !s.after.iter().any(|p| self.in_transaction(p)))
    }

    /// Check that every fixed node exists in `topology`.
    pub fn check_nodes(&self, topology: &Topology) -> Result<()> {
        for s in &self.steps {
            if let StepNode::Fixed(n) = &s.node
                && topology.node(n).is_none()
            {
                return Err(Error::UnknownNode(format!("{n} (step `{}` of workflow `{}`)", s.name, self.name)));
            }
        }
        Ok(())
    }

    /// Steps that consume the output of `step`.
    pub fn successors(&self, step: &str) -> Vec<&Step> {
        self.steps.iter().filter(|s| s.after.iter().any(|p| p == step)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, node: &str, after: &[&str]) -> String {
        let after: Vec<String> = after.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[[step]]\nname = \"{name}\"\ncomponent = \"{name}.wasm\"\nnode = \"{node}\"\ntmax_ms = 100\nafter = [{}]\n",
            after.join(", ")
        )
    }

    #[test]
    fn the_wildfire_chain_orders_and_checks_against_the_testbed() {
        let text = format!(
            "name = \"wildfire\"\n{}{}{}{}",
            step("alarm", "cloud", &["detect2"]),
            step("preprocess", "sat2", &[]),
            step("detect1", "sat4", &["preprocess"]),
            step("detect2", "sat6", &["detect1"]),
        );
        let w = Workflow::from_toml(&text).unwrap();
        let order: Vec<&str> = w.order().unwrap().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["preprocess", "detect1", "detect2", "alarm"]);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/paper-testbed.toml");
        w.check_nodes(&Topology::from_file(&path).unwrap()).unwrap();
        assert_eq!(w.successors("detect1")[0].name, "detect2");
    }

    #[test]
    fn fan_out_and_fan_in() {
        let text = format!(
            "name = \"f\"\n{}{}{}{}",
            step("a", "placement", &[]),
            step("b", "n1", &["a"]),
            step("c", "n2", &["a"]),
            step("d", "n3", &["b", "c"]),
        );
        let w = Workflow::from_toml(&text).unwrap();
        assert_eq!(w.steps[0].node, StepNode::Placement);
        let order: Vec<&str> = w.order().unwrap().iter().map(|s| s.name.as_str()).collect();
        assert_eq!((order[0], order[3]), ("a", "d"));
        assert_eq!(w.successors("a").len(), 2);
    }

    #[test]
    fn bad_workflows_say_why() {
        let err = |t: String| Workflow::from_toml(&t).unwrap_err().to_string();
        assert!(err(format!("name = \"w\"\n{}{}", step("a", "n", &["b"]), step("b", "n", &["a"]))).contains("cycle"));
        assert!(err(format!("name = \"w\"\n{}", step("a", "n", &["zz"]))).contains("unknown step `zz`"));
        assert!(err(format!("name = \"w\"\n{}{}", step("a", "n", &[]), step("a", "n", &[]))).contains("twice"));
        assert!(err("name = \"w\"\nstep = []\n".into()).contains("no steps"));
        assert!(err(format!("name = \"w\"\ncolour = 1\n{}", step("a", "n", &[]))).contains("line"));
        let w = Workflow::from_toml(&format!("name = \"w\"\n{}", step("a", "mars", &[]))).unwrap();
        let t = Topology::from_toml("[[node]]\nid = \"n\"\nkind = \"edge\"\n").unwrap();
        assert!(w.check_nodes(&t).unwrap_err().to_string().contains("mars"));
    }

    #[test]
    fn a_transaction_names_known_steps_and_nothing_outside_lies_between_them() {
        let chain = format!("{}{}{}", step("a", "n", &[]), step("b", "n", &["a"]), step("c", "n", &["b"]));
        let with = |txn: &str| Workflow::from_toml(&format!("name = \"w\"\n{chain}[transaction]\n{txn}\n"));
        let w = with("steps = [\"a\", \"b\"]").unwrap();
        let t = w.transaction.as_ref().unwrap();
        assert_eq!((t.retries, t.timeout_ms), (5, 10_000));
        assert!(w.transaction_entry("a") && !w.transaction_entry("b") && !w.transaction_entry("c"));
        assert!(w.in_transaction("b") && !w.in_transaction("c"));
        let err = |txn: &str| with(txn).unwrap_err().to_string();
        assert!(err("steps = [\"a\", \"c\"]").contains("`b` lies between"), "{}", err("steps = [\"a\", \"c\"]"));
        assert!(err("steps = [\"a\", \"zz\"]").contains("unknown step `zz`"));
        assert!(err("steps = [\"a\", \"a\"]").contains("twice"));
        assert!(err("steps = []").contains("no steps"));
        assert!(err("steps = [\"a\"]\ntimeout_ms = 0").contains("timeout_ms"));
        assert!(err("steps = [\"a\"]\nlocks = 1").contains("line"));
    }
}
