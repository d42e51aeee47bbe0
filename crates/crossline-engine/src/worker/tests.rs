use super::*;
use crossline_store::{JobStatus, NewJob};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A clock the test moves.
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += chrono::Duration::from_std(by).unwrap();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A handler that answers from a script, one answer per run (the last one repeats); `Hang` never
/// finishes (a worker killed mid-job).
#[derive(Clone)]
enum Step {
    Hang,
    Answer(Result<(), JobFailure>),
}

struct Scripted {
    script: Vec<Step>,
    runs: AtomicUsize,
    started: tokio::sync::Notify,
}

impl Scripted {
    fn new(script: Vec<Step>) -> Arc<Self> {
        Arc::new(Scripted { script, runs: AtomicUsize::new(0), started: tokio::sync::Notify::new() })
    }
}

impl JobHandler for Scripted {
    fn run<'a>(&'a self, _job: &'a Job) -> std::pin::Pin<Box<dyn Future<Output = Result<(), JobFailure>> + Send + 'a>> {
        Box::pin(async move {
            let run = self.runs.fetch_add(1, Ordering::SeqCst);
            self.started.notify_one();
            match self.script[run.min(self.script.len() - 1)].clone() {
                Step::Hang => std::future::pending().await,
                Step::Answer(answer) => answer,
            }
        })
    }
}

struct Fixture {
    _dir: Option<tempfile::TempDir>,
    store: DynStore,
    clock: Arc<ManualClock>,
}

impl Fixture {
    /// On a fresh SQLite store.
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore =
            Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let mut fixture = Fixture::on(store);
        fixture._dir = Some(dir);
        fixture
    }

    fn on(store: DynStore) -> Fixture {
        let t0 = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().with_timezone(&Utc);
        Fixture { _dir: None, store, clock: Arc::new(ManualClock(Mutex::new(t0))) }
    }

    async fn enqueue(&self, key: &str, max_attempts: u32) -> i64 {
        let job = NewJob {
            queue: "test".into(),
            workspace_id: None,
            idempotency_key: key.into(),
            payload: serde_json::json!({"key": key}),
            run_at: self.clock.now(),
            max_attempts,
        };
        self.store.enqueue(&job).await.unwrap().id()
    }

    fn worker(&self, name: &str, handler: Arc<Scripted>) -> Worker {
        let config = WorkerConfig {
            name: name.into(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..WorkerConfig::default()
        };
        Worker::new(self.store.clone(), self.clock.clone(), config).handle("test", handler)
    }

    async fn job(&self, id: i64) -> Job {
        self.store.job(id).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn a_job_dropped_mid_run_is_claimed_again_after_its_lease_and_completed_once() {
    dropped_mid_run(Fixture::new().await).await;
}

async fn dropped_mid_run(fixture: Fixture) {
    let id = fixture.enqueue("a", 5).await;
    let handler = Scripted::new(vec![Step::Hang, Step::Answer(Ok(()))]);
    let first = Arc::new(fixture.worker("first", handler.clone()));
    let running = tokio::spawn({
        let first = first.clone();
        async move { first.run_once().await }
    });
    handler.started.notified().await;
    // The first worker dies mid-job: dropped without completing it.
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());

    let second = fixture.worker("second", handler.clone());
    assert_eq!(second.run_once().await.unwrap(), 0, "the job is leased to the first worker");
    fixture.clock.advance(Duration::from_secs(31));
    assert_eq!(second.run_once().await.unwrap(), 1, "after the lease it is claimed again");
    let job = fixture.job(id).await;
    assert_eq!((job.status, job.attempts, handler.runs.load(Ordering::SeqCst)), (JobStatus::Done, 2, 2));
    assert!(!fixture.store.complete(id, "first").await.unwrap(), "the dead worker cannot complete it");
    assert_eq!(second.run_once().await.unwrap(), 0, "completed once");
}

#[tokio::test]
async fn failures_back_off_then_die_and_a_replay_runs_again() {
    back_off_die_replay(Fixture::new().await).await;
}

async fn back_off_die_replay(fixture: Fixture) {
    let id = fixture.enqueue("b", 3).await;
    let failing = Step::Answer(Err(JobFailure::Retry("503 Service Unavailable".into())));
    let handler = Scripted::new(vec![failing.clone(), failing.clone(), failing, Step::Answer(Ok(()))]);
    let worker = fixture.worker("w", handler.clone());

    let start = fixture.clock.now();
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let retry_at = fixture.job(id).await.run_at;
    let first_delay = (retry_at - start).num_milliseconds();
    assert!((500..=1000).contains(&first_delay), "1 s with jitter: {first_delay} ms");
    assert_eq!(worker.run_once().await.unwrap(), 0, "not due yet");
    fixture.clock.advance(Duration::from_secs(1));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let second_delay = (fixture.job(id).await.run_at - fixture.clock.now()).num_milliseconds();
    assert!((1000..=2000).contains(&second_delay), "doubled: {second_delay} ms");
    fixture.clock.advance(Duration::from_secs(2));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let dead = fixture.job(id).await;
    assert_eq!((dead.status, dead.last_error.as_deref()), (JobStatus::Dead, Some("503 Service Unavailable")));
    assert_eq!(fixture.store.dead_jobs("test", None, 10).await.unwrap().len(), 1);

    fixture.clock.advance(Duration::from_secs(3600));
    assert_eq!(worker.run_once().await.unwrap(), 0, "a dead job is not run again by itself");
    assert!(fixture.store.replay(id, fixture.clock.now()).await.unwrap());
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(fixture.job(id).await.status, JobStatus::Done);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn permanent_failures_die_at_once_and_retry_after_is_kept() {
    let fixture = Fixture::new().await;
    let gone = fixture.enqueue("gone", 10).await;
    let worker = fixture.worker("w", Scripted::new(vec![Step::Answer(Err(JobFailure::Permanent("410 Gone".into())))]));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let job = fixture.job(gone).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Dead, 1));

    let slow = fixture.enqueue("slow", 10).await;
    let asked = JobFailure::RetryAfter("429 Too Many Requests".into(), Duration::from_secs(45));
    let worker = fixture.worker("w", Scripted::new(vec![Step::Answer(Err(asked))]));
    let now = fixture.clock.now();
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(fixture.job(slow).await.run_at, now + chrono::Duration::seconds(45), "Retry-After is honoured");
}

