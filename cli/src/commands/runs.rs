//! `databelt runs`: the durable runs started on a node.

use std::time::Duration;

use anyhow::Result;

use crate::input::runtime;
use crate::node::NodeArgs;

/// `databelt runs …`
#[derive(clap::Subcommand)]
pub enum Command {
    /// The runs that started on the node (their record is kept there).
    List(NodeArgs),
    /// One run's record: status, steps, outputs, failure.
    Show {
        /// The run id.
        run: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Wait for a run to end, then print its record; exits non-zero when the
    /// run failed or is still running at the timeout.
    Wait {
        /// The run id.
        run: String,
        /// Longest to wait, ms.
        #[arg(long, default_value_t = 300_000)]
        timeout_ms: u64,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// Run the command.
pub fn run(command: Command) -> Result<()> {
    runtime()?.block_on(async move {
        match command {
            Command::List(node) => {
                let api = node.connect(Duration::from_secs(30)).await?;
                let list = api.json(api.http.get(format!("{}/runs", api.base))).await?;
                println!("{}", serde_json::to_string_pretty(&list)?);
                Ok(())
            }
            Command::Show { run, node } => {
                let api = node.connect(Duration::from_secs(30)).await?;
                let record = api.json(api.http.get(format!("{}/runs/{run}", api.base))).await?;
                println!("{}", serde_json::to_string_pretty(&record)?);
                Ok(())
            }
            Command::Wait { run, timeout_ms, node } => wait(&node, &run, timeout_ms).await,
        }
    })
}

/// Wait for `run` on the node of `node` and print its record; an error when
/// it failed or did not end in time.
pub async fn wait(node: &NodeArgs, run: &str, timeout_ms: u64) -> Result<()> {
    let api = node.connect(Duration::from_millis(timeout_ms.min(600_000) + 10_000)).await?;
    let started = std::time::Instant::now();
    loop {
        let left = timeout_ms.saturating_sub(started.elapsed().as_millis() as u64);
        let url = format!("{}/runs/{run}?wait_ms={}", api.base, left.min(60_000));
        let record = api.json(api.http.get(url)).await?;
        let status = record["status"].as_str().unwrap_or_default().to_string();
        if status != "running" || left == 0 {
            println!("{}", serde_json::to_string_pretty(&record)?);
            match status.as_str() {
                "succeeded" => return Ok(()),
                "running" => anyhow::bail!("run `{run}` is still running after {timeout_ms} ms"),
                _ => anyhow::bail!("run `{run}` failed: {}", record["failure"]["message"].as_str().unwrap_or("")),
            }
        }
    }
}
