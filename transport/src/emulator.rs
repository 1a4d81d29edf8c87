//! A user-space link emulator: a UDP relay that imposes bandwidth, one-way
//! delay, jitter and loss, since the test machines have no netem.
//!
//! One [`Relay`] stands for one link: clients send to the relay's address,
//! the relay forwards to the target, and replies come back the same way. Each
//! direction is shaped independently by a [`Shaper`] (pure; unit-tested
//! without sockets) and delivered in order by a timer task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// One link's character, as written in the cluster TOML:
/// `{ bandwidth_mbps = 100, delay_ms = 25, jitter_ms = 2, loss = 0.01 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// Bandwidth each way, megabits per second; 0 means unlimited.
    pub bandwidth_mbps: f64,
    /// One-way delay, milliseconds.
    pub delay_ms: f64,
    /// Jitter, milliseconds: each packet's delay varies uniformly by ±jitter
    /// (packets stay in order, as on a single path).
    pub jitter_ms: f64,
    /// Fraction of packets dropped at random, 0..1.
    pub loss: f64,
    /// Router buffer in bytes; packets beyond it are tail-dropped.
    /// Default: 100 ms worth of bandwidth, at least 64 KiB.
    pub queue_bytes: Option<u64>,
    /// Token-bucket depth in bytes (a burst sent at line rate). Default 16 KiB.
    pub burst_bytes: Option<u64>,
    /// Seed for loss and jitter, so runs are reproducible.
    pub seed: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            bandwidth_mbps: 0.0,
            delay_ms: 0.0,
            jitter_ms: 0.0,
            loss: 0.0,
            queue_bytes: None,
            burst_bytes: None,
            seed: 1,
        }
    }
}

impl LinkConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let finite = [
            self.bandwidth_mbps,
            self.delay_ms,
            self.jitter_ms,
            self.loss,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite || self.bandwidth_mbps < 0.0 || self.delay_ms < 0.0 || self.jitter_ms < 0.0 {
            return Err(Error::Config(format!(
                "link: negative or non-finite value in {self:?}"
            )));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(Error::Config(format!(
                "link: loss {} not in [0, 1)",
                self.loss
            )));
        }
        if self.delay_ms > 60_000.0 || self.jitter_ms > 60_000.0 {
            return Err(Error::Config(
                "link: delay and jitter must be under 60 s".into(),
            ));
        }
        Ok(())
    }

    /// Bandwidth in bytes per second (`None` if unlimited).
    pub fn bytes_per_s(&self) -> Option<f64> {
        (self.bandwidth_mbps > 0.0).then(|| self.bandwidth_mbps * 1e6 / 8.0)
    }

    /// The matching transport tuning: bandwidth and RTT (twice the one-way delay).
    pub fn tuning(&self) -> crate::tuning::LinkTuning {
        let mut t = crate::tuning::LinkTuning::default();
        if let Some(b) = self.bytes_per_s() {
            t.bandwidth_bytes_per_s = b as u64;
        }
        t.rtt = Duration::from_secs_f64((2.0 * self.delay_ms + self.jitter_ms).max(0.1) / 1000.0);
        t
    }
}

/// Decides, per packet, whether it is dropped and when it arrives. Pure:
/// time comes in as an argument.
#[derive(Debug)]
pub struct Shaper {
    rate: Option<f64>,
    burst_s: f64,
    queue_s: f64,
    delay: Duration,
    jitter: f64,
    loss: f64,
    rng: StdRng,
    /// When the (virtual) transmitter finishes what it has accepted so far.
    next_free: Option<Instant>,
    last_arrival: Option<Instant>,
}

/// What the shaper did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver at this instant.
    Deliver(Instant),
    /// Dropped at random (loss).
    Lost,
    /// Dropped because the queue was full.
    QueueFull,
}

impl Shaper {
    /// A shaper for one direction of `config`, seeded with `seed`.
    pub fn new(config: &LinkConfig, seed: u64) -> Self {
        let rate = config.bytes_per_s();
        let queue = config
            .queue_bytes
            .unwrap_or_else(|| rate.map_or(0, |r| (r * 0.1) as u64).max(64 * 1024));
        let burst = config.burst_bytes.unwrap_or(16 * 1024);
        Self {
            rate,
            burst_s: rate.map_or(0.0, |r| burst as f64 / r),
            queue_s: rate.map_or(f64::INFINITY, |r| queue as f64 / r),
            delay: Duration::from_secs_f64(config.delay_ms / 1000.0),
            jitter: config.jitter_ms / 1000.0,
            loss: config.loss,
            rng: StdRng::seed_from_u64(seed),
            next_free: None,
            last_arrival: None,
        }
    }