/// The same on PostgreSQL, where any number of workers share the queues. Runs when
/// `CROSSLINE_TEST_DATABASE_URL` is set (CI always sets it); says so when it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_holds_on_postgres() {
    let Ok(url) = std::env::var("CROSSLINE_TEST_DATABASE_URL") else {
        eprintln!("CROSSLINE_TEST_DATABASE_URL is not set: the worker tests on PostgreSQL did not run");
        return;
    };
    crossline_store::postgres::drop_schemas(&url, "worker_").await;
    for (index, scenario) in ["dropped", "retries"].into_iter().enumerate() {
        let schema = format!("worker_{}_{index}", std::process::id());
        let store: DynStore =
            Arc::new(crossline_store::postgres::PgStore::connect_in_schema(&url, Some(&schema)).await.unwrap());
        match scenario {
            "dropped" => dropped_mid_run(Fixture::on(store)).await,
            _ => back_off_die_replay(Fixture::on(store)).await,
        }
    }
}

#[tokio::test]
async fn heartbeats_keep_a_long_job() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let job = NewJob {
        queue: "test".into(),
        workspace_id: None,
        idempotency_key: "long".into(),
        payload: serde_json::json!({}),
        run_at: Utc::now(),
        max_attempts: 3,
    };
    let id = store.enqueue(&job).await.unwrap().id();
    struct Slow;
    impl JobHandler for Slow {
        fn run<'a>(
            &'a self,
            _: &'a Job,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), JobFailure>> + Send + 'a>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Ok(())
            })
        }
    }
    let config = WorkerConfig {
        name: "beating".into(),
        // A lease of 1 s renewed every 100 ms: a loaded machine may delay a few heartbeats, not ten.
        lease: Duration::from_millis(1000),
        heartbeat: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let worker = Arc::new(Worker::new(store.clone(), Arc::new(SystemClock), config).handle("test", Arc::new(Slow)));
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_once().await }
    });
    // Well past the first lease, the job is still held: nobody else can claim it.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let stolen = store.claim("test", "thief", 10, Utc::now(), chrono::Duration::seconds(30)).await.unwrap();
    assert!(stolen.is_empty(), "the heartbeat kept the lease");
    assert_eq!(running.await.unwrap().unwrap(), 1);
    assert_eq!(store.job(id).await.unwrap().unwrap().status, JobStatus::Done);
}

#[test]
fn backoff_doubles_is_capped_and_jittered() {
    let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
    assert_eq!(backoff(1, base, max, 0.0), Duration::from_secs(1));
    assert_eq!(backoff(2, base, max, 0.0), Duration::from_secs(2));
    assert_eq!(backoff(5, base, max, 0.0), Duration::from_secs(16));
    assert_eq!(backoff(50, base, max, 0.0), max, "capped, without overflow");
    assert_eq!(backoff(2, base, max, 1.0), Duration::from_secs(1), "at most half is taken off");
}
