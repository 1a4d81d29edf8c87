//! Tiled == untiled, bit for bit, on the CPU executor: random conv/pool
//! stacks and DAG blocks × random grids and shares, plus the edge cases.

mod tiling_common;

use std::sync::Arc;

use proptest::prelude::*;
use tile_engine::cpu::CpuExecutor;
use tile_engine::ir::{Activation, BinaryKind, Conv};
use tile_engine::tiling::{
    Block, FusionOptions, Grid, Region, Segment, Span, TiledOptions, block_regions, choose_blocks,
    plan_tile, plan_tiles, run_tiled,
};
use tile_engine::{Executor, Graph, Op};
use tiling_common::{assert_bits_eq, check_case, random_tensor};

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn conv_pool_stacks_tile_bit_exactly(seed in any::<u64>()) {
        check_case(&CpuExecutor, seed, false);
    }

    #[test]
    fn dag_blocks_tile_bit_exactly(seed in any::<u64>()) {
        check_case(&CpuExecutor, seed, true);
    }
}

fn conv(
    g: &mut Graph,
    name: &str,
    x: usize,
    cout: usize,
    k: usize,
    pad: usize,
    rng: &mut rand::rngs::StdRng,
) -> usize {
    let cin = g.shape(x)[1];
    let op = Op::Conv(Conv {
        weight: Arc::new(random_tensor(rng, vec![cout, cin, k, k])),
        bias: None,
        strides: [1, 1],
        pads: [pad; 4],
        dilations: [1, 1],
        group: 1,
        activation: Activation::Relu,
    });
    g.add_node(name, op, vec![x], format!("{name}_out"))
        .expect("conv fits")
}

/// Three 7×7 convs on a 12×13 map: a 9-pixel halo around tiles 1–2 pixels wide.
fn wide_halo_graph() -> (Graph, usize) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 2, 12, 13]);
    g.inputs.push(x);
    let a = conv(&mut g, "c1", x, 3, 7, 3, &mut rng);
    let b = conv(&mut g, "c2", a, 2, 7, 3, &mut rng);
    let c = conv(&mut g, "c3", b, 2, 7, 3, &mut rng);
    g.outputs.push(c);
    (g, x)
}

fn run_both(g: &Graph, x: usize, grid: &Grid) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let input = random_tensor(&mut rng, g.shape(x).to_vec());
    let untiled = CpuExecutor
        .run(g, std::slice::from_ref(&input))
        .expect("untiled");
    let opts = TiledOptions {
        fusion: FusionOptions::fixed(usize::MAX),
        clamp_grid: true,
    };
    let tiled =
        run_tiled(&CpuExecutor, g, std::slice::from_ref(&input), grid, &opts).expect("tiled");
    assert_bits_eq(&untiled, &tiled, &format!("grid {grid:?}"));
}

#[test]
fn one_pixel_wide_tiles_with_halo_larger_than_tile() {
    let (g, x) = wide_halo_graph();
    let block = Block::new(&g, vec![0, 1, 2]).expect("block");
    // 13 columns in 8 shares where most columns are one pixel wide.
    let grid = Grid::with_shares(
        vec![1.0, 1.0, 3.0],
        vec![0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 5.0],
    );
    let tiles = plan_tiles(&g, &block, &grid).expect("plan");
    assert_eq!(tiles.len(), 24);
    assert!(tiles.iter().any(|t| t.out_region.cols.len() == 1));
    // The halo (9 px each side) is wider than the tile itself.
    let t = &tiles[1];
    assert_eq!(t.out_region.cols, Span::new(1, 2));
    assert_eq!(t.in_region.cols, Span::new(0, 11));
    run_both(&g, x, &grid);
    run_both(&g, x, &Grid::uniform(12, 13));
}

#[test]
fn grid_larger_than_map_errors_in_plan_and_clamps_in_run() {
    let (g, x) = wide_halo_graph();
    let block = Block::new(&g, vec![0, 1, 2]).expect("block");
    let err = plan_tiles(&g, &block, &Grid::uniform(13, 2)).expect_err("13 rows of 12");
    assert!(err.to_string().contains("13 rows"), "{err}");
    run_both(&g, x, &Grid::uniform(20, 20));
}

