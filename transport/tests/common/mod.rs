//! Shared set-up for the transport integration tests: a throw-away cluster
//! CA, endpoint configs with short timeouts, deterministic payloads.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use transport::{
    Capabilities, Connection, DType, Endpoint, EndpointConfig, Hello, Identity, LinkTuning, Region,
    Tier, TileHeader, TileKey,
};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub fn certs(
    nodes: &[&str],
) -> Result<tempfile::TempDir, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
    transport::certs::generate(dir.path(), &names)?;
    Ok(dir)
}

pub fn hello(name: &str) -> Hello {
    Hello {
        node_id: name.into(),
        tier: Tier::Edge,
        adapter: "test".into(),
        capabilities: Capabilities {
            gflops: 1.0,
            memory_bytes: 1 << 30,
            max_payload_bytes: 1 << 28,
            features: vec![],
        },
    }
}

pub fn config(
    dir: &Path,
    name: &str,
    allowed: &[&str],
) -> Result<EndpointConfig, transport::Error> {
    let id = Identity::load(dir, name)?;
    let mut c = EndpointConfig::new(
        id,
        allowed.iter().map(|s| s.to_string()).collect(),
        hello(name),
    );
    c.link = LinkTuning {
        max_concurrent_streams: 8,
        idle_timeout: Duration::from_secs(5),
        ..LinkTuning::loopback()
    };
    c.stream_idle_timeout = Duration::from_millis(300);
    c.ack_timeout = Duration::from_secs(3);
    Ok(c)
}

pub fn localhost() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// A tile header for a 1 x c x h x w tile.
pub fn header(tile_id: u32, c: u32, h: u32, w: u32) -> TileHeader {
    TileHeader {
        key: TileKey {
            request_id: 1,
            block_id: 0,
            tile_id,
        },
        region: Region { y: 0, x: 0, h, w },
        map_hw: [h, w],
        shape: vec![1, c, h, w],
        dtype: DType::F32,
    }
}

/// Deterministic, tile-specific values (so a mixed-up payload is caught).
pub fn pattern(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 * 1e-3)
        .collect()
}

/// FNV-1a over the payload bytes.
pub fn checksum(data: &[f32]) -> u64 {
    bytemuck::cast_slice::<f32, u8>(data)
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// A server endpoint for `server` and a client endpoint for `client`, connected.
pub async fn pair(
    server_cfg: EndpointConfig,
    client_cfg: EndpointConfig,
    server: &str,
) -> Result<(Endpoint, Endpoint, Connection, Connection), Box<dyn std::error::Error + Send + Sync>>
{
    let se = Endpoint::bind(localhost(), server_cfg)?;
    let ce = Endpoint::bind(localhost(), client_cfg)?;
    let addr = se.local_addr()?;
    let (accepted, connected) = tokio::join!(se.accept(), ce.connect(addr, server));
    let sc = accepted.ok_or("endpoint closed")??;
    let cc = connected?;
    Ok((se, ce, sc, cc))
}
