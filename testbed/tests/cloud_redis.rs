//! The cloud node of a continuum on Redis (the global tier), the other
//! nodes on their own backends: a workflow runs across it, and the cloud
//! node's state is in the Redis server under its own prefix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use databelt_host::state::{RedisConfig, SetOptions};
use databelt_host::{BackendConfig, schema};
use databelt_net::workflow::RunOptions;
use serde_json::json;

/// A redis-server on a free loopback port, stopped on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        let redis = Redis { child, port, _dir: dir };
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(redis);
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_runs_across_a_continuum_whose_cloud_node_keeps_state_in_redis() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let (cluster, dir) = common::chain_cluster_with(Some(BackendConfig::Redis(RedisConfig::new(url.clone())))).await;
    let path = common::write_workflow(
        dir.path(),
        "chain",
        "",
        &[
            ("a", "stage", "s1", 1000.0, &[]),
            ("b", "stage", "cloud", 1000.0, &["a"]),
            ("c", "stage", "s3", 1000.0, &["b"]),
        ],
    );
    let runner = common::runner(&cluster, &path).await;
    let input = json!({"trail": [], "data": vec![1u8; 10], "resize": 5_000});
    let input = schema::json_to_postcard(runner.input_schema().unwrap(), &input).unwrap();
    let report = runner.run(input, &RunOptions::default()).await.unwrap();
    let steps: Vec<&str> = report.steps.iter().map(|s| s.result.node.as_str()).collect();
    assert_eq!(steps, ["s1", "cloud", "s3"]);

    // The cloud node's writes land in Redis under `databelt:cloud:`; a satellite's do not.
    let cloud = cluster.node("cloud").unwrap();
    cloud.host.state().set("probe", "k", b"v".to_vec(), SetOptions::default()).unwrap();
    cluster.node("s1").unwrap().host.state().set("probe", "k", b"v".to_vec(), SetOptions::default()).unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(keys.iter().any(|k| k.starts_with("databelt:cloud:") && k.contains("probe")), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("databelt:cloud:")), "{keys:?}");
}
