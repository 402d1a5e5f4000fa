//! `databelt`: run Databelt functions from the command line or serve them
//! over HTTP.

mod paper;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use databelt_host::schema::{json_to_postcard, postcard_to_json};
use databelt_host::{BackendConfig, Host, HostConfig, InvokeOptions};
use std::time::Duration;

use databelt_host::cluster::{Cluster, ClusterOptions};
use databelt_host::continuum::{Continuum, Policy};
use databelt_host::peer::PeerClient;
use databelt_host::workflow::{RunOptions, RunReport, Runner, StepExecutor};
use databelt_placement::service::{PlacementClient, PlacementService};
use databelt_placement::{ElectionRequest, Topology};

/// Databelt: stateful serverless functions as WASI components.
#[derive(Parser)]
#[command(name = "databelt", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a component once on an input and print its output as JSON.
    Run(RunArgs),
    /// Serve the HTTP API: deploy, list and invoke functions by name.
    Serve(ServeArgs),
    /// Print a component's function name and input/output types.
    Describe {
        /// Path of the component (.wasm).
        component: PathBuf,
    },
    /// Serve the placement service (topology, SLOs, hints) for a scenario.
    Placement {
        /// Scenario file (TOML topology), e.g. scenarios/paper-testbed.toml.
        #[arg(long)]
        scenario: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7300")]
        listen: SocketAddr,
    },
    /// Start a whole continuum on this machine: the placement service and
    /// one host per node of a scenario, on the addresses it gives.
    Up(UpArgs),
    /// Run a workflow across a running continuum and report each step.
    Invoke(InvokeArgs),
    /// Elect the storage node for one state transfer and explain the answer.
    Elect {
        /// Scenario file (TOML topology).
        #[arg(long)]
        scenario: PathBuf,
        /// Node holding the state.
        #[arg(long)]
        producer: String,
        /// Node where the next step runs.
        #[arg(long)]
        consumer: String,
        /// State size in bytes.
        #[arg(long)]
        size: u64,
        /// The step's SLO (longest transfer), ms.
        #[arg(long)]
        tmax_ms: f64,
        /// Scenario time, ms (link windows).
        #[arg(long, default_value_t = 0)]
        at_ms: u64,
    },
    /// Benchmarks that need a whole continuum.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The Databelt paper's evaluation on an emulated testbed: latency per
    /// state size and throughput per concurrency, for the stateless, random,
    /// databelt and databelt+fusion policies; writes CSV, Markdown and SVG.
    Paper(PaperArgs),
}

#[derive(Args)]
struct PaperArgs {
    /// Two sizes (1, 5 MB), two concurrency levels (5, 10), two runs each:
    /// a few minutes. Without it: 1-50 MB, 5-50 concurrent, three runs.
    #[arg(long)]
    quick: bool,
    /// Scenario file.
    #[arg(long, default_value = "scenarios/paper-testbed.toml")]
    scenario: PathBuf,
    /// The wildfire workflow (its components must be built).
    #[arg(long, default_value = "examples/wildfire/wildfire.toml")]
    workflow: PathBuf,
    /// Results folder.
    #[arg(long, default_value = "results/paper")]
    out: PathBuf,
    /// Run the scenario's schedule this many times faster.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    time_scale: u64,
}

#[derive(Args)]
struct HostArgs {
    /// Host configuration file (TOML); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the state database (when the backend is redb) and the compiled-code cache.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep state in memory only (lost on exit).
    #[arg(long)]
    memory: bool,
    /// This node's id, as functions see it.
    #[arg(long)]
    node_id: Option<String>,
}

#[derive(Args)]
struct UpArgs {
    /// Scenario file (TOML topology), e.g. scenarios/paper-testbed.toml.
    scenario: PathBuf,
    /// Address of the placement service.
    #[arg(long, default_value = "127.0.0.1:7300")]
    placement_listen: SocketAddr,
    /// Host configuration every node starts from (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory with one sub-directory per node (redb state, compiled code).
    #[arg(long, default_value = "databelt-data/continuum")]
    data_dir: PathBuf,
    /// Keep every node's state in memory only.
    #[arg(long)]
    memory: bool,
    /// Emulate the scenario's links between the hosts in user space (latency,
    /// jitter, bandwidth, windows), instead of plain loopback.
    #[arg(long)]
    emulate: bool,
    /// Run the scenario's schedule this many times faster (windows and
    /// period divided by it): with 12, the paper testbed's ground link moves
    /// every 5 s instead of every minute.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    time_scale: u64,
}

