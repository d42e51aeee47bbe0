//! Prints how well message sentiment agrees with human ratings:
//! `cargo run --release -p crossline-nlu-eval --example sentiment -- ../shared/data/sentiment/vader/*.txt`.

fn main() -> anyhow::Result<()> {
    for path in std::env::args().skip(1) {
        let agreement = crossline_nlu_eval::sentiment::sentiment_agreement(path.as_ref())?;
        println!(
            "{path}: {} rows, Pearson r {:.3}, polarity agreement {:.1}% (rows with |mean rating| >= 0.5)",
            agreement.rows,
            agreement.pearson,
            agreement.polarity_accuracy * 100.0
        );
    }
    Ok(())
}
