//! Many requests competing for edge nodes (DINA): a matching game.
//!
//! Requests (or partitions of requests) rank nodes by their predicted
//! finish time there if alone (`ready + processing`); nodes rank requests
//! by comparative advantage (`processing on this node / best processing
//! anywhere`, lower first: a node prefers work it is relatively good at).
//! Each node has a quota proportional to its speed. Deferred acceptance
//! (requests propose) gives a stable matching; as in DINA, the externality
//! (a node's queue slows every request on it) is then handled by
//! swap-stable refinement: moves and pairwise swaps are applied while one
//! lowers the total completion time. Each node runs its requests shortest
//! first, which is optimal for the total completion time on one node.
//!
//! Stated margin (checked by the tests on random instances): the result's
//! total completion time is never more than 5% above greedy list
//! scheduling's; on crafted instances where greedy's myopia hurts, it is
//! strictly better.

use tile_engine::ir::OpClass;

use crate::cluster::NodeIdx;
use crate::error::{Error, Result};
use crate::profiler::Estimates;

/// One piece of work to place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// FLOPs.
    pub flops: f64,
    /// Dominant op class.
    pub class: OpClass,
    /// Bytes sent to the node.
    pub in_bytes: f64,
    /// Bytes returned.
    pub out_bytes: f64,
}

/// Processing times of every request on every node, and when each node is free.
#[derive(Clone, Debug, PartialEq)]
pub struct OffloadProblem {
    /// `processing[request][node]`, seconds (`f64::INFINITY`: cannot run there).
    pub processing: Vec<Vec<f64>>,
    /// Seconds until each node is free.
    pub ready: Vec<f64>,
}

/// Where each request runs, and the resulting times.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// Node position (index into the problem's nodes) per request.
    pub node_of: Vec<usize>,
    /// Sum of the requests' completion times.
    pub total_completion_s: f64,
    /// Latest completion.
    pub makespan_s: f64,
}