#[derive(Args)]
struct InvokeArgs {
    /// Workflow file (TOML); component paths are relative to it.
    workflow: PathBuf,
    /// The run's input as JSON (or `@path`), of the entry steps' input type.
    #[arg(long, default_value = "null")]
    input: String,
    /// The placement service of the continuum.
    #[arg(long, default_value = "http://127.0.0.1:7300")]
    placement: String,
    /// Where output states go: databelt (elected; as near the consumer as
    /// the links allow when no node meets Tmax), strict (elected; stays on
    /// the producer when no node meets Tmax), random (a node of the path),
    /// stateless (the cloud node).
    #[arg(long, default_value = "databelt")]
    policy: String,
    /// Run the workflow this many times.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Print each run's report as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// Leave each run's state on the nodes instead of deleting it.
    #[arg(long)]
    keep_state: bool,
    /// State fusion: `on` (one in-memory sandbox per run and host, one batch
    /// per node) or `off` (one store operation and one transfer per state);
    /// default: as the workflow file says (on unless it sets `fusion = false`).
    #[arg(long, value_parser = ["on", "off"])]
    fusion: Option<String>,
    /// Compiled-code cache for describing the components.
    #[arg(long, default_value = "databelt-data/cache")]
    cache_dir: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    /// Path of the component (.wasm).
    component: PathBuf,
    /// The input as JSON, or `@path` to read JSON from a file. Converted to
    /// the function's input type through the schema it declares.
    #[arg(long, default_value = "null")]
    input: String,
    /// The run id (default: generated).
    #[arg(long)]
    run_id: Option<String>,
    /// Show each step of the run on stderr.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Deploy a component at start: `name=path/to/component.wasm` (repeatable).
    #[arg(long, value_name = "NAME=PATH")]
    deploy: Vec<String>,
    /// Join a continuum: the placement service's URL. Enables the peer
    /// hand-offs and the step protocol (`/workflow/v1/...`); `--node-id`
    /// must name this node in the service's topology.
    #[arg(long)]
    placement: Option<String>,
    #[command(flatten)]
    host: HostArgs,
}

fn host_config(args: &HostArgs) -> Result<HostConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            HostConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => HostConfig::default(),
    };
    if let Some(dir) = &args.data_dir {
        let d = HostConfig::in_dir(dir);
        // The data dir moves the redb file and the cache; it never turns a
        // memory backend chosen in the config file into a durable one.
        if matches!(config.backend, BackendConfig::Redb { .. }) {
            config.backend = d.backend;
        }
        config.cache_dir = d.cache_dir;
    }
    if args.memory {
        config.backend = BackendConfig::Memory;
    }
    if let Some(id) = &args.node_id {
        config.node_id = id.clone();
    }
    Ok(config)
}

fn read_input(input: &str) -> Result<serde_json::Value> {
    let text = match input.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read input file {path}"))?,
        None => input.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("--input is not valid JSON: {e}"))
}

fn function_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("function");
    let name: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(64).collect();
    if name.is_empty() { "function".into() } else { name }
}

fn run(args: RunArgs) -> Result<()> {
    let input = read_input(&args.input)?;
    let host = Host::new(host_config(&args.host)?)?;
    let name = function_name(&args.component);
    let info = host.deploy_file(&name, &args.component)?;
    let bytes = json_to_postcard(&info.input_schema, &input)?;
    let outcome = host.invoke(&name, &bytes, InvokeOptions { run_id: args.run_id, ..InvokeOptions::default() })?;
    if args.verbose {
        for s in &outcome.steps {
            eprintln!("step {} {} {:?}", s.step, s.function, s.duration);
        }
        eprintln!("run {}", outcome.run_id);
    }
    let out_schema = host.function(&outcome.function)?.output_schema;
    let output = postcard_to_json(&out_schema, &outcome.output)?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let host = Host::new(host_config(&args.host)?)?;
    for spec in &args.deploy {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("--deploy takes NAME=PATH, got `{spec}`");
        };
        host.deploy_file(name, Path::new(path)).with_context(|| format!("deploying `{name}`"))?;
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!("databelt serving on http://{}", listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let mut router = databelt_host::serve::router(host.clone());
        if let Some(url) = &args.placement {
            let placement = PlacementClient::new(url, Duration::from_secs(2))?;
            let view = placement.refresh().await.with_context(|| format!("placement service at {url}"))?;
            let id = host.config().node_id.clone();
            if view.topology.node(&id).is_none() {
                bail!("node id `{id}` is not in the placement service's topology (set it with --node-id)");
            }
            let peers = PeerClient::new(Duration::from_secs(2), Duration::from_secs(60))?;
            let continuum = Continuum::new(&id, host.state().clone(), peers, placement);
            router = router.merge(StepExecutor::new(host, continuum).router());
        }
        axum::serve(listener, router).with_graceful_shutdown(shutdown).await.context("server failed")
    })
}

