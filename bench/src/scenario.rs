//! The scenarios: opening subscriber groups (in this process or in worker
//! processes), publishing, and collecting what arrived into the
//! [`Report`]s of [`report`](crate::report).

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::client::{connect_subscriber, publish, run_subscriber, PublishConfig};
use super::report::{
    check_delivery, format_report, format_summary, summarize, table_header, table_row, Report, Runs,
};
use super::stats::{
    now_ns, percentiles_of_sparse, percentiles_of_values, ConnectResult, GroupResult, Recorder,
};
use super::{
    plot, BenchArgs, BenchCommand, BenchError, BenchUrl, BenchUrls, CompareArgs, ConnectArgs,
    FanoutArgs, LoadArgs, PublishVia, SweepArgs, Target, TargetArgs, WorkerArgs,
    CONNECTIONS_PER_SOURCE_ADDRESS, MAX_CONNECTIONS_PER_PROCESS, SOURCE_POOL,
};

/// How long one connection may take to be subscribed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after the connections are open, before reading the server's
/// memory or publishing: lets the server (and a peer's garbage collector)
/// settle, and lets peers that register a connection after the handshake
/// finish doing so.
const SETTLE: Duration = Duration::from_secs(1);
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

/// Target arguments with the automatic choices made.
#[derive(Debug, Clone)]
struct Resolved {
    args: TargetArgs,
    urls: BenchUrls,
    workers: usize,
    source_addrs: usize,
    source_base: usize,
}

fn resolve(t: &TargetArgs, connections: usize) -> Result<Resolved, BenchError> {
    let urls = BenchUrls::parse(&t.url, t.target)?;
    // A PID given twice would count that server's memory twice.
    for (i, pid) in t.server_pid.iter().enumerate() {
        if t.server_pid.get(..i).is_some_and(|seen| seen.contains(pid)) {
            return Err(BenchError::Usage(format!(
                "--server-pid: {pid} given twice"
            )));
        }
    }
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
fn source_for(index: usize, count: usize, base: usize) -> Option<Ipv4Addr> {
    if count == 0 {
        return None;
    }
    let offset = u32::try_from((base % SOURCE_POOL + index % count) % SOURCE_POOL).ok()?;
    Some(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(127, 0, 0, 2)) + offset,
    ))
}

// ---------------------------------------------------------------------------
// Subscriber groups
// ---------------------------------------------------------------------------

/// Subscribers held by this process.
struct LocalGroup {
    tasks: Vec<JoinHandle<()>>,
    recorder: Arc<Recorder>,
    connect: ConnectResult,
    first_error: Option<String>,
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens `n` subscribers (indices `first_index..`), paced by the connect
/// rate and concurrency, and returns once each is subscribed or failed.
async fn open_local(r: &Resolved, n: usize, first_index: usize, publications: u64) -> LocalGroup {
    let recorder = Arc::new(Recorder::new(publications));
    let permits = Arc::new(Semaphore::new(r.args.pacing.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut tasks = Vec::with_capacity(n);
    let started_ns = now_ns();
    let start = tokio::time::Instant::now();
    let finished_ns = Arc::new(AtomicU64::new(started_ns));
    for i in 0..n {
        if r.args.pacing.connect_rate > 0.0 {
            tokio::time::sleep_until(
                start + Duration::from_secs_f64(i as f64 / r.args.pacing.connect_rate),
            )
            .await;
        }
        // The semaphore is never closed.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (tx, recorder, finished_ns) = (tx.clone(), recorder.clone(), finished_ns.clone());
        let index = first_index + i;
        let (target, url) = (r.args.target, r.urls.for_connection(index).clone());
        let source = source_for(index, r.source_addrs, r.source_base);
        tasks.push(tokio::spawn(async move {
            let conn =
                tokio::time::timeout(CONNECT_TIMEOUT, connect_subscriber(target, &url, source))
                    .await;
            drop(permit);
            match conn {
                Ok(Ok(conn)) => {
                    finished_ns.fetch_max(now_ns(), Ordering::Relaxed);
                    let _ = tx.send(Ok(()));
                    let _ = run_subscriber(conn, recorder).await;
                }
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e.to_string()));
                }
                Err(_) => {
                    let _ = tx.send(Err(format!("not subscribed within {CONNECT_TIMEOUT:?}")));
                }
            }
        }));
    }
    drop(tx);
    let mut connect = ConnectResult {
        started_ns,
        ..ConnectResult::default()
    };
    let mut first_error = None;
    while let Some(result) = rx.recv().await {
        match result {
            Ok(()) => connect.connected += 1,
            Err(e) => {
                connect.failed += 1;
                first_error.get_or_insert(e);
            }
        }
        if connect.connected + connect.failed == n as u64 {
            break;
        }
    }
    connect.finished_ns = finished_ns.load(Ordering::Relaxed);
    LocalGroup {
        tasks,
        recorder,
        connect,
        first_error,
    }
}

