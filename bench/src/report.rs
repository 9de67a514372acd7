//! What a run produced and how it is shown: [`Report`] (one run), [`Runs`]
//! (a sweep's or a compare's runs, with compare's [`Summary`]), the human
//! tables, and the delivery check that fails a run of wavecast's.
//!
//! Pure data and arithmetic: [`scenario`](crate::scenario) fills these in,
//! [`plot`](crate::plot) draws them, and neither needs the other.

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;
use crate::{BenchError, Target};

/// One run's figures. `connect` fills the connection part; `fanout` all of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `connect` or `fanout`.
    pub scenario: String,
    /// Target protocol name (`wavecast`, `ws`, ...).
    pub target: String,
    /// The URL connected to; several servers' URLs joined with `,`.
    pub url: String,
    /// Subscribers (connections) asked for.
    pub subscribers: u64,
    /// Subscribers that got subscribed.
    pub connected: u64,
    /// Subscribers that failed to connect or subscribe.
    pub failed_connections: u64,
    /// The first connection error, if any.
    pub first_error: Option<String>,
    /// Every connection sent `connect` with its own token first
    /// (`--token-hmac-secret`).
    #[serde(default)]
    pub authenticated: bool,
    /// Of the failed connections, those whose `connect` the server refused.
    #[serde(default)]
    pub refused_connections: u64,
    /// Worker processes holding the subscribers (0 = this process).
    pub workers: u64,
    /// Subscribed connections per second while opening them.
    pub handshakes_per_sec: f64,
    /// Seconds from the first connection attempt to the last subscription.
    pub connect_seconds: f64,
    /// Server resident memory before connecting (bytes; with --server-pid;
    /// summed over the servers when several PIDs are given).
    pub server_rss_before: Option<u64>,
    /// Server resident memory with every connection open and idle (summed
    /// like `server_rss_before`).
    pub server_rss_after: Option<u64>,
    /// (after - before) / connected.
    pub server_bytes_per_connection: Option<f64>,
    /// Publications sent.
    pub publications: u64,
    /// Data bytes per publication.
    pub payload_bytes: u64,
    /// Publications per second asked for (`None` = --max).
    pub publish_rate: Option<f64>,
    /// How the publisher sent (`ws` or `api`).
    pub publish_via: String,
    /// Latency of every delivery (send to receive), nanoseconds.
    pub latency_delivery_ns: Percentiles,
    /// Per publication, latency to the last subscriber that got it.
    pub latency_last_ns: Percentiles,
    /// Deliveries received.
    pub deliveries: u64,
    /// publications x connected.
    pub expected_deliveries: u64,
    /// Deliveries per second, first publish to last delivery.
    pub deliveries_per_sec: f64,
    /// Seconds from the first publish to the last delivery.
    pub duration_s: f64,
    /// Deliveries that never arrived.
    pub lost: u64,
    /// Deliveries that arrived more than once.
    pub duplicated: u64,
    /// Deliveries older than one the subscriber already had.
    pub out_of_order: u64,
    /// Deliveries of sequence numbers this run never sent.
    pub unexpected: u64,
    /// The subscribers offered permessage-deflate (`--compression`).
    #[serde(default)]
    pub compression: bool,
    /// Of the subscribers, those whose offer the server accepted.
    #[serde(default)]
    pub compressed_connections: u64,
    /// Publications carried a JSON object (`--json-data`), not a string.
    #[serde(default)]
    pub json_data: bool,
    /// Bytes the subscribers read from their sockets per delivery, frame
    /// headers included: the bytes the server put on the wire for each.
    #[serde(default)]
    pub received_bytes_per_delivery: Option<f64>,
    /// The servers' CPU time (user + system, every thread) from the first
    /// publication to the last delivery, per delivery, microseconds (with
    /// --server-pid).
    #[serde(default)]
    pub server_cpu_us_per_delivery: Option<f64>,
}

impl Report {
    /// The name compare groups runs by: the target, with `+deflate` when
    /// its subscribers offered compression.
    pub fn label(&self) -> String {
        if self.compression {
            format!("{}+deflate", self.target)
        } else {
            self.target.clone()
        }
    }

