//! A node's counters and the Prometheus text endpoint that serves them.
//!
//! The exposition format is four lines per metric, and the endpoint answers
//! one fixed `GET /metrics`, so a hand-written responder over tokio is
//! simpler and smaller than pulling an HTTP server and a metrics registry in.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counters of one node daemon.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Jobs (tiles and whole segments) finished.
    pub jobs: AtomicU64,
    /// Jobs that were tiles.
    pub tiles: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// Payload bytes sent.
    pub bytes_out: AtomicU64,
    /// Executor busy time, microseconds.
    pub busy_us: AtomicU64,
    /// Jobs waiting for or holding the executor.
    pub queue_depth: AtomicI64,
    /// Jobs or frames that failed.
    pub errors: AtomicU64,
    /// Models loaded.
    pub models: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition of the counters, labelled with the node name.
    pub fn render(&self, node: &str) -> String {
        let rows: [(&str, &str, &str, f64); 8] = [
            (
                "tessera_jobs_total",
                "counter",
                "Jobs finished (tiles and whole segments).",
                self.jobs.load(Ordering::Relaxed) as f64,
            ),
            (
                "tessera_tiles_total",
                "counter",
                "Tiles of fused blocks finished.",
                self.tiles.load(Ordering::Relaxed) as f64,
            ),
            (
                "tessera_bytes_received_total",
                "counter",
                "Tensor and model payload bytes received.",
                self.bytes_in.load(Ordering::Relaxed) as f64,
            ),
            (
                "tessera_bytes_sent_total",
                "counter",
                "Tensor payload bytes sent.",
                self.bytes_out.load(Ordering::Relaxed) as f64,
            ),
            (
                "tessera_busy_seconds_total",
                "counter",
                "Time the executor spent running jobs.",
                self.busy_us.load(Ordering::Relaxed) as f64 / 1e6,
            ),
            (
                "tessera_queue_depth",
                "gauge",
                "Jobs waiting for or holding the executor.",
                self.queue_depth.load(Ordering::Relaxed) as f64,
            ),
            (
                "tessera_errors_total",
                "counter",
                "Jobs, models or frames that failed.",
                self.errors.load(Ordering::Relaxed) as f64,
            ),
            (
                "tessera_models_loaded_total",
                "counter",
                "Models received and parsed.",
                self.models.load(Ordering::Relaxed) as f64,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until the task is dropped; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    node: String,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let (node, metrics) = (node.clone(), metrics.clone());
            tokio::spawn(async move {
                // Requests are tiny; read what arrives within a second, answer once.
                let mut buf = [0u8; 1024];
                let n =
                    tokio::time::timeout(std::time::Duration::from_secs(1), sock.read(&mut buf))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if req.starts_with("GET /metrics") {
                    ("200 OK", metrics.render(&node))
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}
