//! Slot types and their extractors: the built-ins (number, money, date, time, datetime, duration, email,
//! phone, text) and custom list types with synonyms, matched case-insensitively and typo-tolerantly.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::numbers::{find_money, find_numbers};
use crate::temporal::{TemporalContext, find_dates, find_datetimes, find_durations, find_times};
use crate::text::{Token, bounded, bounded_edit_distance, tokenize_with_symbols};

/// Reference point and locale for recognition.
#[derive(Debug, Clone)]
pub struct RecognizeContext {
    /// Now; relative dates resolve against it.
    pub now: DateTime<Utc>,
    /// The customer's time zone (the workspace default when unknown).
    pub time_zone: Tz,
    /// ISO 3166 region for phone numbers without a country code and for numeric date order ("US").
    pub default_region: String,
}

impl RecognizeContext {
    fn temporal(&self) -> TemporalContext {
        TemporalContext {
            now: self.now,
            time_zone: self.time_zone,
            // Month-first numeric dates are a North American habit.
            day_first: !matches!(
                self.default_region.to_ascii_uppercase().as_str(),
                "US" | "CA" | "PH" | "FM" | "MH" | "PW"
            ),
        }
    }
}

/// The built-in slot types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BuiltinType {
    /// A JSON number.
    Number,
    /// `{"amount", "currency"}`.
    Money,
    /// `"YYYY-MM-DD"`.
    Date,
    /// `"HH:MM"`, 24-hour.
    Time,
    /// RFC 3339 with offset.
    Datetime,
    /// Whole seconds.
    Duration,
    /// Lower-case address.
    Email,
    /// E.164.
    Phone,
    /// The text as typed.
    Text,
}

impl BuiltinType {
    /// Looks up a built-in type by its contract name.
    pub fn from_name(name: &str) -> Option<BuiltinType> {
        Some(match name {
            "number" => BuiltinType::Number,
            "money" => BuiltinType::Money,
            "date" => BuiltinType::Date,
            "time" => BuiltinType::Time,
            "datetime" => BuiltinType::Datetime,
            "duration" => BuiltinType::Duration,
            "email" => BuiltinType::Email,
            "phone" => BuiltinType::Phone,
            "text" => BuiltinType::Text,
            _ => return None,
        })
    }

    /// The contract name.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinType::Number => "number",
            BuiltinType::Money => "money",
            BuiltinType::Date => "date",
            BuiltinType::Time => "time",
            BuiltinType::Datetime => "datetime",
            BuiltinType::Duration => "duration",
            BuiltinType::Email => "email",
            BuiltinType::Phone => "phone",
            BuiltinType::Text => "text",
        }
    }
}

/// One value of a custom list type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListValue {
    /// The canonical value reported in slots.
    pub value: String,
    /// Other ways customers say it.
    #[serde(default)]
    pub synonyms: Vec<String>,
}

/// A compiled custom list type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ListType {
    /// Type name.
    pub name: String,
    /// Canonical values with synonyms.
    pub values: Vec<ListValue>,
    /// Every phrase (value or synonym) as lower-case words, with the index of its canonical value.
    phrases: Vec<(Vec<String>, usize)>,
}

impl ListType {
    /// Compiles a list type. Empty phrases are ignored.
    pub fn new(name: impl Into<String>, values: Vec<ListValue>) -> ListType {
        let mut phrases = Vec::new();
        for (index, value) in values.iter().enumerate() {
            for phrase in std::iter::once(&value.value).chain(&value.synonyms) {
                let words: Vec<String> = tokenize_with_symbols(phrase).into_iter().map(|token| token.lower).collect();
                if !words.is_empty() {
                    phrases.push((words, index));
                }
            }
        }
        // Longer phrases first, so "new york city" beats "new york".
        phrases.sort_by_key(|phrase| std::cmp::Reverse(phrase.0.len()));
        ListType { name: name.into(), values, phrases }
    }

    /// Allowed typos for a phrase of this many characters: none for short words (where one edit turns
    /// "cat" into "car"), one up to eight characters, two beyond.
    fn tolerance(characters: usize) -> usize {
        match characters {
            0..=3 => 0,
            4..=8 => 1,
            _ => 2,
        }
    }

    /// Finds all non-overlapping mentions: exact matches first, then the closest typo-tolerant match.
    fn find(&self, tokens: &[Token]) -> Vec<(usize, usize, usize)> {
        let mut taken = vec![false; tokens.len()];
        let mut found = Vec::new();
        for allow_typos in [false, true] {
            for (words, value_index) in &self.phrases {
                let length = words.len();
                if length > tokens.len() {
                    continue;
                }
                let phrase = words.join(" ");
                let limit = if allow_typos { Self::tolerance(phrase.chars().count()) } else { 0 };
                if allow_typos && limit == 0 {
                    continue;
                }
                for start in 0..=tokens.len() - length {
                    if taken[start..start + length].iter().any(|used| *used) {
                        continue;
                    }
                    let window = &tokens[start..start + length];
                    let matched = if allow_typos {
                        let candidate: Vec<&str> = window.iter().map(|token| token.lower.as_str()).collect();
                        bounded_edit_distance(&candidate.join(" "), &phrase, limit) <= limit
                    } else {
                        window.iter().zip(words).all(|(token, word)| token.lower == *word)
                    };
                    if matched {
                        taken[start..start + length].fill(true);
                        found.push((start, start + length, *value_index));
                    }
                }
            }
        }
        found.sort_unstable();
        found
    }
}

