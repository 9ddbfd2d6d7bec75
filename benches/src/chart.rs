//! The chart: throughput and p99 latency by framework and point, as an SVG.
//!
//! Two panels side by side, one line per framework across the points in the order they were
//! run, both on log scales (the frameworks span orders of magnitude). SVG needs no system fonts:
//! text is written as SVG text and the viewer renders it.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::BoxError;
use crate::framework::Name;
use crate::load::Point;
use crate::report::Row;

const COLORS: [RGBColor; 6] = [
    RGBColor(0xd6, 0x27, 0x28), // zrpc: red, the one to look at
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xff, 0x7f, 0x0e),
];

/// Writes the chart of `rows` to `path` (SVG); `title` goes above both panels.
///
/// # Errors
/// If there is nothing to draw or the file cannot be written.
pub fn render(rows: &[Row], path: &Path, title: &str) -> Result<(), BoxError> {
    let mut points: Vec<Point> = Vec::new();
    let mut frameworks: Vec<Name> = Vec::new();
    for r in rows {
        if !points.contains(&r.point) {
            points.push(r.point);
        }
        if !frameworks.contains(&r.framework) {
            frameworks.push(r.framework);
        }
    }
    if points.is_empty() {
        return Err("no results to chart".into());
    }

    let root = SVGBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(640);
    panel(
        &left,
        rows,
        &points,
        &frameworks,
        "throughput (calls/s, higher is better)",
        SeriesLabelPosition::LowerRight,
        |r| r.rps,
    )?;
    panel(
        &right,
        rows,
        &points,
        &frameworks,
        "p99 latency (µs, lower is better)",
        SeriesLabelPosition::UpperLeft,
        |r| r.p99_us,
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: &[Row],
    points: &[Point],
    frameworks: &[Name],
    caption: &str,
    legend: SeriesLabelPosition,
    value: impl Fn(&Row) -> f64,
) -> Result<(), BoxError> {
    let values: Vec<f64> = rows.iter().map(&value).filter(|v| *v > 0.0).collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    if values.is_empty() {
        return Err(format!("nothing to draw for {caption}").into());
    }
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..points.len() - 1).into_segmented(), (lo / 1.6..hi * 1.6).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("callers x connections")
        .x_labels(points.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                points.get(*i).map(ToString::to_string).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|y| format_si(*y))
        .draw()?;

    for (n, framework) in frameworks.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let series: Vec<(SegmentValue<usize>, f64)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, point)| {
                rows.iter()
                    .find(|r| r.framework == *framework && r.point == *point)
                    .map(|r| (SegmentValue::CenterOf(i), value(r)))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
            .label(framework.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(series.into_iter().map(|(x, y)| Circle::new((x, y), 4, color.filled())))?;
    }
    chart.configure_series_labels().position(legend).background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    Ok(())
}

/// `1234567` as `1.2M`, `45000` as `45k`.
fn format_si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
