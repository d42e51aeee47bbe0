//! Latency percentiles.

#[allow(unused_imports)]
use crate::prelude::*;

/// "p50 … ms, p99 … ms, max … ms" of sorted latencies, with `decimals` digits.
pub(crate) fn latency_summary(sorted: &[Duration], decimals: usize) -> String {
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    format!(
        "p50 {:.decimals$} ms, p99 {:.decimals$} ms, max {:.decimals$} ms",
        ms(percentile(sorted, 0.50)),
        ms(percentile(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
    )
}

pub(crate) fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}
