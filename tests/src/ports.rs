//! Loopback ports for test processes, unique across every test process of a run.
//!
//! Asking the OS for port 0 and closing the listener is racy: the kernel may hand the
//! same port to the next caller, in this process or in a parallel test process, before
//! the service that was meant to bind it has done so (seen in CI as two flags of one
//! edge getting one port). Instead every test process takes ports in turn from one
//! counter kept in a locked file under `target/`, walking a range below Linux's
//! ephemeral range so outgoing connections never take them either; a port is handed
//! out only if it can be bound right now, and not again until the range wraps.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;

/// The range walked: below the default ephemeral range (32768-60999).
const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

fn counter_file() -> PathBuf {
    let dir = crate::workspace_root().join("target");
    let _ = std::fs::create_dir_all(&dir);
    dir.join("test-ports.counter")
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// The next free port in turn, shared by all test processes.
pub fn next_free() -> u16 {
    next_block(1)
}

/// The first of `n` consecutive free ports, handed out together (for scripts that
/// derive ports from a base, like `deploy/local/fleet.sh`).
pub fn next_block(n: u16) -> u16 {
    assert!((1..=100).contains(&n), "a block of 1..=100 ports");
    let path = counter_file();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut port = text
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| (FIRST..=LAST).contains(p))
        .unwrap_or(FIRST);
    let span = usize::from(LAST - FIRST) + 1;
    for _ in 0..span {
        if port > LAST - n + 1 {
            port = FIRST;
        }
        let candidate = port;
        port += 1;
        if (candidate..candidate + n).all(bindable) {
            port = candidate + n;
            let saved = file
                .seek(SeekFrom::Start(0))
                .and_then(|_| file.set_len(0))
                .and_then(|()| file.write_all(port.to_string().as_bytes()));
            if let Err(e) = saved {
                panic!("cannot write {}: {e}", path.display());
            }
            return candidate;
        }
    }
    panic!("no free loopback port in {FIRST}-{LAST}");
}
