//! Text normalisation and tokenisation shared by the classifier, the tagger and the extractors.
//!
//! Every token keeps its byte span in the *original* text so that slot values can quote exactly what the
//! customer typed.

use std::ops::Range;

/// Longest input the pipeline looks at, in bytes. Longer messages are cut at a character boundary: a
/// customer message of this size is already far beyond what intents are trained on, and bounding it keeps
/// recognition latency bounded too.
pub const MAX_INPUT_BYTES: usize = 4096;

/// A word or punctuation-free run of characters in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Lower-cased token text.
    pub lower: String,
    /// Byte range of the token in the original text.
    pub span: Range<usize>,
}

/// Cuts `text` to at most [`MAX_INPUT_BYTES`] bytes without splitting a character.
pub fn bounded(text: &str) -> &str {
    if text.len() <= MAX_INPUT_BYTES {
        return text;
    }
    let mut end = MAX_INPUT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether a character belongs inside a word token. Apostrophes are kept out so that "what's" gives "what"
/// and "s", the way the training sets spell contractions both with and without them.
fn is_word_char(character: char) -> bool {
    character.is_alphanumeric()
}

/// Splits text into lower-cased word tokens with their byte spans.
pub fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut start: Option<usize> = None;
    for (index, character) in text.char_indices() {
        match (is_word_char(character), start) {
            (true, None) => start = Some(index),
            (false, Some(begin)) => {
                tokens.push(make_token(text, begin, index));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(begin) = start {
        tokens.push(make_token(text, begin, text.len()));
    }
    tokens
}

fn make_token(text: &str, start: usize, end: usize) -> Token {
    Token { lower: text[start..end].to_lowercase(), span: start..end }
}

/// Splits text into tokens for the slot tagger: words as in [`tokenize`], plus single punctuation characters
/// such as `$`, `@`, `:` and `-` as tokens of their own, because they carry meaning inside slot values
/// ("$20", "3:30").
pub fn tokenize_with_symbols(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut start: Option<usize> = None;
    for (index, character) in text.char_indices() {
        if is_word_char(character) {
            if start.is_none() {
                start = Some(index);
            }
            continue;
        }
        if let Some(begin) = start.take() {
            tokens.push(make_token(text, begin, index));
        }
        if !character.is_whitespace() {
            tokens.push(make_token(text, index, index + character.len_utf8()));
        }
    }
    if let Some(begin) = start {
        tokens.push(make_token(text, begin, text.len()));
    }
    tokens
}

/// A deterministic 64-bit FNV-1a hash; the feature space must not depend on a per-process random seed.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher {
    state: u64,
}

impl StableHasher {
    /// A hasher seeded with a namespace, so that equal strings in different feature families differ.
    pub fn new(namespace: u8) -> Self {
        let mut hasher = StableHasher { state: 0xcbf2_9ce4_8422_2325 };
        hasher.write_byte(namespace);
        hasher
    }

    /// Adds one byte.
    pub fn write_byte(&mut self, byte: u8) {
        self.state ^= u64::from(byte);
        self.state = self.state.wrapping_mul(0x0100_0000_01b3);
    }

    /// Adds a string followed by a separator, so that ("ab","c") and ("a","bc") hash differently.
    pub fn write_str(&mut self, text: &str) {
        for byte in text.bytes() {
            self.write_byte(byte);
        }
        self.write_byte(0xff);
    }

    /// Adds one character.
    pub fn write_char(&mut self, character: char) {
        let mut buffer = [0u8; 4];
        for byte in character.encode_utf8(&mut buffer).bytes() {
            self.write_byte(byte);
        }
    }

    /// The final hash, with an extra mixing step so that the low bits are usable.
    pub fn finish(&self) -> u64 {
        let mut value = self.state;
        value ^= value >> 33;
        value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
        value ^= value >> 33;
        value
    }
}

/// Damerau-free Levenshtein distance between two short strings, by characters, giving up (returning
/// `limit + 1`) as soon as the distance must exceed `limit`.
pub fn bounded_edit_distance(left: &str, right: &str, limit: usize) -> usize {
    let left: Vec<char> = left.chars().collect();
    let right: Vec<char> = right.chars().collect();
    if left.len().abs_diff(right.len()) > limit {
        return limit + 1;
    }
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current = vec![0; right.len() + 1];
    for (row, left_char) in left.iter().enumerate() {
        current[0] = row + 1;
        let mut row_minimum = current[0];
        for (column, right_char) in right.iter().enumerate() {
            let substitution = previous[column] + usize::from(left_char != right_char);
            current[column + 1] = substitution.min(previous[column + 1] + 1).min(current[column] + 1);
            row_minimum = row_minimum.min(current[column + 1]);
        }
        if row_minimum > limit {
            return limit + 1;
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[right.len()].min(limit + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_original_spans() {
        let text = "Book a TABLE for Four!";
        let tokens = tokenize(text);
        let words: Vec<&str> = tokens.iter().map(|token| token.lower.as_str()).collect();
        assert_eq!(words, ["book", "a", "table", "for", "four"]);
        assert_eq!(&text[tokens[4].span.clone()], "Four");
    }

    #[test]
    fn symbols_become_tokens() {
        let tokens = tokenize_with_symbols("pay $20 at 3:30");
        let words: Vec<&str> = tokens.iter().map(|token| token.lower.as_str()).collect();
        assert_eq!(words, ["pay", "$", "20", "at", "3", ":", "30"]);
    }

    #[test]
    fn bounded_cuts_on_char_boundary() {
        let text = "é".repeat(MAX_INPUT_BYTES);
        let cut = bounded(&text);
        assert!(cut.len() <= MAX_INPUT_BYTES);
        assert!(cut.chars().all(|character| character == 'é'));
    }

    #[test]
    fn edit_distance_small_cases() {
        assert_eq!(bounded_edit_distance("checking", "cheking", 2), 1);
        assert_eq!(bounded_edit_distance("savings", "svaings", 2), 2);
        assert_eq!(bounded_edit_distance("abc", "xyz123", 2), 3);
        assert_eq!(bounded_edit_distance("", "", 1), 0);
    }
}
