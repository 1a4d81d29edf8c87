//! The CPU reference executor: plain, obviously-correct Rust for every op; the oracle for the GPU kernels.
