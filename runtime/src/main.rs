//! The `wavecast` command: `wavecast serve` runs the server; `wavecast
//! bench` load-tests one.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wavecast::config::{Config, ServeArgs};

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
    Bench(wavecast::bench::BenchArgs),
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
        Command::Bench(args) => match wavecast::bench::run(args) {
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
            match wavecast::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wavecast: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
