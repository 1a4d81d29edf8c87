//! `tessera run`: one request on a cluster of running node daemons, with
//! the coordinator in this process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tessera::cluster::bundle::Bundle;
use tessera::cluster::coordinator::{Coordinator, LoadedModel};
use tessera::cluster::experiment;
use tessera::{model, plan};
use transport::{Capabilities, Endpoint, EndpointConfig, Hello, Identity};

/// Arguments of `tessera run`.
#[derive(Args)]
pub struct RunArgs {
    /// The cluster's TOML description (node addresses are where the daemons listen).
    #[arg(long)]
    pub cluster: PathBuf,
    /// Folder with the cluster CA and this coordinator's certificate (see `tessera certs`).
    #[arg(long)]
    pub certs: PathBuf,
    /// The coordinator's certificate name.
    #[arg(long, default_value = "coordinator")]
    pub name: String,
    /// The model (.onnx, a TF.js model.json, or `default`).
    #[arg(long)]
    pub model: String,
    /// Input tensor (.npy or .png).
    #[arg(long)]
    pub input: PathBuf,
    /// Output tensor (.npy or .png); one per model output, in the model's order.
    #[arg(long, required = true, num_args = 1..)]
    pub output: Vec<PathBuf>,
    /// PNG pixel range for models not embedded: byte/255 × this.
    #[arg(long, allow_negative_numbers = true)]
    pub pixel_scale: Option<f32>,
    /// Plan by FLOPs at each op class's calibrated rate instead of timing
    /// the model's ops on an edge node first (the nodes cache that profile,
    /// so only the first run of a model at an input size pays for it: three
    /// to five runs of the model on one node).
    #[arg(long)]
    pub no_profile: bool,
}

/// Runs one request on the cluster.
pub fn run(args: &RunArgs) -> Result<()> {
    let cluster = plan::read_cluster(&args.cluster)?;
    let kind = model::kind_of(&args.model)?;
    model::check_pixel_scale(kind, &args.input, &args.output, args.pixel_scale)?;
    let input = model::read_input(kind, &args.input, args.pixel_scale)?;
    // Checked here, before any node is contacted: a wrong input or output
    // would otherwise surface as a node's error about the model bundle.
    let (graph, input) = model::load_for_input(&args.model, &args.input, input, args.pixel_scale)?;
    model::check_io(&args.model, &graph, &input, &args.output)?;
    model::warn_nan_input(&args.input, &input);
    let bundle = Bundle::from_spec(&args.model, input.shape())?;
    let addrs = plan::node_addresses(&args.cluster, &cluster)?;
    let identity = Identity::load(&args.certs, &args.name)
        .with_context(|| format!("certificate {} in {}", args.name, args.certs.display()))?;
    let peers = cluster
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| n != planner::cluster::INPUT_STAND_IN)
        .collect();
    let hello = Hello {
        node_id: args.name.clone(),
        tier: transport::Tier::Edge,
        adapter: "none".into(),
        capabilities: Capabilities::default(),
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        // An IPv4 socket reaches IPv4 nodes only; a dual-stack one is
        // bound when some node has only an IPv6 address.
        let any = if addrs.iter().flatten().any(SocketAddr::is_ipv6) {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let endpoint = Endpoint::bind(any, EndpointConfig::new(identity, peers, hello))?;
        // On Ctrl-C or SIGTERM the connections are closed for real: a
        // process that just dies leaves the nodes running its queued jobs
        // until their idle timeout, ahead of the next user's.
        let closer = endpoint.quinn().clone();
        let stop = tessera::cluster::node::stop_signal()?;
        let work = request(args, kind, &input, &bundle, cluster, endpoint, addrs);
        let close = |why: &'static [u8]| {
            let closer = closer.clone();
            async move {
                closer.close(0u32.into(), why);
                let _ = tokio::time::timeout(Duration::from_secs(1), closer.wait_idle()).await;
            }
        };
        tokio::select! {
            r = work => {
                // A request that failed part-way leaves no jobs queued
                // behind it either (a finished one has closed already).
                if r.is_err() {
                    close(b"failed").await;
                }
                r
            }
            sig = stop => {
                close(b"interrupted").await;
                Err(tessera::console::Interrupted {
                    signal: sig,
                    what: "request abandoned; the nodes drop its jobs (one already running on a GPU finishes first)".into(),
                }
                .into())
            }
        }
    })
}

