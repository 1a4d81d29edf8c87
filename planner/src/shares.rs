//! Tile grid and shares of one fused block across the edge nodes.
//!
//! A node's tile time is close to affine in its share `s`: `a + b·s`, where
//! `b` is the per-share cost (compute of the whole block at the node's
//! throughput plus the whole block's transfer at its link's bandwidth) and
//! `a` the fixed part (link delays, halo rows recomputed and resent, which
//! do not shrink with the share). Minimising the slowest node is then
//! water-filling: find `T` with `Σ max(0, (T - a_i) / b_i) = 1`; nodes with
//! `a_i ≥ T` get nothing. The halo part of `a` depends on where a tile sits,
//! so the solver alternates: shares → exact tile times from the
//! [`HaloModel`](crate::halo::HaloModel) → refit `a` → shares (three rounds,
//! keeping the best). Grids tried: `1×m` (column strips), `m×1` (row strips)
//! and every `R×C = n` with `R, C ≥ 2` over all `n` edge nodes, whose row and
//! column shares follow the rows' and columns' summed speeds.

use crate::cluster::{Backend, NodeIdx, Tier};
use crate::cost::{BlockPlan, Context, NodeTime, Worker};
use crate::dag::OpIdx;
use crate::halo::Region;
use tile_engine::ir::OpClass;

/// Grid and shares of one tiled block.
#[derive(Clone, Debug, PartialEq)]
pub struct TilePlan {
    /// Tile rows.
    pub rows: usize,
    /// Tile columns.
    pub cols: usize,
    /// Fraction of the output height per tile row (sums to 1).
    pub row_shares: Vec<f64>,
    /// Fraction of the output width per tile column (sums to 1).
    pub col_shares: Vec<f64>,
    /// Node of each tile, row-major.
    pub nodes: Vec<NodeIdx>,
}

impl TilePlan {
    /// The output region of tile `(r, c)`.
    pub fn region(&self, r: usize, c: usize) -> Region {
        let top: f64 = self.row_shares[..r].iter().sum();
        let left: f64 = self.col_shares[..c].iter().sum();
        Region {
            top,
            bottom: if r + 1 == self.rows {
                1.0
            } else {
                top + self.row_shares[r]
            },
            left,
            right: if c + 1 == self.cols {
                1.0
            } else {
                left + self.col_shares[c]
            },
        }
    }

    /// Area share of each node (summed over its tiles), in node order of `nodes`.
    pub fn node_share(&self, node: NodeIdx) -> f64 {
        let mut s = 0.0;
        for r in 0..self.rows {
            for c in 0..self.cols {
                if self.nodes[r * self.cols + c] == node {
                    s += self.row_shares[r] * self.col_shares[c];
                }
            }
        }
        s
    }
}

/// Water-filling: shares minimising `max_i (a_i + b_i s_i)` over `s ≥ 0, Σ s = 1`.
pub fn waterfill(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..a.len()).collect();
    order.sort_by(|&i, &j| a[i].total_cmp(&a[j]));
    let (mut sum_inv, mut sum_ab) = (0.0, 0.0);
    let mut level = f64::INFINITY;
    for (k, &i) in order.iter().enumerate() {
        sum_inv += 1.0 / b[i];
        sum_ab += a[i] / b[i];
        let t = (1.0 + sum_ab) / sum_inv;
        let next = order.get(k + 1).map_or(f64::INFINITY, |&j| a[j]);
        if t <= next {
            level = t;
            break;
        }
    }
    let mut s: Vec<f64> = (0..a.len())
        .map(|i| ((level - a[i]) / b[i]).max(0.0))
        .collect();
    normalise(&mut s);
    s
}

/// Output pixels of a row one invocation of the GPU conv kernel computes.
const LANE_BLOCK: usize = 8;
/// Invocations a GPU runs in lock step (lavapipe's SIMD width on AVX2): the
/// conv kernel's invocations past the last pixel block return at once, so a
/// chunk of them that is all past it costs nothing.
const SIMD_LANES: usize = 8;

