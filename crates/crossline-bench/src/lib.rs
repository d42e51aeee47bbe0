//! `crossline bench ...`: load generators that drive the real server over loopback (or the real
//! store in-process) and print a Markdown row for docs/BENCHMARKS.md. A crate of its own, so the
//! product crate ships no load generator; the `crossline` binary still runs them (`crossline bench`),
//! and a benchmarked server is that same binary started as a child process.

mod agents;
mod campaign;
mod chat;
mod destinations;
mod fairness;
mod http_sink;
mod ingest;
mod lookup;
mod segment;
mod server;
mod stats;
mod turn;
mod worker;

pub use agents::AgentsArgs;
pub use campaign::CampaignArgs;
pub use chat::ChatArgs;
pub use destinations::DestinationsArgs;
pub use fairness::FairnessArgs;
pub use ingest::IngestArgs;
pub use lookup::LookupArgs;
pub use segment::SegmentArgs;
pub use turn::TurnArgs;
pub use worker::WorkerArgs;

use clap::Subcommand;

/// What every benchmark module uses.
mod prelude {
    pub(crate) use crate::ingest::Generator;
    pub(crate) use crate::server::*;
    pub(crate) use crate::stats::*;
    pub(crate) use crate::turn::bot_bench;
    pub(crate) use anyhow::{Context, bail};
    pub(crate) use base64::Engine;
    pub(crate) use rand::rngs::StdRng;
    pub(crate) use rand::{Rng, SeedableRng};
    pub(crate) use serde_json::{Value, json};
    pub(crate) use std::io::Write;
    pub(crate) use std::path::PathBuf;
    pub(crate) use std::time::{Duration, Instant};
}

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Drive `/v1/batch` from concurrent clients and report events/s, latency, server memory and CPU per event.
    Ingest(IngestArgs),
    /// Profile lookup by identity, in-process, on a store holding many profiles.
    Lookup(LookupArgs),
    /// Bot turns over the REST channel (NLU + dialog + storage) on a many-intent bot.
    Turn(TurnArgs),
    /// Many concurrent web-chat WebSockets, each sending a message every few seconds.
    Chat(ChatArgs),
    /// One workspace floods the tracking API while another sends a little: the quiet one's latency.
    Fairness(FairnessArgs),
    /// Events ingested as fast as possible and delivered to an event destination on loopback.
    Destinations(DestinationsArgs),
    /// The durable worker's own cost per job (claim, lease, complete), in-process on the real store.
    Worker(WorkerArgs),
    /// A segment's size over many profiles and events, in-process on the real store.
    Segment(SegmentArgs),
    /// A personalised campaign sent by the real server to smtp-sink (email), a Twilio-like sink (SMS) or a push-service sink (Web Push, every message encrypted).
    Campaign(CampaignArgs),
    /// Live web-chat customers handed to agents: the time from an agent's reply to the customer's page.
    Agents(AgentsArgs),
}

/// Run a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest::ingest(args).await,
        BenchCommand::Lookup(args) => lookup::lookup(args).await,
        BenchCommand::Turn(args) => turn::turn(args).await,
        BenchCommand::Chat(args) => chat::chat(args).await,
        BenchCommand::Fairness(args) => fairness::fairness(args).await,
        BenchCommand::Destinations(args) => destinations::destinations(args).await,
        BenchCommand::Worker(args) => worker::worker(args).await,
        BenchCommand::Segment(args) => segment::segment(args).await,
        BenchCommand::Campaign(args) => campaign::campaign(args).await,
        BenchCommand::Agents(args) => agents::agents(args).await,
    }
}
