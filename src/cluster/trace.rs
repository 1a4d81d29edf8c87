//! What a run looked like, and what it would have looked like on dedicated
//! hardware.
//!
//! All daemons of the demo share this machine's cores, so wall-clock time
//! cannot show parallel speed-up. The replay takes the measured compute
//! duration of every job (the demo serialises compute with a lock so those
//! durations are not inflated by contention) and re-schedules the run with
//! each node on its own processor and each transfer on its emulated link:
//! a transfer takes `delay + bytes / bandwidth` of that link (the figures
//! the link emulator enforces), one transfer at a time per direction of a
//! link, one job at a time per node, and every stage (device, each edge
//! block, cloud) starts when the previous one has been gathered at the
//! coordinator, as in the real run. The input's hand-over to the device is
//! not replayed: on real hardware the image is already there.

use std::collections::HashMap;

use planner::Cluster;
use serde_json::json;
use svg::Document;
use svg::node::element::{Rectangle, Text, Title};

use super::coordinator::JobRecord;

/// One bar of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// Node name, or `a→b` for a link.
    pub lane: String,
    /// What ran or moved.
    pub what: String,
    /// True for transfers.
    pub transfer: bool,
    /// Start, seconds from the request's start.
    pub start_s: f64,
    /// End, seconds.
    pub end_s: f64,
}

/// A replayed request.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// Makespan on dedicated hardware, seconds.
    pub makespan_s: f64,
    /// The schedule.
    pub slots: Vec<Slot>,
    /// Bytes that crossed each directed link (`a→b`), the submit excluded.
    pub link_bytes: HashMap<String, u64>,
    /// Each stage (`device`, `block N`, `cloud`) with its replayed duration, seconds.
    pub stages: Vec<(String, f64)>,
}

/// Seconds to move `bytes` from node `a` to node `b` on the cluster's link
/// (either direction of the pair; 0 when `a == b`).
pub fn link_time(cluster: &Cluster, a: usize, b: usize, bytes: u64) -> f64 {
    if a == b || bytes == 0 {
        return 0.0;
    }
    let (na, nb) = (&cluster.nodes[a].name, &cluster.nodes[b].name);
    let Some(l) = cluster
        .links
        .iter()
        .find(|l| (&l.from == na && &l.to == nb) || (&l.from == nb && &l.to == na))
    else {
        return 0.0;
    };
    let ser = if l.bandwidth_mbps > 0.0 {
        bytes as f64 * 8.0 / (l.bandwidth_mbps * 1e6)
    } else {
        0.0
    };
    l.delay_ms / 1e3 + ser
}