/// Work the GPU conv kernel does per useful output pixel of a `[rows, cols]`
/// map: rows are computed in blocks of 8 pixels (a partly filled last block
/// costs a whole one) and the last SIMD chunk of each channel block's pixel
/// blocks runs whole (counted as half full on average). A tile pays this
/// relative to the whole map, whose padding the per-op profile already
/// holds: a 44×65 tile computes 72 columns for 65, which is why 2-D grids of
/// narrow tiles ran 20–35 % under the whole map's FLOP rate on lavapipe while
/// row strips of the full width did not.
pub fn kernel_padding(class: OpClass, [rows, cols]: [usize; 2]) -> f64 {
    if !matches!(class, OpClass::Conv3x3 | OpClass::Conv1x1) || rows == 0 || cols == 0 {
        return 1.0;
    }
    // The last chunk is counted half full on average: a tile's rows move
    // with its share, and a step there would make the shares' optimum jump
    // (and the re-planner see gains in noise). Row blocks are exact.
    let blocks = (rows * cols.div_ceil(LANE_BLOCK)) as f64;
    let launched = blocks + (SIMD_LANES as f64 - 1.0) / 2.0;
    launched * LANE_BLOCK as f64 / (rows * cols) as f64
}

/// What a conv layer of a tile narrower than its map costs over its FLOPs
/// at the map's rate, beyond [`kernel_padding`]: columns cut from the map
/// ran 14–34 % under its FLOP rate per FLOP on lavapipe where rows cut
/// from it did not (the default model as bricks against strips, stop 17:
/// 86 against 98 %; a 256-channel 32×32 stage as 1×2 and 1×4 column strips
/// against 2×1 and 4×1 row strips of the same halo: 1.19× and 1.34× their
/// time, stop 19), which the lane model does not explain.
pub fn column_cut(class: OpClass, [_, cols]: [usize; 2], [_, whole]: [usize; 2]) -> f64 {
    if matches!(class, OpClass::Conv3x3 | OpClass::Conv1x1) && cols < whole {
        COLUMN_CUT
    } else {
        1.0
    }
}

/// See [`column_cut`].
const COLUMN_CUT: f64 = 1.15;

/// Work a GPU tile's op of `class` on a `tile` extent does per FLOP, relative
/// to the op on its `whole` map (whose rate the profile holds): the kernel's
/// padding and a column cut. The planner prices tiles by it and the
/// coordinator weighs a tile's measured span by it, so the profiler learns
/// rates in the planner's units.
pub fn gpu_tile_factor(class: OpClass, tile: [usize; 2], whole: [usize; 2]) -> f64 {
    kernel_padding(class, tile) / kernel_padding(class, whole) * column_cut(class, tile, whole)
}

struct Solver<'c, 'a> {
    ctx: &'c Context<'a>,
    ops: &'c [OpIdx],
    /// Nodes that may take tiles, with their links.
    slots: Vec<Worker>,
    /// Rows and columns of the block's (first) output map, if known.
    extent: Option<[usize; 2]>,
    /// For a block that reads only model inputs: the device's upload time
    /// of them, which the device's own tiles need not wait for (else 0).
    head_start_s: f64,
    /// Values (elements) of the map of the block's heaviest op, if its size is known.
    heaviest: Option<f64>,
    /// Most tiles a candidate may have and still pass the
    /// `min_tile_values` filter (see [`solve_block`]).
    max_tiles: usize,
}

type Candidate = (TilePlan, Vec<NodeTime>, f64);

