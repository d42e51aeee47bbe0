//! The intent classifier: feature pipeline + softmax regression + out-of-scope decision.

use std::collections::BTreeMap;

use crate::classifier::{ClassifierSettings, Loss, SoftmaxClassifier, TrainingReport};
use crate::features::{FeaturePipeline, FeatureSettings, PreparedText};
use crate::mlp::{MlpClassifier, MlpSettings};
use crate::text::bounded;

/// The label that marks out-of-scope training examples. A bot that provides examples under this label gets
/// an explicit out-of-scope class in addition to the confidence threshold.
pub const OUT_OF_SCOPE_LABEL: &str = "oos";

/// Default confidence below which a message is out of scope.
///
/// Chosen on the CLINC150 validation split (never its test split) with the default settings: see
/// `docs/nlu.md`. Bots may override it.
pub const DEFAULT_OUT_OF_SCOPE_THRESHOLD: f32 = 0.25;

/// All settings of intent training.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentSettings {
    /// Feature pipeline settings.
    pub features: FeatureSettings,
    /// The linear models trained on the shared features; their calibrated probabilities are averaged.
    pub members: Vec<ClassifierSettings>,
    /// Add a one-hidden-layer network as a further member.
    pub mlp: Option<MlpSettings>,
}

impl Default for IntentSettings {
    /// Logistic regression plus one-vs-rest squared-hinge SVMs. Each alone reaches about the same
    /// accuracy; averaging their calibrated probabilities separates in-scope from out-of-scope messages
    /// better than either (numbers in docs/nlu.md).
    fn default() -> Self {
        IntentSettings {
            features: FeatureSettings::default(),
            members: vec![
                ClassifierSettings::default(),
                ClassifierSettings {
                    loss: Loss::SquaredHinge,
                    svm_cost: 2.0,
                    temperature: 0.15,
                    ..ClassifierSettings::default()
                },
            ],
            mlp: Some(MlpSettings::default()),
        }
    }
}

/// An intent name with a probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoredIntent {
    /// Intent name.
    pub name: String,
    /// Calibrated probability in `[0, 1]`.
    pub confidence: f32,
}

/// The classifier's ranking for one message, before the out-of-scope decision.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentScores {
    /// In-scope intents, most likely first.
    pub ranked: Vec<ScoredIntent>,
    /// Probability of the explicit out-of-scope class (0 when the bot has none).
    pub out_of_scope: f32,
}

impl IntentScores {
    /// The decided intent: `None` when the explicit out-of-scope class wins or the best in-scope
    /// probability is below `threshold`.
    pub fn decide(&self, threshold: f32) -> Option<&ScoredIntent> {
        let best = self.ranked.first()?;
        if best.confidence < threshold || self.out_of_scope > best.confidence {
            return None;
        }
        Some(best)
    }
}

/// A trained intent classifier.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct IntentClassifier {
    pipeline: FeaturePipeline,
    /// Each member with its softmax temperature.
    members: Vec<(SoftmaxClassifier, f32)>,
    /// Optional network member with its temperature.
    mlp: Option<(MlpClassifier, f32)>,
    labels: Vec<String>,
    out_of_scope_index: Option<usize>,
    report: TrainingReport,
}

