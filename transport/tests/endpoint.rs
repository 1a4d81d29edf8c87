//! The quinn layer on loopback: tiles, acks, control frames, shutdown, and
//! what the endpoint does with broken, slow, abandoned and flooding streams.

mod common;

use std::time::Duration;

use common::*;
use quinn::VarInt;
use transport::frame::{self, FrameKind};
use transport::{Control, ErrorCode, Header, PlanUpdate, Profile, Span, TileKind};

const SERVER: &str = "edge-1";
const CLIENT: &str = "coord";

async fn setup() -> Result<
    (
        tempfile::TempDir,
        transport::Endpoint,
        transport::Endpoint,
        transport::Connection,
        transport::Connection,
    ),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let dir = certs(&[SERVER, CLIENT])?;
    let (se, ce, sc, cc) = pair(
        config(dir.path(), SERVER, &[CLIENT])?,
        config(dir.path(), CLIENT, &[SERVER])?,
        SERVER,
    )
    .await?;
    Ok((dir, se, ce, sc, cc))
}

/// The next Error frame the connection receives (skipping other control frames).
async fn next_error(c: &transport::Connection) -> Option<transport::ErrorFrame> {
    let wait = async {
        while let Some(ctl) = c.recv_control().await {
            if let Control::Error(e) = ctl {
                return Some(e);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_arrive_intact_and_are_acknowledged() -> TestResult {
    let (_dir, _se, _ce, sc, cc) = setup().await?;
    assert_eq!(sc.peer(), CLIENT);
    assert_eq!(cc.peer(), SERVER);
    assert_eq!(sc.peer_hello().await?.node_id, CLIENT);
    assert_eq!(cc.peer_hello().await?.node_id, SERVER);

    let shapes = [(1, 1, 1), (3, 17, 19), (16, 128, 128), (4, 64, 64)];
    for (i, &(c, h, w)) in shapes.iter().enumerate() {
        let hdr = header(i as u32, c, h, w);
        let data = pattern((c * h * w) as usize, i as u32);
        let ack = if i == 3 {
            // Zero-copy path: quinn owns the Vec.
            let rx = cc.expect_ack(hdr.key, TileKind::Tile);
            cc.send_tile_owned(TileKind::Tile, &hdr, data.clone())
                .await?;
            cc.wait_ack(hdr.key, rx).await?
        } else {
            cc.send_tile_acked(TileKind::Tile, &hdr, &data).await?
        };
        assert_eq!(ack.key, hdr.key);
        assert!(!ack.duplicate);
        let got = sc.recv_tile().await.ok_or("no tile")?;
        assert_eq!(got.kind, TileKind::Tile);
        assert_eq!(got.header, hdr);
        assert_eq!(&got.payload[..], &data[..]);
    }
    // A result goes back the other way.
    let hdr = header(9, 2, 5, 5);
    let out = pattern(50, 99);
    sc.send_tile_result(&hdr, &out).await?;
    let got = cc.recv_tile().await.ok_or("no result")?;
    assert_eq!(got.kind, TileKind::Result);
    assert_eq!(checksum(&got.payload), checksum(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_payloads_arrive_padded_and_intact() -> TestResult {
    let (_dir, _se, _ce, sc, cc) = setup().await?;
    // 3×5×7 = 105 bytes: not a multiple of 4, so the frame carries 108.
    let mut hdr = header(1, 3, 5, 7);
    hdr.dtype = transport::DType::U8;
    assert_eq!(hdr.payload_bytes(), Some(108));
    let mut bytes: Vec<u8> = (0..105u32).map(|i| (i * 37 % 256) as u8).collect();
    // The unpadded length is refused before anything is sent.
    assert!(
        cc.send_tile_bytes(TileKind::Tile, &hdr, &bytes)
            .await
            .is_err()
    );
    bytes.resize(108, 0);
    cc.send_tile_bytes(TileKind::Tile, &hdr, &bytes).await?;
    let got = sc.recv_tile().await.ok_or("no tile")?;
    assert_eq!(got.header, hdr);
    assert_eq!(got.payload.as_bytes(), &bytes[..]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_tile_is_acknowledged_but_delivered_once() -> TestResult {
    let (_dir, _se, _ce, sc, cc) = setup().await?;
    let hdr = header(7, 1, 8, 8);
    let data = pattern(64, 7);
    let first = cc.send_tile_acked(TileKind::Tile, &hdr, &data).await?;
    let second = cc.send_tile_acked(TileKind::Tile, &hdr, &data).await?;
    assert!(!first.duplicate);
    assert!(second.duplicate);
    // The same key as a *result* is a different frame.
    let third = cc.send_tile_acked(TileKind::Result, &hdr, &data).await?;
    assert!(!third.duplicate);
    let a = sc.recv_tile().await.ok_or("missing")?;
    let b = sc.recv_tile().await.ok_or("missing")?;
    assert_eq!((a.kind, b.kind), (TileKind::Tile, TileKind::Result));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sc.recv_tile())
            .await
            .is_err(),
        "duplicate delivered"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_and_graceful_shutdown_drain() -> TestResult {
    let (_dir, _se, _ce, sc, cc) = setup().await?;
    let profile = Profile {
        node_id: CLIENT.into(),
        spans: vec![Span {
            kind: "send".into(),
            start_us: 1,
            end_us: 5,
            bytes: 64,
            flops: 0,
        }],
    };
    cc.send_control(Control::Profile(profile.clone())).await?;
    cc.send_control(Control::PlanUpdate(PlanUpdate {
        epoch: 3,
        body: vec![1, 2],
    }))
    .await?;
    assert_eq!(sc.recv_control().await, Some(Control::Profile(profile)));
    assert_eq!(
        sc.recv_control().await,
        Some(Control::PlanUpdate(PlanUpdate {
            epoch: 3,
            body: vec![1, 2]
        }))
    );

    // Ten tiles queued without waiting, then shutdown: it must wait for all acks.
    let n = 10;
    for i in 0..n {
        cc.send_tile(&header(i, 4, 32, 32), &pattern(4096, i))
            .await?;
    }
    cc.shutdown("done").await?;
    assert!(
        cc.send_tile(&header(99, 1, 1, 1), &[0.0]).await.is_err(),
        "no sends after shutdown"
    );
    let mut ids = Vec::new();
    while let Some(t) = sc.recv_tile().await {
        assert_eq!(&t.payload[..], &pattern(4096, t.header.key.tile_id)[..]);
        ids.push(t.header.key.tile_id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..n).collect::<Vec<_>>());
    assert!(matches!(sc.recv_control().await, Some(Control::Shutdown(s)) if s.reason == "done"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_gets_an_error_frame_and_the_connection_keeps_working() -> TestResult {
    let (_dir, _se, _ce, sc, cc) = setup().await?;
    // Wrong version.
    let mut bytes = frame::encode_frame(&Header::Tile(header(1, 1, 2, 2)), &[0u8; 16])?;
    bytes[4] = 7;
    let mut s = cc.quinn().open_uni().await?;
    s.write_all(&bytes).await?;
    s.finish()?;
    let e = next_error(&cc).await.ok_or("no error frame")?;
    assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Version);
    // The stop may come after quinn has already seen the whole (finished) stream acknowledged.
    let stopped = s.stopped().await?;
    assert!(
        stopped.is_none() || stopped == Some(VarInt::from_u32(ErrorCode::Version as u32)),
        "{stopped:?}"
    );
    // Shape says 16 bytes, payload carries 20: inconsistent.
    let mut bytes = frame::encode_frame(&Header::Tile(header(2, 1, 2, 2)), &[0u8; 16])?;
    bytes[12..20].copy_from_slice(&20u64.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 4]);
    let mut s = cc.quinn().open_uni().await?;
    s.write_all(&bytes).await?;
    s.finish()?;
    let e = next_error(&cc).await.ok_or("no error frame")?;
    assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Inconsistent);
    // Oversize payload announced in the prefix alone.
    let mut s = cc.quinn().open_uni().await?;
    s.write_all(&frame::encode_prefix(FrameKind::Tile, 64, 1 << 40))
        .await?;
    let e = next_error(&cc).await.ok_or("no error frame")?;
    assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Limit);
    // Still serving.
    let hdr = header(3, 1, 4, 4);
    cc.send_tile_acked(TileKind::Tile, &hdr, &pattern(16, 3))
        .await?;
    let t = sc.recv_tile().await.ok_or("no tile")?;
    assert_eq!(t.header, hdr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_mid_tile_delivers_nothing_and_the_tile_can_be_resent() -> TestResult {
    let (_dir, _se, _ce, sc, cc) = setup().await?;
    let hdr = header(5, 16, 128, 128);
    let data = pattern(16 * 128 * 128, 5);
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let mut s = cc.quinn().open_uni().await?;
    s.write_all(&frame::encode_head(
        &Header::Tile(hdr.clone()),
        bytes.len() as u64,
    )?)
    .await?;
    s.write_all(&bytes[..bytes.len() / 2]).await?;
    s.reset(VarInt::from_u32(1))?;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sc.recv_tile())
            .await
            .is_err(),
        "partial tile delivered"
    );
    // Not remembered as received: the re-send goes through.
    let ack = cc.send_tile_acked(TileKind::Tile, &hdr, &data).await?;
    assert!(!ack.duplicate);
    let t = sc.recv_tile().await.ok_or("no tile")?;
    assert_eq!(checksum(&t.payload), checksum(&data));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_transfer_leaves_the_endpoint_serving() -> TestResult {
    let dir = certs(&[SERVER, CLIENT])?;
    // A killed peer sends no CONNECTION_CLOSE (and the close below may not
    // get out before the endpoint is dropped): the server must find out
    // from its idle timeout, kept short here so the test is bounded.
    let mut scfg = config(dir.path(), SERVER, &[CLIENT])?;
    scfg.link.idle_timeout = Duration::from_secs(1);
    scfg.stream_idle_timeout = Duration::from_secs(1);
    let (se, ce, sc, cc) = pair(scfg, config(dir.path(), CLIENT, &[SERVER])?, SERVER).await?;
    let hdr = header(1, 16, 128, 128);
    let data = pattern(16 * 128 * 128, 1);
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let mut s = cc.quinn().open_uni().await?;
    s.write_all(&frame::encode_head(
        &Header::Tile(hdr.clone()),
        bytes.len() as u64,
    )?)
    .await?;
    s.write_all(&bytes[..bytes.len() / 3]).await?;
    // The peer dies: no FIN, no reset, just a closed connection and a gone endpoint.
    ce.close();
    drop((s, cc, ce));
    let r = tokio::time::timeout(Duration::from_secs(5), sc.recv_tile()).await?;
    assert!(r.is_none(), "a partial tile was delivered");
    // A new peer gets through.
    let ce2 = transport::Endpoint::bind(localhost(), config(dir.path(), CLIENT, &[SERVER])?)?;
    let (acc, con) = tokio::join!(se.accept(), ce2.connect(se.local_addr()?, SERVER));
    let sc2 = acc.ok_or("closed")??;
    let cc2 = con?;
    cc2.send_tile_acked(TileKind::Tile, &hdr, &data).await?;
    let t = sc2.recv_tile().await.ok_or("no tile")?;
    assert_eq!(checksum(&t.payload), checksum(&data));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_neither_hangs_nor_holds_up_the_next() -> TestResult {
    let dir = certs(&[SERVER, CLIENT])?;
    let mut scfg = config(dir.path(), SERVER, &[CLIENT])?;
    scfg.handshake_timeout = Duration::from_millis(500);
    let se = transport::Endpoint::bind(localhost(), scfg)?;
    // A peer that sends its first packet and then goes quiet: a socket
    // passes the client's Initial on to the server and nothing after it.
    let mute = tokio::net::UdpSocket::bind(localhost()).await?;
    let ce = transport::Endpoint::bind(localhost(), config(dir.path(), CLIENT, &[SERVER])?)?;
    let stalled = tokio::spawn({
        let to = mute.local_addr()?;
        async move { ce.connect(to, SERVER).await }
    });
    let mut initial = vec![0u8; 2048];
    let (n, _) =
        tokio::time::timeout(Duration::from_secs(5), mute.recv_from(&mut initial)).await??;
    mute.send_to(&initial[..n], se.local_addr()?).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), se.incoming())
        .await?
        .ok_or("closed")?;
    let first = tokio::spawn(first.finish());
    // Meanwhile another peer connects and is served.
    let ce2 = transport::Endpoint::bind(localhost(), config(dir.path(), CLIENT, &[SERVER])?)?;
    let addr = se.local_addr()?;
    let (acc, con) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(se.accept(), ce2.connect(addr, SERVER))
    })
    .await?;
    acc.ok_or("closed")??;
    con?;
    // The stalled one is given up after the handshake timeout.
    let r = tokio::time::timeout(Duration::from_secs(5), first).await??;
    let e = r
        .err()
        .ok_or("a handshake that never finished was accepted")?;
    assert!(e.to_string().contains("no handshake within"), "{e}");
    stalled.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_streams_time_out() -> TestResult {
    let dir = certs(&[SERVER, CLIENT])?;
    let mut scfg = config(dir.path(), SERVER, &[CLIENT])?;
    scfg.min_stream_rate = 10_000_000;
    let (_se, _ce, sc, cc) = pair(scfg, config(dir.path(), CLIENT, &[SERVER])?, SERVER).await?;
    // Half a prefix, then silence.
    let mut s = cc.quinn().open_uni().await?;
    s.write_all(&frame::encode_prefix(FrameKind::Tile, 64, 64)[..7])
        .await?;
    let t0 = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(3), s.stopped()).await??;
    assert_eq!(stopped, Some(VarInt::from_u32(ErrorCode::Timeout as u32)));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(
        ErrorCode::from_u16(next_error(&cc).await.ok_or("no error frame")?.code),
        ErrorCode::Timeout
    );

    // A trickle: one byte every 50 ms never hits the idle timeout, but the
    // whole-tile deadline (300 ms + 1 MiB at 10 MB/s) stops it.
    let hdr = header(1, 16, 128, 128);
    let mut s = cc.quinn().open_uni().await?;
    s.write_all(&frame::encode_head(&Header::Tile(hdr), 1 << 20)?)
        .await?;
    let t0 = tokio::time::Instant::now();
    let trickle = async {
        loop {
            if s.write_all(&[0u8]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), trickle).await?;
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sc.recv_tile())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_streams_is_bounded_and_others_still_get_through() -> TestResult {
    let dir = certs(&[SERVER, CLIENT])?;
    let (se, _ce, sc, cc) = pair(
        config(dir.path(), SERVER, &[CLIENT])?,
        config(dir.path(), CLIENT, &[SERVER])?,
        SERVER,
    )
    .await?;
    // Open as many stalled streams as the server allows.
    let mut open = Vec::new();
    for _ in 0..100 {
        match tokio::time::timeout(Duration::from_millis(100), cc.quinn().open_uni()).await {
            Ok(Ok(mut s)) => {
                s.write_all(&frame::MAGIC).await?;
                open.push(s);
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => break,
        }
    }
    // 8 concurrent uni streams, one of them the flooder's control stream.
    assert_eq!(open.len(), 7, "stream limit not enforced");
    // The server stops each stalled stream when it goes idle.
    for s in &mut open {
        assert_eq!(
            s.stopped().await?,
            Some(VarInt::from_u32(ErrorCode::Timeout as u32))
        );
    }
    // While the flooder still holds its streams (so its credit stays spent),
    // another peer is served normally.
    let ce2 = transport::Endpoint::bind(localhost(), config(dir.path(), CLIENT, &[SERVER])?)?;
    let (acc, con) = tokio::join!(se.accept(), ce2.connect(se.local_addr()?, SERVER));
    let (sc2, cc2) = (acc.ok_or("closed")??, con?);
    let hdr = header(1, 2, 16, 16);
    cc2.send_tile_acked(TileKind::Tile, &hdr, &pattern(512, 1))
        .await?;
    assert_eq!(sc2.recv_tile().await.ok_or("no tile")?.header, hdr);
    // The flooder itself is stuck until it lets go of the streams (dropping resets them).
    assert!(matches!(
        cc.send_tile(&hdr, &pattern(512, 1)).await,
        Err(transport::Error::Timeout(_))
    ));
    drop(open);
    let hdr = header(2, 2, 16, 16);
    cc.send_tile_acked(TileKind::Tile, &hdr, &pattern(512, 2))
        .await?;
    assert_eq!(sc.recv_tile().await.ok_or("no tile")?.header, hdr);
    Ok(())
}
