//! The thin async layer: quinn endpoints and connections that move frames.
//!
//! Each tile travels on its own unidirectional stream (prefix, header,
//! payload, finish). Each side also opens one long-lived control stream that
//! starts with its [`Hello`] and carries Acks, Errors, Profiles, PlanUpdates
//! and Shutdown. All framing decisions are made by the sans-IO [`crate::frame`]
//! functions; this module only reads and writes bytes, enforces timeouts, and
//! bounds queues.
//!
//! What the endpoint does when things go wrong (each case has a test):
//!
//! | case | what happens |
//! |---|---|
//! | bad prefix (magic, version, kind, flags), oversize lengths | refused from the 20-byte prefix, before any allocation: Error frame (Malformed / Version / Limit), stream stopped with that code, `warn!` log; connection keeps serving |
//! | header fails rkyv validation, or contradicts the prefix, or shape x 4 != payload, region outside map | same, code Malformed / Inconsistent |
//! | bytes after the payload, or FIN before it ends | same, code Inconsistent / Malformed; nothing delivered |
//! | stream idle longer than `stream_idle_timeout`, or a tile slower than `min_stream_rate` | stream stopped with code Timeout, Error frame |
//! | stream reset mid-tile | nothing delivered, buffer back to the pool; the key is not remembered, so a re-send is accepted |
//! | peer killed mid-transfer | the partial tile is dropped; `recv_tile` ends with `None`; the endpoint accepts new peers |
//! | flood of streams | the peer can have at most `max_concurrent_streams` open (QUIC stream credit); readers hold a semaphore permit; received tiles wait in a bounded queue, so a slow application stops reading and flow control stops the sender |
//! | stream credit never returns | `send_tile` gives up after `ack_timeout` with `Error::Timeout` |
//! | re-sent tile (same key, lost Ack) | Ack again with `duplicate: true`, not delivered twice (bounded `DedupSet`) |
//! | garbage on the control stream | Error frame, connection closed with the error's code |
//! | no client certificate, another CA, name not allow-listed, wrong ALPN | TLS handshake refused; `accept` returns `Some(Err)` and keeps accepting |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{RecvStream, SendStream, VarInt};
use rkyv::util::AlignedVec;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout_at};

use crate::caps::Caps;
use crate::certs::{self, Identity};
use crate::dedup::DedupSet;
use crate::error::{Error, ErrorCode, FrameError, Result};
use crate::frame::{self, FrameKind, PREFIX_LEN, Prefix};
use crate::messages::{
    Ack, ErrorFrame, Header, Hello, PlanUpdate, Profile, Shutdown, TileHeader, TileKey,
};
use crate::pool::{BufferPool, Payload};
use crate::tuning::LinkTuning;

/// Settings of an [`Endpoint`] and of every connection it makes or accepts.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// This node's certificate, key and cluster CA.
    pub identity: Identity,
    /// Node names this endpoint talks to (both directions).
    pub allowed_peers: Vec<String>,
    /// What this node announces in its Hello.
    pub hello: Hello,
    /// Limits on received frames.
    pub caps: Caps,
    /// Link assumptions and stream limits.
    pub link: LinkTuning,
    /// Received tiles waiting for the application, per connection; a full
    /// queue stops reading streams, which stops the sender (flow control).
    pub recv_queue: usize,
    /// Received control frames waiting for the application, per connection.
    pub control_queue: usize,
    /// A stream that makes no progress for this long is stopped.
    pub stream_idle_timeout: Duration,
    /// Slowest acceptable tile transfer, bytes/s: a tile must arrive within
    /// `stream_idle_timeout + payload / min_stream_rate` (defeats slow trickles).
    pub min_stream_rate: u64,
    /// How long [`Connection::send_tile_acked`] and [`Connection::shutdown`] wait for Acks.
    pub ack_timeout: Duration,
    /// Tile keys remembered for duplicate suppression, per connection.
    pub dedup_capacity: usize,
    /// How long an incoming connection may take to handshake and send its
    /// Hello ([`Incoming::finish`]).
    pub handshake_timeout: Duration,
    /// SO_RCVBUF / SO_SNDBUF for the UDP socket (the kernel may clamp it).
    pub socket_buffer_bytes: usize,
    /// Receive buffers, shared by all connections of the endpoint.
    pub pool: BufferPool,
}

