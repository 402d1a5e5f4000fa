//! Shared test support: builds the guest components once per test binary.

#![allow(dead_code)]

pub mod probe;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use databelt_host::{BackendConfig, Host, HostConfig};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Build every guest component (kv-probe, hello-counter, bench-min, stage, merge) for
/// wasm32-wasip2, once, and return the directory holding the .wasm files.
pub fn guests_dir() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace();
            let target = root.join("target/guests");
            let out = Command::new(env!("CARGO"))
                .current_dir(&root)
                .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
                .arg(&target)
                .args(["-p", "kv-probe", "-p", "hello-counter", "-p", "bench-min", "-p", "stage", "-p", "merge", "-p", "fan"])
                .args(["-p", "wildfire-preprocess", "-p", "wildfire-detect", "-p", "wildfire-alarm"])
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building guests failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(target.join("wasm32-wasip2/release"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Path of a built guest, e.g. `guest("kv_probe")`.
pub fn guest(name: &str) -> PathBuf {
    guests_dir().join(format!("{name}.wasm"))
}

/// A host config in a fresh temp dir; keep the dir alive while the host runs.
pub fn temp_config() -> (HostConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = HostConfig::in_dir(dir.path());
    // Tests share one compiled-code cache so each component compiles once.
    config.cache_dir = Some(workspace().join("target/guests/cwasm-cache"));
    (config, dir)
}

/// A host on the in-memory backend with short limits for failure tests.
pub fn memory_host() -> Host {
    let (mut config, _dir) = temp_config();
    config.backend = BackendConfig::Memory;
    config.deadline_ms = 500;
    config.max_memory_bytes = 32 * 1024 * 1024;
    Host::new(config).expect("host")
}

/// cloud — s1 — s2 — s3 (40 Mbit/s links; cloud–s1 60 ms, the others 10 ms).
pub async fn chain_cluster() -> (databelt_host::cluster::Cluster, tempfile::TempDir) {
    let mut toml = String::new();
    for id in ["cloud", "s1", "s2", "s3"] {
        let kind = if id == "cloud" { "cloud" } else { "satellite" };
        toml += &format!("[[node]]\nid = \"{id}\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\n");
    }
    for (a, b, lat) in [("cloud", "s1", 60), ("s1", "s2", 10), ("s2", "s3", 10)] {
        toml += &format!("[[link]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {lat}\njitter_ms = 1\nbandwidth_mbps = 40\n");
    }
    let (mut host, dir) = temp_config();
    host.backend = databelt_host::BackendConfig::Memory;
    host.max_concurrent_instances = 8;
    let options = databelt_host::cluster::ClusterOptions {
        placement_listen: "127.0.0.1:0".parse().unwrap(),
        host,
        data_dir: dir.path().to_path_buf(),
        peer_timeout: std::time::Duration::from_secs(10),
        advertise: None,
        emulate: None,
    };
    (databelt_host::cluster::Cluster::start(databelt_placement::Topology::from_toml(&toml).unwrap(), options).await.unwrap(), dir)
}

/// Write workflow `name` into `dir`: `header` lines, then one step per
/// (step, guest, node, tmax_ms, after); component paths are absolute.
pub fn write_workflow(
    dir: &Path,
    name: &str,
    header: &str,
    steps: &[(&str, &str, &str, f64, &[&str])],
) -> PathBuf {
    let mut text = format!("name = \"{name}\"\n{header}\n");
    for (step, guest_name, node, tmax, after) in steps {
        let after: Vec<String> = after.iter().map(|a| format!("\"{a}\"")).collect();
        text += &format!(
            "[[step]]\nname = \"{step}\"\ncomponent = \"{}\"\nnode = \"{node}\"\ntmax_ms = {tmax}\nafter = [{}]\n",
            guest(guest_name).display(),
            after.join(", ")
        );
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A runner of the workflow at `path` on `cluster`.
pub async fn runner(cluster: &databelt_host::cluster::Cluster, path: &Path) -> databelt_host::workflow::Runner {
    let placement = databelt_placement::service::PlacementClient::new(
        &cluster.placement_url,
        std::time::Duration::from_secs(2),
    )
    .unwrap();
    databelt_host::workflow::Runner::load(path, placement, Some(workspace().join("target/guests/cwasm-cache")))
        .await
        .unwrap()
}
