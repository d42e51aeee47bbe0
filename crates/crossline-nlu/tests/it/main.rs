//! Integration tests of the public API: one test binary for the crate.

mod bad_input;
mod definition;
mod properties;
mod regression;

use chrono::TimeZone;
use crossline_nlu::RecognizeContext;

/// Monday 2026-11-23, 10:00 in New York.
pub fn context() -> RecognizeContext {
    RecognizeContext {
        now: chrono::Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap(),
        time_zone: chrono_tz::America::New_York,
        default_region: "US".into(),
    }
}
