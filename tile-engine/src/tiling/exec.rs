//! Tiled execution in one process: whole-map segments run as they are,
//! fused blocks run tile by tile and their outputs are stitched exactly.

use std::collections::HashSet;

use super::fusion::{FusionOptions, Segment, choose_blocks};
use super::grid::Grid;
use super::plan::plan_tiles;
use super::stitch::{paste_region, slice_region};
use crate::Executor;
use crate::error::{Error, Result};
use crate::ir::{Graph, NodeId, ValueId};
use crate::tensor::Tensor;

/// How [`run_tiled`] cuts and tiles a model.
#[derive(Clone, Debug, PartialEq)]
pub struct TiledOptions {
    /// How blocks are chosen (`fuse` is `--fuse N`).
    pub fusion: FusionOptions,
    /// Clamp the grid to each block's output map (a 7×7 map under an 8×8
    /// grid runs 7×7 tiles, with equal shares on a clamped axis) instead of
    /// failing. On by default: a model's late blocks are often smaller than
    /// the grid asked for its early ones.
    pub clamp_grid: bool,
}

impl Default for TiledOptions {
    fn default() -> Self {
        Self {
            fusion: FusionOptions::default(),
            clamp_grid: true,
        }
    }
}

/// Runs `graph` with every fused block cut into `grid` tiles; the result is
/// bit-identical to `exec.run(graph, inputs)` for executors that keep their
/// per-node choices across tile copies (see [`Executor::run`]).
pub fn run_tiled(
    exec: &dyn Executor,
    graph: &Graph,
    inputs: &[Tensor],
    grid: &Grid,
    options: &TiledOptions,
) -> Result<Vec<Tensor>> {
    let segments = choose_blocks(graph, &options.fusion);
    run_segments(exec, graph, inputs, &segments, grid, options.clamp_grid)
}

/// Runs `graph` segment by segment (see [`choose_blocks`]), tiling each
/// [`Segment::Tiled`] block with `grid`.
pub fn run_segments(
    exec: &dyn Executor,
    graph: &Graph,
    inputs: &[Tensor],
    segments: &[Segment],
    grid: &Grid,
    clamp_grid: bool,
) -> Result<Vec<Tensor>> {
    graph.validate()?;
    if inputs.len() != graph.inputs.len() {
        return Err(Error::InvalidInput(format!(
            "model takes {} inputs, got {}",
            graph.inputs.len(),
            inputs.len()
        )));
    }
    let mut env: Vec<Option<Tensor>> = vec![None; graph.values.len()];
    for (&v, t) in graph.inputs.iter().zip(inputs) {
        if t.shape() != graph.shape(v) {
            return Err(Error::InvalidInput(format!(
                "input {} has shape {:?}, the model expects {:?}",
                graph.values[v].name,
                t.shape(),
                graph.shape(v)
            )));
        }
        env[v] = Some(t.clone());
    }
    let consumers = graph.consumers();
    // Each map size whose blocks run on a smaller grid is named once.
    let mut told_clamped: Vec<[usize; 2]> = Vec::new();
    for seg in segments {
        match seg {
            Segment::Whole(nodes) => {
                let (sub, ins, outs) = extract(graph, nodes, &consumers);
                let args = ins
                    .iter()
                    .map(|&v| fetch(&env, graph, v))
                    .collect::<Result<Vec<_>>>()?;
                let results = exec.run(&sub, &args)?;
                for (v, t) in outs.into_iter().zip(results) {
                    env[v] = Some(t);
                }
            }
            Segment::Tiled(block) => {
                let [h, w] = block.output_hw(graph);
                let grid = if clamp_grid {
                    let clamped = grid.clamped(h, w);
                    if clamped != *grid && !told_clamped.contains(&[h, w]) {
                        // Tiles of a pixel or two are mostly halo: the run
                        // is correct but can be many times slower.
                        told_clamped.push([h, w]);
                        tracing::warn!(
                            "grid {grid} is larger than a block's {h}×{w} output map: blocks of that map run as {clamped}"
                        );
                    }
                    clamped
                } else {
                    grid.clone()
                };
                let tiles = plan_tiles(graph, block, &grid)?;
                let mut outs: Vec<Tensor> = block
                    .outputs
                    .iter()
                    .map(|&o| Tensor::zeros(graph.shape(o).to_vec()))
                    .collect();
                for tile in &tiles {
                    let args = block
                        .inputs
                        .iter()
                        .zip(&tile.in_regions)
                        .map(|(&u, &r)| {
                            let t = fetch(&env, graph, u)?;
                            if t.shape().len() == 4 {
                                slice_region(&t, r)
                            } else {
                                Ok(t)
                            }
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let results = exec.run(&tile.graph, &args)?;
                    if results.len() != outs.len() {
                        return Err(Error::Shape(format!(
                            "tile {} returned {} outputs, expected {}",
                            tile.out_region,
                            results.len(),
                            outs.len()
                        )));
                    }
                    for (dst, src) in outs.iter_mut().zip(&results) {
                        paste_region(dst, src, tile.out_region)?;
                    }
                }
                for (&o, t) in block.outputs.iter().zip(outs) {
                    env[o] = Some(t);
                }
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|&o| fetch(&env, graph, o))
        .collect()
}

fn fetch(env: &[Option<Tensor>], graph: &Graph, v: ValueId) -> Result<Tensor> {
    if let Some(t) = env.get(v).and_then(Option::as_ref) {
        return Ok(t.clone());
    }
    if let Some(c) = graph.constants.get(&v) {
        return Ok((**c).clone());
    }
    Err(Error::Malformed(format!(
        "value {} is read before any segment produced it",
        graph.values.get(v).map_or("?", |x| x.name.as_str())
    )))
}

/// The sub-graph of `nodes`: its runtime inputs (values from outside, not
/// constants) and outputs (values read after it, or graph outputs), in the
/// original graph's ids. Deterministic, so a coordinator and a node daemon
/// that hold the same graph agree on both lists.
pub fn extract(
    graph: &Graph,
    nodes: &[NodeId],
    consumers: &[Vec<NodeId>],
) -> (Graph, Vec<ValueId>, Vec<ValueId>) {
    let members: HashSet<NodeId> = nodes.iter().copied().collect();
    let mut sub = Graph::default();
    let mut map = std::collections::HashMap::new();
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    for &id in nodes {
        let n = &graph.nodes[id];
        let mut inputs = Vec::with_capacity(n.inputs.len());
        for &v in &n.inputs {
            let t = *map.entry(v).or_insert_with(|| {
                let val = &graph.values[v];
                let t = sub.add_value(val.name.clone(), val.shape.clone());
                if let Some(c) = graph.constants.get(&v) {
                    sub.constants.insert(t, std::sync::Arc::clone(c));
                } else {
                    sub.inputs.push(t);
                    ins.push(v);
                }
                t
            });
            inputs.push(t);
        }
        let val = &graph.values[n.output];
        let out = sub.add_value(val.name.clone(), val.shape.clone());
        sub.nodes.push(crate::ir::Node {
            name: n.name.clone(),
            op: n.op.clone(),
            inputs,
            output: out,
        });
        map.insert(n.output, out);
        if graph.outputs.contains(&n.output)
            || consumers[n.output].iter().any(|c| !members.contains(c))
        {
            sub.outputs.push(out);
            outs.push(n.output);
        }
    }
    (sub, ins, outs)
}
