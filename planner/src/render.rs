//! Renderers of a [`PlanReport`]: a text table and an SVG (model strip
//! coloured by tier, and a per-node Gantt chart of the predicted schedule).

use std::fmt::Write as _;

use svg::Document;
use svg::node::element::{Line, Rectangle, Text, Title};

use crate::cluster::Tier;
use crate::cost::Prediction;
use crate::plan::{Plan, PlanReport, node_name};

/// One bar of the predicted schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// Row of the Gantt chart: a node name or a link `a→b`.
    pub lane: String,
    /// Tier the work belongs to (colour).
    pub tier: Tier,
    /// True for transfers, false for compute.
    pub transfer: bool,
    /// What runs (op range, block number).
    pub what: String,
    /// Start, seconds from the request's arrival.
    pub start_s: f64,
    /// End, seconds.
    pub end_s: f64,
}

fn op_range(report: &PlanReport, labels: &[Tier], tier: Tier) -> String {
    let ops: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == tier).collect();
    match (ops.first(), ops.last()) {
        (Some(&a), Some(&b)) if a == b => report.op_names[a].clone(),
        (Some(&a), Some(&b)) => format!("{}..{}", report.op_names[a], report.op_names[b]),
        _ => "-".into(),
    }
}

impl PlanReport {
    /// The predicted schedule of the chosen plan, one slot per compute or transfer.
    pub fn schedule(&self) -> Vec<Slot> {
        let p = &self.best.prediction;
        let topo = &self.topology;
        let dev = node_name(self, topo.device).to_string();
        let coord = node_name(self, topo.coordinator).to_string();
        let cloud = topo
            .cloud
            .map_or("no cloud", |c| node_name(self, c))
            .to_string();
        let mut slots = Vec::new();
        let mut t = 0.0;
        let push = |slots: &mut Vec<Slot>,
                    lane: String,
                    tier,
                    transfer,
                    what: String,
                    start: f64,
                    len: f64| {
            if len > 0.0 {
                slots.push(Slot {
                    lane,
                    tier,
                    transfer,
                    what,
                    start_s: start,
                    end_s: start + len,
                });
            }
        };
        push(
            &mut slots,
            dev.clone(),
            Tier::Device,
            false,
            op_range(self, &p.labels, Tier::Device),
            t,
            p.device_s,
        );
        t += p.device_s;
        push(
            &mut slots,
            format!("{dev}→{coord}"),
            Tier::Device,
            true,
            format!("{:.0} B", p.up_bytes),
            t,
            p.up_s,
        );
        t += p.up_s;
        for (b, block) in p.blocks.iter().enumerate() {
            for nt in &block.node_times {
                let lane = node_name(self, nt.node).to_string();
                push(
                    &mut slots,
                    lane.clone(),
                    Tier::Edge,
                    true,
                    format!("block {b} in"),
                    t,
                    nt.in_s,
                );
                push(
                    &mut slots,
                    lane.clone(),
                    Tier::Edge,
                    false,
                    format!("block {b}"),
                    t + nt.in_s - nt.head_start_s,
                    nt.compute_s,
                );
                push(
                    &mut slots,
                    lane,
                    Tier::Edge,
                    true,
                    format!("block {b} out"),
                    t + nt.total() - nt.out_s,
                    nt.out_s,
                );
            }
            t += block.time_s;
        }
        // Up to the cloud, its compute, and its outputs back down, in that
        // order (one bar for both ways drew the outputs before the compute).
        let up_s = p.back_s - p.down_s;
        push(
            &mut slots,
            format!("{coord}→{cloud}"),
            Tier::Edge,
            true,
            format!("{:.0} B", p.back_bytes - p.down_bytes),
            t,
            up_s,
        );
        t += up_s;
        push(
            &mut slots,
            cloud.clone(),
            Tier::Cloud,
            false,
            op_range(self, &p.labels, Tier::Cloud),
            t,
            p.cloud_s,
        );
        t += p.cloud_s;
        push(
            &mut slots,
            format!("{cloud}→{coord}"),
            Tier::Cloud,
            true,
            format!("{:.0} B", p.down_bytes),
            t,
            p.down_s,
        );
        slots
    }

    /// Fraction of the tiled blocks' FLOPs (untiled, by area) whose tiles
    /// run on nodes of `tier`: a device that helps with an edge block's tiles
    /// runs none of the model's ops as its own, so its op count reads 0.
    fn tile_share(&self, tier: Tier) -> f64 {
        let (mut mine, mut all) = (0.0, 0.0);
        for block in &self.best.prediction.blocks {
            let Some(t) = &block.tiling else { continue };
            let mut nodes = t.nodes.clone();
            nodes.sort_unstable();
            nodes.dedup();
            for n in nodes {
                if self.nodes.get(n).map(|x| x.1) == Some(tier) {
                    mine += block.flops * t.node_share(n);
                }
            }
            all += block.flops;
        }
        if all > 0.0 { mine / all } else { 0.0 }
    }

