//! One emulated link: a TCP proxy in front of an upstream address.
//!
//! Each direction of the link has a transmitter shared by every connection
//! over it: a chunk read from one side is released to the other after it
//! has been serialised at the link's bandwidth (queueing behind earlier
//! chunks of any connection) and has then travelled the one-way latency
//! plus a uniform jitter in `[-jitter, +jitter]` (never reordering the bytes
//! of one connection). While the link is down, new connections are accepted
//! and closed at once and open ones are cut.
//!
//! A link that stands for a multi-hop route can instead be given the
//! [`Wire`]s of the physical links it crosses ([`Link::set_path`]): each
//! chunk is then serialised on every wire in turn, queueing behind the
//! chunks of every other route that crosses the same wire, so transfers
//! that share a physical link share its bandwidth. A chunk is forwarded
//! packet by packet ([`PACKET_BYTES`]), as a router does: it starts on the
//! next wire once its first packet has crossed the one before, and leaves
//! that wire no sooner than its last packet can, so each hop after the
//! bottleneck adds one packet's serialisation to a transfer, not one
//! chunk's.
//!
//! A connection reads its next chunk only when its last one is about to
//! leave the wire, so each keeps a couple of chunks queued, not a whole
//! transfer: concurrent transfers interleave, a small message waits behind
//! a few chunks of each, and a sender is held back through TCP — as on a
//! shaped link with a bounded buffer, rather than one that queues
//! everything it is given.
//!
//! Why not an existing crate: `noxious` (a Rust port of Toxiproxy) keeps its
//! toxics crate-private behind a REST server, and its bandwidth toxic, like
//! Toxiproxy's, limits each connection on its own; a satellite link's
//! bandwidth is shared by every transfer over it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Error;

/// Largest chunk moved as one unit (the emulation's packet train): each
/// draws its own jitter.
pub const CHUNK_BYTES: usize = 16 * 1024;
const CHUNK: usize = CHUNK_BYTES;

/// Unit a route forwards from one wire to the next within a chunk (an
/// Ethernet frame's payload): a router stores and forwards packets, not
/// whole chunks.
pub const PACKET_BYTES: usize = 1500;

/// A link's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// One-way latency, ms.
    pub latency_ms: f64,
    /// Jitter, ms: each chunk's delay is `latency ± jitter` (uniform).
    pub jitter_ms: f64,
    /// Bandwidth of each direction, Mbit/s (10⁶ bit/s).
    pub bandwidth_mbps: f64,
}

impl LinkSpec {
    fn check(&self) -> Result<(), Error> {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !ok(self.latency_ms) || !ok(self.jitter_ms) {
            return Err(Error::BadSpec("latency and jitter must be finite and ≥ 0".into()));
        }
        if self.jitter_ms > self.latency_ms {
            return Err(Error::BadSpec(format!(
                "jitter {} ms exceeds latency {} ms (a delay cannot be negative)",
                self.jitter_ms, self.latency_ms
            )));
        }
        if !(self.bandwidth_mbps.is_finite() && self.bandwidth_mbps > 0.0) {
            return Err(Error::BadSpec("bandwidth must be finite and > 0".into()));
        }
        Ok(())
    }

