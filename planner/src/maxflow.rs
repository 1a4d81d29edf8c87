//! Dinic's max-flow on `f64` capacities, returning the source side of a
//! minimum cut. Hand-written (≈80 lines) because the partition needs
//! infinite capacities and the cut's vertex set, which the general graph
//! crates expose awkwardly; it is checked against brute force through the
//! partition's property tests.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Edge {
    to: usize,
    cap: f64,
}

/// A flow network under construction.
#[derive(Clone, Debug, Default)]
pub struct FlowGraph {
    edges: Vec<Edge>,
    adj: Vec<Vec<usize>>,
}

impl FlowGraph {
    /// A network of `n` vertices and no edges.
    pub fn new(n: usize) -> FlowGraph {
        FlowGraph {
            edges: Vec::new(),
            adj: vec![Vec::new(); n],
        }
    }

    /// Adds a vertex and returns its id.
    pub fn add_vertex(&mut self) -> usize {
        self.adj.push(Vec::new());
        self.adj.len() - 1
    }

    /// Adds a directed edge; `cap` may be `f64::INFINITY`. Zero capacities are skipped.
    pub fn add_edge(&mut self, from: usize, to: usize, cap: f64) {
        if cap <= 0.0 {
            return;
        }
        self.adj[from].push(self.edges.len());
        self.edges.push(Edge { to, cap });
        self.adj[to].push(self.edges.len());
        self.edges.push(Edge { to: from, cap: 0.0 });
    }

    fn levels(&self, s: usize, eps: f64) -> Vec<u32> {
        let mut level = vec![u32::MAX; self.adj.len()];
        level[s] = 0;
        let mut q = VecDeque::from([s]);
        while let Some(u) = q.pop_front() {
            for &e in &self.adj[u] {
                let Edge { to, cap } = self.edges[e];
                if cap > eps && level[to] == u32::MAX {
                    level[to] = level[u] + 1;
                    q.push_back(to);
                }
            }
        }
        level
    }

    fn push(
        &mut self,
        u: usize,
        t: usize,
        f: f64,
        level: &[u32],
        it: &mut [usize],
        eps: f64,
    ) -> f64 {
        if u == t {
            return f;
        }
        while it[u] < self.adj[u].len() {
            let e = self.adj[u][it[u]];
            let Edge { to, cap } = self.edges[e];
            if cap > eps && level[to] == level[u] + 1 {
                let d = self.push(to, t, f.min(cap), level, it, eps);
                if d > 0.0 {
                    self.edges[e].cap -= d;
                    self.edges[e ^ 1].cap += d;
                    return d;
                }
            }
            it[u] += 1;
        }
        0.0
    }

    /// Runs max-flow from `s` to `t` and returns, per vertex, whether it is on
    /// the source side of a minimum cut (reachable from `s` in the residual).
    pub fn min_cut(mut self, s: usize, t: usize) -> Vec<bool> {
        let scale = self
            .edges
            .iter()
            .filter(|e| e.cap.is_finite())
            .map(|e| e.cap)
            .fold(0.0, f64::max);
        let eps = scale * 1e-12;
        loop {
            let level = self.levels(s, eps);
            if level[t] == u32::MAX {
                return level.iter().map(|&l| l != u32::MAX).collect();
            }
            let mut it = vec![0; self.adj.len()];
            loop {
                let f = self.push(s, t, f64::INFINITY, &level, &mut it, eps);
                if !f.is_finite() {
                    // An all-infinite path: no finite cut exists. Callers always
                    // have one; stop rather than loop.
                    return level.iter().map(|&l| l != u32::MAX).collect();
                }
                if f <= eps {
                    break;
                }
            }
        }
    }
}
