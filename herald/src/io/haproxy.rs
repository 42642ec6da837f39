//! A small async client for HAProxy's runtime API (the `stats socket` at
//! `level admin`), with the few commands herald needs to fill, weigh, drain and
//! empty `server-template` slots without reloading HAProxy.
//!
//! Each command uses its own connection in HAProxy's non-interactive mode: write
//! `command\n`, read until HAProxy closes. That costs a connect per command but needs
//! no session state, survives HAProxy reloads, and a stuck exchange is bounded by one
//! timeout ([`DEFAULT_TIMEOUT`]) covering connect, write and read.
//!
//! HAProxy answers `set` commands in free text, so each typed method knows what
//! success looks like for its command (checked against HAProxy 2.6):
//!
//! - `set server b/s weight|state|agent-send`: an empty reply; anything else
//!   (`No such server.`, `No such backend.`, a usage line) is an error;
//! - `set server b/s addr`: a report such as `IP changed from '127.0.0.1' to
//!   '10.0.0.7', port changed from '1' to '8080' by 'stats socket command'`, or
//!   `no need to change the addr, no need to change the port by ...`;
//! - `get weight b/s`: `40 (initial 100)`;
//! - `show servers state b`: a version line, a `#` header naming the columns, one
//!   line per server (parsed by column name, so added columns do not break it).
//!
//! The runtime API splits a line into commands at `;` and words at spaces, and
//! treats `\` as an escape, so names and values are checked before they are sent:
//! an edge id from etcd can never inject a second command.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Bound on one whole exchange (connect, write, read to EOF).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest reply read; `show servers state` for a few hundred servers is a few
/// tens of KiB, so anything near this is not a reply we can use.
const MAX_REPLY: u64 = 4 << 20;

/// What can go wrong talking to HAProxy.
#[derive(Debug, Error)]
pub enum HaproxyError {
    /// The runtime API address is neither a unix socket path nor `ip:port`.
    #[error("bad HAProxy runtime API address {0:?}: expected unix:/path, /path or ip:port")]
    BadAddr(String),
    /// A name or value that the runtime API would split or unescape.
    #[error("{0:?} cannot be sent to the HAProxy runtime API (empty, or contains whitespace, `;`, `\\`, quotes or control characters)")]
    InvalidArgument(String),
    /// Connecting, writing or reading failed.
    #[error("HAProxy runtime API at {addr}: {source}")]
    Io {
        addr: RuntimeAddr,
        #[source]
        source: std::io::Error,
    },
    /// The exchange did not finish in time.
    #[error("HAProxy runtime API at {addr} did not answer within {timeout:?}")]
    Timeout {
        addr: RuntimeAddr,
        timeout: Duration,
    },
    /// HAProxy answered a `set` command with an error (its reply, trimmed).
    #[error("HAProxy refused the command: {0}")]
    Refused(String),
    /// No tokio runtime could be built for [`block_on`].
    #[error("cannot start a tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A reply that does not have the expected shape.
    #[error("unexpected reply from HAProxy to `{command}`: {reply}")]
    Unexpected { command: String, reply: String },
}

/// Where the runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeAddr {
    /// A unix socket (`stats socket /run/haproxy/admin.sock`).
    Unix(PathBuf),
    /// A TCP address (`stats socket ipv4@127.0.0.1:9999`).
    Tcp(SocketAddr),
}

impl RuntimeAddr {
    /// Parses `unix:/path`, a bare absolute `/path`, `ip:port` (`[v6]:port`), or
    /// HAProxy's own `ipv4@ip:port` / `ipv6@[ip]:port` / `unix@/path` forms, so the
    /// value given to HAProxy's `stats socket` works here unchanged. Host names are
    /// not resolved: the runtime API is local, and a lookup would be one more thing
    /// to time out.
    pub fn parse(text: &str) -> Result<Self, HaproxyError> {
        let text = text.trim();
        let bad = || HaproxyError::BadAddr(text.to_owned());
        if let Some(path) = text
            .strip_prefix("unix:")
            .or_else(|| text.strip_prefix("unix@"))
        {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(text)));
        }
        let ip_port = text
            .strip_prefix("ipv4@")
            .or_else(|| text.strip_prefix("ipv6@"))
            .unwrap_or(text);
        ip_port.parse().map(Self::Tcp).map_err(|_| bad())
    }
}

