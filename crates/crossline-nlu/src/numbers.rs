//! Numbers ("245", "1,000", "3.5", "two hundred forty-five", "a dozen") and money ("$20", "20 dollars",
//! "€15.50", "twenty bucks", "USD 40").
//!
//! Both work over [`tokenize_with_symbols`](crate::text::tokenize_with_symbols) tokens and report token
//! index ranges, so callers map them back to byte spans.

use crate::text::Token;

/// A number found in a token sequence: tokens `start..end` and the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberMatch {
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
    /// The value.
    pub value: f64,
    /// Whether the number was written with digits.
    pub digits: bool,
}

fn unit_value(word: &str) -> Option<f64> {
    let value = match word {
        "zero" | "oh" | "nil" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    };
    Some(f64::from(value))
}

fn tens_value(word: &str) -> Option<f64> {
    let value = match word {
        "twenty" => 20,
        "thirty" => 30,
        "forty" | "fourty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    };
    Some(f64::from(value))
}

fn scale_value(word: &str) -> Option<f64> {
    match word {
        "thousand" | "k" => Some(1e3),
        "million" | "m" | "mil" => Some(1e6),
        "billion" | "bn" => Some(1e9),
        _ => None,
    }
}

/// Whether a token is written only with ASCII digits.
pub fn is_digits(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|byte| byte.is_ascii_digit())
}

/// Parses a digit number starting at `start`: "1,000", "3.5", "1,234.50", optionally followed by a scale
/// word ("2 million", "5k").
fn digits_at(tokens: &[Token], start: usize) -> Option<NumberMatch> {
    let first = &tokens.get(start)?.lower;
    if !is_digits(first) || first.len() > 15 {
        return None;
    }
    let mut text = first.clone();
    let mut end = start + 1;
    // Thousands separators: a comma directly followed by exactly three digits, in the same word.
    while end + 1 < tokens.len()
        && tokens[end].lower == ","
        && tokens[end].span.start == tokens[end - 1].span.end
        && tokens[end + 1].span.start == tokens[end].span.end
        && tokens[end + 1].lower.len() == 3
        && is_digits(&tokens[end + 1].lower)
        && text.len() < 15
    {
        text.push_str(&tokens[end + 1].lower);
        end += 2;
    }
    if end + 1 < tokens.len()
        && tokens[end].lower == "."
        && tokens[end].span.start == tokens[end - 1].span.end
        && tokens[end + 1].span.start == tokens[end].span.end
        && is_digits(&tokens[end + 1].lower)
        && tokens[end + 1].lower.len() <= 9
    {
        text.push('.');
        text.push_str(&tokens[end + 1].lower);
        end += 2;
    }
    let mut value: f64 = text.parse().ok()?;
    if let Some(scale) = tokens.get(end).and_then(|token| scale_value(&token.lower)) {
        value *= scale;
        end += 1;
    }
    Some(NumberMatch { start, end, value, digits: true })
}

/// Parses a number written in words starting at `start`: "two hundred forty-five", "a thousand", "one
/// and a half" is not handled (fractions are rare in answers to "how many").
fn words_at(tokens: &[Token], start: usize) -> Option<NumberMatch> {
    let mut total = 0.0f64;
    let mut current = 0.0f64;
    let mut index = start;
    let mut seen_any = false;
    let mut end = start;
    // "a hundred", "a dozen", "a thousand".
    if matches!(tokens.get(index)?.lower.as_str(), "a" | "an") {
        let next = tokens.get(index + 1)?.lower.as_str();
        if !matches!(next, "hundred" | "thousand" | "million" | "dozen") {
            return None;
        }
        current = 1.0;
        index += 1;
    }
    while let Some(token) = tokens.get(index) {
        let word = token.lower.as_str();
        if let Some(value) = unit_value(word) {
            // A unit may follow nothing, a round hundred ("two hundred five") or a round ten
            // ("twenty one"); "five six" and "ten five" are two numbers.
            let remainder = current % 100.0;
            let joins = !seen_any || remainder == 0.0 || (remainder >= 20.0 && remainder % 10.0 == 0.0 && value < 10.0);
            if !joins {
                break;
            }
            current += value;
        } else if let Some(value) = tens_value(word) {
            if seen_any && current % 100.0 != 0.0 {
                break;
            }
            current += value;
            // "forty-five": the hyphen joins tens and units.
            if tokens.get(index + 1).is_some_and(|token| token.lower == "-")
                && tokens
                    .get(index + 2)
                    .and_then(|token| unit_value(&token.lower))
                    .is_some_and(|unit| unit < 10.0 && unit > 0.0)
            {
                current += unit_value(&tokens[index + 2].lower).unwrap_or(0.0);
                index += 2;
            }
        } else if word == "hundred" {
            current = current.max(1.0) * 100.0;
        } else if word == "dozen" {
            current = current.max(1.0) * 12.0;
        } else if let Some(scale) = scale_value(word).filter(|_| word.len() > 2) {
            total += current.max(1.0) * scale;
            current = 0.0;
        } else if word == "and"
            && seen_any
            && tokens
                .get(index + 1)
                .is_some_and(|token| unit_value(&token.lower).is_some() || tens_value(&token.lower).is_some())
        {
            index += 1;
            continue;
        } else {
            break;
        }
        seen_any = true;
        index += 1;
        end = index;
    }
    if !seen_any {
        return None;
    }
    Some(NumberMatch { start, end, value: total + current, digits: false })
}

