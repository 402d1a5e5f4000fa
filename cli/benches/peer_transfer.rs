//! Peer-protocol transfer benchmark: a 50 MB state pushed to and fetched
//! from another host over loopback, without link emulation.
//!
//! The receiver is a real `databelt serve --memory` process, so its peak RSS
//! is its own (read from /proc). Prints the p50 transfer rate of `put`
//! (acknowledged push) and `get`, and each side's peak-RSS growth as a
//! multiple of the state size. Targets: ≥ 1 GB/s; peak RSS ≤ 2× the state.
//! Reference in the same run: a raw TCP copy of the same bytes over
//! loopback (tokio, no HTTP, no store).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use databelt_net::peer::PeerClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A run id from a literal.
fn rid(id: &str) -> databelt_types::RunId {
    databelt_types::RunId::new(id).unwrap()
}

const SIZE: usize = 50 * 1000 * 1000;

fn status_kib(pid: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reset this process's peak RSS (Linux: write 5 to clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("host.toml");
    std::fs::write(&config, "[backend]\nkind = \"memory\"\n[limits]\nmax_value_bytes = 67108864\n").expect("config");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_databelt"))
        // Plain TCP, no tokens: this bench measures the data path itself;
        // the cost of mutual TLS is `cargo bench -p databelt-net --bench tls`.
        .args(["serve", "--insecure-dev-no-auth", "--listen", &addr, "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start databelt serve");
    let receiver = Receiver(child);
    let pid = receiver.0.id().to_string();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let http = {
            databelt_net::tls::install_default_provider();
            reqwest::Client::new()
        };
        for _ in 0..100 {
            if http.get(format!("http://{addr}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let client = PeerClient::new(
            &databelt_net::auth::Credentials::development(),
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .expect("client");
        let value: Vec<u8> = (0..SIZE).map(|i| (i % 253) as u8).collect();

        // Peak-RSS growth of one push, on both sides.
        let receiver_before = status_kib(&pid, "VmRSS:");
        reset_peak();
        let sender_before = status_kib("self", "VmRSS:");
        client.put(&addr, &rid("bench"), "bench", "state", value.clone(), None).await.expect("put");
        let sender_peak = status_kib("self", "VmHWM:").saturating_sub(sender_before);
        let receiver_peak = status_kib(&pid, "VmHWM:").saturating_sub(receiver_before);

        let mut puts = Vec::new();
        let mut gets = Vec::new();
        for _ in 0..7 {
            let v = value.clone();
            let t = Instant::now();
            client.put(&addr, &rid("bench"), "bench", "state", v, None).await.expect("put");
            puts.push(t.elapsed());
            let t = Instant::now();
            let got = client.get(&addr, &rid("bench"), "bench", "state").await.expect("get").expect("present");
            gets.push(t.elapsed());
            assert_eq!(got.len(), SIZE);
        }

        // Reference: raw TCP over loopback, same bytes.
        let mut raw = Vec::new();
        for _ in 0..7 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let to = listener.local_addr().expect("addr");
            let sink = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0usize;
                while n < SIZE {
                    let r = s.read(&mut buf).await.expect("read");
                    if r == 0 {
                        break;
                    }
                    n += r;
                }
                s.write_all(b"k").await.expect("ack");
            });
            let t = Instant::now();
            let mut s = tokio::net::TcpStream::connect(to).await.expect("connect");
            s.write_all(&value).await.expect("write");
            let mut ack = [0u8; 1];
            s.read_exact(&mut ack).await.expect("ack");
            raw.push(t.elapsed());
            sink.await.expect("sink");
        }

        let p50 = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let rate = |d: Duration| SIZE as f64 / d.as_secs_f64() / 1e9;
        let (put, get, reference) = (p50(puts), p50(gets), p50(raw));
        let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
        println!("== peer transfer of a 50 MB state over loopback (p50 of 7)");
        println!("reference: raw TCP copy                 {:>7.2} GB/s", rate(reference));
        println!(
            "put (pushed, stored, acknowledged)      {:>7.2} GB/s  = {:.2}× reference  [{} ≥ 1 GB/s]",
            rate(put),
            rate(put) / rate(reference),
            verdict(rate(put) >= 1.0)
        );
        println!(
            "get                                     {:>7.2} GB/s  = {:.2}× reference  [{} ≥ 1 GB/s]",
            rate(get),
            rate(get) / rate(reference),
            verdict(rate(get) >= 1.0)
        );
        let state_kib = (SIZE / 1024) as f64;
        for (side, kib) in [("sender", sender_peak), ("receiver", receiver_peak)] {
            println!(
                "peak RSS growth, {side:<8} during one push  {:>7.1} MB = {:.2}× the state  [{} ≤ 2×]",
                kib as f64 / 1024.0,
                kib as f64 / state_kib,
                verdict(kib as f64 / state_kib <= 2.0)
            );
        }
    });
    drop(receiver);
}
