//! Fleet membership in HAProxy without reloads: which `server-template` slot holds
//! which edge, and the runtime API commands that make HAProxy match herald's view.
//!
//! HAProxy's backend declares N placeholder servers (`server-template edge 1-N`,
//! disabled). When an edge appears in etcd, the leader fills a free slot: its
//! address, its `agent-send` (the edge id, so any herald instance can answer that
//! slot's agent check), its weight and state. When the edge vanishes, the slot goes
//! to maintenance and is free again. A new leader first adopts the slots HAProxy
//! already has filled (matching edges by address), so a leader change moves nothing.
//!
//! This module only plans; `push` executes the plan against the runtime API and
//! reports failures back, so a failed command is planned again next round.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use tracing::warn;

use crate::policy::score::{EdgeView, Verdict};

/// A runtime API action on one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Command {
    /// Point the slot at the edge and have its agent check send the edge id.
    Fill {
        slot: String,
        edge: String,
        ip: IpAddr,
        port: u16,
    },
    /// Weight in percent of the configured weight.
    Weight { slot: String, percent: u32 },
    /// Take new connections.
    Ready { slot: String },
    /// Keep existing connections, take no new ones.
    Drain { slot: String },
    /// The edge is gone: maintenance, slot free.
    Empty { slot: String },
}

impl Command {
    pub fn slot(&self) -> &str {
        match self {
            Self::Fill { slot, .. }
            | Self::Weight { slot, .. }
            | Self::Ready { slot }
            | Self::Drain { slot }
            | Self::Empty { slot } => slot,
        }
    }
}

#[derive(Debug, Clone)]
struct Assignment {
    edge: String,
    /// HAProxy has this slot pointed at the edge (false: send `Fill` again).
    filled: bool,
    /// What HAProxy was last told successfully.
    pushed: Option<(Verdict, u32)>,
}

/// A slot as HAProxy reports it (for adoption).
#[derive(Debug, Clone)]
pub struct Existing {
    pub slot: String,
    pub addr: SocketAddr,
    /// In maintenance (an empty slot).
    pub maint: bool,
}

/// The slot table.
#[derive(Debug)]
pub struct Slots {
    names: Vec<String>,
    assigned: BTreeMap<String, Assignment>,
    /// Edges that found no free slot (the template is too small).
    pub unplaced: Vec<String>,
}

impl Slots {
    /// Slots `<prefix>1` … `<prefix><count>`, as `server-template <prefix> 1-<count>` names them.
    pub fn new(prefix: &str, count: u32) -> Self {
        Self {
            names: (1..=count).map(|i| format!("{prefix}{i}")).collect(),
            assigned: BTreeMap::new(),
            unplaced: Vec::new(),
        }
    }

    /// Takes over the slots HAProxy already has filled with edges herald knows.
    pub fn adopt(&mut self, existing: &[Existing], views: &BTreeMap<String, EdgeView>) {
        self.assigned.clear();
        for slot in existing.iter().filter(|e| !e.maint) {
            let owner = views
                .values()
                .find(|v| v.address.parse::<SocketAddr>().ok() == Some(slot.addr));
            if let Some(view) = owner {
                self.assigned.insert(
                    slot.slot.clone(),
                    Assignment {
                        edge: view.id.clone(),
                        filled: true,
                        pushed: None,
                    },
                );
            }
        }
    }

    /// The slot holding `edge`.
    pub fn slot_of(&self, edge: &str) -> Option<&str> {
        self.assigned
            .iter()
            .find(|(_, a)| a.edge == edge)
            .map(|(s, _)| s.as_str())
    }

