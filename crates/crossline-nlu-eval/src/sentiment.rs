//! Agreement of the sentiment scores with human ratings (the VADER ground-truth files:
//! `id<TAB>mean rating in -4..4<TAB>text`).

use std::path::Path;

use anyhow::{Context, bail};

/// Agreement between `crossline_nlu` sentiment and human ratings.
#[derive(Debug, Clone, PartialEq)]
pub struct SentimentAgreement {
    /// Rows compared.
    pub rows: usize,
    /// Pearson correlation of the compound score with the mean human rating.
    pub pearson: f64,
    /// Among rows whose human rating is clearly positive or negative (|mean| ≥ 0.5), the fraction whose
    /// label has the same polarity.
    pub polarity_accuracy: f64,
}

/// Compares sentiment scores with the ratings of a ground-truth file.
pub fn sentiment_agreement(path: &Path) -> anyhow::Result<SentimentAgreement> {
    let content = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut pairs = Vec::new();
    for line in content.lines() {
        let mut columns = line.splitn(3, '\t');
        let (Some(_), Some(rating), Some(text)) = (columns.next(), columns.next(), columns.next()) else {
            continue;
        };
        let Ok(rating) = rating.trim().parse::<f64>() else {
            continue;
        };
        pairs.push((crossline_nlu::signals::sentiment(text).score, rating));
    }
    if pairs.len() < 2 {
        bail!("{}: fewer than two rated rows", path.display());
    }
    let count = pairs.len() as f64;
    let mean_score = pairs.iter().map(|(score, _)| score).sum::<f64>() / count;
    let mean_rating = pairs.iter().map(|(_, rating)| rating).sum::<f64>() / count;
    let (mut covariance, mut score_variance, mut rating_variance) = (0.0, 0.0, 0.0);
    for (score, rating) in &pairs {
        covariance += (score - mean_score) * (rating - mean_rating);
        score_variance += (score - mean_score).powi(2);
        rating_variance += (rating - mean_rating).powi(2);
    }
    let pearson = covariance / (score_variance.sqrt() * rating_variance.sqrt()).max(f64::MIN_POSITIVE);
    let polar: Vec<&(f64, f64)> = pairs.iter().filter(|(_, rating)| rating.abs() >= 0.5).collect();
    let agreeing = polar
        .iter()
        .filter(|(score, rating)| (*score >= 0.05 && *rating > 0.0) || (*score <= -0.05 && *rating < 0.0))
        .count();
    Ok(SentimentAgreement {
        rows: pairs.len(),
        pearson,
        polarity_accuracy: agreeing as f64 / polar.len().max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_on_a_tiny_file() {
        let path = std::env::temp_dir().join(format!("crossline-sentiment-{}.txt", std::process::id()));
        std::fs::write(
            &path,
            "1\t3.1\tI love it, wonderful!\n2\t-2.8\tThis is awful and I hate it\n3\t0.1\tThe box is blue\nbad line\n",
        )
        .unwrap();
        let agreement = sentiment_agreement(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(agreement.rows, 3);
        assert!(agreement.pearson > 0.9);
        assert_eq!(agreement.polarity_accuracy, 1.0);
    }
}
