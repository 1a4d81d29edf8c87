//! The tessera binary: CLI, node daemon and coordinator.

fn main() {
    println!("tessera");
}