impl FromStr for RuntimeAddr {
    type Err = HaproxyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for RuntimeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// A server's administrative state, as `set server … state` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAdmin {
    /// Takes new connections (also leaves maintenance and drain).
    Ready,
    /// Keeps its connections, takes no new ones; still health-checked.
    Drain,
    /// Takes no traffic and is not health-checked (an empty slot).
    Maint,
}

impl ServerAdmin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        }
    }
}

/// A server's operational state (`srv_op_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    /// 0: down (failed checks, or in maintenance).
    Stopped,
    /// 1: coming up (slow start).
    Starting,
    /// 2: up.
    Running,
    /// 3: going down (`health stopping`, or the agent said `stopped`).
    Stopping,
}

impl OpState {
    fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Stopped),
            1 => Some(Self::Starting),
            2 => Some(Self::Running),
            3 => Some(Self::Stopping),
            _ => None,
        }
    }
}

/// A server's administrative flags (`srv_admin_state`, HAProxy's `SRV_ADMF_*`).
///
/// A `server-template … disabled` slot starts at `0x05` (forced + configured
/// maintenance); `state ready` leaves `0x04`: the configuration bit stays but is
/// not maintenance; `state drain` gives `0x0c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminState(pub u32);

impl AdminState {
    /// Forced into maintenance (`state maint`, or the agent's `maint`).
    pub const FORCED_MAINT: u32 = 0x01;
    /// Maintenance inherited from a tracked server.
    pub const INHERITED_MAINT: u32 = 0x02;
    /// Declared `disabled` in the configuration (not maintenance by itself).
    pub const CONFIG_MAINT: u32 = 0x04;
    /// Forced into drain (`state drain`, or the agent's `drain`).
    pub const FORCED_DRAIN: u32 = 0x08;
    /// Drain inherited from a tracked server.
    pub const INHERITED_DRAIN: u32 = 0x10;
    /// Down because its address could not be resolved.
    pub const RESOLVE_MAINT: u32 = 0x20;
    /// HAProxy's own "in maintenance" mask (`SRV_ADMF_MAINT`).
    const MAINT_MASK: u32 = Self::FORCED_MAINT | Self::INHERITED_MAINT | Self::RESOLVE_MAINT;
    /// HAProxy's own "draining" mask (`SRV_ADMF_DRAIN`).
    const DRAIN_MASK: u32 = Self::FORCED_DRAIN | Self::INHERITED_DRAIN;

    /// In maintenance: no traffic, no health checks.
    pub fn is_maint(self) -> bool {
        self.0 & Self::MAINT_MASK != 0
    }

    /// Draining: no new connections.
    pub fn is_drain(self) -> bool {
        self.0 & Self::DRAIN_MASK != 0
    }
}

/// One server as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// `srv_name`, e.g. `edge3`.
    pub name: String,
    /// `srv_addr`; `None` when HAProxy shows none (`-`, an unresolved name).
    pub addr: Option<IpAddr>,
    /// `srv_port`.
    pub port: u16,
    /// `srv_op_state`.
    pub op_state: OpState,
    /// `srv_admin_state`.
    pub admin_state: AdminState,
    /// `srv_uweight`: the current weight.
    pub weight: u32,
    /// `srv_iweight`: the configured weight that `N%` is relative to.
    pub initial_weight: u32,
    /// `srv_check_result`: 0 unknown (no check yet), 1 neutral, 2 failed, 3 passed,
    /// 4 conditionally passed. Leaving maintenance makes a server `Running` before
    /// any check ran, so "running with a passed check" is the stronger signal.
    pub check_result: u32,
}

impl ServerState {
    /// `addr:port`, when the address is known.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.addr.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The last health check passed.
    pub fn check_passed(&self) -> bool {
        self.check_result == 3
    }
}

/// A runtime API client; cheap to clone, holds no connection.
#[derive(Debug, Clone)]
pub struct Client {
    addr: RuntimeAddr,
    timeout: Duration,
}

