//! Dates, times, date-times and durations, including relative expressions ("tomorrow", "next tuesday at
//! 3pm", "in 2 days", "noon", "the 5th") resolved against a reference instant in the customer's time zone.
//!
//! Conventions where English is ambiguous (documented in docs/nlu.md):
//! - a bare weekday ("tuesday", "on friday") is the nearest such day from today on, today included;
//!   "next tuesday" is the first Tuesday strictly after today; "last tuesday" the latest strictly before;
//! - a date without a year that has already passed this year is next year's; "the 5th" is this month's
//!   5th, or next month's if it has passed;
//! - "at 3" (no am/pm) is read as business hours: 1–7 → afternoon, 8–11 → morning;
//! - a time alone in a date-time slot is the next occurrence of that time; a date alone is its midnight;
//! - numeric dates follow the region: month first for US-style regions, day first elsewhere.
//!
//! Every date and duration computation here is checked: customers type anything ("in 999999999 days",
//! "quarter to 4294967296"), and an expression whose value falls outside the representable range is simply
//! not a value — it is not found, never a panic. Dates are kept within years [`MIN_YEAR`]..=[`MAX_YEAR`],
//! the four-digit years that the slot formats (`YYYY-MM-DD`, RFC 3339) can express.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use crate::numbers::{is_digits, number_at};
use crate::text::Token;

/// Earliest year a resolved date may have: slot formats write years with four digits.
pub const MIN_YEAR: i32 = 1;
/// Latest year a resolved date may have: slot formats write years with four digits.
pub const MAX_YEAR: i32 = 9999;
/// Longest duration that is a value, in seconds: 2^53, the largest whole number a JSON number (an IEEE
/// double) holds exactly, since durations are reported as whole seconds.
pub const MAX_DURATION_SECONDS: f64 = 9_007_199_254_740_992.0;

/// Reference point for relative expressions.
#[derive(Debug, Clone, Copy)]
pub struct TemporalContext {
    /// Now.
    pub now: DateTime<Utc>,
    /// The customer's time zone.
    pub time_zone: Tz,
    /// Numeric dates are day/month (not month/day).
    pub day_first: bool,
}

impl TemporalContext {
    /// The local wall-clock time, or `None` when it lies outside the years [`MIN_YEAR`]..=[`MAX_YEAR`]
    /// (nothing relative to such a "now" can be written in the slot formats; chrono itself would panic
    /// converting its extremes).
    fn local_now(&self) -> Option<NaiveDateTime> {
        let utc = self.now.naive_utc();
        let offset = self.time_zone.offset_from_utc_datetime(&utc).fix();
        utc.checked_add_offset(offset).filter(|local| (MIN_YEAR..=MAX_YEAR).contains(&local.year()))
    }

    fn today(&self) -> Option<NaiveDate> {
        self.local_now().map(|local| local.date())
    }

    /// Turns a local date-time into an instant, taking the earlier reading in a DST fold and skipping
    /// forward an hour in a DST gap.
    pub fn localize(&self, local: NaiveDateTime) -> DateTime<Tz> {
        match self.time_zone.from_local_datetime(&local).earliest() {
            Some(instant) => instant,
            None => local
                .checked_add_signed(TimeDelta::hours(1))
                .and_then(|later| self.time_zone.from_local_datetime(&later).earliest())
                .unwrap_or_else(|| self.time_zone.from_utc_datetime(&local)),
        }
    }
}

/// A match over tokens `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<T> {
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
    /// The value.
    pub value: T,
}

fn word(tokens: &[Token], index: usize) -> &str {
    tokens.get(index).map_or("", |token| token.lower.as_str())
}

fn weekday_of(text: &str) -> Option<Weekday> {
    Some(match text {
        "monday" | "mon" | "mondays" => Weekday::Mon,
        "tuesday" | "tue" | "tues" | "tuesdays" => Weekday::Tue,
        "wednesday" | "wed" | "weds" | "wednesdays" => Weekday::Wed,
        "thursday" | "thu" | "thur" | "thurs" | "thursdays" => Weekday::Thu,
        "friday" | "fri" | "fridays" => Weekday::Fri,
        "saturday" | "sat" | "saturdays" => Weekday::Sat,
        "sunday" | "sun" | "sundays" => Weekday::Sun,
        _ => return None,
    })
}

fn month_of(text: &str) -> Option<u32> {
    Some(match text {
        "january" | "jan" => 1,
        "february" | "feb" => 2,
        "march" | "mar" => 3,
        "april" | "apr" => 4,
        "may" => 5,
        "june" | "jun" => 6,
        "july" | "jul" => 7,
        "august" | "aug" => 8,
        "september" | "sep" | "sept" => 9,
        "october" | "oct" => 10,
        "november" | "nov" => 11,
        "december" | "dec" => 12,
        _ => return None,
    })
}

/// Words that are also ordinary English and count as dates only next to a date word.
fn is_ambiguous_name(text: &str) -> bool {
    matches!(text, "sun" | "sat" | "mon" | "wed" | "may" | "mar" | "jan" | "dec" | "sep")
}

fn ordinal_word(text: &str) -> Option<u32> {
    Some(match text {
        "first" => 1,
        "second" => 2,
        "third" => 3,
        "fourth" => 4,
        "fifth" => 5,
        "sixth" => 6,
        "seventh" => 7,
        "eighth" => 8,
        "ninth" => 9,
        "tenth" => 10,
        "eleventh" => 11,
        "twelfth" => 12,
        "thirteenth" => 13,
        "fourteenth" => 14,
        "fifteenth" => 15,
        "sixteenth" => 16,
        "seventeenth" => 17,
        "eighteenth" => 18,
        "nineteenth" => 19,
        "twentieth" => 20,
        "thirtieth" => 30,
        _ => return None,
    })
}

