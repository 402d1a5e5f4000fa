//! The second documented way to build a function: `cargo component build`
//! (cargo-component 0.21, installed by `scripts/setup.sh --with-cargo-component`).
//! The resulting component must deploy and run with state like the
//! `cargo build --target wasm32-wasip2` one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::process::Command;

use databelt_host::{Host, InvokeOptions};

#[test]
fn hello_counter_built_with_cargo_component_runs() {
    let root = common::workspace();
    let version = Command::new(env!("CARGO")).args(["component", "--version"]).output();
    let installed = version.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "cargo-component is not installed; run `bash scripts/setup.sh --with-cargo-component` \
         (or `cargo install --locked cargo-component --version '^0.21'`)"
    );
    let target = root.join("target/cargo-component");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["component", "build", "--release", "-p", "hello-counter", "--target-dir"])
        .arg(&target)
        .output()
        .expect("run cargo component");
    assert!(out.status.success(), "cargo component build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let wasm = target.join("wasm32-wasip1/release/hello_counter.wasm");
    assert!(wasm.is_file(), "cargo component did not produce {}", wasm.display());

    let (config, _dir) = common::temp_config();
    let host = Host::new(config).expect("host");
    let info = host.deploy_file("hello", &wasm).expect("deploy the cargo-component build");
    assert_eq!(info.source_name, "hello");
    for expected in 1..=2i64 {
        let input = databelt_host::schema::json_to_postcard(&info.input_schema, &serde_json::json!({"name": "ada"}))
            .expect("encode input");
        let out = host.invoke("hello", &input, InvokeOptions::default()).expect("invoke");
        let reply = databelt_host::schema::postcard_to_json(&info.output_schema, &out.output).expect("decode output");
        assert_eq!(reply["visits"], expected, "{reply}");
        assert_eq!(reply["total"], expected, "{reply}");
    }
}
