//! `wavecast bench`: the load tool. It measures a WebSocket pub/sub server
//! (wavecast itself, or one of the peer servers it is compared with) by the
//! figures this field compares servers by: handshakes per second, resident
//! memory per idle subscribed connection, fan-out latency (per delivery and
//! to the last subscriber of each publication) and deliveries per second,
//! plus the count of lost, duplicated and out-of-order deliveries.
//!
//! Its own crate, outside the server: it uses nothing of wavecast but the
//! client side of `wavecast_core` (`frame`, `handshake::ClientHandshake`,
//! `protocol::{encode_request, decode_server_message}`), and the `wavecast`
//! binary only parses [`BenchArgs`] and calls [`run`].
//!
//! How the parts fit, bottom up (no module imports one above it):
//! - this file: the command line ([`BenchArgs`] and each scenario's
//!   arguments), the [`Target`] servers, loopback-only URLs ([`BenchUrl`])
//!   and [`BenchError`] with its exit codes.
//! - [`stats`] records deliveries into pre-allocated shared counters (one
//!   slot per publication, one log-linear latency histogram) and turns them
//!   into percentiles and per-group results.
//! - [`client`] speaks each target's wire protocol over a raw WebSocket on
//!   a tokio `TcpStream` (frames from `wavecast_core::frame`), so the tool
//!   costs little per message and the server is what gets measured:
//!   [`client::connect`] (TCP and the opening handshake),
//!   [`client::marker`] (the sequence number and send time in every
//!   publication's data), [`client::reader`] (frames in, each target's
//!   messages as [`client::Event`]s; wavecast's decoded by the core),
//!   [`client::writer`] (masked frames out), [`client::subscriber`] and
//!   [`client::publisher`].
//! - [`report`] is what a run produced: [`report::Report`], the
//!   [`report::Runs`] of a sweep or compare with compare's summary, the
//!   human tables, and the check that fails a wavecast run with faults.
//! - [`plot`] draws fan-out latency against subscribers from reports as SVG
//!   (`plotters`, SVG only).
//! - [`scenario`] runs `connect`, `fanout`, `sweep`, `compare`, `plot` and
//!   the hidden `worker` (a child process holding part of the subscribers
//!   when one process's open-file limit is not enough), and fills reports:
//!   its `resolve` (workers and source addresses chosen), `memory` (the
//!   servers' RSS), `group` (subscribers here or in workers) and `runs`
//!   (one connect or fan-out run); the commands are in `scenario` itself.
//!
//! One run may spread its subscribers over several servers of one cluster
//! (`--url A,B,...`, `--server-pid P,Q,...`): connection i goes to server
//! i mod n, the publisher to the first, and memory is the servers' sum, so
//! fan-out latency to the last subscriber includes the backbone.
//!
//! The tool only ever connects to loopback addresses: it is a load
//! generator, and pointing it at someone else's server by mistake must be
//! impossible.

pub mod client;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod stats;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

pub use scenario::run;

/// Subscribers one process holds at most before `--workers` is chosen
/// automatically: the machine allows 20,000 open files per process, and the
/// tool needs some to spare (stdio, the publisher, the runtime's own fds).
pub const MAX_CONNECTIONS_PER_PROCESS: usize = 9_000;

/// Connections per source address above which the tool spreads connections
/// over 127.0.0.2, 127.0.0.3, ...: the kernel's ephemeral port range (32768
/// to 60999 by default) holds about 28,000 ports per source address, and
/// the connections of earlier runs hold theirs for a minute in TIME_WAIT
/// (measured: 10,000-subscriber runs against five servers in a row ran
/// 127.0.0.1 out of ports, "Cannot assign requested address").
pub const CONNECTIONS_PER_SOURCE_ADDRESS: usize = 5_000;

/// Source addresses the tool picks from: 127.0.0.2 to 127.0.0.241. Each
/// run starts at another one, so it does not meet the previous run's
/// TIME_WAIT ports.
pub const SOURCE_POOL: usize = 240;

/// The environment variable `--token-hmac-secret` is also read from (and
/// handed to worker processes in, rather than on their command line, which
/// every user of the machine can read).
pub const TOKEN_SECRET_ENV: &str = "WAVECAST_BENCH_TOKEN_HMAC_SECRET";

/// Channel every scenario uses.
pub const CHANNEL: &str = "bench";