impl Solver<'_, '_> {
    fn node_time(&self, slot: usize, region: Region) -> NodeTime {
        let ctx = self.ctx;
        let w = &self.slots[slot];
        let work = ctx.halo.tile_work(ctx.dag, self.ops, region);
        let gpu = ctx.cluster.nodes.get(w.node).map(|n| n.backend) == Some(Backend::Gpu);
        let compute_s = self
            .ops
            .iter()
            .zip(&work.op_flops)
            .zip(&work.op_extent)
            .map(|((&o, &f), &extent)| {
                let op = &ctx.dag.ops[o];
                let padding = match ctx.dag.tensors[op.output].hw {
                    Some(whole) if gpu => gpu_tile_factor(op.class, extent, whole),
                    _ => 1.0,
                };
                ctx.est.compute_time(w.node, op.class, f * padding)
            })
            .sum::<f64>()
            // A crop kernel moves elements about as fast as an elementwise
            // op (a CPU executor copies rows with memcpy: not counted).
            + if gpu {
                ctx.est
                    .compute_time(w.node, OpClass::Elementwise, work.copy_elements)
            } else {
                0.0
            }
            + ctx.est.overhead(w.node, self.ops.len());
        let local = self.local_input(w);
        NodeTime {
            node: w.node,
            in_s: if local {
                0.0
            } else {
                w.scatter.time(work.in_bytes)
            },
            compute_s,
            out_s: w.gather.time(work.out_bytes),
            flops: work.op_flops.iter().sum(),
            in_bytes: work.in_bytes,
            out_bytes: work.out_bytes,
            head_start_s: if local { self.head_start_s } else { 0.0 },
        }
    }

    /// True if `w` holds the block's inputs when the request starts: the
    /// device, for a block that reads only model inputs.
    fn local_input(&self, w: &Worker) -> bool {
        w.tier == Tier::Device && self.head_start_s > 0.0
    }

    /// Values of the heaviest op's map in the plan's smallest tile
    /// (infinite if the map's size is unknown).
    fn smallest_tile_values(&self, plan: &TilePlan) -> f64 {
        let Some(heaviest) = self.heaviest else {
            return f64::INFINITY;
        };
        let mut least = f64::INFINITY;
        for r in 0..plan.rows {
            for c in 0..plan.cols {
                least = least.min(plan.region(r, c).area() * heaviest);
            }
        }
        least
    }

    /// Per-share cost `b` of each slot (whole block on that node).
    fn slopes(&self, full_in: f64, full_out: f64) -> Vec<f64> {
        let ctx = self.ctx;
        self.slots
            .iter()
            .map(|w| {
                let compute: f64 = self
                    .ops
                    .iter()
                    .map(|&o| {
                        ctx.est
                            .compute_time(w.node, ctx.dag.ops[o].class, ctx.dag.ops[o].flops)
                    })
                    .sum();
                let scatter = if self.local_input(w) {
                    0.0
                } else {
                    full_in * w.scatter.s_per_byte
                };
                (compute + scatter + full_out * w.gather.s_per_byte).max(1e-15)
            })
            .collect()
    }

    /// Fixed cost `a` of each slot before halos: link delays and the job's overhead.
    fn fixed(&self) -> Vec<f64> {
        self.slots
            .iter()
            .map(|w| {
                let before = if self.local_input(w) {
                    -self.head_start_s
                } else {
                    w.scatter.delay_s
                };
                before + w.gather.delay_s + self.ctx.est.overhead(w.node, self.ops.len())
            })
            .collect()
    }

    fn evaluate(&self, plan: TilePlan) -> Candidate {
        let mut times: Vec<NodeTime> = Vec::new();
        for r in 0..plan.rows {
            for c in 0..plan.cols {
                let node = plan.nodes[r * plan.cols + c];
                let slot = self.slots.iter().position(|w| w.node == node).unwrap_or(0);
                let t = self.node_time(slot, plan.region(r, c));
                match times.iter_mut().find(|x| x.node == node) {
                    // A node with several tiles runs them back to back.
                    Some(x) => {
                        x.in_s += t.in_s;
                        x.compute_s += t.compute_s;
                        x.out_s += t.out_s;
                        x.flops += t.flops;
                        x.in_bytes += t.in_bytes;
                        x.out_bytes += t.out_bytes;
                    }
                    None => times.push(t),
                }
            }
        }
        let worst = times.iter().map(NodeTime::total).fold(0.0, f64::max);
        (plan, times, worst)
    }

