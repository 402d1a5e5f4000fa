//! `databelt up`: a whole continuum on this machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use databelt_host::HostConfig;
use databelt_placement::Topology;
use databelt_testbed::{Cluster, ClusterOptions};

use databelt_net::auth::write_private;

use crate::config::HostArgs;
use crate::input::{ctrl_c, runtime};
use crate::security::ADMIN_TOKEN_FILE;

/// Where `up` keeps its nodes' data unless `--data-dir` says otherwise.
const DEFAULT_DATA_DIR: &str = crate::security::UP_DATA_DIR;

/// Flags of `databelt up`.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario file (TOML topology), e.g. scenarios/paper-testbed.toml.
    scenario: PathBuf,
    /// Address of the placement service.
    #[arg(long, default_value = "127.0.0.1:7300")]
    placement_listen: SocketAddr,
    /// Every node's host configuration; `--data-dir` (default
    /// `databelt-data/continuum`) holds one sub-directory per node.
    #[command(flatten)]
    host: HostArgs,
    /// Emulate the scenario's links between the hosts in user space (latency,
    /// jitter, bandwidth, windows), instead of plain loopback.
    #[arg(long)]
    emulate: bool,
    /// Run the scenario's schedule this many times faster (windows and
    /// period divided by it): with 12, the paper testbed's ground link moves
    /// every 5 s instead of every minute.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    time_scale: u64,
    /// DEVELOPMENT ONLY: no TLS and no authentication between or on the
    /// nodes. Without it, `up` mints an ephemeral CA, a certificate per
    /// node and an admin token, and writes the CA certificate and the token
    /// into the data directory (`tls/ca.pem`, `admin.token`), where
    /// `databelt invoke` finds them.
    #[arg(long)]
    insecure_dev_no_auth: bool,
    /// Keep the state of the nodes of kind `cloud` in Redis (the global
    /// tier), e.g. `redis://127.0.0.1:6379/`; each cloud node gets its own
    /// key prefix. The other nodes keep the backend of the host
    /// configuration.
    #[arg(long, value_name = "URL")]
    cloud_redis: Option<String>,
}

/// The host configuration a node of `up` starts from, before the config
/// file and flags: 16 instance slots per host (a machine runs them all), the
/// compiled-code cache under the data directory.
fn defaults(data_dir: &std::path::Path) -> HostConfig {
    HostConfig { max_concurrent_instances: 16, ..HostConfig::in_dir(data_dir) }
}

/// Run the command.
pub fn run(mut args: Args) -> Result<()> {
    let topology = Topology::from_file(&args.scenario)?.compressed(args.time_scale);
    let data_dir = args.host.data_dir.get_or_insert_with(|| PathBuf::from(DEFAULT_DATA_DIR)).clone();
    let host = args.host.layer(defaults(&data_dir))?;
    let options = ClusterOptions {
        placement_listen: args.placement_listen,
        host,
        data_dir: data_dir.clone(),
        emulate: args.emulate.then_some(Duration::from_millis(50)),
        insecure_development: args.insecure_dev_no_auth,
        cloud_backend: args
            .cloud_redis
            .as_ref()
            .map(|url| databelt_host::BackendConfig::Redis(databelt_host::state::RedisConfig::new(url.clone()))),
        ..ClusterOptions::default()
    };
    runtime()?.block_on(async move {
        let cluster = Cluster::start(topology, options).await?;
        eprintln!("databelt continuum from {}", args.scenario.display());
        eprintln!("  placement  {}", cluster.placement_url);
        match (&cluster.ca_pem, &cluster.admin_token) {
            (Some(ca), Some(token)) => {
                let ca_path = data_dir.join("tls/ca.pem");
                write_private(&ca_path, ca)?;
                let token_path = data_dir.join(ADMIN_TOKEN_FILE);
                write_private(&token_path, &format!("{token}\n"))?;
                eprintln!(
                    "  security   mutual TLS (ephemeral CA {}), admin token {}",
                    ca_path.display(),
                    token_path.display()
                );
            }
            _ => eprintln!("  security   NONE (--insecure-dev-no-auth): development only"),
        }
        if args.emulate {
            let n = cluster.topology.nodes.len();
            eprintln!("  links      emulated: {} routes, schedule ×{}", n * n.saturating_sub(1), args.time_scale);
        } else if args.time_scale > 1 {
            eprintln!("  links      loopback (not emulated), schedule ×{}", args.time_scale);
        }
        for n in &cluster.nodes {
            let kind = cluster.topology.node(&n.id).map(|x| format!("{:?}", x.kind).to_lowercase()).unwrap_or_default();
            eprintln!("  {:<10} {:<10} {}", n.id, kind, cluster.credentials.base_url(&n.address));
        }
        eprintln!("ready; Ctrl-C stops every node");
        ctrl_c().await;
        drop(cluster);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn up_layers_like_every_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host.toml");
        std::fs::write(&file, "max_concurrent_instances = 4\n").unwrap();
        let args = HostArgs { config: Some(file), data_dir: None, memory: true };
        let c = args.layer(defaults(dir.path())).unwrap();
        assert_eq!(c.max_concurrent_instances, 4, "the file overrides up's default of 16");
        assert_eq!(c.cache_dir, Some(dir.path().join("cache")), "the cache stays under the data dir");
        assert_eq!(c.backend, databelt_host::BackendConfig::Memory, "--memory overrides both");
        let c = HostArgs::default().layer(defaults(dir.path())).unwrap();
        assert_eq!(c.max_concurrent_instances, 16);
    }
}
