//! Choosing and opening an executor, and running a graph within its limits.

use anyhow::{Context, Result};
use serde::Deserialize;
use tile_engine::tiling::{FusionOptions, Grid, TiledOptions};
use tile_engine::{Executor, Graph, Tensor};

/// Which executor runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The CPU reference executor (plain Rust, the oracle).
    Cpu,
    /// The wgpu executor (any Vulkan, Metal, DX12 or GL adapter).
    Gpu,
}

/// Opens the executor the user asked for. `cpu_hint` says how this
/// command picks the CPU executor instead (`--backend cpu`, or a config
/// file's field), for the error when no GPU adapter opens.
pub fn executor(
    backend: Backend,
    adapter: Option<String>,
    no_autotune: bool,
    cpu_hint: &str,
) -> Result<Box<dyn Executor>> {
    Ok(match backend {
        Backend::Cpu => Box::new(tile_engine::cpu::CpuExecutor),
        Backend::Gpu => Box::new(
            tile_engine::gpu::GpuExecutor::new(tile_engine::gpu::GpuOptions {
                adapter,
                no_autotune,
                ..Default::default()
            })
            .with_context(|| format!("cannot open the GPU executor (try {cpu_hint})"))?,
        ),
    })
}

/// An executor whose every run stops between ops once `keep_going` says
/// false (where the executor has such points: see [`Executor::run_until`]).
pub struct Until<'a> {
    /// The executor that runs.
    pub exec: &'a dyn Executor,
    /// Asked before each op.
    pub keep_going: &'a dyn Fn() -> bool,
}

impl Executor for Until<'_> {
    fn name(&self) -> String {
        self.exec.name()
    }

    fn describe(&self) -> String {
        self.exec.describe()
    }

    fn run(&self, graph: &Graph, inputs: &[Tensor]) -> tile_engine::Result<Vec<Tensor>> {
        self.exec.run_until(graph, inputs, self.keep_going)
    }

    fn run_until(
        &self,
        graph: &Graph,
        inputs: &[Tensor],
        keep_going: &dyn Fn() -> bool,
    ) -> tile_engine::Result<Vec<Tensor>> {
        self.exec
            .run_until(graph, inputs, &|| (self.keep_going)() && keep_going())
    }
}

/// Runs `graph` whole (1×1 grid and no fuse override) or tile by tile;
/// returns its outputs in the graph's order.
pub fn run_graph(
    exec: &dyn Executor,
    graph: &Graph,
    inputs: &[Tensor],
    grid: &Grid,
    fuse: Option<usize>,
) -> Result<Vec<Tensor>> {
    Ok(if grid.len() == 1 && fuse.is_none() {
        exec.run(graph, inputs)?
    } else {
        let options = TiledOptions {
            fusion: fuse.map_or_else(FusionOptions::default, FusionOptions::fixed),
            ..TiledOptions::default()
        };
        tile_engine::tiling::run_tiled(exec, graph, inputs, grid, &options)?
    })
}

/// Largest grid side [`run_within_limits`] tries.
const MAX_AUTO_GRID: usize = 16;

/// [`run_graph`], with the grid made finer while a feature map is larger
/// than the GPU can bind (lavapipe: 128 MiB, a 640×480 image through the
/// default model at 1×1): tiles of a finer grid hold smaller maps, and the
/// result does not change with the grid. `note` hears, once, that the
/// first grid was over the limit. Returns the grid that ran. A node daemon
/// runs its jobs through it too, so a tile the planner sized for another
/// GPU still runs here.
pub fn run_within_limits(
    exec: &dyn Executor,
    graph: &Graph,
    inputs: &[Tensor],
    mut grid: Grid,
    fuse: Option<usize>,
    note: &mut dyn FnMut(&str),
) -> Result<(Vec<Tensor>, Grid)> {
    let mut last: Option<String> = None;
    loop {
        match run_graph(exec, graph, inputs, &grid, fuse) {
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
                    note(&format!("grid {grid}: {message}; trying finer grids"));
                }
                last = Some(message);
                grid = finer;
            }
        }
    }
}

