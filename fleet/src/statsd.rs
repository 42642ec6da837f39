//! The StatsD client every binary uses: cadence's queuing sink in front of a
//! non-blocking UDP sink, so a metric call never waits on the network.
//!
//! One datagram per metric, sent by the queue's own thread: a buffered sink sends
//! only when its 512-byte buffer fills, so a process that emits a few metrics a
//! second (a relay's gauges, herald) reached StatsD late and in clumps, which made
//! a series look missing to an alert. The cost is one `sendto` per metric on a
//! thread that is not serving anyone.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use cadence::{QueuingMetricSink, StatsdClient, UdpMetricSink};

/// Capacity of the client's in-memory queue; when full, metrics are dropped rather
/// than slowing the caller.
pub const STATSD_QUEUE: usize = 65_536;

/// A client sending to `addr` with every name under `prefix`, or `None` without an address.
pub fn client(addr: Option<SocketAddr>, prefix: &str) -> anyhow::Result<Option<Arc<StatsdClient>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").context("binding the StatsD socket")?;
    socket.set_nonblocking(true)?;
    let sink = UdpMetricSink::from(addr, socket).context("creating the StatsD sink")?;
    let queuing = QueuingMetricSink::with_capacity(sink, STATSD_QUEUE);
    Ok(Some(Arc::new(StatsdClient::from_sink(prefix, queuing))))
}

/// A name part safe for StatsD/Graphite paths: dots would split it into levels.
pub fn path_part(name: &str) -> String {
    name.replace(['.', ' ', ':', '/'], "_")
}