    /// Strips along one axis, water-filled with halo refits.
    fn strips(&self, along_rows: bool, b: &[f64]) -> Option<Candidate> {
        let mut a = self.fixed();
        let mut best: Option<Candidate> = None;
        // Output rows (or columns) the strips divide: a share worth less
        // than one would be a tile of nothing.
        let extent =
            self.extent.map_or(
                f64::INFINITY,
                |[h, w]| {
                    if along_rows { h as f64 } else { w as f64 }
                },
            );
        let mut excluded = vec![false; a.len()];
        for _ in 0..3 {
            let mut s = waterfill(&a, b);
            while let Some(i) = (0..s.len()).find(|&i| s[i] > 0.0 && s[i] * extent < 1.0) {
                excluded[i] = true;
                a[i] = f64::INFINITY;
                s = waterfill(&a, b);
            }
            let used: Vec<usize> = (0..s.len()).filter(|&i| s[i] > 1e-9).collect();
            // Strips over more workers than the map holds tiles would be
            // filtered out: the strips over fewer workers cover that case.
            if used.is_empty() || used.len() > self.max_tiles {
                break;
            }
            let shares: Vec<f64> = used.iter().map(|&i| s[i]).collect();
            let nodes: Vec<NodeIdx> = used.iter().map(|&i| self.slots[i].node).collect();
            let m = used.len();
            let plan = if along_rows {
                TilePlan {
                    rows: m,
                    cols: 1,
                    row_shares: shares,
                    col_shares: vec![1.0],
                    nodes,
                }
            } else {
                TilePlan {
                    rows: 1,
                    cols: m,
                    row_shares: vec![1.0],
                    col_shares: shares,
                    nodes,
                }
            };
            let (plan, times, worst) = self.evaluate(plan);
            for (j, &i) in used.iter().enumerate() {
                let t = &times[j];
                if !excluded[i] {
                    // A head start makes the fixed part negative.
                    let floor = if self.local_input(&self.slots[i]) {
                        -self.head_start_s
                    } else {
                        0.0
                    };
                    a[i] = (t.total() - b[i] * s[i]).max(floor);
                }
            }
            if best.as_ref().is_none_or(|x| worst < x.2) {
                best = Some((plan, times, worst));
            }
        }
        best
    }

    /// An `R×C` grid over the slots `subset` (fastest first in snake order),
    /// with row and column shares from the nodes' speeds, then re-balanced:
    /// a row (column) whose slowest tile is late shrinks, one that is early
    /// grows, for a few rounds, keeping the best.
    fn grid(&self, rows: usize, cols: usize, subset: &[usize], b: &[f64]) -> Candidate {
        let mut order = subset.to_vec();
        order.sort_by(|&i, &j| b[i].total_cmp(&b[j]));
        // More cells than workers: the quickest take the extra cells, next
        // to their first (snake order keeps a node's cells adjacent).
        let sorted = order.clone();
        for &extra in sorted
            .iter()
            .cycle()
            .take((rows * cols).saturating_sub(sorted.len()))
        {
            let at = order.iter().position(|&x| x == extra).unwrap_or(0);
            order.insert(at + 1, extra);
        }
        let mut cell = vec![0usize; rows * cols];
        for (k, &i) in order.iter().enumerate() {
            let (r, c) = (k / cols, k % cols);
            let c = if r % 2 == 1 { cols - 1 - c } else { c };
            cell[r * cols + c] = i;
        }
        let speed = |i: usize| 1.0 / b[i];
        let mut row_shares: Vec<f64> = (0..rows)
            .map(|r| (0..cols).map(|c| speed(cell[r * cols + c])).sum())
            .collect();
        let mut col_shares: Vec<f64> = (0..cols)
            .map(|c| (0..rows).map(|r| speed(cell[r * cols + c])).sum())
            .collect();
        normalise(&mut row_shares);
        normalise(&mut col_shares);
        let nodes: Vec<NodeIdx> = cell.iter().map(|&i| self.slots[i].node).collect();
        let mut best: Option<Candidate> = None;
        for round in 0..8 {
            let cand = self.evaluate(TilePlan {
                rows,
                cols,
                row_shares: row_shares.clone(),
                col_shares: col_shares.clone(),
                nodes: nodes.clone(),
            });
            let times: Vec<f64> = nodes
                .iter()
                .map(|&node| {
                    cand.1
                        .iter()
                        .find(|t| t.node == node)
                        .map_or(0.0, NodeTime::total)
                })
                .collect();
            let tile = |r: usize, c: usize| times[r * cols + c];
            if best.as_ref().is_none_or(|x| cand.2 < x.2) {
                best = Some(cand);
            }
            // Alternate rows and columns; damped so the halo's fixed part
            // (which does not shrink with a share) does not make it oscillate.
            let (shares, late): (&mut Vec<f64>, Vec<f64>) = if round % 2 == 0 {
                let late = (0..rows)
                    .map(|r| (0..cols).map(|c| tile(r, c)).fold(0.0, f64::max))
                    .collect();
                (&mut row_shares, late)
            } else {
                let late = (0..cols)
                    .map(|c| (0..rows).map(|r| tile(r, c)).fold(0.0, f64::max))
                    .collect();
                (&mut col_shares, late)
            };
            let mean = late.iter().sum::<f64>() / late.len().max(1) as f64;
            for (s, t) in shares.iter_mut().zip(&late) {
                if *t > 0.0 {
                    *s *= (mean / t).powf(0.7);
                }
            }
            normalise(shares);
        }
        best.unwrap_or_else(|| {
            self.evaluate(TilePlan {
                rows,
                cols,
                row_shares,
                col_shares,
                nodes,
            })
        })
    }
}

