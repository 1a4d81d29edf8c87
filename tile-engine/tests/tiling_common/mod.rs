//! Random fused blocks and grids for the tiling property tests, shared by the
//! CPU and GPU variants: tiled output must equal untiled output bit for bit.

#![allow(dead_code)]

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tile_engine::ir::{
    Activation, BinaryKind, Conv, CoordTransform, NearestMode, Pool, PoolKind, ReduceKind,
    ResizeMode, window_out,
};
use tile_engine::tiling::{FusionOptions, Grid, TiledOptions, run_tiled};
use tile_engine::{Executor, Graph, Op, Tensor, ValueId};

/// A random tensor with values in [-1, 1).
pub fn random_tensor(rng: &mut StdRng, shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::new(shape, data).expect("shape matches data")
}

fn conv_op(
    rng: &mut StdRng,
    cin: usize,
    cout: usize,
    k: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
    dil: [usize; 2],
) -> Op {
    let act = match rng.random_range(0..3) {
        0 => Activation::Identity,
        1 => Activation::Relu,
        _ => Activation::LeakyRelu { alpha: 0.1 },
    };
    Op::Conv(Conv {
        weight: Arc::new(random_tensor(rng, vec![cout, cin, k[0], k[1]])),
        bias: rng
            .random_bool(0.7)
            .then(|| Arc::new((0..cout).map(|_| rng.random_range(-0.5f32..0.5)).collect())),
        strides,
        pads,
        dilations: dil,
        group: 1,
        activation: act,
    })
}

/// A builder that appends random spatially-local layers to a graph.
pub struct Gen {
    /// The random source (seeded: failures print the seed).
    pub rng: StdRng,
    /// The graph under construction.
    pub g: Graph,
    n: usize,
}

