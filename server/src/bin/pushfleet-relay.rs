//! `pushfleet-relay`: parse flags, set up logging, bind the HTTP listener, and hand
//! over to [`pushfleet_server::relay::run()`].

use std::process::ExitCode;

use pushfleet_fleet::cli;
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
    let http = match cli::bind(config.http_listen, "HTTP") {
        Ok(l) => l,
        Err(e) => return cli::unavailable(PROGRAM, e),
    };
    cli::finish(PROGRAM, run(config, http))
}
