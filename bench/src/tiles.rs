//! `cargo run -p bench --release -- tiles [--model M] [--size N] [--max-grid G] [--grids LIST] [--no-latency] [--backend cpu|gpu] [--reps N]`
//!
//! Tile-size sweep on a model (`--model`: an ONNX file, a TF.js model.json
//! or `default`; without it a VGG-16 conv stack of 13 convs + 5 max-pools
//! with random weights): for grids 1×1 … G×G and several fused depths, the
//! per-tile peak memory (and that of one node running every tile and
//! holding the maps between blocks), halo FLOP overhead and bytes per tile (analytic,
//! exact, from the tile geometry; the VGG stack at 3×224×224), and the
//! latency of tiled runs (the VGG stack at 3×N×N, default 112; wall-clock,
//! tiles run one after another, the median of `--reps` runs taken round
//! robin over the grids) on the CPU executor or, with `--backend gpu`, on
//! the wgpu executor, for the `--grids` given (default: square grids and
//! row strips), each run checked bit for bit against the untiled run on
//! the same executor. For a model that is one tileable block it also
//! prints what a halo exchange at the best cut would save against row
//! strips that recompute their neighbours' rows (geometry only). Writes
//! `tiles.json` and `tiles.svg` in `--out` (default `out/bench/`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;
use svg::Document;
use svg::node::element::path::Data;
use svg::node::element::{Circle, Line, Path, Rectangle, Text};
use tile_engine::ir::{Activation, Conv, Graph, Op, Pool, PoolKind};
use tile_engine::tiling::{
    Block, FusionOptions, Grid, Segment, TiledOptions, choose_blocks, extract, halo_flops,
    peak_live_bytes, plan_tiles, report_block, run_segments,
};

use crate::util::{COLORS, Rng, median};

/// VGG-16's feature extractor: channel counts, `0` for a 2×2 max-pool.
const VGG16: [usize; 18] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];

/// The VGG-16 conv stack on a 3×size×size input, stopping after `convs` conv layers
/// (pools included up to that point).
pub fn vgg16_convs(size: usize, convs: usize) -> anyhow::Result<Graph> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut g = Graph::default();
    let mut x = g.add_value("input", vec![1, 3, size, size]);
    g.inputs.push(x);
    let (mut stage, mut idx, mut done) = (1, 1, 0);
    for &c in &VGG16 {
        if c == 0 {
            let op = Op::Pool(Pool {
                kind: PoolKind::Max,
                kernel: [2, 2],
                strides: [2, 2],
                pads: [0; 4],
                dilations: [1, 1],
                ceil_mode: false,
            });
            x = g.add_node(
                format!("pool{stage}"),
                op,
                vec![x],
                format!("pool{stage}_out"),
            )?;
            stage += 1;
            idx = 1;
            continue;
        }
        if done == convs {
            break;
        }
        let cin = g.shape(x)[1];
        // He-style scale keeps activations in range through 13 layers.
        let scale = (6.0 / (cin * 9) as f32).sqrt();
        let op = Op::Conv(Conv {
            weight: Arc::new(rng.tensor(vec![c, cin, 3, 3], scale)?),
            bias: Some(Arc::new((0..c).map(|_| rng.next() * 0.1).collect())),
            strides: [1, 1],
            pads: [1; 4],
            dilations: [1, 1],
            group: 1,
            activation: Activation::Relu,
        });
        let name = format!("conv{stage}_{idx}");
        x = g.add_node(name.clone(), op, vec![x], format!("{name}_out"))?;
        idx += 1;
        done += 1;
    }
    g.outputs.push(x);
    g.validate()?;
    Ok(g)
}

/// A fusion setting of the sweep.
#[derive(Clone)]
struct Fuse {
    label: String,
    options: FusionOptions,
}

fn fuse_settings() -> Vec<Fuse> {
    let mut v = vec![Fuse {
        label: "auto".into(),
        options: FusionOptions::default(),
    }];
    for d in [3, 6, 9] {
        v.push(Fuse {
            label: format!("fuse {d}"),
            options: FusionOptions::fixed(d),
        });
    }
    v.push(Fuse {
        label: "fuse all".into(),
        options: FusionOptions::fixed(usize::MAX),
    });
    v
}

/// Model-level figures of one segmentation at one grid.
#[derive(serde::Serialize)]
struct Point {
    fuse: String,
    grid: usize,
    blocks: usize,
    /// Peak of one tile's working set: what a tile worker needs.
    tile_peak_bytes: u64,
    /// Peak of one node running every tile and stitching the maps between blocks.
    node_peak_bytes: u64,
    untiled_peak_bytes: u64,
    /// Saving of `tile_peak_bytes` against the untiled run.
    memory_saving_pct: f64,
    halo_overhead_pct: f64,
    max_in_bytes_per_tile: u64,
    max_out_bytes_per_tile: u64,
}