    /// Decides the fate of a `len`-byte packet offered at `now`.
    pub fn offer(&mut self, now: Instant, len: usize) -> Verdict {
        if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
            return Verdict::Lost;
        }
        let depart = match self.rate {
            None => now,
            Some(rate) => {
                // Token bucket as virtual time: an idle link banks up to `burst` bytes.
                let floor = now
                    .checked_sub(Duration::from_secs_f64(self.burst_s))
                    .unwrap_or(now);
                let start = self.next_free.map_or(floor, |f| f.max(floor));
                if start.saturating_duration_since(now).as_secs_f64() > self.queue_s {
                    return Verdict::QueueFull;
                }
                let done = start + Duration::from_secs_f64(len as f64 / rate);
                self.next_free = Some(done);
                done.max(now)
            }
        };
        let mut arrival = depart + self.delay;
        if self.jitter > 0.0 {
            let j = self.rng.random_range(-self.jitter..=self.jitter);
            arrival = if j >= 0.0 {
                arrival + Duration::from_secs_f64(j)
            } else {
                arrival
                    .checked_sub(Duration::from_secs_f64(-j))
                    .unwrap_or(depart)
                    .max(depart)
            };
        }
        // One path: no reordering.
        if let Some(last) = self.last_arrival {
            arrival = arrival.max(last);
        }
        self.last_arrival = Some(arrival);
        Verdict::Deliver(arrival)
    }
}

/// Packet counters of a relay (both directions together).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Packets delivered.
    pub delivered: AtomicU64,
    /// Bytes delivered.
    pub delivered_bytes: AtomicU64,
    /// Packets dropped by random loss.
    pub lost: AtomicU64,
    /// Packets dropped because the queue was full.
    pub queue_drops: AtomicU64,
}

/// A running relay for one link. Dropping it stops the relay.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    stats: Arc<RelayStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let io = |e| Error::io(addr.to_string(), e);
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )
    .map_err(io)?;
    // Losing packets in the kernel would be loss the config did not ask for.
    let _ = sock.set_recv_buffer_size(16 << 20);
    let _ = sock.set_send_buffer_size(16 << 20);
    sock.set_nonblocking(true).map_err(io)?;
    sock.bind(&addr.into()).map_err(io)?;
    UdpSocket::from_std(sock.into()).map_err(io)
}

/// A packet due at an instant, with where it goes (`R`).
type Packet<R> = (Instant, Vec<u8>, R);

/// Packets shaped but not yet delivered, per direction. Bandwidth and the
/// queue limit bound it in practice; this bounds it when bandwidth is unlimited.
const DELAY_LINE: usize = 1 << 16;

impl Relay {
    /// Starts a relay listening on `listen` (port 0 picks one) and forwarding to `target`.
    /// Must be called inside a tokio runtime.
    ///
    /// Each client gets its own socket towards the target, as it would
    /// have its own address without the relay: replies go back to the
    /// client they answer. (One socket for all sent every reply to the
    /// client that sent last; two coordinators through one relay lost each
    /// other's replies until a keep-alive turned it back, 4 s later.) The
    /// link's bandwidth is shared by its clients, each direction shaped once.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        config: &LinkConfig,
    ) -> Result<Self> {
        config.validate()?;
        let front = Arc::new(udp_socket(listen)?);
        let back_addr: SocketAddr = if target.is_ipv4() {
            ([127, 0, 0, 1], 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let addr = front
            .local_addr()
            .map_err(|e| Error::io("relay address", e))?;
        let stats = Arc::new(RelayStats::default());

        let (up_tx, up_rx) = mpsc::channel::<Packet<Arc<UdpSocket>>>(DELAY_LINE);
        let (down_tx, down_rx) = mpsc::channel::<Packet<SocketAddr>>(DELAY_LINE);
        let down_shaper = Arc::new(std::sync::Mutex::new(Shaper::new(
            config,
            config.seed.wrapping_add(0x9e37_79b9),
        )));
        let mut tasks = Vec::new();
        // client -> target, through the client's own socket
        {
            let (front, stats) = (front.clone(), stats.clone());
            let mut shaper = Shaper::new(config, config.seed);
            tasks.push(tokio::spawn(async move {
                let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
                // The clients' reply readers end with this task.
                let mut readers = tokio::task::JoinSet::new();
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    let back = match clients.get(&from) {
                        Some(b) => b.clone(),
                        None => {
                            let Some(b) = back_socket(back_addr, target).await else {
                                continue;
                            };
                            readers.spawn(read_replies(
                                b.clone(),
                                from,
                                down_shaper.clone(),
                                stats.clone(),
                                down_tx.clone(),
                            ));
                            clients.insert(from, b.clone());
                            b
                        }
                    };
                    admit(&mut shaper, &stats, &up_tx, &buf[..n], back);
                }
            }));
        }
        {
            let stats = stats.clone();
            tasks.push(tokio::spawn(deliver(
                up_rx,
                stats,
                |p, back: Arc<UdpSocket>| async move { back.send(&p).await.map(|_| ()) },
            )));
        }
        // target -> client
        {
            let stats = stats.clone();
            tasks.push(tokio::spawn(deliver(down_rx, stats, move |p, to| {
                let front = front.clone();
                async move { front.send_to(&p, to).await.map(|_| ()) }
            })));
        }
        Ok(Self { addr, stats, tasks })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Packet counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }
}

