//! Helpers for durable-run tests: deploy a workflow file, start runs by
//! name, read their records, wait until nothing is left behind.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use databelt_net::workflow::durable::Bundle;
use databelt_placement::Workflow;
use databelt_testbed::Cluster;
use serde_json::Value;

/// The bundle of the workflow file at `path` (components named in it).
pub fn bundle(path: &Path) -> Bundle {
    let toml = std::fs::read_to_string(path).unwrap();
    let workflow = Workflow::from_toml(&toml).unwrap();
    let components = workflow.steps.iter().map(|s| (s.name.clone(), std::fs::read(&s.component).unwrap())).collect();
    Bundle { toml, components }
}

pub fn client(cluster: &Cluster) -> reqwest::Client {
    cluster.credentials.client_builder().unwrap().build().unwrap()
}

pub fn url(cluster: &Cluster, node: &str, path: &str) -> String {
    format!("{}{path}", cluster.credentials.base_url(&cluster.node(node).unwrap().address))
}

pub async fn deploy(cluster: &Cluster, node: &str, path: &Path) -> Value {
    let b = bundle(path);
    let name = Workflow::from_toml(&b.toml).unwrap().name;
    let r = client(cluster)
        .put(url(cluster, node, &format!("/workflows/{name}")))
        .body(postcard::to_stdvec(&b).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

pub async fn start(cluster: &Cluster, node: &str, workflow: &str, input: &Value, query: &str) -> (u16, Value) {
    let r = client(cluster)
        .post(url(cluster, node, &format!("/workflows/{workflow}/runs{query}")))
        .json(input)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub async fn show(cluster: &Cluster, node: &str, run: &str, wait_ms: u64) -> Value {
    let r = client(cluster).get(url(cluster, node, &format!("/runs/{run}?wait_ms={wait_ms}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A cluster of `topology` whose hosts are configured as `host`.
pub async fn cluster_with(
    topology: databelt_placement::Topology,
    host: databelt_host::HostConfig,
    dir: &Path,
) -> Cluster {
    let options = databelt_testbed::ClusterOptions {
        placement_listen: "127.0.0.1:0".parse().unwrap(),
        host,
        data_dir: dir.to_path_buf(),
        peer_timeout: Duration::from_secs(5),
        advertise: None,
        emulate: None,
        insecure_development: false,
        replication: Default::default(),
        cloud_backend: None,
    };
    Cluster::start(topology, options).await.unwrap()
}

pub async fn until_clean(cluster: &Cluster) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let left = super::leftovers(cluster);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
