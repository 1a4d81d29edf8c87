//! What the binaries share about their terminal: logs on stderr, and a
//! quiet end when the reader of their output goes away.

use std::io::IsTerminal;

/// Logs tracing events to stderr at `default` (an `EnvFilter` directive;
/// `RUST_LOG` overrides it), coloured only when stderr is a terminal, so
/// logs redirected to a file or a pipe hold no escape codes. A daemon's
/// lines carry time and source; a one-shot command's warnings read as
/// messages to its user, without them.
pub fn init_logging(default: &str, daemon: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if daemon {
        fmt.init();
    } else {
        fmt.without_time().with_target(false).init();
    }
}

/// Makes a closed stdout end the process as it ends any Unix filter
/// (`tessera plan … | head`), where Rust's `println!` would panic. Only for
/// one-shot commands that print: a daemon's or a coordinator's write to a
/// socket whose peer left must return an error, not kill the process.
pub fn end_quietly_on_closed_stdout() {
    // The `sigpipe` crate restores SIGPIPE's default action (the workspace
    // denies unsafe code, and this is one libc call).
    sigpipe::reset();
}

/// A one-shot command stopped by SIGINT, SIGTERM or SIGHUP: `main` exits
/// with 128 + the signal's number (130, 143, 129), as a shell reports it.
#[derive(Debug, thiserror::Error)]
#[error("{signal}: {what}")]
pub struct Interrupted {
    /// `SIGINT`, `SIGTERM`, `SIGHUP` or `Ctrl-C`, as [`crate::cluster::node::stop_signal`] names it.
    pub signal: &'static str,
    /// What was left undone, and how.
    pub what: String,
}

impl Interrupted {
    /// The process exit status for this stop.
    pub fn exit_code(&self) -> u8 {
        match self.signal {
            "SIGTERM" => 143,
            "SIGHUP" => 129,
            _ => 130,
        }
    }
}
