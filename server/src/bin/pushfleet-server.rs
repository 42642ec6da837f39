//! `pushfleet-server`: parse flags, set up logging, bind, and hand over to [`run`].

use std::process::ExitCode;

use pushfleet_fleet::cli;
use pushfleet_server::edge::{run, Config};

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
    let listeners = cli::bind(config.listen, "public")
        .and_then(|p| Ok((p, cli::bind(config.admin_listen, "admin")?)));
    let (public, admin) = match listeners {
        Ok(l) => l,
        Err(e) => return cli::unavailable(PROGRAM, e),
    };
    cli::finish(PROGRAM, run(config, public, admin))
}
