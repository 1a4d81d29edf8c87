//! `tessera infer`: one model, one input, in this process.

use std::time::Instant;

use anyhow::Result;
use tile_engine::tiling::Grid;

use crate::InferArgs;
use tessera::exec::{executor, run_within_limits};
use tessera::model;

/// Runs a model on one input in this process.
pub fn infer(args: &InferArgs) -> Result<()> {
    let kind = model::kind_of(&args.model)?;
    let grid = Grid::parse(&args.grid)?;
    model::check_pixel_scale(kind, &args.input, &args.output, args.pixel_scale)?;
    // Refused like a pixel scale that would be ignored: the user meant
    // a GPU and would get the CPU without a word.
    if let (Some(name), tessera::Backend::Cpu) = (&args.adapter, args.backend) {
        anyhow::bail!("--adapter {name} picks a GPU adapter; it does nothing with --backend cpu");
    }
    let input = model::read_input(kind, &args.input, args.pixel_scale)?;
    let (graph, input) = model::load_for_input(&args.model, &args.input, input, args.pixel_scale)?;
    model::check_io(&args.model, &graph, &input, &args.output)?;
    model::warn_nan_input(&args.input, &input);
    let exec = executor(
        args.backend,
        args.adapter.clone(),
        args.no_autotune,
        "--backend cpu",
    )?;
    let started = Instant::now();
    let (outputs, grid) = run_within_limits(
        exec.as_ref(),
        &graph,
        std::slice::from_ref(&input),
        grid,
        args.fuse,
        &mut |m| eprintln!("{m}"),
    )?;
    let elapsed = started.elapsed();
    model::write_outputs(kind, &args.output, &outputs, args.pixel_scale)?;
    // One run in a fresh process: a GPU's time holds compiling its kernels
    // (and autotuning them, unless --no-autotune), which a daemon pays once.
    let cold = match args.backend {
        tessera::Backend::Gpu if args.no_autotune => " (a cold run: includes compiling kernels)",
        tessera::Backend::Gpu => {
            " (a cold run: includes compiling kernels and autotuning those not in the cache)"
        }
        tessera::Backend::Cpu => "",
    };
    // What a tile-size benchmark should know: these parts do not shrink.
    if grid.len() > 1
        && let Some(note) = tessera::exec::whole_ops_note(&graph, args.fuse)
    {
        eprintln!("{note}");
    }
    for (path, output) in args.output.iter().zip(&outputs) {
        eprintln!(
            "{}: output {:?} on {} (grid {}x{}) in {:.1} ms{}",
            path.display(),
            output.shape(),
            exec.describe(),
            grid.rows,
            grid.cols,
            elapsed.as_secs_f64() * 1e3,
            cold
        );
    }
    Ok(())
}
