//! The planner's entry point: [`plan`] (from the engine's graph) and
//! [`plan_dag`] (from a [`ModelDag`], any halo model, any options).

use tile_engine::ir::Graph;

use crate::cluster::{Cluster, NodeIdx, Tier};
use crate::cost::{Context, PlanOptions, Prediction, Topology, edge_blocks};
use crate::dag::ModelDag;
use crate::error::{Error, Result};
use crate::halo::{HaloModel, ReceptiveField, Region};
use crate::partition::{AdditiveModel, min_cut_partition};
use crate::profiler::Estimates;

/// Tier subsets the planner solves, by report name. The first is the full problem.
pub const STRATEGIES: [(&str, [bool; 3]); 7] = [
    ("three-tier", [true, true, true]),
    ("device+edge", [true, true, false]),
    ("device+cloud", [true, false, true]),
    ("edge+cloud", [false, true, true]),
    ("device-only", [true, false, false]),
    ("edge-only", [false, true, false]),
    ("cloud-only", [false, false, true]),
];

/// One candidate plan with its predicted schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Which tier subset produced it (see [`STRATEGIES`]).
    pub strategy: &'static str,
    /// Labels, blocks, grids, shares and predicted times.
    pub prediction: Prediction,
    /// Value of the additive objective the min-cut optimised (see
    /// [`crate::partition`]; for [`ONE_EDGE`], its ops' compute time).
    pub additive_cost_s: f64,
}

impl Plan {
    /// True if every op runs on one node (no tiles spread over several).
    pub fn on_one_node(&self) -> bool {
        let p = &self.prediction;
        let tiers = [Tier::Device, Tier::Edge, Tier::Cloud]
            .iter()
            .filter(|t| p.labels.contains(t))
            .count();
        let mut edge_nodes: Vec<NodeIdx> = p
            .blocks
            .iter()
            .flat_map(|b| b.node_times.iter().map(|t| t.node))
            .collect();
        edge_nodes.sort_unstable();
        edge_nodes.dedup();
        tiers == 1 && edge_nodes.len() <= 1
    }

    /// Predicted latency of one request.
    pub fn makespan_s(&self) -> f64 {
        self.prediction.makespan_s
    }

    /// Index of the first op (topological order) at or beyond `tier`, or the op count.
    pub fn first_op_at(&self, tier: Tier) -> usize {
        self.prediction
            .labels
            .iter()
            .position(|&l| l >= tier)
            .unwrap_or(self.prediction.labels.len())
    }
}

/// What `tessera plan` prints: the chosen plan, the baselines, and the names to show them with.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanReport {
    /// The plan with the lowest predicted makespan over all strategies.
    pub best: Plan,
    /// The best plan of each strategy, in [`STRATEGIES`] order.
    pub alternatives: Vec<Plan>,
    /// Op names, topological order.
    pub op_names: Vec<String>,
    /// Node names and tiers, cluster order.
    pub nodes: Vec<(String, Tier)>,
    /// Roles the plan uses.
    pub topology: Topology,
    /// How much faster a plan over several nodes had to be predicted than
    /// the best one-node plan to be chosen (see [`PlanOptions`]).
    pub single_node_margin: f64,
    /// The whole model on the coordinator edge node alone, where the
    /// cluster has several edge nodes (its edge-only plan spreads tiles
    /// over them all): one of the one-node plans the margin compares with.
    pub one_edge: Option<Plan>,
    /// Where that plan was not costed because its compute alone, this
    /// long, could not win: the time, for the report to say why it is
    /// missing.
    pub one_edge_floor_s: Option<f64>,
}

impl PlanReport {
    /// The best plan of `strategy` (one of [`STRATEGIES`]), if it was planned.
    pub fn alternative(&self, strategy: &str) -> Option<&Plan> {
        self.alternatives.iter().find(|p| p.strategy == strategy)
    }
}

