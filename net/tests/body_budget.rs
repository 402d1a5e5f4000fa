//! Request bodies are bounded on a real host: a `content-length` over a
//! route's limit is refused before the body is read, and concurrent large
//! uploads share one memory budget (the rest get 503 with `retry-after`).
//! A test binary of its own, so the process's peak memory is this test's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};

use bytes::Bytes;
use databelt_host::{BackendConfig, Host, HostConfig};
use databelt_net::batch_body::BatchPutBody;
use databelt_net::peer::RUN_ID_HEADER;
use http_body::Body as _;

const MIB: u64 = 1 << 20;

use databelt_test_support::peak_resident_bytes as peak_rss;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_128_mib_uploads_share_one_budget_and_oversize_is_refused_before_reading() {
    let (mut config, _dir) = databelt_test_support::temp_config();
    config.backend = BackendConfig::Memory;
    config.max_body_bytes_in_flight = 256 * MIB;
    let host = Host::new(HostConfig { ..config }).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(databelt_net::api::serve(
        host.clone(),
        databelt_net::auth::ServerSecurity::development(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    // A content-length over the batch limit (129 MiB here): 413 at once, with
    // no body sent at all.
    let refused = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /peer/v1/batch-put HTTP/1.1\r\nhost: x\r\n{RUN_ID_HEADER}: r\r\ncontent-length: 999999999\r\n\r\n"
        )
        .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = s.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    assert!(refused.contains("\"error\":\"quota-exceeded\""), "{refused}");

    // Eight concurrent 128 MiB bodies (one buffer on the client side,
    // shared): a batch of eight values under the 16 MiB value limit, cut
    // short by its last byte, so the receiver decodes all of it and then
    // refuses it (400) without writing anything.
    let value = Bytes::from(vec![0xffu8; (16 * MIB - 64) as usize]);
    let entries: Vec<(String, Bytes)> = (0..8).map(|i| (format!("v{i}"), value.clone())).collect();
    let batch = BatchPutBody::new("wf", &entries, None);
    let mut encoded = Vec::with_capacity(batch.len() as usize);
    let mut batch = std::pin::pin!(batch);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while let std::task::Poll::Ready(Some(Ok(frame))) = batch.as_mut().poll_frame(&mut cx) {
        encoded.extend_from_slice(&frame.into_data().unwrap());
    }
    drop((entries, value));
    encoded.pop();
    let body = Bytes::from(encoded);
    let before = peak_rss();
    let http = {
        databelt_net::tls::install_default_provider();
        reqwest::Client::new()
    };
    let sends = (0..8).map(|_| {
        let (http, body) = (http.clone(), body.clone());
        async move {
            let r = http
                .post(format!("http://{addr}/peer/v1/batch-put"))
                .header(RUN_ID_HEADER, "r")
                .body(body)
                .send()
                .await?;
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_string());
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await?;
            Ok::<_, reqwest::Error>((status, retry, v["error"].as_str().unwrap_or_default().to_string()))
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let grew = peak_rss().saturating_sub(before);
    // A refused upload is answered before its body is read; the client may
    // see the 503 or, still sending, a connection the server closed.
    let read = answers.iter().filter(|a| matches!(a, Ok((400, _, k)) if k == "bad-input")).count();
    let refused = answers
        .iter()
        .filter(|a| match a {
            Ok((503, retry, kind)) => retry.as_deref() == Some("1") && kind == "unavailable",
            Err(e) => e.is_request() || e.is_body(),
            _ => false,
        })
        .count();
    println!(
        "8 × 128 MiB with a 256 MiB budget: {read} read (400, a batch cut short), {refused} refused before reading; \
         peak RSS grew {} MiB",
        grew / MIB
    );
    assert_eq!(read + refused, 8, "{answers:?}");
    assert!(read >= 1 && refused >= 1, "{answers:?}");
    // Stated bound: the budget plus 128 MiB (buffers, the decoder). Without the
    // budget all eight bodies would be held at once: over 1 GiB.
    assert!(grew <= 256 * MIB + 128 * MIB, "peak RSS grew {} MiB", grew / MIB);

    // While the budget is taken, even a small body waits: 503, retry-after,
    // the shared error body.
    let held = host.body_budget().try_reserve(256 * MIB).unwrap();
    let r = http
        .post(format!("http://{addr}/peer/v1/batch-put"))
        .header(RUN_ID_HEADER, "r")
        .body(vec![0xffu8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "unavailable", "{v}");
    drop(held);
    assert_eq!(host.body_budget().used(), 0, "every reservation came back");
    assert!(host.state().list_keys("wf", "", None, None).unwrap().keys.is_empty(), "nothing was written");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
