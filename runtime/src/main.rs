//! The `wavecast` command: `wavecast serve` runs the server; `wavecast
//! bench` load-tests one.

use std::future::Future;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wavecast::config::{Config, ServeArgs};
use wavecast::server;

/// wavecast: a real-time messaging server (WebSocket pub/sub).
#[derive(Debug, Parser)]
#[command(name = "wavecast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Load-test a server (this one or a peer): connect, fanout, sweep,
    /// compare, plot.
    Bench(wavecast_bench::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => match wavecast_bench::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wavecast bench: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Serve(args) => {
            let config = match Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("wavecast: {e}");
                    return ExitCode::from(2);
                }
            };
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wavecast: {e}");
                    ExitCode::FAILURE
                }
            }
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