    /// Time to serialise `bytes` at this bandwidth.
    pub fn serialisation(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 * 8.0 / (self.bandwidth_mbps * 1e6))
    }

    /// The one-way latency plus `bytes` at the bandwidth, ms: when the last
    /// byte of a transfer on an idle link would arrive if every byte took the
    /// mean latency.
    pub fn mean_delivery_ms(&self, bytes: u64) -> f64 {
        self.latency_ms + bytes as f64 * 8.0 / (self.bandwidth_mbps * 1e6) * 1000.0
    }

    /// When the last byte of a `bytes` transfer on an idle link arrives, in
    /// expectation, ms after its first byte reached the link: this link's
    /// own model, in which the transfer is cut into chunks of
    /// [`CHUNK_BYTES`], chunk `i` leaves the wire when its last bit is
    /// serialised (`t_i`), travels the latency plus its own uniform draw `U_i`
    /// in `±jitter`, and is delivered in order, so the transfer completes at
    /// `latency + max_i(t_i + U_i)`. (Real links draw per packet, not per
    /// 16 KiB chunk; any protocol needs every byte, so no sender beats this
    /// on such a link.) Equals [`LinkSpec::mean_delivery_ms`] without
    /// jitter or for a single chunk; with jitter, a bulk transfer's last byte
    /// lands up to `jitter` later than that, as the chunks serialised within
    /// the jitter window before it each may be the latest.
    pub fn expected_delivery_ms(&self, bytes: u64) -> f64 {
        let mean = self.mean_delivery_ms(bytes);
        let jitter = self.jitter_ms.min(self.latency_ms);
        if bytes == 0 || jitter <= 0.0 {
            return mean;
        }
        // Lead of each chunk's departure over the last one's, ms (only those
        // within 2 × jitter of the last can be the latest).
        let per_byte_ms = 8.0 / (self.bandwidth_mbps * 1e6) * 1000.0;
        let total = bytes as f64 * per_byte_ms;
        let chunk = CHUNK_BYTES as u64;
        let chunks = bytes.div_ceil(chunk);
        let leads: Vec<f64> = (1..=chunks)
            .rev()
            .map(|i| total - (i * chunk).min(bytes) as f64 * per_byte_ms)
            .take_while(|lead| *lead < 2.0 * jitter)
            .collect();
        // E[max_i (U_i − lead_i)] = −J + ∫_{−J}^{J} (1 − Π_i F(y + lead_i)) dy,
        // F the uniform CDF on [−J, J]; midpoint rule.
        let cdf = |u: f64| ((u + jitter) / (2.0 * jitter)).clamp(0.0, 1.0);
        const STEPS: usize = 4000;
        let dy = 2.0 * jitter / STEPS as f64;
        let above: f64 = (0..STEPS)
            .map(|k| {
                let y = -jitter + (k as f64 + 0.5) * dy;
                1.0 - leads.iter().map(|lead| cdf(y + lead)).product::<f64>()
            })
            .sum::<f64>()
            * dy;
        mean + (-jitter + above)
    }
}

impl Shared {
    fn spec(&self) -> LinkSpec {
        match self.spec.lock() {
            Ok(s) => *s,
            Err(p) => *p.into_inner(),
        }
    }

    /// When a chunk of `bytes` read at `now` has left the last wire it
    /// crosses going `way`.
    fn serialise(&self, way: Way, now: Instant, bytes: usize, spec: &LinkSpec) -> Instant {
        let hops = match self.path.lock() {
            Ok(p) => p.as_ref().map(|(f, b)| match way {
                Way::Forward => f.clone(),
                Way::Backward => b.clone(),
            }),
            Err(_) => None,
        };
        match hops {
            Some(hops) if !hops.is_empty() => forward_along(&hops, now, bytes),
            _ => {
                let own = match way {
                    Way::Forward => &self.forward,
                    Way::Backward => &self.backward,
                };
                own.pass(now, spec.serialisation(bytes), now).1
            }
        }
    }
}

/// One direction of a physical link: a transmitter shared by every route
/// that crosses it. Chunks are served in the order they arrive.
#[derive(Debug)]
pub struct Wire {
    free: Mutex<Instant>,
}

impl Wire {
    /// A wire that is free now.
    pub fn new() -> Arc<Wire> {
        Arc::new(Wire { free: Mutex::new(Instant::now()) })
    }

    /// Serialise a chunk that can start on the wire at `arrives`, takes
    /// `takes` on it and cannot have left it before `not_before` (its last
    /// packet reaches the wire late); returns when it started and when its
    /// last bit left.
    fn pass(&self, arrives: Instant, takes: Duration, not_before: Instant) -> (Instant, Instant) {
        let mut free = match self.free.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        let start = (*free).max(arrives);
        *free = (start + takes).max(not_before);
        (start, *free)
    }
}

