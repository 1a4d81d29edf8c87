//! The sans-IO framing core against hostile and broken input: no sockets.

use proptest::prelude::*;
use transport::frame::{self, FrameKind, PREFIX_LEN};
use transport::{
    Ack, Capabilities, Caps, DType, ErrorFrame, FrameError, Header, Hello, PlanUpdate, Profile,
    Region, Shutdown, Span, Tier, TileHeader, TileKey,
};

fn tile(shape: Vec<u32>) -> TileHeader {
    let r = shape.len();
    let (h, w) = (shape[r - 2], shape[r - 1]);
    TileHeader {
        key: TileKey {
            request_id: 9,
            block_id: 2,
            tile_id: 5,
        },
        region: Region { y: 3, x: 4, h, w },
        map_hw: [h + 10, w + 10],
        shape,
        dtype: DType::F32,
    }
}

fn all_headers() -> Vec<Header> {
    vec![
        Header::Hello(Hello {
            node_id: "edge-1".into(),
            tier: Tier::Edge,
            adapter: "llvmpipe".into(),
            capabilities: Capabilities {
                gflops: 12.5,
                memory_bytes: 1 << 30,
                max_payload_bytes: 1 << 28,
                features: vec!["f16".into()],
            },
        }),
        Header::Tile(tile(vec![1, 8, 6, 7])),
        Header::TileResult(tile(vec![1, 4, 3, 3])),
        Header::Ack(Ack {
            key: TileKey {
                request_id: 1,
                block_id: 2,
                tile_id: 3,
            },
            result: true,
            duplicate: false,
        }),
        Header::Error(ErrorFrame {
            code: 3,
            message: "too big".into(),
        }),
        Header::Profile(Profile {
            node_id: "cloud".into(),
            spans: vec![Span {
                kind: "conv".into(),
                start_us: 10,
                end_us: 20,
                bytes: 0,
                flops: 1000,
            }],
        }),
        Header::PlanUpdate(PlanUpdate {
            epoch: 4,
            body: vec![1, 2, 3],
        }),
        Header::Shutdown(Shutdown {
            reason: "done".into(),
        }),
    ]
}

fn payload_for(h: &Header) -> Vec<u8> {
    match h {
        Header::Tile(t) | Header::TileResult(t) => {
            let n = t.elements().unwrap_or(0) as usize;
            (0..n)
                .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
                .collect()
        }
        _ => Vec::new(),
    }
}

#[test]
fn every_frame_kind_round_trips() -> Result<(), FrameError> {
    let caps = Caps::default();
    for h in all_headers() {
        let payload = payload_for(&h);
        let bytes = frame::encode_frame(&h, &payload)?;
        let d = frame::decode_frame(&bytes, &caps)?;
        assert_eq!(d.header, h);
        assert_eq!(d.payload, &payload[..]);
        assert_eq!(d.consumed, bytes.len());
    }
    Ok(())
}

#[test]
fn every_truncation_is_refused() -> Result<(), FrameError> {
    let caps = Caps::default();
    for h in all_headers() {
        let bytes = frame::encode_frame(&h, &payload_for(&h))?;
        for cut in 0..bytes.len() {
            match frame::decode_frame(&bytes[..cut], &caps) {
                Err(FrameError::Truncated { need, have }) => {
                    assert_eq!(have, cut as u64);
                    assert!(need > have);
                }
                other => panic!("{:?} cut at {cut}: {other:?}", h.kind()),
            }
        }
    }
    Ok(())
}

