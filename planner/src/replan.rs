//! Partial re-planning with hysteresis: as estimates change, first
//! re-weight the tile shares (cheap: no model reload), and move one cut only
//! when that pays clearly and persistently.
//!
//! Each call to [`Replanner::observe`] is one observation (the caller makes
//! it after folding one request's spans into the profiler). The running plan
//! is re-timed under the new estimates with its grids and shares kept; a
//! re-weighted plan (same cuts, shares re-solved) is applied once its gain
//! exceeds `share_gain` for `share_streak` consecutive observations (at
//! once when it exceeds `share_now`: a several-fold slowdown); a plan
//! with one cut moved (device|edge or edge|cloud, the other kept) is applied
//! once its gain over the re-weighted plan exceeds `cut_gain` for
//! `cut_streak` consecutive observations. A streak resets as soon as one
//! observation falls below its threshold, so noise that only sometimes
//! favours a change never triggers it.

use crate::cluster::{Cluster, Tier};
use crate::cost::{Context, PlanOptions, Prediction};
use crate::dag::ModelDag;
use crate::error::Result;
use crate::halo::HaloModel;
use crate::partition::is_monotone;
use crate::plan::Planner;
use crate::profiler::Estimates;

/// Thresholds and streak lengths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplanConfig {
    /// Minimum relative gain of re-weighting shares.
    pub share_gain: f64,
    /// Consecutive observations above `share_gain` before re-weighting.
    pub share_streak: usize,
    /// A re-weighting predicted to gain more than this is applied at the
    /// first observation: a node that became several times slower stalls
    /// every request until its shares move, and noise does not predict
    /// gains this large.
    pub share_now: f64,
    /// Minimum relative gain of moving a cut, over the re-weighted plan.
    pub cut_gain: f64,
    /// Consecutive observations above `cut_gain` before moving a cut.
    pub cut_streak: usize,
}

impl Default for ReplanConfig {
    fn default() -> Self {
        ReplanConfig {
            share_gain: 0.05,
            share_streak: 2,
            share_now: 0.10,
            cut_gain: 0.10,
            cut_streak: 3,
        }
    }
}

/// Which cut moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Between device and edge.
    DeviceEdge,
    /// Between edge and cloud.
    EdgeCloud,
}

/// What an observation led to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Nothing changed.
    Keep,
    /// Tile shares (and grids) re-solved, cuts kept.
    Reweighted {
        /// Predicted relative gain.
        gain: f64,
    },
    /// One cut moved (shares re-solved too).
    MovedCut {
        /// The cut.
        cut: Cut,
        /// Predicted relative gain over the running plan.
        gain: f64,
    },
}

/// The running plan and the hysteresis state.
#[derive(Clone, Debug)]
pub struct Replanner {
    cfg: ReplanConfig,
    opts: PlanOptions,
    current: Prediction,
    share_count: usize,
    cut_count: usize,
}

impl Replanner {
    /// Starts from a running plan's prediction.
    pub fn new(current: Prediction, cfg: ReplanConfig, opts: PlanOptions) -> Replanner {
        Replanner {
            cfg,
            opts,
            current,
            share_count: 0,
            cut_count: 0,
        }
    }

    /// The running plan.
    pub fn current(&self) -> &Prediction {
        &self.current
    }

    /// One observation: new estimates after a request. Returns what changed.
    pub fn observe(
        &mut self,
        dag: &ModelDag,
        cluster: &Cluster,
        est: &Estimates,
        halo: &dyn HaloModel,
    ) -> Result<Decision> {
        let ctx = Context::new(dag, cluster, est, halo, self.opts)?;
        let running = ctx.retime(&self.current);
        let reweighted = ctx.evaluate(&running.labels);
        let base = running.makespan_s.max(1e-15);
        let share_gain = (running.makespan_s - reweighted.makespan_s) / base;

        let planner = Planner::new(&ctx);
        let target = planner
            .solve("three-tier", [true, true, true])?
            .prediction
            .labels;
        let mut best_move: Option<(Cut, Prediction)> = None;
        for (cut, labels) in one_cut_moves(&running.labels, &target) {
            if labels == running.labels || !is_monotone(dag, &labels) {
                continue;
            }
            let p = ctx.evaluate(&labels);
            if best_move
                .as_ref()
                .is_none_or(|b| p.makespan_s < b.1.makespan_s)
            {
                best_move = Some((cut, p));
            }
        }
        let cut_gain = best_move
            .as_ref()
            .map_or(0.0, |(_, p)| (reweighted.makespan_s - p.makespan_s) / base);

        self.cut_count = if cut_gain > self.cfg.cut_gain {
            self.cut_count + 1
        } else {
            0
        };
        self.share_count = if share_gain > self.cfg.share_gain {
            self.share_count + 1
        } else {
            0
        };
        if self.cut_count >= self.cfg.cut_streak
            && let Some((cut, p)) = best_move
        {
            let gain = (running.makespan_s - p.makespan_s) / base;
            self.current = p;
            self.cut_count = 0;
            self.share_count = 0;
            return Ok(Decision::MovedCut { cut, gain });
        }
        if self.share_count >= self.cfg.share_streak || share_gain > self.cfg.share_now {
            self.current = reweighted;
            self.share_count = 0;
            return Ok(Decision::Reweighted { gain: share_gain });
        }
        self.current = running;
        Ok(Decision::Keep)
    }
}

/// The two labellings that take one cut from `target` and keep the other from `current`.
fn one_cut_moves(current: &[Tier], target: &[Tier]) -> [(Cut, Vec<Tier>); 2] {
    let at_least = |l: Tier, k: Tier| l >= k;
    let build = |ge_edge: &dyn Fn(usize) -> bool, ge_cloud: &dyn Fn(usize) -> bool| -> Vec<Tier> {
        (0..current.len())
            .map(|i| match (ge_edge(i), ge_cloud(i)) {
                (_, true) => Tier::Cloud,
                (true, false) => Tier::Edge,
                (false, false) => Tier::Device,
            })
            .collect()
    };
    // "≥ edge" sets are upward closed; unions and intersections of upward
    // closed sets are too, so both results stay monotone.
    let move_first = build(
        &|i| at_least(target[i], Tier::Edge) || at_least(current[i], Tier::Cloud),
        &|i| at_least(current[i], Tier::Cloud),
    );
    let move_second = build(&|i| at_least(current[i], Tier::Edge), &|i| {
        at_least(target[i], Tier::Cloud) && at_least(current[i], Tier::Edge)
    });
    [(Cut::DeviceEdge, move_first), (Cut::EdgeCloud, move_second)]
}