#[test]
fn tiles_cover_the_output_exactly_once() {
    let (g, _) = wide_halo_graph();
    let block = Block::new(&g, vec![0, 1, 2]).expect("block");
    let grid = Grid::with_shares(vec![0.5, 0.3, 0.2], vec![0.2, 0.8]);
    let tiles = plan_tiles(&g, &block, &grid).expect("plan");
    let mut hits = [0u8; 12 * 13];
    for t in &tiles {
        for y in t.out_region.rows.start..t.out_region.rows.end {
            for x in t.out_region.cols.start..t.out_region.cols.end {
                hits[y * 13 + x] += 1;
            }
        }
    }
    assert!(hits.iter().all(|&h| h == 1));
    // Rows 12 × [0.5, 0.3, 0.2] = 6, 3.6, 2.4 → boundaries round(6)=6, round(9.6)=10.
    assert_eq!(tiles[0].out_region.rows, Span::new(0, 6));
    assert_eq!(tiles[2].out_region.rows, Span::new(6, 10));
    assert_eq!(tiles[4].out_region.rows, Span::new(10, 12));
    // Border tiles keep the zero pad, interior edges read the halo instead.
    let top_left = &tiles[0];
    assert_eq!(
        top_left.in_region,
        Region::new(Span::new(0, 12), Span::new(0, 3 + 9))
    );
    let conv = top_left
        .graph
        .nodes
        .iter()
        .find(|n| n.name == "c1")
        .expect("c1");
    let Op::Conv(c) = &conv.op else {
        panic!("c1 is a conv")
    };
    // c1 computes rows 0..12 (all of them) and columns 0..9: pad on three sides.
    assert_eq!(c.pads, [3, 3, 3, 0]);
}

#[test]
fn chooser_stops_before_whole_map_ops_and_respects_fuse() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 2, 16, 16]);
    g.inputs.push(x);
    let a = conv(&mut g, "c1", x, 3, 3, 1, &mut rng);
    let b = conv(&mut g, "c2", a, 3, 3, 1, &mut rng);
    let c = conv(&mut g, "c3", b, 3, 3, 1, &mut rng);
    let p = g
        .add_node(
            "gap",
            Op::GlobalPool(tile_engine::ir::PoolKind::Average {
                count_include_pad: false,
            }),
            vec![c],
            "gap_out",
        )
        .expect("gap");
    g.outputs.push(p);
    // On a 16×16 map a 3×3 conv alone costs ~27% halo at 2×2: allow 100%.
    let loose = FusionOptions {
        max_halo_overhead: 1.0,
        ..FusionOptions::default()
    };
    let segs = choose_blocks(&g, &loose);
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert!(matches!(&segs[0], Segment::Tiled(b) if b.nodes == vec![0, 1, 2]));
    assert_eq!(segs[1], Segment::Whole(vec![3]));
    let segs = choose_blocks(&g, &FusionOptions::fixed(2));
    assert!(matches!(&segs[0], Segment::Tiled(b) if b.nodes == vec![0, 1]));
    assert!(matches!(&segs[1], Segment::Tiled(b) if b.nodes == vec![2]));
    let tight = FusionOptions {
        max_halo_overhead: 0.0,
        ..FusionOptions::default()
    };
    let segs = choose_blocks(&g, &tight);
    assert_eq!(segs.len(), 4, "zero overhead allowed: one conv per block");
    run_both(&g, x, &Grid::uniform(3, 3));
}

/// A strided conv that leaves its input's last row unread: the tiler does
/// not compute that row, so the untiled baseline is what one tile computes
/// and a 1×1 grid has no halo (`bench tiles` printed −1 % and −3 %).
#[test]
fn a_one_tile_grid_has_no_halo_where_a_border_row_goes_unread() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 2, 8, 8]);
    g.inputs.push(x);
    let a = conv(&mut g, "c1", x, 3, 3, 1, &mut rng);
    // 3×3, stride 2, no pad: outputs 0..3 read rows 0..7 of the 8.
    let op = Op::Conv(Conv {
        weight: Arc::new(random_tensor(&mut rng, vec![2, 3, 3, 3])),
        bias: None,
        strides: [2, 2],
        pads: [0; 4],
        dilations: [1, 1],
        group: 1,
        activation: Activation::Relu,
    });
    let b = g.add_node("c2", op, vec![a], "c2_out").expect("conv");
    g.outputs.push(b);
    let block = Block::new(&g, vec![0, 1]).expect("block");
    let untiled = tile_engine::tiling::untiled_flops(&g, &block).expect("plan");
    assert!(
        untiled < block.flops(&g),
        "{untiled} vs {}",
        block.flops(&g)
    );
    let one = tile_engine::tiling::halo_overhead(&g, &block, &Grid::uniform(1, 1)).expect("1x1");
    assert_eq!(one, 0.0);
    let two = tile_engine::tiling::halo_overhead(&g, &block, &Grid::uniform(2, 1)).expect("2x1");
    assert!(two > 0.0, "{two}");
}

