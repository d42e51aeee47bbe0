//! Rejected events of batches.

#[allow(unused_imports)]
use super::*;

/// Record a request's rejected events and trim to `retention` (see `crate::rejected`), in one
/// transaction: the per-workspace counter's row lock orders concurrent recordings of one workspace.
pub(in crate::postgres) async fn record_rejected(
    tx: &deadpool_postgres::Transaction<'_>,
    workspace_id: &str,
    events: &[crate::NewRejectedEvent],
    retention: &crate::RejectedRetention,
) -> StoreResult<()> {
    let Some(cutoff) = crate::rejected::age_cutoff(events, retention) else {
        return Ok(());
    };
    let rows: Vec<crate::rejected::RejectedRow<'_>> = events.iter().map(crate::rejected::RejectedRow::of).collect();
    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
    let received: Vec<i64> = rows.iter().map(|row| row.received_at).collect();
    let endpoints: Vec<&str> = rows.iter().map(|row| row.endpoint).collect();
    let indexes: Vec<i64> = rows.iter().map(|row| row.index).collect();
    let message_ids: Vec<Option<&str>> = rows.iter().map(|row| row.message_id).collect();
    let codes: Vec<&str> = rows.iter().map(|row| row.code).collect();
    let messages: Vec<&str> = rows.iter().map(|row| row.message).collect();
    let raws: Vec<&str> = rows.iter().map(|row| row.raw).collect();
    tx.execute(
        &tx.prepare_cached("INSERT INTO rejected_events (workspace_id, id, received_at, endpoint, batch_index, message_id, code, message, raw)
         SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[])").await?,
        &[&workspace_id, &ids, &received, &endpoints, &indexes, &message_ids, &codes, &messages, &raws],
    )
    .await?;
    tx.execute(&tx.prepare_cached("DELETE FROM rejected_events WHERE received_at < $1").await?, &[&cutoff]).await?;
    let plan = crate::rejected::TrimPlan::of(retention);
    let added = events.len() as i64;
    let since_trim: i64 = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO rejected_event_trims (workspace_id, since_trim) VALUES ($1, $3)
             ON CONFLICT (workspace_id) DO UPDATE SET since_trim = rejected_event_trims.since_trim + $2
             RETURNING since_trim",
            )
            .await?,
            &[&workspace_id, &added, &plan.unknown(added)],
        )
        .await?
        .get(0);
    if plan.due(since_trim) {
        // Walks the workspace's newest `keep` rows: once per `slack` rows recorded.
        tx.execute(
            &tx.prepare_cached(
                "DELETE FROM rejected_events WHERE workspace_id = $1 AND id <=
             (SELECT id FROM rejected_events WHERE workspace_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .await?,
            &[&workspace_id, &plan.keep],
        )
        .await?;
        tx.execute(
            &tx.prepare_cached("UPDATE rejected_event_trims SET since_trim = 0 WHERE workspace_id = $1").await?,
            &[&workspace_id],
        )
        .await?;
    }
    Ok(())
}

/// A page of rejected events, newest first.
pub(in crate::postgres) async fn rejected_events(
    client: &impl GenericClient,
    workspace_id: &str,
    limit: usize,
    before: Option<&str>,
) -> StoreResult<crate::RejectedEventPage> {
    let fetch = limit.saturating_add(1) as i64;
    const COLUMNS: &str = "id, received_at, endpoint, batch_index, message_id, code, message, raw";
    // Two statements rather than `($3 IS NULL OR id < $3)`, so both are a range on the primary key.
    let rows = match before {
        Some(cursor) => {
            client
                .query_cached(
                    &format!(
                        "SELECT {COLUMNS} FROM rejected_events WHERE workspace_id = $1 AND id < $3 ORDER BY id DESC LIMIT $2"
                    ),
                    &[&workspace_id, &fetch, &cursor],
                )
                .await?
        }
        None => {
            client
                .query_cached(
                    &format!("SELECT {COLUMNS} FROM rejected_events WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2"),
                    &[&workspace_id, &fetch],
                )
                .await?
        }
    };
    let mut events: Vec<crate::StoredRejectedEvent> = rows
        .into_iter()
        .map(|row| crate::StoredRejectedEvent {
            id: row.get(0),
            received_at: from_millis(row.get(1)),
            endpoint: row.get(2),
            index: u32::try_from(row.get::<_, i64>(3)).unwrap_or(u32::MAX),
            message_id: row.get(4),
            code: row.get(5),
            message: row.get(6),
            raw: row.get(7),
        })
        .collect();
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|event| event.id.clone())
    } else {
        None
    };
    Ok(crate::RejectedEventPage { events, next_cursor })
}

/// How many rejected events the workspace received since `since`.
pub(in crate::postgres) async fn rejected_count_since(
    client: &impl GenericClient,
    workspace_id: &str,
    since: DateTime<Utc>,
) -> StoreResult<u64> {
    let count: i64 = client
        .query_one(
            &client
                .prepare_cached("SELECT count(*) FROM rejected_events WHERE workspace_id = $1 AND received_at >= $2")
                .await?,
            &[&workspace_id, &to_millis(since)],
        )
        .await?
        .get(0);
    Ok(count.max(0) as u64)
}
