//! Charts drawn on the server as inline SVG: no JavaScript, no chart library, readable without
//! styles, and each bar carries a `<title>` that browsers show on hover.
//!
//! Layout ([`day_bars`]) is pure arithmetic kept apart from rendering so tests can check the
//! geometry without parsing SVG.

use super::layout::count;
use chrono::NaiveDate;
use maud::{Markup, html};

/// Width of the chart's coordinate system (it scales to its container).
pub const WIDTH: f64 = 760.0;
/// Height of the chart's coordinate system.
pub const HEIGHT: f64 = 240.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One day's bar, in chart coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct DayBar {
    /// The day.
    pub date: NaiveDate,
    /// Events on the day.
    pub count: u64,
    /// Left edge of the day's slot.
    pub slot_x: f64,
    /// Width of the day's slot (the hover area).
    pub slot_width: f64,
    /// Left edge of the bar.
    pub x: f64,
    /// Top of the bar.
    pub y: f64,
    /// Bar width.
    pub width: f64,
    /// Bar height: proportional to `count`, zero for a day without events.
    pub height: f64,
}

/// The y axis: its top value and the values of its grid lines, from zero up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axis {
    /// The value at the top of the plot.
    pub max: u64,
    /// Grid line values, `0` first and `max` last.
    pub ticks: Vec<u64>,
}

/// A y axis reaching `peak` in at most five intervals of a round step (1, 2, 2.5 or 5 × 10ⁿ).
pub fn axis_for(peak: u64) -> Axis {
    if peak == 0 {
        return Axis { max: 1, ticks: vec![0, 1] };
    }
    let mut magnitude = 1_u64;
    let step = loop {
        // For magnitude 1, 2.5 rounds down to 2: counts are whole, so are ticks.
        let candidates = [magnitude, magnitude * 2, magnitude * 5 / 2, magnitude * 5];
        if let Some(step) = candidates.into_iter().find(|step| peak.div_ceil(*step) <= 5) {
            break step;
        }
        magnitude = magnitude.saturating_mul(10);
    };
    let intervals = peak.div_ceil(step);
    Axis { max: intervals * step, ticks: (0..=intervals).map(|index| index * step).collect() }
}

/// The bars of a per-day series, left to right in the order given.
pub fn day_bars(days: &[(NaiveDate, u64)], axis: &Axis) -> Vec<DayBar> {
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot_width = plot_width / days.len().max(1) as f64;
    let width = (slot_width * 0.72).max(1.0);
    days.iter()
        .enumerate()
        .map(|(index, (date, events))| {
            let height = plot_height * (*events as f64) / (axis.max.max(1) as f64);
            let slot_x = LEFT + slot_width * index as f64;
            DayBar {
                date: *date,
                count: *events,
                slot_x,
                slot_width,
                x: slot_x + (slot_width - width) / 2.0,
                y: TOP + plot_height - height,
                width,
                height,
            }
        })
        .collect()
}

/// A short label for an axis value: `950`, `1.25k`, `15k`, `3.4M`.
pub fn short_count(value: u64) -> String {
    let (unit, suffix) = match value {
        0..1_000 => return value.to_string(),
        1_000..1_000_000 => (1_000.0, "k"),
        _ => (1_000_000.0, "M"),
    };
    let text = format!("{:.2}", value as f64 / unit);
    format!("{}{suffix}", text.trim_end_matches('0').trim_end_matches('.'))
}

fn number(value: f64) -> String {
    format!("{value:.2}")
}