/// Waits until every subscriber has the last publication, or nothing has
/// arrived for `timeout` since `published_ns` and the last delivery.
async fn drain(recorder: &Recorder, subscribers: u64, published_ns: u64, timeout: Duration) {
    let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    loop {
        if recorder.finished() as u64 >= subscribers {
            return;
        }
        let quiet_since = recorder.last_delivery_ns().max(published_ns);
        if now_ns().saturating_sub(quiet_since) > timeout_ns {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The first line a worker prints: its subscribers are open.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerReady {
    connect: ConnectResult,
    first_error: Option<String>,
}

/// A worker process holding part of the subscribers.
struct WorkerProc {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl WorkerProc {
    async fn next_line(&mut self) -> Result<String, BenchError> {
        match self.lines.next_line().await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(BenchError::Worker("exited without answering".into())),
            Err(e) => Err(BenchError::io("reading a worker's output", e)),
        }
    }
}

/// Subscribers, here or in workers.
enum Group {
    Local(LocalGroup),
    Workers(Vec<WorkerProc>),
}

/// Opens `n` subscribers; returns the group and the merged connect figures.
async fn open_group(
    r: &Resolved,
    n: usize,
    load: &LoadArgs,
    publications: u64,
) -> Result<(Group, ConnectResult, Option<String>), BenchError> {
    if r.workers == 0 {
        let g = open_local(r, n, 0, publications).await;
        let (c, e) = (g.connect, g.first_error.clone());
        return Ok((Group::Local(g), c, e));
    }
    // /proc/self/exe is this process's own image even when a rebuild has
    // replaced the file meanwhile (current_exe() would then name a deleted
    // path).
    let proc_exe = std::path::Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().map_err(|e| BenchError::io("finding this executable", e))?
    };
    let k = r.workers;
    let mut procs = Vec::with_capacity(k);
    let mut first_index = 0;
    for w in 0..k {
        // Spread n as evenly as possible.
        let share = n / k + usize::from(w < n % k);
        let mut cmd = tokio::process::Command::new(&exe);
        // Every URL: the worker picks each connection's server from its
        // index among all of them (--first-index), as this process would.
        cmd.args([
            "bench",
            "worker",
            "--target",
            r.args.target.name(),
            "--url",
            &r.args.url.join(","),
        ])
        .arg("--subscribers")
        .arg(share.to_string())
        .arg("--first-index")
        .arg(first_index.to_string())
        .arg("--publications")
        .arg(publications.to_string())
        .arg("--drain-timeout")
        .arg(load.drain_timeout.to_string())
        .arg("--connect-rate")
        .arg((r.args.pacing.connect_rate / k as f64).to_string())
        .arg("--concurrency")
        .arg((r.args.pacing.concurrency / k).max(1).to_string())
        .arg("--source-addrs")
        .arg(r.source_addrs.to_string())
        .arg("--source-base")
        .arg(r.source_base.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| BenchError::io("starting a worker", e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BenchError::Worker("no stdio pipes".into()));
        };
        procs.push(WorkerProc {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
        first_index += share;
    }
    let mut connect = ConnectResult::default();
    let mut first_error = None;
    for p in &mut procs {
        let line = p.next_line().await?;
        let ready: WorkerReady = serde_json::from_str(&line)?;
        connect.merge(&ready.connect);
        if let Some(e) = ready.first_error {
            first_error.get_or_insert(e);
        }
    }
    Ok((Group::Workers(procs), connect, first_error))
}

/// Tells the group everything is published and collects its deliveries.
async fn collect(
    group: Group,
    connected: u64,
    published_ns: u64,
    timeout: Duration,
) -> Result<GroupResult, BenchError> {
    match group {
        Group::Local(g) => {
            if g.recorder.result().counts.is_empty() {
                return Ok(g.recorder.result());
            }
            drain(&g.recorder, connected, published_ns, timeout).await;
            Ok(g.recorder.result())
        }
        Group::Workers(mut procs) => {
            for p in &mut procs {
                p.stdin
                    .write_all(b"done\n")
                    .await
                    .map_err(|e| BenchError::io("writing to a worker", e))?;
            }
            let mut merged = GroupResult::default();
            for p in &mut procs {
                let line = p.next_line().await?;
                let part: GroupResult = serde_json::from_str(&line)?;
                merged.merge(&part);
            }
            for p in &mut procs {
                // The worker exits after its answer; its status adds nothing.
                let _ = p.child.wait().await;
            }
            Ok(merged)
        }
    }
}

/// `wavecast bench worker`: open, say ready, wait for `done`, drain, answer.
async fn worker_command(a: WorkerArgs) -> Result<(), BenchError> {
    let mut r = resolve(&a.target, a.subscribers)?;
    // The parent chose these for all workers together.
    r.workers = 0;
    r.source_addrs = a.target.pacing.source_addrs;
    r.source_base = a.source_base;
    let g = open_local(&r, a.subscribers, a.first_index, a.publications).await;
    let ready = WorkerReady {
        connect: g.connect,
        first_error: g.first_error.clone(),
    };
    print_line(&serde_json::to_string(&ready)?)?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    // `done` or end of input: either way the parent has finished publishing.
    let _ = stdin.next_line().await;
    let published_ns = now_ns();
    if a.publications > 0 {
        drain(
            &g.recorder,
            g.connect.connected,
            published_ns,
            Duration::from_secs_f64(a.drain_timeout.max(0.0)),
        )
        .await;
    }
    print_line(&serde_json::to_string(&g.recorder.result())?)?;
    Ok(())
}

fn print_line(line: &str) -> Result<(), BenchError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| BenchError::io("writing to stdout", e))
}

// ---------------------------------------------------------------------------
// Server memory
// ---------------------------------------------------------------------------

/// The resident memory of `pid` from /proc/PID/status, in bytes.
pub fn read_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
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
async fn settled_rss(pids: &[u32]) -> Option<u64> {
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

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Fills the connection part of a report.
fn connect_figures(report: &mut Report, connect: &ConnectResult, rss: (Option<u64>, Option<u64>)) {
    report.connected = connect.connected;
    report.failed_connections = connect.failed;
    let took = connect.finished_ns.saturating_sub(connect.started_ns);
    report.connect_seconds = seconds(took);
    report.handshakes_per_sec = if took > 0 {
        connect.connected as f64 / seconds(took)
    } else {
        0.0
    };
    report.server_rss_before = rss.0;
    report.server_rss_after = rss.1;
    report.server_bytes_per_connection = match rss {
        (Some(b), Some(a)) if connect.connected > 0 => {
            Some((a as f64 - b as f64) / connect.connected as f64)
        }
        _ => None,
    };
}

/// `connect`: open idle subscribed connections, measure, close.
async fn run_connect(t: &TargetArgs, connections: usize) -> Result<Report, BenchError> {
    let r = resolve(t, connections)?;
    let before = settled_rss(&t.server_pid).await;
    let load = LoadArgs {
        publications: 0,
        publish_rate: 0.0,
        max: false,
        window: 1,
        payload: 0,
        publish_via: PublishVia::Ws,
        api_key: None,
        drain_timeout: 0.0,
    };
    let (group, connect, first_error) = open_group(&r, connections, &load, 0).await?;
    let after = settled_rss(&t.server_pid).await;
    let mut report = Report {
        scenario: "connect".into(),
        target: t.target.name().into(),
        url: t.url.join(","),
        subscribers: connections as u64,
        workers: r.workers as u64,
        first_error,
        ..Report::default()
    };
    connect_figures(&mut report, &connect, (before, after));
    collect(group, connect.connected, now_ns(), Duration::ZERO).await?;
    Ok(report)
}

/// `fanout`: N subscribers, one publisher, everything measured.
async fn run_fanout(
    t: &TargetArgs,
    subscribers: usize,
    load: &LoadArgs,
) -> Result<Report, BenchError> {
    let r = resolve(t, subscribers)?;
    if load.publish_via == PublishVia::Api {
        if t.target != Target::Wavecast {
            return Err(BenchError::Usage(
                "--publish-via api is for --target wavecast".into(),
            ));
        }
        if load.api_key.is_none() {
            return Err(BenchError::Usage(
                "--publish-via api needs --api-key".into(),
            ));
        }
    }
    if load.publications == 0 {
        return Err(BenchError::Usage(
            "--publications must be at least 1".into(),
        ));
    }
    let before = settled_rss(&t.server_pid).await;
    let (group, connect, first_error) =
        open_group(&r, subscribers, load, load.publications).await?;
    let after = if t.server_pid.is_empty() {
        // Settle anyway: some servers register a connection just after
        // the handshake.
        tokio::time::sleep(SETTLE).await;
        None
    } else {
        settled_rss(&t.server_pid).await
    };
    let mut report = Report {
        scenario: "fanout".into(),
        target: t.target.name().into(),
        url: t.url.join(","),
        subscribers: subscribers as u64,
        workers: r.workers as u64,
        first_error,
        publications: load.publications,
        payload_bytes: load.payload as u64,
        publish_rate: (!load.max).then_some(load.publish_rate),
        publish_via: match load.publish_via {
            PublishVia::Ws => "ws".into(),
            PublishVia::Api => "api".into(),
        },
        ..Report::default()
    };
    connect_figures(&mut report, &connect, (before, after));
    if connect.connected == 0 {
        return Err(BenchError::Server(format!(
            "no subscriber connected: {}",
            report.first_error.as_deref().unwrap_or("no error recorded")
        )));
    }
    // One publisher, on the first server: in a cluster the others get its
    // publications through the backbone, which is what the run measures.
    let cfg = PublishConfig {
        target: t.target,
        url: r.urls.first().clone(),
        via: load.publish_via,
        api_key: load.api_key.clone(),
        publications: load.publications,
        rate: (!load.max).then_some(load.publish_rate),
        window: load.window,
        payload: load.payload,
    };
    let published = publish(&cfg).await?;
    let result = collect(
        group,
        connect.connected,
        published.last_ns,
        Duration::from_secs_f64(load.drain_timeout.max(0.0)),
    )
    .await?;
    drop(published.connection);
    fill_deliveries(&mut report, &result, connect.connected, published.first_ns);
    Ok(report)
}

/// Fills the delivery part of a report from the merged deliveries.
fn fill_deliveries(report: &mut Report, result: &GroupResult, connected: u64, first_ns: u64) {
    report.latency_delivery_ns = percentiles_of_sparse(&result.histogram);
    let mut last: Vec<u64> = result
        .counts
        .iter()
        .zip(&result.max_latency_ns)
        .filter(|(c, _)| **c > 0)
        .map(|(_, l)| *l)
        .collect();
    report.latency_last_ns = percentiles_of_values(&mut last);
    report.deliveries = result.deliveries;
    report.expected_deliveries = connected.saturating_mul(result.counts.len() as u64);
    report.lost = result
        .counts
        .iter()
        .map(|&c| connected.saturating_sub(u64::from(c)))
        .sum();
    report.duplicated = result
        .counts
        .iter()
        .map(|&c| u64::from(c).saturating_sub(connected))
        .sum();
    report.out_of_order = result.out_of_order;
    report.unexpected = result.unexpected;
    let took = result.last_delivery_ns.saturating_sub(first_ns);
    report.duration_s = seconds(took);
    report.deliveries_per_sec = if took > 0 {
        result.deliveries as f64 / seconds(took)
    } else {
        0.0
    };
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
    write_json(&a.json, &report)
}

async fn fanout_command(a: FanoutArgs) -> Result<(), BenchError> {
    let report = run_fanout(&a.target, a.subscribers, &a.load).await?;
    print!("{}", format_report(&report));
    write_json(&a.json, &report)?;
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
    check_delivery(&runs.runs)
}

// ---------------------------------------------------------------------------
// compare
// ---------------------------------------------------------------------------

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
        let target = Target::parse(name)
            .ok_or_else(|| BenchError::Usage(format!("unknown target {name:?}")))?;
        let pid = match pids.iter().find(|(n, _)| n == name) {
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
            pacing: a.pacing.clone(),
            server_pid: pid.into_iter().collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
            },
            server_pid: Vec::new(),
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
    fn a_pid_given_twice_is_refused() {
        let mut t = target_args(&["ws://127.0.0.1:1/ws"]);
        t.server_pid = vec![10, 20, 10];
        assert_eq!(resolve(&t, 1).unwrap_err().exit_code(), 2);
        t.server_pid = vec![10, 20];
        assert!(resolve(&t, 1).is_ok());
    }

    #[test]
    fn memory_is_summed_over_every_pid_or_not_reported() {
        let me = std::process::id();
        assert_eq!(read_rss_sum(&[]), None);
        assert!(read_rss_sum(&[me]).is_some_and(|b| b > 0));
        // Above the kernel's largest pid_max: no such process, no partial sum.
        assert_eq!(read_rss_sum(&[me, u32::MAX]), None);
    }

    #[test]
    fn deliveries_are_counted_against_every_connected_subscriber() {
        let result = GroupResult {
            counts: vec![3, 2, 4],
            max_latency_ns: vec![5, 6, 7],
            deliveries: 9,
            out_of_order: 1,
            last_delivery_ns: 2_000_000_000,
            ..GroupResult::default()
        };
        let mut r = Report::default();
        fill_deliveries(&mut r, &result, 3, 1_000_000_000);
        assert_eq!(r.expected_deliveries, 9);
        assert_eq!(r.lost, 1);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.out_of_order, 1);
        assert_eq!(r.latency_last_ns.max, 7);
        assert!((r.deliveries_per_sec - 9.0).abs() < 1e-9);
        assert_eq!(r.delivery_faults(), 3);
    }
}