/// `wavecast bench`: arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The scenario.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The scenarios of `wavecast bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Open N subscribed idle connections; report handshakes per second and
    /// (with --server-pid) the servers' resident memory per connection.
    Connect(ConnectArgs),
    /// N subscribers on one channel, one publisher; report fan-out latency,
    /// deliveries per second, lost/duplicated/out-of-order deliveries.
    Fanout(FanoutArgs),
    /// `fanout` over a list of subscriber counts.
    Sweep(SweepArgs),
    /// The same fan-out scenario against several servers, alternating them
    /// round by round; every figure as a ratio to wavecast's.
    Compare(CompareArgs),
    /// Draw fan-out latency against subscribers from JSON reports.
    Plot(PlotArgs),
    /// Internal: a child process holding part of the subscribers.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// The server a run talks to (each speaks its own protocol: wavecast's is
/// docs/PROTOCOL.md; the peers' are described where they are installed,
/// see `PEERS_DIR` in benches/compare.sh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// wavecast's own protocol (subscribe/publish commands, `pub` pushes).
    Wavecast,
    /// Node.js + ws: every text message broadcast to every client.
    Ws,
    /// Node.js + Socket.IO (EIO 4, WebSocket transport only).
    Socketio,
    /// nats-server's WebSocket listener (NATS text protocol in binary frames).
    Nats,
    /// Rust + tokio-tungstenite: every text message broadcast to every client.
    Tungstenite,
}

impl Target {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Wavecast => "wavecast",
            Target::Ws => "ws",
            Target::Socketio => "socketio",
            Target::Nats => "nats",
            Target::Tungstenite => "tungstenite",
        }
    }

    /// The request path when the URL names none.
    pub fn default_path(self) -> &'static str {
        match self {
            Target::Wavecast => "/ws",
            Target::Socketio => "/socket.io/?EIO=4&transport=websocket",
            Target::Ws | Target::Nats | Target::Tungstenite => "/",
        }
    }

    /// Parses a target name.
    pub fn parse(name: &str) -> Option<Target> {
        <Target as ValueEnum>::from_str(name, true).ok()
    }
}

/// How the wavecast publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishVia {
    /// `publish` commands over the publisher's WebSocket.
    Ws,
    /// `POST /api/publish` over one keep-alive HTTP/1.1 connection
    /// (pipelined up to the window).
    Api,
}

/// How connections are opened: pace, concurrency, processes, source
/// addresses. Shared by every scenario that opens connections.
#[derive(Debug, Clone, Args)]
pub struct PacingArgs {
    /// New connections per second (0 = as fast as --concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Handshakes in flight at once (the server's accept backlog is finite;
    /// overflowing it turns into 1 s SYN retries that measure the kernel).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Child processes holding the subscribers (0 = one process up to
    /// 9,000 connections, more above).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Spread connections over this many source addresses from 127.0.0.2
    /// up (0 = one per 5,000 connections above 5,000, none below).
    #[arg(long, default_value_t = 0)]
    pub source_addrs: usize,
    /// Subscribers offer permessage-deflate (RFC 7692) with no context
    /// takeover either way, and inflate what arrives compressed; the
    /// report counts the bytes they receive either way.
    #[arg(long)]
    pub compression: bool,
}

/// Where to connect: target, URL(s), connection pacing.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The server's protocol.
    #[arg(long, value_enum, default_value = "wavecast")]
    pub target: Target,
    /// `ws://HOST:PORT/PATH`; HOST must be 127.x.x.x or localhost. Without a
    /// path, the target's usual one (`/ws` for wavecast, Socket.IO's
    /// `/socket.io/?EIO=4&transport=websocket`, `/` otherwise). Several
    /// comma-separated URLs (servers of one cluster, all of this target)
    /// spread the subscribers evenly: connection i goes to URL i mod n; the
    /// publisher uses the first.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8000")]
    pub url: Vec<String>,
    /// Connection pacing and spreading.
    #[command(flatten)]
    pub pacing: PacingArgs,
    /// The server's PID, or several comma-separated (one per server of a
    /// cluster): their resident memory, summed, is read from /proc before
    /// and after the connections are open.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// wavecast only: authenticate every connection with a `connect`
    /// command before it subscribes, each with its own HS256 token signed
    /// with this secret (user `u0`, `u1`, ... by connection index; the
    /// publisher's user is `publisher`; expiry in 1 h). A refused `connect`
    /// fails the run. Without it, no `connect` is sent (anonymous).
    #[arg(long, env = TOKEN_SECRET_ENV, hide_env_values = true)]
    pub token_hmac_secret: Option<String>,
}

