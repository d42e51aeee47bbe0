//! Property tests: extractors and recognition never panic, and round-trip what they can.

use crossline_nlu::{BuiltinType, SlotType, extract_all, train};
use proptest::prelude::*;
use serde_json::json;

use crate::context;

fn say_number(value: u32) -> String {
    const UNITS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
    let mut parts = Vec::new();
    if value >= 1000 {
        parts.push(format!("{} thousand", say_number(value / 1000)));
    }
    let rest = value % 1000;
    if rest >= 100 {
        parts.push(format!("{} hundred", UNITS[(rest / 100) as usize]));
    }
    let small = rest % 100;
    if small >= 20 {
        if small.is_multiple_of(10) {
            parts.push(TENS[(small / 10) as usize].to_string());
        } else {
            parts.push(format!("{}-{}", TENS[(small / 10) as usize], UNITS[(small % 10) as usize]));
        }
    } else if small > 0 || parts.is_empty() {
        parts.push(UNITS[small as usize].to_string());
    }
    parts.join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn extractors_never_panic(text in "\\PC{0,80}") {
        let context = context();
        for builtin in [
            BuiltinType::Number, BuiltinType::Money, BuiltinType::Date, BuiltinType::Time,
            BuiltinType::Datetime, BuiltinType::Duration, BuiltinType::Email, BuiltinType::Phone,
            BuiltinType::Text,
        ] {
            for value in extract_all(&SlotType::Builtin(builtin), &text, &context) {
                prop_assert!(text.get(value.span.clone()).is_some());
            }
        }
    }

    #[test]
    fn spoken_numbers_round_trip(value in 0u32..1_000_000) {
        let spoken = say_number(value);
        let found = extract_all(&SlotType::Builtin(BuiltinType::Number), &spoken, &context());
        prop_assert_eq!(found.len(), 1, "{}", spoken);
        prop_assert_eq!(&found[0].value, &json!(value));
    }

    #[test]
    fn digit_amounts_round_trip(cents in 0u64..10_000_000) {
        let text = format!("pay ${}.{:02} now", cents / 100, cents % 100);
        let found = extract_all(&SlotType::Builtin(BuiltinType::Money), &text, &context());
        prop_assert_eq!(found.len(), 1);
        let amount = found[0].value["amount"].as_f64().unwrap();
        prop_assert!((amount - cents as f64 / 100.0).abs() < 1e-6);
    }

    #[test]
    fn relative_days_resolve(days in 1u32..400) {
        let text = format!("in {days} days");
        let found = extract_all(&SlotType::Builtin(BuiltinType::Date), &text, &context());
        let expected = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
            + chrono::Duration::days(i64::from(days));
        prop_assert_eq!(&found[0].value, &json!(expected.format("%Y-%m-%d").to_string()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn recognition_never_panics(text in "\\PC{0,200}") {
        static MODEL: std::sync::OnceLock<crossline_nlu::Recognizer> = std::sync::OnceLock::new();
        let model = MODEL.get_or_init(|| train(&crate::regression::restaurant_bot()).unwrap());
        let recognition = model.recognize(&text, &context());
        if let Some(intent) = recognition.intent {
            prop_assert!((0.0..=1.0).contains(&intent.confidence));
        }
    }
}

/// Words of dates, times, durations, numbers and money, for texts that reach deep into the normaliser.
const TEMPORAL_WORDS: &[&str] = &[
    "in",
    "a",
    "an",
    "the",
    "next",
    "last",
    "this",
    "coming",
    "following",
    "day",
    "days",
    "week",
    "weeks",
    "fortnight",
    "month",
    "months",
    "year",
    "years",
    "yrs",
    "ago",
    "from",
    "now",
    "today",
    "tomorrow",
    "tonight",
    "yesterday",
    "later",
    "out",
    "after",
    "before",
    "quarter",
    "half",
    "to",
    "past",
    "at",
    "around",
    "by",
    "on",
    "of",
    "for",
    "until",
    "pm",
    "am",
    "a.m.",
    "o'clock",
    "and",
    "hundred",
    "thousand",
    "million",
    "billion",
    "dozen",
    "noon",
    "midnight",
    "morning",
    "evening",
    "weekend",
    "monday",
    "friday",
    "sat",
    "may",
    "march",
    "december",
    "31st",
    "29th",
    "5th",
    "twenty-first",
    "first",
    "twenty",
    "seven",
    ":",
    "/",
    "-",
    ".",
    ",",
    "$",
    "€",
    "dollars",
    "cents",
    "hours",
    "minutes",
    "seconds",
    "h",
    "m",
    "s",
    "min",
    "book",
    "a visit",
];

/// Numbers as customers (and attackers) type them, huge ones included.
fn number_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<u64>().prop_map(|number| number.to_string()),
        Just("999999999999".to_owned()),
        Just("999999999".to_owned()),
        Just("4294967296".to_owned()),
        Just("9223372036854775808".to_owned()),
        "[0-9]{1,20}",
        "[0-9]{1,3}\\.[0-9]{1,12}",
        "[0-9]{1,2}:[0-9]{2}",
        "[0-9]{1,2}/[0-9]{1,2}(/[0-9]{2,5})?",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        "[0-9]{1,5}(am|pm)",
        "[0-9]{1,3}(,[0-9]{3}){1,6}",
    ]
    .boxed()
}

/// Whole expressions with a huge count: "in 999999999 days", "quarter to 4294967296", ...
fn huge_expression() -> BoxedStrategy<String> {
    let unit = prop::sample::select(&["days", "weeks", "months", "years", "fortnights", "hours", "seconds"][..]);
    let count = prop_oneof![
        number_text(),
        Just("a billion billion".to_owned()),
        (1usize..200).prop_map(|times| format!("one {}", "hundred ".repeat(times))),
    ];
    (count, unit, 0usize..6)
        .prop_map(|(count, unit, form)| match form {
            0 => format!("in {count} {unit}"),
            1 => format!("{count} {unit} ago"),
            2 => format!("{count} {unit} from tomorrow"),
            3 => format!("quarter to {count}"),
            4 => format!("for {count} {unit} and a half"),
            _ => format!("book a visit in {count} {unit} at 3pm"),
        })
        .boxed()
}

fn temporal_text() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        6 => prop::sample::select(TEMPORAL_WORDS).prop_map(str::to_owned),
        3 => number_text(),
        2 => huge_expression(),
        1 => "\\PC{0,6}",
    ];
    (prop::collection::vec((piece, prop::sample::select(&[" ", " ", " ", "", ", "][..])), 0..14))
        .prop_map(|pieces| pieces.into_iter().map(|(piece, joint)| piece + joint).collect())
        .boxed()
}