/// Plans `graph` on `cluster` with the given estimates (use
/// [`Estimates::from_cluster`] for a cold start, or `Profiler::estimates`),
/// the built-in receptive-field halo model and default options.
/// This is the one call `tessera plan` needs; render the result with
/// [`PlanReport::table`] and [`PlanReport::svg`].
pub fn plan(graph: &Graph, cluster: &Cluster, est: &Estimates) -> Result<PlanReport> {
    let dag = ModelDag::from_graph(graph)?;
    plan_dag(&dag, cluster, est, &ReceptiveField, PlanOptions::default())
}

/// [`plan`] on a planner DAG with a chosen halo model and options.
pub fn plan_dag(
    dag: &ModelDag,
    cluster: &Cluster,
    est: &Estimates,
    halo: &dyn HaloModel,
    opts: PlanOptions,
) -> Result<PlanReport> {
    if dag.ops.is_empty() {
        return Err(Error::Model("the model has no ops".into()));
    }
    let ctx = Context::new(dag, cluster, est, halo, opts)?;
    // A cluster without a cloud node has only the strategies that leave it out.
    // Without a device (its stand-in only holds the input), those that
    // would give it work.
    let stand_in = cluster.nodes[ctx.topo.device].name == crate::cluster::INPUT_STAND_IN;
    let strategies: Vec<(&'static str, [bool; 3])> = STRATEGIES
        .iter()
        .filter(|(_, allowed)| ctx.topo.cloud.is_some() || !allowed[2])
        .filter(|(_, allowed)| !stand_in || !allowed[0])
        .copied()
        .collect();
    let alternatives = solve_strategies(&ctx, &strategies)?;
    // Of plans that tie (a three-tier plan whose cloud runs nothing is the
    // device+edge plan), the one with the fewest tiers names it: a report
    // headed "three-tier" over an idle cloud misleads.
    fn fastest<'p>(all: &'p [Plan], extra: Option<&'p Plan>, single: bool) -> Option<&'p Plan> {
        let candidates = || {
            all.iter()
                .chain(extra)
                .filter(move |p| !single || p.on_one_node())
        };
        let least = candidates()
            .map(Plan::makespan_s)
            .fold(f64::INFINITY, f64::min);
        candidates()
            .filter(|p| p.makespan_s() <= least * (1.0 + 1e-9))
            .min_by_key(|p| tiers_allowed(p.strategy))
    }
    // With several edge nodes no strategy keeps the edge part on one node,
    // so without this plan the one-node plan the margin falls back to could
    // be the cloud's or the device's, slower than one edge node alone: a
    // cluster with more edges then chose a worse plan than with one. Its
    // ops' compute time on the coordinator bounds it from below; where that
    // alone loses to the plans at hand it is not worth planning.
    let coordinator_s: f64 = dag
        .ops
        .iter()
        .map(|o| est.compute_time(ctx.topo.coordinator, o.class, o.flops))
        .sum();
    let bar = match (
        fastest(&alternatives, None, false),
        fastest(&alternatives, None, true),
    ) {
        // It changes the choice only by beating both the one-node plan at
        // hand and the margin over the fastest plan.
        (Some(any), one) => one
            .map_or(f64::INFINITY, Plan::makespan_s)
            .min(any.makespan_s() * (1.0 + opts.single_node_margin)),
        (None, _) => f64::INFINITY,
    };
    let one_edge = if ctx.topo.edges.len() > 1 && coordinator_s < bar {
        let untiled = PlanOptions {
            min_tile_values: usize::MAX,
            ..opts
        };
        let c = Context::new(dag, cluster, est, halo, untiled)?;
        let all_edge = vec![Tier::Edge; dag.ops.len()];
        Some(Plan {
            strategy: ONE_EDGE,
            prediction: c.evaluate_in(&all_edge, [false, true, false]),
            additive_cost_s: coordinator_s,
        })
        .filter(Plan::on_one_node)
    } else {
        None
    };
    let best = match (
        fastest(&alternatives, one_edge.as_ref(), false),
        fastest(&alternatives, one_edge.as_ref(), true),
    ) {
        (Some(any), Some(one))
            if one.makespan_s() <= any.makespan_s() * (1.0 + opts.single_node_margin) =>
        {
            one.clone()
        }
        (Some(any), _) => any.clone(),
        (None, _) => return Err(Error::Model("no plan".into())),
    };
    Ok(PlanReport {
        best,
        alternatives,
        op_names: dag.ops.iter().map(|o| o.name.clone()).collect(),
        nodes: cluster
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.tier))
            .collect(),
        topology: ctx.topo.clone(),
        single_node_margin: opts.single_node_margin,
        one_edge_floor_s: (ctx.topo.edges.len() > 1 && coordinator_s >= bar)
            .then_some(coordinator_s),
        one_edge,
    })
}

