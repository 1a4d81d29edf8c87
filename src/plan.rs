//! `tessera plan`: the plan for a model on a cluster, from the cluster
//! file's cold-start figures (no node is contacted).

use std::path::Path;

use anyhow::{Context, Result};
use planner::{Cluster, Estimates};

/// Reads and validates a cluster file; errors name the file and the field.
pub fn read_cluster(path: &Path) -> Result<Cluster> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cluster: Cluster = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    cluster
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(cluster)
}

/// Prints the plan as a table and optionally draws it.
pub fn plan(cluster: &Path, model: &str, svg: Option<&Path>) -> Result<()> {
    let cluster = read_cluster(cluster)?;
    let graph = crate::model::load_for_planning(model)?;
    let est = Estimates::from_cluster(&cluster);
    let report =
        planner::plan(&graph, &cluster, &est).with_context(|| format!("planning {model}"))?;
    println!("{}", report.table());
    if let Some(path) = svg {
        std::fs::write(path, report.svg())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("drew the plan in {}", path.display());
    }
    Ok(())
}
