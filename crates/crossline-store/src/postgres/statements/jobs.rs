//! The job queue (`FOR UPDATE SKIP LOCKED`).

#[allow(unused_imports)]
use super::*;

pub(in crate::postgres) async fn enqueue(
    client: &impl GenericClient,
    job: &NewJob,
    now: DateTime<Utc>,
) -> StoreResult<EnqueueOutcome> {
    let inserted = client
        .query_opt(
            &client.prepare_cached("INSERT INTO jobs (queue, workspace_id, idempotency_key, payload, status, max_attempts, run_at, created_at)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7) ON CONFLICT (queue, idempotency_key) DO NOTHING RETURNING id").await?,
            &[
                &job.queue,
                &job.workspace_id,
                &job.idempotency_key,
                &job.payload,
                &(job.max_attempts.max(1) as i32),
                &to_millis(job.run_at),
                &to_millis(now),
            ],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok(EnqueueOutcome::Created(row.get(0)));
    }
    let row = client
        .query_one(
            &client.prepare_cached("SELECT id FROM jobs WHERE queue = $1 AND idempotency_key = $2").await?,
            &[&job.queue, &job.idempotency_key],
        )
        .await?;
    Ok(EnqueueOutcome::Duplicate(row.get(0)))
}

pub(in crate::postgres) const JOB_COLUMNS: &str = "id, queue, workspace_id, idempotency_key, payload, status, attempts, max_attempts, run_at, leased_by, leased_until, last_error";

pub(in crate::postgres) fn job_from_row(row: &Row) -> Job {
    Job {
        id: row.get(0),
        queue: row.get(1),
        workspace_id: row.get(2),
        idempotency_key: row.get(3),
        payload: row.get(4),
        status: JobStatus::parse(row.get(5)),
        attempts: row.get::<_, i32>(6) as u32,
        max_attempts: row.get::<_, i32>(7) as u32,
        run_at: from_millis(row.get(8)),
        leased_by: row.get(9),
        leased_until: row.get::<_, Option<i64>>(10).map(from_millis),
        last_error: row.get(11),
    }
}

pub(in crate::postgres) async fn job(client: &impl GenericClient, id: i64) -> StoreResult<Option<Job>> {
    let row = client.query_opt_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), &[&id]).await?;
    Ok(row.as_ref().map(job_from_row))
}

pub(in crate::postgres) async fn claim(
    tx: &deadpool_postgres::Transaction<'_>,
    queue: &str,
    worker: &str,
    limit: usize,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> StoreResult<Vec<Job>> {
    let now_ms = to_millis(now);
    // SKIP LOCKED lets several nodes claim from one queue without waiting on each other.
    tx.execute(
        &tx.prepare_cached(
            "UPDATE jobs SET status = 'dead', leased_by = NULL, leased_until = NULL,
            last_error = coalesce(last_error, 'lease expired on the last attempt')
         WHERE id IN (SELECT id FROM jobs WHERE queue = $1 AND status = 'pending' AND run_at <= $2
                      AND leased_until IS NOT NULL AND leased_until < $2 AND attempts >= max_attempts
                      FOR UPDATE SKIP LOCKED)",
        )
        .await?,
        &[&queue, &now_ms],
    )
    .await?;
    let rows = tx
        .query_cached(
            &format!(
                "UPDATE jobs SET leased_by = $3, leased_until = $4, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM jobs WHERE queue = $1 AND status = 'pending' AND run_at <= $2
                              AND (leased_until IS NULL OR leased_until < $2) AND attempts < max_attempts
                              ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
                 RETURNING {JOB_COLUMNS}"
            ),
            &[&queue, &now_ms, &worker, &to_millis(now + lease), &(limit as i64)],
        )
        .await?;
    let mut jobs: Vec<Job> = rows.iter().map(job_from_row).collect();
    jobs.sort_by_key(|job| (job.run_at, job.id));
    Ok(jobs)
}
