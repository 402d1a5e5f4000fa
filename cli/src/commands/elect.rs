//! `databelt elect`: elect the storage node for one state transfer.

use std::path::PathBuf;

use anyhow::Result;
use databelt_placement::{ElectionRequest, Topology};

/// Flags of `databelt elect`.
#[derive(clap::Args)]
pub struct Args {
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
    /// The consumer waits only for the bytes to land (its producer answers
    /// early), not for the acknowledgement: latency counts once in Tmig.
    #[arg(long)]
    one_way: bool,
}

/// Run the command.
pub fn run(args: Args) -> Result<()> {
    let topology = Topology::from_file(&args.scenario)?;
    let request = ElectionRequest {
        producer: args.producer,
        consumer: args.consumer,
        size_bytes: args.size,
        tmax_ms: args.tmax_ms,
        one_way: args.one_way,
    };
    let decision = databelt_placement::elect(&topology.snapshot(args.at_ms), &request)?;
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(())
}
