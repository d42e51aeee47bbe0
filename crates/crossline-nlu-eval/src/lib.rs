//! `crossline nlu eval`: train crossline-nlu on labelled files, tune on validation files only, evaluate on
//! test files and print a report.

pub mod metrics;
pub mod readers;
pub mod sentiment;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use std::collections::BTreeMap;

use crossline_nlu::intent::{IntentSettings, OUT_OF_SCOPE_LABEL};
use crossline_nlu::tagger::AnnotatedText;
use crossline_nlu::{RecognizeContext, Recognizer};

use crate::metrics::{IntentMetrics, SlotCounts, intent_metrics, percentile};
use crate::readers::{Example, read_examples};

/// Arguments of `crossline nlu eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Training files (.tsv, .csv or .jsonl); rows labelled `oos` train the out-of-scope class.
    #[arg(long, num_args = 1.., required = true)]
    pub train: Vec<PathBuf>,
    /// Validation files, used only for tuning (probability temperatures and the out-of-scope threshold).
    /// Without them a deterministic slice of the training rows (every tenth) is held out for tuning and the
    /// final model is retrained on all training rows.
    #[arg(long, num_args = 1..)]
    pub validation: Vec<PathBuf>,
    /// Test files, evaluated once.
    #[arg(long, num_args = 1.., required = true)]
    pub test: Vec<PathBuf>,
    /// Write one TSV line per test row: text, gold intent, predicted intent (empty when out of scope),
    /// confidence of the best in-scope intent.
    #[arg(long, value_name = "OUT")]
    pub predictions: Option<PathBuf>,
    /// Override the L2 penalty (for experiments).
    #[arg(long, hide = true)]
    pub l2_penalty: Option<f32>,
    /// Override the learning rate (for experiments).
    #[arg(long, hide = true)]
    pub learning_rate: Option<f32>,
    /// Override the maximum number of epochs (for experiments).
    #[arg(long, hide = true)]
    pub max_epochs: Option<usize>,
    /// Override the longest character n-gram (for experiments).
    #[arg(long, hide = true)]
    pub char_max_n: Option<usize>,
    /// Override the shortest character n-gram (for experiments).
    #[arg(long, hide = true)]
    pub char_min_n: Option<usize>,
    /// Override the word block weight (for experiments).
    #[arg(long, hide = true)]
    pub word_weight: Option<f32>,
    /// Use this out-of-scope threshold instead of tuning one (for experiments).
    #[arg(long, hide = true)]
    pub threshold: Option<f32>,
    /// Override the longest word n-gram (for experiments).
    #[arg(long, hide = true)]
    pub word_max_n: Option<usize>,
    /// Override the convergence tolerance (for experiments).
    #[arg(long, hide = true)]
    pub tolerance: Option<f32>,
    /// Add skip-bigrams (for experiments).
    #[arg(long, hide = true)]
    pub skip_bigrams: bool,
    /// Average weights over epochs (for experiments).
    #[arg(long, hide = true)]
    pub average: bool,
    /// Character n-grams across words (for experiments).
    #[arg(long, hide = true)]
    pub char_cross_words: bool,
    /// Use one-vs-rest squared-hinge SVMs with this cost C (for experiments).
    #[arg(long, hide = true)]
    pub svm_cost: Option<f32>,
    /// Keep only this ensemble member (for experiments).
    #[arg(long, hide = true)]
    pub only_member: Option<usize>,
    /// Add a network member with this many hidden units (for experiments).
    #[arg(long, hide = true)]
    pub mlp_hidden: Option<usize>,
    /// Network epochs (for experiments).
    #[arg(long, hide = true)]
    pub mlp_epochs: Option<usize>,
    /// Network learning rate (for experiments).
    #[arg(long, hide = true)]
    pub mlp_rate: Option<f32>,
    /// Leave the network member out (for experiments).
    #[arg(long, hide = true)]
    pub no_mlp: bool,
    /// Keep only the network member (for experiments).
    #[arg(long, hide = true)]
    pub only_mlp: bool,
    /// Override the minimum document frequency (for experiments).
    #[arg(long, hide = true)]
    pub minimum_documents: Option<usize>,
}

fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Example>> {
    let mut examples = Vec::new();
    for path in paths {
        examples.extend(read_examples(path)?);
    }
    Ok(examples)
}

fn settings_from(args: &EvalArgs) -> IntentSettings {
    let mut settings = IntentSettings::default();
    if let Some(value) = args.l2_penalty
        && let Some(member) = settings.members.get_mut(0)
    {
        member.l2_penalty = value;
    }
    if let Some(value) = args.learning_rate
        && let Some(member) = settings.members.get_mut(0)
    {
        member.learning_rate = value;
    }
    if let Some(value) = args.max_epochs
        && let Some(member) = settings.members.get_mut(0)
    {
        member.max_epochs = value;
    }
    if let Some(value) = args.char_max_n {
        settings.features.char_max_n = value;
    }
    if let Some(value) = args.char_min_n {
        settings.features.char_min_n = value;
    }
    if let Some(value) = args.word_weight {
        settings.features.word_weight = value;
    }
    if let Some(value) = args.word_max_n {
        settings.features.word_max_n = value;
    }
    if let Some(value) = args.tolerance
        && let Some(member) = settings.members.get_mut(0)
    {
        member.tolerance = value;
    }
    if let Some(cost) = args.svm_cost
        && let Some(member) = settings.members.get_mut(1)
    {
        member.svm_cost = cost;
    }
    if let Some(member) = settings.members.get_mut(0) {
        member.average |= args.average;
    }
    if let Some(member) = args.only_member {
        settings.members = settings.members.get(member).cloned().into_iter().collect();
    }
    if let Some(hidden) = args.mlp_hidden {
        let mut mlp = crossline_nlu::mlp::MlpSettings { hidden, ..Default::default() };
        if let Some(epochs) = args.mlp_epochs {
            mlp.epochs = epochs;
        }
        if let Some(rate) = args.mlp_rate {
            mlp.learning_rate = rate;
        }
        settings.mlp = Some(mlp);
    }
    if args.no_mlp {
        settings.mlp = None;
    }
    if args.only_mlp {
        settings.members.clear();
    }
    settings.features.skip_bigrams |= args.skip_bigrams;
    settings.features.char_cross_words |= args.char_cross_words;
    if let Some(value) = args.minimum_documents {
        settings.features.minimum_documents = value;
    }
    settings
}

fn train(examples: &[Example], settings: &IntentSettings) -> Recognizer {
    let annotated: Vec<(AnnotatedText, String)> = examples
        .iter()
        .map(|example| {
            (
                AnnotatedText {
                    text: example.text.clone(),
                    slots: example
                        .entities
                        .iter()
                        .map(|entity| (entity.start..entity.end, entity.entity.clone()))
                        .collect(),
                },
                example.intent.clone(),
            )
        })
        .collect();
    Recognizer::train_annotated(&annotated, settings, 0.0)
}

fn fit_temperature(recognizer: &mut Recognizer, rows: &[Example]) {
    recognizer.classifier_mut().fit_temperature(rows.iter().map(|row| (row.text.as_str(), row.intent.as_str())));
}

/// Best in-scope intent and its probability, plus the explicit out-of-scope probability, per row.
type Scored = Vec<(Option<String>, f32, f32)>;

fn score_rows(recognizer: &Recognizer, rows: &[Example]) -> Scored {
    rows.iter()
        .map(|row| {
            let scores = recognizer.classifier().score(&row.text);
            let best = scores.ranked.first();
            (best.map(|intent| intent.name.clone()), best.map_or(0.0, |intent| intent.confidence), scores.out_of_scope)
        })
        .collect()
}

fn decide(scored: &Scored, threshold: f32) -> Vec<Option<&str>> {
    scored
        .iter()
        .map(
            |(name, confidence, out_of_scope)| {
                if *confidence < threshold || out_of_scope > confidence { None } else { name.as_deref() }
            },
        )
        .collect()
}

