//! `pushfleet-publish`: the command lives in [`pushfleet_server::publisher::cli`].

fn main() -> std::process::ExitCode {
    pushfleet_server::publisher::cli::main()
}