/// Values (elements) of the map written by the block's heaviest op (most
/// FLOPs): the op whose tiles' efficiency sets the block's.
fn heaviest_map(ctx: &Context<'_>, ops: &[OpIdx]) -> Option<f64> {
    let heaviest = ops
        .iter()
        .map(|&o| &ctx.dag.ops[o])
        .max_by(|a, b| a.flops.total_cmp(&b.flops))?;
    let out = &ctx.dag.tensors[heaviest.output];
    out.hw.map(|_| out.elements)
}

/// Rows and columns of a block's (first) output map.
fn output_extent(ctx: &Context<'_>, ops: &[OpIdx]) -> Option<[usize; 2]> {
    crate::halo::block_outputs(ctx.dag, ops)
        .into_iter()
        .find_map(|t| ctx.dag.tensors[t].hw)
}

/// For the model's first block (it starts at op 0, so the device runs no
/// ops before it) reading only model inputs, which start on the device:
/// the device's upload time of them, else 0. The coordinator starts the
/// device's tiles of such a block beside that upload.
fn head_start(ctx: &Context<'_>, ops: &[OpIdx]) -> f64 {
    let inputs = crate::halo::block_inputs(ctx.dag, ops);
    if ops.first() != Some(&0)
        || inputs.is_empty()
        || inputs
            .iter()
            .any(|&t| ctx.dag.tensors[t].producer.is_some())
    {
        return 0.0;
    }
    let bytes: f64 = inputs.iter().map(|&t| ctx.dag.tensors[t].bytes).sum();
    ctx.topo.up.time(bytes)
}

/// Scales `v` to sum to 1 (left alone if its sum is not a positive number).
fn normalise(v: &mut [f64]) {
    let t: f64 = v.iter().sum();
    if t > 0.0 && t.is_finite() {
        v.iter_mut().for_each(|x| *x /= t);
    }
}

