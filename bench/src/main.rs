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

const USAGE: &str =
    "usage: cargo run -p bench --release -- <kernels|tiles|transport|planner|cluster> [args]";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(which) = args.first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let rest = &args[1..];
    match which.as_str() {
        "kernels" => kernels::run(rest),
        "tiles" => tiles::run(rest),
        "transport" => transport::run(rest),
        "planner" => planner::run(rest),
        "cluster" => cluster::run(rest),
        // The cluster benchmark starts its node daemons from this binary.
        "node" if rest.len() == 2 && rest[0] == "--config" => {
            tessera::cluster::node::main(std::path::Path::new(&rest[1]))
        }
        other => {
            eprintln!("unknown benchmark '{other}'\n{USAGE}");
            std::process::exit(2);
        }
    }
}
