//! Metrics: intent accuracy, macro F1, in-scope accuracy, out-of-scope recall, slot F1, percentiles.

use std::collections::{BTreeMap, BTreeSet};

use crossline_nlu::intent::OUT_OF_SCOPE_LABEL;

/// Intent metrics over a set of rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IntentMetrics {
    /// Rows evaluated.
    pub rows: usize,
    /// Fraction of rows whose decided intent equals the gold one (out of scope counts as a label).
    pub accuracy: f64,
    /// Unweighted mean F1 over the gold labels (out of scope included when present).
    pub macro_f1: f64,
    /// Accuracy over rows whose gold intent is in scope; predicting out of scope for them is an error.
    pub in_scope_accuracy: f64,
    /// In-scope rows.
    pub in_scope_rows: usize,
    /// Fraction of out-of-scope rows answered "no intent".
    pub out_of_scope_recall: Option<f64>,
    /// Out-of-scope rows.
    pub out_of_scope_rows: usize,
}

/// Computes intent metrics; `predicted` uses `None` for "no intent".
pub fn intent_metrics(gold: &[&str], predicted: &[Option<&str>]) -> IntentMetrics {
    let mut metrics = IntentMetrics { rows: gold.len(), ..IntentMetrics::default() };
    if gold.is_empty() {
        return metrics;
    }
    let mut correct = 0usize;
    let mut in_scope_correct = 0usize;
    let mut out_of_scope_correct = 0usize;
    let mut true_positive: BTreeMap<&str, usize> = BTreeMap::new();
    let mut predicted_count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut gold_count: BTreeMap<&str, usize> = BTreeMap::new();
    for (gold_label, prediction) in gold.iter().zip(predicted) {
        let predicted_label = prediction.unwrap_or(OUT_OF_SCOPE_LABEL);
        let hit = *gold_label == predicted_label;
        *gold_count.entry(gold_label).or_default() += 1;
        *predicted_count.entry(predicted_label).or_default() += 1;
        if hit {
            correct += 1;
            *true_positive.entry(gold_label).or_default() += 1;
        }
        if *gold_label == OUT_OF_SCOPE_LABEL {
            metrics.out_of_scope_rows += 1;
            out_of_scope_correct += usize::from(hit);
        } else {
            metrics.in_scope_rows += 1;
            in_scope_correct += usize::from(hit);
        }
    }
    metrics.accuracy = correct as f64 / gold.len() as f64;
    metrics.in_scope_accuracy = ratio(in_scope_correct, metrics.in_scope_rows);
    metrics.out_of_scope_recall =
        (metrics.out_of_scope_rows > 0).then(|| ratio(out_of_scope_correct, metrics.out_of_scope_rows));
    let labels: BTreeSet<&str> = gold_count.keys().copied().collect();
    let f1_sum: f64 = labels
        .iter()
        .map(|label| {
            let hits = true_positive.get(label).copied().unwrap_or(0);
            f1(hits, predicted_count.get(label).copied().unwrap_or(0), gold_count[label])
        })
        .sum();
    metrics.macro_f1 = f1_sum / labels.len() as f64;
    metrics
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// F1 from true positives, predicted positives and gold positives (1.0 when both are empty).
pub fn f1(true_positives: usize, predicted: usize, gold: usize) -> f64 {
    if predicted == 0 && gold == 0 {
        return 1.0;
    }
    let precision = ratio(true_positives, predicted);
    let recall = ratio(true_positives, gold);
    if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) }
}

/// Counts for span-level slot F1: a predicted slot is correct when its name and its exact character span
/// match a gold slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotCounts {
    /// Correct predicted slots.
    pub true_positives: usize,
    /// Predicted slots.
    pub predicted: usize,
    /// Gold slots.
    pub gold: usize,
}

impl SlotCounts {
    /// Adds one utterance's gold and predicted `(name, start, end)` sets.
    pub fn add(&mut self, gold: &[(String, usize, usize)], predicted: &[(String, usize, usize)]) {
        self.gold += gold.len();
        self.predicted += predicted.len();
        let mut unmatched: Vec<&(String, usize, usize)> = gold.iter().collect();
        for slot in predicted {
            if let Some(position) = unmatched.iter().position(|candidate| *candidate == slot) {
                unmatched.swap_remove(position);
                self.true_positives += 1;
            }
        }
    }

    /// Span-level F1.
    pub fn f1(&self) -> f64 {
        f1(self.true_positives, self.predicted, self.gold)
    }
}

/// The value at quantile `q` (0..=1) of sorted samples, nearest-rank.
pub fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_small_case() {
        let gold = ["a", "a", "b", "oos", "oos"];
        let predicted = [Some("a"), None, Some("b"), None, Some("a")];
        let metrics = intent_metrics(&gold, &predicted);
        assert!((metrics.accuracy - 0.6).abs() < 1e-9);
        assert!((metrics.in_scope_accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(metrics.out_of_scope_recall, Some(0.5));
    }

    #[test]
    fn slot_counts() {
        let mut counts = SlotCounts::default();
        counts.add(&[("city".into(), 0, 5), ("date".into(), 6, 9)], &[("city".into(), 0, 5), ("date".into(), 6, 8)]);
        assert_eq!(counts.true_positives, 1);
        assert!((counts.f1() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), 50.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
