//! The feature pipeline: a list of feature extractors whose outputs are concatenated into one sparse vector.
//!
//! Each extractor owns a block of the feature space and L2-normalises its own block, so that adding a block
//! (for example dense sentence embeddings behind a cargo feature) neither reshapes the pipeline nor changes
//! the scale of the existing blocks. The classifier only ever sees `(index, value)` pairs.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasherDefault, Hasher};

use crate::text::{StableHasher, Token, tokenize};

/// A message prepared once and shared by every extractor.
#[derive(Debug, Clone)]
pub struct PreparedText<'text> {
    /// The (bounded) original text.
    pub text: &'text str,
    /// Its lower-cased word tokens.
    pub tokens: Vec<Token>,
}

impl<'text> PreparedText<'text> {
    /// Tokenises `text`.
    pub fn new(text: &'text str) -> Self {
        PreparedText { text, tokens: tokenize(text) }
    }
}

/// A sparse feature vector: parallel index and value lists, indices sorted and unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVector {
    /// Feature indices.
    pub indices: Vec<u32>,
    /// Feature values.
    pub values: Vec<f32>,
}

/// One family of features. Extractors learn what they need (a vocabulary, document frequencies) from the
/// training texts in [`FeatureExtractor::fit`] and then map any text to a block of `dimension()` features.
pub trait FeatureExtractor: Debug + Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// Learns from the training texts.
    fn fit(&mut self, texts: &[PreparedText<'_>]);
    /// Size of this extractor's block.
    fn dimension(&self) -> usize;
    /// Appends this text's features as `(index within the block, value)` pairs, L2-normalised.
    fn transform(&self, text: &PreparedText<'_>, output: &mut Vec<(u32, f32)>);
}

/// A hasher for keys that are already good 64-bit hashes.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type KeyMap = HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>;

/// Vocabulary of hashed n-gram keys with inverse document frequencies, shared by the n-gram extractors.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct NgramVocabulary {
    index_of: KeyMap,
    inverse_document_frequency: Vec<f32>,
}

impl NgramVocabulary {
    /// Builds the vocabulary from per-document key lists, keeping keys seen in at least `minimum_documents`
    /// documents. Indices follow first appearance so that training is deterministic.
    fn fit(documents: &[Vec<u64>], minimum_documents: usize) -> Self {
        let mut document_frequency: KeyMap = KeyMap::default();
        let mut order: Vec<u64> = Vec::new();
        let mut seen_in_document: Vec<u64> = Vec::new();
        for keys in documents {
            seen_in_document.clear();
            seen_in_document.extend_from_slice(keys);
            seen_in_document.sort_unstable();
            seen_in_document.dedup();
            for key in &seen_in_document {
                let count = document_frequency.entry(*key).or_insert_with(|| {
                    order.push(*key);
                    0
                });
                *count += 1;
            }
        }
        // Keys in `order` appear in first-document order, then in sorted order inside a document: stable.
        let total = documents.len() as f32;
        let mut vocabulary = NgramVocabulary::default();
        for key in order {
            let frequency = document_frequency[&key] as usize;
            if frequency < minimum_documents {
                continue;
            }
            let index = vocabulary.inverse_document_frequency.len() as u32;
            vocabulary.index_of.insert(key, index);
            // Smoothed idf as in common TF-IDF implementations: never zero, rare keys weigh more.
            let idf = ((1.0 + total) / (1.0 + frequency as f32)).ln() + 1.0;
            vocabulary.inverse_document_frequency.push(idf);
        }
        vocabulary
    }

    /// Turns a key list into sublinear TF-IDF weights, L2-normalised.
    fn weigh(&self, keys: &mut [u64], output: &mut Vec<(u32, f32)>) {
        keys.sort_unstable();
        let start = output.len();
        let mut position = 0;
        while position < keys.len() {
            let key = keys[position];
            let mut count = 0;
            while position < keys.len() && keys[position] == key {
                count += 1;
                position += 1;
            }
            if let Some(&index) = self.index_of.get(&key) {
                let term_frequency = 1.0 + (count as f32).ln();
                let weight = term_frequency * self.inverse_document_frequency[index as usize];
                output.push((index, weight));
            }
        }
        let norm = output[start..].iter().map(|(_, value)| value * value).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, value) in &mut output[start..] {
                *value /= norm;
            }
        }
    }
}