/// The nodes of a segment, tiled or whole.
fn segment_nodes(s: &Segment) -> &[usize] {
    match s {
        Segment::Tiled(b) => &b.nodes,
        Segment::Whole(n) => n,
    }
}

/// Bytes of one f32 value of `g`.
fn value_bytes(g: &Graph, v: usize) -> u64 {
    4 * g.values[v].shape.iter().map(|&d| d as u64).product::<u64>()
}

/// For each segment, the bytes of whole maps a node running the segments one
/// after another holds besides the segment's own working set: maps made
/// earlier (or model inputs) that a later segment still reads, or that the
/// model outputs. A skip connection over a block is held while it runs.
fn held_across(g: &Graph, segs: &[Segment]) -> Vec<u64> {
    let mut made = vec![None::<usize>; g.values.len()];
    let mut last = vec![None::<usize>; g.values.len()];
    for (k, s) in segs.iter().enumerate() {
        for &n in segment_nodes(s) {
            made[g.nodes[n].output] = Some(k);
            for &v in &g.nodes[n].inputs {
                last[v] = Some(k);
            }
        }
    }
    for &o in &g.outputs {
        last[o] = Some(usize::MAX);
    }
    segs.iter()
        .enumerate()
        .map(|(k, s)| {
            // What the segment itself reads is in its own figure.
            let reads: std::collections::HashSet<usize> = segment_nodes(s)
                .iter()
                .flat_map(|&n| g.nodes[n].inputs.iter().copied())
                .collect();
            (0..g.values.len())
                .filter(|v| !g.constants.contains_key(v) && !reads.contains(v))
                .filter(|&v| made[v].is_none_or(|m| m < k) && last[v].is_some_and(|l| l > k))
                .map(|v| value_bytes(g, v))
                .sum()
        })
        .collect()
}

fn analyse(g: &Graph, segs: &[Segment], fuse: &str, n: usize) -> anyhow::Result<Point> {
    let grid = Grid::uniform(n, n);
    let (mut tiled, mut untiled, mut peak, mut node_peak, mut inb, mut outb, mut blocks) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0);
    let consumers = g.consumers();
    let held = held_across(g, segs);
    let map_bytes = |vs: &[usize]| -> u64 { vs.iter().map(|&v| value_bytes(g, v)).sum() };
    for (s, &held) in segs.iter().zip(&held) {
        match s {
            Segment::Tiled(b) => {
                let r = report_block(g, b, &grid)?;
                tiled += r.tiled_flops;
                untiled += r.untiled_flops;
                peak = peak.max(r.tile_peak_bytes);
                // One node running every tile: the block's whole input
                // maps, its stitched output maps and one tile at a time
                // (a 1×1 grid's one tile is the maps themselves).
                let maps = if n == 1 {
                    0
                } else {
                    map_bytes(&b.inputs) + map_bytes(&b.outputs)
                };
                node_peak = node_peak.max(held + maps + r.tile_peak_bytes);
                inb = inb.max(r.max_in_bytes);
                outb = outb.max(r.max_out_bytes);
                blocks += 1;
            }
            // A part that is not tiled runs whole: its peak counts too.
            Segment::Whole(nodes) => {
                let (sub, _, _) = extract(g, nodes, &consumers);
                let whole = peak_live_bytes(&sub);
                peak = peak.max(whole);
                node_peak = node_peak.max(held + whole);
            }
        }
    }
    let whole = peak_live_bytes(g);
    Ok(Point {
        fuse: fuse.into(),
        grid: n,
        blocks,
        tile_peak_bytes: peak,
        node_peak_bytes: node_peak,
        untiled_peak_bytes: whole,
        memory_saving_pct: 100.0 * (1.0 - peak as f64 / whole as f64),
        halo_overhead_pct: if untiled == 0 {
            0.0
        } else {
            100.0 * (tiled as f64 / untiled as f64 - 1.0)
        },
        max_in_bytes_per_tile: inb,
        max_out_bytes_per_tile: outb,
    })
}