impl Gen {
    /// A fresh generator with one NCHW input.
    pub fn new(seed: u64) -> (Self, ValueId) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut g = Graph::default();
        let n = rng.random_range(1..=2);
        let c = rng.random_range(1..=3);
        let h = rng.random_range(5..=23);
        let w = rng.random_range(5..=23);
        let x = g.add_value("x", vec![n, c, h, w]);
        g.inputs.push(x);
        (Self { rng, g, n: 0 }, x)
    }

    fn name(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}{}", self.n)
    }

    fn hw(&self, v: ValueId) -> [usize; 2] {
        let s = self.g.shape(v);
        [s[2], s[3]]
    }

    fn ch(&self, v: ValueId) -> usize {
        self.g.shape(v)[1]
    }

    fn add(&mut self, what: &str, op: Op, inputs: Vec<ValueId>) -> Option<ValueId> {
        let name = self.name(what);
        self.g
            .add_node(name.clone(), op, inputs, format!("{name}_out"))
            .ok()
    }

    /// A random conv (kernels 1–7, strides 1–2, dilation 1–2, asymmetric pads).
    pub fn conv(&mut self, x: ValueId) -> Option<ValueId> {
        let [h, w] = self.hw(x);
        let cin = self.ch(x);
        let cout = self.rng.random_range(1..=3);
        let k = [self.rng.random_range(1..=7), self.rng.random_range(1..=7)];
        let s = [self.rng.random_range(1..=2), self.rng.random_range(1..=2)];
        let d = [self.rng.random_range(1..=2), self.rng.random_range(1..=2)];
        let mut pads = [0; 4];
        for (i, p) in pads.iter_mut().enumerate() {
            *p = self
                .rng
                .random_range(0..=k[i % 2] / 2 + 1)
                .min(k[i % 2] - 1 + usize::from(k[i % 2] == 1));
        }
        for a in 0..2 {
            let len = [h, w][a];
            window_out(len, k[a], s[a], pads[a], pads[a + 2], d[a], false).ok()?;
        }
        let op = conv_op(&mut self.rng, cin, cout, k, s, pads, d);
        self.add("conv", op, vec![x])
    }

    /// A random max or average pool, ceil_mode included.
    pub fn pool(&mut self, x: ValueId) -> Option<ValueId> {
        let k = [self.rng.random_range(1..=3), self.rng.random_range(1..=3)];
        let s = [self.rng.random_range(1..=2), self.rng.random_range(1..=2)];
        let kind = match self.rng.random_range(0..3) {
            0 => PoolKind::Max,
            1 => PoolKind::Average {
                count_include_pad: true,
            },
            _ => PoolKind::Average {
                count_include_pad: false,
            },
        };
        let dil = if kind == PoolKind::Max {
            [self.rng.random_range(1..=2), 1]
        } else {
            [1, 1]
        };
        let mut pads = [0; 4];
        for (i, p) in pads.iter_mut().enumerate() {
            *p = self.rng.random_range(0..=k[i % 2] / 2);
        }
        let op = Op::Pool(Pool {
            kind,
            kernel: k,
            strides: s,
            pads,
            dilations: dil,
            ceil_mode: self.rng.random_bool(0.5),
        });
        self.add("pool", op, vec![x])
    }

    /// A residual unit: conv (same size) then conv with the input fused as residual.
    pub fn residual(&mut self, x: ValueId) -> Option<ValueId> {
        let c = self.ch(x);
        let k = 2 * self.rng.random_range(0..=2) + 1;
        let p = k / 2;
        let mid = self.rng.random_range(1..=3);
        let a = conv_op(&mut self.rng, c, mid, [k, k], [1, 1], [p, p, p, p], [1, 1]);
        let y = self.add("res_a", a, vec![x])?;
        let b = conv_op(&mut self.rng, mid, c, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]);
        if self.rng.random_bool(0.5) {
            self.add("res_b", b, vec![y, x])
        } else {
            let z = self.add("res_b", b, vec![y])?;
            self.add(
                "res_add",
                Op::Binary {
                    kind: BinaryKind::Add,
                    activation: Activation::Relu,
                },
                vec![z, x],
            )
        }
    }

    /// Inception-style branches with different receptive fields, concatenated on channels.
    pub fn inception(&mut self, x: ValueId) -> Option<ValueId> {
        let c = self.ch(x);
        let a = conv_op(&mut self.rng, c, 2, [1, 1], [1, 1], [0; 4], [1, 1]);
        let ya = self.add("inc_1x1", a, vec![x])?;
        let b = conv_op(&mut self.rng, c, 2, [5, 5], [1, 1], [2, 2, 2, 2], [1, 1]);
        let yb = self.add("inc_5x5", b, vec![x])?;
        let d = conv_op(&mut self.rng, c, 1, [3, 3], [1, 1], [2, 2, 2, 2], [2, 2]);
        let yd = self.add("inc_dil", d, vec![yb])?;
        let pool = Op::Pool(Pool {
            kind: PoolKind::Max,
            kernel: [3, 3],
            strides: [1, 1],
            pads: [1, 1, 1, 1],
            dilations: [1, 1],
            ceil_mode: false,
        });
        let yp = self.add("inc_pool", pool, vec![x])?;
        self.add("inc_cat", Op::Concat { axis: 1 }, vec![ya, yb, yd, yp])
    }

    /// Elementwise layers: per-channel affine, a broadcast constant multiply, an activation.
    pub fn elementwise(&mut self, x: ValueId) -> Option<ValueId> {
        let c = self.ch(x);
        match self.rng.random_range(0..3) {
            0 => {
                let scale = Arc::new((0..c).map(|_| self.rng.random_range(0.5f32..1.5)).collect());
                let shift = Arc::new(
                    (0..c)
                        .map(|_| self.rng.random_range(-0.5f32..0.5))
                        .collect(),
                );
                self.add("affine", Op::ChannelAffine { scale, shift }, vec![x])
            }
            1 => {
                let t = random_tensor(&mut self.rng, vec![1, c, 1, 1]);
                let name = self.name("k");
                let k = self.g.add_constant(name, t);
                self.add(
                    "mul",
                    Op::Binary {
                        kind: BinaryKind::Mul,
                        activation: Activation::Identity,
                    },
                    vec![x, k],
                )
            }
            _ => self.add("act", Op::Activation(Activation::HardSwish), vec![x]),
        }
    }

    /// CBAM-style spatial attention: the channels' mean and max, a 3×3 conv
    /// of the two, a sigmoid, and the input scaled by it.
    pub fn attention(&mut self, x: ValueId) -> Option<ValueId> {
        let mean = self.add("mean_c", Op::ChannelReduce(ReduceKind::Mean), vec![x])?;
        let max = self.add("max_c", Op::ChannelReduce(ReduceKind::Max), vec![x])?;
        let cat = self.add("att_cat", Op::Concat { axis: 1 }, vec![mean, max])?;
        let conv = conv_op(&mut self.rng, 2, 1, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]);
        let y = self.add("att_conv", conv, vec![cat])?;
        let s = self.add("att_sig", Op::Activation(Activation::Sigmoid), vec![y])?;
        let mul = Op::Binary {
            kind: BinaryKind::Mul,
            activation: Activation::Identity,
        };
        self.add("att_mul", mul, vec![x, s])
    }

    /// Constant padding with asymmetric pads.
    pub fn pad(&mut self, x: ValueId) -> Option<ValueId> {
        let pads = [0; 4].map(|_| self.rng.random_range(0..=2));
        self.add("pad", Op::Pad { pads, value: 0.25 }, vec![x])
    }

    /// Nearest 2× upsampling.
    pub fn upsample(&mut self, x: ValueId) -> Option<ValueId> {
        let s = self.g.shape(x).to_vec();
        if s[2] * s[3] > 200 {
            return None;
        }
        let name = self.name("up");
        let op = Op::Resize {
            mode: ResizeMode::Nearest(NearestMode::Floor),
            coord: CoordTransform::Asymmetric,
            scales: [2.0, 2.0],
        };
        self.g
            .add_node_with_shape(
                name.clone(),
                op,
                vec![x],
                format!("{name}_out"),
                vec![s[0], s[1], s[2] * 2, s[3] * 2],
            )
            .ok()
    }

    /// Appends `layers` random layers (failed draws, e.g. a window larger than the map, are skipped).
    pub fn stack(&mut self, mut x: ValueId, layers: usize, dag: bool) -> ValueId {
        for _ in 0..layers {
            let pick = self.rng.random_range(0..if dag { 9 } else { 4 });
            let y = match pick {
                0 | 1 => self.conv(x),
                2 => self.pool(x),
                3 => self.elementwise(x),
                4 => self.residual(x),
                5 => self.inception(x),
                6 => self.pad(x),
                7 => self.upsample(x),
                _ => self.attention(x),
            };
            if let Some(y) = y {
                x = y;
            }
        }
        x
    }

    /// Finishes the graph with `out` as its only output.
    pub fn finish(mut self, out: ValueId) -> (Graph, StdRng) {
        self.g.outputs.push(out);
        self.g.validate().expect("generated graph is valid");
        (self.g, self.rng)
    }
}

