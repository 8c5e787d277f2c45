//! What the kernel counts for a server process and for the machine: the process's CPU time
//! (`/proc/<pid>/stat` utime + stime), its resident memory (`/proc/<pid>/status` VmRSS), and the
//! machine's hypervisor steal (the 8th value of the `cpu` line of `/proc/stat`).

use std::io;

/// Seconds of CPU (user + system, all threads) the process has used.
pub fn cpu_secs(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad("no ')' in /proc/<pid>/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name, field 3 (state) is index 0: utime (14) and stime (15) are 11 and 12.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("short /proc/<pid>/stat"))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks())
}

/// Resident memory of the process, in MiB.
pub fn rss_mib(pid: u32) -> io::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| bad("no VmRSS in /proc/<pid>/status"))?;
    Ok(kib as f64 / 1024.0)
}

/// The machine's CPU time counters: (steal, total), in ticks.
#[derive(Clone, Copy)]
pub struct Machine {
    steal: u64,
    total: u64,
}

impl Machine {
    pub fn now() -> io::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or_else(|| bad("no cpu line in /proc/stat"))?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user already).
        let steal = *values.get(7).ok_or_else(|| bad("no steal in /proc/stat"))?;
        Ok(Self {
            steal,
            total: values.iter().take(8).sum(),
        })
    }

    /// Percentage of all CPU time since `earlier` that the hypervisor stole.
    pub fn steal_pct_since(&self, earlier: &Machine) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1);
        100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total as f64
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}