/// What a halo exchange between neighbouring row strips would save, for a
/// model that is one tileable block: the FLOP overhead of `n` strips of the
/// whole model as one block (each strip recomputes its neighbours' rows),
/// against the best cut into two blocks where the strips hand their rows
/// across the cut to their neighbours instead (each block tiled on its own
/// output, so nothing before the cut is recomputed), and the bytes that
/// exchange moves per boundary. Geometry only, exact; a bound on what an
/// exchange could give, before its transfers.
fn exchange_table(model: &Graph, max_grid: usize) -> anyhow::Result<Vec<serde_json::Value>> {
    let n_nodes = model.nodes.len();
    let Ok(all) = Block::new(model, (0..n_nodes).collect()) else {
        return Ok(Vec::new());
    };
    println!(
        "\nrow strips with a halo exchange at one cut (geometry only; the model is one tileable block):"
    );
    println!(
        "{:>6} {:>14} {:>18} {:>14} {:>18}",
        "strips", "one block %", "best cut before", "exchange %", "KiB per boundary"
    );
    let mut rows = Vec::new();
    // A strip needs at least one output row.
    let out_rows = all.output_hw(model)[0];
    if max_grid > out_rows {
        println!("(at most {out_rows} strips: the block's output map has {out_rows} rows)");
    }
    for n in 2..=max_grid.min(out_rows) {
        let grid = Grid::uniform(n, 1);
        let (t, w) = halo_flops(model, &all, &grid)?;
        let one = 100.0 * (t as f64 / w as f64 - 1.0);
        let mut best: Option<(f64, usize, f64)> = None;
        for k in 1..n_nodes {
            let (Ok(a), Ok(b)) = (
                Block::new(model, (0..k).collect()),
                Block::new(model, (k..n_nodes).collect()),
            ) else {
                continue;
            };
            let (Ok((ta, _)), Ok(tiles_b)) =
                (halo_flops(model, &a, &grid), plan_tiles(model, &b, &grid))
            else {
                continue;
            };
            let tb = tiles_b.iter().map(|t| t.flops).sum::<u64>();
            // Against the model's one-tile work, as `one` is.
            let pct = 100.0 * ((ta + tb) as f64 / w as f64 - 1.0);
            // Rows a strip holds twice are rows it got from a neighbour.
            let mut bytes = 0u64;
            for (i, &v) in b.inputs.iter().enumerate() {
                let s = model.shape(v);
                if s.len() != 4 {
                    continue;
                }
                let held: usize = tiles_b.iter().map(|t| t.in_regions[i].area()).sum();
                let extra = held.saturating_sub(s[2] * s[3]);
                bytes += (extra * s[0] * s[1] * 4) as u64;
            }
            let per_boundary = bytes as f64 / (n - 1) as f64 / 1024.0;
            if best.is_none_or(|(p, _, _)| pct < p) {
                best = Some((pct, k, per_boundary));
            }
        }
        let Some((pct, k, kib)) = best else { continue };
        let cut = &model.nodes[k].name;
        println!(
            "{:>6} {:>14.1} {:>18} {:>14.1} {:>18.1}",
            format!("{n}x1"),
            one,
            cut,
            pct,
            kib
        );
        rows.push(json!({"strips": n, "one_block_halo_pct": one, "cut_before": cut, "exchange_halo_pct": pct, "kib_per_boundary": kib}));
    }
    Ok(rows)
}

/// The grids `grid` was clamped to, one entry per distinct clamped grid
/// (`"1x1 (1×1 map)"`), over the tiled blocks of `segs`; empty when
/// every block ran `grid` itself.
fn ran_as(g: &Graph, segs: &[Segment], grid: &Grid) -> Vec<String> {
    let mut ran = Vec::new();
    for seg in segs {
        if let Segment::Tiled(block) = seg {
            let [h, w] = block.output_hw(g);
            let c = grid.clamped(h, w);
            let text = format!("{c} ({h}×{w} map)");
            if c != *grid && !ran.contains(&text) {
                ran.push(text);
            }
        }
    }
    ran
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn describe(g: &Graph, segs: &[Segment]) -> Vec<String> {
    segs.iter()
        .map(|s| match s {
            Segment::Tiled(b) => {
                let (a, z) = b.span_names(g);
                format!("[{a}..{z}] ({} layers)", b.nodes.len())
            }
            Segment::Whole(n) => format!("whole({} nodes)", n.len()),
        })
        .collect()
}

/// Arguments of `bench tiles`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model swept: an .onnx file, a TF.js model.json or `default` (the
    /// embedded super-resolution model); without it, a VGG-16 conv stack
    /// with random weights.
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// Input side N (3×N×N): of the timed runs of the VGG stack (default
    /// 112, at least 32), and of the whole sweep of `default` (default 128)
    /// or of a TF.js or ONNX model with a free spatial size (default: the
    /// shape it declares, else 224); refused for a model whose size is fixed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16384))]
    size: Option<u64>,
    /// Largest grid G×G swept in the memory and halo table (at most 8).
    #[arg(long, value_name = "G", default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=8))]
    max_grid: usize,
    /// Grids timed, comma-separated RxC, each side at most 64 (default:
    /// 1x1 to 4x4 and the 2x1 and 4x1 row strips, each with no side over
    /// --max-grid).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_grid)]
    grids: Vec<Grid>,
    /// Skip the timed runs (geometry only).
    #[arg(long)]
    no_latency: bool,
    /// Executor of the timed runs.
    #[arg(long, value_enum, ignore_case = true, default_value = "cpu")]
    backend: tessera::Backend,
    /// Timed runs per grid (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    reps: u64,
    /// Folder for tiles.json and tiles.svg.
    #[arg(long, value_name = "DIR", default_value = "out/bench")]
    out: std::path::PathBuf,
}

