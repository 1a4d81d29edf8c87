//! The tessera binary: CLI, node daemon and coordinator.

mod demo;
mod infer;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// Run CNN inference across a device, parallel edge GPUs and a cloud node,
/// tile by tile, with results bit-identical to a single-node run.
#[derive(Parser)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a 1 device + 4 edge + 1 cloud cluster on loopback, run the
    /// embedded default model on it, and show what happened.
    Demo(demo::DemoArgs),
    /// Run a model on one input, in this process.
    Infer(InferArgs),
    /// Run a node daemon for one tier (device, edge or cloud).
    #[command(after_help = NODE_FIELDS)]
    Node {
        /// The node's TOML configuration (fields below; README, "Running your own cluster").
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one request on a cluster of running node daemons.
    Run(run::RunArgs),
    /// Print (and draw) the plan for a model on a cluster, from the
    /// cluster file's `gflops` and links alone: no node is contacted.
    /// `tessera run` plans from the nodes' start-up calibration and a
    /// profile of the model instead, so its plan can differ.
    Plan {
        /// The cluster's TOML description.
        #[arg(long)]
        cluster: PathBuf,
        /// The model (.onnx, a TF.js model.json, or `default`).
        #[arg(long)]
        model: String,
        /// Also draw the plan as an SVG file.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// The input's shape, comma-separated (e.g. 1,3,64,64): for a model
        /// with open dimensions (planned at batch 1, 224×224 without it).
        #[arg(long, value_name = "N,C,H,W", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
        input_shape: Option<Vec<u32>>,
        /// Plan for this input file (.png or .npy), as `tessera run` would
        /// send it: its shape, and an image crosses links as bytes, not f32
        /// (the default model's input is costed as an image without it).
        #[arg(long, conflicts_with = "input_shape")]
        input: Option<PathBuf>,
        /// As `tessera run --pixel-scale`: a PNG `--input`'s pixel range for
        /// a model not embedded (a scale that makes its values no bytes
        /// sends them as f32).
        #[arg(long, allow_negative_numbers = true, requires = "input")]
        pixel_scale: Option<f32>,
    },
    /// Make a certificate per node, signed by the cluster CA in the output
    /// folder (a new CA when the folder has none). Node names are 1-63
    /// characters of a-z, 0-9, '-' and '.', neither first nor last a '-' or
    /// '.'; `ca` is the CA's own. A named node's pair already in the folder
    /// is replaced.
    Certs {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated node names.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
    },
}

