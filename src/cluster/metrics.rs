//! A node's counters and the Prometheus text endpoint that serves them.
//!
//! The exposition format is four lines per metric, and the endpoint answers
//! `GET` (or `HEAD`) of one path, `/metrics`, so a hand-written responder over tokio is
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
    /// Executor busy time (jobs and model profiling), microseconds.
    pub busy_us: AtomicU64,
    /// Jobs waiting for or holding the executor.
    pub queue_depth: AtomicI64,
    /// Jobs or frames that failed.
    pub errors: AtomicU64,
    /// Models loaded.
    pub models: AtomicU64,
    /// Client connections open now.
    pub connections: AtomicI64,
    /// Models in the model cache now.
    pub cached_models: AtomicU64,
    /// Bundle bytes of the models in the model cache now.
    pub cached_model_bytes: AtomicU64,
}

/// One item counted in a gauge until dropped, on every path.
pub struct Counted<'a>(&'a AtomicI64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts a job as waiting for or holding the executor until the guard drops.
    pub fn queued(&self) -> Counted<'_> {
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
        Counted(&self.queue_depth)
    }

    /// Counts a client connection as open until the guard drops.
    pub fn connected(&self) -> Counted<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Counted(&self.connections)
    }

    /// Sets the model cache's gauges to what it holds now.
    pub fn cache_holds(&self, models: usize, bytes: u64) {
        self.cached_models.store(models as u64, Ordering::Relaxed);
        self.cached_model_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters, labelled with the node name.
    pub fn render(&self, node: &str) -> String {
        let rows: [(&str, &str, &str, f64); 11] = [
            (
                "tessera_jobs_total",
                "counter",
                "Jobs finished (tiles, whole segments and input hand-overs).",
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
                "Time the executor spent running jobs and profiling models.",
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
            (
                "tessera_connections",
                "gauge",
                "Client connections open.",
                self.connections.load(Ordering::Relaxed) as f64,
            ),
            (
                "tessera_cached_models",
                "gauge",
                "Models held in the model cache.",
                self.cached_models.load(Ordering::Relaxed) as f64,
            ),
            (
                "tessera_cached_model_bytes",
                "gauge",
                "Bundle bytes of the models held in the model cache (model_cache_bytes is its budget).",
                self.cached_model_bytes.load(Ordering::Relaxed) as f64,
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

/// Largest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8 << 10;

/// Reads a request's head (up to the blank line), however it is split into
/// segments, for at most a second and [`MAX_HEAD`] bytes.
async fn read_head(sock: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        // The request line is all that is answered; a client that sends
        // bare line feeds (`printf ... | nc`) ends its head with "\n\n".
        let ended =
            |h: &[u8]| h.windows(2).any(|w| w == b"\n\n") || h.windows(4).any(|w| w == b"\r\n\r\n");
        while !ended(&head) && head.len() < MAX_HEAD {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
    head
}

/// The method and path (query dropped) of a request's first line.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    // Header bytes need not be UTF-8 (HTTP allows obs-text); the line must.
    let first = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(first).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/") || parts.next().is_some() {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

/// Serves `GET` and `HEAD /metrics` on `addr` until the task is dropped; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    node: String,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // Out of file descriptors, say: retrying at once would
                    // spin a core.
                    tracing::warn!("metrics endpoint: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            let (node, metrics) = (node.clone(), metrics.clone());
            tokio::spawn(async move {
                let head = read_head(&mut sock).await;
                let (status, body, send_body) = match request_line(&head) {
                    Some((method @ ("GET" | "HEAD"), "/metrics")) => {
                        ("200 OK", metrics.render(&node), method == "GET")
                    }
                    Some((_, "/metrics")) => (
                        "405 Method Not Allowed",
                        "GET or HEAD /metrics\n".to_string(),
                        true,
                    ),
                    _ => ("404 Not Found", "try GET /metrics\n".to_string(), true),
                };
                let allow = if status.starts_with("405") {
                    "allow: GET, HEAD\r\n"
                } else {
                    ""
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{allow}content-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    if send_body { body.as_str() } else { "" }
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::{Metrics, request_line, serve};

    /// A job is counted from when its inputs are in until it is done, on
    /// an error path as on the happy one.
    #[test]
    fn a_queued_job_counts_until_its_guard_drops_whichever_way() {
        let m = Metrics::default();
        let depth = |m: &Metrics| m.render("n").contains("tessera_queue_depth{node=\"n\"} 1");
        let failing = |m: &Metrics| -> Result<(), ()> {
            let _q = m.queued();
            assert!(depth(m));
            Err(())
        };
        assert!(failing(&m).is_err());
        assert_eq!(m.queue_depth.load(std::sync::atomic::Ordering::Relaxed), 0);
        let q = m.queued();
        assert!(depth(&m));
        drop(q);
        assert!(!depth(&m));
    }

    #[test]
    fn the_request_line_is_read_whatever_bytes_follow_it() {
        let head = b"GET /metrics HTTP/1.1\r\nX-Odd: \xe9\xff\r\n\r\n";
        assert_eq!(request_line(head), Some(("GET", "/metrics")));
    }

    #[test]
    fn only_the_metrics_path_matches() {
        fn line(s: &str) -> Option<(&str, &str)> {
            request_line(s.as_bytes())
        }
        assert_eq!(
            line("GET /metrics HTTP/1.1\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            line("GET /metrics?x=1 HTTP/1.0\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            line("GET /metricsX HTTP/1.1\r\n"),
            Some(("GET", "/metricsX"))
        );
        assert_eq!(line("GET /metrics"), None);
        assert_eq!(line(""), None);
    }

    /// Sends `parts` with a pause between them; returns the whole response.
    async fn ask(addr: std::net::SocketAddr, parts: &[&str]) -> String {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        for p in parts {
            sock.write_all(p.as_bytes()).await.expect("write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut out = String::new();
        sock.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn answers_get_and_head_of_metrics_only_however_the_request_is_split() {
        let metrics = Arc::new(Metrics::default());
        let (addr, task) = serve(([127, 0, 0, 1], 0).into(), "n".into(), metrics)
            .await
            .expect("serve");
        let split = ask(addr, &["GET /met", "rics HTTP/1.1\r\nHost: x\r\n", "\r\n"]).await;
        assert!(split.starts_with("HTTP/1.1 200"), "{split}");
        assert!(split.contains("tessera_tiles_total"), "{split}");
        let head = ask(addr, &["HEAD /metrics HTTP/1.1\r\n\r\n"]).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "a HEAD answer has no body: {head}"
        );
        for (req, status) in [
            ("GET /metricsX HTTP/1.1\r\n\r\n", "404"),
            ("GET /metrics/../x HTTP/1.1\r\n\r\n", "404"),
            ("POST /metrics HTTP/1.1\r\n\r\n", "405"),
        ] {
            let r = ask(addr, &[req]).await;
            assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{req:?}: {r}");
        }
        let post = ask(addr, &["POST /metrics HTTP/1.1\r\n\r\n"]).await;
        assert!(post.contains("allow: GET, HEAD\r\n"), "{post}");
        // Bare line feeds end the head too (no wait for the 1 s timeout).
        let lf = ask(addr, &["GET /metrics HTTP/1.0\nX: y\n\n"]).await;
        assert!(lf.starts_with("HTTP/1.1 200"), "{lf}");
        task.abort();
    }
}
