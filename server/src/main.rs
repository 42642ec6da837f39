//! `pushfleet-server`: parse flags, set up logging, bind, and hand over to [`run`].

use std::net::TcpListener;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use pushfleet_server::{run, Config};

/// sysexits.h EX_USAGE: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;
/// sysexits.h EX_UNAVAILABLE: a listener could not be bound, or serving failed.
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "pushfleet-server: invalid configuration: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("pushfleet-server: invalid configuration: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PUSHFLEET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let bind = |addr, what: &str| {
        TcpListener::bind(addr)
            .map_err(|e| format!("cannot bind the {what} listener on {addr}: {e}"))
    };
    let listeners =
        bind(config.listen, "public").and_then(|p| Ok((p, bind(config.admin_listen, "admin")?)));
    let (public, admin) = match listeners {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pushfleet-server: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    match run(config, public, admin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushfleet-server: {e:#}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