/// A day of the month written as "5", "5th", "21st", "fifth", "twenty-first". Returns (day, end, was an
/// ordinal).
fn day_number_at(tokens: &[Token], index: usize) -> Option<(u32, usize, bool)> {
    let text = word(tokens, index);
    if is_digits(text) && text.len() <= 2 {
        let day: u32 = text.parse().ok()?;
        return (1..=31).contains(&day).then_some((day, index + 1, false));
    }
    for suffix in ["st", "nd", "rd", "th"] {
        if let Some(digits) = text.strip_suffix(suffix)
            && is_digits(digits)
            && digits.len() <= 2
        {
            let day: u32 = digits.parse().ok()?;
            return (1..=31).contains(&day).then_some((day, index + 1, true));
        }
    }
    if let Some(day) = ordinal_word(text) {
        return Some((day, index + 1, true));
    }
    if matches!(text, "twenty" | "thirty") {
        let base = if text == "twenty" { 20 } else { 30 };
        let mut next = index + 1;
        if word(tokens, next) == "-" {
            next += 1;
        }
        if let Some(unit) = ordinal_word(word(tokens, next)).filter(|unit| *unit < 10) {
            let day = base + unit;
            return (day <= 31).then_some((day, next + 1, true));
        }
    }
    None
}

fn year_at(tokens: &[Token], index: usize) -> Option<(i32, usize)> {
    let mut position = index;
    if word(tokens, position) == "," {
        position += 1;
    }
    let text = word(tokens, position);
    if is_digits(text) && text.len() == 4 {
        let year: i32 = text.parse().ok()?;
        return (1900..=2200).contains(&year).then_some((year, position + 1));
    }
    None
}

/// `date` moved by `days` days, or `None` when the result is not a representable date.
fn plus_days(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    date.checked_add_signed(TimeDelta::try_days(days)?)
}

/// `date` moved back by `days` days, or `None` when the result is not a representable date.
fn minus_days(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    plus_days(date, days.checked_neg()?)
}

/// `date` moved by `months` months, on the same day or the month's last day; `None` when out of range.
fn add_months(date: NaiveDate, months: i64) -> Option<NaiveDate> {
    let total = i64::from(date.year()).checked_mul(12)?.checked_add(i64::from(date.month0()))?.checked_add(months)?;
    let year = i32::try_from(total.div_euclid(12)).ok()?;
    let month = total.rem_euclid(12) as u32 + 1;
    (month_days_down(date.day())).find_map(|day| NaiveDate::from_ymd_opt(year, month, day))
}

/// The day itself, then earlier days down to the 28th, the last day every month has.
fn month_days_down(day: u32) -> impl Iterator<Item = u32> {
    (day.min(28)..=day).rev()
}

/// A date in the future (or today) for a month/day without a year.
fn upcoming(today: NaiveDate, month: u32, day: u32) -> Option<NaiveDate> {
    let this_year = NaiveDate::from_ymd_opt(today.year(), month, day);
    match this_year {
        Some(date) if date >= today => Some(date),
        _ => NaiveDate::from_ymd_opt(today.year() + 1, month, day),
    }
}

/// Unit of a calendar span, in days for weeks and as months for months and years.
enum CalendarUnit {
    Days(i64),
    Months(i32),
}

fn calendar_unit(text: &str) -> Option<CalendarUnit> {
    Some(match text {
        "day" | "days" => CalendarUnit::Days(1),
        "week" | "weeks" | "wk" | "wks" => CalendarUnit::Days(7),
        "fortnight" | "fortnights" => CalendarUnit::Days(14),
        "month" | "months" => CalendarUnit::Months(1),
        "year" | "years" | "yr" | "yrs" => CalendarUnit::Months(12),
        _ => return None,
    })
}

/// `date` moved by `count` units; `None` when the result is out of range.
fn shift(date: NaiveDate, count: i64, unit: &CalendarUnit) -> Option<NaiveDate> {
    match unit {
        CalendarUnit::Days(days) => plus_days(date, count.checked_mul(*days)?),
        CalendarUnit::Months(months) => add_months(date, count.checked_mul(i64::from(*months))?),
    }
}

/// A span count as whole units: the saturating float-to-integer cast turns huge or non-finite counts into
/// values that the checked date arithmetic then refuses.
fn whole(count: f64) -> i64 {
    count.round() as i64
}

/// Count of a span: a number, or "a"/"an"/"one".
fn count_at(tokens: &[Token], index: usize) -> Option<(f64, usize)> {
    if matches!(word(tokens, index), "a" | "an") {
        return Some((1.0, index + 1));
    }
    number_at(tokens, index).map(|number| (number.value, number.end))
}