/// Parses a number (digits or words) starting exactly at token `start`. A number too large for a float
/// ("hundred" said 200 times) is not a number.
pub fn number_at(tokens: &[Token], start: usize) -> Option<NumberMatch> {
    digits_at(tokens, start).or_else(|| words_at(tokens, start)).filter(|number| number.value.is_finite())
}

/// All non-overlapping numbers, left to right, longest at each position. A leading minus sign directly
/// before digits makes the number negative.
pub fn find_numbers(tokens: &[Token]) -> Vec<NumberMatch> {
    let mut matches = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        if let Some(mut found) = number_at(tokens, index) {
            if found.digits
                && index > 0
                && tokens[index - 1].lower == "-"
                && tokens[index - 1].span.end == tokens[index].span.start
                && (index == 1 || tokens[index - 2].span.end < tokens[index - 1].span.start)
            {
                found.start -= 1;
                found.value = -found.value;
            }
            index = found.end;
            matches.push(found);
        } else {
            index += 1;
        }
    }
    matches
}

/// An amount of money found in a token sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct MoneyMatch {
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
    /// The amount.
    pub amount: f64,
    /// ISO 4217 currency code.
    pub currency: &'static str,
}

fn currency_symbol(word: &str) -> Option<&'static str> {
    match word {
        "$" => Some("USD"),
        "€" => Some("EUR"),
        "£" => Some("GBP"),
        "¥" => Some("JPY"),
        "₹" => Some("INR"),
        _ => None,
    }
}

fn currency_word(word: &str) -> Option<&'static str> {
    match word {
        "dollar" | "dollars" | "buck" | "bucks" | "usd" | "dlrs" => Some("USD"),
        "euro" | "euros" | "eur" => Some("EUR"),
        "pound" | "pounds" | "quid" | "gbp" => Some("GBP"),
        "yen" | "jpy" => Some("JPY"),
        "rupee" | "rupees" | "inr" => Some("INR"),
        "cad" => Some("CAD"),
        "aud" => Some("AUD"),
        "chf" | "francs" => Some("CHF"),
        _ => None,
    }
}

