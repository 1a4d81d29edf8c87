//! The transport benchmark without the rest of the bench crate (which pulls
//! in wgpu): `cargo run -p transport --release --example transport_bench -- [args]`.
//! Same code as `cargo run -p bench --release -- transport`.

#[path = "../../bench/src/transport.rs"]
mod transport_bench;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    transport_bench::run(&args)
}