/// The events-per-day bar chart. Every day gets a labelled hover area; every seventh day, counted
/// back from the last, gets a date under the axis.
pub fn events_per_day(days: &[(NaiveDate, u64)]) -> Markup {
    let peak = days.iter().map(|(_, events)| *events).max().unwrap_or(0);
    let axis = axis_for(peak);
    let bars = day_bars(days, &axis);
    let plot_height = HEIGHT - TOP - BOTTOM;
    let baseline = TOP + plot_height;
    let label = format!("Events per day over the last {} days", days.len());
    html! {
        svg.chart data-testid="events-chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(label)
            xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet" {
            title { (label) }
            @for tick in &axis.ticks {
                @let y = baseline - plot_height * (*tick as f64) / (axis.max as f64);
                line.grid-line x1=(number(LEFT)) x2=(number(WIDTH - RIGHT)) y1=(number(y)) y2=(number(y)) {}
                text.tick x=(number(LEFT - 8.0)) y=(number(y + 4.0)) text-anchor="end" { (short_count(*tick)) }
            }
            line.axis-line x1=(number(LEFT)) x2=(number(WIDTH - RIGHT)) y1=(number(baseline)) y2=(number(baseline)) {}
            @for (index, bar) in bars.iter().enumerate() {
                g.bar-group {
                    title { (bar.date.format("%a, %b %-d, %Y").to_string()) ": " (count(bar.count)) @if bar.count == 1 { " event" } @else { " events" } }
                    rect.hit x=(number(bar.slot_x)) y=(number(TOP)) width=(number(bar.slot_width)) height=(number(plot_height)) {}
                    rect.bar x=(number(bar.x)) y=(number(bar.y)) width=(number(bar.width)) height=(number(bar.height)) rx="2"
                        data-date=(bar.date.to_string()) data-count=(bar.count) {}
                }
                @if (bars.len() - 1 - index).is_multiple_of(7) {
                    text.tick x=(number(bar.slot_x + bar.slot_width / 2.0)) y=(number(HEIGHT - 8.0)) text-anchor="middle" {
                        (bar.date.format("%b %-d").to_string())
                    }
                }
            }
            @if peak == 0 {
                text.empty-note x=(number(LEFT + (WIDTH - LEFT - RIGHT) / 2.0)) y=(number(TOP + plot_height / 2.0)) text-anchor="middle" {
                    "No events in this period yet"
                }
            }
        }
    }
}

/// One bar of a horizontal bar chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// What it counts (text; escaped like everything else).
    pub label: String,
    /// How many.
    pub value: u64,
    /// Shown after the value on hover, e.g. "waiting, longest 4 min".
    pub note: String,
}

/// Height of one bar's row in a horizontal bar chart.
const ROW: f64 = 28.0;
/// Width of a horizontal bar chart (half a page: its text stays the size of the page's).
const BARS_WIDTH: f64 = 520.0;
/// Width of the labels' column.
const LABEL_WIDTH: f64 = 150.0;
/// Width of the values' column.
const VALUE_WIDTH: f64 = 56.0;