impl EndpointConfig {
    /// Defaults for `identity`, talking to `allowed_peers`.
    pub fn new(identity: Identity, allowed_peers: Vec<String>, hello: Hello) -> Self {
        Self {
            identity,
            allowed_peers,
            hello,
            caps: Caps::default(),
            link: LinkTuning::default(),
            recv_queue: 16,
            control_queue: 64,
            stream_idle_timeout: Duration::from_secs(10),
            min_stream_rate: 1_000_000,
            ack_timeout: Duration::from_secs(10),
            dedup_capacity: 4096,
            handshake_timeout: Duration::from_secs(10),
            socket_buffer_bytes: 8 << 20,
            pool: BufferPool::default(),
        }
    }
}

/// Whether a tile frame is input to run or output coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// A tile to run (`Tile` frame).
    Tile,
    /// A tile's output (`TileResult` frame).
    Result,
}

impl TileKind {
    fn is_result(self) -> bool {
        self == Self::Result
    }

    fn header(self, h: TileHeader) -> Header {
        match self {
            Self::Tile => Header::Tile(h),
            Self::Result => Header::TileResult(h),
        }
    }
}

/// A validated tile as handed to the application.
#[derive(Debug)]
pub struct ReceivedTile {
    /// Tile or result.
    pub kind: TileKind,
    /// The validated header.
    pub header: TileHeader,
    /// The payload, read once from the stream into a pooled buffer.
    pub payload: Payload,
}

/// Control frames the application sends and receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// The peer reports an error.
    Error(ErrorFrame),
    /// Measured spans.
    Profile(Profile),
    /// A new plan.
    PlanUpdate(PlanUpdate),
    /// The peer opens no more streams.
    Shutdown(Shutdown),
}

impl From<Control> for Header {
    fn from(c: Control) -> Self {
        match c {
            Control::Error(e) => Header::Error(e),
            Control::Profile(p) => Header::Profile(p),
            Control::PlanUpdate(p) => Header::PlanUpdate(p),
            Control::Shutdown(s) => Header::Shutdown(s),
        }
    }
}

/// A QUIC endpoint with the cluster's mutual TLS; connects and accepts.
#[derive(Debug, Clone)]
pub struct Endpoint {
    quinn: quinn::Endpoint,
    config: Arc<EndpointConfig>,
}

fn bind_socket(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket> {
    let io = |e| Error::io(addr.to_string(), e);
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(io)?;
    // Large buffers keep bursts of GSO batches from being dropped by the kernel;
    // failure only costs speed, so it is logged, not fatal.
    if let Err(e) = sock.set_recv_buffer_size(buffer) {
        tracing::debug!("SO_RCVBUF {buffer}: {e}");
    }
    if let Err(e) = sock.set_send_buffer_size(buffer) {
        tracing::debug!("SO_SNDBUF {buffer}: {e}");
    }
    sock.bind(&addr.into()).map_err(io)?;
    Ok(sock.into())
}

impl Endpoint {
    /// Binds a UDP socket at `addr` and serves the cluster's TLS on it.
    /// Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr, config: EndpointConfig) -> Result<Self> {
        for p in &config.allowed_peers {
            certs::check_node_name(p)?;
        }
        let transport = config.link.transport_config()?;
        let server_tls = certs::server_config(&config.identity, &config.allowed_peers)?;
        let server_quic =
            QuicServerConfig::try_from(server_tls).map_err(|e| Error::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_quic));
        server.transport_config(transport.clone());
        let client_tls = certs::client_config(&config.identity)?;
        let client_quic =
            QuicClientConfig::try_from(client_tls).map_err(|e| Error::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_quic));
        client.transport_config(transport);

        let socket = bind_socket(addr, config.socket_buffer_bytes)?;
        let runtime =
            quinn::default_runtime().ok_or_else(|| Error::Config("no tokio runtime".into()))?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        // quinn caps datagrams at 1472 bytes unless told otherwise, which
        // would make the MTU settings of `link` dead letters.
        endpoint_config
            .max_udp_payload_size(config.link.max_mtu)
            .map_err(|e| Error::Config(format!("max_mtu {}: {e}", config.link.max_mtu)))?;
        let mut quinn = quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime)
            .map_err(|e| Error::io(addr.to_string(), e))?;
        quinn.set_default_client_config(client);
        Ok(Self {
            quinn,
            config: Arc::new(config),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.quinn
            .local_addr()
            .map_err(|e| Error::io("local address", e))
    }

    /// The underlying quinn endpoint (tests and benchmarks).
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.quinn
    }

    /// Connects to node `peer` at `addr`; `peer` must be allow-listed and its
    /// certificate must name it.
    pub async fn connect(&self, addr: SocketAddr, peer: &str) -> Result<Connection> {
        if !self.config.allowed_peers.iter().any(|p| p == peer) {
            return Err(Error::Config(format!(
                "peer '{peer}' is not in the allow-list"
            )));
        }
        let connecting = self
            .quinn
            .connect(addr, peer)
            .map_err(|e| Error::Connection(e.to_string()))?;
        let conn = connecting.await.map_err(|e| {
            // rustls names the check that failed, not the likely cause.
            let text = e.to_string();
            let hint = if text.contains("not valid for name") {
                " (the node at that address has another node's certificate: \
                 are the name and address in the cluster file the same node's?)"
            } else if text.contains("invalid peer certificate") {
                " (its certificate is not signed by this side's CA: are both \
                 from the same `tessera certs` folder?)"
            } else {
                ""
            };
            Error::Connection(format!("{peer} at {addr}: {e}{hint}"))
        })?;
        Connection::start(conn, peer.to_string(), self.config.clone()).await
    }

    /// Waits for the next incoming connection and completes its handshake.
    /// `None` once the endpoint is closed; `Some(Err)` for a refused or
    /// failed handshake (keep accepting). A server that serves many peers
    /// should use [`Endpoint::incoming`] instead, so one slow handshake
    /// does not hold up the next.
    pub async fn accept(&self) -> Option<Result<Connection>> {
        Some(self.incoming().await?.finish().await)
    }

    /// Waits for the next connection attempt without handshaking: finish it
    /// with [`Incoming::finish`], on its own task.
    pub async fn incoming(&self) -> Option<Incoming> {
        let incoming = self.quinn.accept().await?;
        Some(Incoming {
            incoming,
            config: self.config.clone(),
        })
    }

    /// Closes all connections immediately.
    pub fn close(&self) {
        self.quinn.close(
            VarInt::from_u32(ErrorCode::Shutdown as u32),
            b"endpoint closed",
        );
    }

    /// Waits until all connections are closed and their close frames sent.
    pub async fn wait_idle(&self) {
        self.quinn.wait_idle().await;
    }
}

