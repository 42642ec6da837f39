//! The leader's hands on HAProxy: executes the [`Slots`] plan over the runtime API
//! of every configured HAProxy, so weights and states change at once (agent checks
//! only poll every `agent-inter`) and edges join and leave without a reload.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::io::haproxy::{Client, ServerAdmin};
use crate::policy::score::EdgeView;
use crate::policy::slots::{Command, Existing, Slots};

/// Every this many rounds the leader reads each HAProxy's servers back and repairs
/// slots that are out of line (a restarted HAProxy comes back with every slot empty).
pub const VERIFY_EVERY: u64 = 10;

/// Runtime API targets and the slot table they share.
pub struct Pusher {
    clients: Vec<Client>,
    backend: String,
    slots: Slots,
    adopted: bool,
    rounds: u64,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub pushed: u64,
    pub failed: u64,
}

impl Pusher {
    pub fn new(clients: Vec<Client>, backend: String, slots: Slots) -> Self {
        Self {
            clients,
            backend,
            slots,
            adopted: false,
            rounds: 0,
        }
    }

    /// Forget what was pushed: the next round (on becoming leader again) first adopts
    /// what HAProxy shows, then pushes everything.
    pub fn reset(&mut self) {
        self.adopted = false;
    }

    /// Slot → edge.
    pub fn table(&self) -> BTreeMap<String, String> {
        self.slots.table()
    }

    /// One round: adopt if needed, plan, execute.
    pub async fn round(&mut self, views: &BTreeMap<String, EdgeView>) -> Outcome {
        let mut outcome = Outcome::default();
        if !self.adopted {
            let Some(first) = self.clients.first() else {
                return outcome;
            };
            match first.servers(&self.backend).await {
                Ok(servers) => {
                    self.slots.adopt(&existing(&servers), views);
                    self.adopted = true;
                    info!(slots = ?self.slots.table(), "adopted HAProxy's slots");
                }
                Err(e) => {
                    warn!(error = %e, "cannot read HAProxy's servers; retrying next round");
                    outcome.failed += 1;
                    return outcome;
                }
            }
        }
        self.rounds += 1;
        if self.rounds.is_multiple_of(VERIFY_EVERY) {
            for client in &self.clients {
                match client.servers(&self.backend).await {
                    Ok(servers) => {
                        let repaired = self.slots.verify(&existing(&servers), views);
                        if repaired > 0 {
                            warn!(runtime = %client.addr(), repaired, "HAProxy lost slots (restarted?): filling them again");
                        }
                    }
                    Err(e) => {
                        warn!(runtime = %client.addr(), error = %e, "cannot read HAProxy's servers to verify them");
                        outcome.failed += 1;
                    }
                }
            }
        }
        let plan = self.slots.plan(views);
        for command in plan {
            let mut ok = true;
            for client in &self.clients {
                if let Err(e) = execute(client, &self.backend, &command).await {
                    warn!(runtime = %client.addr(), ?command, error = %e, "HAProxy refused a change");
                    ok = false;
                }
            }
            if ok {
                outcome.pushed += 1;
            } else {
                outcome.failed += 1;
                self.slots.failed(&command);
            }
        }
        outcome
    }
}

/// HAProxy's servers as slots.
fn existing(servers: &[crate::io::haproxy::ServerState]) -> Vec<Existing> {
    servers
        .iter()
        .filter_map(|s| {
            Some(Existing {
                slot: s.name.clone(),
                addr: s.socket_addr()?,
                maint: s.admin_state.is_maint(),
            })
        })
        .collect()
}

async fn execute(
    client: &Client,
    backend: &str,
    command: &Command,
) -> Result<(), crate::io::haproxy::HaproxyError> {
    match command {
        Command::Fill {
            slot,
            edge,
            ip,
            port,
        } => {
            client.set_addr(backend, slot, *ip, *port).await?;
            // The agent check of this slot names the edge, for every herald instance.
            // (The runtime API cannot carry a newline; the agent server copes.)
            client.set_agent_send(backend, slot, edge).await?;
            client.set_agent(backend, slot, true).await?;
            info!(%slot, %edge, %ip, port, "edge placed in HAProxy");
            Ok(())
        }
        Command::Weight { slot, percent } => client.set_weight(backend, slot, *percent).await,
        Command::Ready { slot } => client.set_state(backend, slot, ServerAdmin::Ready).await,
        Command::Drain { slot } => client.set_state(backend, slot, ServerAdmin::Drain).await,
        Command::Empty { slot } => {
            info!(%slot, "edge gone: slot back to maintenance");
            client.set_state(backend, slot, ServerAdmin::Maint).await?;
            // Its agent would still name the gone edge; silence it.
            client.set_agent(backend, slot, false).await
        }
    }
}
