//! `pushfleet-relay`: parse flags, set up logging, bind the HTTP listener, and hand
//! over to [`run`](pushfleet_server::relay::run).

use std::net::TcpListener;
use std::process::ExitCode;

use pushfleet_server::cli::{self, EXIT_UNAVAILABLE};
use pushfleet_server::relay::{run, RelayConfig};

const PROGRAM: &str = "pushfleet-relay";

fn main() -> ExitCode {
    let config: RelayConfig = match cli::parse(PROGRAM) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = config.validate() {
        return cli::invalid(PROGRAM, e);
    }
    cli::init_tracing();
    let http = match TcpListener::bind(config.http_listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "{PROGRAM}: cannot bind the HTTP listener on {}: {e}",
                config.http_listen
            );
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    match run(config, http) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
