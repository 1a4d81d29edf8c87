//! Microbenchmarks: kernels, tile sizes, transport, planner and whole clusters.
//!
//! Each subcommand prints a table, and writes JSON and an SVG plot under
//! `out/bench/` (`kernels`: `out/bench-kernels/`, or `--out DIR`). Figures
//! are ratios measured side by side in one run, since shared machines are
//! noisy.

mod cluster;
mod kernels;
mod onnx_models;
mod planner;
mod tiles;
mod transport;
mod util;

use clap::Parser;

/// tessera's microbenchmarks.
#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "tessera's microbenchmarks: kernels, tiles, transport, planner, cluster"
)]
enum Bench {
    /// GFLOP/s of the GPU kernels on real layer shapes, and the cold start.
    Kernels(kernels::Args),
    /// Tile-size sweep: peak memory, halo FLOPs and latency per grid.
    Tiles(tiles::Args),
    /// Tiles over QUIC, plain TCP and the link emulator.
    Transport(transport::Args),
    /// Planning time of a 200-op DAG on an 8-node cluster.
    Planner(planner::Args),
    /// Whole-cluster plans side by side on a loopback cluster.
    Cluster(cluster::Args),
    /// A node daemon (the cluster benchmark starts its nodes from this binary).
    #[command(hide = true)]
    Node {
        /// The node's TOML file.
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Bench::parse() {
        Bench::Kernels(a) => kernels::run(a),
        Bench::Tiles(a) => tiles::run(a),
        Bench::Transport(a) => transport::run(a),
        Bench::Planner(a) => planner::run(a),
        Bench::Cluster(a) => cluster::run(a),
        Bench::Node { config } => tessera::cluster::node::main(&config),
    }
}
