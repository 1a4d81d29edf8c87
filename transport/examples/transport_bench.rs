//! The transport benchmark without the rest of the bench crate (which pulls
//! in wgpu): `cargo run -p transport --release --example transport_bench -- [args]`.
//! Same code as `cargo run -p bench --release -- transport`.

use clap::Parser;

#[path = "../../bench/src/transport.rs"]
mod transport_bench;

/// Tiles over QUIC, plain TCP and the link emulator.
#[derive(Parser, Debug)]
#[command(name = "transport_bench")]
struct Cli {
    #[command(flatten)]
    args: transport_bench::Args,
}

fn main() -> anyhow::Result<()> {
    transport_bench::run(Cli::parse().args)
}
