//! The servers' CPU time, from /proc: user plus system time of every
//! thread of each process (`utime` and `stime` of /proc/PID/stat), summed
//! over the servers of a cluster. Read before publishing and after the
//! last delivery, the difference is what the server spent on the run's
//! fan-out (heartbeats and the tool's pauses add next to nothing).

/// CPU time (user + system, all threads) of `pid` so far, in nanoseconds.
pub fn read_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ns_of_stat(&stat, clock_ticks_per_second()?)
}

/// The CPU time of every process of `pids`, summed; `None` if the list is
/// empty or any cannot be read (a partial sum would pass for less work).
pub fn read_cpu_ns_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .try_fold(0u64, |sum, &pid| sum.checked_add(read_cpu_ns(pid)?))
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
