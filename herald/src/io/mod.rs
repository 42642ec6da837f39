//! herald's hands and ears: everything that talks to another process.
//!
//! - [`agent`]: the HAProxy agent-check server; [`haproxy`]: the runtime API client;
//!   [`push`]: carrying the [`slots`](crate::policy::slots) plan out over it;
//! - [`election`]: leadership through etcd;
//! - [`actuate`]: carrying out scaling decisions (dry run, exec hook, AWS);
//!   [`aws`]: the EC2 Auto Scaling calls; [`lifecycle`]: draining the instances the
//!   termination hook holds;
//! - [`http`]: `/status`, `/metrics` and the live status page.

pub mod actuate;
pub mod agent;
pub mod aws;
pub mod election;
pub mod haproxy;
pub mod http;
pub mod lifecycle;
pub mod push;
