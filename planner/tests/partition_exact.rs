//! The min-cut partition equals exhaustive search on random DAGs (≤ 12 ops,
//! 1–4 edge nodes), and the chosen plan is never worse than any baseline.

use planner::cost::PlanOptions;
use planner::partition::{AdditiveModel, brute_force_partition, is_monotone, min_cut_partition};
use planner::plan::{additive_model, plan_dag};
use planner::synth::{SplitMix, random_cluster, random_dag};
use planner::{Estimates, ReceptiveField};
use proptest::prelude::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

fn mask(m: u8) -> [bool; 3] {
    [m & 1 != 0, m & 2 != 0, m & 4 != 0]
}

fn check(
    dag: &planner::ModelDag,
    model: &AdditiveModel,
    allowed: [bool; 3],
) -> Result<(), TestCaseError> {
    let (cut_labels, cut_cost) = min_cut_partition(dag, model, allowed)
        .ok_or_else(|| TestCaseError::fail("no labelling"))?;
    let (_, brute_cost) = brute_force_partition(dag, model, allowed)
        .ok_or_else(|| TestCaseError::fail("no brute"))?;
    prop_assert!(is_monotone(dag, &cut_labels));
    prop_assert!(cut_labels.iter().all(|t| allowed[t.rank()]));
    prop_assert!(close(cut_cost, model.cost(dag, &cut_labels)));
    prop_assert!(
        close(cut_cost, brute_cost),
        "min-cut {cut_cost} vs brute force {brute_cost}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// On the planner's own additive model of random clusters.
    #[test]
    fn min_cut_equals_brute_force_on_planner_model(seed in any::<u64>(), n in 1usize..=12, edges in 1usize..=4, m in 1u8..8) {
        let mut rng = SplitMix(seed);
        let dag = random_dag(&mut rng, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let cluster = random_cluster(&mut rng, edges);
        let est = Estimates::from_cluster(&cluster);
        let scale = 0.5 + 2.0 * rng.unit();
        let model = additive_model(&dag, &cluster, &est, &ReceptiveField, PlanOptions::default(), scale)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&dag, &model, mask(m))?;
        check(&dag, &model, [true; 3])?;
    }

    /// On arbitrary non-negative costs (zeros and ties included), which stress the flow code.
    #[test]
    fn min_cut_equals_brute_force_on_arbitrary_costs(seed in any::<u64>(), n in 1usize..=10, m in 1u8..8) {
        let mut rng = SplitMix(seed);
        let dag = random_dag(&mut rng, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pick = |rng: &mut SplitMix| if rng.unit() < 0.2 { 0.0 } else { (rng.below(5) as f64) * rng.unit() };
        let unary = (0..n).map(|_| [pick(&mut rng), pick(&mut rng), pick(&mut rng)]).collect();
        let model = AdditiveModel {
            unary,
            s_per_byte: [rng.unit() * 1e-4, rng.unit() * 1e-4],
            delay: [rng.unit(), rng.unit()],
        };
        check(&dag, &model, mask(m))?;
    }

    /// Full model sanity on random plans: stage times add up, every tiled
    /// block's tiles cover its output exactly once, shares sum to 1, and no
    /// block beats perfect parallelism (halos only add work).
    #[test]
    fn full_model_blocks_are_consistent(seed in any::<u64>(), n in 1usize..=30, edges in 1usize..=4) {
        let mut rng = SplitMix(seed);
        let dag = random_dag(&mut rng, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let cluster = random_cluster(&mut rng, edges);
        let est = Estimates::from_cluster(&cluster);
        let report = plan_dag(&dag, &cluster, &est, &ReceptiveField, PlanOptions::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(report.alternatives.len(), 7);
        for alt in &report.alternatives {
            let p = &alt.prediction;
            prop_assert!(is_monotone(&dag, &p.labels));
            let sum = p.device_s + p.up_s + p.edge_s + p.back_s + p.cloud_s;
            prop_assert!(close(sum, p.makespan_s));
            for b in &p.blocks {
                let Some(t) = &b.tiling else { continue };
                prop_assert!(close(t.row_shares.iter().sum::<f64>(), 1.0));
                prop_assert!(close(t.col_shares.iter().sum::<f64>(), 1.0));
                let out: f64 = b.node_times.iter().map(|x| x.out_bytes).sum();
                prop_assert!(close(out, b.out_bytes), "tiles produce {out} of {} bytes", b.out_bytes);
                // Every node that may take tiles (edge nodes and helpers).
                let agg: f64 = report.topology.workers([true, true]).iter().map(|w| w.node)
                    .map(|e| b.ops.iter().map(|&o| dag.ops[o].flops / est.flops_per_s(e, dag.ops[o].class)).sum::<f64>().recip())
                    .sum();
                let bound = 1.0 / agg;
                prop_assert!(b.time_s >= bound * (1.0 - 1e-9), "block {} s below the parallel bound {bound}", b.time_s);
            }
        }
    }
}

#[test]
fn a_model_output_pays_its_trip_to_the_coordinator_in_the_additive_model() {
    // The coordinator gathers the outputs: the op that produces one pays
    // the output's upload when on the device and its trip back over the
    // backbone (delay included) when on the cloud; nothing else changes.
    let dag = planner::synth::chain(&[32, 32, 32], 3);
    let out = dag
        .tensors
        .iter()
        .position(|t| t.is_output)
        .expect("an output");
    let last = dag.tensors[out].producer.expect("produced by an op");
    let bytes = dag.tensors[out].bytes;
    let mut plain = dag.clone();
    plain.tensors[out].is_output = false;
    let cluster = random_cluster(&mut SplitMix(7), 2);
    let est = Estimates::from_cluster(&cluster);
    let model = |d: &planner::ModelDag| {
        additive_model(
            d,
            &cluster,
            &est,
            &ReceptiveField,
            PlanOptions::default(),
            1.0,
        )
        .expect("model")
    };
    let (with, without) = (model(&dag), model(&plain));
    assert!(bytes > 0.0 && with.s_per_byte[0] > 0.0 && with.s_per_byte[1] > 0.0);
    for op in 0..dag.ops.len() {
        let (w, o) = (with.unary[op], without.unary[op]);
        if op == last {
            assert!(
                close(w[0] - o[0], bytes * with.s_per_byte[0]),
                "{w:?} {o:?}"
            );
            assert_eq!(w[1], o[1]);
            assert!(
                close(w[2] - o[2], with.delay[1] + bytes * with.s_per_byte[1]),
                "{w:?} {o:?}"
            );
        } else {
            assert_eq!(w, o, "op {op}");
        }
    }
}
