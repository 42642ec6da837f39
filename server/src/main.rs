//! `pushfleet-server`: parse flags, set up logging, bind, and hand over to [`run`].

use std::net::TcpListener;
use std::process::ExitCode;

use pushfleet_server::cli::{self, EXIT_UNAVAILABLE};
use pushfleet_server::{run, Config};

const PROGRAM: &str = "pushfleet-server";

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
    let listeners =
        bind(config.listen, "public").and_then(|p| Ok((p, bind(config.admin_listen, "admin")?)));
    let (public, admin) = match listeners {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    match run(config, public, admin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
