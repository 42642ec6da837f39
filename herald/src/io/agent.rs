//! The HAProxy agent-check server.
//!
//! HAProxy connects to one TCP port, sends its `agent-send` string (herald has each
//! server send its edge id, with or without a newline), and reads one line in the
//! HAProxy 2.6 grammar:
//!
//! - a known, ready edge: `NN% ready` (weight in percent of the configured weight);
//! - a draining edge: `drain` (no new connections; existing ones stay);
//! - a stale edge (no fresh report): the floor, `NN% ready`;
//! - an unknown name (an edge herald has not heard of, an empty slot, or no
//!   `agent-send`): `up`, which changes neither weight nor admin state. (`ready`
//!   would be wrong there: HAProxy runs agent checks on servers in maintenance too,
//!   and `ready` takes them out of it, putting an empty slot in rotation.)
//!
//! When etcd is unreachable herald keeps answering with the last weights it had.
//! Every herald instance answers agent checks, leader or not.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::state::State;

/// Longest wait for HAProxy's `agent-send` line.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Agent checks answered at once. HAProxy opens one per server per `agent-inter`;
/// beyond this (a flood, or a port scanner) new connections are closed unanswered,
/// which HAProxy treats as a failed agent check: weights stay as they are.
pub const MAX_CONCURRENT: usize = 1024;
/// After the first bytes, how long a pause ends the name.
const QUIET: Duration = Duration::from_millis(20);
/// Longest name accepted.
const MAX_LINE: usize = 256;

/// The reply for the server named `name`.
pub fn reply(state: &State, name: &str) -> String {
    match state.views.get(name) {
        Some(view) => view.agent_reply(),
        None => "up\n".to_owned(),
    }
}

/// Serves agent checks until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<RwLock<State>>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    debug!("too many agent checks at once; closing one unanswered");
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    answer(stream, state).await;
                    drop(permit);
                });
            }
            Err(e) => {
                debug!(error = %e, "agent accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, state: Arc<RwLock<State>>) {
    let mut buf = [0u8; MAX_LINE];
    let mut len = 0;
    // HAProxy sends its `agent-send` text in one write right after connecting, with
    // a newline when configured in haproxy.cfg but without one when set over the
    // runtime API (which cannot express it). So: answer at a newline, or once the
    // text has stopped coming for a moment, or, if nothing comes, after a timeout.
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    while len < MAX_LINE {
        let wait = if len == 0 {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            QUIET
        };
        match tokio::time::timeout(wait, stream.read(&mut buf[len..])).await {
            Ok(Ok(n)) if n > 0 => {
                len += n;
                if buf[..len].contains(&b'\n') {
                    break;
                }
            }
            _ => break,
        }
    }
    let name = String::from_utf8_lossy(&buf[..len]);
    let name = name.trim();
    let text = match state.read() {
        Ok(s) => reply(&s, name),
        Err(_) => "up\n".to_owned(),
    };
    if let Ok(mut s) = state.write() {
        s.agent_checks += 1;
    }
    debug!(%name, reply = %text.trim_end(), "agent check");
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}
