//! The log level changes while the process runs (what a config reload
//! does through `Logging::set_level`), and an invalid level changes
//! nothing. Its own test binary: it installs the process's one global
//! subscriber.

use tracing::Level;
use wavecast::config::LogFormat;
use wavecast::logging::{LogError, Logging};

#[test]
fn set_level_takes_effect_at_once_and_a_bad_level_changes_nothing() {
    let logging = Logging::install(LogFormat::Json, Some("warn")).expect("install the log");
    assert!(tracing::enabled!(Level::WARN));
    assert!(!tracing::enabled!(Level::INFO), "at warn, info is off");
    logging.set_level("debug").expect("a valid level");
    assert!(tracing::enabled!(Level::DEBUG), "debug is on at once");
    assert!(!tracing::enabled!(Level::TRACE));
    let refused = logging.set_level("wavecast=loud");
    assert!(
        matches!(refused, Err(LogError::Level { .. })),
        "{refused:?}"
    );
    assert!(tracing::enabled!(Level::DEBUG), "the old level stays");
    logging
        .set_level("error,wavecast=info")
        .expect("directives");
    assert!(
        !tracing::enabled!(Level::INFO),
        "this target is not wavecast"
    );
    assert!(tracing::enabled!(target: "wavecast::shard", Level::INFO));
    assert!(!tracing::enabled!(target: "wavecast::shard", Level::DEBUG));
    // A second install is refused: there is one log per process.
    assert!(matches!(
        Logging::install(LogFormat::Text, None),
        Err(LogError::Install(_))
    ));
}
