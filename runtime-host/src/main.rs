//! `databelt`: run Databelt functions from the command line or serve them
//! over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use databelt_host::schema::{json_to_postcard, postcard_to_json};
use databelt_host::{BackendConfig, Host, HostConfig, InvokeOptions};
use databelt_placement::service::PlacementService;
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
    let outcome = host.invoke(&name, &bytes, InvokeOptions { run_id: args.run_id, validate_input: true })?;
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
        databelt_host::serve::serve(host, listener, shutdown).await.context("server failed")
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
        Command::Describe { component } => describe(&component),
        Command::Placement { scenario, listen } => placement(&scenario, listen),
        Command::Elect { scenario, producer, consumer, size, tmax_ms, at_ms } => {
            elect(&scenario, ElectionRequest { producer, consumer, size_bytes: size, tmax_ms }, at_ms)
        }
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