    /// Plans the commands that bring HAProxy in line with `views`.
    pub fn plan(&mut self, views: &BTreeMap<String, EdgeView>) -> Vec<Command> {
        let mut commands = Vec::new();
        // Gone edges first: their slots may be needed for new ones.
        let gone: Vec<String> = self
            .assigned
            .iter()
            .filter(|(_, a)| !views.contains_key(&a.edge))
            .map(|(s, _)| s.clone())
            .collect();
        for slot in gone {
            self.assigned.remove(&slot);
            commands.push(Command::Empty { slot });
        }
        self.unplaced.clear();
        for view in views.values() {
            if self.slot_of(&view.id).is_some() {
                continue;
            }
            if view.address.parse::<SocketAddr>().is_err() {
                warn!(edge = %view.id, address = %view.address, "an edge address must be ip:port to put it in HAProxy");
                continue;
            }
            let Some(slot) = self
                .names
                .iter()
                .find(|n| !self.assigned.contains_key(*n))
                .cloned()
            else {
                self.unplaced.push(view.id.clone());
                continue;
            };
            self.assigned.insert(
                slot,
                Assignment {
                    edge: view.id.clone(),
                    filled: false,
                    pushed: None,
                },
            );
        }
        if !self.unplaced.is_empty() {
            warn!(edges = ?self.unplaced, "no free server-template slot: raise the slot count");
        }
        for (slot, assignment) in &mut self.assigned {
            let Some(view) = views.get(&assignment.edge) else {
                continue;
            };
            if !assignment.filled {
                let Ok(addr) = view.address.parse::<SocketAddr>() else {
                    continue;
                };
                commands.push(Command::Fill {
                    slot: slot.clone(),
                    edge: view.id.clone(),
                    ip: addr.ip(),
                    port: addr.port(),
                });
                assignment.filled = true;
                assignment.pushed = None;
            }
            let wanted = (view.verdict, view.percent);
            if assignment.pushed == Some(wanted) {
                continue;
            }
            match view.verdict {
                Verdict::Drain => commands.push(Command::Drain { slot: slot.clone() }),
                Verdict::Ready | Verdict::Stale => {
                    commands.push(Command::Weight {
                        slot: slot.clone(),
                        percent: view.percent,
                    });
                    commands.push(Command::Ready { slot: slot.clone() });
                }
            }
            assignment.pushed = Some(wanted);
        }
        commands
    }

    /// A command failed: plan that slot's state again next round.
    pub fn failed(&mut self, command: &Command) {
        if let Some(a) = self.assigned.get_mut(command.slot()) {
            a.pushed = None;
            if matches!(command, Command::Fill { .. }) {
                a.filled = false;
            }
        }
    }

    /// Checks the table against what one HAProxy shows: a slot of ours that it has
    /// pointed elsewhere or in maintenance (HAProxy restarted, or someone changed it
    /// by hand) is filled and pushed again next round, in the same slot. Returns how
    /// many slots were out of line.
    pub fn verify(&mut self, shown: &[Existing], views: &BTreeMap<String, EdgeView>) -> usize {
        let mut repaired = 0;
        for (slot, assignment) in &mut self.assigned {
            let Some(view) = views.get(&assignment.edge) else {
                continue;
            };
            let Ok(addr) = view.address.parse::<SocketAddr>() else {
                continue;
            };
            let in_line = shown
                .iter()
                .find(|e| &e.slot == slot)
                .is_some_and(|e| e.addr == addr && !e.maint);
            if assignment.filled && !in_line {
                assignment.filled = false;
                assignment.pushed = None;
                repaired += 1;
            }
        }
        repaired
    }

