//! Profiles, their timelines, consent, erasure, listing and the overview counts.

#[allow(unused_imports)]
use super::*;

pub(in crate::postgres) fn profile_state_from_row(row: &Row) -> StoreResult<ProfileState> {
    let traits: Value = row.get(1);
    Ok(ProfileState {
        id: row.get(0),
        traits: match traits {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        trait_times: serde_json::from_value::<BTreeMap<String, DateTime<Utc>>>(row.get(2))?,
        consent: serde_json::from_value::<Consent>(row.get(3))?,
        created_at: from_millis(row.get(4)),
        updated_at: from_millis(row.get(5)),
    })
}

pub(in crate::postgres) async fn profile_state(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<ProfileState>> {
    let row = client
        .query_opt(
            &client
                .prepare_cached(
                    "SELECT id, traits, trait_times, consent, created_at, updated_at FROM profiles
             WHERE workspace_id = $1 AND id = $2 AND merged_into IS NULL",
                )
                .await?,
            &[&workspace_id, &id],
        )
        .await?;
    row.as_ref().map(profile_state_from_row).transpose()
}

pub(in crate::postgres) async fn live_profile_id(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<String>> {
    let row = client
        .query_opt(
            &client.prepare_cached("SELECT merged_into FROM profiles WHERE workspace_id = $1 AND id = $2").await?,
            &[&workspace_id, &id],
        )
        .await?;
    Ok(row.map(|row| row.get::<_, Option<String>>(0).unwrap_or_else(|| id.to_owned())))
}

pub(in crate::postgres) async fn identities_of(
    client: &impl GenericClient,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<Vec<Identity>> {
    let rows = client
        .query(
            &client
                .prepare_cached("SELECT kind, value FROM identities WHERE workspace_id = $1 AND profile_id = $2")
                .await?,
            &[&workspace_id, &profile_id],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some(Identity { kind: row.get::<_, &str>(0).parse().ok()?, value: row.get(1) }))
        .collect())
}

/// The live profile `m` is (or was merged into), with its identities: the columns and joins after
/// a `FROM` that names the starting profile row `m`. Each step is a `LATERAL` subquery with `LIMIT 1`,
/// which the planner cannot reorder: the statement's generic plan (kept once the statement has run
/// a few times, possibly made while the tables were nearly empty) is then index probes in this
/// order. As a plain join, it could scan the workspace's profiles and filter them, every call.
macro_rules! live_profile_of_m {
    ($from:literal, $where:literal) => {
        concat!(
            "SELECT p.id, p.traits, p.trait_times, p.consent, p.created_at, p.updated_at, i.kinds, i.vals
             FROM ",
            $from,
            " CROSS JOIN LATERAL (SELECT workspace_id, id, traits, trait_times, consent, created_at, updated_at
                FROM profiles WHERE workspace_id = m.workspace_id AND id = coalesce(m.merged_into, m.id)
                AND merged_into IS NULL LIMIT 1) p
             CROSS JOIN LATERAL (SELECT array_agg(kind) AS kinds, array_agg(value) AS vals FROM identities
                WHERE workspace_id = p.workspace_id AND profile_id = p.id) i
             WHERE ",
            $where
        )
    };
}

/// The live profile `id` is (or was merged into) with its identities: one statement (it is read
/// for every bot turn and every recipient).
pub(in crate::postgres) async fn live_profile(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<Profile>> {
    const SQL: &str = live_profile_of_m!("profiles m", "m.workspace_id = $1 AND m.id = $2");
    let row = client.query_opt_cached(SQL, &[&workspace_id, &id]).await?;
    row.as_ref().map(live_profile_from_row).transpose()
}

/// The live profile that owns an identity, with its identities: one statement.
pub(in crate::postgres) async fn live_profile_by_identity(
    client: &impl GenericClient,
    workspace_id: &str,
    identity: &Identity,
) -> StoreResult<Option<Profile>> {
    const SQL: &str = live_profile_of_m!(
        "identities o CROSS JOIN LATERAL (SELECT workspace_id, id, merged_into FROM profiles
            WHERE workspace_id = o.workspace_id AND id = o.profile_id LIMIT 1) m",
        "o.workspace_id = $1 AND o.kind = $2 AND o.value = $3"
    );
    let row = client.query_opt_cached(SQL, &[&workspace_id, &identity.kind.as_str(), &identity.value]).await?;
    row.as_ref().map(live_profile_from_row).transpose()
}

fn live_profile_from_row(row: &Row) -> StoreResult<Profile> {
    let state = profile_state_from_row(row)?;
    let kinds: Vec<&str> = row.get::<_, Option<Vec<&str>>>(6).unwrap_or_default();
    let values: Vec<String> = row.get::<_, Option<Vec<String>>>(7).unwrap_or_default();
    let identities = kinds
        .into_iter()
        .zip(values)
        .filter_map(|(kind, value)| Some(Identity { kind: kind.parse().ok()?, value }))
        .collect();
    Ok(Profile::from_state(state, identities))
}

pub(in crate::postgres) async fn events(
    client: &impl GenericClient,
    workspace_id: &str,
    profile_id: &str,
    query: &EventQuery,
) -> StoreResult<Vec<StoredEvent>> {
    let Some(live) = live_profile_id(client, workspace_id, profile_id).await? else {
        return Ok(Vec::new());
    };
    let rows = client
        .query(
            &client.prepare_cached("SELECT message_id, profile_id, kind, name, properties, context, timestamp, received_at, channel FROM events
             WHERE workspace_id = $1 AND profile_id = $2 AND ($3::text IS NULL OR kind = $3)
             ORDER BY timestamp DESC, seq DESC LIMIT $4").await?,
            &[&workspace_id, &live, &query.kind, &(query.limit as i64)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| StoredEvent {
            id: row.get(0),
            profile_id: row.get(1),
            kind: row.get(2),
            event: row.get(3),
            properties: object(row.get(4)),
            context: object(row.get(5)),
            timestamp: from_millis(row.get(6)),
            received_at: from_millis(row.get(7)),
            channel: row.get(8),
        })
        .collect())
}

pub(in crate::postgres) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(in crate::postgres) async fn set_consent(
    tx: &deadpool_postgres::Transaction<'_>,
    workspace_id: &str,
    profile_id: &str,
    statements: &[(String, ConsentStatus)],
    source: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Profile>> {
    let Some(live) = live_profile_id(tx, workspace_id, profile_id).await? else {
        return Ok(None);
    };
    let Some(mut state) = profile_state(tx, workspace_id, &live).await? else {
        return Ok(None);
    };
    state.apply_consent(statements, source, now);
    state.updated_at = now;
    upsert_profile(tx, workspace_id, &state).await?;
    let identities = identities_of(tx, workspace_id, &live).await?;
    Ok(Some(Profile::from_state(state, identities)))
}

pub(in crate::postgres) async fn delete_profile(
    tx: &deadpool_postgres::Transaction<'_>,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<bool> {
    let Some(live) = live_profile_id(tx, workspace_id, profile_id).await? else {
        return Ok(false);
    };
    let erased: Vec<(i64, String, i64)> = tx
        .query(
            &tx.prepare_cached("SELECT timestamp / 86400000, channel, count(*) FROM events WHERE workspace_id = $1 AND profile_id = $2 GROUP BY 1, 2").await?,
            &[&workspace_id, &live],
        )
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1), -row.get::<_, i64>(2)))
        .collect();
    let erased: Vec<(i64, &str, i64)> =
        erased.iter().map(|(day, channel, count)| (*day, channel.as_str(), *count)).collect();
    add_event_counts(tx, ADD_EVENT_COUNTS, workspace_id, &erased).await?;
    // Each statement takes the workspace ($1) and the live profile ($2), in this order: its events;
    // its conversations and what hangs off them; its engagement (its addresses' states, its
    // deliveries and in-app messages — also those planned under an id merged into it — its segment
    // memberships); its identities, its tombstones, the profile.
    const OF_ITS_CONVERSATIONS: &str =
        "conversation_id IN (SELECT id FROM conversations WHERE workspace_id = $1 AND profile_id = $2)";
    let statements = [
        "DELETE FROM events WHERE workspace_id = $1 AND profile_id = $2".to_owned(),
        format!("DELETE FROM conversation_messages WHERE workspace_id = $1 AND {OF_ITS_CONVERSATIONS}"),
        format!("DELETE FROM conversation_waits WHERE workspace_id = $1 AND {OF_ITS_CONVERSATIONS}"),
        format!("DELETE FROM conversation_snoozes WHERE workspace_id = $1 AND {OF_ITS_CONVERSATIONS}"),
        format!("DELETE FROM call_holds WHERE workspace_id = $1 AND {OF_ITS_CONVERSATIONS}"),
        format!("DELETE FROM conversation_notes WHERE workspace_id = $1 AND {OF_ITS_CONVERSATIONS}"),
        "DELETE FROM conversations WHERE workspace_id = $1 AND profile_id = $2".to_owned(),
        "DELETE FROM address_states WHERE workspace_id = $1 AND (kind, value) IN
            (SELECT kind, value FROM identities WHERE workspace_id = $1 AND profile_id = $2)"
            .to_owned(),
        "DELETE FROM address_states WHERE workspace_id = $1 AND (kind, value) IN
            (SELECT kind, value FROM push_addresses WHERE workspace_id = $1 AND profile_id = $2)"
            .to_owned(),
        "DELETE FROM push_addresses WHERE workspace_id = $1 AND profile_id = $2".to_owned(),
        "DELETE FROM deliveries WHERE workspace_id = $1 AND (profile_id = $2 OR profile_id IN
            (SELECT id FROM profiles WHERE workspace_id = $1 AND merged_into = $2))"
            .to_owned(),
        "DELETE FROM segment_members WHERE workspace_id = $1 AND profile_id = $2".to_owned(),
        "DELETE FROM in_app_messages WHERE workspace_id = $1 AND (profile_id = $2 OR profile_id IN
            (SELECT id FROM profiles WHERE workspace_id = $1 AND merged_into = $2))"
            .to_owned(),
        "DELETE FROM identities WHERE workspace_id = $1 AND profile_id = $2".to_owned(),
        "DELETE FROM profiles WHERE workspace_id = $1 AND merged_into = $2".to_owned(),
        "DELETE FROM profiles WHERE workspace_id = $1 AND id = $2".to_owned(),
    ];
    for statement in &statements {
        tx.execute_cached(statement, &[&workspace_id, &live]).await?;
    }
    Ok(true)
}