/// Replays one request's successful jobs with the coordinator at node `coordinator`.
pub fn replay(cluster: &Cluster, coordinator: usize, records: &[JobRecord]) -> Replay {
    let mut by_stage: Vec<&JobRecord> = records.iter().filter(|r| r.ok).collect();
    by_stage.sort_by_key(|r| (r.stage_idx, r.sent_us));
    let name = |i: usize| cluster.nodes[i].name.clone();
    let mut node_free: HashMap<usize, f64> = HashMap::new();
    let mut link_free: HashMap<(usize, usize), f64> = HashMap::new();
    let mut link_bytes: HashMap<String, u64> = HashMap::new();
    let mut slots = Vec::new();
    let mut stage_start = 0.0;
    let mut stages = Vec::new();
    let mut i = 0;
    while i < by_stage.len() {
        let stage = by_stage[i].stage_idx;
        let stage_name = by_stage[i].stage.clone();
        let mut stage_end = stage_start;
        while i < by_stage.len() && by_stage[i].stage_idx == stage {
            let r = by_stage[i];
            i += 1;
            let c = coordinator;
            let mut transfer =
                |from: usize, to: usize, bytes: u64, ready: f64, slots: &mut Vec<Slot>| {
                    if from == to || bytes == 0 {
                        return ready;
                    }
                    let free = link_free.entry((from, to)).or_insert(0.0);
                    let s = ready.max(*free);
                    let e = s + link_time(cluster, from, to, bytes);
                    *free = e;
                    let lane = format!("{}→{}", name(from), name(to));
                    *link_bytes.entry(lane.clone()).or_insert(0) += bytes;
                    slots.push(Slot {
                        lane,
                        what: format!("{} {}", r.stage, fmt_bytes(bytes)),
                        transfer: true,
                        start_s: s,
                        end_s: e,
                    });
                    e
                };
            // An early job ran on inputs its node held from the request's
            // start (the device's own image), beside the upload.
            let ready = if r.early {
                0.0
            } else {
                transfer(c, r.node, r.in_bytes, stage_start, &mut slots)
            };
            let dur = r.end_us.saturating_sub(r.start_us) as f64 / 1e6;
            let free = node_free.entry(r.node).or_insert(0.0);
            let s = ready.max(*free);
            let e = s + dur;
            *free = e;
            if dur > 0.0 {
                slots.push(Slot {
                    lane: name(r.node),
                    what: match r.tile {
                        Some(t) => format!("{} tile {t}", r.stage),
                        None => r.stage.clone(),
                    },
                    transfer: false,
                    start_s: s,
                    end_s: e,
                });
            }
            let back = transfer(r.node, c, r.out_bytes, e, &mut slots);
            stage_end = f64::max(stage_end, back);
        }
        stages.push((stage_name, stage_end - stage_start));
        stage_start = stage_end;
    }
    Replay {
        makespan_s: stage_start,
        slots,
        link_bytes,
        stages,
    }
}

/// Human-readable bytes.
pub fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// The wall-clock run as Chrome trace events (open in Perfetto or
/// `chrome://tracing`): node compute and coordinator round trips.
pub fn chrome_trace(records: &[JobRecord]) -> serde_json::Value {
    let t0 = records
        .iter()
        .map(|r| r.sent_us)
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    // Process names for the viewer (Perfetto showed "pid 1", "pid 2").
    let mut events = vec![
        json!({"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
               "args": {"name": "compute on each node (node clocks)"}}),
        json!({"name": "process_name", "ph": "M", "pid": 2, "tid": 0,
               "args": {"name": "jobs seen from the coordinator (send to answer)"}}),
    ];
    for r in records {
        let what = match r.tile {
            Some(t) => format!("req {} {} tile {t}", r.request, r.stage),
            None => format!("req {} {}", r.request, r.stage),
        };
        if r.end_us > r.start_us {
            events.push(json!({
                "name": what, "cat": "compute", "ph": "X", "pid": 1, "tid": r.node_name,
                "ts": r.start_us.saturating_sub(t0), "dur": r.end_us - r.start_us,
                "args": {"flops": r.flops, "class": r.class, "ok": r.ok, "stolen": r.stolen, "cold": r.cold},
            }));
        }
        if r.recv_us > r.sent_us {
            events.push(json!({
                "name": what, "cat": "job", "ph": "X", "pid": 2,
                "tid": format!("coordinator ⇄ {}", r.node_name),
                "ts": r.sent_us.saturating_sub(t0), "dur": r.recv_us - r.sent_us,
                "args": {"in_bytes": r.in_bytes, "out_bytes": r.out_bytes, "ok": r.ok},
            }));
        }
    }
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

/// Spacing of an axis's ticks: 1, 2 or 5 times a power of ten, about a
/// fifth of `span`.
fn tick_step(span: f64) -> f64 {
    let raw = (span / 5.0).max(1e-12);
    let unit = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * unit)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * unit)
}

