//! `databelt bench …`: benchmarks that need a whole continuum, and the
//! scheduler evaluation.

use std::path::PathBuf;

use anyhow::Result;
use databelt_bench::{paper, scheduling};

use crate::input::runtime;

/// The benchmarks.
#[derive(clap::Subcommand)]
pub enum Command {
    /// The Databelt paper's evaluation on an emulated testbed: latency per
    /// state size and throughput per concurrency, for the stateless, random,
    /// databelt and databelt+fusion policies; writes CSV, Markdown and SVG.
    Paper(PaperArgs),
    /// The scheduler evaluation: a simulated day on a generated Starlink-like
    /// shell (1,584 satellites, 100 ground stations, a cloud) with a stream
    /// of workflows, placed by the Databelt scheduler, first-fit,
    /// round-robin and random; writes a Markdown table and SVG plots.
    Scheduler(SchedulerArgs),
}

/// Flags of `databelt bench scheduler`.
#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// A 144-satellite shell, 12 stations, two simulated hours: under a
    /// minute. Without it: the full shell over a day.
    #[arg(long)]
    quick: bool,
    /// Seed of the workflow stream and the random baseline.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Results folder.
    #[arg(long, default_value = "results/scheduler")]
    out: PathBuf,
}

/// Flags of `databelt bench paper`.
#[derive(clap::Args)]
pub struct PaperArgs {
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
    /// Keep the cloud node's state in Redis (the global tier), e.g.
    /// `redis://127.0.0.1:6379/`, instead of in memory.
    #[arg(long, value_name = "URL")]
    cloud_redis: Option<String>,
    /// Only these state sizes in the latency experiment, MB, e.g. `1,50`
    /// (a case to look at again without the whole run).
    #[arg(long, value_delimiter = ',', conflicts_with = "no_latency")]
    sizes: Vec<u32>,
    /// Only these concurrency levels in the throughput experiment, e.g.
    /// `40,50`.
    #[arg(long, value_delimiter = ',', conflicts_with = "no_throughput")]
    concurrency: Vec<u32>,
    /// Only this policy (repeatable): stateless, random, strict, databelt,
    /// databelt+fusion.
    #[arg(long)]
    policy: Vec<String>,
    /// Workflows per latency case, one at a time, the same at every size.
    /// Default: 2 with `--quick`; otherwise enough for the case's lower
    /// bounds to add up to 20 s, 3 to 30 runs (30 at 1 MB, where link jitter
    /// moves single runs by several percent).
    #[arg(long, value_name = "N", conflicts_with = "no_latency")]
    runs: Option<u32>,
    /// Skip the latency experiment.
    #[arg(long)]
    no_latency: bool,
    /// Skip the throughput experiment.
    #[arg(long)]
    no_throughput: bool,
}

/// Run the command.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Paper(args) => bench_paper(args),
        Command::Scheduler(args) => bench_scheduler(args),
    }
}

fn bench_scheduler(args: SchedulerArgs) -> Result<()> {
    let mut options = if args.quick { scheduling::Options::quick() } else { scheduling::Options::full() };
    options.seed = args.seed;
    let started = std::time::Instant::now();
    let (topology, outcomes) = scheduling::run(&options)?;
    scheduling::write(&args.out, &topology, &options, &outcomes)?;
    println!("simulated in {:.0} s; results in {}", started.elapsed().as_secs_f64(), args.out.display());
    println!("{}", scheduling::markdown(&topology, &options, &outcomes));
    for o in &outcomes {
        println!("{}: {:.1} s of wall-clock time", o.policy, o.wall_s);
    }
    Ok(())
}

fn bench_paper(args: PaperArgs) -> Result<()> {
    if args.sizes.contains(&0) || args.concurrency.contains(&0) || args.runs == Some(0) {
        anyhow::bail!("--sizes, --concurrency and --runs take positive numbers");
    }
    let options = paper::PaperOptions {
        scenario: args.scenario,
        workflow: args.workflow,
        out: args.out.clone(),
        time_scale: args.time_scale,
        quick: args.quick,
        cloud_redis: args.cloud_redis,
        sizes: (!args.sizes.is_empty() || args.no_latency)
            .then(|| if args.no_latency { Vec::new() } else { args.sizes }),
        levels: (!args.concurrency.is_empty() || args.no_throughput)
            .then(|| if args.no_throughput { Vec::new() } else { args.concurrency }),
        policies: (!args.policy.is_empty()).then_some(args.policy),
        runs: args.runs,
    };
    let started = std::time::Instant::now();
    let cases = runtime()?.block_on(paper::run(options))?;
    println!("{} cases in {:.0} s; results in {}", cases.len(), started.elapsed().as_secs_f64(), args.out.display());
    let summary = std::fs::read_to_string(args.out.join("summary.md")).unwrap_or_default();
    println!("{summary}");
    Ok(())
}
