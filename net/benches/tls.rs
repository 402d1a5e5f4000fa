//! The cost of mutual TLS on the peer protocol, against plain TCP measured
//! in the same run (issue 13 §7): one host serves the same store twice, on a
//! plain port (development mode) and on an mTLS port; a peer client pushes
//! 50 MB values and reads 1 KB values over warm connections on each.
//!
//! `cargo bench -p databelt-net --bench tls` prints, per figure, the mTLS
//! value, the plain value and their ratio. Target: ≥ 1 GB/s for 50 MB over
//! mTLS, within 10% of plain.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use databelt_host::{BackendConfig, Host, HostConfig};
use databelt_net::auth::{Credentials, MemberSecurity, ServerSecurity, TokenFile};
use databelt_net::peer::PeerClient;
use databelt_net::tls::{Authority, Identity, MemberTls, Members, Validity};
use databelt_types::{NodeId, RunId};

const BIG: usize = 50_000_000;
const SMALL: usize = 1024;
const BIG_REPS: usize = 7;
const SMALL_REPS: usize = 2000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn serve(host: &Host, security: ServerSecurity) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(databelt_net::api::serve(host.clone(), security, listener, std::future::pending()));
    addr
}

/// (50 MB push GB/s, 50 MB fetch GB/s, 1 KB warm get p50 µs).
async fn measure(client: &PeerClient, addr: &str) -> (f64, f64, f64) {
    let run = RunId::new("bench").unwrap();
    let value: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    client.put(addr, &run, "bench", "big", value.clone(), None).await.unwrap(); // warm-up
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for _ in 0..BIG_REPS {
        let v = value.clone();
        let t = Instant::now();
        client.put(addr, &run, "bench", "big", v, None).await.unwrap();
        puts.push(BIG as f64 / t.elapsed().as_secs_f64() / 1e9);
        let t = Instant::now();
        let got = client.get(addr, &run, "bench", "big").await.unwrap().unwrap();
        gets.push(BIG as f64 / t.elapsed().as_secs_f64() / 1e9);
        assert_eq!(got.len(), BIG);
    }
    client.put(addr, &run, "bench", "small", vec![7u8; SMALL], None).await.unwrap();
    let mut small = Vec::new();
    for _ in 0..SMALL_REPS {
        let t = Instant::now();
        let got = client.get(addr, &run, "bench", "small").await.unwrap().unwrap();
        small.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(got.len(), SMALL);
    }
    (median(puts), median(gets), median(small))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = HostConfig {
            backend: BackendConfig::Memory,
            cache_dir: Some(dir.path().join("cache")),
            limits: databelt_host::StateLimits { max_value_bytes: 64 * 1024 * 1024, ..Default::default() },
            ..HostConfig::default()
        };
        let host = Host::new(config).unwrap();
        let ca = Authority::generate("bench CA", Validity::days(1)).unwrap();
        let members = Members::of(["receiver", "sender"]);
        let issue = |id: &str| {
            let pem = ca.issue(&Identity::Node(NodeId::new(id).unwrap()), Validity::days(1)).unwrap();
            MemberSecurity::new(&MemberTls::new(&pem, members.clone()).unwrap(), &TokenFile::default(), members.clone())
        };
        let plain_addr = serve(&host, ServerSecurity::development()).await;
        let tls_addr = serve(&host, issue("receiver").server).await;
        let timeout = Duration::from_secs(120);
        let plain = PeerClient::new(&Credentials::development(), Duration::from_secs(2), timeout).unwrap();
        let tls = PeerClient::new(&issue("sender").client, Duration::from_secs(2), timeout).unwrap();

        // Alternate, so drift on the machine hits both alike.
        let p1 = measure(&plain, &plain_addr).await;
        let t1 = measure(&tls, &tls_addr).await;
        let p2 = measure(&plain, &plain_addr).await;
        let t2 = measure(&tls, &tls_addr).await;
        let best = |a: (f64, f64, f64), b: (f64, f64, f64)| (a.0.max(b.0), a.1.max(b.1), a.2.min(b.2));
        let (p, t) = (best(p1, p2), best(t1, t2));
        println!("peer protocol over loopback, mTLS (rustls, ring; TLS 1.3) vs plain TCP, same host, same run");
        println!("  50 MB push   mTLS {:.2} GB/s   plain {:.2} GB/s   mTLS/plain {:.2}", t.0, p.0, t.0 / p.0);
        println!("  50 MB fetch  mTLS {:.2} GB/s   plain {:.2} GB/s   mTLS/plain {:.2}", t.1, p.1, t.1 / p.1);
        println!(
            "  1 KB get p50 (warm connection)  mTLS {:.0} µs   plain {:.0} µs   mTLS/plain {:.2}",
            t.2,
            p.2,
            t.2 / p.2
        );
        let meets = t.0 >= 1.0 && t.0 >= 0.9 * p.0;
        println!(
            "  target ≥ 1 GB/s and within 10% of plain for the 50 MB push: {}",
            if meets { "met" } else { "NOT met" }
        );
    });
}