/// Serialise a chunk of `bytes`, read at `now`, on every wire of `hops` in
/// turn, forwarding it packet by packet: on each wire after the first it
/// can start once its first packet has crossed the wire before, and leave
/// once its last packet, which left the wire before last, has crossed this
/// one too. Returns when it has left the last wire.
fn forward_along(hops: &[Hop], now: Instant, bytes: usize) -> Instant {
    let packet = bytes.min(PACKET_BYTES);
    let time = |b: usize, mbps: f64| Duration::from_secs_f64(b as f64 * 8.0 / (mbps * 1e6));
    let mut before: Option<(Instant, Instant, f64)> = None;
    for h in hops {
        let (arrives, not_before) = match before {
            None => (now, now),
            Some((start, end, mbps)) => (start + time(packet, mbps), end + time(packet, h.bandwidth_mbps)),
        };
        let (start, end) = h.wire.pass(arrives, time(bytes, h.bandwidth_mbps), not_before);
        before = Some((start, end, h.bandwidth_mbps));
    }
    before.map_or(now, |(_, end, _)| end)
}

/// One wire of a route's path and its bandwidth, Mbit/s.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The physical link's direction.
    pub wire: Arc<Wire>,
    /// Its bandwidth now, Mbit/s.
    pub bandwidth_mbps: f64,
}

/// Least time a connection's queued bytes may take on the wire before it
/// reads more (see [`queue_ahead`]): below a tick of Tokio's timer the
/// pacing itself would leave a fast link idle.
const MIN_QUEUE_AHEAD: Duration = Duration::from_millis(4);

/// How far ahead of the wire a connection may queue: two chunks at the
/// link's bandwidth (one on the wire, one waiting: a lone transfer keeps the
/// link busy), at least [`MIN_QUEUE_AHEAD`]. The bottleneck's queue is then
/// bounded by the open transfers, as a shaped link's is by its buffer and
/// TCP's congestion control, instead of holding whole transfers in turn.
fn queue_ahead(spec: &LinkSpec) -> Duration {
    spec.serialisation(2 * CHUNK).max(MIN_QUEUE_AHEAD)
}

/// Which way bytes travel through a link.
#[derive(Debug, Clone, Copy)]
enum Way {
    Forward,
    Backward,
}

struct Shared {
    spec: Mutex<LinkSpec>,
    upstream: SocketAddr,
    up: AtomicBool,
    /// Bumped when the link goes down, so open connections notice.
    epoch: std::sync::atomic::AtomicU64,
    forward: Arc<Wire>,
    backward: Arc<Wire>,
    /// The wires crossed each way, when the link stands for a route.
    path: Mutex<Option<(Vec<Hop>, Vec<Hop>)>>,
    /// Bytes delivered each way (forward: toward the upstream).
    carried: [std::sync::atomic::AtomicU64; 2],
    /// Connections accepted while the link was up.
    connections: std::sync::atomic::AtomicU64,
}