    /// The plan as a text table: tiers, cuts, blocks with grids and shares, and the baselines.
    pub fn table(&self) -> String {
        let p = &self.best.prediction;
        let mut s = String::new();
        let ms = |x: f64| x * 1e3 + 0.0; // + 0.0 turns an empty sum's -0.0 into 0.0
        let _ = writeln!(
            s,
            "plan: {}  makespan {:.3} ms  period {:.3} ms  (coordinator {}, cloud {})",
            self.best.strategy,
            ms(p.makespan_s),
            ms(p.period_s),
            node_name(self, self.topology.coordinator),
            self.topology.cloud.map_or("none", |c| node_name(self, c)),
        );
        let tiers = [
            (Tier::Device, p.device_s),
            (Tier::Edge, p.edge_s),
            (Tier::Cloud, p.cloud_s),
        ];
        // Exporters name ops by their module path: columns as wide as the longest.
        let ranges: Vec<String> = tiers
            .iter()
            .map(|&(tier, _)| op_range(self, &p.labels, tier))
            .collect();
        let rw = ranges
            .iter()
            .map(|r| r.chars().count())
            .fold(32, usize::max);
        let _ = writeln!(
            s,
            "{:<8} {:>5}  {:<rw$} {:>11} {:>7}",
            "tier", "ops", "op range", "compute ms", "tiles"
        );
        for ((tier, secs), range) in tiers.into_iter().zip(ranges) {
            let n = p.labels.iter().filter(|&&l| l == tier).count();
            let share = self.tile_share(tier);
            let _ = writeln!(
                s,
                "{:<8} {:>5}  {:<rw$} {:>11.3} {:>7}",
                tier.name(),
                n,
                range,
                ms(secs),
                if share > 0.0 {
                    format!("{:.1} %", 100.0 * share)
                } else {
                    "-".into()
                }
            );
        }
        let _ = writeln!(s, "{:<14} {:>12} {:>11}", "cut", "bytes", "transfer ms");
        let _ = writeln!(
            s,
            "{:<14} {:>12.0} {:>11.3}",
            "device|edge",
            p.up_bytes,
            ms(p.up_s)
        );
        let _ = writeln!(
            s,
            "{:<14} {:>12.0} {:>11.3}",
            "edge|cloud",
            p.back_bytes,
            ms(p.back_s)
        );
        if !p.blocks.is_empty() {
            let names: Vec<String> = p
                .blocks
                .iter()
                .map(|block| match (block.ops.first(), block.ops.last()) {
                    (Some(&a), Some(&z)) if a == z => self.op_names[a].clone(),
                    (Some(&a), Some(&z)) => format!("{}..{}", self.op_names[a], self.op_names[z]),
                    _ => "-".into(),
                })
                .collect();
            let bw = names.iter().map(|n| n.chars().count()).fold(28, usize::max);
            let _ = writeln!(
                s,
                "{:<5} {:<bw$} {:<6} {:>10} {:>10} {:>9}  shares",
                "block", "ops", "grid", "in B", "out B", "time ms"
            );
            for (b, (block, ops)) in p.blocks.iter().zip(names).enumerate() {
                let (grid, shares) = match &block.tiling {
                    Some(t) => {
                        let mut names: Vec<usize> = t.nodes.clone();
                        names.dedup();
                        let sh: Vec<String> = names
                            .iter()
                            .map(|&n| format!("{} {:.3}", node_name(self, n), t.node_share(n)))
                            .collect();
                        (format!("{}x{}", t.rows, t.cols), sh.join(", "))
                    }
                    None => (
                        "whole".into(),
                        format!("{} 1.000", node_name(self, self.topology.coordinator)),
                    ),
                };
                let _ = writeln!(
                    s,
                    "{:<5} {:<bw$} {:<6} {:>10.0} {:>10.0} {:>9.3}  {}",
                    b,
                    ops,
                    grid,
                    block.in_bytes,
                    block.out_bytes,
                    ms(block.time_s),
                    shares
                );
            }
        }
        let _ = writeln!(
            s,
            "{:<13} {:>12} {:>10} {:>6} {:>5} {:>6}",
            "strategy", "makespan ms", "period ms", "device", "edge", "cloud"
        );
        for alt in self.alternatives.iter().chain(&self.one_edge) {
            let count = |t: Tier| alt.prediction.labels.iter().filter(|&&l| l == t).count();
            let _ = writeln!(
                s,
                "{:<13} {:>12.3} {:>10.3} {:>6} {:>5} {:>6}",
                alt.strategy,
                ms(alt.makespan_s()),
                ms(alt.prediction.period_s),
                count(Tier::Device),
                count(Tier::Edge),
                count(Tier::Cloud)
            );
        }
        if let Some(floor) = self.one_edge_floor_s {
            let _ = writeln!(
                s,
                "{:<13} not costed: its compute alone ({:.3} ms) cannot beat the plans above",
                super::plan::ONE_EDGE,
                ms(floor)
            );
        }
        let fastest = self
            .alternatives
            .iter()
            .chain(&self.one_edge)
            .min_by(|a, b| a.makespan_s().total_cmp(&b.makespan_s()));
        if let Some(f) = fastest.filter(|f| f.makespan_s() < self.best.makespan_s() * (1.0 - 1e-9))
        {
            let _ = writeln!(
                s,
                "(chosen over {}, predicted {:.1} % faster: a plan over several nodes must be predicted more than {:.0} % faster than the best one-node plan, since it has more jobs and transfers to be mispredicted by)",
                f.strategy,
                100.0 * (1.0 - f.makespan_s() / self.best.makespan_s()),
                100.0 * self.single_node_margin
            );
        }
        s
    }