/// A binary whose constant comes first (`1 - x`, `c / x`, as PyTorch
/// exports write them) tiles with the maps around it instead of running
/// whole, and its tiles stitch to the untiled result bit for bit.
#[test]
fn a_binary_with_its_constant_first_is_tiled() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 2, 12, 13]);
    g.inputs.push(x);
    let a = conv(&mut g, "c1", x, 3, 3, 1, &mut rng);
    let one = g.add_constant("one", tile_engine::Tensor::scalar(1.0));
    let per_c = g.add_constant(
        "per_c",
        tile_engine::Tensor::new(vec![1, 3, 1, 1], vec![0.5, -2.0, 3.0]).expect("per_c"),
    );
    let binary = |kind| Op::Binary {
        kind,
        activation: Activation::Identity,
    };
    let b = g
        .add_node("sub", binary(BinaryKind::Sub), vec![one, a], "sub_out")
        .expect("sub");
    let c = g
        .add_node("div", binary(BinaryKind::Div), vec![per_c, b], "div_out")
        .expect("div");
    let d = conv(&mut g, "c2", c, 2, 3, 1, &mut rng);
    g.outputs.push(d);
    for node in 0..g.nodes.len() {
        assert!(
            tile_engine::tiling::is_tileable(&g, node),
            "{}",
            g.nodes[node].name
        );
    }
    let block = Block::new(&g, (0..g.nodes.len()).collect()).expect("one block");
    let tiles = plan_tiles(&g, &block, &Grid::uniform(3, 2)).expect("plan");
    assert_eq!(tiles.len(), 6);
    run_both(&g, x, &Grid::uniform(3, 2));
    run_both(&g, x, &Grid::uniform(5, 1));
}

/// In a ×3 super-resolution block (convs, then depth-to-space by 3) the
/// grid's cuts move onto multiples of 3: a cut between them makes both
/// strips compute the low-resolution row it falls in and that row's halo.
/// The tiles still cover the map once and stitch to the untiled bits.
#[test]
fn cuts_of_an_upsampling_block_fall_on_its_factor() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut g = Graph::default();
    let x = g.add_value("x", vec![1, 1, 16, 16]);
    g.inputs.push(x);
    let a = conv(&mut g, "c1", x, 4, 5, 2, &mut rng);
    let b = conv(&mut g, "c2", a, 9, 3, 1, &mut rng);
    let op = Op::DepthToSpace {
        blocksize: 3,
        mode: tile_engine::ir::DepthToSpaceMode::Crd,
    };
    let y = g.add_node("d2s", op, vec![b], "y").expect("d2s");
    g.outputs.push(y);
    let block = Block::new(&g, vec![0, 1, 2]).expect("block");
    // 48 rows in 5 strips: the grid's own cuts are 10, 19, 29, 38.
    let grid = Grid::uniform(5, 1);
    let naive = grid.regions(48, 48).expect("regions");
    assert_eq!(naive[1].rows, Span::new(10, 19));
    let regions = block_regions(&g, &block, &grid).expect("regions");
    let cuts: Vec<usize> = regions.iter().skip(1).map(|r| r.rows.start).collect();
    assert!(cuts.iter().all(|c| c % 3 == 0), "{cuts:?}");
    for (r, n) in regions.iter().zip(&naive) {
        assert!(r.rows.start.abs_diff(n.rows.start) < 3, "{r} vs {n}");
    }
    let flops = |rs: &[Region]| -> u64 {
        rs.iter()
            .map(|&r| plan_tile(&g, &block, r).expect("tile").flops)
            .sum()
    };
    assert!(flops(&regions) < flops(&naive), "aligned cuts cost less");
    // Unequal shares (a slow and a fast worker): the cut still lands on
    // the factor, near where the shares put it.
    let uneven = Grid::with_shares(vec![1.0, 4.0], vec![1.0]);
    let r = block_regions(&g, &block, &uneven).expect("regions");
    let naive = uneven.regions(48, 48).expect("regions");
    assert_eq!(r[1].rows.start % 3, 0, "{}", r[1]);
    assert!(r[1].rows.start.abs_diff(naive[1].rows.start) < 3);
    run_both(&g, x, &uneven);
    run_both(&g, x, &grid);
    run_both(&g, x, &Grid::uniform(4, 3));
}
