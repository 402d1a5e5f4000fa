//! A whole emulated continuum: one [`Link`] per ordered pair of nodes, in
//! front of the destination's listener, carrying the end-to-end
//! characteristics of the shortest live path between them (summed latency
//! and jitter, bottleneck bandwidth) and down while there is none. A task
//! follows the scenario's schedule (the same clock origin as the placement
//! service it is started next to), so when the ground link rotates, routes
//! through it change and routes that lose their path go down.
//!
//! Bandwidth is that of the physical links: every direction of every
//! scenario link is one [`Wire`], and a route's chunks are serialised on
//! each wire of its current path, so transfers whose paths share a link
//! share its bandwidth (as they would in orbit), whatever node pair they are
//! between. A route's parameters and path change between chunks, not within
//! one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use databelt_placement::Topology;
use tokio::time::Instant;

use crate::Error;
use crate::link::{Hop, Link, LinkSpec, Wire};
use databelt_placement::Snapshot;

/// The routes of an emulated continuum. Dropping it stops them.
pub struct Emulator {
    routes: Arc<HashMap<(String, String), Link>>,
    wires: Arc<Wires>,
    schedule: tokio::task::JoinHandle<()>,
}

/// The link spec of the route `from → to` at scenario time `t_ms`, or
/// `None` when there is no live path.
pub fn route_spec(topology: &Topology, t_ms: u64, from: &str, to: &str) -> Option<LinkSpec> {
    spec_on(&topology.snapshot(t_ms), from, to)
}

/// [`route_spec`] on a snapshot already taken.
pub fn spec_on(snapshot: &Snapshot, from: &str, to: &str) -> Option<LinkSpec> {
    let route = snapshot.route(from, to)?;
    Some(LinkSpec {
        latency_ms: route.latency_ms,
        // The emulator draws jitter uniformly in ±jitter and never below 0.
        jitter_ms: route.jitter_ms.min(route.latency_ms),
        bandwidth_mbps: if route.bandwidth_bps.is_finite() { route.bandwidth_bps / 1e6 } else { 100_000.0 },
    })
}

/// One [`Wire`] per direction of every scenario link, by (from, to) node.
type Wires = HashMap<(String, String), Arc<Wire>>;

/// The wires the route `from → to` crosses on `snapshot`, each way (`None`
/// without a live path, or when a link is not in `wires`).
fn path_on(snapshot: &Snapshot, wires: &Wires, from: &str, to: &str) -> Option<(Vec<Hop>, Vec<Hop>)> {
    let hops = snapshot.route_hops(from, to)?;
    let mut forward = Vec::with_capacity(hops.len());
    let mut backward = Vec::with_capacity(hops.len());
    for h in &hops {
        let mbps = h.link.bandwidth_bps / 1e6;
        if !(mbps.is_finite() && mbps > 0.0) {
            return None;
        }
        forward.push(Hop { wire: wires.get(&(h.from.clone(), h.to.clone()))?.clone(), bandwidth_mbps: mbps });
        backward.push(Hop { wire: wires.get(&(h.to.clone(), h.from.clone()))?.clone(), bandwidth_mbps: mbps });
    }
    backward.reverse();
    Some((forward, backward))
}

/// Bring `link` (the route `from → to`) in line with `snapshot`.
fn follow(link: &Link, snapshot: &Snapshot, wires: &Wires, from: &str, to: &str) {
    match spec_on(snapshot, from, to) {
        Some(spec) => {
            if link.spec() != spec && link.set_spec(spec).is_err() {
                return;
            }
            if let Some((f, b)) = path_on(snapshot, wires, from, to)
                && link.set_path(f, b).is_err()
            {
                return;
            }
            if !link.is_up() {
                link.set_up(true);
            }
        }
        None if link.is_up() => link.set_up(false),
        None => {}
    }
}