type AckWaiters = HashMap<(TileKey, bool), Option<oneshot::Sender<Ack>>>;

#[derive(Debug)]
struct Inner {
    conn: quinn::Connection,
    peer: String,
    config: Arc<EndpointConfig>,
    control_tx: tokio::sync::Mutex<SendStream>,
    unacked: Mutex<AckWaiters>,
    all_acked: Notify,
    dedup: Mutex<DedupSet>,
    shutting_down: AtomicBool,
}

/// One connection to a peer node. Cheap to clone; all clones share it.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
    tiles: Arc<tokio::sync::Mutex<mpsc::Receiver<ReceivedTile>>>,
    control: Arc<tokio::sync::Mutex<mpsc::Receiver<Control>>>,
    hello: watch::Receiver<Option<Hello>>,
}

fn code(c: ErrorCode) -> VarInt {
    VarInt::from_u32(c as u32)
}

/// Why reading a stream stopped.
#[derive(Debug)]
enum StreamFail {
    Frame(FrameError),
    Timeout(&'static str),
    /// Reset by the peer, or the connection went away: nobody to tell.
    Gone(String),
}

impl From<FrameError> for StreamFail {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

/// Reads exactly `buf.len()` bytes, giving up if a read makes no progress
/// for `idle` or the whole read passes `deadline`.
async fn read_exact_timed(
    recv: &mut RecvStream,
    buf: &mut [u8],
    idle: Duration,
    deadline: Instant,
) -> Result<(), StreamFail> {
    let mut off = 0;
    while off < buf.len() {
        let until = deadline.min(Instant::now() + idle);
        match timeout_at(until, recv.read(&mut buf[off..])).await {
            Err(_) => return Err(StreamFail::Timeout("stream idle")),
            Ok(Ok(Some(n))) => off += n,
            Ok(Ok(None)) => {
                return Err(StreamFail::Frame(FrameError::Truncated {
                    need: buf.len() as u64,
                    have: off as u64,
                }));
            }
            Ok(Err(e)) => return Err(StreamFail::Gone(with_cause(&e))),
        }
    }
    Ok(())
}

impl Connection {
    async fn start(
        conn: quinn::Connection,
        peer: String,
        config: Arc<EndpointConfig>,
    ) -> Result<Self> {
        let mut control_tx = conn
            .open_uni()
            .await
            .map_err(|e| Error::Connection(e.to_string()))?;
        let hello = frame::encode_frame(&Header::Hello(config.hello.clone()), &[])?;
        control_tx
            .write_all(&hello)
            .await
            .map_err(|e| Error::Stream(with_cause(&e)))?;

        let (tiles_tx, tiles_rx) = mpsc::channel(config.recv_queue.max(1));
        let (control_q_tx, control_rx) = mpsc::channel(config.control_queue.max(1));
        let (hello_tx, hello_rx) = watch::channel(None);
        let inner = Arc::new(Inner {
            conn,
            peer,
            dedup: Mutex::new(DedupSet::new(config.dedup_capacity)),
            config,
            control_tx: tokio::sync::Mutex::new(control_tx),
            unacked: Mutex::new(HashMap::new()),
            all_acked: Notify::new(),
            shutting_down: AtomicBool::new(false),
        });
        tokio::spawn(accept_loop(inner.clone(), tiles_tx, control_q_tx, hello_tx));
        Ok(Self {
            inner,
            tiles: Arc::new(tokio::sync::Mutex::new(tiles_rx)),
            control: Arc::new(tokio::sync::Mutex::new(control_rx)),
            hello: hello_rx,
        })
    }