impl OffloadProblem {
    /// Processing times from estimates: transfer from `source` to each node and back, plus compute.
    pub fn from_estimates(
        requests: &[Request],
        nodes: &[NodeIdx],
        source: NodeIdx,
        est: &Estimates,
        ready: Vec<f64>,
    ) -> Result<OffloadProblem> {
        let mut processing = Vec::with_capacity(requests.len());
        for r in requests {
            let mut row = Vec::with_capacity(nodes.len());
            for &n in nodes {
                let t_in = est.transfer_time(source, n, r.in_bytes);
                let t_out = est.transfer_time(n, source, r.out_bytes);
                row.push(match (t_in, t_out) {
                    (Some(a), Some(b)) => a + b + est.compute_time(n, r.class, r.flops),
                    _ => f64::INFINITY,
                });
            }
            processing.push(row);
        }
        let p = OffloadProblem { processing, ready };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<()> {
        let n = self.ready.len();
        if n == 0 {
            return Err(Error::Measurement("offload: no nodes".into()));
        }
        if self.ready.iter().any(|r| !(r.is_finite() && *r >= 0.0)) {
            return Err(Error::Measurement(
                "offload: ready times must be finite and ≥ 0".into(),
            ));
        }
        for (i, row) in self.processing.iter().enumerate() {
            if row.len() != n {
                return Err(Error::Measurement(format!(
                    "offload: request {i} has {} times for {n} nodes",
                    row.len()
                )));
            }
            if row.iter().any(|p| p.is_nan() || *p <= 0.0) {
                return Err(Error::Measurement(format!(
                    "offload: request {i} has a non-positive time"
                )));
            }
            if !row.iter().any(|p| p.is_finite()) {
                return Err(Error::Measurement(format!(
                    "offload: request {i} can run nowhere"
                )));
            }
        }
        Ok(())
    }

    /// Total and latest completion time when each node runs its requests shortest first.
    pub fn evaluate(&self, node_of: &[usize]) -> (f64, f64) {
        let (mut total, mut last) = (0.0, 0.0f64);
        for n in 0..self.ready.len() {
            let (s, l) = self.node_cost(node_of, n, None);
            total += s;
            last = last.max(l);
        }
        (total, last)
    }

    /// Sum and end of node `n`'s queue; `with` overrides one request's node.
    fn node_cost(&self, node_of: &[usize], n: usize, with: Option<(usize, usize)>) -> (f64, f64) {
        let mut times: Vec<f64> = (0..node_of.len())
            .filter(|&r| match with {
                Some((wr, wn)) if wr == r => wn == n,
                _ => node_of[r] == n,
            })
            .map(|r| self.processing[r][n])
            .collect();
        times.sort_by(f64::total_cmp);
        let (mut t, mut sum) = (self.ready[n], 0.0);
        for p in times {
            t += p;
            sum += t;
        }
        (sum, t)
    }

    fn assignment(&self, node_of: Vec<usize>) -> Assignment {
        let (total_completion_s, makespan_s) = self.evaluate(&node_of);
        Assignment {
            node_of,
            total_completion_s,
            makespan_s,
        }
    }
}

/// Greedy list scheduling, the baseline: requests in order, each to the node
/// where it would finish first given the queues so far.
pub fn greedy(p: &OffloadProblem) -> Result<Assignment> {
    p.validate()?;
    let mut free = p.ready.clone();
    let mut node_of = Vec::with_capacity(p.processing.len());
    for row in &p.processing {
        let n = (0..free.len())
            .min_by(|&a, &b| (free[a] + row[a]).total_cmp(&(free[b] + row[b])))
            .unwrap_or(0);
        free[n] += row[n];
        node_of.push(n);
    }
    Ok(p.assignment(node_of))
}

/// The matching game: deferred acceptance with speed-proportional quotas,
/// then swap-stable refinement (see the module doc).
pub fn stable_matching(p: &OffloadProblem) -> Result<Assignment> {
    p.validate()?;
    let (nr, nn) = (p.processing.len(), p.ready.len());
    if nr == 0 {
        return Ok(p.assignment(Vec::new()));
    }
    let best: Vec<f64> = p
        .processing
        .iter()
        .map(|r| r.iter().copied().fold(f64::INFINITY, f64::min))
        .collect();
    // Speed of a node: inverse of its mean finite processing time.
    let speed: Vec<f64> = (0..nn)
        .map(|n| {
            let finite: Vec<f64> = p
                .processing
                .iter()
                .map(|r| r[n])
                .filter(|x| x.is_finite())
                .collect();
            if finite.is_empty() {
                0.0
            } else {
                finite.len() as f64 / finite.iter().sum::<f64>()
            }
        })
        .collect();
    let total_speed: f64 = speed.iter().sum();
    let quota: Vec<usize> = speed
        .iter()
        .map(|s| ((nr as f64 * s / total_speed).ceil() as usize).max(1))
        .collect();
    let prefs: Vec<Vec<usize>> = p
        .processing
        .iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..nn).filter(|&n| row[n].is_finite()).collect();
            order.sort_by(|&a, &b| (p.ready[a] + row[a]).total_cmp(&(p.ready[b] + row[b])));
            order
        })
        .collect();
    let rank = |n: usize, r: usize| p.processing[r][n] / best[r];
    let mut next = vec![0usize; nr];
    let mut held: Vec<Vec<usize>> = vec![Vec::new(); nn];
    let mut free: Vec<usize> = (0..nr).rev().collect();
    let mut node_of = vec![usize::MAX; nr];
    while let Some(r) = free.pop() {
        let Some(&n) = prefs[r].get(next[r]) else {
            // Rejected everywhere (quotas full): it takes its first choice regardless.
            let n = prefs[r][0];
            held[n].push(r);
            node_of[r] = n;
            continue;
        };
        next[r] += 1;
        held[n].push(r);
        node_of[r] = n;
        if held[n].len() > quota[n] {
            let worst = (0..held[n].len())
                .max_by(|&a, &b| rank(n, held[n][a]).total_cmp(&rank(n, held[n][b])))
                .unwrap_or(0);
            let out = held[n].swap_remove(worst);
            node_of[out] = usize::MAX;
            free.push(out);
        }
    }
    refine(p, &mut node_of);
    Ok(p.assignment(node_of))
}

