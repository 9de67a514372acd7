//! The `wavecast` command: `wavecast serve` runs the server; `wavecast
//! token` mints a token with the configured secret; `wavecast genconfig`
//! prints a complete commented configuration file; `wavecast bench`
//! load-tests a server.
//!
//! Signals of `wavecast serve`: SIGTERM and SIGINT shut down gracefully;
//! SIGHUP reloads the configuration file (docs/OPERATIONS.md, "Signals and
//! reload").

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use wavecast::config::{parse_duration, Config, LogFormat, Reload, ServeArgs};
use wavecast::logging::Logging;
use wavecast::reload::ReloadAsk;
use wavecast::{server, token};

/// wavecast: a real-time messaging server (WebSocket pub/sub).
#[derive(Debug, Parser)]
#[command(name = "wavecast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print a connection token (or, with --channel, a subscription token)
    /// signed with the configured token_hmac_secret.
    Token(TokenArgs),
    /// Print a complete configuration file: every setting with its
    /// description and default (load it with `wavecast serve --config`).
    Genconfig,
    /// Load-test a server (this one or a peer): connect, fanout, sweep,
    /// compare, plot.
    Bench(wavecast_bench::BenchArgs),
}

/// `wavecast token`: the token's claims, and the server's settings (for the
/// secret, audience and issuer).
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The user (`sub`).
    #[arg(long)]
    user: String,
    /// Lifetime (`exp` = now + ttl), e.g. `1h`, `10m`.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    ttl: Duration,
    /// Make a subscription token for this channel.
    #[arg(long)]
    channel: Option<String>,
    /// Public JSON about the connection (`info`).
    #[arg(long)]
    info: Option<String>,
    /// Channels the server subscribes the connection to on connect (the
    /// `channels` claim), comma-separated.
    #[arg(long, value_delimiter = ',')]
    channels: Vec<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Genconfig => {
            print!("{}", wavecast::config::genconfig());
            ExitCode::SUCCESS
        }
        Command::Bench(args) => {
            // The load tool logs (if at all) as the server's default log
            // does: text on stderr, RUST_LOG or info.
            if let Err(e) = Logging::install(LogFormat::Text, None) {
                eprintln!("wavecast: {e}");
                return ExitCode::from(2);
            }
            bench(args)
        }
        Command::Token(args) => mint(args),
        Command::Serve(args) => {
            // The log is set up once the config is read (its format and
            // level are settings); a config error goes to stderr as is.
            let config = match Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("wavecast: {e}");
                    return ExitCode::from(2);
                }
            };
            // Kept for the life of the server: the level can change
            // through it.
            let logging = match Logging::init(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("wavecast: {e}");
                    return ExitCode::from(2);
                }
            };
            match serve(config, args, logging) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Through the log, in its format (a JSON log stays
                    // JSON to the last line).
                    tracing::error!("wavecast: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn bench(args: wavecast_bench::BenchArgs) -> ExitCode {
    match wavecast_bench::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wavecast bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `wavecast token`: prints a token signed with the configured secret.
fn mint(args: TokenArgs) -> ExitCode {
    let config = match Config::load(&args.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wavecast: {e}");
            return ExitCode::from(2);
        }
    };
    let claims = token::Claims {
        user: args.user,
        ttl: args.ttl,
        channel: args.channel,
        info: args.info,
        channels: args.channels,
    };
    match token::mint(&config, &claims, SystemTime::now()) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wavecast token: {e}");
            ExitCode::from(2)
        }
    }
}

/// Binds, installs the signal handlers, and runs the server until SIGTERM
/// or SIGINT; each SIGHUP meanwhile reloads the configuration. The
/// handlers go in before the server prints its "listening" line: a signal
/// sent as soon as the line is read must already mean what it says.
fn serve(config: Config, args: ServeArgs, logging: Logging) -> Result<(), server::ServerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(server::ServerError::Worker)?;
    rt.block_on(async {
        let listeners = server::bind(config.listen, config.workers)?;
        let shutdown = signals().map_err(server::ServerError::Worker)?;
        let hangups = signal(SignalKind::hangup()).map_err(server::ServerError::Worker)?;
        // One reload at a time: the handler waits for each answer before it
        // takes the next SIGHUP (the kernel folds signals that arrive meanwhile).
        let (reloads, asks) = mpsc::channel(1);
        tokio::spawn(reload_on_hangup(hangups, args, reloads, logging));
        server::run(config, listeners, shutdown, asks).await
    })
}

/// Installs the signal handlers now; the future completes at the first
/// SIGTERM or SIGINT.
fn signals() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

/// At each SIGHUP, asks the server to reload the configuration with the
/// arguments it started with, and logs the outcome. Without a config file
/// there is nothing to re-read (flags and environment are fixed for the
/// process's life): it says so and changes nothing.
async fn reload_on_hangup(
    mut hangups: Signal,
    args: ServeArgs,
    reloads: mpsc::Sender<ReloadAsk>,
    logging: Logging,
) {
    while hangups.recv().await.is_some() {
        let Some(file) = args.config.clone() else {
            tracing::warn!(
                "SIGHUP: no config file to re-read (started without --config); nothing changed"
            );
            continue;
        };
        let (reply, outcome) = oneshot::channel();
        let ask = ReloadAsk {
            args: args.clone(),
            reply,
        };
        if reloads.send(ask).await.is_err() {
            return; // the server has stopped
        }
        let Ok(outcome) = outcome.await else { return };
        match outcome {
            Ok(reload) => {
                let changed = if reload.changed.is_empty() {
                    "nothing".to_owned()
                } else {
                    reload.changed.join(", ")
                };
                tracing::info!("config reloaded from {}: changed {changed}", file.display());
                if !reload.needs_restart.is_empty() {
                    tracing::warn!(
                        "config reload: {} changed in {} but cannot change while running \
                         (needs a restart); the running values stay",
                        reload.needs_restart.join(", "),
                        file.display()
                    );
                }
                after_reload(&reload, &logging);
            }
            Err(e) => tracing::warn!(
                "config reload refused (the running configuration stays in force): {}",
                e.to_string().trim_end()
            ),
        }
    }
}

/// What the binary itself applies after a reload was put in force: the
/// log level (the logging set-up is the binary's, not the server's).
fn after_reload(reload: &Reload, logging: &Logging) {
    if reload.changed.contains(&"log_level") {
        let level = reload.config.log_level.as_deref();
        if let Err(e) = logging.apply_level(level) {
            // Checked when the file was loaded: only RUST_LOG can fail here.
            tracing::warn!("config reload: the log level stays: {e}");
        }
    }
}
