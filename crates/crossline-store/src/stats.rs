//! Helpers for the overview statistics shared by the backends.

use crate::from_millis;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// The first day of a window of `days` days ending today, and its start in milliseconds.
pub(crate) fn window_start(now: DateTime<Utc>, days: u32) -> (i64, i64) {
    let today = now.timestamp_millis().div_euclid(86_400_000);
    let first = today - i64::from(days.max(1)) + 1;
    (first, first * 86_400_000)
}

/// One entry per day of the window, zero where nothing happened.
pub(crate) fn fill_days(first_day: i64, days: u32, counts: &HashMap<i64, u64>) -> Vec<(chrono::NaiveDate, u64)> {
    (0..i64::from(days.max(1)))
        .map(|offset| {
            let day = first_day + offset;
            let date = from_millis(day * 86_400_000).date_naive();
            (date, counts.get(&day).copied().unwrap_or(0))
        })
        .collect()
}