/// Tries every date pattern at `index`.
fn date_at(tokens: &[Token], index: usize, context: &TemporalContext) -> Option<Found<NaiveDate>> {
    let today = context.today()?;
    let first = word(tokens, index);
    // Every date leaves through here, so none outside the four-digit years is ever a value.
    let found = |end: usize, value: NaiveDate| {
        (MIN_YEAR..=MAX_YEAR).contains(&value.year()).then_some(Found { start: index, end, value })
    };
    match first {
        "today" | "tonight" | "tonite" | "2day" => return found(index + 1, today),
        "tomorrow" | "tomorow" | "tommorow" | "tommorrow" | "tmrw" | "tmr" | "tomorrows" => {
            return found(index + 1, plus_days(today, 1)?);
        }
        "yesterday" => return found(index + 1, minus_days(today, 1)?),
        _ => {}
    }
    // "(the) day after tomorrow".
    let after_the = if first == "the" { index + 1 } else { index };
    if word(tokens, after_the) == "day"
        && word(tokens, after_the + 1) == "after"
        && matches!(word(tokens, after_the + 2), "tomorrow" | "tomorow" | "tommorow")
    {
        return found(after_the + 3, plus_days(today, 2)?);
    }
    if word(tokens, after_the) == "day"
        && word(tokens, after_the + 1) == "before"
        && word(tokens, after_the + 2) == "yesterday"
    {
        return found(after_the + 3, minus_days(today, 2)?);
    }
    // "next/this/last/coming <weekday>", "next week/month/year".
    if matches!(first, "next" | "this" | "last" | "coming" | "following") {
        let second = word(tokens, index + 1);
        if let Some(weekday) = weekday_of(second) {
            let current = today.weekday().num_days_from_monday() as i64;
            let target = weekday.num_days_from_monday() as i64;
            let date = match first {
                "last" => {
                    let back = (current - target).rem_euclid(7);
                    minus_days(today, if back == 0 { 7 } else { back })?
                }
                "this" => plus_days(today, (target - current).rem_euclid(7))?,
                _ => {
                    let ahead = (target - current).rem_euclid(7);
                    plus_days(today, if ahead == 0 { 7 } else { ahead })?
                }
            };
            return found(index + 2, date);
        }
        let direction = if first == "last" { -1 } else { 1 };
        match second {
            "week" if first != "this" => {
                // The Monday of the next (or previous) week, or the named day in it ("next week on friday").
                let monday = minus_days(today, today.weekday().num_days_from_monday() as i64)?;
                let mut day_position = index + 2;
                if word(tokens, day_position) == "on" {
                    day_position += 1;
                }
                if let Some(weekday) = weekday_of(word(tokens, day_position)) {
                    let offset = 7 * direction + weekday.num_days_from_monday() as i64;
                    return found(day_position + 1, plus_days(monday, offset)?);
                }
                return found(index + 2, plus_days(monday, 7 * direction)?);
            }
            "month" if first != "this" => {
                let first_of_month = today.with_day(1).unwrap_or(today);
                return found(index + 2, add_months(first_of_month, direction)?);
            }
            "weekend" => {
                let saturday_offset = (5 - today.weekday().num_days_from_monday() as i64).rem_euclid(7);
                let mut saturday = plus_days(today, saturday_offset)?;
                if first == "next" && saturday_offset < 2 {
                    saturday = plus_days(saturday, 7)?;
                }
                return found(index + 2, saturday);
            }
            _ => {}
        }
    }
    if first == "weekend" || (first == "the" && word(tokens, index + 1) == "weekend") {
        let end = if first == "the" { index + 2 } else { index + 1 };
        let offset = (5 - today.weekday().num_days_from_monday() as i64).rem_euclid(7);
        return found(end, plus_days(today, offset)?);
    }
    // Bare weekday, or "tuesday next week".
    if let Some(weekday) = weekday_of(first) {
        let previous = if index > 0 { word(tokens, index - 1) } else { "" };
        if word(tokens, index + 1) == "next" && word(tokens, index + 2) == "week" {
            let monday = minus_days(today, today.weekday().num_days_from_monday() as i64)?;
            return found(index + 3, plus_days(monday, 7 + weekday.num_days_from_monday() as i64)?);
        }
        if !is_ambiguous_name(first) || matches!(previous, "on" | "by" | "until" | "for") {
            let ahead =
                (weekday.num_days_from_monday() as i64 - today.weekday().num_days_from_monday() as i64).rem_euclid(7);
            return found(index + 1, plus_days(today, ahead)?);
        }
    }
    // "in 3 days", "in a week".
    if first == "in"
        && let Some((count, after)) = count_at(tokens, index + 1)
        && let Some(unit) = calendar_unit(word(tokens, after))
    {
        return found(after + 1, shift(today, whole(count), &unit)?);
    }
    // "3 days from now", "a week from today", "2 weeks later", "3 days ago".
    if let Some((count, after)) = count_at(tokens, index)
        && let Some(unit) = calendar_unit(word(tokens, after))
    {
        let tail = word(tokens, after + 1);
        if tail == "from" && matches!(word(tokens, after + 2), "now" | "today" | "tomorrow") {
            let base = if word(tokens, after + 2) == "tomorrow" { plus_days(today, 1)? } else { today };
            return found(after + 3, shift(base, whole(count), &unit)?);
        }
        if tail == "ago" {
            return found(after + 2, shift(today, whole(count).checked_neg()?, &unit)?);
        }
        if matches!(tail, "later" | "out") {
            return found(after + 2, shift(today, whole(count), &unit)?);
        }
    }
    // ISO "2026-03-14".
    if is_digits(first)
        && first.len() == 4
        && word(tokens, index + 1) == "-"
        && word(tokens, index + 3) == "-"
        && let (Ok(year), Ok(month), Ok(day)) =
            (first.parse::<i32>(), word(tokens, index + 2).parse::<u32>(), word(tokens, index + 4).parse::<u32>())
        && let Some(date) = NaiveDate::from_ymd_opt(year, month, day)
    {
        return found(index + 5, date);
    }
    // "3/14", "3/14/2027", "14.3.2027".
    if is_digits(first)
        && first.len() <= 2
        && matches!(word(tokens, index + 1), "/" | ".")
        && is_digits(word(tokens, index + 2))
        && word(tokens, index + 2).len() <= 2
        && tokens[index + 1].span.start == tokens[index].span.end
    {
        let separator = word(tokens, index + 1).to_string();
        let (Ok(left), Ok(right)) = (first.parse::<u32>(), word(tokens, index + 2).parse::<u32>()) else {
            return None;
        };
        let (month, day) = if context.day_first { (right, left) } else { (left, right) };
        let mut end = index + 3;
        let mut year = None;
        if word(tokens, end) == separator && is_digits(word(tokens, end + 1)) {
            let text = word(tokens, end + 1);
            if let Ok(value) = text.parse::<i32>() {
                year = match text.len() {
                    2 => Some(2000 + value),
                    4 => Some(value),
                    _ => None,
                };
                if year.is_some() {
                    end += 2;
                }
            }
        }
        let date = match year {
            Some(year) => NaiveDate::from_ymd_opt(year, month, day),
            None if separator == "/" => upcoming(today, month, day),
            None => None,
        };
        if let Some(date) = date {
            return found(end, date);
        }
    }
    // "march 3", "march 3rd, 2027", "march the 3rd".
    if let Some(month) = month_of(first) {
        let mut position = index + 1;
        if word(tokens, position) == "the" {
            position += 1;
        }
        if let Some((day, end, _)) = day_number_at(tokens, position) {
            return match year_at(tokens, end) {
                Some((year, end)) => NaiveDate::from_ymd_opt(year, month, day).and_then(|date| found(end, date)),
                None => upcoming(today, month, day).and_then(|date| found(end, date)),
            };
        }
    }
    // "3 march", "3rd of march", "the 3rd of march", "the 5th", "on the 21st".
    let mut position = index;
    if first == "the" {
        position += 1;
    }
    if let Some((day, end, ordinal)) = day_number_at(tokens, position) {
        let mut month_position = end;
        if word(tokens, month_position) == "of" {
            month_position += 1;
        }
        if let Some(month) = month_of(word(tokens, month_position)) {
            let end = month_position + 1;
            return match year_at(tokens, end) {
                Some((year, end)) => NaiveDate::from_ymd_opt(year, month, day).and_then(|date| found(end, date)),
                None => upcoming(today, month, day).and_then(|date| found(end, date)),
            };
        }
        // A lone ordinal is a day of this month, or of the next month once it has passed.
        if ordinal && (first == "the" || ordinal_day_context(tokens, index)) {
            let this_month = NaiveDate::from_ymd_opt(today.year(), today.month(), day);
            let date = match this_month {
                Some(date) if date >= today => Some(date),
                _ => {
                    let mut month_start = add_months(today.with_day(1).unwrap_or(today), 1)?;
                    // Skip months that lack this day (the 31st).
                    let mut result = None;
                    for _ in 0..3 {
                        if let Some(date) = month_start.with_day(day) {
                            result = Some(date);
                            break;
                        }
                        month_start = add_months(month_start, 1)?;
                    }
                    result
                }
            };
            if let Some(date) = date {
                return found(end, date);
            }
        }
    }
    None
}