    /// Lost + duplicated + out-of-order + unexpected.
    pub fn delivery_faults(&self) -> u64 {
        self.lost + self.duplicated + self.out_of_order + self.unexpected
    }
}

/// A set of runs, as JSON (sweep and compare).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Runs {
    /// `sweep` or `compare`.
    pub kind: String,
    /// Every run.
    pub runs: Vec<Report>,
    /// compare: per target, the median figures and their ratio to wavecast.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summary: Vec<Summary>,
}

/// One target's medians over the rounds of a compare, and the ratio of
/// each to wavecast's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Target name.
    pub target: String,
    /// Runs that completed.
    pub runs: u64,
    /// Median figures, in the order of [`FIGURES`].
    pub medians: Vec<Option<f64>>,
    /// Each median divided by wavecast's.
    pub ratios: Vec<Option<f64>>,
    /// Summed over runs.
    pub delivery_faults: u64,
    /// Runs that failed, with why.
    pub errors: Vec<String>,
}

/// Index in [`FIGURES`] of the server's memory per connection.
const MEMORY_FIGURE: usize = 1;

/// The figures compare prints, with their units. Each is the median over
/// rounds, except memory per connection, which is the first round's.
pub const FIGURES: [(&str, &str); 8] = [
    ("handshakes/s", "1/s"),
    ("server bytes/conn", "B"),
    ("last p50", "ms"),
    ("last p99", "ms"),
    ("delivery p99", "ms"),
    ("deliveries/s", "1/s"),
    ("wire bytes/dlv", "B"),
    ("server CPU/dlv", "us"),
];

fn figures(r: &Report) -> [Option<f64>; 8] {
    let ms = |ns: u64| Some(ns as f64 / 1e6);
    [
        Some(r.handshakes_per_sec),
        r.server_bytes_per_connection,
        ms(r.latency_last_ns.p50),
        ms(r.latency_last_ns.p99),
        ms(r.latency_delivery_ns.p99),
        Some(r.deliveries_per_sec),
        r.received_bytes_per_delivery,
        r.server_cpu_us_per_delivery,
    ]
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
    }
}

/// compare's summary: per target (in `targets` order, each once), the
/// medians of [`FIGURES`] over its runs and their ratio to wavecast's, its
/// delivery faults and its failed runs (`errors`: target name, error).
pub fn summarize(runs: &[Report], targets: &[&str], errors: &[(String, String)]) -> Vec<Summary> {
    let medians_of = |name: &str| -> Vec<Option<f64>> {
        (0..FIGURES.len())
            .map(|i| {
                let values: Vec<f64> = runs
                    .iter()
                    .filter(|r| r.label() == name)
                    .filter_map(|r| figures(r).get(i).copied().flatten())
                    .collect();
                if i == MEMORY_FIGURE {
                    // Memory from the server's first run only: later runs
                    // reuse what the allocator (or garbage collector) kept
                    // from earlier ones and show a delta near zero.
                    values.first().copied()
                } else {
                    median(values)
                }
            })
            .collect()
    };
    let base = medians_of(Target::Wavecast.name());
    let mut summary: Vec<Summary> = Vec::new();
    for &name in targets {
        if summary.iter().any(|s| s.target == name) {
            continue;
        }
        let medians = medians_of(name);
        let ratios = medians
            .iter()
            .zip(&base)
            .map(|(m, b)| match (m, b) {
                (Some(m), Some(b)) if *b != 0.0 => Some(m / b),
                _ => None,
            })
            .collect();
        summary.push(Summary {
            target: name.to_string(),
            runs: runs.iter().filter(|r| r.label() == name).count() as u64,
            medians,
            ratios,
            delivery_faults: runs
                .iter()
                .filter(|r| r.label() == name)
                .map(Report::delivery_faults)
                .sum(),
            errors: errors
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
                .collect(),
        });
    }
    summary
}