/// Solves one block: a serial run on the coordinator for a non-tileable op,
/// else the best grid and shares over the `workers`: strips water-filled
/// over all of them, and every `R×C` grid over the `k` quickest for each `k`.
pub fn solve_block(ctx: &Context<'_>, ops: &[OpIdx], workers: &[Worker]) -> BlockPlan {
    let dag = ctx.dag;
    let (in_bytes, out_bytes) = BlockPlan::io_bytes(dag, ops);
    let flops = ops.iter().map(|&o| dag.ops[o].flops).sum();
    let tileable = ops.iter().all(|&o| dag.ops[o].tileable())
        && ops
            .iter()
            .all(|&o| dag.tensors[dag.ops[o].output].hw.is_some());
    if !tileable {
        let node = ctx.topo.coordinator;
        let compute_s = ops
            .iter()
            .map(|&o| {
                ctx.est
                    .compute_time(node, dag.ops[o].class, dag.ops[o].flops)
            })
            .sum::<f64>()
            + ctx.est.overhead(node, ops.len());
        let t = NodeTime {
            node,
            in_s: 0.0,
            compute_s,
            out_s: 0.0,
            flops,
            in_bytes,
            out_bytes,
            head_start_s: 0.0,
        };
        return BlockPlan {
            ops: ops.to_vec(),
            tiling: None,
            in_bytes,
            out_bytes,
            flops,
            node_times: vec![t],
            time_s: compute_s,
        };
    }
    let extent = output_extent(ctx, ops);
    // A plan of m tiles has one of at most 1/m of each map, so where the
    // heaviest op's map cannot hold two tiles of `min_tile_values` every
    // candidate below would fail the filter at the end, and a grid of more
    // cells than that always does. Solving them anyway (most blocks of a
    // deep model's late stages, at 28×28 and under) was most of the
    // planning time.
    let heaviest = heaviest_map(ctx, ops);
    let max_tiles = heaviest.map_or(usize::MAX, |v| {
        (v / ctx.opts.min_tile_values.max(1) as f64) as usize
    });
    let solver = Solver {
        ctx,
        ops,
        slots: workers.to_vec(),
        extent,
        heaviest,
        head_start_s: head_start(ctx, ops),
        max_tiles,
    };
    let b = solver.slopes(in_bytes, out_bytes);
    let a = solver.fixed();
    let n = solver.slots.len();
    let mut cands = Vec::new();
    if max_tiles < 2 {
        return finish(ctx, &solver, ops, cands, in_bytes, out_bytes, flops);
    }
    cands.extend(solver.strips(false, &b));
    cands.extend(solver.strips(true, &b));
    for k in 2..=n {
        // The k workers quickest at an equal share of the block.
        let mut quick: Vec<usize> = (0..n).collect();
        quick.sort_by(|&i, &j| (a[i] + b[i] / k as f64).total_cmp(&(a[j] + b[j] / k as f64)));
        quick.truncate(k);
        if k < n {
            // Strips over fewer workers: what remains when tiles over all
            // of them would be too small.
            let only: Vec<f64> = (0..n)
                .map(|i| {
                    if quick.contains(&i) {
                        b[i]
                    } else {
                        f64::INFINITY
                    }
                })
                .collect();
            cands.extend(solver.strips(false, &only));
            cands.extend(solver.strips(true, &only));
        }
        // R×C = k cells, or k + 1 with the quickest taking two (five
        // workers have no grid of their own, and strips carry the most halo).
        for cells in [k, k + 1].into_iter().filter(|&c| c <= max_tiles) {
            for r in 2..cells {
                if cells.is_multiple_of(r) && cells / r >= 2 {
                    cands.push(solver.grid(r, cells / r, &quick, &b));
                }
            }
        }
    }
    // Strips over all workers but one: the quickest-k order above ranks a
    // worker by its time at an equal share, which can keep one (the device,
    // whose input is local but whose output crosses a slow link) that the
    // best plan leaves out; a plan with one more worker must never cost
    // more than the same plan without it.
    if n >= 3 {
        for skip in 0..n {
            let without: Vec<f64> = (0..n)
                .map(|i| if i == skip { f64::INFINITY } else { b[i] })
                .collect();
            cands.extend(solver.strips(false, &without));
            cands.extend(solver.strips(true, &without));
        }
    }
    finish(ctx, &solver, ops, cands, in_bytes, out_bytes, flops)
}

/// The block plan of the quickest candidate with no tile under
/// `min_tile_values`, else one tile on the coordinator.
fn finish(
    ctx: &Context<'_>,
    solver: &Solver<'_, '_>,
    ops: &[OpIdx],
    cands: Vec<Candidate>,
    in_bytes: f64,
    out_bytes: f64,
    flops: f64,
) -> BlockPlan {
    let least = ctx.opts.min_tile_values as f64;
    let (tiling, node_times, time_s) = cands
        .into_iter()
        .filter(|c| solver.smallest_tile_values(&c.0) >= least)
        .min_by(|x, y| x.2.total_cmp(&y.2))
        .unwrap_or_else(|| {
            let single = TilePlan {
                rows: 1,
                cols: 1,
                row_shares: vec![1.0],
                col_shares: vec![1.0],
                nodes: vec![ctx.topo.coordinator],
            };
            solver.evaluate(single)
        });
    BlockPlan {
        ops: ops.to_vec(),
        tiling: Some(tiling),
        in_bytes,
        out_bytes,
        flops,
        node_times,
        time_s,
    }
}