impl Client {
    /// A client for `addr` with [`DEFAULT_TIMEOUT`].
    pub fn new(addr: RuntimeAddr) -> Self {
        Self {
            addr,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another bound on each exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where this client connects.
    pub fn addr(&self) -> &RuntimeAddr {
        &self.addr
    }

    /// Sends one raw command line and returns HAProxy's whole reply, untrimmed
    /// (HAProxy ends each reply with an empty line). The line must not contain a
    /// newline; `;` in it separates several commands, as HAProxy defines.
    pub async fn command(&self, line: &str) -> Result<String, HaproxyError> {
        if line.contains(['\n', '\r']) {
            return Err(HaproxyError::InvalidArgument(line.to_owned()));
        }
        let exchange = async {
            match &self.addr {
                RuntimeAddr::Unix(path) => exchange(UnixStream::connect(path).await?, line).await,
                RuntimeAddr::Tcp(addr) => exchange(TcpStream::connect(addr).await?, line).await,
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(source)) => Err(HaproxyError::Io {
                addr: self.addr.clone(),
                source,
            }),
            Err(_) => Err(HaproxyError::Timeout {
                addr: self.addr.clone(),
                timeout: self.timeout,
            }),
        }
    }

    /// `set server b/s weight N%`: the weight in percent of the configured one
    /// (HAProxy caps the result at 256). Equivalent to the deprecated `set weight`.
    pub async fn set_weight(
        &self,
        backend: &str,
        server: &str,
        percent: u32,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.set(&format!("set server {target} weight {percent}%"))
            .await
    }

    /// `set server b/s state ready|drain|maint`.
    pub async fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: ServerAdmin,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.set(&format!("set server {target} state {}", state.as_str()))
            .await
    }

    /// `set server b/s addr IP port PORT`: points the server (and its health check)
    /// at a new address.
    pub async fn set_addr(
        &self,
        backend: &str,
        server: &str,
        ip: IpAddr,
        port: u16,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        let reply = self
            .command(&format!("set server {target} addr {ip} port {port}"))
            .await?;
        let reply = reply.trim();
        if addr_change_succeeded(reply) {
            Ok(())
        } else {
            Err(HaproxyError::Refused(reply.to_owned()))
        }
    }

    /// `set server b/s agent-send TEXT`: what the server's agent check sends. HAProxy
    /// sends it verbatim and the runtime API cannot express a newline (`\n` arrives
    /// as `n`), so the agent sees the bare text and must not wait for a line end.
    pub async fn set_agent_send(
        &self,
        backend: &str,
        server: &str,
        text: &str,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        let text = word(text)?;
        self.set(&format!("set server {target} agent-send {text}"))
            .await
    }

    /// `get weight b/s`: (current, initial).
    pub async fn get_weight(
        &self,
        backend: &str,
        server: &str,
    ) -> Result<(u32, u32), HaproxyError> {
        let command = format!("get weight {}", target(backend, server)?);
        let reply = self.command(&command).await?;
        parse_weight(&reply).ok_or_else(|| unexpected(&command, &reply))
    }

    /// `show servers state BACKEND`: every server of the backend.
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerState>, HaproxyError> {
        let command = format!("show servers state {}", word(backend)?);
        let reply = self.command(&command).await?;
        parse_servers_state(&reply).map_err(|e| match e {
            // `Can't find backend.`: an answer, not garbage.
            ParseError::NotAState => HaproxyError::Refused(reply.trim().to_owned()),
            ParseError::Malformed => unexpected(&command, &reply),
        })
    }

    /// A command whose only successful reply is an empty one.
    /// `enable agent b/s` / `disable agent b/s`: whether the server's agent check
    /// runs. An empty slot's agent is disabled, because HAProxy runs agent checks on
    /// servers in maintenance too and a `ready` reply would take the slot out of it.
    pub async fn set_agent(
        &self,
        backend: &str,
        server: &str,
        enabled: bool,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        let verb = if enabled { "enable" } else { "disable" };
        self.set(&format!("{verb} agent {target}")).await
    }

    async fn set(&self, line: &str) -> Result<(), HaproxyError> {
        let reply = self.command(line).await?;
        let reply = reply.trim();
        if reply.is_empty() {
            Ok(())
        } else {
            Err(HaproxyError::Refused(reply.to_owned()))
        }
    }
}

/// Runs one of [`Client`]'s futures to completion on a fresh current-thread
/// runtime, for synchronous callers (tools, the end-to-end tests). Must not be
/// called from inside a tokio runtime.
pub fn block_on<T>(
    future: impl Future<Output = Result<T, HaproxyError>>,
) -> Result<T, HaproxyError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HaproxyError::Runtime)?;
    runtime.block_on(future)
}

