//! `scripts/setup.sh --check` on this machine: every requirement of the build, the demo
//! and the tests is there, checked by the thing actually needed (a file, a Python module,
//! a command) rather than by a command that usually comes with it. In particular the
//! protobuf well-known types that the etcd client's build script compiles against
//! (Debian `libprotobuf-dev`, only a Recommends of `protobuf-compiler`) and libzmq's
//! header and pkg-config file.
//!
//! And the check can fail: with `PUSHFLEET_SETUP_ROOT` pointing at an empty root file
//! system, every absolute file requirement is missing, the check says so line by line,
//! names them in its last line and exits 1. Install mode refuses that variable, so
//! these tests never install anything.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use pushfleet_tests::workspace_root;

/// Runs `scripts/setup.sh` with `args`; `root` sets `PUSHFLEET_SETUP_ROOT`.
fn setup(args: &[&str], root: Option<&Path>) -> Output {
    let script = workspace_root().join("scripts/setup.sh");
    let mut command = Command::new(&script);
    command.args(args).env_remove("PUSHFLEET_SETUP_ROOT");
    if let Some(root) = root {
        command.env("PUSHFLEET_SETUP_ROOT", root);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
}

/// Stdout and stderr, for assertions and failure messages.
fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The report line of the requirement whose description contains `what`.
fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no requirement line for {what}:\n{stdout}"))
}

/// The requirements this test names, as the report describes them.
const PROTOBUF_WELL_KNOWN_TYPES: [&str; 2] = [
    "/usr/include/google/protobuf/descriptor.proto (apt: libprotobuf-dev)",
    "/usr/include/google/protobuf/struct.proto (apt: libprotobuf-dev)",
];
const LIBZMQ: [&str; 2] = [
    "/usr/include/zmq.h (apt: libzmq3-dev)",
    "/pkgconfig/libzmq.pc (apt: libzmq3-dev)",
];

#[test]
fn every_requirement_is_present() {
    let output = setup(&["--check"], None);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "scripts/setup.sh --check failed ({}); run scripts/setup.sh:\n{stdout}{stderr}",
        output.status
    );
    for what in PROTOBUF_WELL_KNOWN_TYPES.iter().chain(&LIBZMQ) {
        let line = line(&stdout, what);
        assert!(line.starts_with("ok "), "{what} is not ok: {line}");
    }
    let missing: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains("missing"))
        .collect();
    assert!(missing.is_empty(), "missing lines: {missing:#?}\n{stdout}");
    let rows = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(
        stdout.ends_with(&format!("setup: all {rows} requirements present\n")),
        "no summary line for {rows} requirements:\n{stdout}"
    );
}

#[test]
fn a_missing_file_fails_the_check() {
    // An empty root file system: every absolute file requirement is missing under it.
    let root = std::env::temp_dir().join(format!("pushfleet-setup-root-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let output = setup(&["--check"], Some(&root));
    std::fs::remove_dir_all(&root).unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the check passed with nothing under {}:\n{stdout}{stderr}",
        root.display()
    );
    let root_text = root.to_string_lossy();
    for what in PROTOBUF_WELL_KNOWN_TYPES.iter().chain(&LIBZMQ) {
        let line = line(&stdout, what);
        assert!(
            line.starts_with("missing ") && line.contains(&*root_text),
            "{what} under {} is not missing: {line}",
            root.display()
        );
    }
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("setup: ")
            && last.contains("google/protobuf/descriptor.proto (apt: libprotobuf-dev)"),
        "the last line does not name the missing descriptor.proto: {last}"
    );
}

#[test]
fn install_mode_refuses_another_root() {
    // Installing goes to this machine's apt, pip and npm: a root it cannot install
    // into is refused before anything is checked or installed.
    let output = setup(&[], Some(Path::new("/nonexistent")));
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("PUSHFLEET_SETUP_ROOT only applies to --check"),
        "{stderr}"
    );
    assert!(!stdout.contains("setup: apt-get"), "{stdout}");
}
