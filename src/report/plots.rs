//! The report's plots, drawn with plotters' SVG backend into strings.

use plotters::prelude::*;
use simsweep_engine::output::TargetObservations;

use super::data::{Band, LossMap, Profile};

const WIDTH: u32 = 720;
const HEIGHT: u32 = 420;
const SMALL: (u32, u32) = (340, 280);
const BAND_95: RGBColor = RGBColor(198, 219, 239);
const BAND_50: RGBColor = RGBColor(107, 174, 214);
const MEDIAN: RGBColor = RGBColor(8, 81, 156);
const OTHERS: RGBColor = RGBColor(150, 150, 150);
const BEST: RGBColor = RGBColor(215, 48, 39);

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawError = Box<dyn std::error::Error>;

/// Draws with `draw` into an SVG string of `size`; a drawing error (which plotters reports for
/// degenerate input) leaves the SVG with what was drawn.
fn svg(size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> Result<(), DrawError>) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let _ = root.fill(&WHITE);
        if let Err(e) = draw(&root) {
            tracing::debug!(error = %e, "report: a plot was not fully drawn");
        }
        let _ = root.present();
    }
    out
}

/// `(lo, hi)` widened so that a single value still spans an axis.
fn span(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi > lo {
        let pad = (hi - lo) * 0.04;
        (lo - pad, hi + pad)
    } else {
        (lo - 0.5 - lo.abs() * 0.05, hi + 0.5 + hi.abs() * 0.05)
    }
}

/// The fit: the observations (points) against the best set's band (95% and 50% envelopes,
/// median) and the next sets' medians.
pub fn fit(target: &str, obs: &TargetObservations, bands: &[(String, Band)]) -> String {
    svg((WIDTH, HEIGHT), |root| {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        let (mut ylo, mut yhi) = (0.0_f64, f64::NEG_INFINITY);
        for t in &obs.times {
            lo = lo.min(*t);
            hi = hi.max(*t);
        }
        for y in &obs.observed {
            yhi = yhi.max(*y);
            ylo = ylo.min(*y);
        }
        for (_, b) in bands {
            for (t, q) in b.times.iter().zip(&b.quantiles) {
                lo = lo.min(*t);
                hi = hi.max(*t);
                yhi = yhi.max(q[4]);
                ylo = ylo.min(q[0]);
            }
        }
        let (x0, x1) = span(lo, hi);
        let (y0, y1) = span(ylo, yhi);
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{target}: fit of the best parameter sets"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(format!("{} (model time)", obs.time_column))
            .y_desc(format!("{} ({})", obs.column, obs.output))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (_, b) in bands.iter().skip(1).rev() {
            let median: Vec<(f64, f64)> =
                b.times.iter().zip(&b.quantiles).map(|(t, q)| (*t, q[2])).collect();
            chart.draw_series(LineSeries::new(median, OTHERS.stroke_width(1)))?;
        }
        if let Some((_, b)) = bands.first() {
            let envelope = |lo: usize, hi: usize| -> Vec<(f64, f64)> {
                let up = b.times.iter().zip(&b.quantiles).map(|(t, q)| (*t, q[hi]));
                let down = b.times.iter().zip(&b.quantiles).rev().map(|(t, q)| (*t, q[lo]));
                up.chain(down).collect()
            };
            chart.draw_series(std::iter::once(Polygon::new(envelope(0, 4), BAND_95.filled())))?;
            chart.draw_series(std::iter::once(Polygon::new(envelope(1, 3), BAND_50.filled())))?;
            let median: Vec<(f64, f64)> =
                b.times.iter().zip(&b.quantiles).map(|(t, q)| (*t, q[2])).collect();
            chart.draw_series(LineSeries::new(median, MEDIAN.stroke_width(2)))?;
        }
        chart.draw_series(
            obs.times
                .iter()
                .zip(&obs.observed)
                .map(|(t, y)| Circle::new((*t, *y), 4, BLACK.filled())),
        )?;
        Ok(())
    })
}

