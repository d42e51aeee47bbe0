//! [`JobQueue`] on SQLite.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, job: &NewJob) -> StoreResult<EnqueueOutcome> {
        let job = job.clone();
        self.write(move |tx| statements::enqueue(tx, &job, Utc::now())).await
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> StoreResult<Vec<Job>> {
        let (queue, worker) = (queue.to_owned(), worker.to_owned());
        self.write(move |tx| statements::claim(tx, &queue, &worker, limit, now, lease)).await
    }

    async fn complete(&self, job_id: i64, worker: &str) -> StoreResult<bool> {
        let worker = worker.to_owned();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET status = 'done', leased_until = NULL WHERE id = ?1 AND leased_by = ?2 AND status = 'pending'",
                (job_id, &worker),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn fail(&self, job_id: i64, worker: &str, error: &str, retry_at: DateTime<Utc>) -> StoreResult<bool> {
        let (worker, error) = (worker.to_owned(), error.to_owned());
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET
                    status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
                    run_at = ?3, leased_by = NULL, leased_until = NULL, last_error = ?4
                 WHERE id = ?1 AND leased_by = ?2 AND status = 'pending'",
                (job_id, &worker, crate::to_millis(retry_at), &error),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn job(&self, job_id: i64) -> StoreResult<Option<Job>> {
        self.read(move |conn| statements::job(conn, job_id)).await
    }

    async fn heartbeat(&self, job_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<bool> {
        let worker = worker.to_owned();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET leased_until = ?3 WHERE id = ?1 AND leased_by = ?2 AND status = 'pending'",
                (job_id, &worker, crate::to_millis(until)),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn bury(&self, job_id: i64, worker: &str, error: &str) -> StoreResult<bool> {
        let (worker, error) = (worker.to_owned(), error.to_owned());
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET status = 'dead', leased_by = NULL, leased_until = NULL, last_error = ?3
                 WHERE id = ?1 AND leased_by = ?2 AND status = 'pending'",
                (job_id, &worker, &error),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn dead_jobs(&self, queue: &str, workspace_id: Option<&str>, limit: usize) -> StoreResult<Vec<Job>> {
        let (queue, workspace_id) = (queue.to_owned(), workspace_id.map(str::to_owned));
        self.read(move |conn| {
            let ids: Vec<i64> = conn
                .prepare_cached(
                    "SELECT id FROM jobs WHERE queue = ?1 AND status = 'dead' AND (?2 IS NULL OR workspace_id = ?2)
                     ORDER BY id DESC LIMIT ?3",
                )?
                .query_map((&queue, &workspace_id, limit as i64), |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                jobs.extend(statements::job(conn, id)?);
            }
            Ok(jobs)
        })
        .await
    }

    async fn replay(&self, job_id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET status = 'pending', attempts = 0, run_at = ?2, leased_by = NULL, leased_until = NULL
                 WHERE id = ?1 AND status = 'dead'",
                (job_id, crate::to_millis(now)),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn queue_stats(&self, queue: &str, now: DateTime<Utc>) -> StoreResult<crate::QueueStats> {
        let queue = queue.to_owned();
        self.read(move |conn| {
            let now = crate::to_millis(now);
            let (waiting, running, dead, oldest): (i64, i64, i64, Option<i64>) = conn.query_row(
                "SELECT
                    coalesce(sum(status = 'pending' AND (leased_until IS NULL OR leased_until < ?2)), 0),
                    coalesce(sum(status = 'pending' AND leased_until >= ?2), 0),
                    coalesce(sum(status = 'dead'), 0),
                    min(CASE WHEN status = 'pending' AND run_at <= ?2 AND (leased_until IS NULL OR leased_until < ?2)
                        THEN run_at END)
                 FROM jobs WHERE queue = ?1",
                (&queue, now),
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )?;
            Ok(crate::QueueStats {
                waiting: waiting as u64,
                running: running as u64,
                dead: dead as u64,
                oldest_due: oldest.map(crate::from_millis),
            })
        })
        .await
    }
}
