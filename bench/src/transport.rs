//! `cargo run -p bench --release -- transport [--sizes 64K,256K,1M,4M,16M]
//! [--mib 256] [--streams 4] [--rounds 3] [--link-mbps 200] [--out out/bench/transport.json]`
//!
//! Moves feature-map tiles over QUIC on loopback and over plain TCP on
//! loopback in the same run (same framing, same validation, same pooled
//! receive buffers), then through the link emulator at a configured
//! bandwidth. Reports MB/s, tiles/s and process CPU seconds per GiB moved
//! (`CLOCK_PROCESS_CPUTIME_ID`: user + system time of the whole process, so
//! it covers sender and receiver together, and the relay for the emulated link).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rkyv::util::AlignedVec;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use transport::emulator::{LinkConfig, Relay};
use transport::frame::{self, PREFIX_LEN};
use transport::{
    BufferPool, Capabilities, Connection, DType, Endpoint, EndpointConfig, Header, Hello, Identity,
    LinkTuning, Region, Tier, TileHeader, TileKey, TileKind,
};

/// Arguments of `bench transport`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Tile sizes, comma-separated (K and M suffixes).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_size,
          default_value = "64K,256K,1M,4M,16M")]
    sizes: Vec<u64>,
    /// MiB moved per size and transport.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    mib: u64,
    /// QUIC streams in flight.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Alternating QUIC/TCP rounds per size.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Bandwidth of the emulated link, Mbit/s.
    #[arg(long, default_value_t = 200.0)]
    link_mbps: f64,
    /// JSON report path (the figures are in the printed table and the JSON).
    #[arg(long, value_name = "FILE", default_value = "out/bench/transport.json")]
    out: PathBuf,
}

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("size '{s}'"))?;
    match n.checked_mul(mult) {
        Some(bytes) if bytes > 0 && bytes.is_multiple_of(4) => Ok(bytes),
        _ => bail!("size '{s}' must be a positive multiple of 4 bytes"),
    }
}

/// Process CPU time (user + system, all threads).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[derive(Debug, Clone, Serialize)]
struct Point {
    transport: String,
    variant: String,
    tile_bytes: u64,
    tiles: u64,
    secs: f64,
    mb_per_s: f64,
    tiles_per_s: f64,
    cpu_s_per_gib: f64,
}

impl Point {
    fn new(
        transport: &str,
        variant: &str,
        tile_bytes: u64,
        tiles: u64,
        secs: f64,
        cpu: Duration,
    ) -> Self {
        let bytes = (tile_bytes * tiles) as f64;
        Self {
            transport: transport.into(),
            variant: variant.into(),
            tile_bytes,
            tiles,
            secs,
            mb_per_s: bytes / secs / 1e6,
            tiles_per_s: tiles as f64 / secs,
            cpu_s_per_gib: cpu.as_secs_f64() / (bytes / f64::from(1u32 << 30)),
        }
    }
}

fn tile_header(id: u32, bytes: u64) -> TileHeader {
    // 1 x C x 64 x W with W chosen so the tile has `bytes` bytes.
    let elems = (bytes / 4) as u32;
    let (c, h) = if elems.is_multiple_of(64 * 64) {
        (elems / (64 * 64), 64)
    } else {
        (1, 1)
    };
    let w = elems / (c * h);
    TileHeader {
        key: TileKey {
            request_id: 1,
            block_id: 0,
            tile_id: id,
        },
        region: Region { y: 0, x: 0, h, w },
        map_hw: [h, w],
        shape: vec![1, c, h, w],
        dtype: DType::F32,
    }
}

fn hello(name: &str) -> Hello {
    Hello {
        node_id: name.into(),
        tier: Tier::Edge,
        adapter: "bench".into(),
        capabilities: Capabilities::default(),
    }
}

fn endpoint_config(id: &Identity, peer: &str, link: LinkTuning) -> EndpointConfig {
    let mut c = EndpointConfig::new(id.clone(), vec![peer.to_string()], hello(&id.name));
    c.link = link;
    c.recv_queue = 64;
    c.ack_timeout = Duration::from_secs(60);
    c.stream_idle_timeout = Duration::from_secs(30);
    c
}