/// A lone "5th" counts as a date after "on"/"by"/"until"/"for" or when it is the whole answer.
fn ordinal_day_context(tokens: &[Token], index: usize) -> bool {
    index == 0 || matches!(word(tokens, index - 1), "on" | "by" | "until" | "for" | "before" | "after")
}

/// am/pm marker at `index`: "am", "pm", "a.m.", "p.m.". Returns (is pm, end).
fn meridiem_at(tokens: &[Token], index: usize) -> Option<(bool, usize)> {
    match word(tokens, index) {
        "am" => Some((false, index + 1)),
        "pm" => Some((true, index + 1)),
        "a" | "p" if word(tokens, index + 1) == "." && word(tokens, index + 2) == "m" => {
            let end = if word(tokens, index + 3) == "." { index + 4 } else { index + 3 };
            Some((word(tokens, index) == "p", end))
        }
        _ => None,
    }
}

/// Splits "3pm", "10am", "1030pm" into (digits, is pm).
fn glued_meridiem(text: &str) -> Option<(&str, bool)> {
    if let Some(digits) = text.strip_suffix("pm") {
        return is_digits(digits).then_some((digits, true));
    }
    if let Some(digits) = text.strip_suffix("am") {
        return is_digits(digits).then_some((digits, false));
    }
    None
}

fn apply_meridiem(hour: u32, pm: bool) -> Option<u32> {
    if !(1..=12).contains(&hour) {
        return None;
    }
    Some(match (hour, pm) {
        (12, false) => 0,
        (12, true) => 12,
        (hour, true) => hour + 12,
        (hour, false) => hour,
    })
}

/// A part of the day after a time ("3 in the afternoon", "7 at night", "9 this morning"). Returns (is pm,
/// end).
fn day_part_after(tokens: &[Token], index: usize) -> Option<(bool, usize)> {
    let (first, second) = (word(tokens, index), word(tokens, index + 1));
    let part = match (first, second) {
        ("in", "the") => (word(tokens, index + 2), index + 3),
        ("this" | "tomorrow" | "in", _) => (second, index + 2),
        ("at", "night") => ("night", index + 2),
        ("tonight" | "tonite", _) => ("night", index + 1),
        _ => return None,
    };
    match part.0 {
        "morning" => Some((false, part.1)),
        "afternoon" | "evening" | "night" => Some((true, part.1)),
        _ => None,
    }
}