impl IntentClassifier {
    /// Trains on `(text, intent)` pairs. Labels equal to [`OUT_OF_SCOPE_LABEL`] train the out-of-scope
    /// class. Classes are ordered by name so that training does not depend on example order beyond SGD's
    /// fixed shuffle.
    pub fn train<'a>(
        examples: impl IntoIterator<Item = (&'a str, &'a str)>,
        settings: &IntentSettings,
    ) -> IntentClassifier {
        let examples: Vec<(&str, &str)> = examples.into_iter().map(|(text, label)| (bounded(text), label)).collect();
        let mut label_index: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, label) in &examples {
            label_index.insert(label, 0);
        }
        let labels: Vec<String> = label_index.keys().map(|label| label.to_string()).collect();
        for (index, value) in label_index.values_mut().enumerate() {
            *value = index;
        }
        let prepared: Vec<PreparedText<'_>> = examples.iter().map(|(text, _)| PreparedText::new(text)).collect();
        let mut pipeline = FeaturePipeline::from_settings(&settings.features);
        pipeline.fit(&prepared);
        let vectors: Vec<_> = prepared.iter().map(|text| pipeline.transform(text)).collect();
        let targets: Vec<usize> = examples.iter().map(|(_, label)| label_index[label]).collect();
        let mut members = Vec::new();
        let mut report = TrainingReport { epochs: 0, objective: 0.0, converged: true };
        // Members train concurrently (each is deterministic on its own, so the result does not depend on
        // scheduling): on two cores the ensemble costs little more than its slowest member.
        let dimension = pipeline.dimension();
        let mut mlp = None;
        let trained: Vec<(SoftmaxClassifier, TrainingReport)> =
            std::thread::scope(|scope| {
                let mlp_handle = settings.mlp.as_ref().map(|mlp_settings| {
                    let (vectors, targets) = (&vectors, &targets);
                    let classes = labels.len();
                    scope.spawn(move || MlpClassifier::train(vectors, targets, classes, dimension, mlp_settings))
                });
                let handles: Vec<_> = settings
                    .members
                    .iter()
                    .skip(1)
                    .map(|member| {
                        let (vectors, targets) = (&vectors, &targets);
                        let classes = labels.len();
                        scope.spawn(move || SoftmaxClassifier::train(vectors, targets, classes, dimension, member))
                    })
                    .collect();
                let mut trained = Vec::new();
                if let Some(first) = settings.members.first() {
                    trained.push(SoftmaxClassifier::train(&vectors, &targets, labels.len(), dimension, first));
                }
                for (handle, member) in handles.into_iter().zip(settings.members.iter().skip(1)) {
                    // A member thread can only fail by panicking; retrain inline rather than propagate.
                    trained.push(handle.join().unwrap_or_else(|_| {
                        SoftmaxClassifier::train(&vectors, &targets, labels.len(), dimension, member)
                    }));
                }
                if let Some(handle) = mlp_handle {
                    mlp = handle
                        .join()
                        .ok()
                        .map(|network| (network, settings.mlp.as_ref().map_or(1.0, |mlp| mlp.temperature)));
                }
                trained
            });
        for ((classifier, member_report), member) in trained.into_iter().zip(&settings.members) {
            report.epochs = report.epochs.max(member_report.epochs);
            report.converged &= member_report.converged;
            report.objective = member_report.objective;
            members.push((classifier, member.temperature));
        }
        let out_of_scope_index = labels.iter().position(|label| label == OUT_OF_SCOPE_LABEL);
        IntentClassifier { pipeline, members, mlp, labels, out_of_scope_index, report }
    }

    /// The in-scope intent names the classifier knows.
    pub fn intents(&self) -> impl Iterator<Item = &str> {
        self.labels
            .iter()
            .enumerate()
            .filter(|(index, _)| Some(*index) != self.out_of_scope_index)
            .map(|(_, label)| label.as_str())
    }

    /// The softmax temperatures of the ensemble members.
    pub fn temperatures(&self) -> Vec<f32> {
        self.members
            .iter()
            .map(|(_, temperature)| *temperature)
            .chain(self.mlp.iter().map(|(_, temperature)| *temperature))
            .collect()
    }

    /// Sets the members' temperatures (as returned by [`IntentClassifier::temperatures`] of a model fitted
    /// on the same data); extra or invalid values are ignored.
    pub fn set_temperatures(&mut self, temperatures: &[f32]) {
        let slots = self
            .members
            .iter_mut()
            .map(|(_, temperature)| temperature)
            .chain(self.mlp.iter_mut().map(|(_, temperature)| temperature));
        for (temperature, value) in slots.zip(temperatures) {
            if value.is_finite() && *value > 0.0 {
                *temperature = *value;
            }
        }
    }

    /// Fits each member's temperature to minimise the negative log-likelihood of held-out
    /// `(text, intent)` pairs (temperature scaling, Guo et al. 2017), so that confidences match observed
    /// accuracy; the ranking for one message never changes. Pairs whose intent the classifier does not know
    /// are skipped.
    pub fn fit_temperature<'a>(&mut self, held_out: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut vectors = Vec::new();
        for (text, intent) in held_out {
            let Some(label) = self.labels.iter().position(|label| label == intent) else {
                continue;
            };
            vectors.push((self.pipeline.transform(&PreparedText::new(bounded(text))), label));
        }
        if vectors.is_empty() {
            return;
        }
        for (classifier, temperature) in &mut self.members {
            let rows: Vec<(Vec<f32>, usize)> =
                vectors.iter().map(|(vector, label)| (classifier.logits(vector), *label)).collect();
            *temperature = fit_temperature(&rows);
        }
        if let Some((network, temperature)) = &mut self.mlp {
            let rows: Vec<(Vec<f32>, usize)> =
                vectors.iter().map(|(vector, label)| (network.logits(vector), *label)).collect();
            *temperature = fit_temperature(&rows);
        }
    }

    /// How training went.
    pub fn report(&self) -> &TrainingReport {
        &self.report
    }

    /// Sizes of the feature blocks.
    pub fn feature_blocks(&self) -> Vec<(&'static str, usize)> {
        self.pipeline.blocks()
    }

    /// Scores a message (already prepared).
    pub fn score_prepared(&self, text: &PreparedText<'_>) -> IntentScores {
        let vector = self.pipeline.transform(text);
        let mut probabilities = vec![0.0f32; self.labels.len()];
        for (classifier, temperature) in &self.members {
            for (sum, probability) in probabilities.iter_mut().zip(classifier.probabilities(&vector, *temperature)) {
                *sum += probability;
            }
        }
        if let Some((network, temperature)) = &self.mlp {
            let mut logits = network.logits(&vector);
            let maximum = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for logit in &mut logits {
                *logit = ((*logit - maximum) / temperature).exp();
                sum += *logit;
            }
            for (total, value) in probabilities.iter_mut().zip(&logits) {
                *total += value / sum;
            }
        }
        let member_count = (self.members.len() + usize::from(self.mlp.is_some())).max(1) as f32;
        for probability in &mut probabilities {
            *probability /= member_count;
        }
        let mut out_of_scope = 0.0;
        let mut ranked = Vec::with_capacity(probabilities.len());
        for (index, probability) in probabilities.into_iter().enumerate() {
            if Some(index) == self.out_of_scope_index {
                out_of_scope = probability;
            } else {
                ranked.push(ScoredIntent { name: self.labels[index].clone(), confidence: probability });
            }
        }
        // Ties broken by name keep the answer deterministic.
        ranked.sort_by(|left, right| {
            right.confidence.total_cmp(&left.confidence).then_with(|| left.name.cmp(&right.name))
        });
        IntentScores { ranked, out_of_scope }
    }

    /// Scores a message.
    pub fn score(&self, text: &str) -> IntentScores {
        self.score_prepared(&PreparedText::new(bounded(text)))
    }
}

/// The temperature minimising the negative log-likelihood of `(logits, label)` rows, by golden-section
/// search over log T in [-4, 4] (the loss is unimodal in T for fixed logits).
fn fit_temperature(rows: &[(Vec<f32>, usize)]) -> f32 {
    let loss = |log_temperature: f64| -> f64 {
        let temperature = log_temperature.exp();
        rows.iter()
            .map(|(logits, label)| {
                let maximum = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let normaliser: f64 = logits.iter().map(|logit| (f64::from(logit - maximum) / temperature).exp()).sum();
                normaliser.ln() - f64::from(logits[*label] - maximum) / temperature
            })
            .sum()
    };
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut low, mut high) = (-4.0f64, 4.0f64);
    for _ in 0..40 {
        let left = high - ratio * (high - low);
        let right = low + ratio * (high - low);
        if loss(left) < loss(right) {
            high = right;
        } else {
            low = left;
        }
    }
    (0.5 * (low + high)).exp() as f32
}