/// `wavecast bench connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Target, URL and pacing.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Idle subscribed connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// New connections per second (same as --connect-rate).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The fan-out scenario's parameters (shared by fanout, sweep and compare).
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Publications to send.
    #[arg(long, default_value_t = 100)]
    pub publications: u64,
    /// Publications per second.
    #[arg(long = "rate", default_value_t = 100.0, conflicts_with = "max")]
    pub publish_rate: f64,
    /// Publish as fast as the server acknowledges, keeping --window
    /// publications unacknowledged (wavecast: publish replies; peers: the
    /// publisher's own copy).
    #[arg(long)]
    pub max: bool,
    /// Unacknowledged publications allowed with --max.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Bytes of each publication's data (at least the sequence number and
    /// timestamp it carries).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Each publication's data is a JSON object of --payload bytes (rows of
    /// a trading screen: symbols, prices, sizes, times; about 3x smaller
    /// under deflate), not a string of `x`s (which compresses 100-fold).
    #[arg(long)]
    pub json_data: bool,
    /// wavecast only: publish over the WebSocket or the HTTP API.
    #[arg(long, value_enum, default_value = "ws")]
    pub publish_via: PublishVia,
    /// API key for --publish-via api.
    #[arg(long, env = "WAVECAST_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seconds without a delivery, once everything is published, after which
    /// missing deliveries count as lost.
    #[arg(long, default_value_t = 3.0)]
    pub drain_timeout: f64,
}

/// `wavecast bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Target, URL and pacing.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Subscribers on the channel.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publisher parameters.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `wavecast bench sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Target, URL and pacing.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Subscriber counts, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,100,1000,5000,10000,15000"
    )]
    pub counts: Vec<usize>,
    /// Publisher parameters.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Write the reports as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw latency against subscribers to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `wavecast bench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// `NAME=URL,...`, NAME one of the targets (wavecast, ws, socketio,
    /// nats, tungstenite), e.g. `wavecast=ws://127.0.0.1:8000/ws,ws=ws://127.0.0.1:9001/`;
    /// `NAME+deflate` is the same target with its subscribers offering
    /// permessage-deflate (`--compression` for that target alone), so one
    /// run alternates compression off and on. `--pids` may name the
    /// server once, by NAME.
    #[arg(long, value_delimiter = ',', required = true)]
    pub targets: Vec<String>,
    /// `NAME=PID,...`: server PIDs, for memory per connection.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<String>,
    /// Rounds; each round runs every target once, in the order given.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Subscribers on the channel.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Publisher parameters.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Connection pacing and spreading, the same for every target.
    #[command(flatten)]
    pub pacing: PacingArgs,
    /// Write every run and the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw latency against subscribers to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `wavecast bench plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// JSON reports written by fanout, sweep or compare.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// `wavecast bench worker` (hidden): the parent's protocol is one JSON line
/// on stdout once subscribed, then one line on stdin (`done`: everything is
/// published), then one JSON line with the results.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Target, URL and pacing (the parent's, pacing already divided).
    #[command(flatten)]
    pub target: TargetArgs,
    /// Subscribers this worker holds.
    #[arg(long)]
    pub subscribers: usize,
    /// Index of this worker's first connection among all of them (picks
    /// the source address).
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Publications the parent will send.
    #[arg(long, default_value_t = 0)]
    pub publications: u64,
    /// Seconds without a delivery after `done` before giving up on the rest.
    #[arg(long, default_value_t = 3.0)]
    pub drain_timeout: f64,
    /// The parent's first source address (offset in the pool).
    #[arg(long, default_value_t = 0)]
    pub source_base: usize,
}