pub(in crate::postgres) async fn list_profiles(
    client: &impl GenericClient,
    workspace_id: &str,
    query: &ProfileQuery,
) -> StoreResult<ProfilePage> {
    let mut sql = String::from("SELECT id FROM profiles WHERE workspace_id = $1 AND merged_into IS NULL");
    let mut owned: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(workspace_id.to_owned())];
    if let Some(after) = &query.after {
        owned.push(Box::new(after.clone()));
        sql.push_str(&format!(" AND id > ${}", owned.len()));
    }
    if let Some((name, value)) = &query.trait_equals {
        owned.push(Box::new(name.clone()));
        owned.push(Box::new(value.clone()));
        sql.push_str(&format!(" AND traits -> ${} = ${}::jsonb", owned.len() - 1, owned.len()));
    }
    if let Some(text) = &query.text {
        let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        owned.push(Box::new(format!("%{escaped}%")));
        owned.push(Box::new(format!("{escaped}%")));
        owned.push(Box::new(text.clone()));
        sql.push_str(&format!(
            " AND (lower(traits::text) LIKE ${a} OR id = ${c} OR EXISTS (SELECT 1 FROM identities i
                WHERE i.workspace_id = profiles.workspace_id AND i.profile_id = profiles.id AND lower(i.value) LIKE ${b}))",
            a = owned.len() - 2,
            b = owned.len() - 1,
            c = owned.len(),
        ));
    }
    let limit = query.limit.clamp(1, 1000);
    sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let params: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|value| &**value as &(dyn ToSql + Sync)).collect();
    let mut ids: Vec<String> = client.query(&sql, &params).await?.into_iter().map(|row| row.get(0)).collect();
    let next_cursor = if ids.len() > limit {
        ids.truncate(limit);
        ids.last().cloned()
    } else {
        None
    };
    let mut profiles = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(profile) = live_profile(client, workspace_id, &id).await? {
            profiles.push(profile);
        }
    }
    Ok(ProfilePage { profiles, next_cursor })
}

