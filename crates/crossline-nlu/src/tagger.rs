//! A slot tagger learned from annotated utterances: BIO labels over tokens, an averaged structured
//! perceptron with first-order transitions, Viterbi decoding.
//!
//! Why this model: it learns slot positions from context ("book a table for ___") with a few dozen
//! examples, trains in well under a second per intent, and decodes in microseconds. Features are the
//! word, its neighbours, affixes and shape, hashed into a vocabulary built from the training data.

use std::collections::HashMap;
use std::ops::Range;

use crate::text::{StableHasher, Token, tokenize_with_symbols};

/// An utterance with slot spans (byte ranges) for training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotatedText {
    /// The utterance.
    pub text: String,
    /// `(byte range, slot name)` pairs, not overlapping.
    pub slots: Vec<(Range<usize>, String)>,
}

/// A trained tagger.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SlotTagger {
    /// Label 0 is "outside"; then B and I labels per slot: 2k+1 = B-slot k, 2k+2 = I-slot k.
    slot_names: Vec<String>,
    feature_index: HashMap<u64, usize>,
    /// `[feature][label]`.
    emissions: Vec<f32>,
    /// `[previous label + 1][label]`; row 0 is the start of the sentence.
    transitions: Vec<f32>,
}

fn shape(text: &str) -> u8 {
    let mut has_digit = false;
    let mut has_upper = false;
    let mut has_lower = false;
    let mut has_other = false;
    for character in text.chars() {
        if character.is_ascii_digit() {
            has_digit = true;
        } else if character.is_uppercase() {
            has_upper = true;
        } else if character.is_lowercase() {
            has_lower = true;
        } else {
            has_other = true;
        }
    }
    u8::from(has_digit) | (u8::from(has_upper) << 1) | (u8::from(has_lower) << 2) | (u8::from(has_other) << 3)
}

/// Hashed features of token `position`.
fn token_features(text: &str, tokens: &[Token], position: usize, output: &mut Vec<u64>) {
    output.clear();
    let word = |offset: isize| -> &str {
        let index = position as isize + offset;
        if index < 0 {
            "<s>"
        } else if index as usize >= tokens.len() {
            "</s>"
        } else {
            &tokens[index as usize].lower
        }
    };
    let mut push = |namespace: u8, parts: &[&str]| {
        let mut hasher = StableHasher::new(namespace);
        for part in parts {
            hasher.write_str(part);
        }
        output.push(hasher.finish());
    };
    let current = word(0);
    push(0, &[]);
    push(1, &[current]);
    push(2, &[word(-1)]);
    push(3, &[word(1)]);
    push(4, &[word(-2)]);
    push(5, &[word(2)]);
    push(6, &[word(-1), current]);
    push(7, &[current, word(1)]);
    push(8, &[word(-2), word(-1)]);
    push(9, &[word(1), word(2)]);
    let characters: Vec<char> = current.chars().collect();
    let suffix: String = characters[characters.len().saturating_sub(3)..].iter().collect();
    let prefix: String = characters[..characters.len().min(3)].iter().collect();
    push(10, &[&suffix]);
    push(11, &[&prefix]);
    let original = &text[tokens[position].span.clone()];
    let shape_text = shape(original).to_string();
    push(12, &[&shape_text]);
    let previous_shape =
        if position > 0 { shape(&text[tokens[position - 1].span.clone()]).to_string() } else { "-".to_string() };
    push(13, &[&previous_shape, &shape_text]);
}

/// BIO labels of the tokens for the annotated slots.
fn gold_labels(tokens: &[Token], slots: &[(Range<usize>, usize)]) -> Vec<usize> {
    let mut labels = vec![0; tokens.len()];
    for (range, slot) in slots {
        let mut first = true;
        for (index, token) in tokens.iter().enumerate() {
            if token.span.start >= range.start && token.span.start < range.end {
                labels[index] = if first { 2 * slot + 1 } else { 2 * slot + 2 };
                first = false;
            }
        }
    }
    labels
}