/// Word n-grams (unigrams and bigrams by default) with sentence-boundary markers, TF-IDF weighted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WordNgrams {
    /// Longest n-gram.
    pub max_n: usize,
    /// Keys seen in fewer training documents are dropped.
    pub minimum_documents: usize,
    /// Also emit pairs of words one word apart ("cancel _ order" from "cancel my order").
    pub skip_bigrams: bool,
    vocabulary: NgramVocabulary,
}

impl WordNgrams {
    /// Word n-grams up to `max_n` words.
    pub fn new(max_n: usize, minimum_documents: usize) -> Self {
        WordNgrams {
            max_n: max_n.max(1),
            minimum_documents: minimum_documents.max(1),
            skip_bigrams: false,
            vocabulary: NgramVocabulary::default(),
        }
    }

    fn keys(&self, text: &PreparedText<'_>, keys: &mut Vec<u64>) {
        const BOUNDARY: &str = "\u{2}";
        let words: Vec<&str> = std::iter::once(BOUNDARY)
            .chain(text.tokens.iter().map(|token| token.lower.as_str()))
            .chain(std::iter::once(BOUNDARY))
            .collect();
        for n in 1..=self.max_n {
            for window in words.windows(n) {
                // A lone boundary marker says nothing.
                if n == 1 && window[0] == BOUNDARY {
                    continue;
                }
                let mut hasher = StableHasher::new(n as u8);
                for word in window {
                    hasher.write_str(word);
                }
                keys.push(hasher.finish());
            }
        }
        if self.skip_bigrams {
            for window in words.windows(3) {
                let mut hasher = StableHasher::new(50);
                hasher.write_str(window[0]);
                hasher.write_str(window[2]);
                keys.push(hasher.finish());
            }
        }
    }
}

