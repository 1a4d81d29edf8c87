//! Proves the receive path's copy budget: per received tile at most one
//! payload-sized allocation (the pooled buffer the stream is read into; none
//! once the pool is warm), counted by a global allocator in this test binary.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use tracking_allocator::{AllocationGroupId, AllocationRegistry, AllocationTracker, Allocator};
use transport::TileKind;

#[global_allocator]
static GLOBAL: Allocator<std::alloc::System> = Allocator::system();

const ELEMS: usize = 1 << 20; // 4 MiB tiles
const THRESHOLD: usize = ELEMS; // a quarter of the payload counts as "payload-sized"

static BIG: AtomicUsize = AtomicUsize::new(0);

struct CountBig;

impl AllocationTracker for CountBig {
    fn allocated(
        &self,
        _addr: usize,
        object_size: usize,
        _wrapped: usize,
        _group: AllocationGroupId,
    ) {
        if object_size >= THRESHOLD {
            BIG.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn deallocated(
        &self,
        _addr: usize,
        _object: usize,
        _wrapped: usize,
        _src: AllocationGroupId,
        _cur: AllocationGroupId,
    ) {
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_one_payload_sized_allocation_per_received_tile() -> TestResult {
    AllocationRegistry::set_global_tracker(CountBig).map_err(|e| e.to_string())?;
    let (_dir, _se, _ce, sc, cc) = {
        let dir = certs(&["edge-1", "coord"])?;
        let (se, ce, sc, cc) = pair(
            config(dir.path(), "edge-1", &["coord"])?,
            config(dir.path(), "coord", &["edge-1"])?,
            "edge-1",
        )
        .await?;
        (dir, se, ce, sc, cc)
    };
    let tiles = 6u32;
    // Built before counting starts; sent without copying (quinn owns the Arc).
    let data: Vec<Arc<[f32]>> = (0..tiles).map(|i| Arc::from(pattern(ELEMS, i))).collect();
    let sums: Vec<u64> = data.iter().map(|d| checksum(d)).collect();

    AllocationRegistry::enable_tracking();
    let mut per_tile = Vec::new();
    for i in 0..tiles {
        let before = BIG.load(Ordering::SeqCst);
        let hdr = header(i, 16, 256, 256);
        let rx = cc.expect_ack(hdr.key, TileKind::Tile);
        cc.send_tile_owned(TileKind::Tile, &hdr, data[i as usize].clone())
            .await?;
        let t = sc.recv_tile().await.ok_or("no tile")?;
        cc.wait_ack(hdr.key, rx).await?;
        // The payload is a view of the buffer the stream was read into.
        let view: &[f32] = &t.payload;
        assert_eq!(view.len(), ELEMS);
        assert_eq!(checksum(view), sums[i as usize]);
        drop(t);
        per_tile.push(BIG.load(Ordering::SeqCst) - before);
    }
    AllocationRegistry::disable_tracking();
    eprintln!("payload-sized allocations per tile: {per_tile:?}");
    assert!(
        per_tile.iter().all(|&n| n <= 1),
        "more than one payload-sized allocation: {per_tile:?}"
    );
    // After the first tile the pool serves every buffer.
    assert!(
        per_tile[1..].iter().all(|&n| n == 0),
        "pool not reused: {per_tile:?}"
    );
    Ok(())
}