/// Applies improving moves and swaps until none is left (bounded passes).
fn refine(p: &OffloadProblem, node_of: &mut [usize]) {
    let nn = p.ready.len();
    let cost2 = |node_of: &[usize], a: usize, b: usize| {
        let ca = p.node_cost(node_of, a, None).0;
        if a == b {
            ca
        } else {
            ca + p.node_cost(node_of, b, None).0
        }
    };
    for _ in 0..100 {
        let mut improved = false;
        for r in 0..node_of.len() {
            let from = node_of[r];
            for to in 0..nn {
                if to == from || !p.processing[r][to].is_finite() {
                    continue;
                }
                let before = cost2(node_of, from, to);
                node_of[r] = to;
                if cost2(node_of, from, to) < before * (1.0 - 1e-12) {
                    improved = true;
                    break;
                }
                node_of[r] = from;
            }
        }
        for r in 0..node_of.len() {
            for q in r + 1..node_of.len() {
                let (a, b) = (node_of[r], node_of[q]);
                if a == b || !p.processing[r][b].is_finite() || !p.processing[q][a].is_finite() {
                    continue;
                }
                let before = cost2(node_of, a, b);
                node_of[r] = b;
                node_of[q] = a;
                if cost2(node_of, a, b) < before * (1.0 - 1e-12) {
                    improved = true;
                } else {
                    node_of[r] = a;
                    node_of[q] = b;
                }
            }
        }
        if !improved {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::SplitMix;

    #[test]
    fn beats_greedy_when_greedy_is_myopic() {
        // r0 is nearly as fast on node 1; r1 is 10× slower there. Greedy puts
        // both on node 0 (1+2 = 3 s); the matching splits them (1 + 1.1 s).
        let p = OffloadProblem {
            processing: vec![vec![1.0, 1.1], vec![1.0, 10.0]],
            ready: vec![0.0, 0.0],
        };
        let g = greedy(&p).expect("valid problem");
        let m = stable_matching(&p).expect("valid problem");
        assert_eq!(g.node_of, vec![0, 0]);
        assert_eq!(m.node_of, vec![1, 0]);
        assert!((m.total_completion_s - 2.1).abs() < 1e-9);
        assert!(m.total_completion_s < g.total_completion_s);
    }

    #[test]
    fn beats_greedy_with_three_nodes() {
        // Greedy takes the fast node for r0 and r1 and pushes r2 to node 1
        // (4.2 s in total); the matching finds 4.05 s.
        let p = OffloadProblem {
            processing: vec![
                vec![1.0, 1.05, 1.1],
                vec![1.0, 10.0, 10.0],
                vec![1.0, 1.2, 10.0],
            ],
            ready: vec![0.0; 3],
        };
        let g = greedy(&p).expect("valid problem");
        let m = stable_matching(&p).expect("valid problem");
        assert!((g.total_completion_s - 4.2).abs() < 1e-9, "{g:?}");
        assert!(
            m.total_completion_s < g.total_completion_s - 0.1,
            "{m:?} vs {g:?}"
        );
    }

    #[test]
    fn never_much_worse_than_greedy_on_random_instances() {
        let mut rng = SplitMix(7);
        let mut worst: f64 = 0.0;
        for _ in 0..300 {
            let nr = 2 + rng.below(12);
            let nn = 1 + rng.below(4);
            let speed: Vec<f64> = (0..nn).map(|_| 0.5 + 2.0 * rng.unit()).collect();
            let processing = (0..nr)
                .map(|_| {
                    let w = 0.1 + rng.unit();
                    (0..nn)
                        .map(|n| w / speed[n] * (0.7 + 0.6 * rng.unit()))
                        .collect()
                })
                .collect();
            let ready = (0..nn).map(|_| rng.unit()).collect();
            let p = OffloadProblem { processing, ready };
            let g = greedy(&p).expect("valid problem");
            let m = stable_matching(&p).expect("valid problem");
            worst = worst.max(m.total_completion_s / g.total_completion_s - 1.0);
        }
        assert!(
            worst <= 0.05,
            "matching lost to greedy by {:.1}%",
            worst * 100.0
        );
    }

    #[test]
    fn rejects_bad_times() {
        let p = OffloadProblem {
            processing: vec![vec![f64::NAN]],
            ready: vec![0.0],
        };
        assert!(stable_matching(&p).is_err());
        let p = OffloadProblem {
            processing: vec![vec![f64::INFINITY]],
            ready: vec![0.0],
        };
        assert!(greedy(&p).is_err());
    }
}
