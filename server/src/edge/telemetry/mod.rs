//! What the edge tells about itself.
//!
//! - [`metrics`]: the counters and gauges, written by the code that counts;
//! - [`catalogue`]: the one table that names them and renders `/stats`,
//!   `GET /metrics`, StatsD and the load report's totals;
//! - [`histogram`]: per-worker publish-to-socket latency;
//! - [`reporter`]: the once-a-second latency window and StatsD report;
//! - [`load`]: the load report kept in etcd for herald.

pub mod catalogue;
pub mod histogram;
pub mod load;
pub mod metrics;
pub mod reporter;
