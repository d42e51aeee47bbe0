//! [`JobQueue`] on PostgreSQL (`FOR UPDATE SKIP LOCKED`).

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl JobQueue for PgStore {
    async fn enqueue(&self, job: &NewJob) -> StoreResult<EnqueueOutcome> {
        let client = self.pool.get().await?;
        statements::enqueue(&client, job, Utc::now()).await
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> StoreResult<Vec<Job>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let jobs = statements::claim(&tx, queue, worker, limit, now, lease).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    async fn complete(&self, job_id: i64, worker: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client.prepare_cached("UPDATE jobs SET status = 'done', leased_until = NULL WHERE id = $1 AND leased_by = $2 AND status = 'pending'").await?,
                &[&job_id, &worker],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn fail(&self, job_id: i64, worker: &str, error: &str, retry_at: DateTime<Utc>) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE jobs SET
                    status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
                    run_at = $3, leased_by = NULL, leased_until = NULL, last_error = $4
                 WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
                    )
                    .await?,
                &[&job_id, &worker, &retry_at.timestamp_millis(), &error],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn job(&self, job_id: i64) -> StoreResult<Option<Job>> {
        let client = self.pool.get().await?;
        statements::job(&client, job_id).await
    }

    async fn heartbeat(&self, job_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE jobs SET leased_until = $3 WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
                    )
                    .await?,
                &[&job_id, &worker, &until.timestamp_millis()],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn bury(&self, job_id: i64, worker: &str, error: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE jobs SET status = 'dead', leased_by = NULL, leased_until = NULL, last_error = $3
                 WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
                    )
                    .await?,
                &[&job_id, &worker, &error],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn dead_jobs(&self, queue: &str, workspace_id: Option<&str>, limit: usize) -> StoreResult<Vec<Job>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client.prepare_cached("SELECT id FROM jobs WHERE queue = $1 AND status = 'dead' AND ($2::text IS NULL OR workspace_id = $2)
                 ORDER BY id DESC LIMIT $3").await?,
                &[&queue, &workspace_id, &(limit as i64)],
            )
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.extend(statements::job(&client, row.get(0)).await?);
        }
        Ok(jobs)
    }

    async fn replay(&self, job_id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client.prepare_cached("UPDATE jobs SET status = 'pending', attempts = 0, run_at = $2, leased_by = NULL, leased_until = NULL
                 WHERE id = $1 AND status = 'dead'").await?,
                &[&job_id, &now.timestamp_millis()],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn queue_stats(&self, queue: &str, now: DateTime<Utc>) -> StoreResult<crate::QueueStats> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "SELECT
                    count(*) FILTER (WHERE status = 'pending' AND (leased_until IS NULL OR leased_until < $2)),
                    count(*) FILTER (WHERE status = 'pending' AND leased_until >= $2),
                    count(*) FILTER (WHERE status = 'dead'),
                    min(run_at) FILTER (WHERE status = 'pending' AND run_at <= $2
                                        AND (leased_until IS NULL OR leased_until < $2))
                 FROM jobs WHERE queue = $1",
                    )
                    .await?,
                &[&queue, &now.timestamp_millis()],
            )
            .await?;
        let count = |index: usize| row.get::<_, i64>(index) as u64;
        Ok(crate::QueueStats {
            waiting: count(0),
            running: count(1),
            dead: count(2),
            oldest_due: row.get::<_, Option<i64>>(3).map(crate::from_millis),
        })
    }
}
