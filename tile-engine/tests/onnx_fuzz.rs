//! Feeds thousands of byte-mutated ONNX models to the importer: it must
//! return (Ok or a typed error) without panicking, and must not allocate
//! more than the file justifies (a decoded size check would show up here as
//! an abort or an out-of-memory kill).

mod onnx_support;

use onnx_support::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tile_engine::onnx::load_bytes;

fn seeds() -> Vec<Vec<u8>> {
    let conv_1d = model(
        13,
        vec![
            node(
                "Conv",
                "c",
                &["x", "w"],
                &["y0"],
                vec![
                    attr("auto_pad", A::S("SAME_LOWER")),
                    attr("dilations", A::Is(vec![2])),
                ],
            ),
            node("Unsqueeze", "u", &["y0", "ax"], &["y1"], vec![]),
            node(
                "Resize",
                "rs",
                &["y1", "", "sc"],
                &["y"],
                vec![attr("mode", A::S("linear"))],
            ),
        ],
        vec![
            tf("w", &[2, 3, 3], &weights(18, 7)),
            ti("ax", &[1], &[2]),
            tf("sc", &[4], &[1.0, 1.0, 2.0, 2.0]),
        ],
        vec![vis("x", &[1, 3, 9])],
        vec![vis("y", &[1, 2, 2, 18])],
    );
    let shape_ops = model(
        13,
        vec![
            node(
                "ConstantOfShape",
                "cos",
                &["shp"],
                &["z"],
                vec![attr("value", A::T(Box::new(tf("v", &[1], &[0.5]))))],
            ),
            node("Add", "add", &["x", "z"], &["a"], vec![]),
            node("Slice", "sl", &["a", "st", "en", "axs"], &["s"], vec![]),
            node(
                "Pad",
                "pad",
                &["s", "pads"],
                &["p"],
                vec![attr("mode", A::S("constant"))],
            ),
            node(
                "Transpose",
                "tr",
                &["p"],
                &["y"],
                vec![attr("perm", A::Is(vec![0, 1, 3, 2]))],
            ),
        ],
        vec![
            ti("shp", &[4], &[1, 2, 4, 4]),
            ti("st", &[2], &[1, 0]),
            ti("en", &[2], &[3, 3]),
            ti("axs", &[2], &[2, 3]),
            ti("pads", &[8], &[0, 0, 1, 0, 0, 0, 0, 2]),
        ],
        vec![vis("x", &[1, 2, 4, 4])],
        vec![vis("y", &[1, 2, 5, 3])],
    );
    vec![bytes(&small_cnn()), bytes(&conv_1d), bytes(&shape_ops)]
}

#[test]
fn seed_models_import() {
    for (i, s) in seeds().iter().enumerate() {
        let g = load_bytes(s);
        assert!(g.is_ok(), "seed {i}: {:?}", g.err());
    }
}

fn mutate(rng: &mut StdRng, seed: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let rounds = rng.random_range(1..=4);
    for _ in 0..rounds {
        if b.is_empty() {
            b.push(rng.random());
        }
        match rng.random_range(0..7) {
            // Flip one bit.
            0 => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            // Overwrite a byte with an interesting value (varint edges).
            1 => {
                let i = rng.random_range(0..b.len());
                b[i] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x12][rng.random_range(0..7)];
            }
            // Truncate.
            2 => {
                let n = rng.random_range(0..b.len());
                b.truncate(n);
            }
            // Splice a chunk of another model in.
            3 => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let len = rng.random_range(0..=(other.len() - from).min(64));
                    let at = rng.random_range(0..=b.len());
                    b.splice(at..at, other[from..from + len].iter().copied());
                }
            }
            // Delete a range.
            4 => {
                let i = rng.random_range(0..b.len());
                let n = rng.random_range(0..=(b.len() - i).min(16));
                b.drain(i..i + n);
            }
            // Insert a huge varint (a length or dimension of ~2^60).
            5 => {
                let at = rng.random_range(0..=b.len());
                let v = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
                b.splice(at..at, v);
            }
            // Random bytes of a random length.
            _ => {
                let n = rng.random_range(0..48);
                let at = rng.random_range(0..=b.len());
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(at..at, junk);
            }
        }
    }
    b
}

#[test]
fn mutated_models_never_panic() {
    let corpus = seeds();
    let mut rng = StdRng::seed_from_u64(0x7e55e7a);
    let (mut ok, mut err) = (0, 0);
    for i in 0..3000 {
        let seed = &corpus[i % corpus.len()];
        let m = mutate(&mut rng, seed, &corpus);
        match load_bytes(&m) {
            Ok(g) => {
                ok += 1;
                // Whatever imports must be a consistent graph.
                assert!(g.validate().is_ok(), "case {i}");
            }
            Err(e) => {
                err += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    // Both outcomes occur: the mutations are neither all harmless nor all fatal.
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}

#[test]
fn pure_noise_never_panics() {
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..1000 {
        let n = rng.random_range(0..256);
        let b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        assert!(load_bytes(&b).is_err());
    }
}

#[test]
fn truncations_are_malformed() {
    let full = bytes(&small_cnn());
    for cut in (1..full.len()).step_by(7) {
        let r = load_bytes(&full[..cut]);
        assert!(r.is_err(), "prefix of {cut} bytes imported");
    }
}