fn up(args: UpArgs) -> Result<()> {
    let topology = Topology::from_file(&args.scenario)?.compressed(args.time_scale);
    let mut host = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            HostConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => HostConfig { max_concurrent_instances: 16, ..HostConfig::default() },
    };
    if args.memory {
        host.backend = BackendConfig::Memory;
    }
    if args.config.is_none() {
        host.cache_dir = Some(args.data_dir.join("cache"));
    }
    let options = ClusterOptions {
        placement_listen: args.placement_listen,
        host,
        data_dir: args.data_dir,
        emulate: args.emulate.then_some(std::time::Duration::from_millis(50)),
        ..ClusterOptions::default()
    };
    let (emulate, time_scale) = (args.emulate, args.time_scale);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let cluster = Cluster::start(topology, options).await?;
        eprintln!("databelt continuum from {}", args.scenario.display());
        eprintln!("  placement  {}", cluster.placement_url);
        if emulate {
            let n = cluster.topology.nodes.len();
            eprintln!("  links      emulated: {} routes, schedule ×{time_scale}", n * n.saturating_sub(1));
        } else if time_scale > 1 {
            eprintln!("  links      loopback (not emulated), schedule ×{time_scale}");
        }
        for n in &cluster.nodes {
            let kind = cluster.topology.node(&n.id).map(|x| format!("{:?}", x.kind).to_lowercase()).unwrap_or_default();
            eprintln!("  {:<10} {:<10} http://{}", n.id, kind, n.address);
        }
        eprintln!("ready; Ctrl-C stops every node");
        let _ = tokio::signal::ctrl_c().await;
        drop(cluster);
        Ok(())
    })
}

fn ms(micros: u64) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

fn print_report(report: &RunReport, runner: &Runner) -> Result<()> {
    println!(
        "run {}  workflow {}  policy {}  fusion {}  total {} ms",
        report.run_id,
        report.workflow,
        report.policy,
        if report.fusion { "on" } else { "off" },
        ms(report.total_micros)
    );
    println!(
        "  {:<12} {:<8} {:<26} {:>10} {:>8} {:>8} {:>10}  handed on",
        "step", "node", "input found", "in bytes", "read ms", "run ms", "out bytes"
    );
    for line in &report.steps {
        let r = &line.result;
        let found = if r.inputs.is_empty() {
            "inline".to_string()
        } else {
            r.inputs
                .iter()
                .map(|i| format!("{}@{}", i.tier.name(), i.node))
                .collect::<Vec<_>>()
                .join(",")
        };
        let in_bytes: u64 = r.inputs.iter().map(|i| i.bytes).sum();
        let handed = if r.handoffs.is_empty() {
            "(final)".to_string()
        } else {
            r.handoffs
                .iter()
                .map(|h| {
                    let mut s = format!(
                        "{}→{} {} B {} ms/{} ms",
                        h.successors.join("+"),
                        h.locator.node,
                        h.bytes_moved,
                        ms(h.micros),
                        h.tmax_ms
                    );
                    if h.slo_violated {
                        s += " SLO-VIOLATED";
                    }
                    if let Some(e) = &h.push_failed {
                        s += &format!(" (push failed: {e})");
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!(
            "  {:<12} {:<8} {:<26} {:>10} {:>8} {:>8} {:>10}  {}",
            line.step,
            r.node,
            found,
            in_bytes,
            ms(r.read_micros),
            ms(r.invoke_micros),
            r.output_bytes,
            handed
        );
    }
    let reads = report.reads;
    let total_reads = reads.local + reads.locator + reads.neighbour + reads.cloud + reads.misses;
    println!(
        "  local availability {:.1}% ({} of {} reads; locator {}, neighbour {}, cloud {})  SLO violations {} of {} remote hand-offs ({} transfers)  bytes moved {}",
        report.local_availability() * 100.0,
        reads.local,
        total_reads,
        reads.locator,
        reads.neighbour,
        reads.cloud,
        report.slo_violations,
        report.remote_handoffs,
        report.transfers,
        report.bytes_moved
    );
    let k = &report.counters;
    println!(
        "  state ops: store {} ({} B), sandbox {} ({} B); remote requests {} ({} B); time in state {} ms",
        k.store_ops,
        k.store_bytes,
        k.sandbox_ops,
        k.sandbox_bytes,
        k.remote_requests,
        k.remote_bytes,
        ms(k.state_micros)
    );
    let c = &report.cleanup;
    if c.nodes.is_empty() {
        println!("  state kept (--keep-state)");
    } else {
        println!(
            "  cleaned up {} states on {} nodes{}",
            c.deleted,
            c.nodes.len(),
            if c.unreachable.is_empty() { String::new() } else { format!("; unreachable: {}", c.unreachable.join(", ")) }
        );
    }
    for (step, bytes) in &report.outputs {
        let schema = runner.output_schema(step).ok_or_else(|| anyhow!("no step `{step}`"))?;
        let mut value = postcard_to_json(schema, bytes)?;
        if abbreviate(&mut value) {
            println!("  output of {step} ({} bytes, long lists cut): {}", bytes.len(), serde_json::to_string(&value)?);
        } else {
            println!("  output of {step}: {}", serde_json::to_string(&value)?);
        }
    }
    Ok(())
}

/// Cut every list longer than 16 items to its first 8 and a note of how
/// many were left out; true when something was cut.
fn abbreviate(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Array(items) if items.len() > 16 => {
            let more = items.len() - 8;
            items.truncate(8);
            items.push(Value::String(format!("… {more} more")));
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |cut, v| abbreviate(v) | cut),
        Value::Object(map) => map.values_mut().fold(false, |cut, v| abbreviate(v) | cut),
        _ => false,
    }
}

fn invoke(args: InvokeArgs) -> Result<()> {
    let policy: Policy = args.policy.parse()?;
    let input = read_input(&args.input)?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let placement = PlacementClient::new(&args.placement, Duration::from_secs(5))?;
        let runner = Runner::load(&args.workflow, placement, Some(args.cache_dir.clone())).await?;
        let schema = runner.input_schema().ok_or_else(|| anyhow!("the workflow has no entry step"))?;
        let bytes = json_to_postcard(schema, &input).context("--input")?;
        runner.deploy().await?;
        let options = RunOptions {
            policy,
            keep_state: args.keep_state,
            fusion: args.fusion.as_deref().map(|f| f == "on"),
            ..RunOptions::default()
        };
        let mut totals = Vec::new();
        let (mut local, mut reads, mut violations, mut transfers) = (0u64, 0u64, 0u64, 0u64);
        for _ in 0..args.runs {
            let report = runner.run(bytes.clone(), &options).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_report(&report, &runner)?;
            }
            totals.push(report.total_micros);
            let r = report.reads;
            local += r.local;
            reads += r.local + r.locator + r.neighbour + r.cloud + r.misses;
            violations += report.slo_violations;
            transfers += report.remote_handoffs;
        }
        if args.runs > 1 && !args.json {
            totals.sort_unstable();
            let pct = |q: f64| totals[((totals.len() - 1) as f64 * q).round() as usize];
            println!(
                "{} runs, policy {}: end-to-end p50 {} ms, p95 {} ms; local availability {:.1}%; SLO violations {} of {} remote hand-offs",
                args.runs,
                policy,
                ms(pct(0.5)),
                ms(pct(0.95)),
                if reads == 0 { 0.0 } else { local as f64 * 100.0 / reads as f64 },
                violations,
                transfers
            );
        }
        Ok(())
    })
}

