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
