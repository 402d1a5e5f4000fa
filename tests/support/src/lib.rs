//! Test support for Databelt's integration tests and benchmarks: builds the
//! guest components once per test binary, makes host configurations in
//! temporary directories, writes workflow files. The kv-probe guest's
//! protocol is re-exported as [`probe`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The kv-probe guest's input and output (`databelt-probe-protocol`).
pub use databelt_probe_protocol as probe;

pub mod travel;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use databelt_host::{BackendConfig, Host, HostConfig};

/// The workspace root.
pub fn workspace() -> PathBuf {
    // This crate lives at tests/support.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Build every guest component (kv-probe, hello-counter, bench-min, stage, merge, fan, reader, the
/// wasi:keyvalue commands kv-main and kv-draft2, the HTTP app kv-http, the examples) for
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
                .args(["-p", "kv-probe", "-p", "hello-counter", "-p", "bench-min", "-p", "bench-getset", "-p", "stage", "-p", "merge", "-p", "fan", "-p", "reader"])
                .args(["-p", "kv-main", "-p", "kv-draft2", "-p", "kv-http", "-p", "kv-loop"])
                .args(["-p", "wildfire-preprocess", "-p", "wildfire-detect", "-p", "wildfire-alarm"])
                .args(["-p", "travel-hotel", "-p", "travel-flight", "-p", "travel-confirm"])
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

/// Write workflow `name` into `dir`: `header` lines, then one step per
/// (step, guest, node, tmax_ms, after); component paths are absolute.
pub fn write_workflow(dir: &Path, name: &str, header: &str, steps: &[(&str, &str, &str, f64, &[&str])]) -> PathBuf {
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

/// A field of `/proc/self/status` given in kB (`VmRSS`, `VmHWM`, ...), in
/// bytes.
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Resident memory of this process now, bytes.
pub fn resident_bytes() -> u64 {
    proc_status_bytes("VmRSS:")
}

/// Peak resident memory of this process so far, bytes.
pub fn peak_resident_bytes() -> u64 {
    proc_status_bytes("VmHWM:")
}

/// Reset this process's peak resident memory to its current one (Linux:
/// `5` to `/proc/self/clear_refs`), so that [`peak_resident_bytes`] measures
/// from now.
pub fn reset_peak_resident() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The wildfire workflow (preprocess → mark → confirm → alarm) on nodes s1,
/// s2, s3 and cloud, written to `dir/wildfire.toml` with the built
/// components; `extra` is added to every step (e.g. `max_wait_ms = 2000`).
pub fn write_wildfire(dir: &Path, extra: &str) -> PathBuf {
    let mut text = String::from("name = \"wildfire\"\n");
    for (name, component, node, after) in [
        ("preprocess", "wildfire_preprocess", "s1", ""),
        ("mark", "wildfire_detect", "s2", "preprocess"),
        ("confirm", "wildfire_detect", "s3", "mark"),
        ("alarm", "wildfire_alarm", "cloud", "confirm"),
    ] {
        let after = if after.is_empty() { String::new() } else { format!("after = [\"{after}\"]\n") };
        text += &format!(
            "[[step]]\nname = \"{name}\"\ncomponent = \"{}\"\nnode = \"{node}\"\ntmax_ms = 1000\n{after}{extra}\n",
            guest(component).display()
        );
    }
    let path = dir.join("wildfire.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The travel-booking workflow (hotel → flight → confirm, one transaction)
/// with the hotel on `nodes[0]`, the flight on `nodes[1]` and the
/// confirmation on `nodes[2]`, written to `dir/travel.toml` with the built
/// components; `transaction` is added to the `[transaction]` table (e.g.
/// `retries = 20`); with `None` the steps are plain (no transaction), for
/// comparison.
pub fn write_travel(dir: &Path, nodes: [&str; 3], transaction: Option<&str>) -> PathBuf {
    let mut text = String::from("name = \"travel\"\n");
    for ((name, component, after), node) in
        [("hotel", "travel_hotel", ""), ("flight", "travel_flight", "hotel"), ("confirm", "travel_confirm", "flight")]
            .into_iter()
            .zip(nodes)
    {
        let after = if after.is_empty() { String::new() } else { format!("after = [\"{after}\"]\n") };
        text += &format!(
            "[[step]]\nname = \"{name}\"\ncomponent = \"{}\"\nnode = \"{node}\"\ntmax_ms = 1000\n{after}\n",
            guest(component).display()
        );
    }
    if let Some(extra) = transaction {
        text += &format!("[transaction]\nsteps = [\"hotel\", \"flight\", \"confirm\"]\n{extra}\n");
    }
    let path = dir.join("travel.toml");
    std::fs::write(&path, text).unwrap();
    path
}