/// Re-times a block with its grid and shares kept (what the running plan costs under new estimates).
pub fn retime_block(ctx: &Context<'_>, block: &BlockPlan) -> BlockPlan {
    let workers = ctx.topo.workers([true; 2]);
    let Some(tiling) = &block.tiling else {
        return solve_block(ctx, &block.ops, &workers);
    };
    let solver = Solver {
        ctx,
        ops: &block.ops,
        slots: workers,
        extent: output_extent(ctx, &block.ops),
        heaviest: None,
        head_start_s: head_start(ctx, &block.ops),
        max_tiles: usize::MAX,
    };
    let (tiling, node_times, time_s) = solver.evaluate(tiling.clone());
    BlockPlan {
        tiling: Some(tiling),
        node_times,
        time_s,
        ..block.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_cut_from_the_map_s_columns_costs_more_per_flop_than_a_row_strip() {
        let whole = [32, 32];
        // A full-width row strip pays only its partial lane chunk.
        let row = gpu_tile_factor(OpClass::Conv3x3, [8, 32], whole);
        assert_eq!(
            row,
            kernel_padding(OpClass::Conv3x3, [8, 32]) / kernel_padding(OpClass::Conv3x3, whole)
        );
        // Its transpose, a column strip, pays the column cut on top.
        let col = gpu_tile_factor(OpClass::Conv3x3, [32, 8], whole);
        let lanes =
            kernel_padding(OpClass::Conv3x3, [32, 8]) / kernel_padding(OpClass::Conv3x3, whole);
        assert!((col / lanes - COLUMN_CUT).abs() < 1e-12, "{col} vs {lanes}");
        assert!(col > row, "{col} vs {row}");
        // Only the conv kernels are modelled.
        assert_eq!(gpu_tile_factor(OpClass::Pool, [32, 8], whole), 1.0);
    }

    #[test]
    fn conv_padding_counts_partial_row_blocks_and_half_a_simd_chunk() {
        let pad = |rows: usize, cols: usize| {
            let blocks = (rows * cols.div_ceil(8)) as f64;
            (blocks + 3.5) * 8.0 / (rows * cols) as f64
        };
        // Full 128-wide rows: whole 8-pixel blocks, only the SIMD chunk term.
        let strip = kernel_padding(OpClass::Conv3x3, [38, 128]);
        assert!((strip - (608.0 + 3.5) / 608.0).abs() < 1e-12, "{strip}");
        // A 44×65 tile: 9 blocks per row, 72 pixels computed for 65.
        let narrow = kernel_padding(OpClass::Conv1x1, [44, 65]);
        assert!((narrow - pad(44, 65)).abs() < 1e-12, "{narrow}");
        let whole = kernel_padding(OpClass::Conv3x3, [128, 128]);
        assert!(
            narrow / whole > 1.10 && strip / whole < 1.01,
            "{narrow} {strip} {whole}"
        );
        // Other kernels, or a map of unknown size: no padding.
        assert_eq!(kernel_padding(OpClass::Elementwise, [44, 65]), 1.0);
        assert_eq!(kernel_padding(OpClass::Conv3x3, [0, 0]), 1.0);
    }

    #[test]
    fn waterfill_balances_affine_times() {
        let a = [0.0, 0.0, 0.5];
        let b = [1.0, 2.0, 1.0];
        let s = waterfill(&a, &b);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Without the third: s0 = 2/3, s1 = 1/3, T = 2/3 > 0.5, so the third joins.
        let t: Vec<f64> = (0..3).map(|i| a[i] + b[i] * s[i]).collect();
        assert!(
            (t[0] - t[1]).abs() < 1e-12 && (t[0] - t[2]).abs() < 1e-12,
            "{t:?}"
        );
        // A node whose fixed cost exceeds the level gets nothing.
        let s = waterfill(&[0.0, 5.0], &[1.0, 1.0]);
        assert_eq!(s, vec![1.0, 0.0]);
    }
}
