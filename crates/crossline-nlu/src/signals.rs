//! Per-message signals: sentiment (VADER lexicon scoring) and language identification (whatlang).

/// Sentiment of a message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sentiment {
    /// VADER compound score in `[-1, 1]`.
    pub score: f64,
    /// `positive` (score ≥ 0.05), `negative` (≤ -0.05) or `neutral`, the thresholds VADER's authors use.
    pub label: SentimentLabel,
}

/// Sentiment class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentimentLabel {
    /// Score ≥ 0.05.
    Positive,
    /// Between the thresholds.
    Neutral,
    /// Score ≤ -0.05.
    Negative,
}

/// Scores the sentiment of `text`.
pub fn sentiment(text: &str) -> Sentiment {
    thread_local! {
        // The analyzer borrows static lexicons; building it once per thread avoids rebuilding its
        // tables for every message.
        static ANALYZER: vader_sentiment::SentimentIntensityAnalyzer<'static> =
            vader_sentiment::SentimentIntensityAnalyzer::new();
    }
    let score = if text.trim().is_empty() {
        0.0
    } else {
        ANALYZER.with(|analyzer| analyzer.polarity_scores(text).get("compound").copied().unwrap_or(0.0))
    };
    let score = if score.is_finite() { score } else { 0.0 };
    let label = if score >= 0.05 {
        SentimentLabel::Positive
    } else if score <= -0.05 {
        SentimentLabel::Negative
    } else {
        SentimentLabel::Neutral
    };
    Sentiment { score, label }
}

/// Detected language of a message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Language {
    /// ISO 639-1 code where one exists ("en"), else ISO 639-3 ("cmn" has none: "zh" is used); "und"
    /// when undetermined (empty text, emoji only).
    pub code: String,
    /// Detector confidence in `[0, 1]`.
    pub confidence: f64,
    /// Whether the detector considers the answer reliable (short texts rarely are).
    pub reliable: bool,
}

/// Maps whatlang's ISO 639-3 codes to ISO 639-1 where the language has one.
fn two_letter(code: &str) -> Option<&'static str> {
    Some(match code {
        "eng" => "en",
        "spa" => "es",
        "fra" => "fr",
        "deu" => "de",
        "ita" => "it",
        "por" => "pt",
        "nld" => "nl",
        "rus" => "ru",
        "ukr" => "uk",
        "pol" => "pl",
        "ces" => "cs",
        "slk" => "sk",
        "swe" => "sv",
        "dan" => "da",
        "nob" => "nb",
        "fin" => "fi",
        "hun" => "hu",
        "ron" => "ro",
        "bul" => "bg",
        "hrv" => "hr",
        "srp" => "sr",
        "slv" => "sl",
        "ell" => "el",
        "tur" => "tr",
        "ara" => "ar",
        "heb" => "he",
        "pes" => "fa",
        "hin" => "hi",
        "ben" => "bn",
        "urd" => "ur",
        "tam" => "ta",
        "tel" => "te",
        "mar" => "mr",
        "cmn" => "zh",
        "jpn" => "ja",
        "kor" => "ko",
        "vie" => "vi",
        "tha" => "th",
        "ind" => "id",
        "tgl" => "tl",
        "cat" => "ca",
        "lit" => "lt",
        "lav" => "lv",
        "est" => "et",
        "afr" => "af",
        "epo" => "eo",
        _ => return None,
    })
}

/// Identifies the language of `text`.
pub fn detect_language(text: &str) -> Language {
    match whatlang::detect(text) {
        Some(info) => {
            let code = info.lang().code();
            Language {
                code: two_letter(code).unwrap_or(code).to_string(),
                confidence: info.confidence(),
                reliable: info.is_reliable(),
            }
        }
        None => Language { code: "und".to_string(), confidence: 0.0, reliable: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentiment_labels() {
        assert_eq!(sentiment("I love this, thank you so much!").label, SentimentLabel::Positive);
        assert_eq!(sentiment("This is terrible, I'm furious").label, SentimentLabel::Negative);
        assert_eq!(sentiment("The package arrived on Tuesday.").label, SentimentLabel::Neutral);
        assert_eq!(sentiment("").score, 0.0);
    }

    #[test]
    fn languages() {
        let english = detect_language("I would like to book a table for four people tomorrow evening");
        assert_eq!(english.code, "en");
        assert!(english.confidence > 0.0 && english.confidence <= 1.0);
        assert_eq!(detect_language("Je voudrais réserver une table pour quatre personnes demain soir").code, "fr");
        assert_eq!(detect_language("🙂🙂🙂").code, "und");
    }
}