/// Everything that can stop a bench run. Each says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The user asked for something the tool will not do (bad URL,
    /// non-loopback host, bad flag combination).
    #[error("usage: {0}")]
    Usage(String),
    /// A socket or file operation failed on this machine.
    #[error("{what}: {source}")]
    Io {
        /// What the tool was doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server refused the WebSocket handshake or a command, or broke
    /// its own protocol.
    #[error("server: {0}")]
    Server(String),
    /// The server refused a connection's token (`connect` answered with an
    /// error, or for another user than the token's).
    #[error("authentication: {0}")]
    Auth(String),
    /// The server lost, duplicated or reordered deliveries (wavecast
    /// promises none of these).
    #[error("server broke delivery: {0}")]
    Delivery(String),
    /// A worker process failed or answered something unreadable.
    #[error("worker: {0}")]
    Worker(String),
    /// Drawing the plot failed.
    #[error("plot: {0}")]
    Plot(String),
    /// A JSON report could not be read or written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    /// The process exit code: 2 for usage errors, 3 when the server broke
    /// its delivery promise, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::Usage(_) => 2,
            BenchError::Delivery(_) => 3,
            BenchError::Io { .. }
            | BenchError::Server(_)
            | BenchError::Auth(_)
            | BenchError::Worker(_)
            | BenchError::Plot(_)
            | BenchError::Json(_) => 1,
        }
    }

    /// Wraps an I/O error with what the tool was doing.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> BenchError {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}

/// A parsed, loopback-only WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header value (as written in the URL).
    pub host: String,
    /// Request target: path and query.
    pub path: String,
}

impl BenchUrl {
    /// Parses `ws://HOST[:PORT][/PATH]`. Refuses any host that is not
    /// `localhost` or an IPv4 address in 127.0.0.0/8, and `wss://` (the
    /// tool speaks plain TCP to a local server).
    pub fn parse(url: &str, target: Target) -> Result<BenchUrl, BenchError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| BenchError::Usage(format!("{url}: only ws:// URLs are supported")))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| BenchError::Usage(format!("{url}: bad port {p:?}")))?;
                (h, port)
            }
            None => (authority, 80),
        };
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            match host.parse::<Ipv4Addr>() {
                Ok(ip) if ip.octets()[0] == 127 => ip,
                _ => {
                    return Err(BenchError::Usage(format!(
                        "{url}: the load tool only connects to 127.x.x.x or localhost"
                    )))
                }
            }
        };
        let path = match path {
            "" | "/" => target.default_path().to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(BenchUrl {
            addr: SocketAddr::V4(SocketAddrV4::new(ip, port)),
            host: authority.to_string(),
            path,
        })
    }
}

/// The servers of one target a run connects to: at least one, each a
/// parsed loopback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchUrls {
    /// The first URL: the publisher's, and connection 0's.
    first: BenchUrl,
    /// The others, in the order given.
    rest: Vec<BenchUrl>,
}

impl BenchUrls {
    /// Parses every URL of a `--url` list (see [`BenchUrl::parse`]); an
    /// empty list, or an empty entry (`a,,b`), is a usage error.
    pub fn parse(urls: &[String], target: Target) -> Result<BenchUrls, BenchError> {
        let mut parsed = urls.iter().map(|u| BenchUrl::parse(u.trim(), target));
        let first = parsed
            .next()
            .ok_or_else(|| BenchError::Usage("--url: no URL given".into()))??;
        let rest = parsed.collect::<Result<Vec<_>, _>>()?;
        Ok(BenchUrls { first, rest })
    }