/// Writes the command and reads to EOF: in non-interactive mode HAProxy closes the
/// connection after its reply, which is the only end-of-reply marker there is.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    line: &str,
) -> std::io::Result<String> {
    stream.write_all(format!("{line}\n").as_bytes()).await?;
    stream.flush().await?;
    let mut reply = Vec::new();
    (&mut stream)
        .take(MAX_REPLY)
        .read_to_end(&mut reply)
        .await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// `backend/server`, both checked.
fn target(backend: &str, server: &str) -> Result<String, HaproxyError> {
    Ok(format!("{}/{}", word(backend)?, word(server)?))
}

/// A value that the runtime API passes through as one word, unchanged.
fn word(text: &str) -> Result<&str, HaproxyError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, ';' | '\\' | '"' | '\'');
    if text.is_empty() || text.contains(bad) {
        Err(HaproxyError::InvalidArgument(text.to_owned()))
    } else {
        Ok(text)
    }
}

fn unexpected(command: &str, reply: &str) -> HaproxyError {
    HaproxyError::Unexpected {
        command: command.to_owned(),
        reply: reply.trim().to_owned(),
    }
}

/// Whether a (trimmed) reply to `set server … addr` reports success. HAProxy
/// reports each part (`IP changed from …`, `no need to change the addr`, the same
/// for the port) and ends with `by 'stats socket command'`; an error can follow a
/// successful part (`no need to change the addr, problem converting port 'x' to an
/// int by …`), so every part must be a success.
fn addr_change_succeeded(reply: &str) -> bool {
    let Some((parts, _by)) = reply.rsplit_once(" by '") else {
        return false;
    };
    parts.split(", ").all(|part| {
        part.starts_with("IP changed from '")
            || part.starts_with("port changed from '")
            || part == "no need to change the addr"
            || part == "no need to change the port"
    })
}

/// `40 (initial 100)` → (40, 100).
fn parse_weight(reply: &str) -> Option<(u32, u32)> {
    let (current, rest) = reply.trim().split_once(" (initial ")?;
    let initial = rest.strip_suffix(')')?;
    Some((current.parse().ok()?, initial.parse().ok()?))
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    /// Not a servers-state dump at all (HAProxy's error text).
    NotAState,
    /// A dump with missing columns or unparsable values.
    Malformed,
}