/// wavecast promises no loss, duplicates or reordering: a run that shows
/// any fails the command (after the report is out).
pub fn check_delivery(reports: &[Report]) -> Result<(), BenchError> {
    for r in reports {
        if r.target == Target::Wavecast.name() && r.scenario == "fanout" && r.delivery_faults() > 0
        {
            return Err(BenchError::Delivery(format!(
                "{} subscribers: lost {}, duplicated {}, out of order {}, unexpected {}",
                r.subscribers, r.lost, r.duplicated, r.out_of_order, r.unexpected
            )));
        }
    }
    Ok(())
}

/// A run with tokens checks that every token is accepted: a refused
/// `connect` fails the command (after the report is out).
pub fn check_auth(reports: &[Report]) -> Result<(), BenchError> {
    for r in reports {
        if r.refused_connections > 0 {
            return Err(BenchError::Auth(format!(
                "{} of {} connections refused at connect; first error: {}",
                r.refused_connections,
                r.subscribers,
                r.first_error.as_deref().unwrap_or("none recorded")
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Human output
// ---------------------------------------------------------------------------

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The report as the human table `fanout` and `connect` print.
pub fn format_report(r: &Report) -> String {
    let mut s = String::new();
    s += &format!(
        "{} {}{}: {} subscribers ({} connected, {} failed{}), {} worker processes\n",
        r.scenario,
        r.target,
        if r.authenticated {
            " (HS256 token per connection)"
        } else {
            ""
        },
        r.subscribers,
        r.connected,
        r.failed_connections,
        r.first_error
            .as_deref()
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default(),
        r.workers,
    );
    s += &format!(
        "  handshakes: {:.0}/s ({:.2} s to subscribe all)\n",
        r.handshakes_per_sec, r.connect_seconds
    );
    if let (Some(b), Some(a), Some(per)) = (
        r.server_rss_before,
        r.server_rss_after,
        r.server_bytes_per_connection,
    ) {
        s += &format!(
            "  server RssAnon (user-space memory): {} -> {} = {:.0} bytes per connection\n",
            mib(b),
            mib(a),
            per
        );
    }
    if r.scenario == "fanout" {
        s += &format!(
            "  publications: {} x {} B, {}, via {}\n",
            r.publications,
            r.payload_bytes,
            r.publish_rate
                .map(|x| format!("{x}/s"))
                .unwrap_or_else(|| "as fast as acknowledged".into()),
            r.publish_via
        );
        s += "  latency (ms)          p50       p90       p99       max\n";
        for (name, p) in [
            ("per delivery", r.latency_delivery_ns),
            ("to last subscriber", r.latency_last_ns),
        ] {
            s += &format!(
                "  {name:<18} {:>9} {:>9} {:>9} {:>9}\n",
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max)
            );
        }
        s += &format!(
            "  deliveries: {}/{} in {:.3} s = {:.0}/s; lost {}, duplicated {}, out of order {}, unexpected {}\n",
            r.deliveries,
            r.expected_deliveries,
            r.duration_s,
            r.deliveries_per_sec,
            r.lost,
            r.duplicated,
            r.out_of_order,
            r.unexpected
        );
        if let Some(b) = r.received_bytes_per_delivery {
            s += &format!(
                "  on the wire: {b:.0} B per delivery{}\n",
                if r.compression {
                    format!(
                        " ({} of {} subscribers negotiated permessage-deflate)",
                        r.compressed_connections, r.connected
                    )
                } else {
                    String::new()
                }
            );
        }
        if let Some(us) = r.server_cpu_us_per_delivery {
            s += &format!("  server CPU: {us:.3} us per delivery\n");
        }
    }
    s
}

/// The header of the one-line-per-run table sweep and compare print.
pub fn table_header() -> String {
    format!(
        "{:<20} {:>7} {:>9} {:>11} {:>10} {:>10} {:>10} {:>12} {:>8} {:>8} {:>6} {:>5} {:>5}",
        "target",
        "subs",
        "hs/s",
        "B/conn",
        "last p50",
        "last p99",
        "dlv p99",
        "dlv/s",
        "B/dlv",
        "cpu us",
        "lost",
        "dup",
        "ooo"
    )
}

/// One run as a row under [`table_header`].
pub fn table_row(r: &Report) -> String {
    format!(
        "{:<20} {:>7} {:>9.0} {:>11} {:>10} {:>10} {:>10} {:>12.0} {:>8} {:>8} {:>6} {:>5} {:>5}",
        r.label(),
        r.connected,
        r.handshakes_per_sec,
        r.server_bytes_per_connection
            .map(|b| format!("{b:.0}"))
            .unwrap_or_else(|| "-".into()),
        ms(r.latency_last_ns.p50),
        ms(r.latency_last_ns.p99),
        ms(r.latency_delivery_ns.p99),
        r.deliveries_per_sec,
        r.received_bytes_per_delivery
            .map(|b| format!("{b:.0}"))
            .unwrap_or_else(|| "-".into()),
        r.server_cpu_us_per_delivery
            .map(|us| format!("{us:.2}"))
            .unwrap_or_else(|| "-".into()),
        r.lost,
        r.duplicated,
        r.out_of_order
    )
}

/// compare's summary: medians and ratios to wavecast.
pub fn format_summary(summary: &[Summary], subscribers: usize) -> String {
    let mut s = format!(
        "\nmedians over rounds (memory: first round), {subscribers} subscribers (ratio to wavecast in brackets)\n"
    );
    s += &format!("{:<18}", "figure");
    for t in summary {
        s += &format!(" {:>22}", t.target);
    }
    s += "\n";
    for (i, (name, unit)) in FIGURES.iter().enumerate() {
        s += &format!("{:<18}", format!("{name} ({unit})"));
        for t in summary {
            let cell = match (
                t.medians.get(i).copied().flatten(),
                t.ratios.get(i).copied().flatten(),
            ) {
                (Some(m), Some(r)) => format!("{m:.3} [{r:.2}x]"),
                (Some(m), None) => format!("{m:.3}"),
                _ => "-".into(),
            };
            s += &format!(" {cell:>22}");
        }
        s += "\n";
    }
    s += &format!("{:<18}", "delivery faults");
    for t in summary {
        s += &format!(" {:>22}", t.delivery_faults);
    }
    s += "\n";
    for t in summary {
        for e in &t.errors {
            s += &format!("{}: failed run: {e}\n", t.target);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_lists() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn a_refused_connect_fails_the_run_and_other_failures_do_not() {
        let ok = Report {
            scenario: "connect".into(),
            target: "wavecast".into(),
            subscribers: 10,
            connected: 9,
            failed_connections: 1,
            authenticated: true,
            ..Report::default()
        };
        assert!(check_auth(std::slice::from_ref(&ok)).is_ok());
        let refused = Report {
            refused_connections: 1,
            first_error: Some("authentication: refused to connect: 112".into()),
            ..ok.clone()
        };
        let err = check_auth(&[ok.clone(), refused]).unwrap_err();
        assert!(matches!(err, BenchError::Auth(_)), "{err:?}");
        assert!(err.to_string().contains("1 of 10"), "{err}");
        assert_eq!(err.exit_code(), 1);
        // Shown in the header; a report without tokens reads as before.
        assert!(format_report(&ok).starts_with("connect wavecast (HS256 token per connection): 10"));
        let plain = Report {
            authenticated: false,
            ..ok
        };
        assert!(format_report(&plain).starts_with("connect wavecast: 10 subscribers"));
        // Reports written before these fields existed still read.
        let mut old = serde_json::to_value(&plain).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("authenticated");
        fields.remove("refused_connections");
        let back: Report = serde_json::from_value(old).unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn a_wavecast_run_with_faults_fails_and_a_peer_run_does_not() {
        let faulty = Report {
            scenario: "fanout".into(),
            target: "wavecast".into(),
            lost: 1,
            ..Report::default()
        };
        assert_eq!(
            check_delivery(std::slice::from_ref(&faulty))
                .unwrap_err()
                .exit_code(),
            3
        );
        let peer = Report {
            target: "ws".into(),
            ..faulty
        };
        assert!(check_delivery(&[peer]).is_ok());
    }
}
