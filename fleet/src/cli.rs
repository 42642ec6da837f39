//! What every pushfleet binary's `main` does before its real work: parse flags into
//! a typed config (exit 64 with one line when they are wrong) and set up logging.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

/// sysexits.h EX_USAGE: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 64;
/// sysexits.h EX_UNAVAILABLE: a listener could not be bound, or serving failed.
pub const EXIT_UNAVAILABLE: u8 = 69;

/// Parses the command line; `--help`/`--version` print and exit, errors become one
/// line on stderr and [`EXIT_CONFIG`].
pub fn parse<C: Parser>(program: &str) -> Result<C, ExitCode> {
    match C::try_parse() {
        Ok(c) => Ok(c),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "{program}: invalid configuration: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Reports a cross-field config error the same way.
pub fn invalid(program: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("{program}: invalid configuration: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// Logs to stderr, filtered by `PUSHFLEET_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PUSHFLEET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Binds a listener; the error names what it is for.
pub fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("cannot bind the {what} listener on {addr}: {e}"))
}

/// Reports a listener that could not be bound: [`EXIT_UNAVAILABLE`].
pub fn unavailable(program: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("{program}: {error}");
    ExitCode::from(EXIT_UNAVAILABLE)
}

/// The exit code for how serving ended.
pub fn finish(program: &str, served: anyhow::Result<()>) -> ExitCode {
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => unavailable(program, format!("{e:#}")),
    }
}
