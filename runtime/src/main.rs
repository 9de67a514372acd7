//! The `wavecast` command: `wavecast serve` runs the server; `wavecast
//! token` mints a token with the configured secret; `wavecast bench`
//! load-tests a server.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};

use wavecast::config::{parse_duration, Config, LogFormat, ServeArgs};
use wavecast::logging::Logging;
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
            let _logging = match Logging::init(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("wavecast: {e}");
                    return ExitCode::from(2);
                }
            };
            match serve(config) {
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

/// Binds, installs the SIGTERM/SIGINT handlers, and runs the server until
/// one of them fires. The handlers go in before the server prints its
/// "listening" line: a signal sent as soon as the line is read must
/// already mean "shut down gracefully".
fn serve(config: Config) -> Result<(), server::ServerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(server::ServerError::Worker)?;
    rt.block_on(async {
        let listeners = server::bind(config.listen, config.workers)?;
        let shutdown = signals().map_err(server::ServerError::Worker)?;
        server::run(config, listeners, shutdown).await
    })
}

/// Installs the signal handlers now; the future completes at the first
/// SIGTERM or SIGINT.
fn signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