    /// How many servers.
    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Always false: there is at least one URL. (Clippy pairs `len` with
    /// `is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The publisher's URL (and that of anything else a run opens once).
    pub fn first(&self) -> &BenchUrl {
        &self.first
    }

    /// The URL of connection `index` (counted over the whole run, not per
    /// worker): round robin, so subscribers spread evenly and a worker that
    /// starts at `--first-index` picks the same server the parent would.
    pub fn for_connection(&self, index: usize) -> &BenchUrl {
        match index % self.len() {
            0 => &self.first,
            // In bounds: 1 <= i < len = 1 + rest.len().
            i => self.rest.get(i - 1).unwrap_or(&self.first),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `TargetArgs` alone on a command line, as every scenario flattens it.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        target: TargetArgs,
    }

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
    }

    #[test]
    fn one_url_is_the_default_and_serves_every_connection() {
        let c = cli(&[]).unwrap();
        assert_eq!(c.target.url, ["ws://127.0.0.1:8000"]);
        assert!(c.target.server_pid.is_empty());
        let urls = BenchUrls::parse(&c.target.url, Target::Wavecast).unwrap();
        assert_eq!(urls.len(), 1);
        for i in [0, 1, 7, 99_999] {
            assert_eq!(urls.for_connection(i), urls.first());
        }
        assert_eq!(urls.first().addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(urls.first().path, "/ws");
    }

    #[test]
    fn several_urls_take_connections_round_robin() {
        let c = cli(&[
            "--url",
            "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws,ws://localhost:3",
        ])
        .unwrap();
        let urls = BenchUrls::parse(&c.target.url, Target::Wavecast).unwrap();
        assert_eq!(urls.len(), 3);
        let port = |i| urls.for_connection(i).addr.port();
        assert_eq!(urls.first().addr.port(), 1);
        assert_eq!((0..7).map(port).collect::<Vec<_>>(), [1, 2, 3, 1, 2, 3, 1]);
        // Counted over the whole run: a worker starting at index 8,334
        // picks what the parent's numbering gives.
        assert_eq!(port(8_334), [1, 2, 3][8_334 % 3]);
        // Even spread: 100,000 over 3 differs by at most one.
        let mut per = [0usize; 4];
        for i in 0..100_000 {
            per[usize::from(port(i))] += 1;
        }
        assert_eq!(per, [0, 33_334, 33_333, 33_333]);
        assert_eq!(urls.for_connection(2).path, "/ws");
        assert_eq!(urls.for_connection(2).host, "localhost:3");
    }

    #[test]
    fn every_url_of_a_list_must_be_loopback() {
        for list in [
            vec![
                "ws://127.0.0.1:1/ws".to_string(),
                "ws://10.0.0.1:2/ws".into(),
            ],
            vec!["ws://127.0.0.1:1/ws".to_string(), String::new()],
            vec![],
        ] {
            let err = BenchUrls::parse(&list, Target::Wavecast).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{list:?}: {err}");
        }
        assert!(cli(&["--url", "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws"]).is_ok());
    }

    #[test]
    fn the_token_secret_is_optional_and_absent_by_default() {
        if std::env::var_os(TOKEN_SECRET_ENV).is_none() {
            assert_eq!(cli(&[]).unwrap().target.token_hmac_secret, None);
        }
        let c = cli(&["--token-hmac-secret", "S"]).unwrap();
        assert_eq!(c.target.token_hmac_secret.as_deref(), Some("S"));
    }

    #[test]
    fn server_pids_are_a_comma_separated_list() {
        let c = cli(&["--server-pid", "10"]).unwrap();
        assert_eq!(c.target.server_pid, [10]);
        let c = cli(&["--server-pid", "10,20,30"]).unwrap();
        assert_eq!(c.target.server_pid, [10, 20, 30]);
        let c = cli(&["--server-pid", "1", "--server-pid", "2,3"]).unwrap();
        assert_eq!(c.target.server_pid, [1, 2, 3]);
        for bad in ["10,x", "-1", "10,,20", "4294967296"] {
            assert!(cli(&["--server-pid", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_defaults_to_the_targets_path() {
        let u = BenchUrl::parse("ws://127.0.0.1:9000", Target::Wavecast).unwrap();
        assert_eq!(u.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(u.path, "/ws");
        let u = BenchUrl::parse("ws://localhost:9000/", Target::Socketio).unwrap();
        assert_eq!(u.path, "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(u.host, "localhost:9000");
        let u = BenchUrl::parse("ws://127.0.0.5:1/x?y=1", Target::Ws).unwrap();
        assert_eq!(u.path, "/x?y=1");
    }

    #[test]
    fn url_refuses_anything_but_loopback() {
        for bad in [
            "ws://10.0.0.1:80/",
            "ws://example.com:80/",
            "ws://128.0.0.1:80/",
            "wss://127.0.0.1:443/",
            "http://127.0.0.1:80/",
            "ws://127.0.0.1:99999/",
            "ws://[::1]:80/",
        ] {
            let err = BenchUrl::parse(bad, Target::Ws).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }

    #[test]
    fn target_names_round_trip() {
        for t in [
            Target::Wavecast,
            Target::Ws,
            Target::Socketio,
            Target::Nats,
            Target::Tungstenite,
        ] {
            assert_eq!(Target::parse(t.name()), Some(t));
        }
        assert_eq!(Target::parse("redis"), None);
    }
}