/// Loss against parameter `index` (named `name`): the subsample, the best sets, the profile.
pub fn landscape(
    name: &str,
    index: usize,
    scatter: &[(Vec<f64>, f64)],
    best: &[(Vec<f64>, f64)],
    profile: &Profile,
) -> String {
    svg(SMALL, |root| {
        let mut losses: Vec<f64> = scatter.iter().map(|(_, l)| *l).collect();
        losses.extend(profile.points().iter().map(|(_, l)| *l));
        losses.sort_by(f64::total_cmp);
        let lo = profile.points().iter().map(|(_, l)| *l).fold(f64::INFINITY, f64::min);
        let lo = lo.min(losses.first().copied().unwrap_or(0.0));
        let hi = if losses.is_empty() { lo + 1.0 } else { super::data::quantile(&losses, 0.5) };
        let (x0, x1) = span(profile.min, profile.max);
        let (y0, y1) = span(lo, hi.max(lo));
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(name)
            .y_desc("loss")
            .x_labels(5)
            .y_labels(5)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(scatter.iter().filter(|(_, l)| *l <= y1).map(|(p, l)| {
            Circle::new((p[index], *l), 1, RGBColor(70, 70, 90).mix(0.35).filled())
        }))?;
        chart.draw_series(LineSeries::new(profile.points(), MEDIAN.stroke_width(2)))?;
        chart.draw_series(
            best.iter().map(|(p, l)| Circle::new((p[index], l.min(y1)), 4, BEST.filled())),
        )?;
        Ok(())
    })
}

/// A pairwise loss map of parameters `x` (index `i`) and `y` (index `j`), the best marked.
pub fn loss_map(
    x: &str,
    y: &str,
    map: &LossMap,
    best: &[(Vec<f64>, f64)],
    i: usize,
    j: usize,
) -> String {
    svg(SMALL, |root| {
        let (x0, x1) = map.x;
        let (y0, y1) = map.y;
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().x_desc(x).y_desc(y).x_labels(5).y_labels(5).disable_mesh().draw()?;
        let (lo, hi) = map.loss_range().unwrap_or((0.0, 1.0));
        let n = map.cells;
        let (dx, dy) = ((x1 - x0) / n as f64, (y1 - y0) / n as f64);
        chart.draw_series(map.lowest.iter().enumerate().filter_map(|(k, l)| {
            let l = (*l)?;
            let (ix, iy) = (k % n, k / n);
            let cx = x0 + dx * ix as f64;
            let cy = y0 + dy * iy as f64;
            Some(Rectangle::new([(cx, cy), (cx + dx, cy + dy)], shade(l, lo, hi).filled()))
        }))?;
        chart.draw_series(
            best.iter().map(|(p, _)| Cross::new((p[i], p[j]), 4, BEST.stroke_width(2))),
        )?;
        Ok(())
    })
}

/// Colour of `loss` on a light-to-dark scale over `[lo, hi]`, by rank of the log distance to
/// the best (so that the low region keeps its detail).
fn shade(loss: f64, lo: f64, hi: f64) -> RGBColor {
    let f = if hi > lo { ((loss - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 };
    let f = (1.0 + 99.0 * f).ln() / 100f64.ln();
    // From dark blue (best) through teal to pale yellow (worst).
    let stops = [
        (8.0, 29.0, 88.0),
        (34.0, 94.0, 168.0),
        (65.0, 182.0, 196.0),
        (199.0, 233.0, 180.0),
        (255.0, 255.0, 217.0),
    ];
    let at = f * (stops.len() - 1) as f64;
    let k = (at.floor() as usize).min(stops.len() - 2);
    let w = at - k as f64;
    let mix = |a: f64, b: f64| (a + (b - a) * w).round() as u8;
    RGBColor(
        mix(stops[k].0, stops[k + 1].0),
        mix(stops[k].1, stops[k + 1].1),
        mix(stops[k].2, stops[k + 1].2),
    )
}

/// Cumulative simulations committed against minutes.
pub fn throughput(series: &[(f64, f64)]) -> String {
    svg((WIDTH, 280), |root| {
        let x1 = series.last().map_or(1.0, |p| p.0).max(1e-3);
        let y1 = series.last().map_or(1.0, |p| p.1).max(1.0);
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x1 * 1.02, 0.0..y1 * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("minutes since the first commit")
            .y_desc("simulations committed")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(LineSeries::new(series.iter().copied(), MEDIAN.stroke_width(2)))?;
        chart.draw_series(series.iter().map(|p| Circle::new(*p, 2, MEDIAN.filled())))?;
        Ok(())
    })
}