/// Any "now" chrono can hold, in time zones from UTC-11 to UTC+14 (with odd offsets and DST).
fn any_context() -> BoxedStrategy<crossline_nlu::RecognizeContext> {
    use chrono::{DateTime, Utc};
    let zones = [
        chrono_tz::America::New_York,
        chrono_tz::Pacific::Kiritimati,
        chrono_tz::Pacific::Pago_Pago,
        chrono_tz::Pacific::Chatham,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Asia::Kolkata,
        chrono_tz::UTC,
    ];
    let seconds = prop_oneof![
        4 => 0i64..4_102_444_800,
        1 => DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
        1 => Just(DateTime::<Utc>::MAX_UTC.timestamp()),
        1 => Just(253_402_300_799i64),
    ];
    (seconds, prop::sample::select(zones.to_vec()), prop::sample::select(&["US", "FR", "XX"][..]))
        .prop_map(|(seconds, time_zone, region)| crossline_nlu::RecognizeContext {
            now: DateTime::from_timestamp(seconds, 0).unwrap(),
            time_zone,
            default_region: region.into(),
        })
        .boxed()
}

/// A value of a built-in type is in the contract's format, whatever the text.
fn well_formed(builtin: BuiltinType, value: &serde_json::Value) -> Result<(), TestCaseError> {
    match builtin {
        BuiltinType::Number => prop_assert!(value.as_f64().is_some_and(f64::is_finite), "{}", value),
        BuiltinType::Money => prop_assert!(value["amount"].as_f64().is_some_and(f64::is_finite), "{}", value),
        BuiltinType::Date => {
            let text = value.as_str().unwrap_or_default();
            prop_assert!(chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() && text.len() == 10, "{}", value);
        }
        BuiltinType::Time => {
            prop_assert!(chrono::NaiveTime::parse_from_str(value.as_str().unwrap_or_default(), "%H:%M").is_ok())
        }
        BuiltinType::Datetime => {
            prop_assert!(chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or_default()).is_ok(), "{}", value);
        }
        BuiltinType::Duration => prop_assert!(value.as_i64().is_some(), "{}", value),
        BuiltinType::Email | BuiltinType::Phone | BuiltinType::Text => prop_assert!(value.is_string()),
    }
    Ok(())
}

const BUILTINS: [BuiltinType; 9] = [
    BuiltinType::Number,
    BuiltinType::Money,
    BuiltinType::Date,
    BuiltinType::Time,
    BuiltinType::Datetime,
    BuiltinType::Duration,
    BuiltinType::Email,
    BuiltinType::Phone,
    BuiltinType::Text,
];

/// A small bot with a slot of every built-in type, so recognition runs every extractor.
fn every_slot_bot() -> &'static crossline_nlu::Recognizer {
    static MODEL: std::sync::OnceLock<crossline_nlu::Recognizer> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let definition = serde_json::from_value(json!({
            "intents": [
                {"name": "book", "utterances": ["book a visit {date} at {time}", "book a visit in {date}",
                    "can I come {date}", "I want to book a visit", "schedule it for {when}"],
                 "slots": [{"name": "date", "type": "date"}, {"name": "time", "type": "time"},
                           {"name": "when", "type": "datetime"}]},
                {"name": "remind", "utterances": ["remind me in {wait}", "wait {wait} please",
                    "ping me after {wait}", "set a timer for {wait}"],
                 "slots": [{"name": "wait", "type": "duration"}]},
                {"name": "pay", "utterances": ["pay {amount}", "send {amount} to {count} people",
                    "I owe you {amount}", "split {amount} {count} ways"],
                 "slots": [{"name": "amount", "type": "money"}, {"name": "count", "type": "number"}]}
            ]
        }))
        .unwrap();
        train(&definition).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn temporal_normaliser_never_panics(text in temporal_text(), context in any_context()) {
        for builtin in BUILTINS {
            for value in extract_all(&SlotType::Builtin(builtin), &text, &context) {
                prop_assert!(text.get(value.span.clone()).is_some());
                well_formed(builtin, &value.value)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn recognition_of_temporal_text_never_panics(text in temporal_text(), context in any_context()) {
        let model = every_slot_bot();
        let recognition = model.recognize(&text, &context);
        for value in recognition.slots.values() {
            prop_assert!(text.get(value.span.clone()).is_some());
        }
        // Slot prompts' answers go through the slot's extractor alone.
        for (intent, slot) in [("book", "date"), ("book", "time"), ("book", "when"), ("remind", "wait"), ("pay", "amount"), ("pay", "count")] {
            let _ = model.extract_slot(intent, slot, &text, &context);
        }
    }
}