/// The best plan of each strategy, in order. Strategies that let the same
/// helper tiers take tiles share their solved blocks; the two largest such
/// groups are solved on two threads, each with its own context and cache
/// (the results do not depend on which thread or cache solved a block).
fn solve_strategies(
    ctx: &Context<'_>,
    strategies: &[(&'static str, [bool; 3])],
) -> Result<Vec<Plan>> {
    let helpers = |allowed: [bool; 3]| ctx.opts.helper_tiers(allowed);
    // The helper set of the strategy with the device allowed goes here, the
    // rest (device left out) on the other thread.
    let first = strategies.first().map(|&(_, a)| helpers(a));
    let (mine, theirs): (Vec<usize>, Vec<usize>) =
        (0..strategies.len()).partition(|&i| Some(helpers(strategies[i].1)) == first);
    let solve = |c: &Context<'_>, which: &[usize]| -> Result<Vec<(usize, Plan)>> {
        let planner = Planner::new(c);
        which
            .iter()
            .map(|&i| Ok((i, planner.solve(strategies[i].0, strategies[i].1)?)))
            .collect()
    };
    let (a, b) = if theirs.is_empty() {
        (solve(ctx, &mine)?, Vec::new())
    } else {
        let (dag, cluster, est, halo, opts) = (ctx.dag, ctx.cluster, ctx.est, ctx.halo, ctx.opts);
        std::thread::scope(|s| {
            let other = s.spawn(|| -> Result<Vec<(usize, Plan)>> {
                let c = Context::new(dag, cluster, est, halo, opts)?;
                solve(&c, &theirs)
            });
            let a = solve(ctx, &mine);
            let b = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok::<_, Error>((a?, b?))
        })?
    };
    let mut all: Vec<(usize, Plan)> = a.into_iter().chain(b).collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, p)| p).collect())
}

/// The strategy name of [`PlanReport::one_edge`].
pub const ONE_EDGE: &str = "one edge node";

/// How many tiers `strategy` (one of [`STRATEGIES`], or [`ONE_EDGE`]) may use.
fn tiers_allowed(strategy: &str) -> usize {
    if strategy == ONE_EDGE {
        return 1;
    }
    STRATEGIES
        .iter()
        .find(|(name, _)| *name == strategy)
        .map_or(3, |(_, allowed)| allowed.iter().filter(|&&a| a).count())
}

/// The additive objective (see [`crate::partition`]) the planner builds for
/// a model and cluster, with the edge cost scaled by `edge_scale`: exposed so
/// tests and tools can check the min-cut against brute force on real inputs.
pub fn additive_model(
    dag: &ModelDag,
    cluster: &Cluster,
    est: &Estimates,
    halo: &dyn HaloModel,
    opts: PlanOptions,
    edge_scale: f64,
) -> Result<AdditiveModel> {
    let ctx = Context::new(dag, cluster, est, halo, opts)?;
    Ok(Planner::new(&ctx).additive(edge_scale, [true; 3]))
}

/// Solves strategies for one context; reused by the re-planner.
pub(crate) struct Planner<'c, 'a> {
    pub(crate) ctx: &'c Context<'a>,
    halo_factor: Vec<f64>,
}

impl<'c, 'a> Planner<'c, 'a> {
    pub(crate) fn new(ctx: &'c Context<'a>) -> Self {
        Planner {
            halo_factor: halo_factors(ctx),
            ctx,
        }
    }

