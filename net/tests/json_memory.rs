//! JSON answers cost their text, not a value tree (issue 13 §4): a real
//! kv-probe component returns a 24 MiB byte array through `serve`'s
//! invoke route as JSON; the process's peak resident memory grows by a
//! stated bound. (Before, a 30 MB output took `serve` to 2 GB: each byte
//! became a 32-byte `serde_json::Value`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use databelt_host::{BackendConfig, Host};

const SIZE: usize = 24 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_is_answered_as_json_within_a_few_times_its_size() {
    let (mut config, _dir) = common::temp_config();
    config.backend = BackendConfig::Memory;
    config.limits.max_value_bytes = 32 << 20;
    config.max_memory_bytes = 256 << 20;
    let host = Host::new(config).unwrap();
    host.deploy_file("probe", &common::guest("kv_probe")).unwrap();
    host.state().set("t", "big", vec![200u8; SIZE], Default::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(databelt_net::api::serve(
        host.clone(),
        databelt_net::auth::ServerSecurity::development(),
        listener,
        std::future::pending(),
    ));
    // Warm up (compile, first instance), then measure one large answer.
    let input = serde_json::json!({"Get": {"scope": "t", "key": "small"}});
    databelt_net::tls::install_default_provider();
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/functions/probe/invoke");
    let r = http.post(&url).json(&input).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

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