/// A running emulated link; dropping it stops accepting connections.
pub struct Link {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Listen on `listen` (e.g. `127.0.0.1:0`) and forward every
    /// connection to `upstream` through the emulated link. Must be called
    /// inside a Tokio runtime.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, spec: LinkSpec) -> Result<Link, Error> {
        spec.check()?;
        let std_listener =
            std::net::TcpListener::bind(listen).map_err(|e| Error::Io(format!("listen on {listen}"), e))?;
        std_listener.set_nonblocking(true).map_err(|e| Error::Io(format!("listen on {listen}"), e))?;
        let listener = TcpListener::from_std(std_listener).map_err(|e| Error::Io(format!("listen on {listen}"), e))?;
        let addr = listener.local_addr().map_err(|e| Error::Io(format!("listen on {listen}"), e))?;
        let now = Instant::now();
        let shared = Arc::new(Shared {
            spec: Mutex::new(spec),
            upstream,
            up: AtomicBool::new(true),
            epoch: std::sync::atomic::AtomicU64::new(0),
            forward: Arc::new(Wire { free: Mutex::new(now) }),
            backward: Arc::new(Wire { free: Mutex::new(now) }),
            path: Mutex::new(None),
            carried: Default::default(),
            connections: Default::default(),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if !s.up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                s.connections.fetch_add(1, Ordering::Relaxed);
                let s = s.clone();
                tokio::spawn(async move {
                    if let Err(e) = proxy(client, s).await {
                        tracing::debug!(error = %e, "emulated connection ended");
                    }
                });
            }
        });
        Ok(Link { addr, shared, accept })
    }

    /// Bytes the link has delivered so far: toward the upstream (requests)
    /// and back (answers), every connection and byte of framing included.
    pub fn bytes_carried(&self) -> (u64, u64) {
        (self.shared.carried[0].load(Ordering::Relaxed), self.shared.carried[1].load(Ordering::Relaxed))
    }

    /// Connections opened over the link so far (while it was up).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The address to connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The link's parameters.
    pub fn spec(&self) -> LinkSpec {
        self.shared.spec()
    }

    /// Change the link's parameters; bytes read from now on use them (a
    /// route whose path changed, a link whose bandwidth varies).
    pub fn set_spec(&self, spec: LinkSpec) -> Result<(), Error> {
        spec.check()?;
        if let Ok(mut s) = self.shared.spec.lock() {
            *s = spec;
        }
        Ok(())
    }

    /// Serialise the link's bytes on these wires instead of its own
    /// transmitters: `forward` carries bytes towards the upstream,
    /// `backward` the replies, each in the order they are crossed. Every
    /// bandwidth must be finite and > 0.
    pub fn set_path(&self, forward: Vec<Hop>, backward: Vec<Hop>) -> Result<(), Error> {
        if forward.iter().chain(&backward).any(|h| !(h.bandwidth_mbps.is_finite() && h.bandwidth_mbps > 0.0)) {
            return Err(Error::BadSpec("every hop's bandwidth must be finite and > 0".into()));
        }
        if let Ok(mut p) = self.shared.path.lock() {
            *p = Some((forward, backward));
        }
        Ok(())
    }

    /// Bring the link up or down. Down: new connections are closed at once,
    /// open ones are cut.
    pub fn set_up(&self, up: bool) {
        if !up {
            self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.up.store(up, Ordering::SeqCst);
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_up(false);
    }
}

async fn proxy(client: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let upstream = TcpStream::connect(shared.upstream).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let epoch = shared.epoch.load(Ordering::SeqCst);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let a = tokio::spawn(direction(cr, uw, shared.clone(), Way::Forward, epoch));
    let b = tokio::spawn(direction(ur, cw, shared.clone(), Way::Backward, epoch));
    let _ = tokio::join!(a, b);
    Ok(())
}