    /// The peer's node name (from its verified certificate).
    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.conn.remote_address()
    }

    /// The underlying quinn connection (tests and statistics).
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner.conn
    }

    /// Why the connection ended, in words for a user; `None` while it is open.
    pub fn ended(&self) -> Option<String> {
        self.inner.conn.close_reason().map(|r| match r {
            quinn::ConnectionError::TimedOut => format!(
                "stopped answering: nothing heard from it for {} s",
                self.inner.config.link.idle_timeout.as_secs()
            ),
            other => format!("connection closed: {other}"),
        })
    }

    /// The peer's Hello, waiting for it if it has not arrived yet.
    pub async fn peer_hello(&self) -> Result<Hello> {
        let mut rx = self.hello.clone();
        let got = tokio::time::timeout(self.inner.config.ack_timeout, rx.wait_for(|h| h.is_some()))
            .await
            .map_err(|_| Error::Timeout("peer hello".into()))?
            .map_err(|_| Error::Closed)?;
        got.clone().ok_or(Error::Closed)
    }

    /// Sends a tile, copying the payload once into quinn's send buffer
    /// (quinn must own the bytes until the peer acknowledges them). Returns
    /// once the data is queued; use [`Connection::wait_ack`] or
    /// [`Connection::send_tile_acked`] to know it arrived.
    pub async fn send_tile(&self, header: &TileHeader, data: &[f32]) -> Result<()> {
        self.send(
            TileKind::Tile,
            header,
            Outgoing::Borrowed(bytemuck::cast_slice(data)),
        )
        .await
    }

    /// Sends a tile or result whose payload is already encoded as the
    /// header's `dtype` says (e.g. [`DType::U8`](crate::DType::U8) bytes, padded to a multiple of 4).
    pub async fn send_tile_bytes(
        &self,
        kind: TileKind,
        header: &TileHeader,
        payload: &[u8],
    ) -> Result<()> {
        self.send(kind, header, Outgoing::Borrowed(payload)).await
    }

    /// Sends a tile result (the output of a tile); see [`Connection::send_tile`].
    pub async fn send_tile_result(&self, header: &TileHeader, data: &[f32]) -> Result<()> {
        self.send(
            TileKind::Result,
            header,
            Outgoing::Borrowed(bytemuck::cast_slice(data)),
        )
        .await
    }

    /// Sends a tile without copying the payload: quinn holds `data` itself
    /// until the peer acknowledges it.
    pub async fn send_tile_owned<T>(
        &self,
        kind: TileKind,
        header: &TileHeader,
        data: T,
    ) -> Result<()>
    where
        T: AsRef<[f32]> + Send + 'static,
    {
        self.send(
            kind,
            header,
            Outgoing::Owned(Bytes::from_owner(F32Bytes(data))),
        )
        .await
    }

    /// Sends a tile and waits (up to the ack timeout) for the peer's Ack.
    /// On timeout the caller re-sends or re-dispatches; the receiver drops duplicates.
    pub async fn send_tile_acked(
        &self,
        kind: TileKind,
        header: &TileHeader,
        data: &[f32],
    ) -> Result<Ack> {
        let rx = self.expect_ack(header.key, kind);
        self.send(kind, header, Outgoing::Borrowed(bytemuck::cast_slice(data)))
            .await?;
        self.await_ack(header.key, rx).await
    }