fn describe(component: &Path) -> Result<()> {
    let config = HostConfig { backend: BackendConfig::Memory, cache_dir: None, ..HostConfig::default() };
    let host = Host::new(config)?;
    let info = host.deploy_file(&function_name(component), component)?;
    println!("function: {}", info.source_name);
    println!("input:    {}", info.input_schema);
    println!("output:   {}", info.output_schema);
    Ok(())
}

fn placement(scenario: &Path, listen: SocketAddr) -> Result<()> {
    let topology = Topology::from_file(scenario)?;
    let service = PlacementService::new(topology)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("databelt placement serving {} on http://{}", scenario.display(), listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        service.serve(listener, shutdown).await.context("placement service failed")
    })
}

fn elect(scenario: &Path, request: ElectionRequest, at_ms: u64) -> Result<()> {
    let topology = Topology::from_file(scenario)?;
    let decision = databelt_placement::elect(&topology.snapshot(at_ms), &request)?;
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Serve(a) => serve(a),
        Command::Up(a) => up(a),
        Command::Invoke(a) => invoke(a),
        Command::Describe { component } => describe(&component),
        Command::Placement { scenario, listen } => placement(&scenario, listen),
        Command::Elect { scenario, producer, consumer, size, tmax_ms, at_ms } => {
            elect(&scenario, ElectionRequest { producer, consumer, size_bytes: size, tmax_ms }, at_ms)
        }
        Command::Bench(BenchCommand::Paper(a)) => bench_paper(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string().split_whitespace().collect::<Vec<_>>().join(" ")).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn bench_paper(args: PaperArgs) -> Result<()> {
    let options = paper::PaperOptions {
        scenario: args.scenario,
        workflow: args.workflow,
        out: args.out.clone(),
        time_scale: args.time_scale,
        quick: args.quick,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let started = std::time::Instant::now();
    let cases = runtime.block_on(paper::run(options))?;
    println!("{} cases in {:.0} s; results in {}", cases.len(), started.elapsed().as_secs_f64(), args.out.display());
    let summary = std::fs::read_to_string(args.out.join("summary.md")).unwrap_or_default();
    println!("{summary}");
    Ok(())
}
