//! The `databelt` binary as a user runs it.

mod common;

use std::process::Command;

use common::guest;

fn databelt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_databelt"))
}

#[test]
fn run_keeps_state_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("hello_counter");
    for expected in 1..=2 {
        let out = databelt()
            .arg("run")
            .arg(&wasm)
            .args(["--input", r#"{"name":"ada"}"#, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["visits"], expected, "{v}");
    }
}

#[test]
fn input_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(&input, r#"{"name":"grace"}"#).unwrap();
    let out = databelt()
        .arg("run")
        .arg(guest("hello_counter"))
        .arg("--input")
        .arg(format!("@{}", input.display()))
        .arg("--memory")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello grace"));
}

fn one_line_error(args: &[&str]) -> String {
    let out = databelt().args(args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one-line error, got: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"junk").unwrap();
    let hello = guest("hello_counter");
    let hello = hello.to_str().unwrap();
    let e = one_line_error(&["run", junk.to_str().unwrap(), "--memory"]);
    assert!(e.contains("not a WebAssembly binary"), "{e}");
    let e = one_line_error(&["run", hello, "--memory", "--input", "{oops"]);
    assert!(e.contains("not valid JSON"), "{e}");
    let e = one_line_error(&["run", hello, "--memory", "--input", r#"{"wrong":1}"#]);
    assert!(e.contains("bad input"), "{e}");
    let e = one_line_error(&["run", "/no/such/file.wasm", "--memory"]);
    assert!(e.contains("cannot read"), "{e}");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "deadline_ms = -1").unwrap();
    let e = one_line_error(&["run", hello, "--config", cfg.to_str().unwrap()]);
    assert!(e.contains("invalid configuration"), "{e}");
}

#[test]
fn describe_and_help() {
    let out = databelt().arg("describe").arg(guest("hello_counter")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("function: hello") && text.contains("name"), "{text}");
    for sub in [&["--help"][..], &["run", "--help"], &["serve", "--help"], &["describe", "--help"]] {
        let out = databelt().args(sub).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

fn scenario() -> std::path::PathBuf {
    common::workspace().join("scenarios/paper-testbed.toml")
}

#[test]
fn elect_explains_its_decision() {
    let out = databelt()
        .args(["elect", "--producer", "sat2", "--consumer", "sat6", "--size", "100000", "--tmax-ms", "100", "--scenario"])
        .arg(scenario())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "propagate");
    assert_eq!(v["node"], "sat4");
    let bad = databelt()
        .args(["elect", "--producer", "sat2", "--consumer", "mars", "--size", "1", "--tmax-ms", "1", "--scenario"])
        .arg(scenario())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.starts_with("error: ") && err.contains("unknown node `mars`") && err.lines().count() == 1, "{err}");
}

#[test]
fn placement_service_runs_from_the_cli() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = databelt()
        .args(["placement", "--listen", &format!("127.0.0.1:{port}"), "--scenario"])
        .arg(scenario())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = None;
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /v1/topology HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            body = Some(text);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let body = body.expect("placement service answered");
    assert!(body.starts_with("HTTP/1.1 200") && body.contains("sat7"), "{body}");
}