/// A slot type: built-in or custom list.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SlotType {
    /// A contract built-in.
    Builtin(BuiltinType),
    /// A custom list type.
    List(ListType),
}

/// An extracted value with the exact text it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlotValue {
    /// The value in the contract's format.
    pub value: Value,
    /// The text it was read from, as typed.
    pub text: String,
    /// Byte span in the message.
    #[serde(skip)]
    pub span: std::ops::Range<usize>,
}

fn span_of(tokens: &[Token], start: usize, end: usize) -> std::ops::Range<usize> {
    tokens[start].span.start..tokens[end - 1].span.end
}

fn number_value(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9e15 { json!(value as i64) } else { json!(value) }
}

/// Every value of `slot_type` in `text`, left to right.
pub fn extract_all(slot_type: &SlotType, text: &str, context: &RecognizeContext) -> Vec<SlotValue> {
    let text = bounded(text);
    let tokens = tokenize_with_symbols(text);
    let make = |range: std::ops::Range<usize>, value: Value| SlotValue {
        text: text[range.clone()].to_string(),
        value,
        span: range,
    };
    match slot_type {
        SlotType::List(list) => list
            .find(&tokens)
            .into_iter()
            .map(|(start, end, index)| {
                make(span_of(&tokens, start, end), Value::String(list.values[index].value.clone()))
            })
            .collect(),
        SlotType::Builtin(builtin) => match builtin {
            BuiltinType::Number => find_numbers(&tokens)
                .into_iter()
                .map(|found| make(span_of(&tokens, found.start, found.end), number_value(found.value)))
                .collect(),
            BuiltinType::Money => find_money(&tokens)
                .into_iter()
                .map(|found| {
                    // Rounded to cents, unless the amount is so large that cents overflow a float.
                    let cents = found.amount * 100.0;
                    let amount = if cents.is_finite() { cents.round() / 100.0 } else { found.amount };
                    make(
                        span_of(&tokens, found.start, found.end),
                        json!({"amount": amount, "currency": found.currency}),
                    )
                })
                .collect(),
            BuiltinType::Date => find_dates(&tokens, &context.temporal())
                .into_iter()
                .map(|found| {
                    make(
                        span_of(&tokens, found.start, found.end),
                        Value::String(found.value.format("%Y-%m-%d").to_string()),
                    )
                })
                .collect(),
            BuiltinType::Time => find_times(&tokens)
                .into_iter()
                .map(|found| {
                    make(
                        span_of(&tokens, found.start, found.end),
                        Value::String(found.value.format("%H:%M").to_string()),
                    )
                })
                .collect(),
            BuiltinType::Datetime => find_datetimes(&tokens, &context.temporal())
                .into_iter()
                .map(|found| {
                    make(
                        span_of(&tokens, found.start, found.end),
                        Value::String(found.value.to_rfc3339_opts(SecondsFormat::Secs, false)),
                    )
                })
                .collect(),
            BuiltinType::Duration => find_durations(&tokens)
                .into_iter()
                .map(|found| make(span_of(&tokens, found.start, found.end), json!(found.value.round() as i64)))
                .collect(),
            BuiltinType::Email => find_emails(text)
                .into_iter()
                .map(|range| {
                    let value = Value::String(text[range.clone()].to_lowercase());
                    make(range, value)
                })
                .collect(),
            BuiltinType::Phone => find_phones(text, &context.default_region)
                .into_iter()
                .map(|(range, number)| make(range, Value::String(number)))
                .collect(),
            BuiltinType::Text => {
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    Vec::new()
                } else {
                    let start = text.len() - text.trim_start().len();
                    vec![make(start..start + trimmed.len(), Value::String(trimmed.to_string()))]
                }
            }
        },
    }
}

/// The value of `slot_type` in a free answer to a slot prompt ("What day suits you?" → "next tuesday"):
/// the first match, or `None` when the answer holds no such value.
pub fn extract_slot(slot_type: &SlotType, text: &str, context: &RecognizeContext) -> Option<SlotValue> {
    extract_all(slot_type, text, context).into_iter().next()
}

fn is_local_part_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || "._%+-'".contains(character)
}

fn is_domain_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || character == '.' || character == '-'
}