/// Parses `show servers state` output (format version 1) by column name.
fn parse_servers_state(reply: &str) -> Result<Vec<ServerState>, ParseError> {
    let mut lines = reply.lines();
    if lines.next().map(str::trim) != Some("1") {
        return Err(ParseError::NotAState);
    }
    let header: Vec<&str> = lines
        .next()
        .and_then(|l| l.strip_prefix('#'))
        .ok_or(ParseError::Malformed)?
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(ParseError::Malformed)
    };
    let name = column("srv_name")?;
    let addr = column("srv_addr")?;
    let port = column("srv_port")?;
    let op_state = column("srv_op_state")?;
    let admin_state = column("srv_admin_state")?;
    let uweight = column("srv_uweight")?;
    let iweight = column("srv_iweight")?;
    let check_result = column("srv_check_result")?;

    let mut servers = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize| fields.get(i).copied().ok_or(ParseError::Malformed);
        let number = |i: usize| -> Result<u32, ParseError> {
            field(i)?.parse().map_err(|_| ParseError::Malformed)
        };
        servers.push(ServerState {
            name: field(name)?.to_owned(),
            addr: field(addr)?.parse().ok(),
            port: field(port)?.parse().map_err(|_| ParseError::Malformed)?,
            op_state: OpState::from_code(number(op_state)?).ok_or(ParseError::Malformed)?,
            admin_state: AdminState(number(admin_state)?),
            weight: number(uweight)?,
            initial_weight: number(iweight)?,
            check_result: number(check_result)?,
        });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show servers state edges` from HAProxy 2.6.12 with haproxy/haproxy.cfg
    /// (3 slots): edge1 filled and up, drained, at 40%; edge2 and edge3 empty.
    const SERVERS_STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 edges 1 edge1 127.0.0.1 2 12 40 100 0 15 3 2 6 22 0 0 - 18001 - 0 0 - 127.0.0.1 19300\n3 edges 2 edge2 127.0.0.1 0 5 100 100 6 1 0 0 14 22 0 0 - 1 - 0 0 - 127.0.0.1 19300\n3 edges 3 edge3 127.0.0.1 0 5 100 100 6 1 0 0 14 22 0 0 - 1 - 0 0 - 127.0.0.1 19300\n\n";

    #[test]
    fn parses_servers_state_by_column_name() {
        let servers = parse_servers_state(SERVERS_STATE).unwrap();
        assert_eq!(servers.len(), 3);
        let edge1 = &servers[0];
        assert_eq!(edge1.name, "edge1");
        assert_eq!(
            edge1.socket_addr(),
            Some("127.0.0.1:18001".parse().unwrap())
        );
        assert_eq!(edge1.op_state, OpState::Running);
        assert!(edge1.admin_state.is_drain() && !edge1.admin_state.is_maint());
        assert_eq!((edge1.weight, edge1.initial_weight), (40, 100));
        assert!(edge1.check_passed());
        let edge2 = &servers[1];
        assert_eq!(edge2.port, 1);
        assert_eq!(edge2.op_state, OpState::Stopped);
        assert!(edge2.admin_state.is_maint() && !edge2.admin_state.is_drain());
        assert!(!edge2.check_passed());
    }

    #[test]
    fn columns_are_found_by_name_not_position() {
        let reordered = "1\n# srv_port srv_name srv_iweight srv_uweight srv_admin_state srv_op_state srv_addr srv_check_result extra\n8080 e1 100 70 4 2 10.0.0.7 3 whatever\n";
        let servers = parse_servers_state(reordered).unwrap();
        assert_eq!(
            servers[0],
            ServerState {
                name: "e1".into(),
                addr: Some("10.0.0.7".parse().unwrap()),
                port: 8080,
                op_state: OpState::Running,
                admin_state: AdminState(4),
                weight: 70,
                initial_weight: 100,
                check_result: 3,
            }
        );
        assert!(
            !servers[0].admin_state.is_maint(),
            "0x04 alone is no maintenance"
        );
    }

    #[test]
    fn servers_state_errors() {
        // Unknown backend, exactly as HAProxy 2.6 says it.
        assert_eq!(
            parse_servers_state("Can't find backend.\n\n"),
            Err(ParseError::NotAState)
        );
        // An empty backend (a `listen` without servers) is a valid empty dump.
        let empty = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\n";
        assert_eq!(parse_servers_state(empty), Ok(vec![]));
        assert_eq!(
            parse_servers_state("1\n# srv_name srv_addr\ne1 10.0.0.7\n"),
            Err(ParseError::Malformed)
        );
        let short = "1\n# srv_name srv_addr srv_port srv_op_state srv_admin_state srv_uweight srv_iweight srv_check_result\ne1 10.0.0.7 8080\n";
        assert_eq!(parse_servers_state(short), Err(ParseError::Malformed));
        let bad_state = SERVERS_STATE.replace("edge1 127.0.0.1 2 12", "edge1 127.0.0.1 9 12");
        assert_eq!(parse_servers_state(&bad_state), Err(ParseError::Malformed));
    }

    #[test]
    fn parses_get_weight() {
        assert_eq!(parse_weight("40 (initial 100)\n\n"), Some((40, 100)));
        assert_eq!(parse_weight("256 (initial 100)\n\n"), Some((256, 100)));
        assert_eq!(parse_weight("No such server.\n\n"), None);
        assert_eq!(parse_weight("Require 'backend/server'.\n\n"), None);
    }

    #[test]
    fn recognises_addr_change_replies() {
        // Real HAProxy 2.6.12 replies to `set server edges/edge1 addr …`.
        for ok in [
            "IP changed from '127.0.0.1' to '::1', no need to change the port by 'stats socket command'",
            "IP changed from '127.0.0.1' to '10.0.0.7', port changed from '1' to '8080' by 'stats socket command'",
            "no need to change the addr, port changed from '1' to '18001' by 'stats socket command'",
            "no need to change the addr, no need to change the port by 'stats socket command'",
            "no need to change the addr by 'stats socket command'",
        ] {
            assert!(addr_change_succeeded(ok), "{ok}");
        }
        for refused in [
            "No such server.",
            "No such backend.",
            "Invalid addr '1.2.3' by 'stats socket command'",
            "no need to change the addr, problem converting port 'x' to an int by 'stats socket command'",
            "",
        ] {
            assert!(!addr_change_succeeded(refused), "{refused}");
        }
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(
            RuntimeAddr::parse("unix:/run/haproxy/admin.sock").unwrap(),
            RuntimeAddr::Unix("/run/haproxy/admin.sock".into())
        );
        assert_eq!(
            RuntimeAddr::parse("/run/haproxy/admin.sock").unwrap(),
            RuntimeAddr::Unix("/run/haproxy/admin.sock".into())
        );
        assert_eq!(
            RuntimeAddr::parse("127.0.0.1:9999").unwrap(),
            RuntimeAddr::Tcp("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(
            RuntimeAddr::parse("ipv4@127.0.0.1:9999").unwrap(),
            RuntimeAddr::Tcp("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(
            RuntimeAddr::parse("ipv6@[::1]:9999").unwrap(),
            RuntimeAddr::Tcp("[::1]:9999".parse().unwrap())
        );
        for bad in [
            "",
            "unix:",
            "localhost:9999",
            "127.0.0.1",
            "tcp://127.0.0.1:1",
        ] {
            assert!(RuntimeAddr::parse(bad).is_err(), "{bad}");
        }
        let addr = RuntimeAddr::parse("unix:/tmp/a.sock").unwrap();
        assert_eq!(RuntimeAddr::parse(&addr.to_string()).unwrap(), addr);
    }

    #[test]
    fn rejects_words_that_the_cli_would_split() {
        assert!(word("edge-8080").is_ok());
        for bad in [
            "",
            "a b",
            "a;shutdown frontend x",
            "a\\n",
            "a\"",
            "a\tb",
            "a\nb",
        ] {
            assert!(word(bad).is_err(), "{bad:?}");
        }
        assert!(target("edges", "edge1").is_ok());
        assert!(target("edges", "edge1 state maint").is_err());
    }

    /// A stand-in for HAProxy: accepts `replies.len()` connections, answers each
    /// with the next reply and closes; returns the lines it received.
    async fn fake_haproxy(
        replies: Vec<&'static str>,
    ) -> (RuntimeAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = RuntimeAddr::Tcp(listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for reply in replies {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                seen.push(String::from_utf8(line).unwrap());
                stream.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        (addr, task)
    }

    #[tokio::test]
    async fn one_connection_per_command_and_reply_checks() {
        let (addr, task) = fake_haproxy(vec![
            "\n",
            "No such server.\n\n",
            "no need to change the addr, port changed from '1' to '8080' by 'stats socket command'\n\n",
            "40 (initial 100)\n\n",
            "\n",
            "\n",
        ])
        .await;
        let client = Client::new(addr);
        client.set_weight("edges", "edge1", 40).await.unwrap();
        let refused = client
            .set_state("edges", "nope", ServerAdmin::Drain)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, HaproxyError::Refused(r) if r == "No such server."),
            "{refused}"
        );
        client
            .set_addr("edges", "edge1", "127.0.0.1".parse().unwrap(), 8080)
            .await
            .unwrap();
        assert_eq!(
            client.get_weight("edges", "edge1").await.unwrap(),
            (40, 100)
        );
        client
            .set_agent_send("edges", "edge1", "edge-8080")
            .await
            .unwrap();
        client
            .set_state("edges", "edge1", ServerAdmin::Maint)
            .await
            .unwrap();
        assert!(client
            .set_agent_send("edges", "edge1", "x;y")
            .await
            .is_err());
        assert_eq!(
            task.await.unwrap(),
            [
                "set server edges/edge1 weight 40%",
                "set server edges/nope state drain",
                "set server edges/edge1 addr 127.0.0.1 port 8080",
                "get weight edges/edge1",
                "set server edges/edge1 agent-send edge-8080",
                "set server edges/edge1 state maint",
            ]
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_closed_port_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = RuntimeAddr::Tcp(listener.local_addr().unwrap());
        // Accepts and keeps the connection open without answering.
        let hold = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
        let client = Client::new(addr).with_timeout(Duration::from_millis(200));
        let err = client.command("show info").await.unwrap_err();
        assert!(matches!(err, HaproxyError::Timeout { .. }), "{err}");
        hold.abort();

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = Client::new(RuntimeAddr::Tcp(closed))
            .command("show info")
            .await
            .unwrap_err();
        assert!(matches!(err, HaproxyError::Io { .. }), "{err}");
        assert!(Client::new(RuntimeAddr::Tcp(closed))
            .command("a\nb")
            .await
            .is_err());
    }
}