#[test]
fn oversize_lengths_are_refused_from_the_prefix_alone() {
    let caps = Caps::default();
    // Only the 20-byte prefix exists: a decoder that allocated from the
    // lengths first would try to allocate 2^64 bytes here.
    let p = frame::encode_prefix(FrameKind::Tile, 100, u64::MAX - 3);
    assert!(matches!(
        frame::decode_prefix(&p, &caps),
        Err(FrameError::Limit(_))
    ));
    let p = frame::encode_prefix(FrameKind::Tile, u32::MAX, 16);
    assert!(matches!(
        frame::decode_prefix(&p, &caps),
        Err(FrameError::Limit(_))
    ));
    let p = frame::encode_prefix(FrameKind::Tile, 0, 16);
    assert!(matches!(
        frame::decode_prefix(&p, &caps),
        Err(FrameError::Limit(_))
    ));
    let p = frame::encode_prefix(FrameKind::Ack, 64, 4);
    assert!(matches!(
        frame::decode_prefix(&p, &caps),
        Err(FrameError::Inconsistent(_))
    ));
    let p = frame::encode_prefix(FrameKind::Tile, 64, 6);
    assert!(matches!(
        frame::decode_prefix(&p, &caps),
        Err(FrameError::Inconsistent(_))
    ));
    let small = Caps {
        max_payload_bytes: 1024,
        ..Caps::default()
    };
    let p = frame::encode_prefix(FrameKind::Tile, 64, 1028);
    assert!(matches!(
        frame::decode_prefix(&p, &small),
        Err(FrameError::Limit(_))
    ));
}

/// Only a plan update's header may pass the small header cap (by its body
/// cap): a tile or a hello announcing 100 KB of header is refused.
#[test]
fn only_a_plan_update_may_have_a_large_header() {
    let caps = Caps::default();
    for kind in [FrameKind::Tile, FrameKind::Hello, FrameKind::Profile] {
        let p = frame::encode_prefix(kind, 100_000, 0);
        assert!(
            matches!(frame::decode_prefix(&p, &caps), Err(FrameError::Limit(_))),
            "{kind:?}"
        );
    }
    let p = frame::encode_prefix(FrameKind::PlanUpdate, 100_000, 0);
    assert!(frame::decode_prefix(&p, &caps).is_ok());
    let over = caps.max_header_bytes + caps.max_body_bytes + 1;
    let p = frame::encode_prefix(FrameKind::PlanUpdate, over, 0);
    assert!(matches!(
        frame::decode_prefix(&p, &caps),
        Err(FrameError::Limit(_))
    ));
}

#[test]
fn wrong_version_magic_kind_and_flags_are_refused() -> Result<(), FrameError> {
    let caps = Caps::default();
    let good = frame::encode_frame(
        &Header::Shutdown(Shutdown {
            reason: String::new(),
        }),
        &[],
    )?;
    let mut v = good.clone();
    v[4..6].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(
        frame::decode_frame(&v, &caps),
        Err(FrameError::UnsupportedVersion(2))
    );
    let mut m = good.clone();
    m[0] = b'X';
    assert!(matches!(
        frame::decode_frame(&m, &caps),
        Err(FrameError::BadMagic(_))
    ));
    let mut k = good.clone();
    k[6] = 99;
    assert_eq!(
        frame::decode_frame(&k, &caps),
        Err(FrameError::UnknownKind(99))
    );
    let mut f = good.clone();
    f[7] = 1;
    assert_eq!(
        frame::decode_frame(&f, &caps),
        Err(FrameError::ReservedFlags(1))
    );
    // Prefix says Error, header is Shutdown.
    let mut mismatch = good;
    mismatch[6] = FrameKind::Error as u8;
    assert!(matches!(
        frame::decode_frame(&mismatch, &caps),
        Err(FrameError::Inconsistent(_))
    ));
    Ok(())
}

#[test]
fn tile_headers_are_checked_against_caps_and_payload() -> Result<(), FrameError> {
    let caps = Caps::default();
    let ok = tile(vec![1, 2, 3, 4]);
    assert!(caps.check_tile(&ok, 96).is_ok());
    assert!(
        matches!(caps.check_tile(&ok, 92), Err(FrameError::Inconsistent(_))),
        "shape x 4 != payload"
    );
    let mut outside = ok.clone();
    outside.region.y = outside.map_hw[0];
    assert!(matches!(
        caps.check_tile(&outside, 96),
        Err(FrameError::Inconsistent(_))
    ));
    let mut wrong_region = ok.clone();
    wrong_region.region.w = 5;
    assert!(matches!(
        caps.check_tile(&wrong_region, 96),
        Err(FrameError::Inconsistent(_))
    ));
    let deep = tile(vec![1; 7]);
    assert!(matches!(
        caps.check_tile(&deep, 4),
        Err(FrameError::Limit(_))
    ));
    let zero = tile(vec![1, 0, 3, 4]);
    assert!(matches!(
        caps.check_tile(&zero, 0),
        Err(FrameError::Limit(_))
    ));
    // The product overflows u64: refused without arithmetic panics.
    let huge = tile(vec![1 << 20, 1 << 20, 1 << 20, 1 << 20]);
    assert!(matches!(
        caps.check_tile(&huge, 0),
        Err(FrameError::Limit(_))
    ));
    // Shape within caps but the encoded frame lies about the payload length.
    let h = Header::Tile(ok);
    let mut bytes = frame::encode_frame(&h, &[0u8; 96])?;
    bytes[12..20].copy_from_slice(&48u64.to_le_bytes());
    assert!(matches!(
        frame::decode_frame(&bytes, &caps),
        Err(FrameError::Inconsistent(_))
    ));
    Ok(())
}

