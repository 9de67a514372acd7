//! The scenarios: opening subscriber groups (in this process or in worker
//! processes), publishing, and collecting what arrived into the
//! [`Report`](crate::report::Report)s of [`report`](crate::report).
//!
//! The parts, bottom up:
//! - `resolve`: target arguments with the automatic choices made
//!   (workers, source addresses).
//! - `procfs`: the servers' resident memory and CPU time.
//! - `group`: subscriber groups, here or in worker processes, and the
//!   hidden `worker` command.
//! - `runs`: one `connect` or `fanout` run into a report.
//! - this file: the runtime and the commands (`connect`, `fanout`,
//!   `sweep`, `compare`; `plot` is [`plot`]'s).

mod group;
mod procfs;
mod resolve;
mod runs;

use std::time::Duration;

use serde::Serialize;

pub use procfs::{read_cpu_ns, read_cpu_ns_sum, read_rss, read_rss_sum};

use self::group::worker_command;
use self::runs::{run_connect, run_fanout};
use crate::report::{
    check_auth, check_delivery, format_report, format_summary, summarize, table_header, table_row,
    Runs,
};
use crate::{
    plot, BenchArgs, BenchCommand, BenchError, BenchUrl, CompareArgs, ConnectArgs, FanoutArgs,
    SweepArgs, Target, TargetArgs,
};

/// Pause between runs of sweep and compare, so one run's closing
/// connections do not load the next.
const BETWEEN_RUNS: Duration = Duration::from_secs(2);

/// Runs `wavecast bench ...` on a multi-threaded tokio runtime.
pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    raise_open_file_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("starting the tokio runtime", e))?;
    rt.block_on(async move {
        match args.command {
            BenchCommand::Connect(a) => connect_command(a).await,
            BenchCommand::Fanout(a) => fanout_command(a).await,
            BenchCommand::Sweep(a) => sweep_command(a).await,
            BenchCommand::Compare(a) => compare_command(a).await,
            BenchCommand::Plot(a) => plot::plot_files(&a.inputs, &a.out),
            BenchCommand::Worker(a) => worker_command(a).await,
        }
    })
}

/// Raises the soft open-file limit to the hard one: every connection is a
/// file descriptor.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit the calls read and write; no other
    // pointers are involved.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn write_json<T: Serialize>(
    path: &Option<std::path::PathBuf>,
    value: &T,
) -> Result<(), BenchError> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(path, text)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

async fn connect_command(mut a: ConnectArgs) -> Result<(), BenchError> {
    if let Some(rate) = a.rate {
        a.target.pacing.connect_rate = rate;
    }
    let report = run_connect(&a.target, a.connections).await?;
    print!("{}", format_report(&report));
    write_json(&a.json, &report)?;
    check_auth(std::slice::from_ref(&report))
}

async fn fanout_command(a: FanoutArgs) -> Result<(), BenchError> {
    let report = run_fanout(&a.target, a.subscribers, &a.load).await?;
    print!("{}", format_report(&report));
    write_json(&a.json, &report)?;
    check_auth(std::slice::from_ref(&report))?;
    check_delivery(std::slice::from_ref(&report))
}

async fn sweep_command(a: SweepArgs) -> Result<(), BenchError> {
    let mut runs = Runs {
        kind: "sweep".into(),
        ..Runs::default()
    };
    println!("{}", table_header());
    for (i, &n) in a.counts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(BETWEEN_RUNS).await;
        }
        let report = run_fanout(&a.target, n, &a.load).await?;
        println!("{}", table_row(&report));
        runs.runs.push(report);
    }
    write_json(&a.json, &runs)?;
    if let Some(out) = &a.plot {
        plot::plot_reports(&runs.runs, out)?;
    }
    check_auth(&runs.runs)?;
    check_delivery(&runs.runs)
}

fn parse_pairs(list: &[String], what: &str) -> Result<Vec<(String, String)>, BenchError> {
    list.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .ok_or_else(|| BenchError::Usage(format!("{what}: expected NAME=VALUE, got {s:?}")))
        })
        .collect()
}

async fn compare_command(a: CompareArgs) -> Result<(), BenchError> {
    let targets = parse_pairs(&a.targets, "--targets")?;
    let pids = parse_pairs(&a.pids, "--pids")?;
    let mut plan = Vec::new();
    for (name, url) in &targets {
        // `NAME+deflate`: the same target with compression offered.
        let (base, deflate) = match name.strip_suffix("+deflate") {
            Some(base) => (base, true),
            None => (name.as_str(), a.pacing.compression),
        };
        let target = Target::parse(base)
            .ok_or_else(|| BenchError::Usage(format!("unknown target {name:?}")))?;
        // One server may serve both NAME and NAME+deflate.
        let pid = match pids
            .iter()
            .find(|(n, _)| n == name)
            .or_else(|| pids.iter().find(|(n, _)| n == base))
        {
            Some((_, p)) => Some(
                p.parse::<u32>()
                    .map_err(|_| BenchError::Usage(format!("--pids: bad PID {p:?}")))?,
            ),
            None => None,
        };
        // One URL per target: ',' already separates the targets.
        let args = TargetArgs {
            target,
            url: vec![url.clone()],
            pacing: crate::PacingArgs {
                compression: deflate,
                ..a.pacing.clone()
            },
            server_pid: pid.into_iter().collect(),
            token_hmac_secret: None,
        };
        // Refuse a bad URL before any run starts.
        BenchUrl::parse(url, target)?;
        plan.push((name.clone(), args));
    }
    let mut runs = Runs {
        kind: "compare".into(),
        ..Runs::default()
    };
    let mut errors: Vec<(String, String)> = Vec::new();
    println!("{}", table_header());
    for round in 0..a.rounds.max(1) {
        for (name, args) in &plan {
            if !runs.runs.is_empty() || !errors.is_empty() {
                tokio::time::sleep(BETWEEN_RUNS).await;
            }
            match run_fanout(args, a.subscribers, &a.load).await {
                Ok(report) => {
                    println!("{}", table_row(&report));
                    runs.runs.push(report);
                }
                Err(e) => {
                    println!("{name:<12} round {round}: failed: {e}");
                    errors.push((name.clone(), e.to_string()));
                }
            }
        }
    }
    let names: Vec<&str> = plan.iter().map(|(name, _)| name.as_str()).collect();
    runs.summary = summarize(&runs.runs, &names, &errors);
    print!("{}", format_summary(&runs.summary, a.subscribers));
    write_json(&a.json, &runs)?;
    if let Some(out) = &a.plot {
        plot::plot_reports(&runs.runs, out)?;
    }
    check_delivery(&runs.runs)
}
