//! Carrying out scaling decisions, behind one interface: dry-run (log only), an exec
//! hook (runs a command with the decision in its environment), or EC2 Auto Scaling
//! ([`crate::io::aws`]).
//!
//! The exec hook runs `sh -c <command>` with:
//! - `PUSHFLEET_SCALE_ACTION`: `scale_out` (add an edge) or `release` (an edge has
//!   drained and left; release its machine);
//! - `PUSHFLEET_EDGE_ID`: the edge released (empty for `scale_out`);
//! - `PUSHFLEET_SCALE_REASON`: why, in words.
//!
//! A command that fails or runs longer than [`EXEC_TIMEOUT`] is logged and counted;
//! the scaler stops waiting for it after its action timeout.

use std::time::Duration;

use tokio::process::Command;
use tracing::{info, warn};

use crate::io::aws::AutoScaling;

/// Longest an exec hook may run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// How decisions are carried out.
#[derive(Debug, Clone)]
pub enum Actuator {
    /// Decide and log, change nothing.
    DryRun,
    /// Run this shell command.
    Exec(String),
    /// Change the edges' Auto Scaling group: desired capacity + 1 to scale out,
    /// terminate the drained instance (edge id = instance id) to release.
    Aws(AutoScaling),
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ScaleOut,
    Release,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleOut => "scale_out",
            Self::Release => "release",
        }
    }
}

impl Actuator {
    /// Carries out `step`; `Ok(false)` for a dry run.
    pub async fn run(&self, step: Step, edge: &str, reason: &str) -> Result<bool, String> {
        let command = match self {
            Self::DryRun => {
                info!(step = step.as_str(), %edge, %reason, "dry run: would act");
                return Ok(false);
            }
            Self::Exec(command) => command,
            Self::Aws(group) => {
                let done = match step {
                    Step::ScaleOut => group.scale_out().await,
                    Step::Release => group.release(edge).await,
                };
                return match done {
                    Ok(what) => {
                        info!(step = step.as_str(), %edge, group = group.group(), %what, "auto scaling");
                        Ok(true)
                    }
                    Err(e) => {
                        warn!(step = step.as_str(), %edge, error = %e, "auto scaling call failed");
                        Err(e)
                    }
                };
            }
        };
        let mut child = Command::new("sh");
        child
            .arg("-c")
            .arg(command)
            .env("PUSHFLEET_SCALE_ACTION", step.as_str())
            .env("PUSHFLEET_EDGE_ID", edge)
            .env("PUSHFLEET_SCALE_REASON", reason)
            .kill_on_drop(true);
        let status = tokio::time::timeout(EXEC_TIMEOUT, child.status())
            .await
            .map_err(|_| format!("the exec hook ran longer than {EXEC_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot run the exec hook: {e}"))?;
        if status.success() {
            info!(step = step.as_str(), %edge, "exec hook done");
            Ok(true)
        } else {
            warn!(step = step.as_str(), %edge, %status, "exec hook failed");
            Err(format!("the exec hook exited with {status}"))
        }
    }
}
