//! `databelt invoke`: run a workflow across a running continuum — a deployed
//! workflow by name as a durable run that needs no client, or a workflow
//! file driven by this process (the evaluation path).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use databelt_host::schema::json_to_postcard;
use databelt_net::continuum::Policy;
use databelt_net::placement::PlacementClient;
use databelt_net::workflow::{RunOptions, Runner, percentile};

use crate::input::{read_json, runtime};
use crate::node::NodeArgs;
use crate::report;
use crate::security::ClientArgs;

/// Where output states go (`--policy`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyArg {
    /// Elected: nearest the consumer within Tmax; when no node meets Tmax
    /// (or the consumer waits only for the bytes), as near the consumer as
    /// the links allow.
    Databelt,
    /// Elected, never past Tmax: the nearest node that meets it, else the
    /// producer (the paper prototype's rule).
    Strict,
    /// A node drawn from the producer → consumer path.
    Random,
    /// The cloud node only.
    Stateless,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::Databelt => Policy::Databelt,
            PolicyArg::Strict => Policy::Strict,
            PolicyArg::Random => Policy::Random,
            PolicyArg::Stateless => Policy::Stateless,
        }
    }
}

/// State fusion on or off (`--fusion`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusionArg {
    /// One in-memory sandbox per run and host, one batch per node.
    On,
    /// One store operation and one transfer per state.
    Off,
}

/// Flags of `databelt invoke`.
#[derive(clap::Args)]
pub struct Args {
    /// The name of a workflow deployed with `databelt deploy` (a durable
    /// run: it goes on if this process stops), or a workflow file (TOML,
    /// component paths relative to it) that this process drives.
    workflow: PathBuf,
    /// Durable runs: the node to start the run on (it keeps the run's
    /// record). Default: the topology's cloud node.
    #[arg(long)]
    node: Option<String>,
    /// Durable runs: print the run id and return at once.
    #[arg(long)]
    detach: bool,
    /// Durable runs: fail the run if it has not ended after this long, ms.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// The run's input as JSON (or `@path`), of the entry steps' input type.
    #[arg(long, default_value = "null")]
    input: String,
    /// The placement service of the continuum.
    #[arg(long, default_value = "https://127.0.0.1:7300")]
    placement: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Where output states go.
    #[arg(long, value_enum, default_value_t = PolicyArg::Databelt)]
    policy: PolicyArg,
    /// Run the workflow this many times.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Print each run's report as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// Leave each run's state on the nodes instead of deleting it.
    #[arg(long)]
    keep_state: bool,
    /// State fusion; default: as the workflow file says (on unless it sets
    /// `fusion = false`).
    #[arg(long, value_enum)]
    fusion: Option<FusionArg>,
    /// Compiled-code cache for describing the components.
    #[arg(long, default_value = "databelt-data/cache")]
    cache_dir: PathBuf,
}

/// Run the command.
pub fn run(args: Args) -> Result<()> {
    if !args.workflow.exists() && args.workflow.extension().is_none() {
        return durable(args);
    }
    let policy = Policy::from(args.policy);
    let input = read_json(&args.input)?;
    runtime()?.block_on(async move {
        let placement = PlacementClient::new(&args.placement, &args.client.credentials()?, Duration::from_secs(5))?;
        let runner = Runner::load(&args.workflow, placement, Some(args.cache_dir.clone())).await?;
        let schema = runner.input_schema().ok_or_else(|| anyhow!("the workflow has no entry step"))?;
        let bytes = json_to_postcard(schema, &input).context("--input")?;
        runner.deploy().await?;
        let options = RunOptions {
            policy,
            keep_state: args.keep_state,
            fusion: args.fusion.map(|f| f == FusionArg::On),
            ..RunOptions::default()
        };
        let mut totals = Vec::new();
        let (mut local, mut reads, mut violations, mut transfers) = (0u64, 0u64, 0u64, 0u64);
        for _ in 0..args.runs {
            let run = runner.run(bytes.clone(), &options).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report::json(&run, &runner)?)?);
            } else {
                report::print(&run, &runner)?;
            }
            totals.push(run.total_micros as f64 / 1000.0);
            let r = run.reads;
            local += r.local;
            reads += r.local + r.locator + r.neighbour + r.cloud + r.misses;
            violations += run.slo_violations;
            transfers += run.remote_handoffs;
        }
        if args.runs > 1 && !args.json {
            println!(
                "{} runs, policy {}: end-to-end p50 {:.1} ms, p95 {:.1} ms; local availability {:.1}%; SLO violations {} of {} remote hand-offs",
                args.runs,
                policy,
                percentile(&totals, 50.0),
                percentile(&totals, 95.0),
                if reads == 0 { 0.0 } else { local as f64 * 100.0 / reads as f64 },
                violations,
                transfers
            );
        }
        Ok(())
    })
}

/// Start a durable run of a deployed workflow; wait for it unless detached.
fn durable(args: Args) -> Result<()> {
    let name = args.workflow.display().to_string();
    let input = read_json(&args.input)?;
    let node = NodeArgs { node: args.node.clone(), placement: args.placement.clone(), client: args.client };
    let policy = Policy::from(args.policy);
    runtime()?.block_on(async move {
        let api = node.connect(Duration::from_secs(30)).await?;
        let mut url = format!("{}/workflows/{name}/runs?policy={policy}", api.base);
        if let Some(f) = args.fusion {
            url += &format!("&fusion={}", f == FusionArg::On);
        }
        if let Some(d) = args.deadline_ms {
            url += &format!("&deadline_ms={d}");
        }
        let started = api.json(api.http.post(url).json(&input)).await?;
        let run = started["run_id"].as_str().ok_or_else(|| anyhow!("the node answered no run id: {started}"))?;
        if args.detach {
            println!("{run}");
            return Ok(());
        }
        eprintln!("run {run} started; waiting (Ctrl-C leaves it running; `databelt runs show {run}`)");
        crate::commands::runs::wait(&node, run, args.deadline_ms.unwrap_or(300_000)).await
    })
}
