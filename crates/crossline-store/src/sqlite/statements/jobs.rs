//! The job queue.

#[allow(unused_imports)]
use super::*;

pub(in crate::sqlite) fn enqueue(conn: &Connection, job: &NewJob, now: DateTime<Utc>) -> StoreResult<EnqueueOutcome> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (queue, workspace_id, idempotency_key, payload, status, max_attempts, run_at, created_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7) ON CONFLICT (queue, idempotency_key) DO NOTHING",
        )?
        .execute(params![
            job.queue,
            job.workspace_id,
            job.idempotency_key,
            serde_json::to_string(&job.payload)?,
            job.max_attempts.max(1),
            to_millis(job.run_at),
            to_millis(now)
        ])?;
    let id: i64 = conn.query_row(
        "SELECT id FROM jobs WHERE queue = ?1 AND idempotency_key = ?2",
        (&job.queue, &job.idempotency_key),
        |row| row.get(0),
    )?;
    Ok(if inserted == 1 { EnqueueOutcome::Created(id) } else { EnqueueOutcome::Duplicate(id) })
}

pub(in crate::sqlite) const JOB_COLUMNS: &str = "id, queue, workspace_id, idempotency_key, payload, status, attempts, max_attempts, run_at, leased_by, leased_until, last_error";

pub(in crate::sqlite) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(Job, String)> {
    Ok((
        Job {
            id: row.get(0)?,
            queue: row.get(1)?,
            workspace_id: row.get(2)?,
            idempotency_key: row.get(3)?,
            payload: Value::Null,
            status: JobStatus::parse(&row.get::<_, String>(5)?),
            attempts: row.get(6)?,
            max_attempts: row.get(7)?,
            run_at: from_millis(row.get(8)?),
            leased_by: row.get(9)?,
            leased_until: row.get::<_, Option<i64>>(10)?.map(from_millis),
            last_error: row.get(11)?,
        },
        row.get(4)?,
    ))
}

pub(in crate::sqlite) fn job(conn: &Connection, id: i64) -> StoreResult<Option<Job>> {
    let row = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()?;
    match row {
        Some((mut job, payload)) => {
            job.payload = parse_json(&payload)?;
            Ok(Some(job))
        }
        None => Ok(None),
    }
}

pub(in crate::sqlite) fn claim(
    conn: &Connection,
    queue: &str,
    worker: &str,
    limit: usize,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> StoreResult<Vec<Job>> {
    let now_ms = to_millis(now);
    let mut candidates = conn.prepare_cached(
        "SELECT id, attempts, max_attempts FROM jobs
         WHERE queue = ?1 AND status = 'pending' AND run_at <= ?2 AND (leased_until IS NULL OR leased_until < ?2)
         ORDER BY run_at, id LIMIT ?3",
    )?;
    let due: Vec<(i64, u32, u32)> = candidates
        .query_map(params![queue, now_ms, limit as i64], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut claimed = Vec::new();
    for (id, attempts, max_attempts) in due {
        if attempts >= max_attempts {
            // The previous holder's lease ran out on its last attempt: it will not be retried.
            conn.execute(
                "UPDATE jobs SET status = 'dead', leased_by = NULL, leased_until = NULL,
                 last_error = coalesce(last_error, 'lease expired on the last attempt') WHERE id = ?1",
                [id],
            )?;
            continue;
        }
        conn.execute(
            "UPDATE jobs SET leased_by = ?2, leased_until = ?3, attempts = attempts + 1 WHERE id = ?1",
            params![id, worker, to_millis(now + lease)],
        )?;
        if let Some(job) = job(conn, id)? {
            claimed.push(job);
        }
    }
    Ok(claimed)
}
