//! The servers' resident memory, from /proc: read once, summed over the
//! servers of a cluster, or settled (the median of three readings).

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
/// a cluster run); `None` if the list is empty or any cannot be read, since
/// a partial sum would pass for a smaller figure.
pub fn read_rss_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .try_fold(0u64, |sum, &pid| sum.checked_add(read_rss(pid)?))
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
}