/// Move bytes from `from` to `to` through one direction of the link.
async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    way: Way,
    epoch: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let alive = {
        let shared = shared.clone();
        move || shared.up.load(Ordering::SeqCst) && shared.epoch.load(Ordering::SeqCst) == epoch
    };
    let reader_alive = alive.clone();
    let reader_shared = shared.clone();
    let reader = tokio::spawn(async move {
        let mut last_release = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !reader_alive() {
                break;
            }
            buf.truncate(n);
            let spec = reader_shared.spec();
            // Serialise behind everything already queued on this direction
            // (or on every wire of the route's path).
            let sent = reader_shared.serialise(way, Instant::now(), n, &spec);
            let jitter = if spec.jitter_ms > 0.0 { rand::random_range(-spec.jitter_ms..=spec.jitter_ms) } else { 0.0 };
            let delay = Duration::from_secs_f64(((spec.latency_ms + jitter).max(0.0)) / 1000.0);
            // In order within the connection.
            let release = (sent + delay).max(last_release);
            last_release = release;
            if tx.send((release, buf)).await.is_err() {
                break;
            }
            // Read on only when this chunk is about to leave the wire: a
            // connection keeps at most `queue_ahead` of its bytes queued, so
            // the queue holds a little of every transfer (they share the
            // link, and a new connection's first bytes wait behind a few
            // chunks each, not behind whole transfers), and a sender is held
            // back through TCP as it would be by a full bottleneck.
            tokio::time::sleep_until(sent.checked_sub(queue_ahead(&spec)).unwrap_or(sent)).await;
        }
    });
    while let Some((release, buf)) = rx.recv().await {
        tokio::time::sleep_until(release).await;
        if !alive() || to.write_all(&buf).await.is_err() {
            break;
        }
        let i = match way {
            Way::Forward => 0,
            Way::Backward => 1,
        };
        shared.carried[i].fetch_add(buf.len() as u64, Ordering::Relaxed);
    }
    reader.abort();
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[test]
    fn the_expected_delivery_is_the_mean_without_jitter_or_for_one_chunk() {
        let spec = LinkSpec { latency_ms: 20.0, jitter_ms: 0.0, bandwidth_mbps: 40.0 };
        let mb = 1_000_000u64;
        assert!((spec.mean_delivery_ms(mb) - 220.0).abs() < 1e-9);
        assert!((spec.expected_delivery_ms(mb) - 220.0).abs() < 1e-9);
        let jittery = LinkSpec { jitter_ms: 9.0, ..spec };
        // One chunk draws once: its mean delay is the latency.
        assert!((jittery.expected_delivery_ms(100) - jittery.mean_delivery_ms(100)).abs() < 0.01);
        assert_eq!(jittery.expected_delivery_ms(0), jittery.mean_delivery_ms(0));
    }

    #[test]
    fn a_route_forwards_packets_so_each_later_hop_adds_one_packet_not_one_chunk() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let hop = |mbps: f64| Hop { wire: Wire::new(), bandwidth_mbps: mbps };
        let (chunk_ms, packet_ms) = (CHUNK as f64 * 8.0 / 40e3, PACKET_BYTES as f64 * 8.0 / 40e3);
        // When the last of four chunks read at once has left the last wire.
        let four_chunks = |hops: &[Hop], now: Instant| {
            let mut last = now;
            for _ in 0..4 {
                last = forward_along(hops, now, CHUNK);
            }
            last
        };
        let now = Instant::now();
        // Four chunks at once over two 40 Mbit/s hops: the last leaves the
        // second wire one packet after it left the first.
        let hops = [hop(40.0), hop(40.0)];
        let last = four_chunks(&hops, now);
        assert!((ms(last - now) - (4.0 * chunk_ms + packet_ms)).abs() < 1e-3, "{}", ms(last - now));
        // A faster hop before the bottleneck: only its first packet counts.
        let now = Instant::now();
        let hops = [hop(90.0), hop(40.0)];
        let last = four_chunks(&hops, now);
        let first_packet = PACKET_BYTES as f64 * 8.0 / 90e3;
        assert!((ms(last - now) - (first_packet + 4.0 * chunk_ms)).abs() < 1e-3, "{}", ms(last - now));
        // A faster hop after it: its last packet's time.
        let now = Instant::now();
        let hops = [hop(40.0), hop(90.0)];
        let last = four_chunks(&hops, now);
        assert!((ms(last - now) - (4.0 * chunk_ms + first_packet)).abs() < 1e-3, "{}", ms(last - now));
        // A message under a packet crosses each hop whole.
        let now = Instant::now();
        let hops = [hop(40.0), hop(40.0), hop(40.0)];
        let end = forward_along(&hops, now, 100);
        assert!((ms(end - now) - 3.0 * 100.0 * 8.0 / 40e3).abs() < 1e-3);
        // One hop: the chunk's serialisation, as on a link of its own.
        let now = Instant::now();
        assert!((ms(forward_along(&[hop(40.0)], now, CHUNK) - now) - chunk_ms).abs() < 1e-3);
    }

    #[test]
    fn chunks_sent_at_once_land_with_the_latest_of_their_draws() {
        // Serialisation time ≈ 0: n draws at once, E[max] = J (n − 1) / (n + 1).
        let spec = LinkSpec { latency_ms: 50.0, jitter_ms: 10.0, bandwidth_mbps: 1e9 };
        let bytes = 4 * CHUNK_BYTES as u64;
        let excess = spec.expected_delivery_ms(bytes) - spec.mean_delivery_ms(bytes);
        assert!((excess - 10.0 * 3.0 / 5.0).abs() < 0.01, "{excess}");
    }

    #[test]
    fn the_expected_delivery_matches_a_simulation_of_the_link_model() {
        use rand::{Rng, SeedableRng};
        let spec = LinkSpec { latency_ms: 38.0, jitter_ms: 18.0, bandwidth_mbps: 40.0 };
        let bytes = 1_095_460u64;
        let per_byte = 8.0 / 40e6 * 1000.0;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let trials = 20_000;
        let mut sum = 0.0;
        for _ in 0..trials {
            let mut last: f64 = 0.0;
            let mut sent = 0u64;
            while sent < bytes {
                sent = (sent + CHUNK_BYTES as u64).min(bytes);
                let delay = spec.latency_ms + rng.random_range(-spec.jitter_ms..=spec.jitter_ms);
                last = last.max(sent as f64 * per_byte + delay);
            }
            sum += last;
        }
        let simulated = sum / trials as f64;
        let model = spec.expected_delivery_ms(bytes);
        assert!((model - simulated).abs() < 0.2, "model {model:.2} ms, simulated {simulated:.2} ms");
        let excess = model - spec.mean_delivery_ms(bytes);
        assert!(excess > 5.0 && excess < 18.0, "a 1 MB transfer lands {excess:.1} ms after the mean");
    }

    /// Time one 4-byte `ping` takes to come back from the echo server.
    async fn round_trip(s: &mut TcpStream) -> Duration {
        let t = std::time::Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        t.elapsed()
    }

    /// Round trip of a small message: twice the one-way latency.
    #[tokio::test]
    async fn delivers_the_configured_latency_within_10_percent() {
        let upstream = echo_server().await;
        let spec = LinkSpec { latency_ms: 40.0, jitter_ms: 0.0, bandwidth_mbps: 1000.0 };
        let link = Link::start("127.0.0.1:0".parse().unwrap(), upstream, spec).unwrap();
        let mut s = TcpStream::connect(link.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut rtts = Vec::new();
        for _ in 0..5 {
            rtts.push(round_trip(&mut s).await.as_secs_f64() * 1000.0);
        }
        assert_eq!(link.connections(), 1, "one connection, counted once");
        rtts.sort_by(f64::total_cmp);
        let median = rtts[2];
        assert!((median - 80.0).abs() <= 8.0, "round trip {median:.1} ms, expected 80 ± 8: {rtts:?}");
    }

    /// 1 MB at 40 Mbit/s one way: 200 ms of serialisation (plus latency).
    #[tokio::test]
    async fn delivers_the_configured_bandwidth_within_10_percent() {
        let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = sink.local_addr().unwrap();
        let received = tokio::spawn(async move {
            let (mut s, _) = sink.accept().await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            (buf.len(), std::time::Instant::now())
        });
        let spec = LinkSpec { latency_ms: 5.0, jitter_ms: 0.0, bandwidth_mbps: 40.0 };
        let link = Link::start("127.0.0.1:0".parse().unwrap(), upstream, spec).unwrap();
        let mut s = TcpStream::connect(link.addr()).await.unwrap();
        let payload = vec![7u8; 1_000_000];
        let t = std::time::Instant::now();
        s.write_all(&payload).await.unwrap();
        s.shutdown().await.unwrap();
        let (n, at) = received.await.unwrap();
        assert_eq!(n, payload.len());
        let ms = at.duration_since(t).as_secs_f64() * 1000.0 - spec.latency_ms;
        let mbps = payload.len() as f64 * 8.0 / (ms / 1000.0) / 1e6;
        assert!((mbps - 40.0).abs() <= 4.0, "{mbps:.1} Mbit/s over {ms:.0} ms, expected 40 ± 4");
    }

    /// A busy link delays a new connection's first message by a few chunks
    /// of the transfer in progress, not by all of it.
    #[tokio::test]
    async fn a_small_message_waits_behind_a_few_chunks_of_a_transfer_not_all_of_it() {
        let upstream = echo_server().await;
        let spec = LinkSpec { latency_ms: 5.0, jitter_ms: 0.0, bandwidth_mbps: 40.0 };
        let link = Link::start("127.0.0.1:0".parse().unwrap(), upstream, spec).unwrap();
        // 4 MB: 800 ms on the wire each way.
        let mut bulk = TcpStream::connect(link.addr()).await.unwrap();
        let (mut bulk_r, mut bulk_w) = bulk.split();
        let payload = vec![1u8; 4_000_000];
        let bulk_done = async {
            let (w, r) = tokio::join!(bulk_w.write_all(&payload), async {
                let mut back = vec![0u8; payload.len()];
                bulk_r.read_exact(&mut back).await.map(|_| std::time::Instant::now())
            });
            w.unwrap();
            r.unwrap()
        };
        let small = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut s = TcpStream::connect(link.addr()).await.unwrap();
            s.set_nodelay(true).unwrap();
            (round_trip(&mut s).await, std::time::Instant::now())
        };
        let (bulk_at, (rtt, small_at)) = tokio::join!(bulk_done, small);
        // Two chunks queued ahead of it each way (~7 ms each) plus 10 ms of
        // latency; all of the transfer ahead of it would be ~700 ms.
        assert!(rtt < Duration::from_millis(120), "round trip behind a transfer: {rtt:?}");
        assert!(small_at < bulk_at, "the small message came back before the transfer");
    }

    #[tokio::test]
    async fn refuses_connections_while_down_and_cuts_open_ones() {
        let upstream = echo_server().await;
        let spec = LinkSpec { latency_ms: 1.0, jitter_ms: 0.0, bandwidth_mbps: 100.0 };
        let link = Link::start("127.0.0.1:0".parse().unwrap(), upstream, spec).unwrap();
        let mut open = TcpStream::connect(link.addr()).await.unwrap();
        open.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        open.read_exact(&mut buf).await.unwrap();
        link.set_up(false);
        assert!(!link.is_up());
        // A new connection is closed at once: reading gives EOF or an error.
        let mut fresh = TcpStream::connect(link.addr()).await.unwrap();
        let _ = fresh.write_all(b"x").await;
        let mut one = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), fresh.read(&mut one)).await.unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        // The open one is cut: its next message never comes back.
        let _ = open.write_all(b"hi").await;
        let r = tokio::time::timeout(Duration::from_secs(2), open.read(&mut one)).await.unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        // Up again: connections work.
        link.set_up(true);
        let mut again = TcpStream::connect(link.addr()).await.unwrap();
        again.write_all(b"ok").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
    }

    #[test]
    fn bad_specs_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
            let l: SocketAddr = "127.0.0.1:0".parse().unwrap();
            for spec in [
                LinkSpec { latency_ms: -1.0, jitter_ms: 0.0, bandwidth_mbps: 1.0 },
                LinkSpec { latency_ms: 1.0, jitter_ms: 2.0, bandwidth_mbps: 1.0 },
                LinkSpec { latency_ms: 1.0, jitter_ms: 0.0, bandwidth_mbps: 0.0 },
                LinkSpec { latency_ms: f64::NAN, jitter_ms: 0.0, bandwidth_mbps: 1.0 },
            ] {
                assert!(matches!(Link::start(l, up, spec), Err(Error::BadSpec(_))), "{spec:?}");
            }
        });
    }
}
