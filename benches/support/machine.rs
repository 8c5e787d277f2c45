//! What the machine was doing during a measurement (it is shared and noisy), and a process's
//! memory, from /proc.

use std::fmt;

/// The kernel's CPU counters and the load average at one moment.
pub struct Sample {
    /// user, nice, system, idle, iowait, irq, softirq, steal (jiffies, all CPUs).
    cpu: Vec<u64>,
    load: String,
}

/// The machine between two samples.
pub struct Window {
    busy_pct: f64,
    steal_pct: f64,
    load: String,
}

impl Sample {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Self { cpu, load }
    }

    pub fn until(&self, later: &Sample) -> Window {
        let delta: Vec<f64> = (0..8)
            .map(|i| {
                let at = |s: &Sample| s.cpu.get(i).copied().unwrap_or(0);
                at(later).saturating_sub(at(self)) as f64
            })
            .collect();
        let total: f64 = delta.iter().sum::<f64>().max(1.0);
        let idle = delta[3] + delta[4];
        Window {
            busy_pct: 100.0 * (total - idle - delta[7]) / total,
            steal_pct: 100.0 * delta[7] / total,
            load: later.load.clone(),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        write!(
            f,
            "{cores} cores, busy {:.0}%, steal {:.0}% over the run, load average {} at its end",
            self.busy_pct, self.steal_pct, self.load
        )
    }
}

/// A field of /proc/`pid`/status in KiB (0 when unreadable).
fn status_kib(pid: u32, names: &[&str]) -> Vec<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    names.iter().map(|n| field(n)).collect()
}

/// (VmRSS, VmHWM) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let v = status_kib(pid, &["VmRSS:", "VmHWM:"]);
    (v[0], v[1])
}

// Not every benchmark that reads RSS splits it.
#[allow(dead_code)]
/// The RSS of process `pid` split, in KiB: anonymous (heap, stacks) and the rest (file and
/// shared memory pages: the mapped binary's code and data).
pub fn rss_split_kib(pid: u32) -> (u64, u64) {
    let v = status_kib(pid, &["RssAnon:", "RssFile:", "RssShmem:"]);
    (v[0], v[1] + v[2])
}