#[test]
fn long_strings_and_lists_are_refused() -> Result<(), FrameError> {
    let caps = Caps {
        max_string_bytes: 8,
        max_list_len: 2,
        max_body_bytes: 2,
        ..Caps::default()
    };
    let long = frame::encode_frame(
        &Header::Shutdown(Shutdown {
            reason: "x".repeat(9),
        }),
        &[],
    )?;
    assert!(matches!(
        frame::decode_frame(&long, &caps),
        Err(FrameError::Limit(_))
    ));
    let many = frame::encode_frame(
        &Header::PlanUpdate(PlanUpdate {
            epoch: 1,
            body: vec![0; 3],
        }),
        &[],
    )?;
    assert!(matches!(
        frame::decode_frame(&many, &caps),
        Err(FrameError::Limit(_))
    ));
    Ok(())
}

fn valid_frames() -> Vec<Vec<u8>> {
    all_headers()
        .iter()
        .filter_map(|h| frame::encode_frame(h, &payload_for(h)).ok())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random bytes never panic the decoder, and whatever it accepts re-encodes
    /// to a frame that decodes to the same header and payload. (Byte equality
    /// would be too strong: an rkyv archive is not canonical, so noise can be
    /// a valid archive laid out differently from what the encoder writes.)
    #[test]
    fn random_bytes_never_panic(mode in 0u8..3, kind in 1u8..9, mut bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let caps = Caps::default();
        // Pure noise almost never passes the magic; also try noise behind a
        // plausible magic+version, and behind a fully valid prefix.
        if mode >= 1 && bytes.len() >= 6 {
            bytes[..4].copy_from_slice(&frame::MAGIC);
            bytes[4..6].copy_from_slice(&frame::VERSION.to_le_bytes());
        }
        if mode == 2 && bytes.len() > PREFIX_LEN {
            let kind = FrameKind::from_u8(kind).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let p = frame::encode_prefix(kind, (bytes.len() - PREFIX_LEN) as u32, 0);
            bytes[..PREFIX_LEN].copy_from_slice(&p);
        }
        if let Ok(d) = frame::decode_frame(&bytes, &caps) {
            let again = frame::encode_frame(&d.header, d.payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = frame::decode_frame(&again, &caps).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Debug text, not PartialEq: noise may decode to a NaN float.
            prop_assert_eq!(format!("{:?}", back.header), format!("{:?}", d.header));
            prop_assert_eq!(back.payload, d.payload);
            prop_assert_eq!(back.consumed, again.len());
            let third = frame::encode_frame(&back.header, back.payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(third, again);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Valid frames with random bytes overwritten (mostly in the rkyv header,
    /// where validation has to do the work) never panic the decoder, and an
    /// accepted frame still satisfies the caps.
    #[test]
    fn mutated_frames_never_panic(which in 0usize..8, edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6)) {
        let caps = Caps::default();
        let frames = valid_frames();
        let mut bytes = frames[which % frames.len()].clone();
        for (pos, val) in edits {
            let i = pos as usize % bytes.len();
            // Keep the prefix intact half the time so mutations reach the header.
            if i >= PREFIX_LEN || pos % 2 == 0 {
                bytes[i] = val;
            }
        }
        if let Ok(d) = frame::decode_frame(&bytes, &caps) {
            prop_assert!(caps.check_header(&d.header, d.payload.len() as u64).is_ok());
        }
    }
}
