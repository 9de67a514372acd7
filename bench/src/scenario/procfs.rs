//! The servers' figures from /proc, each summed over the servers of a
//! cluster: resident memory (read once, or settled: the median of three
//! readings), and CPU time, user plus system of every thread (`utime` and
//! `stime` of /proc/PID/stat). Read before publishing and after the last
//! delivery, the CPU difference is what the servers spent on the run's
//! fan-out (heartbeats and the tool's pauses add next to nothing).

use std::time::Duration;

/// Pause after the connections are open, before reading the server's
/// memory or publishing: lets the server (and a peer's garbage collector)
/// settle, and lets peers that register a connection after the handshake
/// finish doing so.
pub(super) const SETTLE: Duration = Duration::from_secs(1);

/// The resident anonymous memory of `pid` (heap and stacks: `RssAnon` in
/// /proc/PID/status), in bytes. Not `VmRSS`: that also counts the pages
/// of the executable's code, which are read in once, the first time the
/// code runs (the first handshakes), and would pass for memory per
/// connection whenever the code's layout moves.
pub fn read_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The resident memory of every process of `pids`, summed (the servers of
/// a cluster run); `None` as [`sum_over`] says.
pub fn read_rss_sum(pids: &[u32]) -> Option<u64> {
    sum_over(pids, read_rss)
}

/// `read` of every process of `pids`, summed; `None` if the list is empty
/// or any cannot be read, since a partial sum would pass for a smaller
/// figure.
fn sum_over(pids: &[u32], read: fn(u32) -> Option<u64>) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .try_fold(0u64, |sum, &pid| sum.checked_add(read(pid)?))
}

/// After a settling pause, the median of three readings 300 ms apart
/// (garbage-collected servers move between readings) of the servers'
/// summed memory; `None` without PIDs.
pub(super) async fn settled_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    tokio::time::sleep(SETTLE).await;
    let mut readings = Vec::with_capacity(3);
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        readings.push(read_rss_sum(pids)?);
    }
    readings.sort_unstable();
    readings.get(1).copied()
}

/// CPU time (user + system, all threads) of `pid` so far, in nanoseconds.
pub fn read_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ns_of_stat(&stat, clock_ticks_per_second()?)
}

/// The CPU time of every process of `pids`, summed; `None` as
/// [`sum_over`] says.
pub fn read_cpu_ns_sum(pids: &[u32]) -> Option<u64> {
    sum_over(pids, read_cpu_ns)
}

fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf reads a constant of the system; no pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

/// `utime + stime` of a /proc/PID/stat line, in nanoseconds. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses
/// itself, so fields are counted after its last `)`: state is field 3,
/// utime 14 and stime 15.
fn cpu_ns_of_stat(stat: &str, ticks_per_second: u64) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime
        .checked_add(stime)?
        .checked_mul(1_000_000_000)
        .map(|ns| ns / ticks_per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_summed_over_every_pid_or_not_reported() {
        let me = std::process::id();
        assert_eq!(read_rss_sum(&[]), None);
        assert!(read_rss_sum(&[me]).is_some_and(|b| b > 0));
        // Above the kernel's largest pid_max: no such process, no partial sum.
        assert_eq!(read_rss_sum(&[me, u32::MAX]), None);
    }

    #[test]
    fn cpu_time_is_utime_plus_stime_after_the_command_name() {
        // A command name with a space and a parenthesis; utime 250, stime 50.
        let stat = "1234 (tokio (x) 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 99 1000 10";
        assert_eq!(cpu_ns_of_stat(stat, 100), Some(3_000_000_000));
        assert_eq!(cpu_ns_of_stat("1234 (x) S 1", 100), None);
        assert_eq!(cpu_ns_of_stat("garbage", 100), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_missing_one_has_none() {
        let me = std::process::id();
        // Spend a little CPU so the reading is above zero at 100 Hz.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(read_cpu_ns_sum(&[me]).is_some_and(|ns| ns > 0));
        assert_eq!(read_cpu_ns_sum(&[]), None);
        assert_eq!(read_cpu_ns_sum(&[me, u32::MAX]), None);
    }
}
