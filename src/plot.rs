//! The latency-by-percentile chart written by `--plot FILE.svg`.
//!
//! HdrHistogram's classic plot: the x axis stretches the tail on a log
//! scale of `1 / (1 - q)`, so 90 %, 99 %, 99.9 % ... are evenly spaced and
//! the stalls that averages hide are where the eye goes. It is an SVG drawn
//! by plotters without system fonts (text stays `<text>` elements that the
//! viewer renders), so it works on a bare server.
//!
//! Several curves share one chart, named in a legend: `report plot`
//! overlays runs to compare them, `report merge --plot` draws each input
//! and, bold, the merged curve. `--log-latency` puts latency on a
//! logarithmic axis, for curves decades apart.

use std::path::{Path, PathBuf};

use plotters::coord::combinators::{BindKeyPoints, WithKeyPoints};
use plotters::coord::types::RangedCoordi64;
use plotters::prelude::*;

use sockecho::measure::histogram::LatencyHistogram;
use sockecho::measure::report::BenchReport;

/// Chart size in pixels: wide enough for six percentile labels and a
/// legend beside the curves.
const SIZE: (u32, u32) = (1024, 640);

/// Deepest percentile axis drawn: 99.99999 %. Beyond it no run has the
/// samples to say anything.
const MAX_NINES: u32 = 7;

/// Points per decade of the x axis: smooth enough for a step-shaped
/// histogram curve, small enough for a light file.
const POINTS_PER_DECADE: u32 = 50;

/// Units of the x axis per decade. The axis is integer so plotters can take
/// exact key points (0 %, 90 %, 99 % ...); a thousandth of a decade is far
/// below a pixel.
const X_PER_DECADE: i32 = 1_000;

/// Latency above which the y axis switches from µs to ms, so its labels
/// stay short.
const MS_THRESHOLD_US: u64 = 10_000;

/// Tick marks aimed for on a linear latency axis.
const Y_TICKS: f64 = 8.0;

/// One curve of a chart.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Its name in the legend.
    pub label: &'a str,
    /// Its latencies.
    pub histogram: &'a LatencyHistogram,
    /// Drawn thicker and in black: the merged curve over its inputs.
    pub bold: bool,
}

impl<'a> Series<'a> {
    /// A plain curve.
    pub fn new(label: &'a str, histogram: &'a LatencyHistogram) -> Series<'a> {
        Series {
            label,
            histogram,
            bold: false,
        }
    }
}

/// How the latency axis is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scale {
    /// From 0, evenly.
    #[default]
    Linear,
    /// By decades (1, 2, 5, 10, 20, 50...), for curves far apart.
    Log,
}

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Every series was empty: there is no latency to draw.
    #[error("nothing to plot: no latency was recorded")]
    NoData,
    /// plotters failed while drawing (its error is not `'static`, so it is
    /// kept as text).
    #[error("cannot draw latency chart: {0}")]
    Draw(String),
    /// The SVG could not be written.
    #[error("cannot write plot {}", path.display())]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `report`'s latency-percentile chart to `path` (SVG), titled with
/// the run's parameters.
pub fn write_report(
    report: &BenchReport,
    path: &Path,
    scale: Scale,
) -> Result<(), sockecho::Error> {
    let histogram = report
        .histogram()
        .map_err(|e| sockecho::Error::invalid("reading the histogram", &e))?;
    write_series(
        path,
        &title(report),
        &[Series::new("latency", &histogram)],
        scale,
    )
}

/// Writes a merge's chart to `path`: each input's curve, named by its
/// file, and the merged one in bold, titled with the merged run.
pub fn write_merge(
    merged: &BenchReport,
    inputs: &[(String, BenchReport)],
    path: &Path,
    scale: Scale,
) -> Result<(), sockecho::Error> {
    let mut histograms = Vec::with_capacity(inputs.len() + 1);
    for (name, report) in inputs {
        let h = report
            .histogram()
            .map_err(|e| sockecho::Error::invalid(name.clone(), &e))?;
        histograms.push((name.as_str(), h));
    }
    let all = merged
        .histogram()
        .map_err(|e| sockecho::Error::invalid("reading the merged histogram", &e))?;
    let mut series: Vec<Series> = histograms
        .iter()
        .map(|(name, h)| Series::new(name, h))
        .collect();
    series.push(Series {
        label: "merged",
        histogram: &all,
        bold: true,
    });
    write_series(path, &title(merged), &series, scale)
}

