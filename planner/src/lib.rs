//! The planner: online profiler, cost model, three-tier partition of a DAG,
//! tile shares for parallel edge nodes, matching-game offload and partial
//! re-planning. Pure functions of measurements: no I/O, no clock, no GPU.
//!
//! Entry point: [`plan`]`(&Graph, &Cluster, &Estimates) -> Result<PlanReport>`;
//! print with [`PlanReport::table`], draw with [`PlanReport::svg`].

pub mod cluster;
pub mod cost;
pub mod dag;
pub mod error;
pub mod estimator;
pub mod halo;
pub mod matching;
pub mod maxflow;
pub mod partition;
pub mod plan;
pub mod profiler;
pub mod render;
pub mod replan;
pub mod shares;
pub mod synth;

pub use cluster::{Cluster, LinkSpec, NodeIdx, NodeSpec, Tier};
pub use cost::{PlanOptions, Prediction};
pub use dag::ModelDag;
pub use error::{Error, Result};
pub use halo::{HaloModel, ReceptiveField};
pub use plan::{Plan, PlanReport, plan, plan_dag};
pub use profiler::{Calibration, Estimates, Profiler, Span, SpanKind};

#[cfg(test)]
pub(crate) mod testutil {
    pub use crate::synth::chain;

    /// Deterministic pseudo-noise: the next value in [0, 1) of a 64-bit LCG.
    pub fn uniform(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }
}
