//! Connection limits on a real host: slow-header (slowloris) connections are
//! closed after the header timeout, and connections over the cap are closed
//! at once; the host keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use databelt_host::{BackendConfig, Host, HostConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(config: HostConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let host = Host::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(databelt_net::api::serve(host, databelt_net::auth::ServerSecurity::development(), listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn config() -> HostConfig {
    let (mut c, _dir) = databelt_test_support::temp_config();
    c.backend = BackendConfig::Memory;
    c
}

/// Read until the server closes the connection (EOF or reset); the time it
/// took, or `None` if it stayed open for `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

async fn healthz(addr: &str) -> String {
    {
        databelt_net::tls::install_default_provider();
        reqwest::Client::new()
    }
    .get(format!("http://{addr}/healthz"))
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_header_connections_are_closed_after_the_header_timeout() {
    let (addr, stop) = start(HostConfig { header_read_timeout_ms: 1_000, max_connections: 2_100, ..config() }).await;
    let mut conns = Vec::new();
    for _ in 0..2_000 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        // Half a request: the headers never end.
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
        conns.push(s);
    }
    let started = Instant::now();
    let waits =
        futures_util::future::join_all(conns.iter_mut().map(|s| closed_within(s, Duration::from_secs(10)))).await;
    let open = waits.iter().filter(|w| w.is_none()).count();
    println!("2000 slow-header connections: all closed {:?} after the last was opened", started.elapsed());
    assert_eq!(open, 0, "{open} of 2000 slow-header connections stayed open");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after the 1 s header timeout: {:?}", started.elapsed());
    assert_eq!(healthz(&addr).await, "ok", "the host still serves");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let (addr, stop) = start(HostConfig { max_connections: 4, ..config() }).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    let took = closed_within(&mut fifth, Duration::from_secs(5)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "the fifth connection was closed at once: {took:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(healthz(&addr).await, "ok", "freed connections make room again");
    let _ = stop.send(());
}