    /// Waits for the Ack of a tile sent earlier with [`Connection::send_tile`]
    /// or [`Connection::send_tile_result`]. Call before sending to be sure not to miss it.
    pub fn expect_ack(&self, key: TileKey, kind: TileKind) -> oneshot::Receiver<Ack> {
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.unacked).insert((key, kind.is_result()), Some(tx));
        rx
    }

    /// Waits for an Ack registered with [`Connection::expect_ack`].
    pub async fn wait_ack(&self, key: TileKey, rx: oneshot::Receiver<Ack>) -> Result<Ack> {
        self.await_ack(key, rx).await
    }

    async fn await_ack(&self, key: TileKey, rx: oneshot::Receiver<Ack>) -> Result<Ack> {
        match tokio::time::timeout(self.inner.config.ack_timeout, rx).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(format!("ack of the frame of {key}"))),
        }
    }

    async fn send(&self, kind: TileKind, header: &TileHeader, payload: Outgoing<'_>) -> Result<()> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let len = payload.len() as u64;
        // Never put a frame on the wire that the peer (with default caps) would refuse.
        self.inner.config.caps.check_tile(header, len)?;
        let head = frame::encode_head(&kind.header(header.clone()), len)?;
        let slot = (header.key, kind.is_result());
        lock(&self.inner.unacked).entry(slot).or_insert(None);
        let sent = self.write_tile(header, &head, payload).await;
        if sent.is_err() {
            // Nothing will acknowledge a tile that never left; keep shutdown from waiting for it.
            let mut unacked = lock(&self.inner.unacked);
            if matches!(unacked.get(&slot), Some(None)) {
                unacked.remove(&slot);
            }
            if unacked.is_empty() {
                self.inner.all_acked.notify_waiters();
            }
        }
        sent
    }

    async fn write_tile(
        &self,
        header: &TileHeader,
        head: &[u8],
        payload: Outgoing<'_>,
    ) -> Result<()> {
        let stream_err = |e: &dyn std::error::Error| {
            Error::Stream(format!("frame of {}: {}", header.key, with_cause(e)))
        };
        // Waiting for stream credit is backpressure; waiting past the ack timeout means the peer is stuck.
        let mut s = tokio::time::timeout(self.inner.config.ack_timeout, self.inner.conn.open_uni())
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "no stream credit from {} for the frame of {}",
                    self.inner.peer, header.key
                ))
            })?
            .map_err(|e| Error::Connection(e.to_string()))?;
        s.write_all(head).await.map_err(|e| stream_err(&e))?;
        match payload {
            Outgoing::Borrowed(b) => s.write_all(b).await.map_err(|e| stream_err(&e))?,
            Outgoing::Owned(b) => s.write_chunk(b).await.map_err(|e| stream_err(&e))?,
        }
        s.finish().map_err(|e| stream_err(&e))?;
        Ok(())
    }

    /// Sends a control frame on this side's control stream.
    pub async fn send_control(&self, c: Control) -> Result<()> {
        let header: Header = c.into();
        self.inner.config.caps.check_header(&header, 0)?;
        self.inner.send_control_header(&header).await
    }

    /// The next received tile, in arrival order; `None` once the connection
    /// is closed and every tile it delivered has been taken.
    pub async fn recv_tile(&self) -> Option<ReceivedTile> {
        self.tiles.lock().await.recv().await
    }

    /// The next received control frame; `None` once the connection is closed.
    pub async fn recv_control(&self) -> Option<Control> {
        self.control.lock().await.recv().await
    }

    /// Graceful shutdown: tells the peer, waits (up to the ack timeout) for
    /// every sent tile to be acknowledged, then closes. Tiles already
    /// received stay readable with [`Connection::recv_tile`].
    pub async fn shutdown(&self, reason: &str) -> Result<()> {
        self.inner.shutting_down.store(true, Ordering::Release);
        let shutdown = Header::Shutdown(Shutdown {
            reason: reason.to_string(),
        });
        let sent = self.inner.send_control_header(&shutdown).await;
        let deadline = Instant::now() + self.inner.config.ack_timeout;
        let drained = loop {
            let notified = self.inner.all_acked.notified();
            if lock(&self.inner.unacked).is_empty() {
                break true;
            }
            if timeout_at(deadline, notified).await.is_err() {
                break false;
            }
        };
        {
            let mut tx = self.inner.control_tx.lock().await;
            let _ = tx.finish();
        }
        self.inner.conn.close(code(ErrorCode::None), b"shutdown");
        sent?;
        if drained {
            Ok(())
        } else {
            let n = lock(&self.inner.unacked).len();
            Err(Error::Timeout(format!(
                "{n} tiles unacknowledged at shutdown"
            )))
        }
    }

    /// Closes at once, abandoning streams in flight.
    pub fn close(&self, reason: &str) {
        self.inner
            .conn
            .close(code(ErrorCode::Shutdown), reason.as_bytes());
    }

    /// Waits until the connection is closed (by either side) and says why.
    pub async fn closed(&self) -> String {
        self.inner.conn.closed().await.to_string()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Outgoing<'a> {
    Borrowed(&'a [u8]),
    Owned(Bytes),
}

impl Outgoing<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Borrowed(b) => b.len(),
            Self::Owned(b) => b.len(),
        }
    }
}

