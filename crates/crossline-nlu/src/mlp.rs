//! A one-hidden-layer perceptron over the sparse features (ReLU, softmax output), trained by SGD with a
//! fixed-seed example order and initialisation.
//!
//! Why: the linear members cannot combine words ("card" + "arrive" vs "card" + "decline"); a small hidden
//! layer can, and its errors differ from the linear models', which helps the ensemble.

use crate::features::SparseVector;

/// Hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpSettings {
    /// Hidden units.
    pub hidden: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Lower bound on single-example updates, so that small bots train too.
    pub min_updates: usize,
    /// Softmax temperature until one is fitted on held-out data.
    pub temperature: f32,
    /// Learning rate.
    pub learning_rate: f32,
    /// Seed of initialisation and order.
    pub seed: u64,
}

impl Default for MlpSettings {
    fn default() -> Self {
        MlpSettings {
            hidden: 128,
            // 4 and 6 epochs tie on the CLINC150 validation split; 4 is cheaper.
            epochs: 4,
            // Enough for a small bot to fit its utterances; a quarter of what the linear model gets
            // because each update costs far more.
            min_updates: 5_000,
            // What temperature scaling gives on the CLINC150 validation split.
            temperature: 1.13,
            learning_rate: 0.2,
            seed: 0x0123_4567_89ab_cdef,
        }
    }
}

/// A trained network.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MlpClassifier {
    classes: usize,
    hidden: usize,
    /// `[feature][hidden]`.
    input_weights: Vec<f32>,
    hidden_bias: Vec<f32>,
    /// `[hidden][class]`.
    output_weights: Vec<f32>,
    output_bias: Vec<f32>,
}

struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

impl MlpClassifier {
    /// Trains on `examples` with class indices `labels`.
    pub fn train(
        examples: &[SparseVector],
        labels: &[usize],
        classes: usize,
        dimension: usize,
        settings: &MlpSettings,
    ) -> MlpClassifier {
        let hidden = settings.hidden.max(1);
        let mut generator = Generator(settings.seed | 1);
        let output_scale = (6.0 / (hidden + classes) as f32).sqrt();
        let mut model = MlpClassifier {
            classes,
            hidden,
            input_weights: (0..dimension * hidden).map(|_| generator.symmetric() * 0.1).collect(),
            hidden_bias: vec![0.0; hidden],
            output_weights: (0..hidden * classes).map(|_| generator.symmetric() * output_scale).collect(),
            output_bias: vec![0.0; classes],
        };
        if examples.is_empty() || classes == 0 {
            return model;
        }
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let mut activations = vec![0.0f32; hidden];
        let mut scores = vec![0.0f32; classes];
        let mut hidden_gradient = vec![0.0f32; hidden];
        let epochs = settings.epochs.max(settings.min_updates.div_ceil(examples.len())).min(10_000);
        let total_steps = (epochs * examples.len()) as f32;
        let mut step = 0f32;
        for _ in 0..epochs {
            for index in (1..order.len()).rev() {
                let other = (generator.next() % (index as u64 + 1)) as usize;
                order.swap(index, other);
            }
            for &example_index in &order {
                // Linear decay to zero over training.
                let rate = settings.learning_rate * (1.0 - step / total_steps).max(0.05);
                step += 1.0;
                let example = &examples[example_index];
                model.forward(example, &mut activations, &mut scores);
                let maximum = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for score in &mut scores {
                    *score = (*score - maximum).exp();
                    sum += *score;
                }
                for score in &mut scores {
                    *score /= sum;
                }
                scores[labels[example_index]] -= 1.0;
                // Output layer and the gradient flowing back to the hidden layer.
                for (unit, activation) in activations.iter().enumerate() {
                    let row = &mut model.output_weights[unit * classes..(unit + 1) * classes];
                    let mut back = 0.0;
                    for (weight, gradient) in row.iter_mut().zip(&scores) {
                        back += *weight * gradient;
                        *weight -= rate * activation * gradient;
                    }
                    hidden_gradient[unit] = if *activation > 0.0 { back } else { 0.0 };
                }
                for (bias, gradient) in model.output_bias.iter_mut().zip(&scores) {
                    *bias -= rate * gradient;
                }
                for (&feature, &value) in example.indices.iter().zip(&example.values) {
                    let start = feature as usize * hidden;
                    let row = &mut model.input_weights[start..start + hidden];
                    for (weight, gradient) in row.iter_mut().zip(&hidden_gradient) {
                        *weight -= rate * value * gradient;
                    }
                }
                for (bias, gradient) in model.hidden_bias.iter_mut().zip(&hidden_gradient) {
                    *bias -= rate * gradient;
                }
            }
        }
        model
    }

    fn forward(&self, example: &SparseVector, activations: &mut [f32], scores: &mut [f32]) {
        activations.copy_from_slice(&self.hidden_bias);
        for (&feature, &value) in example.indices.iter().zip(&example.values) {
            let start = feature as usize * self.hidden;
            let Some(row) = self.input_weights.get(start..start + self.hidden) else {
                continue;
            };
            for (activation, weight) in activations.iter_mut().zip(row) {
                *activation += value * weight;
            }
        }
        for activation in activations.iter_mut() {
            *activation = activation.max(0.0);
        }
        scores.copy_from_slice(&self.output_bias);
        for (unit, activation) in activations.iter().enumerate() {
            if *activation == 0.0 {
                continue;
            }
            let row = &self.output_weights[unit * self.classes..(unit + 1) * self.classes];
            for (score, weight) in scores.iter_mut().zip(row) {
                *score += activation * weight;
            }
        }
    }

    /// Decision values before the softmax.
    pub fn logits(&self, example: &SparseVector) -> Vec<f32> {
        let mut activations = vec![0.0; self.hidden];
        let mut scores = vec![0.0; self.classes];
        self.forward(example, &mut activations, &mut scores);
        scores
    }
}
