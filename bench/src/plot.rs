//! The SVG plot: fan-out latency to the last subscriber (p50 and p99)
//! against the subscriber count, one colour per target, both axes
//! logarithmic (counts span 1 to 15,000 and latencies several decades).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::report::{Report, Runs};
use crate::BenchError;

/// One point per (target, subscribers): the median over runs of p50 and
/// p99 to the last subscriber, in milliseconds.
pub type Series = BTreeMap<String, Vec<(f64, f64, f64)>>;

/// Groups fan-out reports into per-target series, sorted by subscribers.
pub fn series(reports: &[Report]) -> Series {
    let mut points: BTreeMap<(String, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for r in reports
        .iter()
        .filter(|r| r.scenario == "fanout" && r.connected > 0)
    {
        points
            .entry((r.target.clone(), r.connected))
            .or_default()
            .push((
                r.latency_last_ns.p50 as f64 / 1e6,
                r.latency_last_ns.p99 as f64 / 1e6,
            ));
    }
    let mut out = Series::new();
    for ((target, subs), mut v) in points {
        let mid = |v: &mut Vec<(f64, f64)>, pick: fn(&(f64, f64)) -> f64| -> f64 {
            let mut xs: Vec<f64> = v.iter().map(pick).collect();
            xs.sort_by(f64::total_cmp);
            xs.get(xs.len() / 2).copied().unwrap_or(0.0)
        };
        let p50 = mid(&mut v, |p| p.0);
        let p99 = mid(&mut v, |p| p.1);
        out.entry(target).or_default().push((subs as f64, p50, p99));
    }
    out
}

/// Reads reports written by `fanout`, `sweep` or `compare` and plots them.
pub fn plot_files(inputs: &[PathBuf], out: &Path) -> Result<(), BenchError> {
    let mut reports = Vec::new();
    for path in inputs {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        if value.get("runs").is_some() {
            let runs: Runs = serde_json::from_value(value)?;
            reports.extend(runs.runs);
        } else {
            reports.push(serde_json::from_value(value)?);
        }
    }
    plot_reports(&reports, out)
}

/// Draws the plot of `reports` to `out` (SVG).
pub fn plot_reports(reports: &[Report], out: &Path) -> Result<(), BenchError> {
    let series = series(reports);
    if series.is_empty() {
        return Err(BenchError::Usage("no fan-out runs to plot".into()));
    }
    draw(&series, out).map_err(|e| BenchError::Plot(e.to_string()))
}

fn draw(series: &Series, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let all = series.values().flatten();
    let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max) * 1.5;
    let max_y = all.clone().map(|p| p.2.max(p.1)).fold(0.01, f64::max) * 2.0;
    let min_y = all
        .map(|p| p.1.min(p.2))
        .filter(|y| *y > 0.0)
        .fold(max_y, f64::min)
        .max(0.001)
        / 2.0;
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("fan-out latency to the last subscriber", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((0.8f64..max_x).log_scale(), (min_y..max_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("subscribers")
        .y_desc("milliseconds")
        .draw()?;
    for (i, (target, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let p99: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.2.max(min_y))).collect();
        let p50: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1.max(min_y))).collect();
        // Markers too, so that a target measured at one count shows.
        chart.draw_series(p99.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        chart.draw_series(p50.iter().map(|&p| Circle::new(p, 2, color.filled())))?;
        chart
            .draw_series(LineSeries::new(p99, color.stroke_width(2)))?
            .label(format!("{target} p99"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(p50, color.stroke_width(1)))?
            .label(format!("{target} p50"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Percentiles;

    fn run(target: &str, subs: u64, p50_ms: u64, p99_ms: u64) -> Report {
        Report {
            scenario: "fanout".into(),
            target: target.into(),
            connected: subs,
            latency_last_ns: Percentiles {
                p50: p50_ms * 1_000_000,
                p99: p99_ms * 1_000_000,
                ..Percentiles::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn series_take_the_median_per_target_and_count() {
        let s = series(&[
            run("ws", 100, 1, 2),
            run("ws", 100, 3, 4),
            run("ws", 100, 5, 6),
            run("ws", 10, 1, 1),
            run("wavecast", 100, 1, 1),
        ]);
        assert_eq!(s["ws"], vec![(10.0, 1.0, 1.0), (100.0, 3.0, 4.0)]);
        assert_eq!(s["wavecast"].len(), 1);
    }

    #[test]
    fn plot_writes_an_svg_with_one_line_per_target_and_percentile() {
        let path =
            std::env::temp_dir().join(format!("wavecast-bench-plot-{}.svg", std::process::id()));
        plot_reports(
            &[
                run("ws", 10, 1, 2),
                run("ws", 1000, 3, 9),
                run("wavecast", 10, 1, 1),
                run("wavecast", 1000, 2, 3),
            ],
            &path,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"));
        // Axes and mesh are black; each (target, percentile) is one coloured
        // line in the chart and one in the legend.
        let coloured = svg
            .split("<polyline")
            .skip(1)
            .filter(|p| !p.starts_with(r##" fill="none" opacity="1" stroke="#000000""##))
            .count();
        assert_eq!(coloured, 4 + 4, "4 lines and 4 legend marks");
        assert_eq!(svg.matches("<circle").count(), 8, "a marker per point");
        assert!(svg.contains("wavecast p99") && svg.contains("ws p50"));
        assert!(plot_reports(&[], &path).is_err());
    }
}