/// A Gantt chart of schedules stacked vertically, one panel per `(title,
/// slots)`, all on one time scale with a millisecond axis under each: the
/// panels compare plans, which a scale of their own per panel hid (a 176 ms
/// run was drawn as wide as an 876 ms one).
pub fn gantt_svg(panels: &[(String, Vec<Slot>)]) -> String {
    let (left, width, row, gap) = (170.0, 760.0, 18.0, 40.0);
    let mut doc = Document::new();
    let mut y = 10.0;
    let horizon = panels
        .iter()
        .flat_map(|(_, slots)| slots)
        .map(|s| s.end_s)
        .fold(1e-9, f64::max);
    let step = tick_step(horizon * 1e3);
    let decimals = (-step.log10()).ceil().max(0.0) as usize;
    for (title, slots) in panels {
        let mut lanes: Vec<&str> = Vec::new();
        for s in slots {
            if !lanes.contains(&s.lane.as_str()) {
                lanes.push(&s.lane);
            }
        }
        lanes.sort_by_key(|l| (l.contains('→'), *l));
        let end = slots.iter().map(|s| s.end_s).fold(0.0, f64::max);
        doc = doc.add(
            Text::new(format!("{title} — {:.1} ms", end * 1e3))
                .set("x", 10)
                .set("y", y + 14.0)
                .set("font-family", "sans-serif")
                .set("font-size", 14),
        );
        y += 24.0;
        for (li, lane) in lanes.iter().enumerate() {
            let ly = y + li as f64 * row;
            doc = doc.add(
                Text::new(lane.to_string())
                    .set("x", 10)
                    .set("y", ly + 13.0)
                    .set("font-family", "sans-serif")
                    .set("font-size", 11),
            );
            for s in slots.iter().filter(|s| s.lane == *lane) {
                let x = left + s.start_s / horizon * width;
                let w = ((s.end_s - s.start_s) / horizon * width).max(1.0);
                doc = doc.add(
                    Rectangle::new()
                        .set("x", x)
                        .set("y", ly + 2.0)
                        .set("width", w)
                        .set("height", row - 4.0)
                        .set("fill", if s.transfer { "#e8a33d" } else { "#3d7be8" })
                        .set("stroke", "#222")
                        .set("stroke-width", 0.3)
                        .add(Title::new(format!(
                            "{}: {:.2}–{:.2} ms",
                            s.what,
                            s.start_s * 1e3,
                            s.end_s * 1e3
                        ))),
                );
            }
        }
        y += lanes.len() as f64 * row;
        let mut k = 0.0;
        while k * step <= horizon * 1e3 + 1e-9 {
            let x = left + k * step / (horizon * 1e3) * width;
            doc = doc
                .add(
                    Rectangle::new()
                        .set("x", x)
                        .set("y", y)
                        .set("width", 0.6)
                        .set("height", 4)
                        .set("fill", "#222"),
                )
                .add(
                    Text::new(format!("{:.*} ms", decimals, k * step))
                        .set("x", x)
                        .set("y", y + 15.0)
                        .set("font-family", "sans-serif")
                        .set("font-size", 10)
                        .set("text-anchor", "middle"),
                );
            k += 1.0;
        }
        y += gap;
    }
    doc.set("viewBox", (0, 0, left + width + 20.0, y))
        .set("width", left + width + 20.0)
        .set("height", y)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(lane: &str, end_ms: f64) -> Slot {
        Slot {
            lane: lane.into(),
            what: "job".into(),
            transfer: false,
            start_s: 0.0,
            end_s: end_ms / 1e3,
        }
    }

    #[test]
    fn gantt_panels_share_one_time_scale() {
        let svg = gantt_svg(&[
            ("fast".into(), vec![slot("edge0", 100.0)]),
            ("slow".into(), vec![slot("edge0", 400.0)]),
        ]);
        // 760 px for the slowest run's 400 ms: 190 px for 100 ms.
        assert!(svg.contains("width=\"190\""), "{svg}");
        assert!(svg.contains("width=\"760\""), "{svg}");
        assert!(
            svg.contains(">400 ms<") || svg.contains(">\n400 ms\n<"),
            "{svg}"
        );
        assert_eq!(tick_step(400.0), 100.0);
        assert_eq!(tick_step(0.9), 0.2);
        assert_eq!(tick_step(176.0), 50.0);
    }
}
