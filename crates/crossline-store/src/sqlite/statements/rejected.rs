//! Rejected events of batches.

#[allow(unused_imports)]
use super::*;

/// Record a request's rejected events and trim to `retention` (see `crate::rejected`).
pub(in crate::sqlite) fn record_rejected(
    conn: &Connection,
    workspace_id: &str,
    events: &[crate::NewRejectedEvent],
    retention: &crate::RejectedRetention,
) -> StoreResult<()> {
    let Some(cutoff) = crate::rejected::age_cutoff(events, retention) else {
        return Ok(());
    };
    let mut insert = conn.prepare_cached(INSERT_REJECTED)?;
    for event in events {
        let row = crate::rejected::RejectedRow::of(event);
        insert.execute(params![
            workspace_id,
            row.id,
            row.received_at,
            row.endpoint,
            row.index,
            row.message_id,
            row.code,
            row.message,
            row.raw
        ])?;
    }
    conn.prepare_cached(TRIM_REJECTED_BY_AGE)?.execute([cutoff])?;
    let plan = crate::rejected::TrimPlan::of(retention);
    let added = events.len() as i64;
    let since_trim: i64 = conn
        .prepare_cached(COUNT_REJECTED_ADDED)?
        .query_row(params![workspace_id, added, plan.unknown(added)], |row| row.get(0))?;
    if plan.due(since_trim) {
        conn.prepare_cached(TRIM_REJECTED_BY_COUNT)?.execute(params![workspace_id, plan.keep])?;
        conn.prepare_cached(RESET_REJECTED_COUNT)?.execute([workspace_id])?;
    }
    Ok(())
}

/// A page of rejected events, newest first.
pub(in crate::sqlite) fn rejected_events(
    conn: &Connection,
    workspace_id: &str,
    limit: usize,
    before: Option<&str>,
) -> StoreResult<crate::RejectedEventPage> {
    let fetch = limit.saturating_add(1) as i64;
    let from_row = |row: &Row<'_>| {
        Ok(crate::StoredRejectedEvent {
            id: row.get(0)?,
            received_at: from_millis(row.get(1)?),
            endpoint: row.get(2)?,
            index: u32::try_from(row.get::<_, i64>(3)?).unwrap_or(u32::MAX),
            message_id: row.get(4)?,
            code: row.get(5)?,
            message: row.get(6)?,
            raw: row.get(7)?,
        })
    };
    let mut events: Vec<crate::StoredRejectedEvent> = match before {
        Some(cursor) => conn
            .prepare_cached(REJECTED_PAGE_BEFORE)?
            .query_map(params![workspace_id, fetch, cursor], from_row)?
            .collect::<Result<_, _>>()?,
        None => conn
            .prepare_cached(REJECTED_PAGE)?
            .query_map(params![workspace_id, fetch], from_row)?
            .collect::<Result<_, _>>()?,
    };
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|event| event.id.clone())
    } else {
        None
    };
    Ok(crate::RejectedEventPage { events, next_cursor })
}

/// How many rejected events the workspace received since `since`.
pub(in crate::sqlite) fn rejected_count_since(
    conn: &Connection,
    workspace_id: &str,
    since: DateTime<Utc>,
) -> StoreResult<u64> {
    let count: i64 =
        conn.prepare_cached(REJECTED_SINCE)?.query_row(params![workspace_id, to_millis(since)], |row| row.get(0))?;
    Ok(count.max(0) as u64)
}
