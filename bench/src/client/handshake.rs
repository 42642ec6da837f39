//! Connect + WebSocket upgrade for one connection, retried with a growing,
//! jittered backoff; each attempt is bounded by the handshake timeout.

use super::{ClientConfig, Shared, READ_BUF};
use crate::ws;
use anyhow::{anyhow, bail, Context, Result};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upgraded connection, ready for frames.
pub(super) struct Upgraded {
    pub stream: TcpStream,
    /// Read buffer of [`READ_BUF`] bytes; the first `filled` are bytes that
    /// followed the 101 response.
    pub buf: Vec<u8>,
    pub filled: usize,
    /// The server accepted permessage-deflate.
    pub deflate: bool,
}

/// Connects and upgrades, up to `cfg.attempts` times; counts retries in
/// [`Shared::retries`].
pub(super) async fn establish(shared: &Shared) -> Result<Upgraded> {
    let attempts = shared.cfg.attempts.max(1);
    let mut last = anyhow!("no attempt made");
    for attempt in 1..=attempts {
        match tokio::time::timeout(shared.cfg.handshake_timeout, handshake(&shared.cfg)).await {
            Ok(Ok(up)) => return Ok(up),
            Ok(Err(e)) => last = e,
            Err(_) => last = anyhow!("connect + handshake timed out"),
        }
        if attempt < attempts {
            shared.retries.set(shared.retries.get() + 1);
            let backoff = 100 * u64::from(attempt) + fastrand::u64(0..100);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
    }
    Err(last.context(format!("after {attempts} attempts")))
}

async fn handshake(cfg: &ClientConfig) -> Result<Upgraded> {
    let mut stream = TcpStream::connect(cfg.addr)
        .await
        .with_context(|| format!("connecting to {}", cfg.addr))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let key = ws::random_key();
    stream
        .write_all(&ws::build_request(&cfg.url, &key, cfg.compress))
        .await
        .context("sending handshake")?;
    let mut buf = vec![0u8; READ_BUF];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            bail!("handshake response too large");
        }
        let n = stream
            .read(&mut buf[filled..])
            .await
            .context("reading handshake response")?;
        if n == 0 {
            bail!("server closed the connection during the handshake");
        }
        filled += n;
        if let Some(resp) = ws::parse_response(&buf[..filled], &key)? {
            buf.copy_within(resp.head_len..filled, 0);
            filled -= resp.head_len;
            if cfg.compress && !resp.deflate {
                bail!("server did not accept permessage-deflate");
            }
            return Ok(Upgraded {
                stream,
                buf,
                filled,
                deflate: resp.deflate,
            });
        }
    }
}
