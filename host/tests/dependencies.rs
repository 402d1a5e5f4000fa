//! The layering, checked: the embeddable host core pulls in nothing a CLI
//! or a network needs, and the network layer nothing of the CLI, the
//! evaluation or the testbed. Reads `cargo tree` (normal dependencies only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// The crates `package` depends on (transitively, normal dependencies).
fn dependencies(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", package])
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_free_of(package: &str, forbidden: &[&str]) {
    let deps = dependencies(package);
    assert!(deps.iter().any(|d| d == package), "cargo tree listed {package} itself: {deps:?}");
    for f in forbidden {
        assert!(!deps.iter().any(|d| d == f), "{package} depends on {f}");
    }
}

#[test]
fn the_host_core_depends_on_nothing_a_cli_or_a_network_needs() {
    assert_free_of(
        "databelt-host",
        &[
            "clap",
            "axum",
            "hyper",
            "reqwest",
            // (tokio comes with wasmtime-wasi, which runs WASI I/O on it.)
            "plotters",
            "indicatif",
            "tracing-subscriber",
            "databelt-net",
            "databelt-placement",
            "databelt-testbed",
            "databelt-bench",
        ],
    );
}

#[test]
fn the_network_layer_depends_on_no_cli_evaluation_or_testbed() {
    assert_free_of(
        "databelt-net",
        &["clap", "plotters", "indicatif", "tracing-subscriber", "databelt-testbed", "databelt-bench"],
    );
}

#[test]
fn placement_decisions_do_no_network_io() {
    assert_free_of("databelt-placement", &["axum", "hyper", "reqwest", "tokio", "databelt-host", "databelt-net"]);
}

#[test]
fn the_shared_types_depend_only_on_serde() {
    assert_free_of("databelt-types", &["wasmtime", "tokio", "axum", "reqwest", "databelt-host"]);
}
