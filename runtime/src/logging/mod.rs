//! The log: where it goes (stderr), in which format (`log_format`: text
//! or JSON, tracing-subscriber's own formatters), at which level
//! (`log_level`, changeable while running through [`Logging::set_level`]),
//! in colour or not; and what the server writes to it beyond single
//! events: the startup lines ([`startup`]) and the per-interval summary of
//! slow-consumer and heartbeat closes ([`closes`]).
//!
//! The level: `log_level` (flag, `WAVECAST_LOG_LEVEL`, or the file) when
//! set; otherwise `RUST_LOG` when set and not empty; otherwise `info`. An
//! explicit setting wins so that a unit file or config that says `info`
//! is not overridden by a variable left in an operator's shell; `RUST_LOG`
//! still works where nothing is configured, as developers expect.
//!
//! Colour: only in the text format, only when stderr is a terminal, and
//! never when `NO_COLOR` is set to anything but the empty string
//! (<https://no-color.org>). A log file or a pipe never gets escape codes.

pub mod closes;
pub mod startup;

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::{parse_log_level, Config, LogFormat};

/// The level used when neither `log_level` nor `RUST_LOG` says one.
pub const DEFAULT_LEVEL: &str = "info";

/// The installed log: a handle on its filter, to change the level while
/// the server runs (a config reload). Keep it for the life of the
/// process; dropping it changes nothing but makes the level fixed.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    format: LogFormat,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// The log could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The level is not a valid filter (the operator's setting).
    #[error("invalid log level {directive:?}: {reason}")]
    Level {
        /// The directive as given.
        directive: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Another global subscriber is already installed (a bug of the
    /// program, not of the settings).
    #[error("cannot install the log: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
    /// The installed filter is gone (the subscriber was dropped).
    #[error("cannot change the log level: {0}")]
    Reload(#[from] reload::Error),
}

/// The layer stack under the formatter: the registry and the reloadable
/// filter.
type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

impl Logging {
    /// Installs the global subscriber with the config's format and level.
    pub fn init(config: &Config) -> Result<Logging, LogError> {
        Logging::install(config.log_format, config.log_level.as_deref())
    }

    /// Installs the global subscriber: `format`, and the level `level`
    /// (else `RUST_LOG`, else [`DEFAULT_LEVEL`]), on stderr.
    ///
    /// A configured level that does not parse is an error; `RUST_LOG`,
    /// which may have been set for another program, is read as tracing
    /// reads it, and if even that fails the level is [`DEFAULT_LEVEL`]
    /// with a warning.
    pub fn install(format: LogFormat, level: Option<&str>) -> Result<Logging, LogError> {
        let rust_log = std::env::var("RUST_LOG").ok();
        let directive = effective_level(level, rust_log.as_deref());
        let mut ignored = None;
        let filter = match level {
            Some(_) => parse(&directive)?,
            None => match EnvFilter::builder().parse(&directive) {
                Ok(f) => f,
                Err(e) => {
                    ignored = Some(format!(
                        "RUST_LOG={directive:?} ignored ({e}); level {DEFAULT_LEVEL}"
                    ));
                    EnvFilter::new(DEFAULT_LEVEL)
                }
            },
        };
        let (filter, handle) = reload::Layer::new(filter);
        let color = use_color(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        let output: Box<dyn Layer<Filtered> + Send + Sync> = match format {
            LogFormat::Text => fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(color)
                .boxed(),
            LogFormat::Json => fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .boxed(),
        };
        tracing_subscriber::registry()
            .with(filter)
            .with(output)
            .try_init()?;
        if let Some(why) = ignored {
            tracing::warn!("{why}");
        }
        Ok(Logging {
            filter: handle,
            format,
        })
    }

    /// Replaces the level (a config reload): `directive` as `log_level`
    /// takes it (`info`, `wavecast=debug,info`). An invalid directive
    /// changes nothing.
    pub fn set_level(&self, directive: &str) -> Result<(), LogError> {
        let filter = parse(directive)?;
        self.filter.reload(filter)?;
        Ok(())
    }

    /// Puts `level` in force as a reload of `log_level` does: the
    /// setting, or, where it is unset, `RUST_LOG`, else [`DEFAULT_LEVEL`]
    /// (as at start).
    pub fn apply_level(&self, level: Option<&str>) -> Result<(), LogError> {
        let rust_log = std::env::var("RUST_LOG").ok();
        let directive = effective_level(level, rust_log.as_deref());
        match (level, self.set_level(&directive)) {
            (None, Err(LogError::Level { .. })) => self.set_level(DEFAULT_LEVEL),
            (_, r) => r,
        }
    }

    /// The log's format.
    pub fn format(&self) -> LogFormat {
        self.format
    }
}

fn parse(directive: &str) -> Result<EnvFilter, LogError> {
    parse_log_level(directive).map_err(|reason| LogError::Level {
        directive: directive.to_owned(),
        reason,
    })
}

/// What a close code means, in a few words (for the close lines at
/// debug): wavecast's own reason text for its codes, the RFC 6455 name for
/// the standard ones.
pub fn close_reason(code: wavecast_core::close::CloseCode) -> &'static str {
    let own = wavecast_core::protocol::close::reason(code);
    if !own.is_empty() {
        return own;
    }
    match code.0 {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "no status code",
        1006 => "abnormal closure",
        1007 => "invalid payload",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "mandatory extension",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        _ => "",
    }
}

/// The filter in force: the configured level, else `RUST_LOG` (when not
/// empty), else [`DEFAULT_LEVEL`].
pub fn effective_level(configured: Option<&str>, rust_log: Option<&str>) -> String {
    configured
        .or(rust_log)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or(DEFAULT_LEVEL)
        .to_owned()
}

/// Whether the text log is coloured: only on a terminal, and not when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>: "when
/// present and not an empty string").
pub fn use_color(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(use_color(true, None));
        assert!(use_color(true, Some(OsStr::new(""))), "empty means unset");
        assert!(!use_color(true, Some(OsStr::new("1"))));
        assert!(!use_color(true, Some(OsStr::new("0"))), "any value");
        assert!(!use_color(false, None));
        assert!(!use_color(false, Some(OsStr::new(""))));
    }

    #[test]
    fn the_configured_level_wins_over_rust_log() {
        assert_eq!(effective_level(None, None), "info");
        assert_eq!(effective_level(None, Some("")), "info");
        assert_eq!(effective_level(None, Some("debug")), "debug");
        assert_eq!(effective_level(Some("warn"), Some("debug")), "warn");
        assert_eq!(
            effective_level(Some("wavecast=debug,info"), None),
            "wavecast=debug,info"
        );
    }

    #[test]
    fn levels_are_parsed_strictly() {
        for ok in [
            "info",
            "debug",
            "wavecast=debug,info",
            "warn,wavecast::shard=trace",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in ["loud", "wavecast=loud", "info,="] {
            assert!(
                matches!(parse(bad), Err(LogError::Level { .. })),
                "{bad}: {:?}",
                parse(bad).map(|f| f.to_string())
            );
        }
    }
}