impl Emulator {
    /// Start a route for every ordered pair of distinct nodes of `topology`
    /// whose listening addresses are in `listen`, and follow the schedule
    /// from `origin` (scenario time 0), re-reading it every `refresh`. Must
    /// be called inside a Tokio runtime.
    pub fn start(
        topology: &Topology,
        listen: &HashMap<String, SocketAddr>,
        origin: std::time::Instant,
        refresh: Duration,
    ) -> Result<Emulator, Error> {
        let t0 = origin.elapsed().as_millis() as u64;
        let mut wires = Wires::new();
        for l in &topology.links {
            wires.entry((l.a.clone(), l.b.clone())).or_insert_with(Wire::new);
            wires.entry((l.b.clone(), l.a.clone())).or_insert_with(Wire::new);
        }
        let wires = Arc::new(wires);
        let snapshot = topology.snapshot(t0);
        let mut routes = HashMap::new();
        for from in &topology.nodes {
            for to in &topology.nodes {
                if from.id == to.id {
                    continue;
                }
                let Some(upstream) = listen.get(&to.id) else {
                    return Err(Error::BadSpec(format!("node `{}` has no listening address", to.id)));
                };
                let placeholder = LinkSpec { latency_ms: 0.0, jitter_ms: 0.0, bandwidth_mbps: 1.0 };
                let link = Link::start(SocketAddr::from(([127, 0, 0, 1], 0)), *upstream, placeholder)?;
                link.set_up(false);
                follow(&link, &snapshot, &wires, &from.id, &to.id);
                routes.insert((from.id.clone(), to.id.clone()), link);
            }
        }
        let routes = Arc::new(routes);
        let (r, t, w) = (routes.clone(), topology.clone(), wires.clone());
        let origin = Instant::from_std(origin);
        let schedule = tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            loop {
                tick.tick().await;
                let snapshot = t.snapshot(origin.elapsed().as_millis() as u64);
                for ((from, to), link) in r.iter() {
                    follow(link, &snapshot, &w, from, to);
                }
            }
        });
        Ok(Emulator { routes, wires, schedule })
    }

    /// The wire carrying bytes from `a` to `b` over their scenario link.
    pub fn wire(&self, a: &str, b: &str) -> Option<Arc<Wire>> {
        self.wires.get(&(a.to_string(), b.to_string())).cloned()
    }

    /// Where node `from` reaches node `to`.
    pub fn route(&self, from: &str, to: &str) -> Option<&Link> {
        self.routes.get(&(from.to_string(), to.to_string()))
    }

    /// Node `from`'s address book: every other node → the address of the
    /// route to it.
    pub fn routes_from(&self, from: &str) -> HashMap<String, String> {
        self.routes
            .iter()
            .filter(|((f, _), _)| f == from)
            .map(|((_, to), link)| (to.clone(), link.addr().to_string()))
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.schedule.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CHAIN: &str = "period_ms = 400\n\
        [[node]]\nid = \"a\"\nkind = \"cloud\"\n[[node]]\nid = \"b\"\nkind = \"satellite\"\n[[node]]\nid = \"c\"\nkind = \"satellite\"\n\
        [[link]]\na = \"a\"\nb = \"b\"\nlatency_ms = 15\nbandwidth_mbps = 100\n\
        [[link]]\na = \"b\"\nb = \"c\"\nlatency_ms = 10\nbandwidth_mbps = 10\nwindows = [{ start_ms = 0, end_ms = 200 }]\n";

    #[test]
    fn route_specs_follow_the_schedule() {
        let t = Topology::from_toml(CHAIN).unwrap();
        let s = route_spec(&t, 0, "a", "c").unwrap();
        assert_eq!((s.latency_ms, s.bandwidth_mbps), (25.0, 10.0));
        assert!(route_spec(&t, 250, "a", "c").is_none(), "b–c is down in [200, 400)");
        assert!(route_spec(&t, 450, "a", "c").is_some(), "and up again in the next period");
    }

    #[tokio::test]
    async fn routes_carry_the_path_latency_and_go_down_with_their_link() {
        let t = Topology::from_toml(CHAIN).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c_addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let mut listen = HashMap::new();
        for id in ["a", "b", "c"] {
            listen.insert(id.to_string(), c_addr);
        }
        let origin = std::time::Instant::now();
        let emulator = Emulator::start(&t, &listen, origin, Duration::from_millis(10)).unwrap();
        let route = emulator.route("a", "c").unwrap();
        let mut s = tokio::net::TcpStream::connect(route.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        let started = std::time::Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        let rtt = started.elapsed().as_secs_f64() * 1000.0;
        assert!((rtt - 50.0).abs() <= 5.0, "round trip over a–b–c: {rtt:.1} ms, expected 50 ± 5");
        assert_eq!(emulator.routes_from("a").len(), 2);
        // At 200 ms the b–c window closes: the route goes down.
        tokio::time::sleep_until(Instant::from_std(origin + Duration::from_millis(240))).await;
        assert!(!emulator.route("a", "c").unwrap().is_up());
        assert!(emulator.route("a", "b").unwrap().is_up());
    }

    /// A server that answers one byte once it has read `n` bytes.
    async fn sink(n: usize) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; n];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(b"k").await;
                    }
                });
            }
        });
        addr
    }

    async fn send(addr: SocketAddr, n: usize) -> f64 {
        let started = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&vec![7u8; n]).await.unwrap();
        let mut k = [0u8; 1];
        s.read_exact(&mut k).await.unwrap();
        started.elapsed().as_secs_f64() * 1000.0
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_that_cross_one_physical_link_share_its_bandwidth() {
        // a–b fast, b–c 10 Mbit/s: the routes a→c and b→c both cross b→c.
        let t = Topology::from_toml(
            "period_ms = 100000\n\
             [[node]]\nid = \"a\"\nkind = \"cloud\"\n[[node]]\nid = \"b\"\nkind = \"satellite\"\n[[node]]\nid = \"c\"\nkind = \"satellite\"\n\
             [[link]]\na = \"a\"\nb = \"b\"\nlatency_ms = 2\nbandwidth_mbps = 1000\n\
             [[link]]\na = \"b\"\nb = \"c\"\nlatency_ms = 2\nbandwidth_mbps = 10\n",
        )
        .unwrap();
        let n = 250_000; // 200 ms at 10 Mbit/s
        let addr = sink(n).await;
        let listen: HashMap<String, SocketAddr> = ["a", "b", "c"].iter().map(|id| (id.to_string(), addr)).collect();
        let emulator = Emulator::start(&t, &listen, std::time::Instant::now(), Duration::from_millis(10)).unwrap();
        assert!(emulator.wire("b", "c").is_some() && emulator.wire("a", "c").is_none());
        let (ac, bc) = (emulator.route("a", "c").unwrap().addr(), emulator.route("b", "c").unwrap().addr());
        let alone = send(ac, n).await;
        assert!((alone - 204.0).abs() <= 25.0, "a→c alone: {alone:.0} ms, expected ≈ 204");
        let (x, y) = tokio::join!(send(ac, n), send(bc, n));
        let last = x.max(y);
        // 500 kB through one 10 Mbit/s wire: ≈ 400 ms for the later of the two.
        assert!((last - 404.0).abs() <= 45.0, "together: {x:.0} and {y:.0} ms, expected the later ≈ 404");
        // Routes over different wires do not slow each other: a→b and b→c.
        let ab = emulator.route("a", "b").unwrap().addr();
        let (x, y) = tokio::join!(send(ab, n), send(bc, n));
        assert!(x.max(y) <= 260.0, "disjoint paths: {x:.0} and {y:.0} ms");
    }
}