/// Fit a hashed n-gram vocabulary: the keys of every text, kept where frequent enough.
fn fit_hashed(
    texts: &[PreparedText<'_>],
    minimum_documents: usize,
    keys: impl Fn(&PreparedText<'_>, &mut Vec<u64>),
) -> NgramVocabulary {
    let documents: Vec<Vec<u64>> = texts
        .iter()
        .map(|text| {
            let mut found = Vec::new();
            keys(text, &mut found);
            found
        })
        .collect();
    NgramVocabulary::fit(&documents, minimum_documents)
}

/// Weigh a text's hashed n-grams with a fitted vocabulary.
fn transform_hashed(
    vocabulary: &NgramVocabulary,
    text: &PreparedText<'_>,
    output: &mut Vec<(u32, f32)>,
    keys: impl Fn(&PreparedText<'_>, &mut Vec<u64>),
) {
    let mut found = Vec::new();
    keys(text, &mut found);
    vocabulary.weigh(&mut found, output);
}

impl FeatureExtractor for WordNgrams {
    fn name(&self) -> &'static str {
        "word n-grams"
    }

    fn fit(&mut self, texts: &[PreparedText<'_>]) {
        self.vocabulary = fit_hashed(texts, self.minimum_documents, |text, keys| self.keys(text, keys));
    }

    fn dimension(&self) -> usize {
        self.vocabulary.inverse_document_frequency.len()
    }

    fn transform(&self, text: &PreparedText<'_>, output: &mut Vec<(u32, f32)>) {
        transform_hashed(&self.vocabulary, text, output, |text, keys| self.keys(text, keys));
    }
}

/// Character n-grams inside word boundaries (each word padded with a space on both sides), TF-IDF weighted.
/// They make the classifier robust to typos, inflections and unseen compounds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CharNgrams {
    /// Shortest n-gram, in characters.
    pub min_n: usize,
    /// Longest n-gram, in characters.
    pub max_n: usize,
    /// Keys seen in fewer training documents are dropped.
    pub minimum_documents: usize,
    /// Let n-grams span word boundaries (over the whole normalised message).
    pub cross_words: bool,
    vocabulary: NgramVocabulary,
}

impl CharNgrams {
    /// Character n-grams from `min_n` to `max_n` characters.
    pub fn new(min_n: usize, max_n: usize, minimum_documents: usize) -> Self {
        let min_n = min_n.max(1);
        CharNgrams {
            min_n,
            max_n: max_n.max(min_n),
            minimum_documents: minimum_documents.max(1),
            cross_words: false,
            vocabulary: NgramVocabulary::default(),
        }
    }

    fn keys(&self, text: &PreparedText<'_>, keys: &mut Vec<u64>) {
        let mut characters: Vec<char> = Vec::with_capacity(32);
        if self.cross_words {
            characters.push(' ');
            for token in &text.tokens {
                characters.extend(token.lower.chars());
                characters.push(' ');
            }
            for n in self.min_n..=self.max_n {
                for window in characters.windows(n) {
                    let mut hasher = StableHasher::new(100 + n as u8);
                    for character in window {
                        hasher.write_char(*character);
                    }
                    keys.push(hasher.finish());
                }
            }
            return;
        }
        for token in &text.tokens {
            characters.clear();
            characters.push(' ');
            characters.extend(token.lower.chars());
            characters.push(' ');
            for n in self.min_n..=self.max_n {
                if n > characters.len() {
                    break;
                }
                for window in characters.windows(n) {
                    let mut hasher = StableHasher::new(100 + n as u8);
                    for character in window {
                        hasher.write_char(*character);
                    }
                    keys.push(hasher.finish());
                }
            }
        }
    }
}

impl FeatureExtractor for CharNgrams {
    fn name(&self) -> &'static str {
        "character n-grams"
    }

    fn fit(&mut self, texts: &[PreparedText<'_>]) {
        self.vocabulary = fit_hashed(texts, self.minimum_documents, |text, keys| self.keys(text, keys));
    }

    fn dimension(&self) -> usize {
        self.vocabulary.inverse_document_frequency.len()
    }

    fn transform(&self, text: &PreparedText<'_>, output: &mut Vec<(u32, f32)>) {
        transform_hashed(&self.vocabulary, text, output, |text, keys| self.keys(text, keys));
    }
}

/// Settings of the default feature pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSettings {
    /// Longest word n-gram.
    pub word_max_n: usize,
    /// Shortest character n-gram.
    pub char_min_n: usize,
    /// Longest character n-gram.
    pub char_max_n: usize,
    /// Weight of the word block relative to the character block.
    pub word_weight: f32,
    /// Weight of the character block.
    pub char_weight: f32,
    /// Minimum document frequency for a key to enter the vocabulary.
    pub minimum_documents: usize,
    /// Add skip-bigrams to the word block.
    pub skip_bigrams: bool,
    /// Character n-grams span word boundaries.
    pub char_cross_words: bool,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        FeatureSettings {
            word_max_n: 2,
            char_min_n: 2,
            // 2–4 beat 2–5 on the CLINC150 validation split and cost a third fewer features.
            char_max_n: 4,
            word_weight: 1.0,
            char_weight: 1.0,
            minimum_documents: 1,
            skip_bigrams: false,
            char_cross_words: false,
        }
    }
}

/// The feature extractors a pipeline can hold. A closed list (rather than boxed trait objects) keeps
/// trained models serialisable; a new family (sentence embeddings behind a cargo feature) is a new variant
/// implementing [`FeatureExtractor`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum FeatureBlock {
    /// Word n-grams.
    Words(WordNgrams),
    /// Character n-grams.
    Characters(CharNgrams),
}