/// Tries every time pattern at `index`.
fn time_at(tokens: &[Token], index: usize) -> Option<Found<NaiveTime>> {
    let first = word(tokens, index);
    let make = |end: usize, hour: u32, minute: u32| {
        NaiveTime::from_hms_opt(hour, minute, 0).map(|value| Found { start: index, end, value })
    };
    match first {
        "noon" | "midday" => return make(index + 1, 12, 0),
        "midnight" => return make(index + 1, 0, 0),
        "half" | "quarter" => {
            let past = word(tokens, index + 1) == "past";
            let to = word(tokens, index + 1) == "to";
            if past || to {
                let hour_text = word(tokens, index + 2);
                let (hour, mut end) = match hour_text {
                    "noon" => (12, index + 3),
                    "midnight" => (0, index + 3),
                    _ => {
                        // An hour of the clock: a whole number 0–23 ("quarter to 4294967296" is none).
                        let number = number_at(tokens, index + 2)
                            .filter(|number| number.value.fract() == 0.0 && (0.0..=23.0).contains(&number.value))?;
                        (number.value as u32, number.end)
                    }
                };
                let minutes = if first == "half" { 30 } else { 15 };
                let mut hour = hour;
                if let Some((pm, after)) = meridiem_at(tokens, end).or_else(|| day_part_after(tokens, end)) {
                    hour = apply_meridiem(hour, pm)?;
                    end = after;
                } else if (1..=7).contains(&hour) {
                    hour += 12;
                }
                return if to {
                    let total = (hour * 60 + 24 * 60 - minutes) % (24 * 60);
                    make(end, total / 60, total % 60)
                } else {
                    make(end, hour % 24, minutes)
                };
            }
        }
        _ => {}
    }
    // "3pm", "1030am".
    if let Some((digits, pm)) = glued_meridiem(first) {
        let (hour, minute) = match digits.len() {
            1 | 2 => (digits.parse().ok()?, 0),
            3 | 4 => {
                let split = digits.len() - 2;
                (digits[..split].parse().ok()?, digits[split..].parse().ok()?)
            }
            _ => return None,
        };
        return make(index + 1, apply_meridiem(hour, pm)?, minute);
    }
    if !is_digits(first) || first.len() > 2 {
        // "four thirty pm", "seven pm".
        let number = number_at(tokens, index).filter(|number| !number.digits)?;
        let hour = number.value as u32;
        if !(1..=12).contains(&hour) || number.value.fract() != 0.0 {
            return None;
        }
        let mut end = number.end;
        let mut minute = 0;
        if let Some(minutes) =
            number_at(tokens, end).filter(|minutes| !minutes.digits && minutes.value >= 10.0 && minutes.value < 60.0)
        {
            minute = minutes.value as u32;
            end = minutes.end;
        }
        if let Some((pm, after)) = meridiem_at(tokens, end)
            .or_else(|| day_part_after(tokens, end))
            .or_else(|| (word(tokens, end) == "o" && word(tokens, end + 2) == "clock").then(|| (hour <= 7, end + 3)))
        {
            return make(after, apply_meridiem(hour, pm)?, minute);
        }
        return None;
    }
    let hour: u32 = first.parse().ok()?;
    let mut end = index + 1;
    let mut minute = 0;
    let mut has_minutes = false;
    // "3:30", "15:45", "3:30pm".
    if word(tokens, end) == ":" {
        let minute_text = word(tokens, end + 1);
        let (digits, glued) = match glued_meridiem(minute_text) {
            Some((digits, pm)) => (digits, Some(pm)),
            None => (minute_text, None),
        };
        if digits.len() == 2 && is_digits(digits) {
            minute = digits.parse().ok()?;
            has_minutes = true;
            end += 2;
            if let Some(pm) = glued {
                return make(end, apply_meridiem(hour, pm)?, minute);
            }
        } else {
            return None;
        }
    }
    if let Some((pm, after)) = meridiem_at(tokens, end).or_else(|| day_part_after(tokens, end)) {
        return make(after, apply_meridiem(hour, pm)?, minute);
    }
    if word(tokens, end) == "o" && word(tokens, end + 1) == "'" && word(tokens, end + 2) == "clock" {
        let hour = if (1..=7).contains(&hour) { hour + 12 } else { hour };
        return make(end + 3, hour, minute);
    }
    if has_minutes {
        // 24-hour clock, or business hours for "at 3:30".
        let hour =
            if (1..=7).contains(&hour) && index > 0 && word(tokens, index - 1) == "at" { hour + 12 } else { hour };
        return make(end, hour, minute);
    }
    // "at 3": business hours.
    if index > 0 && matches!(word(tokens, index - 1), "at" | "around" | "by") && hour <= 12 {
        let hour = if (1..=7).contains(&hour) { hour + 12 } else { hour };
        return make(end, hour, minute);
    }
    None
}

/// Vague parts of the day, used only when no clock time is present.
fn day_part_time(text: &str) -> Option<NaiveTime> {
    let hour = match text {
        "morning" => 9,
        "afternoon" => 15,
        "evening" => 19,
        "tonight" | "tonite" | "night" => 20,
        "lunchtime" | "lunch" => 12,
        _ => return None,
    };
    NaiveTime::from_hms_opt(hour, 0, 0)
}

fn scan<T>(tokens: &[Token], mut at: impl FnMut(usize) -> Option<Found<T>>) -> Vec<Found<T>> {
    let mut found = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        match at(index) {
            Some(item) if item.end > index => {
                index = item.end;
                found.push(item);
            }
            _ => index += 1,
        }
    }
    found
}

/// All dates in the tokens.
pub fn find_dates(tokens: &[Token], context: &TemporalContext) -> Vec<Found<NaiveDate>> {
    scan(tokens, |index| date_at(tokens, index, context))
}