    /// The additive model with the edge part scaled by `edge_scale`, for a
    /// strategy that uses the `allowed` tiers. A tileable op's edge time is
    /// its FLOPs (halo included) over the summed rate of every tile worker
    /// the strategy has: the edge nodes, and the device (and the cloud) when
    /// they help with tiles, as [`Context::evaluate_in`] lets them. Counting
    /// the edge nodes alone made the edge part look as slow as the device
    /// with one edge node, so the device-only plan won and tiles over the
    /// device and that edge node were never tried.
    pub(crate) fn additive(&self, edge_scale: f64, allowed: [bool; 3]) -> AdditiveModel {
        let ctx = self.ctx;
        let topo = &ctx.topo;
        let est = ctx.est;
        let workers: Vec<NodeIdx> = topo
            .workers(ctx.opts.helper_tiers(allowed))
            .iter()
            .map(|w| w.node)
            .collect();
        // Without a cloud node no op can be labelled cloud (infinite unary
        // cost), so the backbone's figures never count.
        let back = topo.back.unwrap_or(crate::cost::LinkCost {
            s_per_byte: 0.0,
            delay_s: 0.0,
        });
        let unary = ctx
            .dag
            .ops
            .iter()
            .enumerate()
            .map(|(i, o)| {
                // A model output ends at the coordinator (see `cut_bytes`):
                // from the device it goes up, from the cloud it comes back,
                // which depends on its producer's tier alone.
                let out = &ctx.dag.tensors[o.output];
                let (up_out, back_out) = if out.is_output {
                    (
                        out.bytes * topo.up.s_per_byte,
                        back.delay_s + out.bytes * back.s_per_byte,
                    )
                } else {
                    (0.0, 0.0)
                };
                let edge = if o.tileable() {
                    let agg: f64 = workers.iter().map(|&e| est.flops_per_s(e, o.class)).sum();
                    o.flops * (1.0 + self.halo_factor[i]) / agg * edge_scale
                } else {
                    est.compute_time(topo.coordinator, o.class, o.flops)
                };
                [
                    est.compute_time(topo.device, o.class, o.flops) + up_out,
                    edge,
                    topo.cloud.map_or(f64::INFINITY, |c| {
                        est.compute_time(c, o.class, o.flops) + back_out
                    }),
                ]
            })
            .collect();
        AdditiveModel {
            unary,
            s_per_byte: [topo.up.s_per_byte, back.s_per_byte],
            delay: [topo.up.delay_s, back.delay_s],
        }
    }

    /// Best plan (full model) of one strategy: min-cut on the additive model,
    /// then re-fit the edge scale to the full model's edge time and re-solve.
    pub(crate) fn solve(&self, name: &'static str, allowed: [bool; 3]) -> Result<Plan> {
        let mut scale = 1.0;
        let mut best: Option<Plan> = None;
        let mut previous: Option<Vec<Tier>> = None;
        let rounds = if allowed[1] {
            self.ctx.opts.calibration_rounds.max(1)
        } else {
            1
        };
        for _ in 0..rounds {
            let model = self.additive(scale, allowed);
            let (labels, additive_cost_s) = min_cut_partition(self.ctx.dag, &model, allowed)
                .ok_or_else(|| Error::Model(format!("strategy {name} allows no tier")))?;
            if previous.as_ref() == Some(&labels) {
                // The re-fit changed nothing: a fixed point.
                break;
            }
            previous = Some(labels.clone());
            let prediction = self.ctx.evaluate_in(&labels, allowed);
            // Serial (non-tileable) edge ops cost the same in both models;
            // the scale applies to the tileable part only.
            let (mut tiled, mut serial) = (0.0, 0.0);
            for (i, l) in labels.iter().enumerate() {
                if *l == Tier::Edge {
                    if self.ctx.dag.ops[i].tileable() {
                        tiled += model.unary[i][1];
                    } else {
                        serial += model.unary[i][1];
                    }
                }
            }
            let refit = (tiled > 0.0).then(|| ((prediction.edge_s - serial) / tiled).max(1e-3));
            let plan = Plan {
                strategy: name,
                prediction,
                additive_cost_s,
            };
            if best
                .as_ref()
                .is_none_or(|b| plan.makespan_s() < b.makespan_s())
            {
                best = Some(plan);
            }
            match refit {
                Some(r) if (r - 1.0).abs() > 0.01 => scale *= r,
                _ => break,
            }
        }
        // The whole model on the edge tier, its tiles over every worker, is
        // always tried as well: the additive model only approximates tiled
        // blocks (halos, grids, transfers), and this plan is the one a cut
        // misjudged that way most often loses.
        let all_edge = vec![Tier::Edge; self.ctx.dag.ops.len()];
        if allowed[1] && previous.as_ref() != Some(&all_edge) {
            let prediction = self.ctx.evaluate_in(&all_edge, allowed);
            let additive_cost_s = self.additive(scale, allowed).cost(self.ctx.dag, &all_edge);
            if best
                .as_ref()
                .is_none_or(|b| prediction.makespan_s < b.makespan_s())
            {
                best = Some(Plan {
                    strategy: name,
                    prediction,
                    additive_cost_s,
                });
            }
        }
        best.ok_or_else(|| Error::Model(format!("strategy {name}: no plan")))
    }
}

