//! CPU use over a window: per thread of the relay and of this tool from
//! `/proc/PID/task/*/stat`, per core from `/proc/stat`; and its report lines.

use super::config::Config;
use super::round1;
use crate::procfs::{self, Proc};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Instant;

/// CPU ticks of every thread of a process, by thread id.
#[derive(Debug, Clone, Default)]
struct ThreadTicks {
    threads: Vec<(u32, String, u64)>,
    total: u64,
}

impl ThreadTicks {
    fn read(p: Proc) -> Result<Self> {
        let dir = match p {
            Proc::SelfProc => "/proc/self/task".to_owned(),
            Proc::Pid(pid) => format!("/proc/{pid}/task"),
        };
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let path = entry?.path();
            let Some(tid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A thread may exit between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
                continue;
            };
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            threads.push((
                tid,
                name.trim().to_owned(),
                procfs::parse_stat_cpu_ticks(&stat)?,
            ));
        }
        Ok(Self {
            threads,
            total: procfs::cpu_ticks(p)?,
        })
    }

    /// Per-thread-name tick increases since `before`, busiest first, and the total.
    fn since(&self, before: &ThreadTicks) -> (Vec<(String, u64)>, u64) {
        let mut by_name: Vec<(String, u64)> = Vec::new();
        for (tid, name, ticks) in &self.threads {
            let old = before
                .threads
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0, |(_, _, v)| *v);
            let delta = ticks.saturating_sub(old);
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => *v += delta,
                None => by_name.push((name.clone(), delta)),
            }
        }
        by_name.retain(|(_, v)| *v > 0);
        by_name.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (by_name, self.total.saturating_sub(before.total))
    }
}

/// CPU ticks the calling thread has used so far (0 if /proc cannot tell).
pub(super) fn own_thread_ticks() -> u64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| procfs::parse_stat_cpu_ticks(&s).ok())
        .unwrap_or(0)
}

/// CPU use of both processes over a window.
#[derive(Debug, Clone, Default)]
pub(super) struct CpuUse {
    /// Percent of one core, total and per thread name.
    pub(super) relay: Option<(f64, Vec<(String, f64)>)>,
    pub(super) tool: (f64, Vec<(String, f64)>),
    /// Busy percent of each core (`/proc/stat`), whoever used it.
    pub(super) cores: Vec<(String, f64)>,
    /// Steal percent (time the hypervisor ran something else), summed over cores.
    pub(super) steal: f64,
}

impl CpuUse {
    /// Busy time of all cores not charged to the relay or this tool, in percent
    /// of one core: other processes, and kernel work (softirq) not charged to either.
    pub(super) fn elsewhere(&self) -> f64 {
        let all: f64 = self.cores.iter().map(|(_, p)| p).sum();
        let ours = self.tool.0 + self.relay.as_ref().map_or(0.0, |r| r.0);
        (all - ours).max(0.0)
    }
}

/// Ticks of one core from `/proc/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// Only idle (with iowait) and steal are used: with a tickless kernel they are
/// measured exactly, while user and system time are sampled at the timer tick,
/// which misses work that runs between ticks (like this tool's 1 ms bursts).
/// Busy time is therefore wall time minus idle minus steal.
struct CoreTicks {
    name: String,
    /// idle + iowait.
    idle: u64,
    steal: u64,
}

/// Every `cpuN` line of `/proc/stat`.
fn core_ticks() -> Vec<CoreTicks> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    parse_core_ticks(&stat)
}

fn parse_core_ticks(stat: &str) -> Vec<CoreTicks> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?.to_owned();
            // user nice system idle iowait irq softirq steal (guest is inside user).
            let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
            if v.len() < 8 {
                return None;
            }
            Some(CoreTicks {
                name,
                idle: v[3] + v[4],
                steal: v[7],
            })
        })
        .collect()
}

pub(super) struct CpuProbe {
    relay: Option<ThreadTicks>,
    tool: ThreadTicks,
    cores: Vec<CoreTicks>,
    at: Instant,
}

impl CpuProbe {
    pub(super) fn start(cfg: &Config) -> Result<Self> {
        Ok(Self {
            relay: cfg
                .relay_pid
                .map(|pid| ThreadTicks::read(Proc::Pid(pid)))
                .transpose()?,
            tool: ThreadTicks::read(Proc::SelfProc)?,
            cores: core_ticks(),
            at: Instant::now(),
        })
    }