/// All amounts of money, left to right.
pub fn find_money(tokens: &[Token]) -> Vec<MoneyMatch> {
    let mut matches = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        let word = tokens[index].lower.as_str();
        // Symbol or code first: "$20", "USD 40", "€ 15.50".
        let prefix = currency_symbol(word).or_else(|| (word.len() == 3).then(|| currency_word(word)).flatten());
        if let Some(currency) = prefix
            && let Some(number) = number_at(tokens, index + 1)
        {
            matches.push(MoneyMatch { start: index, end: number.end, amount: number.value, currency });
            index = number.end;
            continue;
        }
        if let Some(number) = number_at(tokens, index) {
            let mut end = number.end;
            // "20 canadian dollars", "20 us dollars".
            if tokens.get(end).is_some_and(|token| matches!(token.lower.as_str(), "us" | "canadian" | "australian"))
                && tokens.get(end + 1).is_some_and(|token| currency_word(&token.lower) == Some("USD"))
            {
                let currency = match tokens[end].lower.as_str() {
                    "canadian" => "CAD",
                    "australian" => "AUD",
                    _ => "USD",
                };
                matches.push(MoneyMatch { start: index, end: end + 2, amount: number.value, currency });
                index = end + 2;
                continue;
            }
            if let Some(currency) = tokens.get(end).and_then(|token| currency_word(&token.lower)) {
                end += 1;
                let mut amount = number.value;
                // "20 dollars and 50 cents".
                if tokens.get(end).is_some_and(|token| token.lower == "and")
                    && let Some(cents) = number_at(tokens, end + 1)
                    && tokens
                        .get(cents.end)
                        .is_some_and(|token| matches!(token.lower.as_str(), "cents" | "cent" | "pence"))
                {
                    amount += cents.value / 100.0;
                    end = cents.end + 1;
                }
                matches.push(MoneyMatch { start: index, end, amount, currency });
                index = end;
                continue;
            }
            if tokens.get(end).is_some_and(|token| matches!(token.lower.as_str(), "cents" | "cent")) {
                matches.push(MoneyMatch { start: index, end: end + 1, amount: number.value / 100.0, currency: "USD" });
                index = end + 1;
                continue;
            }
            index = number.end;
            continue;
        }
        index += 1;
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tokenize_with_symbols;

    fn numbers(text: &str) -> Vec<f64> {
        find_numbers(&tokenize_with_symbols(text)).into_iter().map(|found| found.value).collect()
    }

    fn money(text: &str) -> Vec<(f64, &'static str)> {
        find_money(&tokenize_with_symbols(text)).into_iter().map(|found| (found.amount, found.currency)).collect()
    }

    #[test]
    fn digit_numbers() {
        assert_eq!(numbers("table for 4 please"), [4.0]);
        assert_eq!(numbers("about 1,250 people"), [1250.0]);
        assert_eq!(numbers("3.5 stars"), [3.5]);
        assert_eq!(numbers("2 million views"), [2e6]);
        assert_eq!(numbers("it's -5 outside"), [-5.0]);
    }

    #[test]
    fn word_numbers() {
        assert_eq!(numbers("book a table for four"), [4.0]);
        assert_eq!(numbers("two hundred forty-five"), [245.0]);
        assert_eq!(numbers("two hundred and forty five"), [245.0]);
        assert_eq!(numbers("a dozen eggs"), [12.0]);
        assert_eq!(numbers("one thousand two hundred"), [1200.0]);
        assert_eq!(numbers("twenty one guests"), [21.0]);
        assert_eq!(numbers("five six"), [5.0, 6.0]);
        assert_eq!(numbers("a table for us"), Vec::<f64>::new());
    }

    #[test]
    fn numbers_beyond_a_float_are_not_numbers() {
        // The whole run overflows a float; only a shorter tail of it is read as a number.
        let hundreds = format!("one {}", "hundred ".repeat(400));
        let found = find_numbers(&tokenize_with_symbols(&hundreds));
        assert!(found.iter().all(|number| number.value.is_finite() && number.start > 0), "{found:?}");
        let amounts = money(&format!("{hundreds}dollars"));
        assert!(amounts.iter().all(|(amount, _)| amount.is_finite()), "{amounts:?}");
        assert_eq!(numbers("999999999999999 billion"), [999999999999999e9]);
    }

    #[test]
    fn money_amounts() {
        assert_eq!(money("send $20 to mom"), [(20.0, "USD")]);
        assert_eq!(money("it costs 20 dollars"), [(20.0, "USD")]);
        assert_eq!(money("€15.50 please"), [(15.5, "EUR")]);
        assert_eq!(money("twenty bucks"), [(20.0, "USD")]);
        assert_eq!(money("USD 40"), [(40.0, "USD")]);
        assert_eq!(money("50 cents"), [(0.5, "USD")]);
        assert_eq!(money("10 dollars and 25 cents"), [(10.25, "USD")]);
        assert_eq!(money("300 canadian dollars"), [(300.0, "CAD")]);
        assert_eq!(money("$1,200.99 rent"), [(1200.99, "USD")]);
        assert_eq!(money("I have 3 cats"), Vec::<(f64, &str)>::new());
    }
}
