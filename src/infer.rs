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

/// Largest grid side [`run_within_limits`] tries.
const MAX_AUTO_GRID: usize = 16;

/// [`run_graph`], with the grid made finer while a feature map is larger
/// than the GPU can bind (lavapipe: 128 MiB, a 640×480 image through the
/// default model at 1×1): tiles of a finer grid hold smaller maps, and the
/// result does not change with the grid. Returns the grid that ran.
fn run_within_limits(
    exec: &dyn Executor,
    graph: &Graph,
    input: Tensor,
    mut grid: Grid,
    fuse: Option<usize>,
) -> Result<(Vec<Tensor>, Grid)> {
    let mut last: Option<String> = None;
    loop {
        match run_graph(exec, graph, input.clone(), &grid, fuse) {
            Ok(out) => return Ok((out, grid)),
            Err(e) => {
                let limit = matches!(
                    e.downcast_ref::<tile_engine::Error>(),
                    Some(tile_engine::Error::Limit(_))
                );
                if !limit {
                    return Err(e);
                }
                let message = format!("{e:#}");
                // A map that tiles shrinks with the grid, so its error
                // changes; the same error twice may be a layer that runs
                // whole, or two grids with tiles of equal height: the
                // finest grid tells them apart.
                let repeated = last.as_deref() == Some(message.as_str());
                if grid.rows.max(grid.cols) >= MAX_AUTO_GRID {
                    let hint = largest_untiled_map(graph, fuse)
                        .map_or_else(String::new, |h| format!("; {h}"));
                    return Err(e.context(format!(
                        "{} at grid {grid}{hint} (too large for {}; try --backend cpu)",
                        if repeated {
                            "the same map stays over the limit"
                        } else {
                            "still over the limit"
                        },
                        exec.name()
                    )));
                }
                let finer = if repeated {
                    Grid::uniform(MAX_AUTO_GRID, MAX_AUTO_GRID)
                } else {
                    Grid::uniform(grid.rows + 1, grid.cols + 1)
                };
                if last.is_none() {
                    eprintln!("grid {grid}: {message}; trying finer grids");
                }
                last = Some(message);
                grid = finer;
            }
        }
    }
}

/// The largest map a layer that is never tiled (see
/// [`tile_engine::tiling::choose_blocks`]) reads or writes, named for an error.
fn largest_untiled_map(graph: &Graph, fuse: Option<usize>) -> Option<String> {
    let options = fuse.map_or_else(FusionOptions::default, FusionOptions::fixed);
    tile_engine::tiling::choose_blocks(graph, &options)
        .iter()
        .filter_map(|s| match s {
            tile_engine::tiling::Segment::Whole(nodes) => Some(nodes),
            tile_engine::tiling::Segment::Tiled(_) => None,
        })
        .flatten()
        .flat_map(|&n| {
            let node = &graph.nodes[n];
            node.inputs
                .iter()
                .chain([&node.output])
                .filter(|v| !graph.constants.contains_key(v))
                .map(move |&v| (node, v))
        })
        .max_by_key(|&(_, v)| graph.shape(v).iter().product::<usize>())
        .map(|(node, v)| {
            let shape = graph.shape(v);
            let mib = shape.iter().product::<usize>() as f64 * 4.0 / (1 << 20) as f64;
            format!(
                "{} ({}) runs whole, on a map of {shape:?} ({mib:.1} MiB)",
                node.name,
                node.op.name()
            )
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
    let exec = executor(
        args.backend,
        args.adapter.clone(),
        args.no_autotune,
        "--backend cpu",
    )?;
    let started = Instant::now();
    let (outputs, grid) = run_within_limits(exec.as_ref(), &graph, input, grid, args.fuse)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU executor, but refusing any graph whose input map is larger
    /// than `max` elements, as a GPU refuses a map over its binding limit.
    struct Bounded {
        max: usize,
    }

    impl Executor for Bounded {
        fn name(&self) -> String {
            "bounded".into()
        }
        fn run(&self, graph: &Graph, inputs: &[Tensor]) -> tile_engine::Result<Vec<Tensor>> {
            if let Some(t) = inputs.iter().find(|t| t.data().len() > self.max) {
                return Err(tile_engine::Error::Limit(format!(
                    "{} elements over {}",
                    t.data().len(),
                    self.max
                )));
            }
            tile_engine::cpu::run(graph, inputs)
        }
    }

    #[test]
    fn a_map_over_the_limit_runs_on_a_finer_grid_with_the_same_result() {
        // Two 3×3 convs, 3 → 4 → 3 channels: one tileable block.
        let mut graph = Graph::default();
        let mut x = graph.add_value("input", vec![1, 3, 24, 24]);
        graph.inputs.push(x);
        for (i, (cin, cout)) in [(3, 4), (4, 3)].into_iter().enumerate() {
            let w = Tensor::new(
                vec![cout, cin, 3, 3],
                (0..cout * cin * 9).map(|k| (k % 7) as f32 - 3.0).collect(),
            )
            .expect("weights");
            let conv = tile_engine::ir::Op::Conv(tile_engine::ir::Conv {
                weight: std::sync::Arc::new(w),
                bias: None,
                strides: [1, 1],
                pads: [1, 1, 1, 1],
                dilations: [1, 1],
                group: 1,
                activation: tile_engine::ir::Activation::Relu,
            });
            x = graph
                .add_node(format!("conv{i}"), conv, vec![x], format!("y{i}"))
                .expect("node");
        }
        graph.outputs.push(x);
        let input = Tensor::new(
            vec![1, 3, 24, 24],
            (0..3 * 24 * 24).map(|i| (i % 251) as f32).collect(),
        )
        .expect("input");
        let want = tile_engine::cpu::run(&graph, std::slice::from_ref(&input)).expect("whole");
        // The whole input (1728 elements) is over the limit; a 2×2 tile's,
        // halo included, is not.
        let exec = Bounded { max: 1200 };
        let (got, grid) =
            run_within_limits(&exec, &graph, input.clone(), Grid::uniform(1, 1), None)
                .expect("runs tiled");
        assert_eq!(grid, Grid::uniform(2, 2));
        assert_eq!(got[0].data(), want[0].data());
        // Nothing fits: the error says which grid it stopped at.
        let e = run_within_limits(
            &Bounded { max: 1 },
            &graph,
            input.clone(),
            Grid::uniform(1, 1),
            None,
        )
        .expect_err("nothing fits");
        assert!(
            format!("{e:#}").contains("still over the limit at grid 16x16"),
            "{e:#}"
        );

        // A layer that runs whole (a global pool) on a map over the limit:
        // the same error at 2×2 as at 1×1 ends the search there, naming it.
        let pooled = graph.add_node(
            "pool",
            tile_engine::ir::Op::GlobalPool(tile_engine::ir::PoolKind::Average {
                count_include_pad: false,
            }),
            vec![x],
            "pooled",
        );
        let pooled = pooled.expect("pool node");
        graph.outputs = vec![pooled];
        let e = run_within_limits(&exec, &graph, input, Grid::uniform(1, 1), None)
            .expect_err("the pool's map never shrinks");
        let text = format!("{e:#}");
        assert!(
            text.contains("the same map stays over the limit at grid 16x16"),
            "{text}"
        );
        assert!(text.contains("pool (globalpool) runs whole"), "{text}");
    }
}
