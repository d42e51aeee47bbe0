//! Stand-alone entry point for `crossline nlu eval` until the main binary wires it in.
use clap::Parser;

#[derive(Parser)]
#[command(name = "nlu-eval", about = "Train and evaluate crossline-nlu on labelled data sets")]
struct Cli {
    #[command(flatten)]
    args: crossline_nlu_eval::EvalArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    crossline_nlu_eval::run(&cli.args)
}
