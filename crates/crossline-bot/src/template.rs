//! The one `{placeholder}` renderer of bot replies. `{slot}` is the slot's value written for people
//! in the bot's locale — "Wednesday 2 December", "3 pm", "$20.00" — where the raw value would read
//! "2026-12-02", "15:00" or `{"amount": 20, "currency": "USD"}`; `{slot.value}` is the raw value
//! and `{slot.text}` the words the customer used. Dates and times are the customer's local ones
//! already (the language understanding resolves them in the workspace's time zone), so nothing is
//! converted here. An unknown placeholder is left as written.

use chrono::{NaiveDate, NaiveTime, Timelike};
use serde_json::Value;
use std::collections::BTreeMap;

/// A piece of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text as written.
    Text(&'a str),
    /// `{name}` or `{name.field}`: the slot's name and the field, if any.
    Placeholder {
        /// The slot.
        slot: &'a str,
        /// `value` or `text`, when given.
        field: Option<&'a str>,
        /// The placeholder as written, braces included.
        raw: &'a str,
    },
}

/// A template's pieces, in order.
pub fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let inside = rest[open + 1..open + close].trim();
        let (slot, field) = match inside.split_once('.') {
            Some((slot, field)) => (slot.trim(), Some(field.trim())),
            None => (inside, None),
        };
        pieces.push(Piece::Placeholder { slot, field, raw: &rest[open..open + close + 1] });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    pieces
}

/// The slots a template names.
pub fn placeholders(template: &str) -> Vec<&str> {
    pieces(template)
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Placeholder { slot, .. } => Some(slot),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Fill a template's placeholders with slot values (as the dialog keeps them: `{"value", "text"}`),
/// written for people in `locale` (a BCP 47 tag such as `en`, `en-US`, `en-GB`).
pub fn render(template: &str, slots: &BTreeMap<String, Value>, locale: &str) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder { slot, field, raw } => match (slots.get(slot), field) {
                (Some(entry), None) => out.push_str(&for_people(entry.get("value").unwrap_or(entry), locale)),
                (Some(entry), Some("value")) => out.push_str(&raw_value(entry.get("value").unwrap_or(entry))),
                (Some(entry), Some("text")) => {
                    out.push_str(entry.get("text").and_then(Value::as_str).unwrap_or_default())
                }
                _ => out.push_str(raw),
            },
        }
    }
    out
}

fn raw_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Whether `locale` writes dates the American way ("Wednesday, December 2"): `en-US` and plain `en`.
fn american(locale: &str) -> bool {
    let locale = locale.trim().to_ascii_lowercase().replace('_', "-");
    locale == "en" || locale == "en-us"
}

/// A slot value written for people.
pub fn for_people(value: &Value, locale: &str) -> String {
    match value {
        Value::String(text) => {
            if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                date_for_people(date, locale)
            } else if let Ok(time) = NaiveTime::parse_from_str(text, "%H:%M") {
                time_for_people(time)
            } else if let Ok(at) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M") {
                format!("{} at {}", date_for_people(at.date(), locale), time_for_people(at.time()))
            } else {
                text.clone()
            }
        }
        Value::Object(money) if money.contains_key("amount") => {
            let amount = money.get("amount").and_then(Value::as_f64);
            let currency = money.get("currency").and_then(Value::as_str).unwrap_or_default();
            match amount {
                Some(amount) => money_for_people(amount, currency),
                None => raw_value(value),
            }
        }
        Value::Number(number) => match number.as_f64() {
            Some(float) if float.fract() == 0.0 && float.abs() < 1e15 => grouped(float as i64),
            _ => number.to_string(),
        },
        other => raw_value(other),
    }
}

fn date_for_people(date: NaiveDate, locale: &str) -> String {
    if american(locale) { date.format("%A, %B %-d").to_string() } else { date.format("%A %-d %B").to_string() }
}

fn time_for_people(time: NaiveTime) -> String {
    let (pm, hour) = time.hour12();
    let half = if pm { "pm" } else { "am" };
    match (time.hour(), time.minute()) {
        (12, 0) => "noon".into(),
        (0, 0) => "midnight".into(),
        (_, 0) => format!("{hour} {half}"),
        (_, minute) => format!("{hour}:{minute:02} {half}"),
    }
}

/// `1234567` as `1,234,567`.
fn grouped(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0 {
        out.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn money_for_people(amount: f64, currency: &str) -> String {
    let symbol = match currency.to_ascii_uppercase().as_str() {
        "USD" => Some("$"),
        "EUR" => Some("€"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        "INR" => Some("₹"),
        _ => None,
    };
    let cents = (amount.abs() * 100.0).round() as i64;
    let sign = if amount < 0.0 { "-" } else { "" };
    let number = if currency.eq_ignore_ascii_case("JPY") {
        grouped((amount.abs()).round() as i64)
    } else {
        format!("{}.{:02}", grouped(cents / 100), cents % 100)
    };
    match symbol {
        Some(symbol) => format!("{sign}{symbol}{number}"),
        None if currency.is_empty() => format!("{sign}{number}"),
        None => format!("{sign}{number} {}", currency.to_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(value: Value, text: &str) -> Value {
        json!({"value": value, "text": text})
    }

    #[test]
    fn slots_are_written_for_people_in_the_bots_locale() {
        let slots = BTreeMap::from([
            ("date".to_owned(), entry(json!("2026-12-02"), "wednesday")),
            ("time".to_owned(), entry(json!("15:00"), "3pm")),
        ]);
        let template = "Shall I book {date} at {time}?";
        assert_eq!(render(template, &slots, "en-GB"), "Shall I book Wednesday 2 December at 3 pm?");
        assert_eq!(render(template, &slots, "en"), "Shall I book Wednesday, December 2 at 3 pm?");
        assert_eq!(render("{date.value} {time.value} ({time.text})", &slots, "en"), "2026-12-02 15:00 (3pm)");
        assert_eq!(render("{missing} and {date.other}", &slots, "en"), "{missing} and {date.other}");
        assert_eq!(render("no placeholders", &slots, "en"), "no placeholders");
        assert_eq!(render("unclosed {date", &slots, "en"), "unclosed {date");
    }

    #[test]
    fn values_for_people() {
        let say = |value: Value| for_people(&value, "en-US");
        assert_eq!(say(json!("09:30")), "9:30 am");
        assert_eq!(say(json!("12:00")), "noon");
        assert_eq!(say(json!("00:00")), "midnight");
        assert_eq!(say(json!("2026-12-25T18:45")), "Friday, December 25 at 6:45 pm");
        assert_eq!(say(json!({"amount": 20, "currency": "USD"})), "$20.00");
        assert_eq!(say(json!({"amount": 1250.5, "currency": "EUR"})), "€1,250.50");
        assert_eq!(say(json!({"amount": -3.456, "currency": "GBP"})), "-£3.46");
        assert_eq!(say(json!({"amount": 5000, "currency": "JPY"})), "¥5,000");
        assert_eq!(say(json!({"amount": 12, "currency": "CHF"})), "12.00 CHF");
        assert_eq!(say(json!(1234567)), "1,234,567");
        assert_eq!(say(json!(2.5)), "2.5");
        assert_eq!(say(json!("checking")), "checking");
        assert_eq!(say(json!(true)), "true");
    }

    #[test]
    fn placeholders_name_slots() {
        assert_eq!(placeholders("Shall I book {date} at { time }? ({date.value})"), ["date", "time", "date"]);
        assert!(placeholders("no slots").is_empty());
    }
}
