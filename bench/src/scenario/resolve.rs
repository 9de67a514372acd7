//! A scenario's target arguments resolved: the parsed URLs, and the
//! automatic choices of worker processes and source addresses (and where
//! in the pool of source addresses a run starts).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::client::TokenSigner;
use crate::{
    BenchError, BenchUrls, Target, TargetArgs, CONNECTIONS_PER_SOURCE_ADDRESS,
    MAX_CONNECTIONS_PER_PROCESS, SOURCE_POOL,
};

/// Target arguments with the automatic choices made.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub(super) args: TargetArgs,
    pub(super) urls: BenchUrls,
    pub(super) workers: usize,
    pub(super) source_addrs: usize,
    pub(super) source_base: usize,
    /// `--token-hmac-secret`: every connection authenticates first.
    pub(super) signer: Option<TokenSigner>,
}

pub(super) fn resolve(t: &TargetArgs, connections: usize) -> Result<Resolved, BenchError> {
    let urls = BenchUrls::parse(&t.url, t.target)?;
    // A PID given twice would count that server's memory twice.
    for (i, pid) in t.server_pid.iter().enumerate() {
        if t.server_pid.get(..i).is_some_and(|seen| seen.contains(pid)) {
            return Err(BenchError::Usage(format!(
                "--server-pid: {pid} given twice"
            )));
        }
    }
    let signer = match &t.token_hmac_secret {
        Some(_) if t.target != Target::Wavecast => {
            return Err(BenchError::Usage(
                "--token-hmac-secret is for --target wavecast".into(),
            ))
        }
        Some(secret) => Some(TokenSigner::new(secret)?),
        None => None,
    };
    let workers = if t.pacing.workers > 0 {
        t.pacing.workers
    } else if connections > MAX_CONNECTIONS_PER_PROCESS {
        connections.div_ceil(MAX_CONNECTIONS_PER_PROCESS)
    } else {
        0
    };
    let source_addrs = if t.pacing.source_addrs > 0 {
        t.pacing.source_addrs
    } else if connections > CONNECTIONS_PER_SOURCE_ADDRESS {
        connections.div_ceil(CONNECTIONS_PER_SOURCE_ADDRESS)
    } else {
        0
    };
    if source_addrs > SOURCE_POOL {
        return Err(BenchError::Usage(format!(
            "at most {SOURCE_POOL} source addresses"
        )));
    }
    // Each run starts elsewhere in the pool (and so does each invocation of
    // the tool): fresh addresses have no ports held in TIME_WAIT.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let source_base =
        (std::process::id() as usize).wrapping_add(run.wrapping_mul(source_addrs)) % SOURCE_POOL;
    Ok(Resolved {
        args: t.clone(),
        urls,
        workers,
        source_addrs,
        source_base,
        signer,
    })
}