    /// The plan as an SVG document: a strip of ops coloured by tier, and a
    /// Gantt chart (one row per node and link) of the predicted schedule.
    pub fn svg(&self) -> String {
        const W: f64 = 960.0;
        const LEFT: f64 = 150.0;
        const ROW: f64 = 24.0;
        let p: &Prediction = &self.best.prediction;
        let colour = |t: Tier| match t {
            Tier::Device => "#4e79a7",
            Tier::Edge => "#59a14f",
            Tier::Cloud => "#e15759",
        };
        let mut doc = Document::new();
        let mut y = 10.0;
        doc = doc.add(
            Text::new(format!(
                "{} plan, predicted makespan {:.3} ms",
                self.best.strategy,
                p.makespan_s * 1e3
            ))
            .set("x", 10)
            .set("y", y + 14.0)
            .set("font-family", "sans-serif")
            .set("font-size", 14),
        );
        y += 30.0;
        // Model strip: one cell per op, topological order.
        let n = p.labels.len().max(1);
        let cell = (W - LEFT - 10.0) / n as f64;
        doc = doc.add(label("model", 10.0, y + 14.0));
        for (i, &t) in p.labels.iter().enumerate() {
            let r = Rectangle::new()
                .set("x", LEFT + i as f64 * cell)
                .set("y", y)
                .set("width", cell.max(0.5))
                .set("height", ROW - 4.0)
                .set("fill", colour(t))
                .add(Title::new(format!("{} ({})", self.op_names[i], t.name())));
            doc = doc.add(r);
        }
        y += ROW + 16.0;
        // Gantt chart.
        let slots = self.schedule();
        let mut lanes: Vec<String> = Vec::new();
        for sl in &slots {
            if !lanes.contains(&sl.lane) {
                lanes.push(sl.lane.clone());
            }
        }
        let horizon = slots.iter().map(|s| s.end_s).fold(0.0, f64::max).max(1e-12);
        let xs = (W - LEFT - 10.0) / horizon;
        for (k, lane) in lanes.iter().enumerate() {
            doc = doc.add(label(lane, 10.0, y + k as f64 * ROW + 14.0));
        }
        for sl in &slots {
            let k = lanes.iter().position(|l| l == &sl.lane).unwrap_or(0) as f64;
            let r = Rectangle::new()
                .set("x", LEFT + sl.start_s * xs)
                .set("y", y + k * ROW)
                .set("width", ((sl.end_s - sl.start_s) * xs).max(0.5))
                .set("height", ROW - 4.0)
                .set("fill", colour(sl.tier))
                .set("fill-opacity", if sl.transfer { 0.45 } else { 1.0 })
                .add(Title::new(format!(
                    "{}: {:.3}–{:.3} ms",
                    sl.what,
                    sl.start_s * 1e3,
                    sl.end_s * 1e3
                )));
            doc = doc.add(r);
        }
        let bottom = y + lanes.len() as f64 * ROW;
        doc = doc
            .add(
                Line::new()
                    .set("x1", LEFT)
                    .set("x2", W - 10.0)
                    .set("y1", bottom)
                    .set("y2", bottom)
                    .set("stroke", "black"),
            )
            .add(label("0 ms", LEFT, bottom + 16.0))
            .add(label(
                &format!("{:.2} ms", horizon * 1e3),
                W - 80.0,
                bottom + 16.0,
            ))
            // A device running edge tiles has green bars on its own row, and
            // a tile's transfers sit on its node's row while a stage's sit
            // on a link's: without a key the chart read as inconsistent.
            .add(label(
                "colour: the tier whose ops run (device blue, edge green, cloud red); \
                 solid: compute; pale: a transfer",
                10.0,
                bottom + 36.0,
            ))
            .add(label(
                "a tile's input and output are drawn on its node's row, a stage's \
                 hand-over on its link's row",
                10.0,
                bottom + 52.0,
            ));
        let height = bottom + 64.0;
        doc = doc
            .set("viewBox", (0, 0, W, height))
            .set("width", W)
            .set("height", height);
        doc.to_string()
    }
}

fn label(text: &str, x: f64, y: f64) -> Text {
    Text::new(text)
        .set("x", x)
        .set("y", y)
        .set("font-family", "sans-serif")
        .set("font-size", 12)
}

impl std::fmt::Display for PlanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.table())
    }
}

/// Short summary line of a plan (for logs).
pub fn summary(plan: &Plan) -> String {
    let count = |t: Tier| plan.prediction.labels.iter().filter(|&&l| l == t).count();
    format!(
        "{}: {}/{}/{} ops, {:.3} ms",
        plan.strategy,
        count(Tier::Device),
        count(Tier::Edge),
        count(Tier::Cloud),
        plan.makespan_s() * 1e3
    )
}
