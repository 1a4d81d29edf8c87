//! The planner: online profiler, cost model, three-tier partition of a DAG,
//! tile shares for parallel edge nodes, matching-game offload and partial
//! re-planning. Pure functions of measurements: no I/O, no clock, no GPU.
