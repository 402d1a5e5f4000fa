//! The peer protocol between two real hosts on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use databelt_test_support as common;

use std::time::Duration;

use databelt_host::{BackendConfig, ErrorKind, Host, HostConfig};
use databelt_net::peer::{BatchGet, BatchPut, InFlight, PeerClient, Place, RUN_ID_HEADER};

/// A run id from a literal.
fn rid(id: &str) -> databelt_types::RunId {
    databelt_types::RunId::new(id).unwrap()
}

struct Peer {
    addr: String,
    host: Host,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(config: HostConfig) -> Peer {
    let host = Host::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(databelt_net::api::serve(
        host.clone(),
        databelt_net::auth::ServerSecurity::development(),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    Peer { addr, host, stop: Some(tx), task }
}

impl Peer {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn memory_config() -> HostConfig {
    let (mut c, _dir) = common::temp_config();
    c.backend = BackendConfig::Memory;
    c.limits.max_value_bytes = 1024 * 1024;
    c
}

/// A 413 answer, or the connection broken by the receiver while the body
/// was still being sent (it stops reading once it has refused).
fn assert_refused_as_too_large(r: reqwest::Result<reqwest::Response>) {
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request() || e.is_body(), "unexpected error: {e:?}"),
    }
}

fn client() -> PeerClient {
    PeerClient::new(
        &databelt_net::auth::Credentials::development(),
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_delete_and_batches() {
    let peer = start(memory_config()).await;
    let c = client();
    let key = "frames/tile 7/ünïcode?&#";
    c.put(&peer.addr, &rid("run-1"), "wf", key, vec![1, 2, 3], None).await.unwrap();
    assert_eq!(peer.host.state().get("wf", key).unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(c.get(&peer.addr, &rid("run-1"), "wf", key).await.unwrap(), Some(vec![1, 2, 3]));
    c.delete(&peer.addr, &rid("run-1"), "wf", key).await.unwrap();
    assert_eq!(c.get(&peer.addr, &rid("run-1"), "wf", key).await.unwrap(), None);

    let entries: Vec<(String, Vec<u8>)> = (0..10).map(|i| (format!("s{i}"), vec![i as u8; 100])).collect();
    c.batch_put(&peer.addr, &rid("run-1"), BatchPut { scope: "wf".into(), entries, ttl_ms: None }).await.unwrap();
    let keys = vec!["s0".to_string(), "missing".to_string(), "s9".to_string()];
    let got = c.batch_get(&peer.addr, &rid("run-1"), &BatchGet { scope: "wf".into(), keys }).await.unwrap();
    assert_eq!(got, vec![Some(vec![0; 100]), None, Some(vec![9; 100])]);

    // TTL travels with the value.
    c.put(&peer.addr, &rid("run-1"), "wf", "short", vec![1], Some(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(c.get(&peer.addr, &rid("run-1"), "wf", "short").await.unwrap(), None);
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_4xx_and_change_nothing() {
    let peer = start(memory_config()).await;
    let http = {
        databelt_net::tls::install_default_provider();
        reqwest::Client::new()
    };
    let base = format!("http://{}", peer.addr);

    // No run id.
    let r = http.put(format!("{base}/peer/v1/state/wf/k")).body(vec![1u8]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.get(format!("{base}/peer/v1/state/wf/k")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Bad TTL header.
    let r = http
        .put(format!("{base}/peer/v1/state/wf/k"))
        .header(RUN_ID_HEADER, "r")
        .header("x-databelt-ttl-ms", "soon")
        .body(vec![1u8])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Oversized value (declared and streamed). The receiver answers 413 and
    // closes the connection without reading the rest, so a client still
    // writing may see the connection break instead of the answer.
    let r = http
        .put(format!("{base}/peer/v1/state/wf/k"))
        .header(RUN_ID_HEADER, "r")
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await;
    assert_refused_as_too_large(r);
    let chunks =
        futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 100 * 1024]))));
    let r = http
        .put(format!("{base}/peer/v1/state/wf/k"))
        .header(RUN_ID_HEADER, "r")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    assert_refused_as_too_large(r);
    // The server stops reading a refused upload and closes that connection;
    // a pooled client may not have noticed yet, so go on with a fresh one.
    let http = {
        databelt_net::tls::install_default_provider();
        reqwest::Client::new()
    };
    // Bad scope name; oversize key.
    let r = http
        .put(format!("{base}/peer/v1/state/no%20spaces/k"))
        .header(RUN_ID_HEADER, "r")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let long = "k".repeat(600);
    let r =
        http.put(format!("{base}/peer/v1/state/wf/{long}")).header(RUN_ID_HEADER, "r").body("x").send().await.unwrap();
    assert_eq!(r.status(), 413);
    // Malformed postcard batches; an over-limit batch writes nothing.
    let r = http
        .post(format!("{base}/peer/v1/batch-put"))
        .header(RUN_ID_HEADER, "r")
        .body(vec![0xffu8; 9])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A batch value whose header claims more than the value limit (1 MiB
    // here) is refused at that header: 413, nothing allocated or written.
    let mut hostile = vec![2, b'w', b'f', 1, 1, b'k', 0x80, 0x80, 0x80, 0x04];
    hostile.extend_from_slice(&[0u8; 64]);
    let r =
        http.post(format!("{base}/peer/v1/batch-put")).header(RUN_ID_HEADER, "r").body(hostile).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let body = r.text().await.unwrap();
    assert!(body.contains("value `k` is 8388608 bytes; the limit is 1048576"), "{body}");
    // A batch into the run scope without the run's capability: refused as
    // soon as its scope has arrived (the first field), nothing written.
    let run_batch = postcard::to_stdvec(&BatchPut {
        scope: databelt_net::workflow::protocol::RUN_SCOPE.into(),
        entries: vec![("out".into(), vec![1; 10])],
        ttl_ms: None,
    })
    .unwrap();
    let r =
        http.post(format!("{base}/peer/v1/batch-put")).header(RUN_ID_HEADER, "r").body(run_batch).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        peer.host
            .state()
            .list_keys(databelt_net::workflow::protocol::RUN_SCOPE, "", None, None)
            .unwrap()
            .keys
            .is_empty()
    );
    // A batch cut short is malformed.
    let whole =
        postcard::to_stdvec(&BatchPut { scope: "wf".into(), entries: vec![("k".into(), vec![1; 10])], ttl_ms: None })
            .unwrap();
    let r = http
        .post(format!("{base}/peer/v1/batch-put"))
        .header(RUN_ID_HEADER, "r")
        .body(whole[..whole.len() - 3].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let too_many =
        BatchPut { scope: "wf".into(), entries: (0..300).map(|i| (format!("b{i}"), vec![1])).collect(), ttl_ms: None };
    let e = client().batch_put(&peer.addr, &rid("r"), too_many).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");

    assert!(peer.host.state().list_keys("wf", "", None, None).unwrap().keys.is_empty(), "nothing was written");
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let e = client().put(&addr, &rid("r"), "wf", "k", vec![1], None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let e = client().get(&addr, &rid("r"), "wf", "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_put_survives_the_receiver_restarting() {
    let (config, _dir) = common::temp_config();
    let peer = start(config.clone()).await;
    let value: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    client().put(&peer.addr, &rid("run-9"), "wf", "big", value.clone(), None).await.unwrap();
    peer.stop().await;
    // The redb file is released when the last Host clone drops, which is
    // when the server's connection tasks have wound down.
    let mut again = None;
    for _ in 0..100 {
        match Host::new(config.clone()) {
            Ok(h) => {
                drop(h);
                again = Some(start(config.clone()).await);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let again = again.expect("the restarted host opens the database");
    assert_eq!(client().get(&again.addr, &rid("run-9"), "wf", "big").await.unwrap(), Some(value));
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_while_a_push_of_the_run_arrives_says_so_and_finds_the_value_once_it_landed() {
    let peer = start(memory_config()).await;
    let c = client();
    databelt_net::tls::install_default_provider();
    // A push whose body comes in two parts, the second held back.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    let put = tokio::spawn(
        reqwest::Client::new()
            .put(format!("http://{}/peer/v1/state/wf/slow", peer.addr))
            .header(RUN_ID_HEADER, "run-a")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tx.send(Ok(vec![1; 4])).await.unwrap();
    let mut told = false;
    for _ in 0..200 {
        match c.get_in_flight(&peer.addr, &rid("run-a"), Place::Store, "wf", "slow").await.unwrap() {
            InFlight::Absent { arriving: true } => {
                told = true;
                break;
            }
            other => assert_eq!(other, InFlight::Absent { arriving: false }),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(told, "a read while the run's push arrives is told so");
    // Another run's read is not, and nothing is stored yet.
    let other = c.get_in_flight(&peer.addr, &rid("run-b"), Place::Store, "wf", "slow").await.unwrap();
    assert_eq!(other, InFlight::Absent { arriving: false });
    assert_eq!(peer.host.state().get("wf", "slow").unwrap(), None);
    tx.send(Ok(vec![2; 4])).await.unwrap();
    drop(tx);
    assert!(put.await.unwrap().unwrap().status().is_success());
    let landed = c.get_in_flight(&peer.addr, &rid("run-a"), Place::Store, "wf", "slow").await.unwrap();
    assert_eq!(landed, InFlight::Found(vec![1, 1, 1, 1, 2, 2, 2, 2]));
    // Once nothing arrives, an absent value is just absent.
    let gone = c.get_in_flight(&peer.addr, &rid("run-a"), Place::Store, "wf", "other").await.unwrap();
    assert_eq!(gone, InFlight::Absent { arriving: false });
    peer.stop().await;
}

/// A batch goes out as its postcard encoding with an exact `content-length`
/// (not chunked), so the receiver reserves that much of its body budget, not
/// its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_sent_with_its_exact_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let batch = BatchPut {
        scope: "wf".into(),
        entries: vec![("a".into(), vec![1; 70_000]), ("b".into(), vec![]), ("c".into(), vec![3; 5])],
        ttl_ms: Some(9),
    };
    let expected = postcard::to_stdvec(&batch).unwrap();
    let receiver = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let head_end = loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a content-length header")
            .trim()
            .parse()
            .unwrap();
        while got.len() < head_end + length {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the body ended early");
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
        (head, got[head_end..].to_vec())
    });
    client().batch_put(&addr, &rid("r"), batch).await.unwrap();
    let (head, body) = receiver.await.unwrap();
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains(&format!("content-length: {}", expected.len())), "{head}");
    assert_eq!(body, expected, "the body is the batch's postcard encoding");
}