/// The source address of connection `index`: round robin over `count`
/// addresses of the pool 127.0.0.2 to 127.0.0.241, starting at offset
/// `base`; `None` (the kernel's choice) when `count` is 0.
///
/// With several servers ([`BenchUrls::for_connection`], also round robin
/// on the index) the ports a source address needs are split among its
/// destinations: `IP_BIND_ADDRESS_NO_PORT` has the kernel pick the port per
/// (source, destination) pair, so no pair holds more connections than the
/// source address alone did with one server.
pub(super) fn source_for(index: usize, count: usize, base: usize) -> Option<Ipv4Addr> {
    if count == 0 {
        return None;
    }
    let offset = u32::try_from((base % SOURCE_POOL + index % count) % SOURCE_POOL).ok()?;
    Some(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(127, 0, 0, 2)) + offset,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;

    #[test]
    fn source_addresses_start_at_127_0_0_2() {
        assert_eq!(source_for(5, 0, 7), None);
        assert_eq!(source_for(0, 3, 0), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_for(4, 3, 0), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(source_for(4, 3, 10), Some(Ipv4Addr::new(127, 0, 0, 13)));
        // The pool wraps around: never past 127.0.0.241.
        assert_eq!(source_for(1, 3, 239), Some(Ipv4Addr::new(127, 0, 0, 2)));
        for i in 0..1000 {
            let ip = source_for(i, 240, i * 7).unwrap().octets();
            assert!(ip[0] == 127 && ip[1] == 0 && ip[2] == 0 && (2..=241).contains(&ip[3]));
        }
    }

    fn target_args(urls: &[&str]) -> TargetArgs {
        TargetArgs {
            target: Target::Wavecast,
            url: urls.iter().map(|u| u.to_string()).collect(),
            pacing: crate::PacingArgs {
                connect_rate: 0.0,
                concurrency: 64,
                workers: 0,
                source_addrs: 0,
                compression: false,
            },
            server_pid: Vec::new(),
            token_hmac_secret: None,
        }
    }

    #[test]
    fn a_cluster_run_of_100_000_uses_workers_and_source_addresses() {
        let urls: Vec<String> = (1..=6).map(|p| format!("ws://127.0.0.1:{p}/ws")).collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let r = resolve(&target_args(&urls), 100_000).unwrap();
        assert_eq!(r.urls.len(), 6);
        assert_eq!(r.workers, 12);
        // Each worker's share (as open_group splits it) stays well under
        // the 20,000 open files a process may hold.
        let largest_share = 100_000usize.div_ceil(r.workers);
        assert!(
            largest_share <= MAX_CONNECTIONS_PER_PROCESS,
            "{largest_share}"
        );
        assert_eq!(r.source_addrs, 20);
        // One URL, few subscribers: this process, the kernel's source.
        let r = resolve(&target_args(&["ws://127.0.0.1:1/ws"]), 1000).unwrap();
        assert_eq!((r.workers, r.source_addrs, r.urls.len()), (0, 0, 1));
    }

    #[test]
    fn no_source_and_server_pair_holds_more_than_a_source_alone() {
        for servers in 1..=7u16 {
            let list: Vec<String> = (1..=servers)
                .map(|p| format!("ws://127.0.0.1:{p}/ws"))
                .collect();
            let urls = BenchUrls::parse(&list, Target::Wavecast).unwrap();
            for (n, count) in [(100_000, 20), (30_000, 6), (12_000, 3)] {
                let mut pairs = std::collections::HashMap::new();
                for i in 0..n {
                    let pair = (source_for(i, count, 5), urls.for_connection(i).addr);
                    *pairs.entry(pair).or_insert(0usize) += 1;
                }
                let most = pairs.values().copied().max().unwrap_or(0);
                assert!(
                    most <= CONNECTIONS_PER_SOURCE_ADDRESS,
                    "{servers} servers, {n} connections: {most} on one pair"
                );
            }
        }
    }

    #[test]
    fn a_token_secret_makes_a_signer_for_wavecast_only() {
        let mut t = target_args(&["ws://127.0.0.1:1/ws"]);
        assert!(resolve(&t, 1).unwrap().signer.is_none());
        t.token_hmac_secret = Some("S".into());
        assert_eq!(
            resolve(&t, 1).unwrap().signer,
            Some(TokenSigner::new("S").unwrap())
        );
        t.token_hmac_secret = Some(String::new());
        assert_eq!(resolve(&t, 1).unwrap_err().exit_code(), 2);
        t.token_hmac_secret = Some("S".into());
        t.target = Target::Nats;
        assert_eq!(resolve(&t, 1).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn a_pid_given_twice_is_refused() {
        let mut t = target_args(&["ws://127.0.0.1:1/ws"]);
        t.server_pid = vec![10, 20, 10];
        assert_eq!(resolve(&t, 1).unwrap_err().exit_code(), 2);
        t.server_pid = vec![10, 20];
        assert!(resolve(&t, 1).is_ok());
    }
}
