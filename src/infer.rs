//! `tessera infer`: one model, one input, in this process.

use std::time::Instant;

use anyhow::Result;
use tile_engine::tiling::{FusionOptions, Grid, TiledOptions};
use tile_engine::{Executor, Graph, Tensor};

use crate::InferArgs;
use tessera::exec::executor;
use tessera::model;

/// Runs `graph` whole (1×1 grid and no fuse override) or tile by tile;
/// returns its outputs in the graph's order.
pub fn run_graph(
    exec: &dyn Executor,
    graph: &Graph,
    input: Tensor,
    grid: &Grid,
    fuse: Option<usize>,
) -> Result<Vec<Tensor>> {
    Ok(if grid.len() == 1 && fuse.is_none() {
        exec.run(graph, &[input])?
    } else {
        let options = TiledOptions {
            fusion: fuse.map_or_else(FusionOptions::default, FusionOptions::fixed),
            ..TiledOptions::default()
        };
        tile_engine::tiling::run_tiled(exec, graph, &[input], grid, &options)?
    })
}

/// Runs a model on one input in this process.
pub fn infer(args: &InferArgs) -> Result<()> {
    let kind = model::kind_of(&args.model)?;
    let grid = Grid::parse(&args.grid)?;
    model::check_pixel_scale(kind, &args.input, &args.output, args.pixel_scale)?;
    let input = model::read_input(kind, &args.input, args.pixel_scale)?;
    let graph = model::load(&args.model, input.shape())?;
    let input = model::fit_image_channels(&args.input, &graph, input)?;
    model::check_io(&args.model, &graph, &input, &args.output)?;
    let exec = executor(args.backend, args.adapter.clone(), args.no_autotune)?;
    let started = Instant::now();
    let outputs = run_graph(exec.as_ref(), &graph, input, &grid, args.fuse)?;
    let elapsed = started.elapsed();
    model::write_outputs(kind, &args.output, &outputs, args.pixel_scale)?;
    for (path, output) in args.output.iter().zip(&outputs) {
        eprintln!(
            "{}: output {:?} on {} (grid {}x{}) in {:.1} ms",
            path.display(),
            output.shape(),
            exec.name(),
            grid.rows,
            grid.cols,
            elapsed.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
