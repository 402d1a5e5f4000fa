//! Support for the testbed's integration tests: the shared test support,
//! and a small chain continuum.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

pub use databelt_test_support::*;

pub mod runs;

/// The chain scenario: cloud — s1 — s2 — s3 (40 Mbit/s links, ± 1 ms jitter;
/// cloud–s1 60 ms, the others 10 ms), every node on a free loopback port.
pub fn chain_topology() -> databelt_placement::Topology {
    let mut toml = String::new();
    for id in ["cloud", "s1", "s2", "s3"] {
        let kind = if id == "cloud" { "cloud" } else { "satellite" };
        toml += &format!("[[node]]\nid = \"{id}\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\n");
    }
    for (a, b, lat) in [("cloud", "s1", 60), ("s1", "s2", 10), ("s2", "s3", 10)] {
        toml +=
            &format!("[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {lat}\njitter_ms = 1\nbandwidth_mbps = 40\n");
    }
    databelt_placement::Topology::from_toml(&toml).unwrap()
}

/// The chain scenario ([`chain_topology`]) as a cluster on plain loopback.
pub async fn chain_cluster() -> (databelt_testbed::Cluster, tempfile::TempDir) {
    chain_cluster_with(None).await
}

/// [`chain_cluster`], the cloud node on `cloud_backend` when given.
pub async fn chain_cluster_with(
    cloud_backend: Option<databelt_host::BackendConfig>,
) -> (databelt_testbed::Cluster, tempfile::TempDir) {
    let (mut host, dir) = temp_config();
    host.backend = databelt_host::BackendConfig::Memory;
    host.max_concurrent_instances = 8;
    let options = databelt_testbed::ClusterOptions {
        placement_listen: "127.0.0.1:0".parse().unwrap(),
        host,
        data_dir: dir.path().to_path_buf(),
        peer_timeout: std::time::Duration::from_secs(10),
        advertise: None,
        emulate: None,
        insecure_development: false,
        replication: Default::default(),
        cloud_backend,
    };
    (databelt_testbed::Cluster::start(chain_topology(), options).await.unwrap(), dir)
}

/// The chain workflow `chain` in `dir`: stage steps a on s1, b on s3 (after
/// a), c on the cloud (after b), each with a 1 s Tmax.
pub fn chain_workflow(dir: &Path) -> std::path::PathBuf {
    write_workflow(
        dir,
        "chain",
        "",
        &[
            ("a", "stage", "s1", 1000.0, &[]),
            ("b", "stage", "s3", 1000.0, &["a"]),
            ("c", "stage", "cloud", 1000.0, &["b"]),
        ],
    )
}

/// A runner of the workflow at `path` on `cluster`, sharing the tests'
/// compiled-code cache.
pub async fn runner(cluster: &databelt_testbed::Cluster, path: &Path) -> databelt_net::workflow::Runner {
    cluster.runner(path, Some(workspace().join("target/guests/cwasm-cache"))).await.unwrap()
}

/// Per node, the runs that still have hand-off state there (nodes with none
/// left out).
pub fn live_runs(cluster: &databelt_testbed::Cluster) -> Vec<(String, Vec<databelt_types::RunId>)> {
    cluster
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.executor.live_runs().unwrap()))
        .filter(|(_, r)| !r.is_empty())
        .collect()
}

/// What a durable run may leave behind, over every node: run-log keys but
/// the workflow definitions, run records and tombstones (which expire by
/// retention), hand-off states, prepared transactions and held locks.
pub fn leftovers(cluster: &databelt_testbed::Cluster) -> Vec<String> {
    let scope = databelt_net::workflow::durable::WORKFLOW_SCOPE;
    let mut left = Vec::new();
    for n in &cluster.nodes {
        let keys = n.host.state().list_keys(scope, "", None, Some(1000)).unwrap().keys;
        left.extend(
            keys.into_iter()
                .filter(|k| !(k.starts_with("def/") || k.starts_with("run/") || k.starts_with("ended/")))
                .map(|k| format!("{}:{k}", n.id)),
        );
        left.extend(n.executor.live_runs().unwrap().into_iter().map(|r| format!("{}:state of {r}", n.id)));
        let prepared = n.host.state().prepared_transactions("").unwrap();
        left.extend(prepared.into_iter().map(|t| format!("{}:prepared transaction {t}", n.id)));
        let held = n.host.state().held_locks().unwrap();
        if held > 0 {
            left.push(format!("{}:{held} keys locked", n.id));
        }
    }
    left
}
