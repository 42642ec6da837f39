//! The fleet as etcd shows it: every edge's latest [`LoadReport`], and when it last
//! changed (herald's clock, not the edge's: clocks across hosts disagree).

use std::collections::BTreeMap;
use std::time::Instant;

use pushfleet_fleet::etcd::Records;
use pushfleet_protocol::registry::LoadReport;
use tracing::warn;

use crate::policy::score::Received;

/// Reports by edge id.
#[derive(Debug, Default)]
pub struct Fleet {
    reports: BTreeMap<String, Received>,
}

impl Fleet {
    /// Takes the records under `<prefix>/edges/` (keys are edge ids) as of `now`.
    pub fn update(&mut self, records: &Records, now: Instant) {
        self.reports.retain(|id, _| records.contains_key(id));
        for (id, value) in records {
            let report: LoadReport = match serde_json::from_str(value) {
                Ok(r) => r,
                Err(e) => {
                    warn!(edge = %id, error = %e, "ignoring a malformed load report");
                    continue;
                }
            };
            match self.reports.get_mut(id) {
                Some(known) if known.report == report => {}
                Some(known) => {
                    known.report = report;
                    known.changed_at = now;
                }
                None => {
                    self.reports.insert(
                        id.clone(),
                        Received {
                            report,
                            changed_at: now,
                        },
                    );
                }
            }
        }
    }

    pub fn reports(&self) -> &BTreeMap<String, Received> {
        &self.reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(id: &str, at_ms: u64) -> String {
        let mut r = crate::policy::fixtures::report(id, 1);
        r.at_ms = at_ms;
        serde_json::to_string(&r).unwrap()
    }

    #[test]
    fn tracks_changes_removals_and_skips_garbage() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut fleet = Fleet::default();
        let mut records = Records::new();
        records.insert("a".into(), record("a", 1));
        records.insert("b".into(), record("b", 1));
        records.insert("bad".into(), "{not json".into());
        fleet.update(&records, t0);
        assert_eq!(fleet.reports().keys().collect::<Vec<_>>(), ["a", "b"]);
        records.insert("a".into(), record("a", 2));
        records.remove("b");
        fleet.update(&records, t1);
        assert_eq!(fleet.reports().keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(fleet.reports()["a"].changed_at, t1);
        fleet.update(&records, t1 + Duration::from_secs(1));
        assert_eq!(
            fleet.reports()["a"].changed_at,
            t1,
            "unchanged report, same time"
        );
    }
}
