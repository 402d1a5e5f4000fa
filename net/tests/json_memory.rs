//! JSON answers cost their text, not a value tree (issue 13 §4): a real
//! kv-probe component returns a 24 MiB byte array through `serve`'s
//! invoke route as JSON; the process's peak resident memory grows by a
//! stated bound. (Before, a 30 MB output took `serve` to 2 GB: each byte
//! became a 32-byte `serde_json::Value`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use databelt_host::{BackendConfig, Host};

const SIZE: usize = 24 << 20;

/// The tests measure this process's peak memory: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A host serving the kv-probe component over HTTP (values up to 32 MiB),
/// warmed up by one invocation (compiled, first instance made): the host, a
/// client, the invoke URL, and the directory to keep.
async fn warm_probe_server() -> (Host, reqwest::Client, String, tempfile::TempDir) {
    let (mut config, dir) = common::temp_config();
    config.backend = BackendConfig::Memory;
    config.limits.max_value_bytes = 32 << 20;
    config.max_memory_bytes = 256 << 20;
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &common::guest("kv_probe")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(databelt_net::api::serve(
        host.clone(),
        databelt_net::auth::ServerSecurity::development(),
        listener,
        std::future::pending(),
    ));
    databelt_net::tls::install_default_provider();
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/functions/probe/invoke");
    let warm = serde_json::json!({"Get": {"scope": "t", "key": "small"}});
    let r = http.post(&url).json(&warm).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    (host, http, url, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_is_answered_as_json_within_a_few_times_its_size() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (host, http, url, _dir) = warm_probe_server().await;
    host.state().set("t", "big", vec![200u8; SIZE], Default::default()).unwrap();

    common::reset_peak_resident();
    let before = common::resident_bytes();
    let input = serde_json::json!({"Get": {"scope": "t", "key": "big"}});
    let r = http.post(&url).json(&input).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let peak = common::peak_resident_bytes();
    let grew = peak.saturating_sub(before);
    // The answer really is the JSON of the value.
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bytes = v["output"]["Value"].as_array().expect("a byte array");
    assert_eq!(bytes.len(), SIZE);
    assert_eq!(bytes[SIZE - 1], 200);
    drop(v);
    eprintln!(
        "24 MiB output as JSON: peak resident +{} MiB ({:.1}× the value); the JSON text is {} MiB",
        grew >> 20,
        grew as f64 / SIZE as f64,
        body.len() >> 20
    );
    // Guest memory (the value read, the output), the postcard output, the
    // text (4 bytes per byte), the response body and the client's copy of
    // it: well under 16× the value, where a value tree alone took 32×+.
    assert!(grew < 16 * SIZE as u64, "grew {} MiB", grew >> 20);
}

/// JSON input is converted while it is parsed, without a value tree: a
/// 12 MiB byte array sent as 48 MiB of JSON (within the 64 MiB body limit)
/// raises the peak by a stated bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_json_input_is_converted_without_a_value_tree() {
    let _one = ONE_AT_A_TIME.lock().await;
    const N: usize = 12 << 20;
    let (host, http, url, _dir) = warm_probe_server().await;

    // {"Set":{"scope":"t","key":"big","value":[200,200,...],"ttl_ms":null,"if_not_exists":false}}
    let mut body = Vec::with_capacity(4 * N + 100);
    body.extend_from_slice(br#"{"Set":{"scope":"t","key":"big","value":["#);
    for i in 0..N {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"200");
    }
    body.extend_from_slice(br#"],"ttl_ms":null,"if_not_exists":false}}"#);
    let text = body.len();
    common::reset_peak_resident();
    let before = common::resident_bytes();
    let r = http.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let grew = common::peak_resident_bytes().saturating_sub(before);
    assert_eq!(host.state().get("t", "big").unwrap().map(|v| v.len()), Some(N));
    eprintln!(
        "{} MiB JSON input ({} MiB of bytes): peak resident +{} MiB ({:.1}× the value)",
        text >> 20,
        N >> 20,
        grew >> 20,
        grew as f64 / N as f64
    );
    // Body (4 bytes per byte) once in the server, postcard, guest memory and
    // the stored value: well under the 32× a value tree alone took.
    assert!(grew < 16 * N as u64, "grew {} MiB", grew >> 20);
}