    /// Slot → edge, for the status page.
    pub fn table(&self) -> BTreeMap<String, String> {
        self.assigned
            .iter()
            .map(|(s, a)| (s.clone(), a.edge.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, port: u16, verdict: Verdict, percent: u32) -> EdgeView {
        crate::policy::fixtures::view(id, port, verdict, percent, 0.0)
    }

    fn views(list: Vec<EdgeView>) -> BTreeMap<String, EdgeView> {
        list.into_iter().map(|v| (v.id.clone(), v)).collect()
    }

    #[test]
    fn fills_changes_and_empties_slots() {
        let mut slots = Slots::new("edge", 2);
        let v = views(vec![view("a", 8001, Verdict::Ready, 100)]);
        let plan = slots.plan(&v);
        assert_eq!(
            plan,
            [
                Command::Fill {
                    slot: "edge1".into(),
                    edge: "a".into(),
                    ip: "127.0.0.1".parse().unwrap(),
                    port: 8001
                },
                Command::Weight {
                    slot: "edge1".into(),
                    percent: 100
                },
                Command::Ready {
                    slot: "edge1".into()
                },
            ]
        );
        assert!(slots.plan(&v).is_empty(), "nothing changed, nothing sent");
        let v = views(vec![
            view("a", 8001, Verdict::Drain, 0),
            view("b", 8002, Verdict::Ready, 140),
        ]);
        let plan = slots.plan(&v);
        assert!(plan.contains(&Command::Drain {
            slot: "edge1".into()
        }));
        assert!(plan.iter().any(
            |c| matches!(c, Command::Fill { slot, edge, .. } if slot == "edge2" && edge == "b")
        ));
        // a leaves; c takes its slot; d finds none.
        let v = views(vec![
            view("b", 8002, Verdict::Ready, 140),
            view("c", 8003, Verdict::Ready, 100),
            view("d", 8004, Verdict::Ready, 100),
        ]);
        let plan = slots.plan(&v);
        assert_eq!(
            plan[0],
            Command::Empty {
                slot: "edge1".into()
            }
        );
        assert_eq!(slots.slot_of("c"), Some("edge1"));
        assert_eq!(slots.unplaced, ["d"]);
    }

    #[test]
    fn a_failure_is_retried_and_adoption_keeps_slots() {
        let mut slots = Slots::new("edge", 3);
        let v = views(vec![
            view("a", 8001, Verdict::Ready, 100),
            view("b", 8002, Verdict::Ready, 80),
        ]);
        slots.plan(&v);
        slots.failed(&Command::Ready {
            slot: "edge2".into(),
        });
        let again = slots.plan(&v);
        assert_eq!(again.len(), 2, "{again:?}");
        assert!(again.iter().all(|c| c.slot() == "edge2"));

        // A new leader adopts what HAProxy shows: b in edge3, a in edge1.
        let mut adopted = Slots::new("edge", 3);
        adopted.adopt(
            &[
                Existing {
                    slot: "edge1".into(),
                    addr: "127.0.0.1:8001".parse().unwrap(),
                    maint: false,
                },
                Existing {
                    slot: "edge2".into(),
                    addr: "127.0.0.1:1".parse().unwrap(),
                    maint: true,
                },
                Existing {
                    slot: "edge3".into(),
                    addr: "127.0.0.1:8002".parse().unwrap(),
                    maint: false,
                },
            ],
            &v,
        );
        assert_eq!(adopted.slot_of("b"), Some("edge3"));
        let plan = adopted.plan(&v);
        assert!(
            plan.iter().all(|c| !matches!(c, Command::Fill { .. })),
            "{plan:?}"
        );
    }

    #[test]
    fn a_haproxy_that_lost_its_slots_gets_them_back_in_place() {
        let mut slots = Slots::new("edge", 3);
        let v = views(vec![
            view("a", 8001, Verdict::Ready, 100),
            view("b", 8002, Verdict::Ready, 80),
        ]);
        slots.plan(&v);
        let shown = |b_in_line: bool| {
            vec![
                Existing {
                    slot: "edge1".into(),
                    addr: "127.0.0.1:8001".parse().unwrap(),
                    maint: false,
                },
                Existing {
                    slot: "edge2".into(),
                    addr: if b_in_line {
                        "127.0.0.1:8002".parse().unwrap()
                    } else {
                        "127.0.0.1:1".parse().unwrap()
                    },
                    maint: !b_in_line,
                },
            ]
        };
        assert_eq!(slots.verify(&shown(true), &v), 0);
        assert!(slots.plan(&v).is_empty());
        // Restarted: edge2 is back to the template's placeholder, in maintenance.
        assert_eq!(slots.verify(&shown(false), &v), 1);
        let plan = slots.plan(&v);
        assert_eq!(
            plan,
            [
                Command::Fill {
                    slot: "edge2".into(),
                    edge: "b".into(),
                    ip: "127.0.0.1".parse().unwrap(),
                    port: 8002
                },
                Command::Weight {
                    slot: "edge2".into(),
                    percent: 80
                },
                Command::Ready {
                    slot: "edge2".into()
                },
            ]
        );
        assert_eq!(slots.slot_of("b"), Some("edge2"), "the same slot");
        // A failed fill is sent again too.
        slots.failed(&plan[0]);
        assert_eq!(slots.plan(&v).len(), 3);
    }
}