/// Lets quinn own an f32 buffer as bytes without copying it.
struct F32Bytes<T>(T);

impl<T: AsRef<[f32]>> AsRef<[u8]> for F32Bytes<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(self.0.as_ref())
    }
}

impl Inner {
    async fn send_control_header(&self, header: &Header) -> Result<()> {
        let bytes = frame::encode_frame(header, &[])?;
        let mut tx = self.control_tx.lock().await;
        tx.write_all(&bytes).await.map_err(|e| {
            Error::Stream(format!(
                "control stream to {}: {}",
                self.peer,
                with_cause(&e)
            ))
        })
    }

    /// Reports a bad stream to the peer and stops it.
    async fn refuse(&self, recv: &mut RecvStream, fail: &StreamFail) {
        let (c, message) = match fail {
            StreamFail::Frame(e) => (e.code(), e.to_string()),
            StreamFail::Timeout(what) => (ErrorCode::Timeout, (*what).to_string()),
            StreamFail::Gone(why) => {
                tracing::debug!(peer = %self.peer, "stream abandoned: {why}");
                return;
            }
        };
        tracing::warn!(peer = %self.peer, code = ?c, "refused stream {}: {message}", recv.id());
        let _ = recv.stop(code(c));
        let err = Header::Error(ErrorFrame {
            code: c as u16,
            message,
        });
        if let Err(e) = self.send_control_header(&err).await {
            tracing::debug!(peer = %self.peer, "could not send error frame: {e}");
        }
    }

    fn on_ack(&self, ack: Ack) {
        let mut unacked = lock(&self.unacked);
        if let Some(Some(tx)) = unacked.remove(&(ack.key, ack.result)) {
            let _ = tx.send(ack);
        }
        if unacked.is_empty() {
            self.all_acked.notify_waiters();
        }
    }
}

async fn accept_loop(
    inner: Arc<Inner>,
    tiles: mpsc::Sender<ReceivedTile>,
    control: mpsc::Sender<Control>,
    hello: watch::Sender<Option<Hello>>,
) {
    // Bounds the streams being read plus finished tiles waiting for queue space.
    let permits = Arc::new(Semaphore::new(
        inner.config.link.max_concurrent_streams.max(1) as usize,
    ));
    let hello = Arc::new(hello);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let recv = match inner.conn.accept_uni().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(peer = %inner.peer, "connection ended: {e}");
                break;
            }
        };
        let (inner, tiles, control, hello) =
            (inner.clone(), tiles.clone(), control.clone(), hello.clone());
        tokio::spawn(async move {
            serve_stream(&inner, recv, &tiles, &control, &hello).await;
            drop(permit);
        });
    }
}

async fn read_prefix(
    inner: &Inner,
    recv: &mut RecvStream,
    wait_first: bool,
) -> Result<Option<Prefix>, StreamFail> {
    let cfg = &inner.config;
    let mut p = [0u8; PREFIX_LEN];
    let mut off = 0;
    if wait_first {
        // A control stream may be quiet for long stretches; the connection's
        // idle timeout and keep-alives catch a dead peer.
        match recv.read(&mut p).await {
            Ok(Some(n)) => off = n,
            Ok(None) => return Ok(None),
            Err(e) => return Err(StreamFail::Gone(with_cause(&e))),
        }
    }
    let deadline = Instant::now() + cfg.stream_idle_timeout;
    read_exact_timed(recv, &mut p[off..], cfg.stream_idle_timeout, deadline).await?;
    Ok(Some(frame::decode_prefix(&p, &cfg.caps)?))
}

/// How much of a header is read (and allocated) at a time.
const HEADER_STEP: usize = 64 * 1024;

