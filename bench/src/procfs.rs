//! Readers for `/proc/PID/stat` (CPU time) and `/proc/PID/status` (RSS).
//!
//! CPU time is `utime + stime` in clock ticks; [`clock_ticks_per_sec`] asks
//! `getconf CLK_TCK` once and falls back to 100 (the Linux default), saying
//! so in the report.

use anyhow::{anyhow, bail, Context, Result};
use std::process::Command;

/// Which process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    /// The load tool itself (all its threads).
    SelfProc,
    /// Another process by PID.
    Pid(u32),
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::SelfProc => format!("/proc/self/{file}"),
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
///
/// The command name (field 2) may contain spaces and parentheses, so fields
/// are counted from the last `)`: after it come state (field 3), ...,
/// utime (field 14) and stime (field 15).
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let close = stat
        .rfind(')')
        .ok_or_else(|| anyhow!("no ')' in stat line"))?;
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14 -> index 11.
    if fields.len() < 13 {
        bail!("stat line has only {} fields after the name", fields.len());
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    Ok(utime + stime)
}

/// `VmRSS` in bytes from the text of `/proc/PID/status`.
pub fn parse_status_rss_bytes(status: &str) -> Result<u64> {
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let mut parts = rest.split_whitespace();
            let value: u64 = parts
                .next()
                .ok_or_else(|| anyhow!("empty VmRSS line"))?
                .parse()
                .context("VmRSS value")?;
            return match parts.next() {
                Some("kB") | None => Ok(value * 1024),
                Some(unit) => bail!("unexpected VmRSS unit {unit:?}"),
            };
        }
    }
    bail!("no VmRSS line (kernel thread or zombie?)")
}

/// CPU ticks (`utime + stime`) used so far by `p`.
pub fn cpu_ticks(p: Proc) -> Result<u64> {
    let path = p.path("stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu_ticks(&text).with_context(|| format!("parsing {path}"))
}

/// Resident set size of `p` in bytes.
pub fn rss_bytes(p: Proc) -> Result<u64> {
    let path = p.path("status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_rss_bytes(&text).with_context(|| format!("parsing {path}"))
}

/// Clock ticks per second and whether the value was assumed (getconf failed).
pub fn clock_ticks_per_sec() -> (u64, bool) {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    if let Ok(out) = out {
        if out.status.success() {
            if let Ok(v) = String::from_utf8_lossy(&out.stdout).trim().parse::<u64>() {
                if v > 0 {
                    return (v, false);
                }
            }
        }
    }
    (100, true)
}

/// Fails early with a clear message if `pid` cannot be read.
pub fn check_pid(pid: u32) -> Result<()> {
    cpu_ticks(Proc::Pid(pid))
        .and_then(|_| rss_bytes(Proc::Pid(pid)))
        .with_context(|| format!("server process {pid} is not readable via /proc"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (pushfleet (x) srv) S 1 4242 4242 0 -1 4194560 2893 0 0 0 \
        1234 567 0 0 20 0 3 0 123456 98765432 4321 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0";

    #[test]
    fn stat_cpu() {
        assert_eq!(parse_stat_cpu_ticks(STAT).expect("parse"), 1234 + 567);
        assert!(parse_stat_cpu_ticks("1 (x) S 1 2").is_err());
        assert!(parse_stat_cpu_ticks("garbage").is_err());
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tpushfleet-serv\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(parse_status_rss_bytes(status).expect("rss"), 12345 * 1024);
        assert!(parse_status_rss_bytes("Name:\tkthreadd\n").is_err());
        assert!(parse_status_rss_bytes("VmRSS:\t12 MB\n").is_err());
    }

    #[test]
    fn self_is_readable() {
        assert!(cpu_ticks(Proc::SelfProc).is_ok());
        assert!(rss_bytes(Proc::SelfProc).expect("rss") > 0);
        assert!(clock_ticks_per_sec().0 > 0);
        check_pid(std::process::id()).expect("own pid readable");
    }
}