    /// CPU use since [`CpuProbe::start`]. `tool_threads`: the tool's own threads'
    /// ticks as they measured themselves (for threads that ended before now; the
    /// rest of the tool's time shows as "other"); `None`: read them from /proc now.
    pub(super) fn finish(
        self,
        cfg: &Config,
        tool_threads: Option<Vec<(String, u64)>>,
    ) -> Result<CpuUse> {
        let now = Self::start(cfg)?;
        let secs = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let hz = procfs::clock_ticks_per_sec().0 as f64;
        let pct = |t: u64| t as f64 / hz / secs * 100.0;
        let conv = |(threads, total): (Vec<(String, u64)>, u64)| {
            (
                pct(total),
                threads.into_iter().map(|(n, t)| (n, pct(t))).collect(),
            )
        };
        Ok(CpuUse {
            relay: match (now.relay, self.relay) {
                (Some(n), Some(b)) => Some(conv(n.since(&b))),
                _ => None,
            },
            tool: match tool_threads {
                Some(mut threads) => {
                    let total = now.tool.total.saturating_sub(self.tool.total);
                    let own: u64 = threads.iter().map(|(_, t)| t).sum();
                    threads.push((
                        "other (libzmq I/O, main)".to_owned(),
                        total.saturating_sub(own),
                    ));
                    conv((threads, total))
                }
                None => conv(now.tool.since(&self.tool)),
            },
            cores: now
                .cores
                .iter()
                .filter_map(|c| {
                    let c0 = self.cores.iter().find(|c0| c0.name == c.name)?;
                    let not_busy = (c.idle + c.steal).saturating_sub(c0.idle + c0.steal);
                    Some((c.name.clone(), (100.0 - pct(not_busy)).clamp(0.0, 100.0)))
                })
                .collect(),
            steal: now
                .cores
                .iter()
                .filter_map(|c| {
                    let c0 = self.cores.iter().find(|c0| c0.name == c.name)?;
                    Some(pct(c.steal.saturating_sub(c0.steal)))
                })
                .sum(),
        })
    }
}

pub(super) fn cpu_json(c: &CpuUse) -> Value {
    let part = |(total, threads): &(f64, Vec<(String, f64)>)| {
        let t: serde_json::Map<String, Value> = threads
            .iter()
            .map(|(n, p)| (n.clone(), json!(round1(*p))))
            .collect();
        json!({ "percent": round1(*total), "threads": t })
    };
    let cores: serde_json::Map<String, Value> = c
        .cores
        .iter()
        .map(|(n, p)| (n.clone(), json!(round1(*p))))
        .collect();
    json!({
        "relay": c.relay.as_ref().map(part),
        "tool": part(&c.tool),
        "cores_busy": cores,
        "elsewhere_percent": round1(c.elsewhere()),
        "steal_percent": round1(c.steal),
    })
}

pub(super) fn cpu_text(text: &mut String, c: &CpuUse) {
    let fmt = |(total, threads): &(f64, Vec<(String, f64)>)| {
        let parts: Vec<String> = threads
            .iter()
            .filter(|(_, p)| *p >= 0.5)
            .map(|(n, p)| format!("{n} {p:.0}%"))
            .collect();
        if parts.is_empty() {
            format!("{total:.0}% of a core")
        } else {
            format!("{total:.0}% of a core ({})", parts.join(", "))
        }
    };
    match &c.relay {
        Some(r) => {
            let _ = writeln!(text, "  relay CPU      {}", fmt(r));
        }
        None => {
            let _ = writeln!(text, "  relay CPU      n/a (no --relay-pid)");
        }
    }
    let _ = writeln!(text, "  tool CPU       {}", fmt(&c.tool));
    let cores: Vec<String> = c
        .cores
        .iter()
        .map(|(n, p)| format!("{n} {p:.0}%"))
        .collect();
    let _ = writeln!(
        text,
        "  cores busy     {}; elsewhere (other processes, uncharged kernel work) {:.0}% of a core; \
         steal {:.1}%",
        cores.join(", "),
        c.elsewhere(),
        c.steal
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cores() {
        let stat = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 2 0 1 0 0 0\ncpu1 5 0 5 50 0 0 0 0 0 0\nintr 1\n";
        let cores = parse_core_ticks(stat);
        assert_eq!(cores.len(), 2);
        assert_eq!(
            cores[0],
            CoreTicks {
                name: "cpu0".into(),
                idle: 52,
                steal: 0,
            }
        );
        assert_eq!(cores[1].idle, 50);
    }
}
