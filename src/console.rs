//! What the binaries share about their terminal: logs on stderr, and a
//! quiet end when the reader of their output goes away.

use std::io::IsTerminal;

/// Logs tracing events to stderr at `default` (an `EnvFilter` directive;
/// `RUST_LOG` overrides it), coloured only when stderr is a terminal, so
/// logs redirected to a file or a pipe hold no escape codes.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