/// Connects, loads the model, plans and runs the request, and writes the outputs.
async fn request(
    args: &RunArgs,
    kind: model::ModelKind,
    input: &tile_engine::Tensor,
    bundle: &Bundle,
    cluster: planner::Cluster,
    endpoint: Endpoint,
    addrs: Vec<std::result::Result<SocketAddr, String>>,
) -> Result<()> {
    {
        let mut coord = Coordinator::connect_resolved(cluster, endpoint, addrs)
            .await
            .context("cannot reach the cluster")?;
        // Profiled below, where its time can be reported.
        coord.profile_models = false;
        // Each node left down once, with why (its reason names it).
        for i in 0..coord.cluster.nodes.len() {
            if coord.cluster.nodes[i].name == planner::cluster::INPUT_STAND_IN {
                continue;
            }
            if let Some(why) = coord.down_reason(i) {
                eprintln!("{why}, planning without it");
            }
        }
        let up = coord.alive();
        let mut loaded = coord
            .load_model(bundle)
            .await
            .context("cannot send the model")?;
        for (i, why) in &loaded.left_out {
            let name = &coord.cluster.nodes[*i].name;
            eprintln!("{name}: {why}, planning without it");
        }
        if !args.no_profile {
            profile(&coord, &mut loaded, &args.model).await;
        }
        // Seconds may have passed (a transfer, a profile): a node stopped
        // meanwhile is found now, not by a job's silence.
        coord.probe_all().await;
        // A node that went away since (its daemon stopped while the model
        // loaded or was profiled) is left out of the plan: say so too.
        for &i in &up {
            if coord.peer(i).is_none() && !loaded.left_out.iter().any(|(n, _)| *n == i) {
                let name = &coord.cluster.nodes[i].name;
                let why = coord
                    .down_reason(i)
                    .unwrap_or_else(|| format!("{name}: its connection closed before the plan"));
                eprintln!("{why}, planning without it");
            }
        }
        loaded.expect_inputs(&[input]);
        let adaptive = experiment::Adaptive::new(&coord, &loaded)?;
        let run = experiment::run_plan(&coord, &loaded, input, &adaptive.plan, 1, true).await?;
        coord.shutdown().await;
        model::write_outputs(kind, &args.output, &run.outputs, args.pixel_scale)?;
        // Where the parts that ran whole (not as tiles) ran.
        let whole: Vec<String> = run
            .records
            .iter()
            .filter(|r| r.ok && r.tile.is_none() && r.ops > 0)
            .map(|r| format!("{} on {}", r.stage, r.node_name))
            .collect();
        let whole = if whole.is_empty() {
            String::new()
        } else {
            format!("; whole: {}", whole.join(", "))
        };
        for (path, out) in args.output.iter().zip(&run.outputs) {
            eprintln!(
                "{}: output {:?} in {:.1} ms wall clock ({} job{}; tiles: {}{whole})",
                path.display(),
                out.shape(),
                run.wall_s * 1e3,
                run.records.len(),
                if run.records.len() == 1 { "" } else { "s" },
                experiment::ran_shares_text(&coord, &run)
            );
        }
        Ok(())
    }
}

/// Times the model's ops on one node for the planner. The nodes keep the
/// profile, so a later run gets it at once; the first takes three to five
/// runs of the model on one node (4 s for the default model on a 200×150
/// image on a CPU node), so when it is not back within a second
/// the user is told what is happening and, at the end, how long it took.
async fn profile(coord: &Coordinator, loaded: &mut LoadedModel, model: &str) {
    let started = std::time::Instant::now();
    let node = coord
        .profiling_node(&loaded.hash)
        .map_or("?", |i| coord.cluster.nodes[i].name.as_str());
    let profiling = coord.profile_model(loaded);
    tokio::pin!(profiling);
    if tokio::time::timeout(Duration::from_secs(1), &mut profiling)
        .await
        .is_ok()
    {
        return;
    }
    eprintln!(
        "profiling {model} on {node}: timing each op once for the planner (the nodes \
         keep the result for later runs; --no-profile skips it)…"
    );
    let done = profiling.await;
    let took = started.elapsed().as_secs_f64();
    match done {
        Some(_) => eprintln!("profiled {model} in {took:.1} s"),
        None => eprintln!("no profile of {model} after {took:.1} s: planning by FLOPs"),
    }
}
