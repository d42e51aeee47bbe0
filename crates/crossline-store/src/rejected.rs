//! What both backends share about rejected events: the bounds of a row and the retention arithmetic.
//!
//! Retention is trimmed when rejections are recorded, never by a background task, and cheaply:
//! rows older than the age limit go by a range delete on `received_at` (usually nothing to do), and
//! the per-workspace cap is enforced by counting only every so often. A small counter per workspace
//! (`rejected_event_trims.since_trim`) says how many rows were added since the workspace was last
//! cut back to its newest `keep` rows; once more than `slack` have been, it is cut back again. So a
//! workspace never holds more than `keep + slack` = `max_per_workspace` rows, and the walk over a
//! workspace's newest rows that the cut needs happens once per `slack` rows, not per insert.

use crate::{MAX_REJECTED_RAW_BYTES, NewRejectedEvent, RejectedRetention, to_millis};

/// Longest kept endpoint and code.
const MAX_LABEL_BYTES: usize = 64;
/// Longest kept `messageId` (the longest an accepted one may be).
const MAX_MESSAGE_ID_BYTES: usize = 512;
/// Longest kept validation message.
const MAX_MESSAGE_BYTES: usize = 1024;

/// A rejected event as both backends insert it: every text cut to its bound.
pub(crate) struct RejectedRow<'a> {
    pub(crate) id: String,
    pub(crate) received_at: i64,
    pub(crate) endpoint: &'a str,
    pub(crate) index: i64,
    pub(crate) message_id: Option<&'a str>,
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
    pub(crate) raw: &'a str,
}

impl<'a> RejectedRow<'a> {
    /// The row for `event`, with a new id (ids made in order sort in order).
    pub(crate) fn of(event: &'a NewRejectedEvent) -> Self {
        RejectedRow {
            id: crossline_core::ids::new_id("rej"),
            received_at: to_millis(event.received_at),
            endpoint: cut(&event.endpoint, MAX_LABEL_BYTES),
            index: i64::from(event.index),
            message_id: event.message_id.as_deref().map(|id| cut(id, MAX_MESSAGE_ID_BYTES)),
            code: cut(&event.code, MAX_LABEL_BYTES),
            message: cut(&event.message, MAX_MESSAGE_BYTES),
            raw: cut(&event.raw, MAX_REJECTED_RAW_BYTES),
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// When and how far a workspace's rejected events are cut back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrimPlan {
    /// Rows that may be added after a cut before the next one (a tenth of the cap).
    pub(crate) slack: i64,
    /// Rows a cut keeps, the newest.
    pub(crate) keep: i64,
}

impl TrimPlan {
    pub(crate) fn of(retention: &RejectedRetention) -> Self {
        let cap = i64::try_from(retention.max_per_workspace).unwrap_or(i64::MAX);
        let slack = cap / 10;
        TrimPlan { slack, keep: cap - slack }
    }

    /// The counter a workspace starts with when it has none (first rejection, or rows from before
    /// the counter existed): past the slack, so the first recording cuts back.
    pub(crate) fn unknown(&self, added: i64) -> i64 {
        self.slack.saturating_add(added).saturating_add(1)
    }

    /// Whether a workspace with `since_trim` rows added since its last cut is due for one.
    pub(crate) fn due(&self, since_trim: i64) -> bool {
        since_trim > self.slack
    }
}

/// Rows received before this (milliseconds) are past the age limit, judged by the newest event
/// being recorded (the caller's clock, so tests can set it).
pub(crate) fn age_cutoff(events: &[NewRejectedEvent], retention: &RejectedRetention) -> Option<i64> {
    let newest = events.iter().map(|event| event.received_at).max()?;
    Some(to_millis(newest.checked_sub_signed(retention.max_age).unwrap_or(newest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_cut_at_character_boundaries() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("aé", 2), "a", "é is two bytes and does not fit");
        let long = "€".repeat(1000);
        assert!(cut(&long, MAX_REJECTED_RAW_BYTES).len() <= MAX_REJECTED_RAW_BYTES);
    }

    #[test]
    fn the_cap_is_kept_with_a_cut_every_tenth() {
        let plan = TrimPlan::of(&RejectedRetention::default());
        assert_eq!((plan.slack, plan.keep), (1000, 9000));
        assert!(!plan.due(1000) && plan.due(1001));
        assert!(plan.due(plan.unknown(1)));
        let small = TrimPlan::of(&RejectedRetention { max_per_workspace: 5, ..Default::default() });
        assert_eq!((small.slack, small.keep), (0, 5), "a small cap is kept exactly, cut on every recording");
        assert!(small.due(1));
    }
}