pub(in crate::postgres) async fn workspace_stats(
    client: &impl GenericClient,
    workspace_id: &str,
    days: u32,
    now: DateTime<Utc>,
) -> StoreResult<WorkspaceStats> {
    let profiles: i64 = client
        .query_one(
            &client
                .prepare_cached("SELECT count(*) FROM profiles WHERE workspace_id = $1 AND merged_into IS NULL")
                .await?,
            &[&workspace_id],
        )
        .await?
        .get(0);
    let events: i64 = client
        .query_one(
            &client
                .prepare_cached("SELECT coalesce(sum(count), 0)::int8 FROM event_counts WHERE workspace_id = $1")
                .await?,
            &[&workspace_id],
        )
        .await?
        .get(0);
    let (first_day, _) = window_start(now, days);
    let mut per_day = HashMap::new();
    for row in client
        .query(
            &client
                .prepare_cached(
                    "SELECT day, sum(count)::int8 FROM event_counts WHERE workspace_id = $1 AND day >= $2 GROUP BY day",
                )
                .await?,
            &[&workspace_id, &first_day],
        )
        .await?
    {
        per_day.insert(row.get::<_, i64>(0), row.get::<_, i64>(1) as u64);
    }
    let per_channel = client
        .query(
            &client
                .prepare_cached(
                    "SELECT channel, sum(count)::int8 FROM event_counts WHERE workspace_id = $1 AND day >= $2
             GROUP BY channel HAVING sum(count) > 0 ORDER BY 2 DESC, 1",
                )
                .await?,
            &[&workspace_id, &first_day],
        )
        .await?
        .into_iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64))
        .collect();
    Ok(WorkspaceStats {
        profiles: profiles as u64,
        events: events as u64,
        events_per_day: fill_days(first_day, days, &per_day),
        events_per_channel: per_channel,
    })
}
