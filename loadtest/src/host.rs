//! What the load generator reads about the machine it runs on: process memory from
//! `/proc/PID/status`, the open-file limit, and whether stderr is a terminal.
//!
//! Memory figures are KiB as the kernel reports them. A process that is gone reads as
//! `None`, never as an error: the server may legitimately exit during a run.

use std::io::IsTerminal as _;

use serde::Serialize;

/// Open files one process may hold on the target machines; connections per process stay
/// below [`MAX_SOCKETS_PER_PROCESS`] so there is room for everything else.
pub const MAX_SOCKETS_PER_PROCESS: usize = 18_500;

/// Resident memory of a process, read from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size so far.
    pub hwm_kib: u64,
}

/// Reads the memory of `pid`, or `None` if it cannot be read.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:").unwrap_or(0),
    })
}

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on every Linux ABI
/// this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu(&stat)
}

fn parse_cpu(stat: &str) -> Option<f64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Field 3 of proc(5) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// CPU used by a set of processes over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuUse {
    /// CPU seconds used during the interval.
    pub cpu_secs: f64,
    /// Average cores busy: `cpu_secs / interval`.
    pub cores: f64,
    /// The interval, in seconds.
    pub secs: f64,
}

/// Measures the CPU of some processes from `start` to `read`.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    started: std::time::Instant,
    at_start: Vec<(u32, Option<f64>)>,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> CpuMeter {
        let at_start = pids.iter().map(|&pid| (pid, cpu_secs(pid))).collect();
        CpuMeter {
            started: std::time::Instant::now(),
            at_start,
        }
    }

    /// Usage of each process since `start`, in the order given, `None` if unreadable.
    pub fn read(&self) -> Vec<Option<CpuUse>> {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let usage = |&(pid, start): &(u32, Option<f64>)| {
            let used = cpu_secs(pid)? - start?;
            Some(CpuUse {
                cpu_secs: round2(used),
                cores: round2(used / secs),
                secs: round2(secs),
            })
        };
        self.at_start.iter().map(usage).collect()
    }

    /// The usage of all processes together.
    pub fn total(&self) -> Option<CpuUse> {
        let all: Vec<CpuUse> = self.read().into_iter().flatten().collect();
        (!all.is_empty()).then(|| CpuUse {
            cpu_secs: round2(all.iter().map(|u| u.cpu_secs).sum()),
            cores: round2(all.iter().map(|u| u.cores).sum()),
            secs: all.iter().map(|u| u.secs).fold(0.0, f64::max),
        })
    }
}

/// Machine-wide CPU use over an interval, from `/proc/stat`. Unlike per-process times, it
/// includes softirq time: loopback TCP is processed there, and on a small machine it is a
/// large share of the work of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MachineCpu {
    /// Cores the kernel reported time for (busy or not).
    pub cores: f64,
    /// Average cores busy (everything but idle and iowait).
    pub busy_cores: f64,
    /// Average cores in softirq (network processing).
    pub softirq_cores: f64,
}

/// Measures [`MachineCpu`] from `start` to `read`.
#[derive(Debug, Clone)]
pub struct MachineMeter {
    started: std::time::Instant,
    at_start: Option<[u64; 3]>,
}

impl MachineMeter {
    pub fn start() -> MachineMeter {
        MachineMeter {
            started: std::time::Instant::now(),
            at_start: machine_ticks(),
        }
    }

    pub fn read(&self) -> Option<MachineCpu> {
        let ([t0, b0, s0], [t1, b1, s1]) = (self.at_start?, machine_ticks()?);
        let per_sec = |ticks: u64| {
            round2(ticks as f64 / TICKS_PER_SEC / self.started.elapsed().as_secs_f64().max(1e-9))
        };
        Some(MachineCpu {
            cores: per_sec(t1 - t0),
            busy_cores: per_sec(b1 - b0),
            softirq_cores: per_sec(s1 - s0),
        })
    }
}

/// `[total, busy, softirq]` ticks of all CPUs since boot.
fn machine_ticks() -> Option<[u64; 3]> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_ticks(stat: &str) -> Option<[u64; 3]> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest times are inside user/nice).
    let t: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = t.iter().sum();
    let idle = t.get(3)? + t.get(4)?;
    Some([total, total - idle, *t.get(6)?])
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The soft limit on open files of this process, if readable.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// How many sockets one process of this run may open: the smaller of the house limit and
/// the real limit minus a margin for everything that is not a connection.
pub fn sockets_per_process() -> usize {
    let margin = 512;
    match open_files_limit() {
        Some(limit) => (limit.saturating_sub(margin) as usize).clamp(1, MAX_SOCKETS_PER_PROCESS),
        None => MAX_SOCKETS_PER_PROCESS,
    }
}

/// Whether live progress may be drawn with bars (stderr is a terminal).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Seconds since the Unix epoch, for the results file.
pub fn unix_secs() -> u64 {
    crate::wire::unix_micros() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tpushwire\nVmHWM:\t  123456 kB\nVmRSS:\t   98765 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                rss_kib: 98765,
                hwm_kib: 123456
            })
        );
        assert_eq!(parse_status("Name: zombie\n"), None);
    }

    #[test]
    fn reads_own_memory_and_limits() {
        assert!(memory(std::process::id()).is_some_and(|m| m.rss_kib > 0));
        assert!(memory(u32::MAX).is_none());
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(parse_open_files(limits), Some(20000));
        assert!(sockets_per_process() >= 1);
    }

    #[test]
    fn parses_machine_cpu_ticks() {
        let stat = "cpu  100 0 50 800 10 0 40 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_machine_ticks(stat), Some([1000, 190, 40]));
        assert!(MachineMeter::start().read().is_some());
    }

    #[test]
    fn parses_cpu_times_even_with_odd_command_names() {
        let stat = "4242 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu(stat), Some(3.0));
        assert!(cpu_secs(std::process::id()).is_some());
        let meter = CpuMeter::start(&[std::process::id(), u32::MAX]);
        let usage = meter.read();
        assert!(usage[0].is_some() && usage[1].is_none());
    }
}
