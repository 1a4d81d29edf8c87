//! Microbenchmarks: kernels, tile sizes, transport, planner and whole clusters.
//!
//! Each subcommand prints a table, and writes JSON (and, but for
//! `transport`, an SVG plot) under `out/bench/` (`kernels`:
//! `out/bench-kernels/`, or `--out DIR`). Figures
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

fn main() -> std::process::ExitCode {
    let bench = Bench::parse();
    // The engine's warnings (a grid clamped to a small map) belong beside
    // the figures they qualify.
    tessera::console::init_logging(
        match bench {
            // Its table says where a grid was clamped, once per row, where the
            // engine would warn on every timed run.
            Bench::Tiles(_) => "tile_engine=error",
            // The cluster benchmark's daemons log as `tessera node` does
            // (their logs were empty).
            Bench::Node { .. } => "info",
            _ => "tile_engine=warn",
        },
        matches!(bench, Bench::Node { .. }),
    );
    if matches!(
        bench,
        Bench::Kernels(_) | Bench::Tiles(_) | Bench::Planner(_)
    ) {
        tessera::console::end_quietly_on_closed_stdout();
    }
    let result = match bench {
        Bench::Kernels(a) => kernels::run(a),
        Bench::Tiles(a) => tiles::run(a),
        Bench::Transport(a) => transport::run(a),
        Bench::Planner(a) => planner::run(a),
        Bench::Cluster(a) => cluster::run(a),
        Bench::Node { config } => tessera::cluster::node::main(&config),
    };
    // One line, as tessera prints it: returning the error from main would
    // print its backtrace too wherever RUST_BACKTRACE is set.
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bench;
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_command_line_is_well_formed() {
        Bench::command().debug_assert();
    }

    #[test]
    fn every_subcommand_parses_its_documented_flags() {
        for argv in [
            "bench kernels --quick --reps 2 --only conv --backend vulkan",
            "bench tiles --backend GPU --reps 5 --size 64 --max-grid 4 --no-latency",
            "bench tiles --model default --grids 1x1,5x1,3×2",
            "bench transport --sizes 64K,1M --rounds 2",
            "bench planner",
            "bench cluster --model VGG --backend cpu --reps 3 --quick --out x",
        ] {
            let parsed = Bench::try_parse_from(argv.split(' '));
            assert!(
                parsed.is_ok(),
                "{argv}: {}",
                parsed.err().map(|e| e.to_string()).unwrap_or_default()
            );
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (argv, flag) in [
            ("bench cluster --reps 0", "--reps"),
            ("bench cluster --model vgx", "--model"),
            ("bench tiles --backend tpu", "--backend"),
            ("bench tiles --grids 2x2,0x1", "--grids"),
            ("bench tiles --size 0", "--size"),
            ("bench tiles --max-grid 9", "--max-grid"),
            ("bench kernels --reps 0", "--reps"),
            ("bench transport --sizes 12Q", "--sizes"),
            ("bench transport --sizes 99999999999999999M", "--sizes"),
            ("bench planner --bogus", "--bogus"),
        ] {
            let err = Bench::try_parse_from(argv.split(' '))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(flag), "{argv}: {err:?}");
        }
    }
}