/// Per op, the extra FLOPs fraction halos cost when the whole model's
/// tileable runs are fused and split into equal column strips over all edge nodes.
fn halo_factors(ctx: &Context<'_>) -> Vec<f64> {
    let dag = ctx.dag;
    let n = ctx.topo.edges.len().max(1);
    let all_edge = vec![Tier::Edge; dag.ops.len()];
    let mut h = vec![0.0; dag.ops.len()];
    for block in edge_blocks(dag, &all_edge, ctx.opts.max_fuse_depth) {
        if !block.iter().all(|&o| dag.ops[o].tileable()) {
            continue;
        }
        let mut sum = vec![0.0; block.len()];
        for j in 0..n {
            let region = Region {
                top: 0.0,
                bottom: 1.0,
                left: j as f64 / n as f64,
                right: (j + 1) as f64 / n as f64,
            };
            let w = ctx.halo.tile_work(dag, &block, region);
            for (s, f) in sum.iter_mut().zip(&w.op_flops) {
                *s += f;
            }
        }
        for (k, &o) in block.iter().enumerate() {
            if dag.ops[o].flops > 0.0 {
                h[o] = (sum[k] / dag.ops[o].flops - 1.0).max(0.0);
            }
        }
    }
    h
}

/// Node names by index, for renderers.
pub(crate) fn node_name(report: &PlanReport, node: NodeIdx) -> &str {
    report.nodes.get(node).map_or("?", |n| n.0.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SplitMix, random_cluster, random_dag};

    /// The strategies solved on two threads, each group with its own cache,
    /// give exactly what each strategy solved alone on a fresh context gives.
    #[test]
    fn threaded_strategies_equal_each_solved_alone() {
        let mut rng = SplitMix(7);
        for round in 0..6 {
            let dag = random_dag(&mut rng, 12 + 4 * round).expect("dag");
            let cluster = random_cluster(&mut rng, 2 + round % 3);
            let est = Estimates::from_cluster(&cluster);
            let report = plan_dag(
                &dag,
                &cluster,
                &est,
                &ReceptiveField,
                PlanOptions::default(),
            )
            .expect("plan");
            assert_eq!(report.alternatives.len(), STRATEGIES.len());
            for (alt, &(name, allowed)) in report.alternatives.iter().zip(&STRATEGIES) {
                let ctx = Context::new(
                    &dag,
                    &cluster,
                    &est,
                    &ReceptiveField,
                    PlanOptions::default(),
                )
                .expect("context");
                let alone = Planner::new(&ctx).solve(name, allowed).expect("solve");
                assert_eq!(alt, &alone, "round {round}, {name}");
            }
        }
    }
}
