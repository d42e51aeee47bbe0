//! Benchmarks: training on CLINC150 and per-utterance recognition latency (features, classifier, slot
//! tagging and typed extractors, sentiment, language).
//!
//! Run with `cargo bench -p crossline-nlu`. The CLINC150 files are read from `../shared/data` beside the
//! repository; without them the CLINC150 benchmarks report that they were skipped. Before divan's own
//! table, `main` prints p50/p99 recognition latencies over every CLINC150 test utterance (divan reports
//! medians and extremes, not percentiles).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use chrono::TimeZone;
use crossline_nlu::intent::IntentSettings;
use crossline_nlu::tagger::AnnotatedText;
use crossline_nlu::{BotDefinition, RecognizeContext, Recognizer, train};
use divan::Bencher;

fn data_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/nlu/clinc150")
}

/// `(text, intent)` rows of CLINC150 files, or `None` when the data set is not there.
fn read_rows(files: &[&str]) -> Option<Vec<(String, String)>> {
    let mut rows = Vec::new();
    for file in files {
        let content = std::fs::read_to_string(data_directory().join(file)).ok()?;
        for line in content.lines().skip(1) {
            let mut columns = line.split('\t');
            if let (Some(text), Some(intent)) = (columns.next(), columns.next()) {
                rows.push((text.to_string(), intent.to_string()));
            }
        }
    }
    Some(rows)
}

fn training_rows() -> Option<&'static Vec<(AnnotatedText, String)>> {
    static ROWS: OnceLock<Option<Vec<(AnnotatedText, String)>>> = OnceLock::new();
    ROWS.get_or_init(|| {
        read_rows(&["full_train.tsv", "full_oos_train.tsv"]).map(|rows| {
            rows.into_iter().map(|(text, intent)| (AnnotatedText { text, slots: Vec::new() }, intent)).collect()
        })
    })
    .as_ref()
}

fn test_texts() -> Option<&'static Vec<String>> {
    static TEXTS: OnceLock<Option<Vec<String>>> = OnceLock::new();
    TEXTS
        .get_or_init(|| {
            read_rows(&["full_test.tsv", "full_oos_test.tsv"])
                .map(|rows| rows.into_iter().map(|(text, _)| text).collect())
        })
        .as_ref()
}

fn clinc_model() -> Option<&'static Recognizer> {
    static MODEL: OnceLock<Option<Recognizer>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            training_rows().map(|rows| Recognizer::train_annotated(rows, &IntentSettings::default(), 0.245))
        })
        .as_ref()
}

fn context() -> RecognizeContext {
    RecognizeContext {
        now: chrono::Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap(),
        time_zone: chrono_tz::America::New_York,
        default_region: "US".into(),
    }
}

/// A small bot whose intents have typed slots, so recognition exercises the tagger and extractors.
fn slot_bot() -> &'static Recognizer {
    static MODEL: OnceLock<Recognizer> = OnceLock::new();
    MODEL.get_or_init(|| {
        let definition: BotDefinition = serde_json::from_value(serde_json::json!({
            "intents": [
                {"name": "book_table", "utterances": [
                    "book a table for {party_size} on {date} at {time}",
                    "table for {party_size} please", "reserve a table {date}",
                    "can we get a table at {time}", "I'd like to book a table"],
                 "slots": [{"name": "party_size", "type": "number"}, {"name": "date", "type": "date"},
                           {"name": "time", "type": "time"}]},
                {"name": "transfer", "utterances": [
                    "send {amount} to {account}", "transfer {amount} from {account}", "move money"],
                 "slots": [{"name": "amount", "type": "money"}, {"name": "account", "type": "account"}]},
                {"name": "hours", "utterances": ["when are you open", "opening hours", "are you open today"]}
            ],
            "slot_types": [{"name": "account", "values": [
                {"value": "checking", "synonyms": ["current"]}, {"value": "savings"}]}]
        }))
        .unwrap();
        train(&definition).unwrap()
    })
}

const SLOT_MESSAGES: &[&str] = &[
    "book a table for four next tuesday at 7pm",
    "could we get a table for 2 tomorrow at half past 8",
    "send $250 to my savings account",
    "transfer twenty dollars from current",
    "are you open on the 5th?",
];

fn main() {
    print_clinc_percentiles();
    divan::main();
}

/// p50/p99 of full recognition over every CLINC150 test utterance, three passes.
fn print_clinc_percentiles() {
    let (Some(model), Some(texts)) = (clinc_model(), test_texts()) else {
        println!("CLINC150 not found under {}: skipped", data_directory().display());
        return;
    };
    let context = context();
    let mut samples = Vec::with_capacity(texts.len() * 3);
    for _ in 0..3 {
        for text in texts {
            let started = Instant::now();
            divan::black_box(model.recognize(divan::black_box(text), &context));
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |quantile: f64| samples[((quantile * samples.len() as f64) as usize).min(samples.len() - 1)];
    println!(
        "CLINC150 recognition latency over {} calls: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        samples[samples.len() - 1]
    );
}

/// Training on CLINC150 full (15,000 in-scope + 100 out-of-scope utterances).
#[divan::bench(sample_count = 3, sample_size = 1)]
fn train_clinc150(bencher: Bencher) {
    let Some(rows) = training_rows() else {
        return;
    };
    bencher.bench(|| Recognizer::train_annotated(rows, &IntentSettings::default(), 0.245));
}

/// Recognising one CLINC150 test utterance with the 150-intent model.
#[divan::bench(sample_count = 2000, sample_size = 1)]
fn recognize_clinc150(bencher: Bencher) {
    let (Some(model), Some(texts)) = (clinc_model(), test_texts()) else {
        return;
    };
    let context = context();
    let mut next = 0usize;
    bencher
        .with_inputs(|| {
            next = (next + 1) % texts.len();
            texts[next].as_str()
        })
        .bench_local_values(|text| model.recognize(text, &context));
}

/// Recognising a message with typed slots (number, date, time, money, custom list).
#[divan::bench(sample_count = 2000, sample_size = 1)]
fn recognize_with_slots(bencher: Bencher) {
    let model = slot_bot();
    let context = context();
    let mut next = 0usize;
    bencher
        .with_inputs(|| {
            next = (next + 1) % SLOT_MESSAGES.len();
            SLOT_MESSAGES[next]
        })
        .bench_local_values(|text| model.recognize(text, &context));
}

/// Training a small bot definition (what `PUT /api/v1/bots/{name}` waits for).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn train_small_bot(bencher: Bencher) {
    let definition: BotDefinition = serde_json::from_value(serde_json::json!({
        "intents": [
            {"name": "book_table", "utterances": ["book a table for {party_size}", "table for {party_size}"],
             "slots": [{"name": "party_size", "type": "number"}]},
            {"name": "hours", "utterances": ["when are you open", "opening hours"]}
        ]
    }))
    .unwrap();
    bencher.bench(|| train(&definition).unwrap());
}
