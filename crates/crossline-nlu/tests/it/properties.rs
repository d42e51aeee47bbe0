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
