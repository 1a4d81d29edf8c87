//! The wgpu executor: adapter choice, pipelines and buffer pools, fused blocks in one submission, autotuned kernel choices.