impl SlotTagger {
    /// Trains on annotated texts for `epochs` passes.
    pub fn train(examples: &[AnnotatedText], epochs: usize) -> SlotTagger {
        let mut slot_names: Vec<String> =
            examples.iter().flat_map(|example| example.slots.iter().map(|(_, name)| name.clone())).collect();
        slot_names.sort();
        slot_names.dedup();
        let label_count = 2 * slot_names.len() + 1;
        // Prepare sequences: per token feature indices, gold labels.
        let mut feature_index: HashMap<u64, usize> = HashMap::new();
        let mut sequences: Vec<(Vec<Vec<usize>>, Vec<usize>)> = Vec::new();
        let mut scratch = Vec::new();
        for example in examples {
            let tokens = tokenize_with_symbols(&example.text);
            if tokens.is_empty() {
                continue;
            }
            let slots: Vec<(Range<usize>, usize)> = example
                .slots
                .iter()
                .filter_map(|(range, name)| slot_names.binary_search(name).ok().map(|slot| (range.clone(), slot)))
                .collect();
            let labels = gold_labels(&tokens, &slots);
            let mut features = Vec::with_capacity(tokens.len());
            for position in 0..tokens.len() {
                token_features(&example.text, &tokens, position, &mut scratch);
                let indices: Vec<usize> = scratch
                    .iter()
                    .map(|key| {
                        let next = feature_index.len();
                        *feature_index.entry(*key).or_insert(next)
                    })
                    .collect();
                features.push(indices);
            }
            sequences.push((features, labels));
        }
        let feature_count = feature_index.len();
        let mut tagger = SlotTagger {
            slot_names,
            feature_index,
            emissions: vec![0.0; feature_count * label_count],
            transitions: vec![0.0; (label_count + 1) * label_count],
        };
        // Averaged perceptron with the "lazy sum" trick: keep the sum of updates weighted by time.
        let mut emission_totals = vec![0.0f32; tagger.emissions.len()];
        let mut transition_totals = vec![0.0f32; tagger.transitions.len()];
        let mut time = 1.0f32;
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..epochs {
            for index in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(index, (seed % (index as u64 + 1)) as usize);
            }
            for &sequence_index in &order {
                let (features, gold) = &sequences[sequence_index];
                let predicted = tagger.decode_indices(features);
                if predicted != *gold {
                    for (position, token_features) in features.iter().enumerate() {
                        if predicted[position] == gold[position] {
                            continue;
                        }
                        for &feature in token_features {
                            let base = feature * label_count;
                            tagger.emissions[base + gold[position]] += 1.0;
                            tagger.emissions[base + predicted[position]] -= 1.0;
                            emission_totals[base + gold[position]] += time;
                            emission_totals[base + predicted[position]] -= time;
                        }
                    }
                    for position in 0..gold.len() {
                        let previous_gold = if position == 0 { 0 } else { gold[position - 1] + 1 };
                        let previous_predicted = if position == 0 { 0 } else { predicted[position - 1] + 1 };
                        let gold_cell = previous_gold * label_count + gold[position];
                        let predicted_cell = previous_predicted * label_count + predicted[position];
                        if gold_cell != predicted_cell {
                            tagger.transitions[gold_cell] += 1.0;
                            tagger.transitions[predicted_cell] -= 1.0;
                            transition_totals[gold_cell] += time;
                            transition_totals[predicted_cell] -= time;
                        }
                    }
                }
                time += 1.0;
            }
        }
        // Averaged weight = w - totals / time.
        for (weight, total) in tagger.emissions.iter_mut().zip(&emission_totals) {
            *weight -= total / time;
        }
        for (weight, total) in tagger.transitions.iter_mut().zip(&transition_totals) {
            *weight -= total / time;
        }
        tagger
    }

    fn label_count(&self) -> usize {
        2 * self.slot_names.len() + 1
    }

    /// Whether label `next` may follow label `previous` (`None` at the start): I-x only after B-x or I-x.
    fn allowed(previous: Option<usize>, next: usize) -> bool {
        if next == 0 || next % 2 == 1 {
            return true;
        }
        match previous {
            Some(previous) if previous != 0 => previous.div_ceil(2) == next / 2,
            _ => false,
        }
    }

    fn decode_indices(&self, features: &[Vec<usize>]) -> Vec<usize> {
        let labels = self.label_count();
        let length = features.len();
        if length == 0 {
            return Vec::new();
        }
        let mut scores = vec![f32::NEG_INFINITY; length * labels];
        let mut back = vec![0usize; length * labels];
        let mut emission = vec![0.0f32; labels];
        for position in 0..length {
            emission.fill(0.0);
            for &feature in &features[position] {
                let row = &self.emissions[feature * labels..(feature + 1) * labels];
                for (score, weight) in emission.iter_mut().zip(row) {
                    *score += weight;
                }
            }
            for label in 0..labels {
                if position == 0 {
                    if Self::allowed(None, label) {
                        scores[label] = emission[label] + self.transitions[label];
                    }
                    continue;
                }
                let mut best = (f32::NEG_INFINITY, 0);
                for previous in 0..labels {
                    let previous_score = scores[(position - 1) * labels + previous];
                    if previous_score == f32::NEG_INFINITY || !Self::allowed(Some(previous), label) {
                        continue;
                    }
                    let candidate = previous_score + self.transitions[(previous + 1) * labels + label];
                    if candidate > best.0 {
                        best = (candidate, previous);
                    }
                }
                scores[position * labels + label] = best.0 + emission[label];
                back[position * labels + label] = best.1;
            }
        }
        let last = &scores[(length - 1) * labels..length * labels];
        let mut label =
            last.iter().enumerate().max_by(|left, right| left.1.total_cmp(right.1)).map_or(0, |(index, _)| index);
        let mut path = vec![0; length];
        for position in (0..length).rev() {
            path[position] = label;
            label = back[position * labels + label];
        }
        path
    }

    /// Slot spans in `text`: `(byte range, slot name)`.
    pub fn tag(&self, text: &str) -> Vec<(Range<usize>, String)> {
        if self.slot_names.is_empty() {
            return Vec::new();
        }
        let tokens = tokenize_with_symbols(text);
        let mut scratch = Vec::new();
        let features: Vec<Vec<usize>> = (0..tokens.len())
            .map(|position| {
                token_features(text, &tokens, position, &mut scratch);
                scratch.iter().filter_map(|key| self.feature_index.get(key).copied()).collect()
            })
            .collect();
        let labels = self.decode_indices(&features);
        let mut spans: Vec<(Range<usize>, String)> = Vec::new();
        for (token, label) in tokens.iter().zip(labels) {
            if label == 0 {
                continue;
            }
            let slot = (label - 1) / 2;
            if label % 2 == 0
                && let Some(last) = spans.last_mut()
                && last.1 == self.slot_names[slot]
            {
                last.0.end = token.span.end;
                continue;
            }
            spans.push((token.span.clone(), self.slot_names[slot].clone()));
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotate(template: &str, value: &str, slot: &str) -> AnnotatedText {
        let start = template.find("{}").unwrap();
        let text = template.replacen("{}", value, 1);
        AnnotatedText { slots: vec![(start..start + value.len(), slot.to_string())], text }
    }

    #[test]
    fn learns_slot_position_from_context() {
        let mut examples = Vec::new();
        for value in ["four", "2", "ten", "six people", "12"] {
            examples.push(annotate("book a table for {}", value, "party_size"));
            examples.push(annotate("i need a reservation for {} tonight", value, "party_size"));
        }
        let tagger = SlotTagger::train(&examples, 10);
        let text = "book a table for three";
        let spans = tagger.tag(text);
        assert_eq!(spans.len(), 1);
        assert_eq!(&text[spans[0].0.clone()], "three");
        assert_eq!(spans[0].1, "party_size");
        assert!(tagger.tag("").is_empty());
    }
}