impl FeatureBlock {
    fn extractor(&self) -> &dyn FeatureExtractor {
        match self {
            FeatureBlock::Words(extractor) => extractor,
            FeatureBlock::Characters(extractor) => extractor,
        }
    }

    fn extractor_mut(&mut self) -> &mut dyn FeatureExtractor {
        match self {
            FeatureBlock::Words(extractor) => extractor,
            FeatureBlock::Characters(extractor) => extractor,
        }
    }
}

/// The ordered list of extractors with their block weights.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FeaturePipeline {
    extractors: Vec<(FeatureBlock, f32)>,
    offsets: Vec<u32>,
    dimension: usize,
}

impl FeaturePipeline {
    /// A pipeline from extractors and block weights; call [`FeaturePipeline::fit`] before use.
    pub fn new(extractors: Vec<(FeatureBlock, f32)>) -> Self {
        FeaturePipeline { extractors, offsets: Vec::new(), dimension: 0 }
    }

    /// The default pipeline: word uni/bi-grams and character 2–4-grams.
    pub fn from_settings(settings: &FeatureSettings) -> Self {
        FeaturePipeline::new(vec![
            (
                FeatureBlock::Words(WordNgrams {
                    skip_bigrams: settings.skip_bigrams,
                    ..WordNgrams::new(settings.word_max_n, settings.minimum_documents)
                }),
                settings.word_weight,
            ),
            (
                FeatureBlock::Characters(CharNgrams {
                    cross_words: settings.char_cross_words,
                    ..CharNgrams::new(settings.char_min_n, settings.char_max_n, settings.minimum_documents)
                }),
                settings.char_weight,
            ),
        ])
    }

    /// Fits every extractor on the training texts and lays out their blocks.
    pub fn fit(&mut self, texts: &[PreparedText<'_>]) {
        self.offsets.clear();
        let mut offset = 0usize;
        for (block, _) in &mut self.extractors {
            let extractor = block.extractor_mut();
            extractor.fit(texts);
            self.offsets.push(offset as u32);
            offset += extractor.dimension();
        }
        self.dimension = offset;
    }

    /// Total number of features.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Names and sizes of the blocks, for reports.
    pub fn blocks(&self) -> Vec<(&'static str, usize)> {
        self.extractors.iter().map(|(block, _)| (block.extractor().name(), block.extractor().dimension())).collect()
    }

    /// The feature vector of a text.
    pub fn transform(&self, text: &PreparedText<'_>) -> SparseVector {
        let mut vector = SparseVector::default();
        let mut block = Vec::new();
        for ((extractor, weight), offset) in self.extractors.iter().zip(&self.offsets) {
            block.clear();
            extractor.extractor().transform(text, &mut block);
            block.sort_unstable_by_key(|(index, _)| *index);
            for (index, value) in &block {
                vector.indices.push(offset + index);
                vector.values.push(value * weight);
            }
        }
        vector
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_is_deterministic_and_normalised() {
        let corpus = ["check my balance", "what is my balance", "book a table"];
        let prepared: Vec<PreparedText<'_>> = corpus.iter().map(|text| PreparedText::new(text)).collect();
        let mut pipeline = FeaturePipeline::from_settings(&FeatureSettings::default());
        pipeline.fit(&prepared);
        let first = pipeline.transform(&PreparedText::new("my balance please"));
        let second = pipeline.transform(&PreparedText::new("my balance please"));
        assert_eq!(first, second);
        let squared: f32 = first.values.iter().map(|value| value * value).sum();
        // Two blocks, each of unit length.
        assert!((squared - 2.0).abs() < 1e-4, "{squared}");
        assert!(first.indices.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn unknown_text_gives_empty_vector() {
        let prepared = vec![PreparedText::new("hello")];
        let mut pipeline = FeaturePipeline::from_settings(&FeatureSettings::default());
        pipeline.fit(&prepared);
        assert!(pipeline.transform(&PreparedText::new("")).indices.is_empty());
        assert!(pipeline.transform(&PreparedText::new("🙂🙂")).indices.is_empty());
    }
}