/// All clock times in the tokens; vague parts of the day ("in the morning", "tonight") only when no clock
/// time is present.
pub fn find_times(tokens: &[Token]) -> Vec<Found<NaiveTime>> {
    let times = scan(tokens, |index| time_at(tokens, index));
    if !times.is_empty() {
        return times;
    }
    scan(tokens, |index| day_part_time(word(tokens, index)).map(|value| Found { start: index, end: index + 1, value }))
}

fn duration_unit(text: &str) -> Option<f64> {
    Some(match text {
        "second" | "seconds" | "sec" | "secs" | "s" => 1.0,
        "minute" | "minutes" | "min" | "mins" | "m" => 60.0,
        "hour" | "hours" | "hr" | "hrs" | "h" => 3600.0,
        "day" | "days" => 86_400.0,
        "week" | "weeks" | "wk" | "wks" => 604_800.0,
        "fortnight" => 1_209_600.0,
        "month" | "months" => 2_592_000.0,
        "year" | "years" | "yr" | "yrs" => 31_536_000.0,
        _ => return None,
    })
}

/// One "N unit" term, with "and a half" / "half an hour" forms. Returns (seconds, end).
fn duration_term_at(tokens: &[Token], index: usize) -> Option<(f64, usize)> {
    if word(tokens, index) == "half"
        && matches!(word(tokens, index + 1), "a" | "an")
        && let Some(unit) = duration_unit(word(tokens, index + 2))
    {
        return Some((unit / 2.0, index + 3));
    }
    let (count, after) = count_at(tokens, index)?;
    let unit_text = word(tokens, after);
    let unit = duration_unit(unit_text)?;
    // Single-letter units only glued to digits ("90m" is one token and not handled; "90 m" is).
    if unit_text.len() == 1 && !is_digits(word(tokens, index)) {
        return None;
    }
    let mut seconds = count * unit;
    let mut end = after + 1;
    if word(tokens, end) == "and" && word(tokens, end + 1) == "a" && word(tokens, end + 2) == "half" {
        seconds += unit / 2.0;
        end += 3;
    }
    Some((seconds, end))
}

/// A duration at `index`: one or more terms joined by "and" or commas ("2 hours and 30 minutes").
fn duration_at(tokens: &[Token], index: usize) -> Option<Found<f64>> {
    let (mut total, mut end) = duration_term_at(tokens, index)?;
    loop {
        let mut next = end;
        if matches!(word(tokens, next), "and" | ",") {
            next += 1;
        }
        match duration_term_at(tokens, next) {
            Some((seconds, after)) => {
                total += seconds;
                end = after;
            }
            None => break,
        }
    }
    // "999999999999999 years" is not a duration anyone means, and not one JSON can carry exactly.
    (total.is_finite() && total.abs() <= MAX_DURATION_SECONDS).then_some(Found { start: index, end, value: total })
}

/// All durations, in seconds.
pub fn find_durations(tokens: &[Token]) -> Vec<Found<f64>> {
    scan(tokens, |index| duration_at(tokens, index))
}