/// Chooses the out-of-scope threshold on validation rows: the one that maximises validation accuracy
/// (every row counts once; ties keep the lower threshold). Without out-of-scope rows there is nothing to
/// trade against and the threshold is 0.
fn choose_threshold(scored: &Scored, rows: &[Example]) -> (f32, Option<IntentMetrics>) {
    let gold: Vec<&str> = rows.iter().map(|row| row.intent.as_str()).collect();
    if !gold.contains(&OUT_OF_SCOPE_LABEL) {
        return (0.0, None);
    }
    let mut best = (f64::NEG_INFINITY, 0.0f32, None);
    for step in 0..=190 {
        let threshold = step as f32 * 0.005;
        let metrics = intent_metrics(&gold, &decide(scored, threshold));
        if metrics.accuracy > best.0 + 1e-12 {
            best = (metrics.accuracy, threshold, Some(metrics));
        }
    }
    (best.1, best.2)
}

fn percent(value: f64) -> String {
    format!("{:.2}%", value * 100.0)
}

fn clean_field(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// Runs the evaluation and prints the report to standard output.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let train_rows = read_all(&args.train)?;
    let validation_rows = read_all(&args.validation)?;
    let test_rows = read_all(&args.test)?;
    if train_rows.is_empty() {
        bail!("the training files hold no rows");
    }
    if test_rows.is_empty() {
        bail!("the test files hold no rows");
    }
    let settings = settings_from(args);
    let mut report = String::new();

    // Tuning: on the validation files, or on a held-out slice of the training rows.
    let (threshold, temperatures, validation_metrics, tuning_source) = if validation_rows.is_empty() {
        let (tuning_train, held_out): (Vec<_>, Vec<_>) =
            train_rows.iter().cloned().enumerate().partition(|(index, _)| index % 10 != 9);
        let tuning_train: Vec<Example> = tuning_train.into_iter().map(|(_, row)| row).collect();
        let held_out: Vec<Example> = held_out.into_iter().map(|(_, row)| row).collect();
        let mut recognizer = train(&tuning_train, &settings);
        fit_temperature(&mut recognizer, &held_out);
        let scored = score_rows(&recognizer, &held_out);
        let (threshold, metrics) = choose_threshold(&scored, &held_out);
        (
            threshold,
            recognizer.classifier().temperatures(),
            metrics,
            format!("every 10th training row held out ({} rows), model retrained on all rows", held_out.len()),
        )
    } else {
        (0.0, Vec::new(), None, String::new())
    };

    let started = Instant::now();
    let mut recognizer = train(&train_rows, &settings);
    let training_seconds = started.elapsed().as_secs_f64();

    if validation_rows.is_empty() {
        recognizer.classifier_mut().set_temperatures(&temperatures);
    } else {
        fit_temperature(&mut recognizer, &validation_rows);
    }
    let (threshold, validation_metrics, tuning_source) = if validation_rows.is_empty() {
        (threshold, validation_metrics, tuning_source)
    } else {
        let scored = score_rows(&recognizer, &validation_rows);
        let (threshold, metrics) = choose_threshold(&scored, &validation_rows);
        (threshold, metrics, format!("validation files ({} rows)", validation_rows.len()))
    };

    let threshold = args.threshold.unwrap_or(threshold);
    recognizer.set_threshold(threshold);
    // Test: every row through the full recognition path (features, classifier, slot tagging and typing,
    // sentiment, language), timed per utterance. A fixed "now" keeps relative dates reproducible.
    let context = RecognizeContext {
        now: chrono::DateTime::parse_from_rfc3339("2026-01-05T12:00:00Z")
            .map(|now| now.with_timezone(&chrono::Utc))
            .unwrap_or_default(),
        time_zone: chrono_tz::UTC,
        default_region: "US".into(),
    };
    let has_slots = train_rows.iter().any(|row| !row.entities.is_empty());
    let mut latencies = Vec::with_capacity(test_rows.len());
    let mut recognitions = Vec::with_capacity(test_rows.len());
    for row in &test_rows {
        let started = Instant::now();
        let recognition = recognizer.recognize(&row.text, &context);
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        recognitions.push(recognition);
    }
    latencies.sort_by(f64::total_cmp);
    let predicted: Vec<Option<&str>> =
        recognitions.iter().map(|recognition| recognition.intent.as_ref().map(|intent| intent.name.as_str())).collect();
    let confidences: Vec<f32> = recognitions
        .iter()
        .map(|recognition| {
            recognition.intent.as_ref().or(recognition.alternatives.first()).map_or(0.0, |intent| intent.confidence)
        })
        .collect();
    let gold: Vec<&str> = test_rows.iter().map(|row| row.intent.as_str()).collect();
    let metrics = intent_metrics(&gold, &predicted);
    let mut slot_counts: BTreeMap<&str, SlotCounts> = BTreeMap::new();
    if has_slots {
        for (row, recognition) in test_rows.iter().zip(&recognitions) {
            let gold_slots: Vec<(String, usize, usize)> =
                row.entities.iter().map(|entity| (entity.entity.clone(), entity.start, entity.end)).collect();
            let predicted_slots: Vec<(String, usize, usize)> = recognition
                .slots
                .iter()
                .map(|(name, value)| (name.clone(), value.span.start, value.span.end))
                .collect();
            slot_counts.entry(row.intent.as_str()).or_default().add(&gold_slots, &predicted_slots);
        }
    }

    let classifier = recognizer.classifier();
    let intents = classifier.intents().count();
    writeln!(
        report,
        "train rows {} ({} intents{}), validation rows {}, test rows {}",
        train_rows.len(),
        intents,
        if train_rows.iter().any(|row| row.intent == OUT_OF_SCOPE_LABEL) { " + out-of-scope class" } else { "" },
        validation_rows.len(),
        test_rows.len()
    )?;
    let blocks: Vec<String> = classifier.feature_blocks().iter().map(|(name, size)| format!("{name} {size}")).collect();
    writeln!(
        report,
        "features: {}; training: {} epochs{}",
        blocks.join(", "),
        classifier.report().epochs,
        if classifier.report().converged { ", converged" } else { ", epoch limit" }
    )?;
    writeln!(
        report,
        "out-of-scope threshold {threshold:.3}, temperatures {:?}, tuned on {tuning_source}",
        classifier.temperatures()
    )?;
    if let Some(validation) = &validation_metrics {
        writeln!(
            report,
            "  at that threshold on the tuning rows: in-scope accuracy {}, out-of-scope recall {}",
            percent(validation.in_scope_accuracy),
            percent(validation.out_of_scope_recall.unwrap_or(0.0))
        )?;
    }
    writeln!(report, "test results")?;
    writeln!(report, "  accuracy              {}", percent(metrics.accuracy))?;
    writeln!(report, "  macro F1              {}", percent(metrics.macro_f1))?;
    writeln!(
        report,
        "  in-scope accuracy     {} ({} rows)",
        percent(metrics.in_scope_accuracy),
        metrics.in_scope_rows
    )?;
    match metrics.out_of_scope_recall {
        Some(recall) => {
            writeln!(report, "  out-of-scope recall   {} ({} rows)", percent(recall), metrics.out_of_scope_rows)?
        }
        None => writeln!(report, "  out-of-scope recall   n/a (no oos rows)")?,
    }
    if has_slots {
        let mut total = SlotCounts::default();
        let mut per_intent_sum = 0.0;
        for counts in slot_counts.values() {
            total.true_positives += counts.true_positives;
            total.predicted += counts.predicted;
            total.gold += counts.gold;
            per_intent_sum += counts.f1();
        }
        writeln!(
            report,
            "  slot F1 (exact span)  {} micro, {} mean over intents",
            percent(total.f1()),
            percent(per_intent_sum / slot_counts.len().max(1) as f64)
        )?;
        for (intent, counts) in &slot_counts {
            writeln!(report, "    {intent:<24} {} ({} gold slots)", percent(counts.f1()), counts.gold)?;
        }
    }
    writeln!(report, "  training time         {training_seconds:.2} s")?;
    writeln!(
        report,
        "  inference latency     p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    )?;
    print!("{report}");

    if let Some(path) = &args.predictions {
        let mut output = String::new();
        for ((row, prediction), confidence) in test_rows.iter().zip(&predicted).zip(&confidences) {
            writeln!(
                output,
                "{}\t{}\t{}\t{:.6}",
                clean_field(&row.text),
                row.intent,
                prediction.unwrap_or(""),
                confidence
            )?;
        }
        let mut file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(output.as_bytes())?;
        println!("predictions written to {}", path.display());
    }
    Ok(())
}