async fn read_header(
    inner: &Inner,
    recv: &mut RecvStream,
    prefix: &Prefix,
    deadline: Instant,
) -> Result<Header, StreamFail> {
    let cfg = &inner.config;
    // header_len is capped by decode_prefix; the buffer still grows only as
    // bytes come, so a peer's announced lengths reserve little by themselves.
    let len = prefix.header_len as usize;
    let mut buf = AlignedVec::<16>::with_capacity(len.min(HEADER_STEP));
    while buf.len() < len {
        let from = buf.len();
        buf.resize((from + HEADER_STEP).min(len), 0);
        read_exact_timed(recv, &mut buf[from..], cfg.stream_idle_timeout, deadline).await?;
    }
    Ok(frame::decode_header(prefix, &buf, &cfg.caps)?)
}

async fn serve_stream(
    inner: &Inner,
    mut recv: RecvStream,
    tiles: &mpsc::Sender<ReceivedTile>,
    control: &mpsc::Sender<Control>,
    hello: &watch::Sender<Option<Hello>>,
) {
    let cfg = &inner.config;
    let prefix = match read_prefix(inner, &mut recv, false).await {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(f) => return inner.refuse(&mut recv, &f).await,
    };
    let kind = match prefix.kind {
        FrameKind::Tile => TileKind::Tile,
        FrameKind::TileResult => TileKind::Result,
        _ => return serve_control(inner, recv, prefix, control, hello).await,
    };
    let rate = cfg.min_stream_rate.max(1);
    let deadline = Instant::now()
        + cfg.stream_idle_timeout
        + Duration::from_secs_f64(prefix.payload_len as f64 / rate as f64);
    let header = match read_header(inner, &mut recv, &prefix, deadline).await {
        Ok(Header::Tile(h) | Header::TileResult(h)) => h,
        Ok(_) => {
            let f = StreamFail::Frame(FrameError::Inconsistent(
                "tile prefix with a non-tile header".into(),
            ));
            return inner.refuse(&mut recv, &f).await;
        }
        Err(f) => return inner.refuse(&mut recv, &f).await,
    };
    let ack = Ack {
        key: header.key,
        result: kind.is_result(),
        duplicate: true,
    };
    let seen = |inner: &Inner| !lock(&inner.dedup).insert(header.key, kind.is_result());
    if lock(&inner.dedup).contains(header.key, kind.is_result()) {
        tracing::debug!(peer = %inner.peer, key = ?header.key, "duplicate tile dropped");
        let _ = recv.stop(code(ErrorCode::None));
        let _ = inner.send_control_header(&Header::Ack(ack)).await;
        return;
    }
    // Validated: payload_len is what the shape needs (a multiple of 4) and under the cap.
    let mut payload = cfg.pool.take((prefix.payload_len / 4) as usize);
    if let Err(f) = read_exact_timed(
        &mut recv,
        payload.as_bytes_mut(),
        cfg.stream_idle_timeout,
        deadline,
    )
    .await
    {
        return inner.refuse(&mut recv, &f).await;
    }
    // The stream must end exactly here.
    let mut extra = [0u8; 1];
    match timeout_at(deadline, recv.read(&mut extra)).await {
        Ok(Ok(None)) => {}
        Ok(Ok(Some(_))) => {
            let f = StreamFail::Frame(FrameError::Inconsistent("bytes after the payload".into()));
            return inner.refuse(&mut recv, &f).await;
        }
        Ok(Err(e)) => {
            return inner
                .refuse(&mut recv, &StreamFail::Gone(e.to_string()))
                .await;
        }
        Err(_) => {
            return inner
                .refuse(&mut recv, &StreamFail::Timeout("stream not finished"))
                .await;
        }
    }
    if seen(inner) {
        // Another copy completed while this one was in flight.
        let _ = inner.send_control_header(&Header::Ack(ack)).await;
        return;
    }
    let key = header.key;
    if tiles
        .send(ReceivedTile {
            kind,
            header,
            payload,
        })
        .await
        .is_err()
    {
        return; // the application dropped the connection
    }
    let ack = Ack {
        key,
        result: kind.is_result(),
        duplicate: false,
    };
    if let Err(e) = inner.send_control_header(&Header::Ack(ack)).await {
        tracing::debug!(peer = %inner.peer, "could not ack {key:?}: {e}");
    }
}

