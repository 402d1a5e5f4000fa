//! A whole emulated continuum: one [`Link`] per ordered pair of nodes, in
//! front of the destination's listener, carrying the end-to-end
//! characteristics of the shortest live path between them (summed latency
//! and jitter, bottleneck bandwidth) and down while there is none. A task
//! follows the scenario's schedule (the same clock origin as the placement
//! service it is started next to), so when the ground link rotates, routes
//! through it change and routes that lose their path go down.
//!
//! Limits of the model: each route has its own transmitter, so two
//! transfers that share a physical link in the scenario do not share its
//! bandwidth here; a route's parameters change between chunks, not within
//! one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use databelt_placement::Topology;
use tokio::time::Instant;

use crate::Error;
use crate::link::{Link, LinkSpec};

/// The routes of an emulated continuum. Dropping it stops them.
pub struct Emulator {
    routes: Arc<HashMap<(String, String), Link>>,
    schedule: tokio::task::JoinHandle<()>,
}

/// The link spec of the route `from → to` at scenario time `t_ms`, or
/// `None` when there is no live path.
pub fn route_spec(topology: &Topology, t_ms: u64, from: &str, to: &str) -> Option<LinkSpec> {
    let route = topology.snapshot(t_ms).route(from, to)?;
    Some(LinkSpec {
        latency_ms: route.latency_ms,
        // The emulator draws jitter uniformly in ±jitter and never below 0.
        jitter_ms: route.jitter_ms.min(route.latency_ms),
        bandwidth_mbps: if route.bandwidth_bps.is_finite() { route.bandwidth_bps / 1e6 } else { 100_000.0 },
    })
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
        let mut routes = HashMap::new();
        for from in &topology.nodes {
            for to in &topology.nodes {
                if from.id == to.id {
                    continue;
                }
                let Some(upstream) = listen.get(&to.id) else {
                    return Err(Error::BadSpec(format!("node `{}` has no listening address", to.id)));
                };
                let spec = route_spec(topology, t0, &from.id, &to.id);
                let placeholder = LinkSpec { latency_ms: 0.0, jitter_ms: 0.0, bandwidth_mbps: 1.0 };
                let link = Link::start(SocketAddr::from(([127, 0, 0, 1], 0)), *upstream, spec.unwrap_or(placeholder))?;
                link.set_up(spec.is_some());
                routes.insert((from.id.clone(), to.id.clone()), link);
            }
        }
        let routes = Arc::new(routes);
        let (r, t) = (routes.clone(), topology.clone());
        let origin = Instant::from_std(origin);
        let schedule = tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            loop {
                tick.tick().await;
                let now = origin.elapsed().as_millis() as u64;
                for ((from, to), link) in r.iter() {
                    match route_spec(&t, now, from, to) {
                        Some(spec) => {
                            if link.spec() != spec && link.set_spec(spec).is_err() {
                                continue;
                            }
                            if !link.is_up() {
                                link.set_up(true);
                            }
                        }
                        None if link.is_up() => link.set_up(false),
                        None => {}
                    }
                }
            }
        });
        Ok(Emulator { routes, schedule })
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
}