/// A horizontal bar chart: one labelled row per bar, lengths proportional to the largest value.
pub fn bars(testid: &str, label: &str, rows: &[Bar], empty: &str) -> Markup {
    let height = (rows.len().max(1) as f64) * ROW + 8.0;
    let peak = rows.iter().map(|row| row.value).max().unwrap_or(0).max(1);
    let track = BARS_WIDTH - LABEL_WIDTH - VALUE_WIDTH - 16.0;
    html! {
        svg.chart.hbars data-testid=(testid) viewBox=(format!("0 0 {BARS_WIDTH} {}", number(height))) role="img"
            aria-label=(label) xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMinYMin meet" {
            title { (label) }
            @if rows.is_empty() {
                text.empty-note x=(number(BARS_WIDTH / 2.0)) y=(number(ROW * 0.65)) text-anchor="middle" { (empty) }
            }
            @for (index, row) in rows.iter().enumerate() {
                @let y = 4.0 + index as f64 * ROW;
                @let length = track * row.value as f64 / peak as f64;
                g.bar-group data-label=(row.label) data-count=(row.value) {
                    title { (row.label) ": " (count(row.value)) @if !row.note.is_empty() { " — " (row.note) } }
                    text.tick x=(number(LABEL_WIDTH - 8.0)) y=(number(y + ROW * 0.62)) text-anchor="end" { (row.label) }
                    rect.hit x="0" y=(number(y)) width=(number(BARS_WIDTH)) height=(number(ROW)) {}
                    rect.bar x=(number(LABEL_WIDTH)) y=(number(y + 6.0)) width=(number(length)) height=(number(ROW - 12.0)) rx="2" {}
                    text.tick x=(number(LABEL_WIDTH + track + 8.0)) y=(number(y + ROW * 0.62)) { (count(row.value)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(counts: &[u64]) -> Vec<(NaiveDate, u64)> {
        let first = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        counts.iter().enumerate().map(|(offset, events)| (first + chrono::Days::new(offset as u64), *events)).collect()
    }

    #[test]
    fn axis_steps_are_round_and_reach_the_peak() {
        assert_eq!(axis_for(0), Axis { max: 1, ticks: vec![0, 1] });
        assert_eq!(axis_for(1), Axis { max: 1, ticks: vec![0, 1] });
        assert_eq!(axis_for(3), Axis { max: 3, ticks: vec![0, 1, 2, 3] });
        assert_eq!(axis_for(10), Axis { max: 10, ticks: vec![0, 2, 4, 6, 8, 10] });
        assert_eq!(axis_for(37), Axis { max: 40, ticks: vec![0, 10, 20, 30, 40] });
        assert_eq!(axis_for(1234).max, 1250);
        for peak in [1, 2, 5, 7, 9, 11, 99, 101, 4321, 1_000_001] {
            let axis = axis_for(peak);
            assert!(axis.max >= peak && axis.max <= peak * 2, "{peak}: {axis:?}");
            assert!(axis.ticks.len() <= 6);
            assert_eq!(*axis.ticks.last().unwrap(), axis.max);
        }
    }

    #[test]
    fn bars_are_proportional_to_counts() {
        let days = series(&[10, 5, 0, 20]);
        let axis = axis_for(20);
        let bars = day_bars(&days, &axis);
        assert_eq!(bars.len(), 4);
        assert!((bars[0].height - 2.0 * bars[1].height).abs() < 1e-9);
        assert!((bars[3].height - 2.0 * bars[0].height).abs() < 1e-9);
        assert_eq!(bars[2].height, 0.0, "a day without events has no bar");
        assert!((bars[3].height - (HEIGHT - TOP - BOTTOM)).abs() < 1e-9, "the peak fills the plot");
        // Every bar stands on the baseline, and the slots tile the plot left to right.
        for bar in &bars {
            assert!((bar.y + bar.height - (HEIGHT - BOTTOM)).abs() < 1e-9);
        }
        assert!(bars.windows(2).all(|pair| (pair[1].slot_x - pair[0].slot_x - pair[0].slot_width).abs() < 1e-9));
    }

    #[test]
    fn renders_a_bar_and_a_hover_title_per_day() {
        let svg = events_per_day(&series(&[3, 0, 1200])).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        assert!(svg.contains("data-date=\"2026-11-02\" data-count=\"0\""));
        assert!(svg.contains("<title>Tue, Nov 3, 2026: 1,200 events</title>"), "{svg}");
        assert!(svg.contains("<title>Sun, Nov 1, 2026: 3 events</title>"));
        assert!(svg.contains(">Nov 3</text>"), "the last day is labelled");
        assert!(svg.contains(">1.25k</text>"), "axis top label: {svg}");
        assert!(!svg.contains("No events"));
    }

    #[test]
    fn all_zero_data_says_so() {
        let svg = events_per_day(&series(&[0; 30])).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 30);
        assert!(svg.matches("height=\"0.00\"").count() >= 30);
        assert!(svg.contains("No events in this period yet"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let empty = events_per_day(&[]).into_string();
        assert!(empty.contains("No events in this period yet") && !empty.contains("NaN"));
    }

    #[test]
    fn chart_matches_its_reviewed_snapshot() {
        let counts: Vec<u64> = (0..30).map(|day| if day % 6 == 5 { 0 } else { 40 + (day * 37) % 90 }).collect();
        crate::console::snapshot::assert_snapshot(
            "events_per_day.svg",
            &events_per_day(&series(&counts)).into_string(),
        );
    }

    #[test]
    fn horizontal_bars_are_proportional_and_escaped() {
        let rows = [
            Bar { label: "billing".into(), value: 4, note: "longest 2 min".into() },
            Bar { label: "<b>vip</b>".into(), value: 2, note: String::new() },
            Bar { label: "idle".into(), value: 0, note: String::new() },
        ];
        let svg = bars("queues-chart", "Waiting per queue", &rows, "Nobody waits").into_string();
        assert!(svg.contains(r#"width="298.00""#), "the largest fills the track: {svg}");
        assert!(svg.contains(r#"width="149.00""#), "half the largest, half the track");
        assert!(svg.contains("&lt;b&gt;vip&lt;/b&gt;") && !svg.contains("<b>"), "labels are text");
        assert!(svg.contains("<title>billing: 4 — longest 2 min</title>"));
        assert!(!svg.contains("Nobody waits") && !svg.contains("NaN"));
        let empty = bars("queues-chart", "Waiting per queue", &[], "Nobody waits").into_string();
        assert!(empty.contains("Nobody waits") && !empty.contains("NaN"));
    }

    #[test]
    fn short_counts() {
        assert_eq!(short_count(0), "0");
        assert_eq!(short_count(950), "950");
        assert_eq!(short_count(1_000), "1k");
        assert_eq!(short_count(1_250), "1.25k");
        assert_eq!(short_count(2_500), "2.5k");
        assert_eq!(short_count(15_000), "15k");
        assert_eq!(short_count(3_400_000), "3.4M");
    }
}
