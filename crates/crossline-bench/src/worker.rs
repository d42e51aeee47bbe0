//! `bench worker`: the durable worker's own cost per job — claim (with its lease), run a handler that
//! does nothing, complete — on the real store, in-process.

#[allow(unused_imports)]
use crate::prelude::*;
use crossline_engine::worker::{JobFailure, JobHandler, SystemClock, Worker, WorkerConfig};
use crossline_store::{DynStore, Job, NewJob};
use std::sync::Arc;

/// Settings of the worker benchmark.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Jobs to enqueue and run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Jobs claimed (and run side by side) at once.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// `postgres://...` to measure on PostgreSQL (an empty database) instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
}

struct Nothing;

impl JobHandler for Nothing {
    fn run<'a>(
        &'a self,
        _job: &'a Job,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), JobFailure>> + Send + 'a>> {
        Box::pin(async { Ok(()) })
    }
}

pub(crate) async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("crossline-bench-worker-").tempdir()?;
    let store: DynStore = crossline_store::open(args.database_url.as_deref(), dir.path()).await?;
    let run = crossline_core::ids::new_random_id("bench");
    let enqueued = Instant::now();
    for index in 0..args.jobs {
        let job = NewJob {
            queue: "bench".into(),
            workspace_id: None,
            idempotency_key: format!("{run}-{index}"),
            payload: json!({"index": index}),
            run_at: chrono::Utc::now(),
            max_attempts: 3,
        };
        store.enqueue(&job).await?;
    }
    let enqueue_seconds = enqueued.elapsed().as_secs_f64();
    let config = WorkerConfig { batch: args.batch, ..WorkerConfig::default() };
    let worker = Worker::new(store.clone(), Arc::new(SystemClock), config).handle("bench", Arc::new(Nothing));
    let started = Instant::now();
    let mut ran = 0;
    while ran < args.jobs {
        let this = worker.run_once().await?;
        if this == 0 {
            bail!("the worker found no job after {ran} of {}", args.jobs);
        }
        ran += this;
    }
    let seconds = started.elapsed().as_secs_f64();
    let backend = store.backend();
    println!(
        "crossline bench worker: {backend}, {} jobs, batches of {}: enqueued in {enqueue_seconds:.1} s ({:.0} jobs/s, one write each); run in {seconds:.1} s: {:.0} jobs/s, {:.0} µs of worker overhead per job (claim, lease, complete)",
        args.jobs,
        args.batch,
        args.jobs as f64 / enqueue_seconds,
        args.jobs as f64 / seconds,
        seconds * 1e6 / args.jobs as f64,
    );
    println!(
        "| {} | {backend} | {} | {} | {:.0} | {:.0} | {:.0} |",
        chrono::Utc::now().format("%Y-%m-%d"),
        args.jobs,
        args.batch,
        args.jobs as f64 / enqueue_seconds,
        args.jobs as f64 / seconds,
        seconds * 1e6 / args.jobs as f64,
    );
    Ok(())
}