/// All date-times: "now", "in 2 hours", dates with times in either order ("tomorrow at 3pm", "3pm next
/// friday"), a date alone (its midnight) or a time alone (its next occurrence).
pub fn find_datetimes(tokens: &[Token], context: &TemporalContext) -> Vec<Found<DateTime<Tz>>> {
    let Some(now_local) = context.local_now() else {
        return Vec::new();
    };
    let mut results = Vec::new();
    // Relative instants first: "now", "in 20 minutes".
    let mut index = 0;
    while index < tokens.len() {
        let text = word(tokens, index);
        if text == "now" && !(index > 0 && word(tokens, index - 1) == "from") {
            results.push(Found { start: index, end: index + 1, value: context.now.with_timezone(&context.time_zone) });
        } else if text == "in"
            && let Some(duration) = duration_at(tokens, index + 1)
            && duration.value < 86_400.0
            && let Some(instant) = TimeDelta::try_seconds(duration.value.round() as i64)
                .and_then(|delta| context.now.checked_add_signed(delta))
        {
            results.push(Found { start: index, end: duration.end, value: instant.with_timezone(&context.time_zone) });
            index = duration.end;
            continue;
        }
        index += 1;
    }
    let dates = find_dates(tokens, context);
    let times = find_times(tokens);
    let overlaps = |start: usize, end: usize, taken: &[Found<DateTime<Tz>>]| {
        taken.iter().any(|item| start < item.end && item.start < end)
    };
    let mut used_times = vec![false; times.len()];
    for date in &dates {
        if overlaps(date.start, date.end, &results) {
            continue;
        }
        // The nearest time within two tokens on either side ("tomorrow at 3", "3pm on friday").
        let partner = times.iter().enumerate().find(|(position, time)| {
            !used_times[*position]
                && ((time.start >= date.end && time.start <= date.end + 2)
                    || (time.end <= date.start && time.end + 2 >= date.start))
        });
        let (start, end, time) = match partner {
            Some((position, time)) => {
                used_times[position] = true;
                (date.start.min(time.start), date.end.max(time.end), time.value)
            }
            None => {
                // "tonight" as a date carries its time.
                let time = day_part_time(word(tokens, date.start))
                    .filter(|_| matches!(word(tokens, date.start), "tonight" | "tonite"));
                // "tomorrow morning".
                let after = day_part_time(word(tokens, date.end));
                match (time, after) {
                    (Some(time), _) => (date.start, date.end, time),
                    (None, Some(time)) => (date.start, date.end + 1, time),
                    (None, None) => (date.start, date.end, NaiveTime::MIN),
                }
            }
        };
        results.push(Found { start, end, value: context.localize(date.value.and_time(time)) });
    }
    for (position, time) in times.iter().enumerate() {
        if used_times[position] || overlaps(time.start, time.end, &results) {
            continue;
        }
        let today = now_local.date();
        let date = if time.value <= now_local.time() { plus_days(today, 1) } else { Some(today) };
        if let Some(date) = date {
            results.push(Found {
                start: time.start,
                end: time.end,
                value: context.localize(date.and_time(time.value)),
            });
        }
    }
    // "in 20 minutes" on the last evening of year 9999 is not a value the formats can write either.
    results.retain(|item| (MIN_YEAR..=MAX_YEAR).contains(&item.value.year()));
    results.sort_by_key(|item| item.start);
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tokenize_with_symbols;

    /// Monday 2026-11-23 10:00 in New York.
    fn context() -> TemporalContext {
        TemporalContext {
            now: Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap(),
            time_zone: chrono_tz::America::New_York,
            day_first: false,
        }
    }

    fn date(text: &str) -> Option<String> {
        find_dates(&tokenize_with_symbols(text), &context()).first().map(|found| found.value.to_string())
    }

    fn time(text: &str) -> Option<String> {
        find_times(&tokenize_with_symbols(text)).first().map(|found| found.value.format("%H:%M").to_string())
    }

    fn datetime(text: &str) -> Option<String> {
        find_datetimes(&tokenize_with_symbols(text), &context()).first().map(|found| found.value.to_rfc3339())
    }

    fn duration(text: &str) -> Option<f64> {
        find_durations(&tokenize_with_symbols(text)).first().map(|found| found.value)
    }

    #[test]
    fn relative_dates() {
        assert_eq!(date("tomorrow please").as_deref(), Some("2026-11-24"));
        assert_eq!(date("can we do it tommorow").as_deref(), Some("2026-11-24"));
        assert_eq!(date("today").as_deref(), Some("2026-11-23"));
        assert_eq!(date("the day after tomorrow").as_deref(), Some("2026-11-25"));
        assert_eq!(date("next tuesday").as_deref(), Some("2026-11-24"));
        assert_eq!(date("next monday").as_deref(), Some("2026-11-30"));
        assert_eq!(date("on friday").as_deref(), Some("2026-11-27"));
        assert_eq!(date("monday works").as_deref(), Some("2026-11-23"));
        assert_eq!(date("last friday").as_deref(), Some("2026-11-20"));
        assert_eq!(date("in 2 days").as_deref(), Some("2026-11-25"));
        assert_eq!(date("in a week").as_deref(), Some("2026-11-30"));
        assert_eq!(date("in two weeks").as_deref(), Some("2026-12-07"));
        assert_eq!(date("3 days from now").as_deref(), Some("2026-11-26"));
        assert_eq!(date("in a month").as_deref(), Some("2026-12-23"));
        assert_eq!(date("next week").as_deref(), Some("2026-11-30"));
        assert_eq!(date("next month").as_deref(), Some("2026-12-01"));
        assert_eq!(date("this weekend").as_deref(), Some("2026-11-28"));
        assert_eq!(date("tuesday next week").as_deref(), Some("2026-12-01"));
        assert_eq!(date("next week on friday").as_deref(), Some("2026-12-04"));
    }

    #[test]
    fn calendar_dates() {
        assert_eq!(date("the 5th").as_deref(), Some("2026-12-05"));
        assert_eq!(date("on the 25th").as_deref(), Some("2026-11-25"));
        assert_eq!(date("march 3rd").as_deref(), Some("2027-03-03"));
        assert_eq!(date("December 24").as_deref(), Some("2026-12-24"));
        assert_eq!(date("3rd of march 2028").as_deref(), Some("2028-03-03"));
        assert_eq!(date("the twenty-first of december").as_deref(), Some("2026-12-21"));
        assert_eq!(date("12/24").as_deref(), Some("2026-12-24"));
        assert_eq!(date("12/24/2027").as_deref(), Some("2027-12-24"));
        assert_eq!(date("2027-01-15").as_deref(), Some("2027-01-15"));
        assert_eq!(date("may 5").as_deref(), Some("2027-05-05"));
        assert_eq!(date("I may come"), None);
        assert_eq!(date("I sat down"), None);
        assert_eq!(date("february 30"), None);
    }

    #[test]
    fn clock_times() {
        assert_eq!(time("at 3pm").as_deref(), Some("15:00"));
        assert_eq!(time("3 pm").as_deref(), Some("15:00"));
        assert_eq!(time("noon").as_deref(), Some("12:00"));
        assert_eq!(time("midnight").as_deref(), Some("00:00"));
        assert_eq!(time("at 3:30").as_deref(), Some("15:30"));
        assert_eq!(time("15:45").as_deref(), Some("15:45"));
        assert_eq!(time("10:15am").as_deref(), Some("10:15"));
        assert_eq!(time("9 a.m.").as_deref(), Some("09:00"));
        assert_eq!(time("12am").as_deref(), Some("00:00"));
        assert_eq!(time("half past 2").as_deref(), Some("14:30"));
        assert_eq!(time("quarter to 9 in the morning").as_deref(), Some("08:45"));
        assert_eq!(time("7 in the evening").as_deref(), Some("19:00"));
        assert_eq!(time("at 10").as_deref(), Some("10:00"));
        assert_eq!(time("seven pm").as_deref(), Some("19:00"));
        assert_eq!(time("5 o'clock").as_deref(), Some("17:00"));
        assert_eq!(time("in the morning").as_deref(), Some("09:00"));
        assert_eq!(time("8 tonight").as_deref(), Some("20:00"));
        assert_eq!(time("at 7:30 tonight").as_deref(), Some("19:30"));
        assert_eq!(time("I have 3 kids"), None);
    }

    #[test]
    fn date_times() {
        assert_eq!(datetime("next tuesday at 3pm").as_deref(), Some("2026-11-24T15:00:00-05:00"));
        assert_eq!(datetime("tomorrow morning").as_deref(), Some("2026-11-24T09:00:00-05:00"));
        assert_eq!(datetime("at noon").as_deref(), Some("2026-11-23T12:00:00-05:00"));
        assert_eq!(datetime("at 9am").as_deref(), Some("2026-11-24T09:00:00-05:00"));
        assert_eq!(datetime("in 2 hours").as_deref(), Some("2026-11-23T12:00:00-05:00"));
        assert_eq!(datetime("3pm on december 1st").as_deref(), Some("2026-12-01T15:00:00-05:00"));
        assert_eq!(datetime("tonight").as_deref(), Some("2026-11-23T20:00:00-05:00"));
        assert_eq!(datetime("friday next week at 9am").as_deref(), Some("2026-12-04T09:00:00-05:00"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("for 2 hours"), Some(7200.0));
        assert_eq!(duration("half an hour"), Some(1800.0));
        assert_eq!(duration("an hour and a half"), Some(5400.0));
        assert_eq!(duration("1.5 hours"), Some(5400.0));
        assert_eq!(duration("2 hours and 30 minutes"), Some(9000.0));
        assert_eq!(duration("ninety seconds"), Some(90.0));
        assert_eq!(duration("a week"), Some(604_800.0));
        assert_eq!(duration("three days"), Some(259_200.0));
        assert_eq!(duration("I am 5"), None);
    }

    #[test]
    fn daylight_saving_gap_moves_forward() {
        let context = TemporalContext {
            now: Utc.with_ymd_and_hms(2027, 3, 13, 15, 0, 0).unwrap(),
            time_zone: chrono_tz::America::New_York,
            day_first: false,
        };
        let found = find_datetimes(&tokenize_with_symbols("tomorrow at 2:30am"), &context);
        assert_eq!(found[0].value.to_rfc3339(), "2027-03-14T03:30:00-04:00");
    }
}

#[cfg(test)]
mod out_of_range {
    use super::*;
    use crate::text::tokenize_with_symbols;

    fn context() -> TemporalContext {
        TemporalContext {
            now: Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap(),
            time_zone: chrono_tz::America::New_York,
            day_first: false,
        }
    }

    #[test]
    fn huge_spans_are_not_values() {
        for text in [
            "book a visit in 999999999 days",
            "in 999999999999999 weeks",
            "in 99999999999 months",
            "in 999999999999999 years",
            "999999999999999 days ago",
            "999999999999999 years later",
            "in a billion billion billion years",
        ] {
            let tokens = tokenize_with_symbols(text);
            assert!(find_dates(&tokens, &context()).is_empty(), "{text}");
            assert!(find_datetimes(&tokens, &context()).is_empty(), "{text}");
        }
        // Spans that fit still resolve, right up to the last four-digit year.
        let tokens = tokenize_with_symbols("in 2900000 days");
        assert_eq!(find_dates(&tokens, &context())[0].value.to_string(), "9966-10-29");
        assert!(find_dates(&tokenize_with_symbols("in 3000000 days"), &context()).is_empty());
    }

    #[test]
    fn a_now_beyond_the_four_digit_years_resolves_nothing_relative() {
        for (now, time_zone) in [
            (DateTime::<Utc>::MAX_UTC, chrono_tz::Pacific::Kiritimati),
            (DateTime::<Utc>::MIN_UTC, chrono_tz::Pacific::Pago_Pago),
            (Utc.with_ymd_and_hms(9999, 12, 31, 23, 0, 0).unwrap(), chrono_tz::UTC),
        ] {
            let context = TemporalContext { now, time_zone, day_first: false };
            let tokens = tokenize_with_symbols("tomorrow at 3pm, in 2 hours, next friday");
            assert!(find_dates(&tokens, &context).iter().all(|found| found.value.year() <= MAX_YEAR));
            let datetimes = find_datetimes(&tokens, &context);
            assert!(datetimes.iter().all(|found| found.value.year() <= MAX_YEAR), "{datetimes:?}");
        }
    }

    #[test]
    fn huge_clock_hours_are_not_times() {
        for text in ["quarter to 999999999999", "quarter to 4294967296", "half past 4294967295", "quarter to 25"] {
            assert!(find_times(&tokenize_with_symbols(text)).is_empty(), "{text}");
        }
        assert_eq!(find_times(&tokenize_with_symbols("quarter to 23"))[0].value.to_string(), "22:45:00");
    }

    #[test]
    fn huge_durations_are_not_values() {
        let durations = |text: &str| find_durations(&tokenize_with_symbols(text));
        assert!(durations("for 999999999999999 years").is_empty());
        // Some tail of the hundreds is a finite, in-range duration; the whole of it is not.
        let hundreds = format!("for a {}years", "hundred ".repeat(200));
        for found in durations(&hundreds) {
            assert!(found.start > 1 && found.value.is_finite() && found.value <= MAX_DURATION_SECONDS, "{found:?}");
        }
        assert_eq!(durations("999999999 days")[0].value, 86_399_999_913_600.0);
        let datetimes = find_datetimes(&tokenize_with_symbols("in 999999999 days"), &context());
        assert!(datetimes.is_empty(), "{datetimes:?}");
    }
}
