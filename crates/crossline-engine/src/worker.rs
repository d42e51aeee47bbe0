//! The durable worker: runs jobs from the store's queue (`JobQueue`) — deliveries to event
//! destinations now, sends and journey steps next.
//!
//! - A job is **claimed with a lease**; while its handler runs, a **heartbeat** extends the lease, so
//!   a long job is not taken over, and a worker that dies (or is dropped mid-job) stops beating: the
//!   lease runs out and another worker claims the job again. Handlers must therefore be idempotent
//!   (a delivery carries a stable id); the store's idempotency keys make enqueueing idempotent.
//! - A failure is retried with **exponential backoff and jitter** (or after the delay the other side
//!   asked for, e.g. `Retry-After`), up to the job's `max_attempts`; then, or at once for a failure
//!   that retrying cannot mend, the job is **dead**: listed (`JobQueue::dead_jobs`) and replayable.
//! - Time comes from an injected [`Clock`], so tests move it instead of sleeping.
//! - Metrics: `crossline_jobs_total{queue, outcome}` (`claimed`, `succeeded`, `retried`, `dead`,
//!   `lost`), and per queue `crossline_job_queue_waiting`, `crossline_job_queue_running`,
//!   `crossline_job_queue_dead` and `crossline_job_queue_oldest_seconds`.
//!
//! On PostgreSQL any number of workers (nodes) share the queues (`FOR UPDATE SKIP LOCKED`).

use chrono::{DateTime, Utc};
use crossline_store::{DynStore, Job, StoreResult};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Where the worker's time comes from.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Why a job did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure {
    /// Try again later, with backoff.
    Retry(String),
    /// Try again, not before this long (the other side asked, e.g. `Retry-After`).
    RetryAfter(String, Duration),
    /// Retrying cannot mend it: the job is dead at once.
    Permanent(String),
}

/// Runs the jobs of one queue.
pub trait JobHandler: Send + Sync {
    /// Do the job. It may run more than once (a lost lease, a crash after the work and before the
    /// completion was stored), so it must be idempotent.
    fn run<'a>(&'a self, job: &'a Job) -> std::pin::Pin<Box<dyn Future<Output = Result<(), JobFailure>> + Send + 'a>>;
}

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker's name, unique among running workers (the lease holder).
    pub name: String,
    /// How long a claimed job is held without a heartbeat.
    pub lease: Duration,
    /// How often a running job's lease is extended.
    pub heartbeat: Duration,
    /// Most jobs of one queue claimed (and run concurrently) at once.
    pub batch: usize,
    /// How long to wait when no job was due.
    pub idle_poll: Duration,
    /// The first retry's delay; each further one doubles it.
    pub backoff_base: Duration,
    /// The longest delay between two attempts.
    pub backoff_max: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: format!("worker-{}", crossline_core::ids::new_random_id("w")),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            batch: 32,
            idle_poll: Duration::from_millis(200),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

/// The delay before attempt `attempt + 1` after `attempt` failed: `base × 2^(attempt−1)`, capped at
/// `max`, of which a random part (up to half) is taken off so that many failed jobs do not all
/// come back at the same moment.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exponent).min(max);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// The worker.
pub struct Worker {
    store: DynStore,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    handlers: BTreeMap<String, Arc<dyn JobHandler>>,
}

