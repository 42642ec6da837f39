//! [`Publisher`]: one ZeroMQ PUSH socket per relay, each publish sent to the relay
//! that owns its channel.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pushfleet_protocol::publish::{self, PublishError};
use pushfleet_protocol::shard;
use zmq::SocketEvent;

use super::EtcdRelays;

/// Messages a PUSH socket holds for a relay that is not taking them yet.
pub const SEND_QUEUE: i32 = 100_000;
/// Longest wait to flush queued messages when the publisher is dropped.
pub const LINGER: Duration = Duration::from_secs(5);
/// Default bound on the data frame, as the relay's default.
pub const MAX_DATA: usize = pushfleet_protocol::publish::DEFAULT_MAX_DATA;

/// Why a publish did not go out.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("invalid publish: {0}")]
    Invalid(#[from] PublishError),
    #[error("no relays known")]
    NoRelays,
    #[error("the queue for relay {0} is full (is it down or overloaded?)")]
    Busy(String),
    #[error("relays not reachable within {1:?}: {0:?}")]
    Unreachable(Vec<String>, Duration),
    #[error("ZeroMQ: {0}")]
    Zmq(#[from] zmq::Error),
}

struct Relay {
    socket: zmq::Socket,
    monitor: zmq::Socket,
    connected: bool,
}

/// Sends publishes to the relays that own their channels.
pub struct Publisher {
    ctx: zmq::Context,
    relays: Vec<String>,
    sockets: HashMap<String, Relay>,
    send_timeout: Duration,
    max_data: usize,
    follow: Option<EtcdRelays>,
    monitors: u64,
}

impl Publisher {
    /// A publisher for a fixed relay set (publish endpoints, `tcp://host:port`).
    pub fn new(relays: Vec<String>) -> Result<Self, PublisherError> {
        let mut p = Self {
            ctx: zmq::Context::new(),
            relays: Vec::new(),
            sockets: HashMap::new(),
            send_timeout: Duration::ZERO,
            max_data: MAX_DATA,
            follow: None,
            monitors: 0,
        };
        p.set_relays(relays)?;
        Ok(p)
    }

    /// A publisher that follows the relays registered in etcd.
    pub fn following(relays: EtcdRelays) -> Result<Self, PublisherError> {
        let mut p = Self::new(relays.current())?;
        p.follow = Some(relays);
        Ok(p)
    }

    /// How long a publish may wait for room in a full queue (default: not at all).
    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.send_timeout = timeout;
        for relay in self.sockets.values() {
            if let Err(e) = relay.socket.set_sndtimeo(self.sndtimeo()) {
                tracing::warn!(error = %e, "cannot set the send timeout");
            }
        }
    }

    /// `ZMQ_SNDTIMEO` for the current send timeout (-1: wait forever is never used).
    fn sndtimeo(&self) -> i32 {
        self.send_timeout.as_millis().min(i32::MAX as u128) as i32
    }

    /// Largest data frame accepted (default [`MAX_DATA`]; keep it at the relays' value).
    pub fn set_max_data(&mut self, max_data: usize) {
        self.max_data = max_data;
    }

    /// Replaces the relay set: connects to new relays, closes gone ones.
    pub fn set_relays(&mut self, mut relays: Vec<String>) -> Result<(), PublisherError> {
        relays.sort();
        relays.dedup();
        self.sockets.retain(|endpoint, _| relays.contains(endpoint));
        for endpoint in &relays {
            if self.sockets.contains_key(endpoint) {
                continue;
            }
            let socket = self.ctx.socket(zmq::PUSH)?;
            socket.set_sndhwm(SEND_QUEUE)?;
            socket.set_sndtimeo(self.sndtimeo())?;
            socket.set_linger(LINGER.as_millis() as i32)?;
            self.monitors += 1;
            let monitor_endpoint =
                format!("inproc://pushfleet-publisher-monitor-{}", self.monitors);
            socket.monitor(&monitor_endpoint, SocketEvent::CONNECTED.to_raw() as i32)?;
            let monitor = self.ctx.socket(zmq::PAIR)?;
            monitor.connect(&monitor_endpoint)?;
            socket.connect(endpoint)?;
            self.sockets.insert(
                endpoint.clone(),
                Relay {
                    socket,
                    monitor,
                    connected: false,
                },
            );
        }
        self.relays = relays;
        Ok(())
    }

    /// The relay set in use.
    pub fn relays(&self) -> &[String] {
        &self.relays
    }

    /// The relay that owns `channel`.
    pub fn owner(&self, channel: &str) -> Option<&str> {
        shard::owner(&self.relays, channel).map(|i| self.relays[i].as_str())
    }

    /// Waits until every relay has accepted a connection, so that a one-shot
    /// publish to a relay that is not there fails loudly instead of vanishing.
    pub fn wait_connected(&mut self, timeout: Duration) -> Result<(), PublisherError> {
        self.refresh();
        if self.relays.is_empty() {
            return Err(PublisherError::NoRelays);
        }
        let deadline = Instant::now() + timeout;
        loop {
            for relay in self.sockets.values_mut() {
                while let Ok(event) = relay.monitor.recv_msg(zmq::DONTWAIT) {
                    if event.len() >= 2
                        && u16::from_ne_bytes([event[0], event[1]])
                            == SocketEvent::CONNECTED.to_raw()
                    {
                        relay.connected = true;
                    }
                }
            }
            let missing: Vec<String> = self
                .sockets
                .iter()
                .filter(|(_, r)| !r.connected)
                .map(|(e, _)| e.clone())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PublisherError::Unreachable(missing, timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn refresh(&mut self) {
        let Some(update) = self.follow.as_mut().and_then(EtcdRelays::changed) else {
            return;
        };
        if let Err(e) = self.set_relays(update) {
            tracing::warn!(error = %e, "cannot follow the new relay set");
        }
    }

    /// Validates and sends one publish to the relay that owns `channel`.
    pub fn publish(
        &mut self,
        channel: &str,
        event: &str,
        data: &str,
    ) -> Result<(), PublisherError> {
        let frames = [channel.as_bytes(), event.as_bytes(), data.as_bytes()];
        publish::parse(&frames, self.max_data)?;
        self.refresh();
        let owner = self
            .owner(channel)
            .ok_or(PublisherError::NoRelays)?
            .to_owned();
        let relay = self.sockets.get(&owner).ok_or(PublisherError::NoRelays)?;
        let socket = &relay.socket;
        let first_flags = if self.send_timeout.is_zero() {
            zmq::SNDMORE | zmq::DONTWAIT
        } else {
            // The socket's ZMQ_SNDTIMEO bounds the wait (set with the timeout).
            zmq::SNDMORE
        };
        match socket.send(frames[0], first_flags) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Err(PublisherError::Busy(owner)),
            Err(e) => return Err(e.into()),
        }
        // Once the first frame is in, libzmq takes the rest of the message whole.
        socket.send(frames[1], zmq::SNDMORE)?;
        socket.send(frames[2], 0)?;
        Ok(())
    }
}