/// Random shares for `n` tiles (ratios up to 1:4).
pub fn shares(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(0.25..1.0)).collect()
}

/// Asserts `a` and `b` hold the same values bit for bit.
pub fn assert_bits_eq(a: &[Tensor], b: &[Tensor], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: output count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.shape(), y.shape(), "{what}: output {i} shape");
        let diff = x
            .data()
            .iter()
            .zip(y.data())
            .position(|(p, q)| p.to_bits() != q.to_bits());
        if let Some(at) = diff {
            panic!(
                "{what}: output {i} differs at flat index {at}: untiled {} vs tiled {}",
                x.data()[at],
                y.data()[at]
            );
        }
    }
}

/// Builds random case `seed` and checks tiled == untiled on `exec` for one
/// random grid, both as one fused block and with the default chooser.
pub fn check_case(exec: &dyn Executor, seed: u64, dag: bool) {
    let (mut builder, x) = Gen::new(seed);
    let layers = builder.rng.random_range(1..=5);
    let out = builder.stack(x, layers, dag);
    if out == x {
        return; // every draw failed: nothing to tile
    }
    let (g, mut rng) = builder.finish(out);
    let input = random_tensor(&mut rng, g.shape(x).to_vec());
    let untiled = exec
        .run(&g, std::slice::from_ref(&input))
        .expect("untiled run");
    let s = g.shape(out);
    let (h, w) = (s[2], s[3]);
    // Up to 8×8, sometimes more tiles than pixels (the grid is then clamped).
    let rows = rng.random_range(1..=8usize.min(h + 1));
    let cols = rng.random_range(1..=8usize.min(w + 1));
    let grid = if rng.random_bool(0.5) {
        Grid::uniform(rows, cols)
    } else {
        Grid::with_shares(shares(&mut rng, rows), shares(&mut rng, cols))
    };
    for fusion in [FusionOptions::fixed(usize::MAX), FusionOptions::default()] {
        let opts = TiledOptions {
            fusion,
            clamp_grid: true,
        };
        let tiled = run_tiled(exec, &g, std::slice::from_ref(&input), &grid, &opts)
            .unwrap_or_else(|e| panic!("seed {seed}: tiled run with grid {grid:?}: {e}\n{g:#?}"));
        assert_bits_eq(
            &untiled,
            &tiled,
            &format!("seed {seed}, grid {grid:?}, fuse {:?}", opts.fusion.fuse),
        );
    }
}