impl Worker {
    /// A worker on `store` with no queues yet.
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, config: WorkerConfig) -> Self {
        Worker { store, clock, config, handlers: BTreeMap::new() }
    }

    /// Run the jobs of `queue` with `handler`.
    pub fn handle(mut self, queue: &str, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(queue.to_owned(), handler);
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// One pass: claim the due jobs of every queue and run them. How many jobs ran.
    pub async fn run_once(&self) -> StoreResult<usize> {
        let mut ran = 0;
        for (queue, handler) in &self.handlers {
            let lease = chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(30));
            let jobs = self.store.claim(queue, &self.config.name, self.config.batch, self.clock.now(), lease).await?;
            ran += jobs.len();
            metrics::counter!("crossline_jobs_total", "queue" => queue.clone(), "outcome" => "claimed")
                .increment(jobs.len() as u64);
            let runs = jobs.iter().map(|job| self.run_job(queue, handler.as_ref(), job));
            for result in futures::future::join_all(runs).await {
                result?;
            }
        }
        Ok(ran)
    }

    /// Work until `shutdown` resolves; a job running then is left to its lease.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut last_stats = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if last_stats.elapsed() >= Duration::from_secs(5) {
                self.record_stats().await;
                last_stats = std::time::Instant::now();
            }
            let pause = match self.run_once().await {
                Ok(0) => self.config.idle_poll,
                Ok(_) => Duration::ZERO,
                Err(err) => {
                    tracing::warn!(error = %err, worker = %self.config.name, "claiming jobs failed; trying again");
                    self.config.idle_poll.max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn run_job(&self, queue: &str, handler: &dyn JobHandler, job: &Job) -> StoreResult<()> {
        let beat = async {
            loop {
                tokio::time::sleep(self.config.heartbeat).await;
                let until = self.clock.now() + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
                match self.store.heartbeat(job.id, &self.config.name, until).await {
                    Ok(true) => {}
                    // The lease was lost: another worker may run the job; this run's result will not count.
                    Ok(false) => std::future::pending::<()>().await,
                    Err(err) => tracing::warn!(error = %err, job = job.id, "heartbeat failed"),
                }
            }
        };
        let outcome = tokio::select! {
            outcome = handler.run(job) => outcome,
            () = beat => unreachable!("the heartbeat never ends"),
        };
        let count = |outcome: &'static str| {
            metrics::counter!("crossline_jobs_total", "queue" => queue.to_owned(), "outcome" => outcome).increment(1)
        };
        let name = &self.config.name;
        let kept = match outcome {
            Ok(()) => {
                let kept = self.store.complete(job.id, name).await?;
                if kept {
                    count("succeeded");
                }
                kept
            }
            Err(JobFailure::Permanent(error)) => {
                let kept = self.store.bury(job.id, name, &error).await?;
                if kept {
                    tracing::warn!(queue, job = job.id, error, "job failed for good");
                    count("dead");
                }
                kept
            }
            Err(JobFailure::Retry(error)) | Err(JobFailure::RetryAfter(error, _))
                if job.attempts >= job.max_attempts =>
            {
                let kept = self.store.fail(job.id, name, &error, self.clock.now()).await?;
                if kept {
                    tracing::warn!(
                        queue,
                        job = job.id,
                        error,
                        attempts = job.attempts,
                        "job failed on its last attempt"
                    );
                    count("dead");
                }
                kept
            }
            Err(failure) => {
                let (error, asked) = match failure {
                    JobFailure::RetryAfter(error, delay) => (error, Some(delay)),
                    JobFailure::Retry(error) | JobFailure::Permanent(error) => (error, None),
                };
                let jitter: f64 = rand::random();
                let delay = backoff(job.attempts, self.config.backoff_base, self.config.backoff_max, jitter);
                let delay = asked.map_or(delay, |asked| asked.min(self.config.backoff_max).max(delay));
                let retry_at = self.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
                let kept = self.store.fail(job.id, name, &error, retry_at).await?;
                if kept {
                    count("retried");
                }
                kept
            }
        };
        if !kept {
            // The lease ran out while the job ran and another worker took it over.
            count("lost");
        }
        Ok(())
    }

    async fn record_stats(&self) {
        for queue in self.handlers.keys() {
            let now = self.clock.now();
            let Ok(stats) = self.store.queue_stats(queue, now).await else { continue };
            let label = queue.clone();
            metrics::gauge!("crossline_job_queue_waiting", "queue" => label.clone()).set(stats.waiting as f64);
            metrics::gauge!("crossline_job_queue_running", "queue" => label.clone()).set(stats.running as f64);
            metrics::gauge!("crossline_job_queue_dead", "queue" => label.clone()).set(stats.dead as f64);
            let oldest = stats.oldest_due.map_or(0.0, |due| (now - due).num_milliseconds().max(0) as f64 / 1000.0);
            metrics::gauge!("crossline_job_queue_oldest_seconds", "queue" => label).set(oldest);
        }
    }
}

#[cfg(test)]
mod tests;
