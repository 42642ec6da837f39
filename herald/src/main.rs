//! `herald`: parse flags, set up logging, bind, and hand over to [`run`](herald::run::run).

use std::net::TcpListener;
use std::process::ExitCode;

use herald::config::Config;
use pushfleet_server::cli::{self, EXIT_UNAVAILABLE};

const PROGRAM: &str = "herald";

fn main() -> ExitCode {
    let config: Config = match cli::parse(PROGRAM) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = config.validate() {
        return cli::invalid(PROGRAM, e);
    }
    cli::init_tracing();
    let bind = |addr, what: &str| {
        TcpListener::bind(addr)
            .map_err(|e| format!("cannot bind the {what} listener on {addr}: {e}"))
    };
    let listeners = bind(config.agent_listen, "agent-check")
        .and_then(|a| Ok((a, bind(config.http_listen, "status")?)));
    let (agent, http) = match listeners {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    match herald::run::run(config, agent, http) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