/// A new socket towards `target`, for one client; `None` (logged) if the
/// system will not give one.
async fn back_socket(bind: SocketAddr, target: SocketAddr) -> Option<Arc<UdpSocket>> {
    let made = match udp_socket(bind) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("relay: no socket for a new client: {e}");
            return None;
        }
    };
    if let Err(e) = made.connect(target).await {
        tracing::warn!("relay: cannot reach {target}: {e}");
        return None;
    }
    Some(Arc::new(made))
}

/// Shapes what the target sends to one client's socket and queues it for
/// that client.
async fn read_replies(
    back: Arc<UdpSocket>,
    client: SocketAddr,
    shaper: Arc<std::sync::Mutex<Shaper>>,
    stats: Arc<RelayStats>,
    tx: mpsc::Sender<Packet<SocketAddr>>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = back.recv(&mut buf).await {
        let mut shaper = shaper.lock().unwrap_or_else(|p| p.into_inner());
        admit(&mut shaper, &stats, &tx, &buf[..n], client);
    }
}

fn admit<R>(
    shaper: &mut Shaper,
    stats: &RelayStats,
    tx: &mpsc::Sender<Packet<R>>,
    pkt: &[u8],
    route: R,
) {
    match shaper.offer(Instant::now(), pkt.len()) {
        Verdict::Deliver(at) => {
            if tx.try_send((at, pkt.to_vec(), route)).is_err() {
                stats.queue_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        Verdict::Lost => {
            stats.lost.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::QueueFull => {
            stats.queue_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn deliver<R, F, Fut>(mut rx: mpsc::Receiver<Packet<R>>, stats: Arc<RelayStats>, send: F)
where
    F: Fn(Vec<u8>, R) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    while let Some((at, pkt, route)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        let n = pkt.len() as u64;
        match send(pkt, route).await {
            Ok(()) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                stats.delivered_bytes.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!("relay send: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaper_paces_at_the_configured_rate() {
        let cfg = LinkConfig {
            bandwidth_mbps: 8.0,
            delay_ms: 10.0,
            burst_bytes: Some(0),
            queue_bytes: Some(65_500),
            ..LinkConfig::default()
        };
        let mut s = Shaper::new(&cfg, 1);
        let t0 = Instant::now();
        // 100 packets of 1000 bytes offered at once: 1 MB/s drains one per ms.
        let mut last = t0;
        for i in 0..60 {
            match s.offer(t0, 1000) {
                Verdict::Deliver(at) => {
                    let expect = t0 + Duration::from_millis(10 + i + 1);
                    let err = at.max(expect) - at.min(expect);
                    assert!(
                        err < Duration::from_micros(10),
                        "packet {i}: {:?} vs {:?}",
                        at - t0,
                        expect - t0
                    );
                    last = at;
                }
                other => panic!("packet {i}: {other:?}"),
            }
        }
        // A 65.5 ms queue at 1 MB/s: packets that would wait longer are dropped.
        let mut drops = 0;
        for _ in 60..80 {
            if s.offer(t0, 1000) == Verdict::QueueFull {
                drops += 1;
            }
        }
        assert_eq!(drops, 14);
        assert!(last > t0);
    }

    #[test]
    fn shaper_loss_rate_and_jitter_order() {
        let cfg = LinkConfig {
            delay_ms: 20.0,
            jitter_ms: 5.0,
            loss: 0.1,
            seed: 42,
            ..LinkConfig::default()
        };
        let mut s = Shaper::new(&cfg, cfg.seed);
        let t0 = Instant::now();
        let mut lost = 0;
        let mut prev = t0;
        for i in 0..20_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            match s.offer(now, 100) {
                Verdict::Lost => lost += 1,
                Verdict::Deliver(at) => {
                    assert!(at >= prev, "reordered");
                    let d = (at - now).as_secs_f64() * 1000.0;
                    assert!((15.0..=25.1).contains(&d), "delay {d} ms");
                    prev = at;
                }
                Verdict::QueueFull => panic!("no queue without a rate"),
            }
        }
        let rate = f64::from(lost) / 20_000.0;
        assert!((0.09..0.11).contains(&rate), "loss {rate}");
    }

    #[test]
    fn config_parses_and_validates() {
        let bad = LinkConfig {
            loss: 1.5,
            ..LinkConfig::default()
        };
        assert!(bad.validate().is_err());
        let ok = LinkConfig {
            bandwidth_mbps: 100.0,
            delay_ms: 25.0,
            ..LinkConfig::default()
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.bytes_per_s(), Some(12_500_000.0));
        assert_eq!(ok.tuning().rtt, Duration::from_millis(50));
    }
}