async fn serve_control(
    inner: &Inner,
    mut recv: RecvStream,
    first: Prefix,
    control: &mpsc::Sender<Control>,
    hello: &watch::Sender<Option<Hello>>,
) {
    let cfg = &inner.config;
    let mut prefix = Some(first);
    loop {
        let p = match prefix.take() {
            Some(p) => p,
            None => match read_prefix(inner, &mut recv, true).await {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(f) => return fail_control(inner, &mut recv, &f).await,
            },
        };
        let deadline = Instant::now() + cfg.stream_idle_timeout;
        let header = match read_header(inner, &mut recv, &p, deadline).await {
            Ok(h) => h,
            Err(f) => return fail_control(inner, &mut recv, &f).await,
        };
        let c = match header {
            Header::Hello(h) => {
                hello.send_replace(Some(h));
                continue;
            }
            Header::Ack(a) => {
                inner.on_ack(a);
                continue;
            }
            Header::Error(e) => {
                tracing::warn!(peer = %inner.peer, "peer reports error {:?}: {}", ErrorCode::from_u16(e.code), e.message);
                Control::Error(e)
            }
            Header::Profile(p) => Control::Profile(p),
            Header::PlanUpdate(p) => Control::PlanUpdate(p),
            Header::Shutdown(s) => Control::Shutdown(s),
            Header::Tile(_) | Header::TileResult(_) => {
                let f = StreamFail::Frame(FrameError::Inconsistent(
                    "tile on the control stream".into(),
                ));
                return fail_control(inner, &mut recv, &f).await;
            }
        };
        // Bounded: a peer flooding control frames waits for the application.
        if control.send(c).await.is_err() {
            return;
        }
    }
}

/// A broken control stream leaves the connection unusable: report and close it.
async fn fail_control(inner: &Inner, recv: &mut RecvStream, f: &StreamFail) {
    inner.refuse(recv, f).await;
    let c = match f {
        StreamFail::Frame(e) => e.code(),
        StreamFail::Timeout(_) => ErrorCode::Timeout,
        StreamFail::Gone(_) => return,
    };
    inner.conn.close(code(c), b"bad control stream");
}

/// A connection attempt not yet handshaken (see [`Endpoint::incoming`]).
pub struct Incoming {
    incoming: quinn::Incoming,
    config: Arc<EndpointConfig>,
}

impl Incoming {
    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Completes the TLS handshake, checks the peer's name against the
    /// allow-list and sends this side's Hello, within the endpoint's
    /// `handshake_timeout`: a peer that stalls there (one Initial packet, or
    /// a zero stream window) is dropped instead of holding a task.
    pub async fn finish(self) -> Result<Connection> {
        let remote = self.incoming.remote_address();
        let limit = self.config.handshake_timeout;
        match tokio::time::timeout(limit, self.handshake()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Connection(format!(
                "{remote}: no handshake within {:.1} s",
                limit.as_secs_f64()
            ))),
        }
    }

    async fn handshake(self) -> Result<Connection> {
        let remote = self.incoming.remote_address();
        let conn = match self.incoming.await {
            Ok(c) => c,
            Err(e) => {
                // The caller logs the error, which names the remote: one
                // line per refused handshake, not one per layer.
                tracing::debug!(%remote, "handshake failed: {e}");
                return Err(Error::Connection(format!("{remote}: {e}")));
            }
        };
        let name = conn
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| {
                chain
                    .first()
                    .and_then(|leaf| certs::peer_name(leaf, &self.config.allowed_peers))
            });
        let Some(name) = name else {
            // The TLS verifier already refuses such peers; this is a second lock on the door.
            conn.close(
                VarInt::from_u32(ErrorCode::Unexpected as u32),
                b"peer not allow-listed",
            );
            return Err(Error::Connection(format!(
                "{remote}: peer not allow-listed"
            )));
        };
        // On failure `conn` is dropped, which closes the connection.
        Connection::start(conn, name, self.config).await
    }
}

/// An error's message with its causes: quinn's stream errors say only
/// "connection lost" and keep why (the peer's close reason, a refusal of
/// this node's certificate) in their source.
fn with_cause(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::with_cause;

    /// A lost connection says why: quinn's "connection lost" alone hid a
    /// refused certificate behind "stream: connection lost".
    #[test]
    fn a_stream_error_carries_its_cause() {
        let e = quinn::WriteError::ConnectionLost(quinn::ConnectionError::TimedOut);
        assert_eq!(with_cause(&e), "connection lost: timed out");
        let e = quinn::ReadError::ConnectionLost(quinn::ConnectionError::LocallyClosed);
        assert_eq!(with_cause(&e), "connection lost: closed");
    }
}