/// Which ops a tiled run runs whole between its fused blocks, by kind
/// with counts ("3 of 40 ops run whole: reshape ×2, resize"), if any.
pub fn whole_ops_note(graph: &Graph, fuse: Option<usize>) -> Option<String> {
    let mut kinds: Vec<(&'static str, usize)> = Vec::new();
    for n in run_whole(graph, fuse) {
        let name = graph.nodes[n].op.name();
        match kinds.iter_mut().find(|(k, _)| *k == name) {
            Some((_, c)) => *c += 1,
            None => kinds.push((name, 1)),
        }
    }
    let whole: usize = kinds.iter().map(|(_, c)| c).sum();
    (whole > 0).then(|| {
        let list: Vec<String> = kinds
            .iter()
            .map(|(k, c)| {
                if *c > 1 {
                    format!("{k} ×{c}")
                } else {
                    k.to_string()
                }
            })
            .collect();
        format!(
            "{whole} of {} ops run whole between the tiled blocks: {}",
            graph.nodes.len(),
            list.join(", ")
        )
    })
}

/// The nodes a tiled run with `fuse` runs whole between its blocks, in order.
fn run_whole(graph: &Graph, fuse: Option<usize>) -> Vec<tile_engine::ir::NodeId> {
    let options = fuse.map_or_else(FusionOptions::default, FusionOptions::fixed);
    tile_engine::tiling::choose_blocks(graph, &options)
        .into_iter()
        .filter_map(|s| match s {
            tile_engine::tiling::Segment::Whole(nodes) => Some(nodes),
            tile_engine::tiling::Segment::Tiled(_) => None,
        })
        .flatten()
        .collect()
}

/// The largest map a layer that is never tiled (see
/// [`tile_engine::tiling::choose_blocks`]) reads or writes, named for an error.
fn largest_untiled_map(graph: &Graph, fuse: Option<usize>) -> Option<String> {
    run_whole(graph, fuse)
        .into_iter()
        .flat_map(|n| {
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

/// The CPU executor, but refusing any graph whose input map is larger
/// than `max` elements, as a GPU refuses a map over its binding limit;
/// `refused` counts the refusals.
#[cfg(test)]
pub(crate) struct Bounded {
    pub(crate) max: usize,
    pub(crate) refused: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl Bounded {
    /// Refusing inputs of more than `max` elements.
    pub(crate) fn new(max: usize) -> Self {
        Bounded {
            max,
            refused: Default::default(),
        }
    }
}

#[cfg(test)]
impl Executor for Bounded {
    fn name(&self) -> String {
        "bounded".into()
    }
    fn run(&self, graph: &Graph, inputs: &[Tensor]) -> tile_engine::Result<Vec<Tensor>> {
        if let Some(t) = inputs.iter().find(|t| t.data().len() > self.max) {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(tile_engine::Error::Limit(format!(
                "{} elements over {}",
                t.data().len(),
                self.max
            )));
        }
        tile_engine::cpu::run(graph, inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let exec = Bounded::new(1200);
        let (got, grid) = run_within_limits(
            &exec,
            &graph,
            std::slice::from_ref(&input),
            Grid::uniform(1, 1),
            None,
            &mut |_| {},
        )
        .expect("runs tiled");
        assert_eq!(grid, Grid::uniform(2, 2));
        assert_eq!(got[0].data(), want[0].data());
        // Nothing fits: the error says which grid it stopped at.
        let e = run_within_limits(
            &Bounded::new(1),
            &graph,
            std::slice::from_ref(&input),
            Grid::uniform(1, 1),
            None,
            &mut |_| {},
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
        let e = run_within_limits(
            &exec,
            &graph,
            &[input],
            Grid::uniform(1, 1),
            None,
            &mut |_| {},
        )
        .expect_err("the pool's map never shrinks");
        let text = format!("{e:#}");
        assert!(
            text.contains("the same map stays over the limit at grid 16x16"),
            "{text}"
        );
        assert!(text.contains("pool (globalpool) runs whole"), "{text}");
    }
}