async fn quic_pair(
    ids: &[Identity],
    link: LinkTuning,
    via: Option<&LinkConfig>,
) -> anyhow::Result<(Connection, Connection, Vec<Endpoint>, Option<Relay>)> {
    let localhost = ([127, 0, 0, 1], 0).into();
    let server = Endpoint::bind(
        localhost,
        endpoint_config(&ids[0], &ids[1].name, link.clone()),
    )?;
    let client = Endpoint::bind(localhost, endpoint_config(&ids[1], &ids[0].name, link))?;
    let relay = match via {
        Some(cfg) => Some(Relay::start(localhost, server.local_addr()?, cfg).await?),
        None => None,
    };
    let addr = relay
        .as_ref()
        .map_or(server.local_addr()?, Relay::local_addr);
    let (acc, con) = tokio::join!(server.accept(), client.connect(addr, &ids[0].name));
    let sc = acc.context("server endpoint closed")??;
    let cc = con?;
    Ok((sc, cc, vec![server, client], relay))
}

/// Sends `tiles` tiles of `tile_bytes` with up to `streams` in flight; returns
/// (seconds from first send to last receipt, CPU time).
async fn quic_run(
    sc: &Connection,
    cc: &Connection,
    tile_bytes: u64,
    tiles: u32,
    streams: usize,
    id0: u32,
) -> anyhow::Result<(f64, Duration)> {
    let data: Arc<[f32]> = (0..tile_bytes / 4)
        .map(|i| i as f32)
        .collect::<Vec<_>>()
        .into();
    let recv = {
        let sc = sc.clone();
        tokio::spawn(async move {
            for _ in 0..tiles {
                let t = sc.recv_tile().await.context("connection closed early")?;
                anyhow::ensure!(
                    t.payload.len() as u64 * 4 == tile_bytes,
                    "wrong payload size"
                );
            }
            Ok::<_, anyhow::Error>(Instant::now())
        })
    };
    let sem = Arc::new(Semaphore::new(streams));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..tiles {
        let permit = sem.clone().acquire_owned().await?;
        let (cc, data) = (cc.clone(), data.clone());
        let hdr = tile_header(id0 + i, tile_bytes);
        sends.spawn(async move {
            let r = cc.send_tile_owned(TileKind::Tile, &hdr, data).await;
            drop(permit);
            r
        });
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    let end = recv.await??;
    let cpu = cpu_time() - cpu0;
    Ok(((end - t0).as_secs_f64(), cpu))
}

async fn quic_point(
    ids: &[Identity],
    link: LinkTuning,
    tile_bytes: u64,
    tiles: u32,
    streams: usize,
) -> anyhow::Result<(f64, Duration)> {
    let (sc, cc, _eps, _relay) = quic_pair(ids, link, None).await?;
    // Warm-up: handshake done, MTU probing and congestion window ramp, pool filled.
    quic_run(
        &sc,
        &cc,
        tile_bytes,
        (streams as u32).max(2),
        streams,
        1_000_000,
    )
    .await?;
    let (secs, cpu) = quic_run(&sc, &cc, tile_bytes, tiles, streams, 0).await?;
    let st = cc.quinn().stats();
    if std::env::var_os("TRANSPORT_BENCH_STATS").is_some() {
        println!(
            "    [{} KiB x {tiles}] mtu {} cwnd {} lost packets {} datagrams sent {} congestion events {}",
            tile_bytes >> 10,
            st.path.current_mtu,
            st.path.cwnd,
            st.path.lost_packets,
            st.udp_tx.datagrams,
            st.path.congestion_events
        );
    }
    cc.close("bench done");
    Ok((secs, cpu))
}

async fn tcp_point(tile_bytes: u64, tiles: u32) -> anyhow::Result<(f64, Duration)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let caps = transport::Caps::default();
        let pool = BufferPool::default();
        let mut n = 0;
        loop {
            let mut p = [0u8; PREFIX_LEN];
            match s.read_exact(&mut p).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
            let prefix = frame::decode_prefix(&p, &caps)?;
            let mut h = AlignedVec::<16>::with_capacity(prefix.header_len as usize);
            h.resize(prefix.header_len as usize, 0);
            s.read_exact(&mut h).await?;
            frame::decode_header(&prefix, &h, &caps)?;
            let mut payload = pool.take((prefix.payload_len / 4) as usize);
            s.read_exact(payload.as_bytes_mut()).await?;
            n += 1;
        }
        Ok::<_, anyhow::Error>((n, Instant::now()))
    });
    let data: Vec<f32> = (0..tile_bytes / 4).map(|i| i as f32).collect();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    for i in 0..tiles {
        let head = frame::encode_head(&Header::Tile(tile_header(i, tile_bytes)), tile_bytes)?;
        s.write_all(&head).await?;
        s.write_all(bytemuck::cast_slice(&data)).await?;
    }
    s.shutdown().await?;
    let (n, end) = server.await??;
    anyhow::ensure!(n == tiles, "TCP receiver got {n} of {tiles} tiles");
    Ok(((end - t0).as_secs_f64(), cpu_time() - cpu0))
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The round with the median throughput (its CPU figure comes with it).
fn median_point(ps: &[Point]) -> Point {
    let mut v: Vec<&Point> = ps.iter().collect();
    v.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
    v[v.len() / 2].clone()
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// MTU and windows close to quinn's own defaults (1200-byte start, 1452 ceiling).
fn quinn_like_defaults() -> LinkTuning {
    LinkTuning {
        bandwidth_bytes_per_s: 100_000_000,
        rtt: Duration::from_millis(100),
        ..LinkTuning::default()
    }
}

/// Runs the transport benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.streams == 0
        || args.rounds == 0
        || !(args.link_mbps > 0.0 && args.link_mbps.is_finite())
    {
        bail!("--streams, --rounds and --link-mbps must be positive (and the bandwidth finite)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    // Before the rounds: a bad --out would otherwise fail after them.
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let ids = transport::certs::ephemeral(&["edge-1".to_string(), "coord".to_string()])?;
    let mut points = Vec::new();
    println!(
        "tiles over loopback: QUIC ({} streams in flight, loopback tuning) vs plain TCP, same framing;\n{} alternating rounds per size, medians (worst = lowest QUIC/TCP of a round)",
        args.streams, args.rounds
    );
    println!(
        "{:>8} | {:>9} {:>8} {:>9} | {:>9} {:>8} {:>9} | {:>8} {:>7}",
        "tile",
        "QUIC MB/s",
        "tiles/s",
        "CPU s/GiB",
        "TCP MB/s",
        "tiles/s",
        "CPU s/GiB",
        "QUIC/TCP",
        "worst"
    );
    let mut ratios = Vec::new();
    for &size in &args.sizes {
        // Rounds alternate QUIC and TCP, so a burst of load or a fast spell
        // of loopback TCP falls on both; the table shows medians.
        let per_round = args.mib.div_ceil(args.rounds as u64);
        let tiles = ((per_round << 20) / size).clamp(8, 20_000) as u32;
        let (mut qs, mut ts, mut rs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            let (secs, cpu) =
                quic_point(&ids, LinkTuning::loopback(), size, tiles, args.streams).await?;
            let q = Point::new("quic", "loopback tuning", size, u64::from(tiles), secs, cpu);
            let (secs, cpu) = tcp_point(size, tiles).await?;
            let t = Point::new("tcp", "plain", size, u64::from(tiles), secs, cpu);
            rs.push(q.mb_per_s / t.mb_per_s);
            qs.push(q);
            ts.push(t);
        }
        let (q, t) = (median_point(&qs), median_point(&ts));
        let ratio = median(&rs);
        let worst = rs.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{:>8} | {:>9.0} {:>8.0} {:>9.2} | {:>9.0} {:>8.0} {:>9.2} | {:>7.0}% {:>6.0}%",
            human(size),
            q.mb_per_s,
            q.tiles_per_s,
            q.cpu_s_per_gib,
            t.mb_per_s,
            t.tiles_per_s,
            t.cpu_s_per_gib,
            100.0 * ratio,
            100.0 * worst,
        );
        ratios.push(serde_json::json!({ "tile_bytes": size, "rounds": rs, "median": ratio }));
        points.extend(qs);
        points.extend(ts);
    }

    // What pays: the same 4 MiB tiles under different settings.
    let size = 4 << 20;
    let tiles = ((args.mib << 20) / size).clamp(8, 20_000) as u32;
    println!("\nQUIC settings at {} tiles:", human(size));
    // The earlier loopback settings: datagrams small enough for GSO batches
    // of 10, and an ACK for every second packet.
    let every_2nd = LinkTuning {
        ack_every: 0,
        ..LinkTuning::loopback()
    };
    let gso_sized = LinkTuning {
        max_mtu: 6400,
        ..every_2nd.clone()
    };
    let variants: [(&str, LinkTuning, usize); 6] = [
        ("MTU 1200-1452, 1 stream", quinn_like_defaults(), 1),
        (
            "MTU 1200-1452, N streams",
            quinn_like_defaults(),
            args.streams,
        ),
        (
            "MTU 6000-6400 with GSO, ACK every 2nd, N streams",
            gso_sized,
            args.streams,
        ),
        (
            "MTU 6000-65000, ACK every 2nd, N streams",
            every_2nd,
            args.streams,
        ),
        (
            "loopback: MTU 6000-65000, ACK every 8th, 1 stream",
            LinkTuning::loopback(),
            1,
        ),
        (
            "loopback: MTU 6000-65000, ACK every 8th, N streams",
            LinkTuning::loopback(),
            args.streams,
        ),
    ];
    for (name, link, streams) in variants {
        let (s, c) = quic_point(&ids, link, size, tiles, streams).await?;
        let p = Point::new(
            "quic",
            &name.replace('N', &args.streams.to_string()),
            size,
            u64::from(tiles),
            s,
            c,
        );
        println!(
            "  {:<50} {:>7.0} MB/s  {:>6.2} CPU s/GiB",
            p.variant, p.mb_per_s, p.cpu_s_per_gib
        );
        points.push(p);
    }

    // Through the emulator: does QUIC fill a configured link?
    let link = LinkConfig {
        bandwidth_mbps: args.link_mbps,
        delay_ms: 5.0,
        ..LinkConfig::default()
    };
    let want = link.bytes_per_s().context("link bandwidth")?;
    let size = 1 << 20;
    let tiles = ((want * 4.0) / size as f64).ceil().max(8.0) as u32;
    let (sc, cc, _eps, relay) = quic_pair(&ids, link.tuning(), Some(&link)).await?;
    quic_run(&sc, &cc, size, 4, args.streams, 1_000_000).await?;
    // Steady state: what the second half of the tiles adds, run against a
    // run of the first half alone, so slow start and the link's delay drop
    // out. (From the first tile's arrival on overstated it up to 5×: with
    // tiles on concurrent streams most bytes have crossed by then.)
    let half = tiles / 2;
    let (half_secs, _) = quic_run(&sc, &cc, size, half, args.streams, 2_000_000).await?;
    let (secs, cpu) = quic_run(&sc, &cc, size, tiles, args.streams, 0).await?;
    cc.close("bench done");
    drop(relay);
    // Noise can make the full run no longer than its half; then there is no figure.
    let achieved = if secs > half_secs {
        (size * u64::from(tiles - half)) as f64 / (secs - half_secs)
    } else {
        f64::NAN
    };
    let mut p = Point::new("quic", "emulated link", size, u64::from(tiles), secs, cpu);
    p.variant = format!("emulated {} Mbit/s, 5 ms one-way", args.link_mbps);
    println!(
        "\nemulated link {} Mbit/s, 5 ms: {:.1} MB/s steady of {:.1} MB/s configured = {:.1}% ({:.1}% including slow start), {:.2} CPU s/GiB",
        args.link_mbps,
        achieved / 1e6,
        want / 1e6,
        100.0 * achieved / want,
        100.0 * p.mb_per_s * 1e6 / want,
        p.cpu_s_per_gib
    );
    points.push(p);

    let json = serde_json::json!({
        "benchmark": "transport",
        "cpu_time": "CLOCK_PROCESS_CPUTIME_ID of the whole process (sender + receiver [+ relay])",
        "streams": args.streams,
        "rounds": args.rounds,
        "quic_over_tcp": ratios,
        "emulated_link": { "configured_mb_per_s": want / 1e6, "achieved_steady_mb_per_s": achieved / 1e6, "ratio": achieved / want },
        "points": points,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&json)?)
        .with_context(|| args.out.display().to_string())?;
    println!("wrote {}", args.out.display());
    Ok(())
}
