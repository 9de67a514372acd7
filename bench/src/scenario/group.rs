//! Subscriber groups: the subscribers of a run, opened in this process
//! ([`LocalGroup`]) or in worker processes (`wavecast bench worker`, when
//! one process's open-file limit is not enough), then told that everything
//! is published and collected into one [`GroupResult`]; and the worker's
//! side of that exchange.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::resolve::{resolve, source_for, Resolved};
use crate::client::{connect_subscriber, run_subscriber, user_for, Credentials};
use crate::stats::{now_ns, ConnectResult, GroupResult, Recorder};
use crate::{BenchError, LoadArgs, WorkerArgs, TOKEN_SECRET_ENV};

/// How long one connection may take to be subscribed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Subscribers held by this process.
pub(super) struct LocalGroup {
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
/// With a signer, every connection's token is signed before the first
/// connection starts, so the tool's signing is not in the measured time.
async fn open_local(
    r: &Resolved,
    n: usize,
    first_index: usize,
    publications: u64,
) -> Result<LocalGroup, BenchError> {
    let mut credentials: Vec<Option<Credentials>> = match &r.signer {
        Some(signer) => (first_index..first_index + n)
            .map(|index| signer.credentials(user_for(index)).map(Some))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    credentials.resize(n, None);
    let recorder = Arc::new(Recorder::new(publications));
    let permits = Arc::new(Semaphore::new(r.args.pacing.concurrency.max(1)));
    // Ok(negotiated compression) or Err((refused, why)).
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<bool, (bool, String)>>();
    let mut tasks = Vec::with_capacity(n);
    let started_ns = now_ns();
    let start = tokio::time::Instant::now();
    let finished_ns = Arc::new(AtomicU64::new(started_ns));
    for (i, credentials) in credentials.into_iter().enumerate() {
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
        let deflate = r.args.pacing.compression;
        let source = source_for(index, r.source_addrs, r.source_base);
        tasks.push(tokio::spawn(async move {
            let conn = tokio::time::timeout(
                CONNECT_TIMEOUT,
                connect_subscriber(target, &url, source, credentials.as_ref(), deflate),
            )
            .await;
            drop(credentials);
            drop(permit);
            match conn {
                Ok(Ok(conn)) => {
                    finished_ns.fetch_max(now_ns(), Ordering::Relaxed);
                    let _ = tx.send(Ok(conn.reader.deflate()));
                    let _ = run_subscriber(conn, recorder).await;
                }
                Ok(Err(e)) => {
                    let refused = matches!(e, BenchError::Auth(_));
                    let _ = tx.send(Err((refused, e.to_string())));
                }
                Err(_) => {
                    let _ = tx.send(Err((
                        false,
                        format!("not subscribed within {CONNECT_TIMEOUT:?}"),
                    )));
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
            Ok(deflate) => {
                connect.connected += 1;
                connect.compressed += u64::from(deflate);
            }
            Err((refused, e)) => {
                connect.failed += 1;
                connect.refused += u64::from(refused);
                first_error.get_or_insert(e);
            }
        }
        if connect.connected + connect.failed == n as u64 {
            break;
        }
    }
    connect.finished_ns = finished_ns.load(Ordering::Relaxed);
    Ok(LocalGroup {
        tasks,
        recorder,
        connect,
        first_error,
    })
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
pub(super) struct WorkerProc {
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
pub(super) enum Group {
    Local(LocalGroup),
    Workers(Vec<WorkerProc>),
}

/// Opens `n` subscribers; returns the group and the merged connect figures.
pub(super) async fn open_group(
    r: &Resolved,
    n: usize,
    load: &LoadArgs,
    publications: u64,
) -> Result<(Group, ConnectResult, Option<String>), BenchError> {
    if r.workers == 0 {
        let g = open_local(r, n, 0, publications).await?;
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
        // The token secret goes by the environment, not the command line
        // (which every user of the machine can read).
        match &r.args.token_hmac_secret {
            Some(secret) => cmd.env(TOKEN_SECRET_ENV, secret),
            None => cmd.env_remove(TOKEN_SECRET_ENV),
        };
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
        .args(r.args.pacing.compression.then_some("--compression"))
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
pub(super) async fn collect(
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
pub(super) async fn worker_command(a: WorkerArgs) -> Result<(), BenchError> {
    let mut r = resolve(&a.target, a.subscribers)?;
    // The parent chose these for all workers together.
    r.workers = 0;
    r.source_addrs = a.target.pacing.source_addrs;
    r.source_base = a.source_base;
    let g = open_local(&r, a.subscribers, a.first_index, a.publications).await?;
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