/// Byte ranges of e-mail addresses: a local part, "@", and a domain with at least one dot.
fn find_emails(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices('@') {
        let start = text[..at]
            .char_indices()
            .rev()
            .take_while(|(_, character)| is_local_part_char(*character))
            .last()
            .map_or(at, |(index, _)| index);
        let domain_length = text[at + 1..]
            .char_indices()
            .take_while(|(_, character)| is_domain_char(*character))
            .last()
            .map_or(0, |(index, character)| index + character.len_utf8());
        let mut end = at + 1 + domain_length;
        // A sentence's full stop is not part of the domain.
        while end > at + 1 && matches!(text.as_bytes()[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &text[at + 1..end];
        let local = text[start..at].trim_start_matches(['.', '\'']);
        let start = at - local.len();
        if !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.contains("..")
            && domain.rsplit('.').next().is_some_and(|tld| tld.len() >= 2)
            && found.last().is_none_or(|previous: &std::ops::Range<usize>| previous.end <= start)
        {
            found.push(start..end);
        }
    }
    found
}

/// Byte ranges of phone numbers with their E.164 form: runs of digits, spaces, dashes, dots and brackets
/// (with an optional leading "+") holding 7 to 15 digits that parse as a valid number for the region.
fn find_phones(text: &str, region: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let country: Option<phonenumber::country::Id> = region.to_ascii_uppercase().parse().ok();
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let starts = bytes[index].is_ascii_digit()
            || ((bytes[index] == b'+' || bytes[index] == b'(') && bytes.get(index + 1).is_some_and(u8::is_ascii_digit));
        if !starts || (index > 0 && bytes[index - 1].is_ascii_alphanumeric()) {
            index += 1;
            continue;
        }
        let mut end = index;
        let mut digits = 0;
        while end < bytes.len()
            && (bytes[end].is_ascii_digit()
                || (end == index && bytes[end] == b'+')
                || matches!(bytes[end], b' ' | b'-' | b'.' | b'(' | b')'))
        {
            digits += usize::from(bytes[end].is_ascii_digit());
            end += 1;
        }
        while end > index && !bytes[end - 1].is_ascii_digit() && bytes[end - 1] != b')' {
            end -= 1;
        }
        if (7..=15).contains(&digits)
            && let Ok(number) = phonenumber::parse(country, &text[index..end])
            && phonenumber::is_valid(&number)
        {
            found.push((index..end, number.format().to_string()));
        }
        index = end.max(index + 1);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn context() -> RecognizeContext {
        RecognizeContext {
            now: Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap(),
            time_zone: chrono_tz::Europe::Paris,
            default_region: "US".into(),
        }
    }

    fn value(slot_type: BuiltinType, text: &str) -> Option<Value> {
        extract_slot(&SlotType::Builtin(slot_type), text, &context()).map(|slot| slot.value)
    }

    #[test]
    fn emails_are_lower_cased() {
        assert_eq!(
            value(BuiltinType::Email, "it's Jane.Doe+news@Example.COM."),
            Some(json!("jane.doe+news@example.com"))
        );
        assert_eq!(value(BuiltinType::Email, "mail me at @home"), None);
        assert_eq!(value(BuiltinType::Email, "a@b"), None);
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(value(BuiltinType::Phone, "call me at (415) 555-2671 tomorrow"), Some(json!("+14155552671")));
        assert_eq!(value(BuiltinType::Phone, "my number is +44 20 7946 0958"), Some(json!("+442079460958")));
        assert_eq!(value(BuiltinType::Phone, "order 12345"), None);
    }

    #[test]
    fn typed_values_follow_the_contract() {
        assert_eq!(value(BuiltinType::Number, "four"), Some(json!(4)));
        assert_eq!(value(BuiltinType::Number, "2.5"), Some(json!(2.5)));
        assert_eq!(value(BuiltinType::Money, "$20"), Some(json!({"amount": 20.0, "currency": "USD"})));
        assert_eq!(value(BuiltinType::Date, "tomorrow"), Some(json!("2026-11-24")));
        assert_eq!(value(BuiltinType::Time, "noon"), Some(json!("12:00")));
        assert_eq!(value(BuiltinType::Datetime, "next tuesday at 3pm"), Some(json!("2026-11-24T15:00:00+01:00")));
        assert_eq!(value(BuiltinType::Duration, "in 2 days"), Some(json!(172_800)));
        assert_eq!(value(BuiltinType::Text, "  hello  "), Some(json!("hello")));
        assert_eq!(value(BuiltinType::Text, "   "), None);
    }

    #[test]
    fn lists_match_synonyms_typos_and_phrases() {
        let list = SlotType::List(ListType::new(
            "account",
            vec![
                ListValue { value: "checking".into(), synonyms: vec!["current".into(), "everyday account".into()] },
                ListValue { value: "savings".into(), synonyms: vec!["rainy day fund".into()] },
            ],
        ));
        let get = |text: &str| extract_slot(&list, text, &context()).map(|slot| slot.value);
        assert_eq!(get("move it to my CURRENT account"), Some(json!("checking")));
        assert_eq!(get("from savngs please"), Some(json!("savings")));
        assert_eq!(get("the rainy day fund"), Some(json!("savings")));
        assert_eq!(get("my everyday acount"), Some(json!("checking")));
        assert_eq!(get("nothing relevant"), None);
        let slot = extract_slot(&list, "Checking, please", &context()).unwrap();
        assert_eq!(slot.text, "Checking");
    }
}