/// Writes the curves of several reports in one chart to `path`, each
/// named by its file in the legend (`report plot`).
pub fn write_overlay(
    inputs: &[(String, BenchReport)],
    path: &Path,
    scale: Scale,
) -> Result<(), sockecho::Error> {
    let mut histograms = Vec::with_capacity(inputs.len());
    for (name, report) in inputs {
        let h = report
            .histogram()
            .map_err(|e| sockecho::Error::invalid(name.clone(), &e))?;
        histograms.push((name.as_str(), h));
    }
    let series: Vec<Series> = histograms
        .iter()
        .map(|(name, h)| Series::new(name, h))
        .collect();
    let title = match inputs {
        [(_, only)] => title(only),
        _ => format!("sockecho: latency by percentile, {} runs", inputs.len()),
    };
    write_series(path, &title, &series, scale)
}

/// Draws `series` into `path`, saying a failure as the program does.
fn write_series(
    path: &Path,
    title: &str,
    series: &[Series],
    scale: Scale,
) -> Result<(), sockecho::Error> {
    write_percentile_plot(path, title, series, scale).map_err(|e| match e {
        PlotError::Write { path, source } => write_error(&path, source),
        other => sockecho::Error::invalid(format!("plot {}", path.display()), &other),
    })
}

/// A chart title with a run's parameters.
fn title(report: &BenchReport) -> String {
    let mut title = format!(
        "sockecho bench {}: {} conns x {} B, {:.1} s, {} msgs",
        report.endpoint,
        report.connections,
        report.message_size,
        report.duration_s,
        report.messages
    );
    if let Some(k) = report.pipeline.filter(|k| *k > 1) {
        title.push_str(&format!(", pipeline {k}"));
    }
    if let Some(rate) = report.rate {
        title.push_str(&format!(", rate {rate:.0}/s"));
    }
    title
}

/// Checks that `path` can be written, before a run whose chart goes
/// there: a typo or a read-only directory is found at once, not after the
/// whole run. Leaves no file behind that was not there.
pub fn check_writable(path: &Path) -> Result<(), sockecho::Error> {
    let existed = path.symlink_metadata().is_ok();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| write_error(path, source))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// `cannot write plot PATH: WHY`, once: the path is said here and not
/// again by the cause.
fn write_error(path: &Path, source: std::io::Error) -> sockecho::Error {
    sockecho::Error::Io {
        what: format!("cannot write plot {}", path.display()),
        source,
    }
}

