//! CPU time spent on the benchmark's traffic, and how it is attributed to the LB.
//!
//! Client, LB and backends are namespaces of one kernel on two shared cores, and a
//! packet's trip crosses them inside one softirq run: the client's `send()` queues the
//! frame on a veth, and the receive processing of the peer (the LB namespace: XDP, or
//! routing and netfilter, or HAProxy's socket), the next veth, the bridge and the
//! backend's TCP stack usually all run right away in that same softirq, on the sending
//! thread's CPU, charged to whatever task was running (this kernel has no
//! `CONFIG_IRQ_TIME_ACCOUNTING`). So the LB namespace's share cannot be read from
//! `/proc/stat` or from any one task.
//!
//! What can be counted exactly is the CPU of every task that does the benchmark's work:
//! this process (load generator and backend threads, with the softirq work run in their
//! context), its child processes that ended during the run (`wrk`, the `iperf3` client:
//! `RUSAGE_CHILDREN`), other processes of the run (the `iperf3` server), the LB process
//! if there is one (HAProxy, or `lbd`, idle while XDP runs), and the `ksoftirqd` threads (softirq work deferred out of those contexts). The LB's
//! cost per connection is then that total per connection minus the same total in the
//! ceiling run (straight to a backend, through the same LB namespace as a plain
//! router): the client and backends do the same work per connection in every variant,
//! so the difference is what the LB adds on top of routing. HAProxy's own process time
//! is shown as well, as a direct lower bound.
//!
//! Other engineers' processes are left out by construction; `/proc/stat` is read only
//! to report how busy the rest of the machine was, as a noise indicator.
use std::time::{Duration, Instant};

/// Cumulative CPU counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    at: Instant,
    ours_ns: u64,
    children_ns: u64,
    others_ns: u64,
    lb_ns: u64,
    softirqd_ns: u64,
    machine_busy_ns: u64,
}

/// CPU used between two snapshots.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub wall: Duration,
    /// This process: load generator, backends, and softirq work run in their context;
    /// its children that ended (wrk, iperf3 clients) and the run's other processes
    /// (the iperf3 server).
    pub ours_ns: u64,
    /// The LB process (0 when there is none).
    pub lb_ns: u64,
    /// The ksoftirqd threads of every CPU.
    pub softirqd_ns: u64,
    /// Busy time of the whole machine from `/proc/stat` (10 ms ticks).
    pub machine_busy_ns: u64,
}

impl Usage {
    /// Everything spent on the benchmark's traffic.
    pub fn total_ns(&self) -> u64 {
        self.ours_ns + self.lb_ns + self.softirqd_ns
    }

    /// Busy time of everything else on the machine, in cores (tick-sampled, rough).
    pub fn others_cores(&self) -> f64 {
        self.machine_busy_ns.saturating_sub(self.total_ns()) as f64
            / self.wall.as_nanos().max(1) as f64
    }
}

/// Reads the counters of this process, an optional LB process, and ksoftirqd.
pub struct Meter {
    lb_pid: Option<u32>,
    others: Vec<u32>,
    softirqd: Vec<u32>,
}

impl Meter {
    pub fn new(lb_pid: Option<u32>) -> Meter {
        Meter::with_others(lb_pid, &[])
    }

    /// Also counts the processes `others` (servers of the run that outlive it).
    pub fn with_others(lb_pid: Option<u32>, others: &[u32]) -> Meter {
        Meter {
            lb_pid,
            others: others.to_vec(),
            softirqd: ksoftirqd_pids(),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            ours_ns: clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or(0),
            children_ns: children_ns(),
            others_ns: self.others.iter().map(|p| process_cpu_ns(*p)).sum(),
            lb_ns: self.lb_pid.map(process_cpu_ns).unwrap_or(0),
            softirqd_ns: self.softirqd.iter().map(|p| schedstat_ns(*p)).sum(),
            machine_busy_ns: machine_busy_ns(),
        }
    }
}

impl Snapshot {
    pub fn until(&self, later: &Snapshot) -> Usage {
        Usage {
            wall: later.at - self.at,
            ours_ns: later.ours_ns.saturating_sub(self.ours_ns)
                + later.children_ns.saturating_sub(self.children_ns)
                + later.others_ns.saturating_sub(self.others_ns),
            lb_ns: later.lb_ns.saturating_sub(self.lb_ns),
            softirqd_ns: later.softirqd_ns.saturating_sub(self.softirqd_ns),
            machine_busy_ns: later.machine_busy_ns.saturating_sub(self.machine_busy_ns),
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0)
        .then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// User + system time of this process's children that ended and were reaped.
fn children_ns() -> u64 {
    // SAFETY: a zeroed rusage is valid; getrusage only writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// CPU time of every thread, live or exited, of process `pid` (its CPU-time clock).
fn process_cpu_ns(pid: u32) -> u64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: valid out-pointer; the kernel checks the pid.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } != 0 {
        return 0;
    }
    clock_ns(clock).unwrap_or(0)
}

/// First field of /proc/PID/schedstat: the task's run time in ns.
fn schedstat_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn ksoftirqd_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// user + nice + system + irq + softirq + steal of the `cpu` line of /proc/stat, in ns.
fn machine_busy_ns() -> u64 {
    // SAFETY: plain libc call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum();
    busy * 1_000_000_000 / hz
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_cpu_time_is_counted_through_both_clocks() {
        let meter = Meter::new(Some(std::process::id()));
        let before = meter.snapshot();
        // Burn 30 ms of CPU (not of wall time: a busy machine may preempt us).
        let own = || clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap();
        let (start_cpu, start) = (own(), Instant::now());
        while own() - start_cpu < 30_000_000 && start.elapsed() < Duration::from_secs(10) {
            std::hint::black_box(start_cpu.wrapping_mul(3));
        }
        let used = before.until(&meter.snapshot());
        assert!(used.ours_ns >= 30_000_000, "{used:?}");
        assert!(
            used.lb_ns >= 30_000_000,
            "the pid's CPU-time clock: {used:?}"
        );
    }
}
