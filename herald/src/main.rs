//! `herald`: parse flags, set up logging, bind, and hand over to [`run`](herald::run::run).

use std::process::ExitCode;

use herald::config::Config;
use pushfleet_fleet::cli;

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
    let listeners = cli::bind(config.agent_listen, "agent-check")
        .and_then(|a| Ok((a, cli::bind(config.http_listen, "status")?)));
    let (agent, http) = match listeners {
        Ok(l) => l,
        Err(e) => return cli::unavailable(PROGRAM, e),
    };
    match herald::run::run(config, agent, http) {
        Err(e) if e.is::<herald::run::InvalidConfig>() => cli::invalid(PROGRAM, e),
        served => cli::finish(PROGRAM, served),
    }
}
