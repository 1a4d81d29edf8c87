//! Microbenchmarks: kernels, tile sizes, transport, planner and whole clusters.

fn main() {
    eprintln!("usage: cargo run -p bench --release -- <kernels|tiles|transport|planner|cluster>");
    std::process::exit(2);
}
