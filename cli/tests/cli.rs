//! The `databelt` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::process::Command;

use common::guest;
use serde_json::json;

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
    // The paper bench refuses empty cases before it starts a continuum.
    let out = dir.path().join("paper");
    let e = one_line_error(&["bench", "paper", "--runs", "0", "--out", out.to_str().unwrap()]);
    assert!(e.contains("--runs take positive numbers"), "{e}");
    assert!(!out.exists(), "a refused bench wrote nothing");
}

#[test]
fn describe_and_help() {
    let out = databelt().arg("describe").arg(guest("hello_counter")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("function: hello") && text.contains("struct Visit { name: String }"), "{text}");
    // Nested types are written out in full: the enum with its variants, and
    // the structs its variants carry, each with its fields.
    let out = databelt().arg("describe").arg(guest("wildfire_alarm")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "input:    Frame",
        "enum Frame { Tiles(Tiles), Report(Report) }",
        "struct Report { seed: u64, burning_tiles: Vec<u32>, hotspots: u32, max_heat: u8 }",
        "struct Hotspot { tile: u32, pixel: u32, heat: u8 }",
        "output:   Alarm",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
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
        .args([
            "elect",
            "--producer",
            "sat2",
            "--consumer",
            "sat6",
            "--size",
            "100000",
            "--tmax-ms",
            "100",
            "--scenario",
        ])
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
fn scenario_walker_writes_a_scenario_the_other_commands_read() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("walker.toml");
    let out = databelt()
        .args(["scenario", "walker", "--planes", "4", "--per-plane", "5", "--phasing", "1", "--ground-stations", "3"])
        .args(["--cloud", "--sample-ms", "60000", "--out"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("24 nodes"), "20 satellites, 3 stations, a cloud: {summary}");
    let topology = databelt_placement::Topology::from_file(&out_path).unwrap();
    assert_eq!(topology.nodes.iter().filter(|n| n.id.starts_with("sat-")).count(), 20);
    // The generated file is an ordinary scenario: elect on it.
    let elect = databelt()
        .args(["elect", "--producer", "sat-0-0", "--consumer", "sat-2-3", "--size", "1000", "--tmax-ms", "100"])
        .arg("--scenario")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(elect.status.success(), "{}", String::from_utf8_lossy(&elect.stderr));
    // Parameters no orbit has: one line naming the field, no file written.
    let bad_path = dir.path().join("bad.toml");
    let err =
        one_line_error(&["scenario", "walker", "--planes", "4", "--phasing", "7", "--out", bad_path.to_str().unwrap()]);
    assert!(err.contains("phasing"), "{err}");
    assert!(!bad_path.exists());
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, "[[shell]]\nname = \"s\"\naltitude_km = 550\n").unwrap();
    let err =
        one_line_error(&["scenario", "walker", "--spec", spec.to_str().unwrap(), "--out", bad_path.to_str().unwrap()]);
    assert!(err.contains("inclination_deg") && err.contains("spec.toml"), "{err}");
}

#[test]
fn scenario_walker_turns_a_tle_file_into_a_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("tle.toml");
    let tle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/tle/example-shell.tle");
    let out = databelt()
        .arg("scenario")
        .arg("walker")
        .arg("--tle")
        .arg(&tle)
        .args(["--ground-stations", "3", "--cloud", "--sample-ms", "60000", "--out"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("76 nodes"), "72 satellites, 3 stations, a cloud: {summary}");
    let topology = databelt_placement::Topology::from_file(&out_path).unwrap();
    let sats: Vec<_> = topology.nodes.iter().filter(|n| n.id.starts_with("example-shell-8")).collect();
    assert_eq!(sats.len(), 72);
    let elect = databelt()
        .args(["elect", "--producer", "example-shell-80000", "--consumer", "example-shell-80506", "--size", "1000"])
        .args(["--tmax-ms", "100", "--scenario"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(elect.status.success(), "{}", String::from_utf8_lossy(&elect.stderr));
    // A broken TLE: one line naming the file's lines, nothing written.
    let broken = dir.path().join("broken.tle");
    std::fs::write(&broken, "1 80000U 24001A   24101.50000000  .00000000  00000-0  00000-0 0  9998\n").unwrap();
    let bad_path = dir.path().join("bad.toml");
    let err =
        one_line_error(&["scenario", "walker", "--tle", broken.to_str().unwrap(), "--out", bad_path.to_str().unwrap()]);
    assert!(err.contains("tle_set `broken`") && err.contains("line 1"), "{err}");
    assert!(!bad_path.exists());
}

#[test]
fn placement_service_runs_from_the_cli_and_creates_its_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = databelt()
        .args(["placement", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .arg("--scenario")
        .arg(scenario())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |token: Option<&str>| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!("GET /v1/topology HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(request.as_bytes()).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let mut anonymous = None;
    for _ in 0..100 {
        anonymous = get(None);
        if anonymous.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let token_file = dir.path().join("admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let with_token = get(Some(token.trim()));
    let _ = child.kill();
    let _ = child.wait();
    let anonymous = anonymous.expect("placement service answered");
    assert!(anonymous.starts_with("HTTP/1.1 401"), "no token: {anonymous}");
    let body = with_token.unwrap();
    assert!(body.starts_with("HTTP/1.1 200") && body.contains("sat7"), "{body}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn up_starts_a_continuum_and_invoke_runs_a_workflow_across_it() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = String::new();
    for (id, kind) in [("cloud", "cloud"), ("sat1", "satellite"), ("sat2", "satellite")] {
        scenario += &format!("[[node]]\nid = \"{id}\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\n");
    }
    scenario += "[[link]]\na = \"cloud\"\nb = \"sat1\"\nlatency_ms = 30\nbandwidth_mbps = 100\n";
    scenario += "[[link]]\na = \"sat1\"\nb = \"sat2\"\nlatency_ms = 10\nbandwidth_mbps = 40\n";
    std::fs::write(dir.path().join("scenario.toml"), scenario).unwrap();
    let mut wf = String::from("name = \"demo\"\n");
    for (name, node, after) in [("a", "sat1", ""), ("b", "sat2", "\"a\""), ("c", "cloud", "\"b\"")] {
        wf += &format!(
            "[[step]]\nname = \"{name}\"\ncomponent = \"{}\"\nnode = \"{node}\"\ntmax_ms = 500\nafter = [{after}]\n",
            guest("stage").display()
        );
    }
    std::fs::write(dir.path().join("wf.toml"), wf).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut up = databelt()
        .arg("up")
        .arg(dir.path().join("scenario.toml"))
        .args(["--memory", "--placement-listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = up.stderr.take().unwrap();
    let _up = Kill(up);
    let mut banner = String::new();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner += &line;
        banner += "\n";
        if line.starts_with("ready") {
            break;
        }
    }
    assert!(banner.contains("sat2") && banner.contains("placement"), "{banner}");

    let invoke = |extra: &[&str]| {
        databelt()
            .arg("invoke")
            .arg(dir.path().join("wf.toml"))
            .args(["--placement", &format!("https://127.0.0.1:{port}"), "--ca"])
            .arg(dir.path().join("data/tls/ca.pem"))
            .arg("--token-file")
            .arg(dir.path().join("data/admin.token"))
            .arg("--cache-dir")
            .arg(common::workspace().join("target/guests/cwasm-cache"))
            .args(["--input", r#"{"trail": [], "data": [1, 2, 3], "resize": 20000}"#])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = invoke(&[]);
    let text: String = String::from_utf8_lossy(&out.stdout).chars().take(4000).collect();
    assert!(out.status.success(), "{}\n{}", text, String::from_utf8_lossy(&out.stderr));
    let row =
        |step: &str| text.lines().find(|l| l.trim_start().starts_with(&format!("{step} "))).unwrap_or("").to_string();
    assert!(row("a").contains("sat1") && row("a").contains("inline"), "{text}");
    assert!(row("b").contains("sat2") && row("b").contains("local@sat2"), "{text}");
    assert!(row("c").contains("cloud") && row("c").contains("(final)"), "{text}");
    assert!(text.contains("local availability 100.0%"), "{text}");
    let output = text.lines().find(|l| l.contains("output of c")).unwrap_or_default();
    assert!(output.contains(r#""trail":["demo-a@sat1","demo-b@sat2","demo-c@cloud"]"#), "{output}");
    assert!(
        output.len() < 1000 && output.contains("20042 bytes") && output.contains("… 19992 more"),
        "long outputs are cut: {output}"
    );

    // Two stateless runs, as JSON lines: every state was read from the cloud
    // (remotely by b on sat2, locally by c on the cloud itself).
    let out = invoke(&["--policy", "stateless", "--runs", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r["policy"], "stateless");
        assert_eq!((&r["reads"]["locator"], &r["reads"]["local"]), (&json!(1), &json!(1)));
        assert_eq!(r["steps"][1]["result"]["inputs"][0]["node"], "cloud");
        assert!(r["cleanup"]["unreachable"].as_array().unwrap().is_empty());
        // Outputs are decoded JSON, as the table view shows them, not postcard bytes.
        let out = &r["outputs"][0];
        assert!(out["step"].is_string(), "{out}");
        assert!(out["output"]["trail"].is_array(), "{out}");
    }

    let bad = invoke(&["--policy", "fastest"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("invalid value 'fastest' for '--policy") && err.contains("databelt, strict, random, stateless"),
        "{err}"
    );
}

/// A continuum member refuses to start without certificates, or with a
/// certificate for another node, and says what to do.
#[test]
fn serve_refuses_to_join_a_continuum_without_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    for args in [&["init"][..], &["issue", "sat1"]] {
        let out = databelt().arg("certs").args(args).arg("--dir").arg(&tls).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let again = databelt().args(["certs", "init", "--dir"]).arg(&tls).output().unwrap();
    assert!(!again.status.success(), "an existing CA is not replaced without --force");
    let serve = |extra: &[&str]| {
        let out = databelt()
            .args(["serve", "--memory", "--listen", "127.0.0.1:0", "--placement", "https://127.0.0.1:9"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = serve(&["--node-id", "sat1"]);
    assert!(e.contains("needs mutual TLS") && e.contains("databelt certs issue sat1"), "{e}");
    std::fs::copy(tls.join("sat1.pem"), tls.join("sat2.pem")).unwrap();
    std::fs::copy(tls.join("sat1.key"), tls.join("sat2.key")).unwrap();
    let e = serve(&["--node-id", "sat2", "--tls-dir", tls.to_str().unwrap()]);
    assert!(e.contains("is a certificate for `sat1`, not for `sat2`"), "{e}");
}

/// `serve --deploy NAME=PATH --scopes NAME=...` deploys with a scope
/// allowlist, which the API then shows; the admin token created on first
/// start opens the API.
/// A standalone `databelt serve` on a free loopback port with `args`
/// (data in `dir`), once it answers and has written its admin token:
/// the process, its port and the token.
fn serve(dir: &std::path::Path, args: &[String]) -> (std::process::Child, u16, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = databelt()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let (Ok(_), Ok(token)) =
            (std::net::TcpStream::connect(("127.0.0.1", port)), std::fs::read_to_string(dir.join("admin.token")))
            && !token.trim().is_empty()
        {
            return (child, port, token.trim().to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("databelt serve did not start");
}

#[test]
fn serve_deploys_with_scopes_and_its_own_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = vec![
        "--memory".to_string(),
        "--deploy".into(),
        format!("probe={}", guest("kv_probe").display()),
        "--scopes".into(),
        "probe=orders:rw,stock:ro".into(),
    ];
    let (mut child, port, token) = serve(dir.path(), &deploy);
    let answer = http(port, "GET", "/functions/probe", &token, "");
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""scopes":"orders:rw,stock:ro""#), "{answer}");
}

#[test]
fn run_executes_a_wasi_command_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let run = |bucket: &str| {
        databelt()
            .arg("run")
            .arg(guest("kv-main"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--", bucket])
            .output()
            .unwrap()
    };
    let out = run("cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("keyvalue_main: ok"));
    // The state is durable: the second run's first increment reads 11, and the command fails.
    let out = run("cli");
    assert!(!out.status.success());
    let out = databelt().arg("run").arg(guest("hello_counter")).args(["--memory", "--", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wasi:cli/command"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; the whole answer.
fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> String {
    http_with(port, method, path, token, "", body)
}

/// [`http`] with `extra` header lines (each ending in `\r\n`).
fn http_with(port: u16, method: &str, path: &str, token: &str, extra: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    dechunk(&text)
}

/// The answer with a chunked body joined back into one body.
fn dechunk(answer: &str) -> String {
    let Some((head, mut rest)) = answer.split_once("\r\n\r\n") else { return answer.to_string() };
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return answer.to_string();
    }
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        body.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    format!("{head}\r\n\r\n{body}")
}

#[test]
fn serve_serves_a_wasi_http_app_next_to_functions_on_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = vec![
        "--memory".to_string(),
        "--deploy".into(),
        format!("web={}", guest("kv_http").display()),
        "--deploy".into(),
        format!("probe={}", guest("kv_probe").display()),
    ];
    let (mut child, port, token) = serve(dir.path(), &deploy);
    let first = http(port, "GET", "/http/web/hits", &token, "");
    let second = http(port, "GET", "/http/web/hits", &token, "");
    let put = http(port, "PUT", "/http/web/kv/note", &token, "from-http");
    let missing = http(port, "GET", "/http/web/kv/none", &token, "");
    let apps = http(port, "GET", "/apps", &token, "");
    // A Databelt function reads what the app wrote (scope `web`).
    let probe = http(port, "POST", "/functions/probe/invoke", &token, r#"{"Get":{"scope":"web","key":"note"}}"#);
    let anonymous = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /http/web/hits HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("HTTP/1.1 200") && first.ends_with("\r\n\r\n1"), "{first}");
    assert!(second.ends_with("\r\n\r\n2"), "{second}");
    assert!(put.starts_with("HTTP/1.1 204"), "{put}");
    assert!(missing.starts_with("HTTP/1.1 404") && missing.ends_with("no such key"), "{missing}");
    assert!(apps.contains(r#"[{"name":"web"}]"#), "{apps}");
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    let bytes: Vec<String> = b"from-http".iter().map(|b| b.to_string()).collect();
    assert!(probe.contains(&format!("[{}]", bytes.join(","))), "{probe}");
}

#[test]
fn state_commands_look_at_and_fix_state_in_a_data_dir_and_on_a_running_host() {
    let dir = tempfile::tempdir().unwrap();
    let state = |args: &[&str]| {
        let out = databelt().arg("state").args(args).arg("--data-dir").arg(dir.path()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(state(&["put", "doc", "--scope", "s", "--text", r#"{"a":1}"#]).0);
    assert!(state(&["put", "hits", "--scope", "s", "--counter", "-4"]).0);
    assert!(state(&["put", "raw", "--scope", "s", "--hex", "00ff"]).0);
    let (ok, out, err) = state(&["ls", "--scope", "s"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), json!(["doc", "hits", "raw"]));
    let (_, out, _) = state(&["get", "doc", "--scope", "s"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["json"], json!({"a": 1}));
    let (_, out, _) = state(&["get", "hits", "--scope", "s"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["counter"], json!(-4));
    let (_, out, _) = state(&["get", "raw", "--scope", "s"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["hex"], json!("00ff"));
    assert!(state(&["rm", "raw", "--scope", "s"]).0);
    let (ok, _, err) = state(&["get", "raw", "--scope", "s"]);
    assert!(!ok && err.contains("no key `raw`"), "{err}");
    let (ok, _, err) = state(&["put", "x", "--scope", "databelt.txn", "--text", "x"]);
    assert!(!ok && err.contains("host's own"), "{err}");

    // The same on a running host, with its admin token.
    let (mut child, port, _) = serve(dir.path(), &[]);
    let token = dir.path().join("admin.token");
    // A standalone `serve` is plain HTTP with a token (`--no-tls`).
    let remote = |args: &[&str]| {
        let out = databelt()
            .arg("state")
            .args(args)
            .args(["--node", &format!("127.0.0.1:{port}"), "--no-tls", "--token-file"])
            .arg(&token)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let listed = remote(&["ls", "--scope", "s"]);
    let put = remote(&["put", "a/b c", "--scope", "s", "--decimal", "12"]);
    let got = remote(&["get", "a/b c", "--scope", "s"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(listed.0, "{}", listed.2);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listed.1).unwrap(), json!(["doc", "hits"]));
    assert!(put.0, "{}", put.2);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&got.1).unwrap()["json"], json!(12), "{}", got.2);
}

/// A stand-in OpenTelemetry collector on loopback: answers every OTLP/HTTP
/// post with 200 and hands over (path, content type, body).
fn otlp_collector() -> (u16, std::sync::mpsc::Receiver<(String, String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let (mut length, mut content_type) = (0usize, String::new());
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
            let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
            if tx.send((path, content_type, body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[test]
fn serve_exports_request_and_invocation_spans_over_otlp() {
    let (collector, posts) = otlp_collector();
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--memory".to_string(),
        "--node-id".into(),
        "sat7".into(),
        "--deploy".into(),
        format!("probe={}", guest("kv_probe").display()),
        "--otlp-endpoint".into(),
        format!("http://127.0.0.1:{collector}"),
    ];
    let (mut child, port, token) = serve(dir.path(), &args);
    // The caller's trace (W3C trace context): the request's span and the
    // invocation's continue it.
    let (trace_id, parent_id) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let put = http_with(
        port,
        "POST",
        "/functions/probe/invoke",
        &token,
        &format!("traceparent: 00-{trace_id}-{parent_id}-01\r\n"),
        r#"{"Set":{"scope":"s","key":"k","value":[1],"ttl_ms":null,"if_not_exists":false}}"#,
    );
    // SIGINT: serve stops gracefully and the exporter flushes on the way out.
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let exited = child.wait().unwrap();
    assert!(put.starts_with("HTTP/1.1 200"), "{put}");
    assert!(interrupted.success() && exited.success(), "{exited:?}");
    let mut exported = Vec::new();
    while let Ok((path, content_type, body)) = posts.recv_timeout(std::time::Duration::from_secs(10)) {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        exported.extend(body);
        let has = |needle: &str| exported.windows(needle.len()).any(|w| w == needle.as_bytes());
        if has("invoke") && has("state call") {
            break;
        }
    }
    let has = |needle: &str| exported.windows(needle.len()).any(|w| w == needle.as_bytes());
    // The request's span, the invocation's span with its attributes, the
    // state call as an event, and the service's name.
    for needle in ["http", "/functions/probe/invoke", "invoke", "run_id", "probe", "sat7", "state call", "databelt"] {
        assert!(has(needle), "no {needle:?} in the exported spans");
    }
    // Both spans carry the caller's trace id (OTLP sends ids as raw bytes);
    // the request's span names the caller's span as its parent.
    let bytes = |hex: &str| {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
    };
    let count = |needle: &[u8]| exported.windows(needle.len()).filter(|w| *w == needle).count();
    assert!(count(&bytes(trace_id)) >= 2, "the request and invocation spans are in the caller's trace");
    assert_eq!(count(&bytes(parent_id)), 1, "the request span's parent is the caller's span");
}
