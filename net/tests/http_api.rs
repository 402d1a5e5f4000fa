//! The HTTP API on a real listener on 127.0.0.1: deploy, list, invoke with
//! JSON and postcard, and clean errors for bad requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use common::{guest, memory_host};
use serde_json::{Value, json};

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let host = memory_host();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(databelt_net::api::serve(
        host,
        databelt_net::auth::ServerSecurity::development(),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    Server { base, stop: Some(tx), task }
}

impl Server {
    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_list_invoke_over_http() {
    let srv = start().await;
    let client = {
        databelt_net::tls::install_default_provider();
        reqwest::Client::new()
    };
    let wasm = std::fs::read(guest("hello_counter")).unwrap();

    let r = client.put(format!("{}/functions/hello", srv.base)).body(wasm).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let list: Value = client.get(format!("{}/functions", srv.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["name"], "hello");
    assert!(list[0]["input"].as_str().unwrap().contains("name"), "{list}");

    for expected in 1..=2 {
        let r = client
            .post(format!("{}/functions/hello/invoke?run_id=r{expected}", srv.base))
            .json(&json!({"name": "ada"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["output"]["visits"], expected);
        assert_eq!(body["run_id"], format!("r{expected}"));
        assert_eq!(body["output"]["first_seen_run"], "r1");
    }

    // Raw postcard in and out.
    let input = postcard::to_allocvec(&("bob".to_string(),)).unwrap();
    let r = client.post(format!("{}/functions/hello/invoke", srv.base)).body(input).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-databelt-run-id"));
    let bytes = r.bytes().await.unwrap();
    let (message, visits, total, _run): (String, i64, i64, String) = postcard::from_bytes(&bytes).unwrap();
    assert!(message.contains("bob"));
    assert_eq!((visits, total), (1, 3));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_change_nothing() {
    let srv = start().await;
    let client = {
        databelt_net::tls::install_default_provider();
        reqwest::Client::new()
    };
    let err = |v: Value| v["error"].as_str().unwrap().to_string();

    let r = client.put(format!("{}/functions/junk", srv.base)).body("not wasm").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(err(r.json().await.unwrap()), "invalid-component");
    let r = client.put(format!("{}/functions/other", srv.base)).body(std::fs::read(guest("bench_min")).unwrap()).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(err(r.json().await.unwrap()), "wrong-world");
    let list: Value = client.get(format!("{}/functions", srv.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list, json!([]), "nothing deployed");

    let r = client.post(format!("{}/functions/ghost/invoke", srv.base)).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let wasm = std::fs::read(guest("hello_counter")).unwrap();
    client.put(format!("{}/functions/hello", srv.base)).body(wasm).send().await.unwrap();
    let r = client
        .post(format!("{}/functions/hello/invoke", srv.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(err(r.json().await.unwrap()), "bad-input");
    let r = client.post(format!("{}/functions/hello/invoke", srv.base)).json(&json!({"nom": 3})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client.post(format!("{}/functions/hello/invoke", srv.base)).body(vec![0xffu8; 3]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // The function's own error is a 422 with its message.
    let r =
        client.post(format!("{}/functions/hello/invoke", srv.base)).json(&json!({"name": ""})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("name must not be empty"), "{body}");

    // None of that counted a visit.
    let r = client.post(format!("{}/functions/hello/invoke", srv.base)).json(&json!({"name": "ada"})).send().await;
    let body: Value = r.unwrap().json().await.unwrap();
    assert_eq!(body["output"]["total"], 1);

    let r = client.delete(format!("{}/functions/hello", srv.base)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = client.delete(format!("{}/functions/hello", srv.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    srv.shutdown().await;
}