/// Draws one latency-by-percentile curve per series and writes the SVG
/// to `path`. `title` should carry the run's parameters (endpoint,
/// connections, message size, duration).
///
/// Empty histograms are left out; if all are empty the result is
/// [`PlotError::NoData`] and no file is written.
pub fn write_percentile_plot(
    path: &Path,
    title: &str,
    series: &[Series],
    scale: Scale,
) -> Result<(), PlotError> {
    let svg = render_percentile_svg(title, series, scale)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The chart of [`write_percentile_plot`] as SVG text, for callers that
/// write it elsewhere.
pub fn render_percentile_svg(
    title: &str,
    series: &[Series],
    scale: Scale,
) -> Result<String, PlotError> {
    let series: Vec<&Series> = series.iter().filter(|s| !s.histogram.is_empty()).collect();
    let most_samples = series
        .iter()
        .map(|s| s.histogram.len())
        .max()
        .ok_or(PlotError::NoData)?;
    let max_us = series.iter().map(|s| s.histogram.max()).max().unwrap_or(0);
    let min_us = series.iter().map(|s| s.histogram.min()).min().unwrap_or(0);

    // Enough decades to reach each curve's last sample, at least one.
    let nines = (decades(most_samples).ceil() as u32).clamp(1, MAX_NINES);
    let (divisor, unit) = if max_us >= MS_THRESHOLD_US {
        (1_000.0, "ms")
    } else {
        (1.0, "µs")
    };
    let axis = LatencyAxis::new(scale, min_us as f64 / divisor, max_us as f64 / divisor);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let x_max = nines as i32 * X_PER_DECADE;
        let ticks = (0..=nines as i32).map(|n| n * X_PER_DECADE).collect();
        let x_axis = (0..x_max).with_key_points(ticks);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            // Room for the last tick label, centred on the right edge.
            .margin_right(48)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x_axis, axis.range())
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc(format!("latency ({unit})"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| axis_number(axis.value(*y)))
            .draw()
            .map_err(draw_error)?;

        let mut colors = 0;
        for s in &series {
            let (color, width) = if s.bold {
                (BLACK.to_rgba(), 3)
            } else {
                colors += 1;
                (Palette99::pick(colors - 1).to_rgba(), 2)
            };
            let points = curve(s.histogram, f64::from(nines), divisor)
                .into_iter()
                .map(|(x, y)| ((x * f64::from(X_PER_DECADE)).round() as i32, axis.at(y)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(width)))
                .map_err(draw_error)?
                .label(s.label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(width))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Units of the latency axis per unit of latency (linear) or per decade
/// (log). The axis is integer, as the x axis is, so plotters takes exact
/// key points; a thousandth is far below a pixel.
const Y_PER_UNIT: f64 = 1_000.0;

/// The latency axis: where a value goes, and its tick marks.
#[derive(Debug, Clone, Copy)]
struct LatencyAxis {
    scale: Scale,
    /// Linear: 0 and the top. Log: the bounding decades, as log10.
    low: f64,
    high: f64,
}

impl LatencyAxis {
    /// An axis holding values from `min` to `max` (in the chart's unit).
    fn new(scale: Scale, min: f64, max: f64) -> LatencyAxis {
        match scale {
            Scale::Linear => LatencyAxis {
                scale,
                low: 0.0,
                high: (max * 1.05).max(1.0),
            },
            Scale::Log => {
                // Whole decades around the data: 0 µs (a sub-microsecond
                // echo) is drawn at the floor.
                let floor = min.max(max / 1e6).max(1e-3);
                let low = floor.log10().floor();
                let high = (max.max(floor) * 1.05).log10().ceil().max(low + 1.0);
                LatencyAxis { scale, low, high }
            }
        }
    }

    /// Where `value` is drawn.
    fn at(&self, value: f64) -> i64 {
        let y = match self.scale {
            Scale::Linear => value,
            Scale::Log => value.max(10f64.powf(self.low)).log10(),
        };
        (y * Y_PER_UNIT).round() as i64
    }

    /// The value drawn at `y`.
    fn value(&self, y: i64) -> f64 {
        let y = y as f64 / Y_PER_UNIT;
        match self.scale {
            Scale::Linear => y,
            Scale::Log => 10f64.powf(y),
        }
    }

    /// The coordinate range, with round tick marks: a 1-2-5 step on a
    /// linear axis, 1, 2 and 5 of every decade on a log one.
    fn range(&self) -> WithKeyPoints<RangedCoordi64> {
        let ticks: Vec<f64> = match self.scale {
            Scale::Linear => {
                let rough = self.high / Y_TICKS;
                let magnitude = 10f64.powf(rough.log10().floor());
                let step = [1.0, 2.0, 5.0, 10.0]
                    .into_iter()
                    .map(|m| m * magnitude)
                    .find(|s| *s >= rough)
                    .unwrap_or(rough);
                (0..=(self.high / step) as u32)
                    .map(|i| f64::from(i) * step)
                    .collect()
            }
            Scale::Log => (self.low as i32..=self.high as i32)
                .flat_map(|d| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(d)))
                .filter(|v| v.log10() <= self.high + 1e-9)
                .collect(),
        };
        let ticks = ticks.into_iter().map(|v| self.at(v)).collect();
        let (low, high) = match self.scale {
            Scale::Linear => (0, (self.high * Y_PER_UNIT).round() as i64),
            Scale::Log => (
                (self.low * Y_PER_UNIT).round() as i64,
                (self.high * Y_PER_UNIT).round() as i64,
            ),
        };
        (low..high).with_key_points(ticks)
    }
}

/// `log10(n)`: how many nines of percentile `n` samples can resolve.
fn decades(samples: u64) -> f64 {
    (samples.max(1) as f64).log10()
}

/// Points `(log10(1 / (1 - q)), latency)` of one histogram, from the median
/// region up to its last sample, ending at its maximum.
fn curve(histogram: &LatencyHistogram, x_limit: f64, divisor: f64) -> Vec<(f64, f64)> {
    let x_end = decades(histogram.len()).min(x_limit);
    let steps = (x_end * f64::from(POINTS_PER_DECADE)).ceil() as u32;
    let mut points: Vec<(f64, f64)> = (0..steps)
        .map(|i| {
            let x = f64::from(i) / f64::from(POINTS_PER_DECADE);
            let q = 1.0 - 10f64.powf(-x);
            (x, histogram.value_at_quantile(q) as f64 / divisor)
        })
        .collect();
    let max = histogram.max() as f64 / divisor;
    points.push((x_end, max));
    if x_end < x_limit && histogram.len() > 1 {
        // Past its last sample a curve is flat at its maximum; draw that
        // rather than stopping short of the others.
        points.push((x_limit, max));
    }
    points
}

/// The tick label at `x` thousandths of a decade: 0 -> "0%", 1000 ->
/// "90%", 3000 -> "99.9%"; blank between whole decades.
fn percentile_label(x: i32) -> String {
    if x < 0 || x % X_PER_DECADE != 0 {
        return String::new();
    }
    match (x / X_PER_DECADE) as usize {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        n => format!("99.{}%", "9".repeat(n - 2)),
    }
}

/// A y-axis value without trailing zeros: `50`, `2.5`, `0.25`, `0.001`.
fn axis_number(y: f64) -> String {
    let decimals = if y != 0.0 && y.abs() < 0.01 { 3 } else { 2 };
    let text = format!("{y:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

fn draw_error<E: std::error::Error + Send + Sync>(err: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError::Draw(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let unique = format!(
            "sockecho-plot-{}-{name}-{:?}.svg",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        std::env::temp_dir().join(unique)
    }

    /// The contents of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|el| el.split_once('>'))
            .filter_map(|(_, rest)| rest.split_once("</text>"))
            .map(|(text, _)| text.trim())
            .collect()
    }

    fn latencies(scale: u64) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for i in 1..=20_000u64 {
            h.record(scale * (10 + i % 97) + if i % 1000 == 0 { 40 * scale } else { 0 });
        }
        h
    }

    #[test]
    fn labels() {
        let labels: Vec<String> = (0..=5)
            .map(|n| percentile_label(n * X_PER_DECADE))
            .collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        assert_eq!(percentile_label(500), "");
    }

    #[test]
    fn writes_an_svg_with_title_labels_and_legend() {
        let path = temp_path("ok");
        let a = latencies(1);
        let b = latencies(200);
        let title = "bench tcp://127.0.0.1:9999 <4 conns & 64 B>";
        let series = [Series::new("run a", &a), Series::new("run b", &b)];
        write_percentile_plot(&path, title, &series, Scale::Linear).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("reads back");
        let _ = std::fs::remove_file(&path);
        assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts = texts(&svg);
        assert!(
            texts.contains(&"bench tcp://127.0.0.1:9999 &lt;4 conns &amp; 64 B&gt;"),
            "title missing or unescaped: {texts:?}"
        );
        for text in [
            "run a",
            "run b",
            "0%",
            "90%",
            "99%",
            "99.9%",
            "99.99%",
            "latency (ms)",
        ] {
            assert!(texts.contains(&text), "no <text> for {text}: {texts:?}");
        }
        assert!(svg.matches("<polyline").count() >= 2, "one line per series");
    }

    #[test]
    fn small_latencies_use_microseconds_and_single_samples_work() {
        let mut one = LatencyHistogram::new();
        one.record(42);
        let svg =
            render_percentile_svg("t", &[Series::new("one", &one)], Scale::Linear).expect("plots");
        let texts = texts(&svg);
        assert!(texts.contains(&"latency (µs)"), "{texts:?}");
        assert!(
            texts.contains(&"90%") && !texts.contains(&"99%"),
            "{texts:?}"
        );
    }

    #[test]
    fn empty_input_is_a_clear_error_and_writes_nothing() {
        let path = temp_path("empty");
        let empty = LatencyHistogram::new();
        for series in [&[][..], &[Series::new("empty", &empty)][..]] {
            let err =
                write_percentile_plot(&path, "t", series, Scale::Linear).expect_err("no data");
            assert!(matches!(err, PlotError::NoData), "{err}");
        }
        assert!(!path.exists());
    }

    #[test]
    fn a_log_axis_spans_decades_with_round_ticks_and_bold_merged_curve() {
        let fast = latencies(1);
        let slow = latencies(1000);
        let series = [
            Series::new("fast.json", &fast),
            Series::new("slow.json", &slow),
            Series {
                label: "merged",
                histogram: &slow,
                bold: true,
            },
        ];
        let svg = render_percentile_svg("t", &series, Scale::Log).expect("plots");
        let texts = texts(&svg);
        for text in ["fast.json", "slow.json", "merged", "latency (ms)"] {
            assert!(texts.contains(&text), "no <text> for {text}: {texts:?}");
        }
        // Decades from 0.01 ms to 100 ms, each with 1, 2 and 5.
        for tick in ["0.01", "0.1", "1", "2", "5", "10", "100"] {
            assert!(texts.contains(&tick), "no tick {tick}: {texts:?}");
        }
        assert!(
            svg.contains("stroke-width=\"3\""),
            "the merged curve is bold"
        );
        let axis = LatencyAxis::new(Scale::Linear, 0.0, 95.0);
        assert_eq!(axis_number(axis.value(axis.at(50.0))), "50");
        assert_eq!(axis_number(0.001), "0.001");
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let path = temp_path("missing-dir").join("plot.svg");
        let a = latencies(1);
        let err = write_percentile_plot(&path, "t", &[Series::new("a", &a)], Scale::Linear)
            .expect_err("fails");
        assert!(err.to_string().contains("plot.svg"), "{err}");
    }
}