/// Largest side of a timed grid (the plot draws a tick per tile per side).
const MAX_GRID_SIDE: usize = 64;

fn parse_grid(s: &str) -> Result<Grid, String> {
    let g = Grid::parse(s).map_err(|e| e.to_string())?;
    if g.rows.max(g.cols) > MAX_GRID_SIDE {
        return Err(format!("grid '{s}' has a side over {MAX_GRID_SIDE}"));
    }
    Ok(g)
}

/// What the sweep runs on: the graph of the memory and halo table and the
/// graph of the timed runs (the same graph for a user's model).
struct Subject {
    /// Long name, for the report.
    name: String,
    /// Short label, for plot titles.
    label: String,
    analytic: Graph,
    timed: Graph,
}

fn shape_text(g: &Graph) -> String {
    g.inputs
        .iter()
        .map(|&i| {
            g.shape(i)
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("x")
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn subject(args: &Args) -> anyhow::Result<Subject> {
    let size = args.size.map(|s| s as usize);
    let Some(spec) = &args.model else {
        if let Some(n) = size.filter(|&n| n < 32) {
            // Five 2×2 pools halve the map five times.
            anyhow::bail!("--size {n}: the VGG-16 conv stack needs an input of at least 32");
        }
        return Ok(Subject {
            name: "VGG-16 conv stack (13 conv + 5 max-pool), random weights".into(),
            label: "VGG-16 convs".into(),
            analytic: vgg16_convs(224, 13)?,
            timed: vgg16_convs(size.unwrap_or(112), 13)?,
        });
    };
    let kind = tessera::model::kind_of(spec)?;
    let g = match (kind, size) {
        (tessera::model::ModelKind::Default, None) => {
            tessera::model::load(spec, &[1, 3, 128, 128])?
        }
        (_, None) => tessera::model::load_for_planning(spec, None)?,
        (_, Some(n)) => {
            // An ONNX file keeps the sizes it fixes: only a symbolic height
            // and width take `--size`, and a size that would be ignored is refused.
            let g = tessera::model::load(spec, &[1, 3, n, n])?;
            let input = g.inputs.first().map(|&v| g.shape(v).to_vec());
            if let Some(s) = input.filter(|s| !s.ends_with(&[n, n])) {
                anyhow::bail!("--size {n}: the model's input is fixed at {s:?}");
            }
            g
        }
    };
    // `model.json` says little in a title: a TF.js model is named by its folder.
    let path = std::path::Path::new(spec);
    let named = if kind == tessera::model::ModelKind::Tfjs {
        path.parent().and_then(|p| p.file_name())
    } else {
        path.file_name()
    };
    Ok(Subject {
        name: spec.clone(),
        label: named.map_or_else(|| spec.clone(), |f| f.to_string_lossy().into_owned()),
        analytic: g.clone(),
        timed: g,
    })
}

/// The grids timed by default: square grids up to 4×4 and two row strips.
fn default_grids(max_grid: usize) -> Vec<Grid> {
    let square = (1..=4).map(|n| Grid::uniform(n, n));
    let strips = [2, 4].into_iter().map(|n| Grid::uniform(n, 1));
    square
        .chain(strips)
        .filter(|g| g.rows.max(g.cols) <= max_grid)
        .collect()
}

/// Runs the tiles benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (max_grid, latency) = (args.max_grid, !args.no_latency);
    let subject = subject(&args)?;
    // Before the sweep: a bad --out would otherwise fail after it, its
    // JSON and SVG lost.
    std::fs::create_dir_all(&args.out).with_context(|| format!("--out {}", args.out.display()))?;

    // 1. For the VGG stack: the halo overhead of its first 8 conv layers as
    // one block, 224×224 (what the fusion chooser's threshold is set by).
    let mut first8_rows = Vec::new();
    let mut first8_chooser = Vec::new();
    if args.model.is_none() {
        let first8 = vgg16_convs(224, 8)?;
        let block8 = Block::new(&first8, (0..first8.nodes.len()).collect())?;
        println!("VGG-16 first 8 conv layers (+3 pools) as one fused block, 3x224x224:");
        println!(
            "{:>6} {:>10} {:>14} {:>14}",
            "grid", "halo %", "tile peak MiB", "in/tile MiB"
        );
        for n in 1..=max_grid {
            let r = report_block(&first8, &block8, &Grid::uniform(n, n))?;
            println!(
                "{:>6} {:>10.2} {:>14.2} {:>14.3}",
                r.grid,
                r.halo_overhead_pct,
                mib(r.tile_peak_bytes),
                mib(r.max_in_bytes)
            );
            first8_rows.push(r);
        }
        let auto8 = choose_blocks(&first8, &FusionOptions::default());
        first8_chooser = describe(&first8, &auto8);
        println!(
            "chooser (max {:.0}% halo at 2x2): {}\n",
            tile_engine::tiling::DEFAULT_MAX_HALO_OVERHEAD * 100.0,
            first8_chooser.join(" ")
        );
    }

    // 2. The whole model: memory and overhead per fused depth and grid.
    let model = &subject.analytic;
    let analytic_shape = shape_text(model);
    println!(
        "{}, {analytic_shape}, analytic (exact bytes of live tensors):",
        subject.name
    );
    println!(
        "{:>9} {:>5} {:>7} {:>14} {:>14} {:>9} {:>8} {:>12}",
        "fuse",
        "grid",
        "blocks",
        "tile peak MiB",
        "node peak MiB",
        "saving %",
        "halo %",
        "in/tile MiB"
    );
    let mut points = Vec::new();
    let mut chosen = Vec::new();
    for f in fuse_settings() {
        let segs = choose_blocks(model, &f.options);
        chosen.push(json!({"fuse": f.label, "blocks": describe(model, &segs)}));
        for n in 1..=max_grid {
            let p = analyse(model, &segs, &f.label, n)?;
            println!(
                "{:>9} {:>5} {:>7} {:>14.2} {:>14.2} {:>9.1} {:>8.2} {:>12.3}",
                p.fuse,
                format!("{n}x{n}"),
                p.blocks,
                mib(p.tile_peak_bytes),
                mib(p.node_peak_bytes),
                p.memory_saving_pct,
                p.halo_overhead_pct,
                mib(p.max_in_bytes_per_tile)
            );
            points.push(p);
        }
    }
    println!(
        "untiled peak: {:.2} MiB; tile peak: one tile's working set (a tile worker's need), or a part that is not tiled run whole where that is larger (a bilinear resize, a global pool); saving: tile peak against untiled; node peak: one node running every tile, holding the whole maps between and across blocks (a skip connection over a block too)",
        mib(peak_live_bytes(model))
    );
    if points.iter().all(|p| p.blocks == 0) {
        println!("no part of this model is tileable: every grid runs it whole");
    }
    let smallest = choose_blocks(model, &FusionOptions::default())
        .iter()
        .filter_map(|s| match s {
            Segment::Tiled(b) => Some(b.output_hw(model)),
            Segment::Whole(_) => None,
        })
        .map(|[h, w]| h.min(w))
        .min();
    if let Some(side) = smallest.filter(|&side| side < max_grid) {
        println!(
            "a block whose output map has fewer rows or columns than the grid runs as that many (the smallest side here: {side})"
        );
    }
    let exchange = exchange_table(model, max_grid)?;

    // 3. Latency of the timed graph.
    let small = &subject.timed;
    let timed_shape = shape_text(small);
    let grids = if args.grids.is_empty() {
        default_grids(max_grid)
    } else {
        args.grids.clone()
    };
    let mut lat = Vec::new();
    let mut untiled_ms = 0.0;
    let backend = args.backend;
    let executor_name = format!("{backend:?}").to_uppercase();
    if latency {
        let exec = tessera::exec::executor(backend, None, true, "--backend cpu")?;
        let mut rng = Rng(42);
        let inputs = small
            .inputs
            .iter()
            .map(|&i| rng.tensor(small.shape(i).to_vec(), 1.0))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let opts = TiledOptions::default();
        // Square grids and row strips, under the chooser's blocks and under
        // one block of everything.
        let mut cases: Vec<(String, Grid, Vec<Segment>)> = Vec::new();
        for f in fuse_settings()
            .into_iter()
            .filter(|f| f.label == "auto" || f.label == "fuse all")
        {
            let segs = choose_blocks(small, &f.options);
            for grid in &grids {
                cases.push((f.label.clone(), grid.clone(), segs.clone()));
            }
        }
        // The untiled run on the same executor is the reference: tiled ==
        // untiled bit for bit is the engine's invariant on any executor (a
        // GPU's fused multiply-adds may round otherwise than the CPU's).
        let inputs = inputs.as_slice();
        let reference = exec.run(small, inputs)?;
        let bits = |out: &[tile_engine::Tensor]| -> Vec<u32> {
            out.iter()
                .flat_map(|t| t.data().iter().map(|x| x.to_bits()))
                .collect()
        };
        let want = bits(&reference);
        // Round 0 warms every case up (pipelines compile); each round starts
        // at another case, so a slow spell of the machine does not keep
        // falling on the same one. Index 0 is the untiled run.
        let mut untiled_samples = Vec::new();
        let mut samples = vec![Vec::new(); cases.len()];
        let mut same = vec![true; cases.len()];
        let rounds = args.reps as usize + 1;
        for round in 0..rounds {
            for k in tessera::cluster::experiment::round_order(cases.len() + 1, round, rounds) {
                let t0 = Instant::now();
                let out = match k.checked_sub(1).map(|c| &cases[c]) {
                    None => exec.run(small, inputs)?,
                    Some((_, grid, segs)) => {
                        run_segments(exec.as_ref(), small, inputs, segs, grid, opts.clamp_grid)?
                    }
                };
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                if let Some(c) = k.checked_sub(1) {
                    same[c] &= bits(&out) == want;
                    if round > 0 {
                        samples[c].push(ms);
                    }
                } else if round > 0 {
                    untiled_samples.push(ms);
                }
            }
        }
        untiled_ms = median(untiled_samples);
        println!(
            "\nlatency, {executor_name} executor, {timed_shape}, wall-clock, tiles sequential, median of {}; untiled {untiled_ms:.1} ms",
            args.reps
        );
        println!(
            "{:>9} {:>5} {:>10} {:>10} {:>13}",
            "fuse", "grid", "ms", "/ untiled", "bit-identical"
        );
        let mut clamped_any = false;
        for (k, (label, grid, segs)) in cases.iter().enumerate() {
            let ms = median(std::mem::take(&mut samples[k]));
            let same = same[k];
            let ran = ran_as(small, segs, grid);
            clamped_any |= !ran.is_empty();
            println!(
                "{:>9} {:>5} {:>10.1} {:>10.2} {:>13}{}",
                label,
                format!("{}x{}", grid.rows, grid.cols),
                ms,
                ms / untiled_ms,
                if same { "yes" } else { "NO" },
                if ran.is_empty() {
                    String::new()
                } else {
                    format!("  ran as {}", ran.join(", "))
                }
            );
            anyhow::ensure!(
                same,
                "tiled output differs from the untiled run ({label} at {}x{})",
                grid.rows,
                grid.cols
            );
            let entry = json!({"fuse": label, "rows": grid.rows, "cols": grid.cols, "ms": ms, "bit_identical": same, "ran_as": ran});
            lat.push(entry);
        }
        if clamped_any {
            println!(
                "(a grid larger than a block's output map runs that block at the map's size: \"ran as\" lists the grids those blocks ran)"
            );
        }
    }

    let out = &args.out;
    let (json_path, svg_path) = (out.join("tiles.json"), out.join("tiles.svg"));
    let report = json!({
        "model": subject.name,
        "analytic_inputs": model.inputs.iter().map(|&i| model.shape(i).to_vec()).collect::<Vec<_>>(),
        "latency_inputs": small.inputs.iter().map(|&i| small.shape(i).to_vec()).collect::<Vec<_>>(),
        "latency_executor": executor_name,
        "latency_reps": args.reps,
        "max_halo_overhead_default": tile_engine::tiling::DEFAULT_MAX_HALO_OVERHEAD,
        "first8_one_block": first8_rows,
        "first8_chooser": first8_chooser,
        "sweep": points,
        "chosen_blocks": chosen,
        "halo_exchange": exchange,
        "latency_untiled_ms": untiled_ms,
        "latency": lat,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let titles = [
        format!("{} @{analytic_shape}", subject.label),
        format!("{executor_name} executor @{timed_shape}"),
    ];
    let doc = plot(&points, &lat, untiled_ms, max_grid, &titles);
    svg::save(&svg_path, &doc).with_context(|| format!("writing {}", svg_path.display()))?;
    println!("\nwrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

/// An axis tick's label, with as many decimals as ticks `ymax / 4` apart
/// need to differ (whole numbers labelled a 0–1.25 MiB axis 0, 0, 1, 1, 1).
fn tick(y: f64, ymax: f64) -> String {
    let step = ymax / 4.0;
    let decimals = if step >= 10.0 {
        0
    } else if step >= 1.0 {
        1
    } else {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize + 1
    };
    format!("{y:.decimals$}")
}

/// One panel: axes, grid lines, a title, series of (x, y) points.
#[allow(clippy::too_many_arguments)]
fn panel(
    mut doc: Document,
    x0: f64,
    title: &str,
    [xlabel, ylabel]: [&str; 2],
    xmax: usize,
    ymax: f64,
    series: &[(String, Vec<(f64, f64)>)],
    hline: Option<(f64, &str)>,
) -> Document {
    let (w, h, top) = (400.0, 260.0, 60.0);
    let sx = |x: f64| x0 + 50.0 + (x - 1.0) / ((xmax.max(2) - 1) as f64) * (w - 70.0);
    let sy = |y: f64| top + h - y / ymax * h;
    // The title fits the panel's 370 px (bold type is about 0.6 em a
    // character); a long one was cut at the canvas's edge.
    let title_px = (370.0 / (0.6 * title.chars().count().max(1) as f64)).min(15.0);
    doc = doc.add(
        Text::new(title)
            .set("x", x0 + 50.0)
            .set("y", top - 25.0)
            .set("font-size", format!("{title_px:.1}"))
            .set("font-weight", "bold"),
    );
    doc = doc.add(
        Rectangle::new()
            .set("x", x0 + 50.0)
            .set("y", top)
            .set("width", w - 70.0)
            .set("height", h)
            .set("fill", "#fafafa")
            .set("stroke", "#999"),
    );
    for k in 0..=4 {
        let y = ymax * k as f64 / 4.0;
        doc = doc
            .add(
                Line::new()
                    .set("x1", x0 + 50.0)
                    .set("x2", x0 + w - 20.0)
                    .set("y1", sy(y))
                    .set("y2", sy(y))
                    .set("stroke", "#e3e3e3"),
            )
            .add(
                Text::new(tick(y, ymax))
                    .set("x", x0 + 45.0)
                    .set("y", sy(y) + 4.0)
                    .set("font-size", 11)
                    .set("text-anchor", "end"),
            );
    }
    for n in 1..=xmax {
        doc = doc.add(
            Text::new(n.to_string())
                .set("x", sx(n as f64))
                .set("y", top + h + 16.0)
                .set("font-size", 11)
                .set("text-anchor", "middle"),
        );
    }
    doc = doc
        .add(
            Text::new(xlabel)
                .set("x", x0 + 50.0 + (w - 70.0) / 2.0)
                .set("y", top + h + 34.0)
                .set("font-size", 12)
                .set("text-anchor", "middle"),
        )
        .add(
            Text::new(ylabel)
                .set("x", x0 + 50.0)
                .set("y", top - 8.0)
                .set("font-size", 12)
                .set("fill", "#555"),
        );
    if let Some((y, label)) = hline {
        doc = doc
            .add(
                Line::new()
                    .set("x1", x0 + 50.0)
                    .set("x2", x0 + w - 20.0)
                    .set("y1", sy(y))
                    .set("y2", sy(y))
                    .set("stroke", "#555")
                    .set("stroke-dasharray", "5,4"),
            )
            .add(
                Text::new(label)
                    .set("x", x0 + w - 24.0)
                    .set("y", sy(y) - 5.0)
                    .set("font-size", 11)
                    .set("text-anchor", "end")
                    .set("fill", "#555"),
            );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut data = Data::new();
        for (k, &(x, y)) in pts.iter().enumerate() {
            data = if k == 0 {
                data.move_to((sx(x), sy(y)))
            } else {
                data.line_to((sx(x), sy(y)))
            };
            doc = doc.add(
                Circle::new()
                    .set("cx", sx(x))
                    .set("cy", sy(y))
                    .set("r", 3)
                    .set("fill", color),
            );
        }
        doc = doc.add(
            Path::new()
                .set("d", data)
                .set("fill", "none")
                .set("stroke", color)
                .set("stroke-width", 2),
        );
        let ly = top + 14.0 + 16.0 * i as f64;
        doc = doc
            .add(
                Line::new()
                    .set("x1", x0 + w - 130.0)
                    .set("x2", x0 + w - 112.0)
                    .set("y1", ly - 4.0)
                    .set("y2", ly - 4.0)
                    .set("stroke", color)
                    .set("stroke-width", 3),
            )
            .add(
                Text::new(name.clone())
                    .set("x", x0 + w - 108.0)
                    .set("y", ly)
                    .set("font-size", 11),
            );
    }
    doc
}

fn plot(
    points: &[Point],
    lat: &[serde_json::Value],
    untiled_ms: f64,
    max_grid: usize,
    titles: &[String; 2],
) -> Document {
    let mut doc = Document::new()
        .set("viewBox", (0, 0, 860, 380))
        .set("font-family", "Helvetica, Arial, sans-serif")
        .add(
            Rectangle::new()
                .set("width", 860)
                .set("height", 380)
                .set("fill", "white"),
        );
    let mut labels: Vec<String> = Vec::new();
    for p in points {
        if !labels.contains(&p.fuse) {
            labels.push(p.fuse.clone());
        }
    }
    let mem: Vec<(String, Vec<(f64, f64)>)> = labels
        .iter()
        .map(|l| {
            (
                l.clone(),
                points
                    .iter()
                    .filter(|p| &p.fuse == l)
                    .map(|p| (p.grid as f64, mib(p.tile_peak_bytes)))
                    .collect(),
            )
        })
        .collect();
    let untiled = points.first().map_or(1.0, |p| mib(p.untiled_peak_bytes));
    doc = panel(
        doc,
        0.0,
        &format!("Per-tile peak memory, {}", titles[0]),
        ["tiles per side (N×N grid)", "MiB (live tensors)"],
        max_grid,
        untiled * 1.05,
        &mem,
        Some((untiled * 0.25, "75% below untiled")),
    );
    let mut lat_labels: Vec<String> = Vec::new();
    for v in lat {
        if let Some(f) = v["fuse"].as_str()
            && !lat_labels.iter().any(|l| l == f)
        {
            lat_labels.push(f.to_string());
        }
    }
    // Square grids and row strips are plotted by tiles per side; other
    // shapes are in the table and the JSON only.
    let series: Vec<(String, Vec<(f64, f64)>)> = lat_labels
        .iter()
        .flat_map(|l| {
            // In order along x, whatever order --grids gave.
            let pick = |strips: bool| -> Vec<(f64, f64)> {
                let mut pts: Vec<(f64, f64)> = lat
                    .iter()
                    .filter(|v| v["fuse"].as_str() == Some(l.as_str()))
                    .filter(|v| {
                        let (r, c) = (v["rows"].as_u64(), v["cols"].as_u64());
                        if strips {
                            c == Some(1) && r > Some(1)
                        } else {
                            r == c
                        }
                    })
                    .filter_map(|v| Some((v["rows"].as_f64()?, v["ms"].as_f64()?)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                pts
            };
            [
                (l.clone(), pick(false)),
                (format!("{l}, Nx1 strips"), pick(true)),
            ]
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(untiled_ms, f64::max)
        .max(1.0)
        * 1.1;
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0 as usize))
        .max()
        .unwrap_or(1);
    panel(
        doc,
        430.0,
        &format!("Latency, {} (wall-clock)", titles[1]),
        ["tiles per side (N×N grids; strips N×1)", "ms"],
        xmax,
        ymax,
        &series,
        Some((untiled_ms, "untiled")),
    )
}

#[cfg(test)]
mod tests {
    use super::{Args, default_grids, subject, tick};
    use crate::util::parse_args;

    #[test]
    fn axis_ticks_differ_whatever_the_axis_range() {
        for ymax in [0.011, 0.3, 1.25, 3.0, 40.0, 900.0] {
            let labels: Vec<String> = (0..=4).map(|k| tick(ymax * k as f64 / 4.0, ymax)).collect();
            let mut distinct = labels.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), 5, "{ymax}: {labels:?}");
        }
        assert_eq!(tick(600.0, 900.0), "600");
    }

    fn args(argv: &[&str]) -> Args {
        parse_args(argv).expect("valid flags")
    }

    #[test]
    fn a_named_model_is_swept_at_its_own_size() {
        let shape = |argv: &[&str]| {
            let s = subject(&args(argv)).expect("subject");
            (
                s.analytic.shape(s.analytic.inputs[0]).to_vec(),
                s.timed.shape(s.timed.inputs[0]).to_vec(),
            )
        };
        let vgg = shape(&[]);
        assert_eq!(vgg, (vec![1, 3, 224, 224], vec![1, 3, 112, 112]));
        assert_eq!(
            shape(&["--model", "default", "--size", "32"]).1,
            [1, 3, 32, 32]
        );
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        // An ONNX model with fixed sizes runs at the shape it declares, and nothing else.
        let onnx = format!("{root}/tests/data/models/resnet8.onnx");
        assert_eq!(shape(&["--model", &onnx]).1, [1, 3, 64, 64]);
        let err = subject(&args(&["--model", &onnx, "--size", "32"])).err();
        assert!(err.is_some_and(|e| {
            e.to_string()
                .contains("--size 32: the model's input is fixed")
        }));
        // A TF.js model with a fixed, non-square input runs at that shape.
        let tfjs = format!("{root}/tile-engine/tests/tfjs_fixtures/dag/model.json");
        let (a, t) = shape(&["--model", &tfjs]);
        assert_eq!(a, t);
        assert_ne!(t[2], t[3], "{t:?}");
        assert!(subject(&args(&["--model", "no-such.onnx"])).is_err());
    }

    #[test]
    fn grids_given_replace_the_default_ones() {
        let a = args(&["--grids", "5x1,2x3"]);
        let shapes: Vec<_> = a.grids.iter().map(|g| (g.rows, g.cols)).collect();
        assert_eq!(shapes, [(5, 1), (2, 3)]);
        let d: Vec<_> = default_grids(3).iter().map(|g| (g.rows, g.cols)).collect();
        assert_eq!(d, [(1, 1), (2, 2), (3, 3), (2, 1)]);
        assert!(parse_args::<Args>(&["--grids", "65x1"]).is_err());
    }
}