/// `tessera node --help`: the config file's fields (README.md,
/// "Running your own cluster", has an example).
const NODE_FIELDS: &str = "\
Config file fields (TOML; unknown fields are errors; relative paths are taken
from the file's folder):
  name = \"edge0\"                certificate name and name in cluster.toml
  tier = \"edge\"                 device | edge | cloud (as cluster.toml says)
  listen = \"0.0.0.0:7101\"       QUIC listen address
  certs = \"certs\"               folder with ca.pem, <name>.pem, <name>.key
  peers = [\"coordinator\"]       names allowed to connect
  backend = \"gpu\"               gpu (default) | cpu
  adapter = \"NVIDIA\"            optional GPU adapter name substring
  autotune = false              kernel autotuning (off: tiles stitch bit for bit)
  metrics = \"127.0.0.1:9101\"    optional Prometheus endpoint
  max_model_bytes = 1073741824  largest model accepted (default 1 GiB)
  model_cache_bytes = 4294967296  models kept loaded (default 4 GiB; least recently used go)
  calibrate = true              time the executor at start-up (default true)
  compute_lock = \"node.lock\"    optional lock shared by daemons on one machine

Stops on Ctrl-C, SIGTERM or SIGHUP after closing its connections (within about
7 s: its peers get 2 s to see the close, a job running on the executor 5 s
to finish).";

pub use tessera::Backend;
use tessera::plan;

/// Arguments of `tessera infer`.
#[derive(Args)]
pub struct InferArgs {
    /// The model: an .onnx file, a TF.js `model.json`, or `default` (the embedded super-resolution model).
    #[arg(long)]
    pub model: String,
    /// Input tensor: .npy (float32, NCHW) or .png.
    #[arg(long)]
    pub input: PathBuf,
    /// Output tensor: .npy or .png; one per model output, in the model's
    /// order (`--output a.npy b.npy` or `--output a.npy --output b.npy`).
    #[arg(long, required = true, num_args = 1..)]
    pub output: Vec<PathBuf>,
    /// Split every tileable fused block into R×C tiles (results do not change).
    #[arg(long, default_value = "1x1")]
    pub grid: String,
    /// Fuse at most N layers per block (default: chosen from the halo overhead).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub fuse: Option<usize>,
    /// Executor.
    #[arg(long, value_enum, default_value_t = Backend::Gpu)]
    pub backend: Backend,
    /// GPU adapter name (substring), like WGPU_ADAPTER_NAME.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Use default kernel choices instead of timing candidates.
    #[arg(long)]
    pub no_autotune: bool,
    /// PNG pixel range for models not embedded: byte/255 × this (1 = [0,1], 255 = [0,255]).
    #[arg(long, allow_negative_numbers = true)]
    pub pixel_scale: Option<f32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Daemons log what they do; one-shot commands print their own lines
    // and the engine's warnings about the model they were given, `run` the
    // coordinator's too (RUST_LOG turns the rest on).
    let default = match cli.command {
        Command::Node { .. } => "info",
        // The coordinator's own warnings (a block tiled across executors).
        Command::Run { .. } => "tile_engine=warn,tessera=warn",
        _ => "tile_engine=warn",
    };
    tessera::console::init_logging(default, matches!(cli.command, Command::Node { .. }));
    if matches!(
        cli.command,
        Command::Plan { .. } | Command::Certs { .. } | Command::Infer(_) | Command::Demo(_)
    ) {
        tessera::console::end_quietly_on_closed_stdout();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<tessera::console::Interrupted>() {
            // Said as what it is, not as an error.
            Some(stop) => {
                eprintln!("{stop}");
                ExitCode::from(stop.exit_code())
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => demo::demo(&args),
        Command::Infer(args) => infer::infer(&args),
        Command::Node { config } => tessera::cluster::node::main(&config),
        Command::Run(args) => run::run(&args),
        Command::Plan {
            cluster,
            model,
            svg,
            input_shape,
            input,
            pixel_scale,
        } => {
            let shape: Option<Vec<usize>> =
                input_shape.map(|s| s.into_iter().map(|d| d as usize).collect());
            plan::plan(
                &cluster,
                &model,
                svg.as_deref(),
                shape.as_deref(),
                input.as_deref().map(|i| (i, pixel_scale)),
            )
        }
        Command::Certs { out, nodes } => {
            let replaced: Vec<&str> = nodes
                .iter()
                .filter(|n| transport::certs::node_cert_path(&out, n).exists())
                .map(String::as_str)
                .collect();
            let ca = transport::certs::generate(&out, &nodes)
                .with_context(|| format!("cannot write certificates to {}", out.display()))?;
            let existing = ca == transport::certs::CaUsed::Existing;
            match ca {
                transport::certs::CaUsed::New => println!(
                    "wrote a cluster CA and certificates for {} to {}",
                    nodes.join(", "),
                    out.display()
                ),
                transport::certs::CaUsed::Existing => println!(
                    "wrote certificates for {} to {}, signed with the existing CA in {}",
                    nodes.join(", "),
                    out.display(),
                    out.display()
                ),
            }
            if !replaced.is_empty() {
                println!(
                    "replaced the certificate and key of {}{}",
                    replaced.join(", "),
                    if existing {
                        " (a daemon still holding the old pair stays trusted: the CA is the same)"
                    } else {
                        " (the folder had no CA: certificates signed by the old one no longer verify)"
                    }
                );
            }
            Ok(())
        }
    }
}
