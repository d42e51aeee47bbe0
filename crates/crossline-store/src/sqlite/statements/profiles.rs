//! Profiles, their timelines, consent, erasure, listing and the overview counts.

#[allow(unused_imports)]
use super::*;

pub(in crate::sqlite) fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    Ok(serde_json::from_str(text)?)
}

/// The state of a live (not merged-away) profile.
pub(in crate::sqlite) fn profile_state(
    conn: &Connection,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<ProfileState>> {
    let row = conn
        .prepare_cached(PROFILE_STATE)?
        .query_row((workspace_id, id), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get(3)?, row.get(4)?))
        })
        .optional()?;
    let Some((traits, trait_times, consent, created_at, updated_at)) = row else {
        return Ok(None);
    };
    Ok(Some(ProfileState {
        id: id.to_owned(),
        traits: parse_json::<Map<String, Value>>(&traits)?,
        trait_times: parse_json::<BTreeMap<String, DateTime<Utc>>>(&trait_times)?,
        consent: parse_json::<Consent>(&consent)?,
        created_at: from_millis(created_at),
        updated_at: from_millis(updated_at),
    }))
}

pub(in crate::sqlite) fn identities_of(
    conn: &Connection,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<Vec<Identity>> {
    let mut statement = conn.prepare_cached(IDENTITIES_OF)?;
    let rows = statement
        .query_map((workspace_id, profile_id), |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
    let mut identities = Vec::new();
    for row in rows {
        let (kind, value) = row?;
        if let Ok(kind) = kind.parse::<IdentityKind>() {
            identities.push(Identity { kind, value });
        }
    }
    Ok(identities)
}

/// The live profile an id denotes, following a merge tombstone.
pub(in crate::sqlite) fn live_profile_id(
    conn: &Connection,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<String>> {
    let merged_into: Option<Option<String>> =
        conn.prepare_cached(MERGED_INTO)?.query_row((workspace_id, id), |row| row.get(0)).optional()?;
    Ok(match merged_into {
        None => None,
        Some(None) => Some(id.to_owned()),
        Some(Some(survivor)) => Some(survivor),
    })
}

pub(in crate::sqlite) fn live_profile(conn: &Connection, workspace_id: &str, id: &str) -> StoreResult<Option<Profile>> {
    let Some(live) = live_profile_id(conn, workspace_id, id)? else {
        return Ok(None);
    };
    let Some(state) = profile_state(conn, workspace_id, &live)? else {
        return Ok(None);
    };
    let identities = identities_of(conn, workspace_id, &live)?;
    Ok(Some(Profile::from_state(state, identities)))
}

/// A timeline row with its `(timestamp, seq)`, and its properties and context as JSON text.
pub(in crate::sqlite) type TimelineRow = ((i64, i64), StoredEvent, String, String);

pub(in crate::sqlite) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<TimelineRow> {
    let timestamp = row.get(6)?;
    Ok((
        (timestamp, row.get(9)?),
        StoredEvent {
            id: row.get(0)?,
            profile_id: row.get(1)?,
            kind: row.get(2)?,
            event: row.get(3)?,
            properties: Map::new(),
            context: Map::new(),
            timestamp: from_millis(timestamp),
            received_at: from_millis(row.get(7)?),
            channel: row.get(8)?,
        },
        row.get(4)?,
        row.get(5)?,
    ))
}

/// The ids whose events are a live profile's: its own and every id merged into it.
pub(in crate::sqlite) fn filed_under(conn: &Connection, workspace_id: &str, live: &str) -> StoreResult<Vec<String>> {
    let mut ids = vec![live.to_owned()];
    let mut statement = conn.prepare_cached(MERGED_IDS)?;
    for id in statement.query_map((workspace_id, live), |row| row.get(0))? {
        ids.push(id?);
    }
    Ok(ids)
}

/// A profile's events, newest first: those in the `timeline` table and those still in the
/// writer's tail, under its own id and every id merged into it, from one snapshot taken while the
/// tail is locked (see `timeline.rs`).
pub(in crate::sqlite) fn events(
    conn: &Connection,
    timeline: &Timeline,
    workspace_id: &str,
    profile_id: &str,
    query: &EventQuery,
) -> StoreResult<Vec<StoredEvent>> {
    let read = conn.unchecked_transaction()?;
    let (live, ids, recent) = {
        let tail = timeline.lock();
        let Some(live) = live_profile_id(&read, workspace_id, profile_id)? else {
            return Ok(Vec::new());
        };
        let ids: Vec<(String, ProfileKey)> = filed_under(&read, workspace_id, &live)?
            .into_iter()
            .map(|id| {
                let key = ProfileKey::of(&id);
                (id, key)
            })
            .collect();
        let recent: Vec<Vec<(i64, i64)>> = ids.iter().map(|(_, key)| tail.entries_of(key)).collect();
        (live, ids, recent)
    };
    let limit = query.limit;
    let mut rows: Vec<TimelineRow> = Vec::new();
    let mut statement = read.prepare_cached(TIMELINE)?;
    let mut by_seq = read.prepare_cached(EVENT_BY_SEQ)?;
    for ((id, key), mut recent) in ids.iter().zip(recent) {
        rows.extend(
            statement
                .query_map(params![workspace_id, id, query.kind, limit as i64, key], event_from_row)?
                .collect::<Result<Vec<_>, _>>()?,
        );
        recent.sort_unstable_by(|a, b| b.cmp(a));
        let mut found = 0;
        for (_, seq) in recent {
            if found == limit {
                break;
            }
            if let Some(row) =
                by_seq.query_row(params![workspace_id, id, query.kind, seq], event_from_row).optional()?
            {
                rows.push(row);
                found += 1;
            }
        }
    }
    // A flush under way puts entries in the table before it drops them from the tail.
    rows.sort_unstable_by_key(|row| std::cmp::Reverse(row.0));
    rows.dedup_by_key(|row| row.0);
    rows.truncate(limit);
    rows.into_iter()
        .map(|(_, mut event, properties, context)| {
            event.profile_id.clone_from(&live);
            event.properties = parse_json(&properties)?;
            event.context = parse_json(&context)?;
            Ok(event)
        })
        .collect()
}

pub(in crate::sqlite) fn set_consent(
    conn: &Connection,
    workspace_id: &str,
    profile_id: &str,
    statements: &[(String, ConsentStatus)],
    source: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Profile>> {
    let Some(live) = live_profile_id(conn, workspace_id, profile_id)? else {
        return Ok(None);
    };
    let Some(mut state) = profile_state(conn, workspace_id, &live)? else {
        return Ok(None);
    };
    state.apply_consent(statements, source, now);
    state.updated_at = now;
    upsert_profile(conn, workspace_id, &state)?;
    let identities = identities_of(conn, workspace_id, &live)?;
    Ok(Some(Profile::from_state(state, identities)))
}

pub(in crate::sqlite) fn delete_profile(
    conn: &Connection,
    pending: &mut Pending,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<bool> {
    let Some(live) = live_profile_id(conn, workspace_id, profile_id)? else {
        return Ok(false);
    };
    let mut erased: HashMap<(i64, String), i64> = HashMap::new();
    for id in filed_under(conn, workspace_id, &live)? {
        let key = ProfileKey::of(&id);
        let mut seqs: Vec<i64> =
            conn.prepare_cached(TIMELINE_SEQS)?.query_map([&key], |row| row.get(0))?.collect::<Result<_, _>>()?;
        seqs.extend(pending.erase(&key));
        seqs.sort_unstable();
        seqs.dedup();
        let mut erase = conn.prepare_cached(ERASE_EVENT)?;
        for seq in seqs {
            let row = erase.query_row((seq, workspace_id, &id), |row| Ok((row.get(0)?, row.get(1)?))).optional()?;
            if let Some((day, channel)) = row {
                *erased.entry((day, channel)).or_default() -= 1;
            }
        }
        conn.prepare_cached(DELETE_TIMELINE)?.execute([&key])?;
    }
    let erased: Vec<(i64, &str, i64)> =
        erased.iter().map(|((day, channel), count)| (*day, channel.as_str(), *count)).collect();
    add_event_counts(conn, workspace_id, &erased)?;
    conn.execute(DELETE_CONVERSATION_MESSAGES, (workspace_id, &live))?;
    conn.execute(DELETE_CONVERSATION_NOTES, (workspace_id, &live))?;
    conn.execute(DELETE_CONVERSATION_WAITS, (workspace_id, &live))?;
    conn.execute(DELETE_CONVERSATION_SNOOZES, (workspace_id, &live))?;
    conn.execute(DELETE_CALL_HOLDS, (workspace_id, &live))?;
    conn.execute(DELETE_CONVERSATIONS, (workspace_id, &live))?;
    for statement in ERASE_ENGAGEMENT {
        conn.execute(statement, (workspace_id, &live))?;
    }
    conn.execute(DELETE_IDENTITIES, (workspace_id, &live))?;
    conn.execute(DELETE_TOMBSTONES, (workspace_id, &live))?;
    conn.execute(DELETE_PROFILE, (workspace_id, &live))?;
    Ok(true)
}

/// A JSON path naming one top-level key, quoted so keys with dots or spaces work.
pub(in crate::sqlite) fn trait_path(name: &str) -> String {
    format!("$.\"{}\"", name.replace('"', ""))
}

pub(in crate::sqlite) fn list_profiles(
    conn: &Connection,
    workspace_id: &str,
    query: &ProfileQuery,
) -> StoreResult<ProfilePage> {
    let mut sql = String::from("SELECT id FROM profiles WHERE workspace_id = ?1 AND merged_into IS NULL");
    let mut values: Vec<rusqlite::types::Value> = vec![workspace_id.to_owned().into()];
    if let Some(after) = &query.after {
        values.push(after.clone().into());
        sql.push_str(&format!(" AND id > ?{}", values.len()));
    }
    if let Some((name, value)) = &query.trait_equals {
        values.push(trait_path(name).into());
        values.push(serde_json::to_string(value)?.into());
        sql.push_str(&format!(
            " AND json_extract(traits, ?{}) = json_extract(?{}, '$')",
            values.len() - 1,
            values.len()
        ));
    }
    if let Some(text) = &query.text {
        let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        values.push(format!("%{escaped}%").into());
        values.push(format!("{escaped}%").into());
        sql.push_str(&format!(
            " AND (lower(traits) LIKE ?{a} ESCAPE '\\' OR id = ?{c} OR EXISTS (SELECT 1 FROM identities i
                WHERE i.workspace_id = profiles.workspace_id AND i.profile_id = profiles.id AND lower(i.value) LIKE ?{b} ESCAPE '\\'))",
            a = values.len() - 1,
            b = values.len(),
            c = values.len() + 1,
        ));
        values.push(text.clone().into());
    }
    let limit = query.limit.clamp(1, 1000);
    sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let mut statement = conn.prepare(&sql)?;
    let mut ids: Vec<String> =
        statement.query_map(rusqlite::params_from_iter(values), |row| row.get(0))?.collect::<Result<_, _>>()?;
    let next_cursor = if ids.len() > limit {
        ids.truncate(limit);
        ids.last().cloned()
    } else {
        None
    };
    let mut profiles = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(profile) = live_profile(conn, workspace_id, &id)? {
            profiles.push(profile);
        }
    }
    Ok(ProfilePage { profiles, next_cursor })
}

pub(in crate::sqlite) fn workspace_stats(
    conn: &Connection,
    workspace_id: &str,
    days: u32,
    now: DateTime<Utc>,
) -> StoreResult<WorkspaceStats> {
    let profiles: i64 = conn.query_row(
        "SELECT count(*) FROM profiles WHERE workspace_id = ?1 AND merged_into IS NULL",
        [workspace_id],
        |row| row.get(0),
    )?;
    let events: i64 = conn.query_row(
        "SELECT coalesce(sum(count), 0) FROM event_counts WHERE workspace_id = ?1",
        [workspace_id],
        |row| row.get(0),
    )?;
    let (first_day, _) = window_start(now, days);
    let mut per_day: HashMap<i64, u64> = HashMap::new();
    let mut statement = conn.prepare_cached(
        "SELECT day, sum(count) FROM event_counts WHERE workspace_id = ?1 AND day >= ?2 GROUP BY day",
    )?;
    for row in
        statement.query_map((workspace_id, first_day), |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?
    {
        let (day, count) = row?;
        per_day.insert(day, count as u64);
    }
    let mut per_channel = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT channel, sum(count) FROM event_counts WHERE workspace_id = ?1 AND day >= ?2
         GROUP BY channel HAVING sum(count) > 0 ORDER BY 2 DESC, 1",
    )?;
    for row in
        statement.query_map((workspace_id, first_day), |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?
    {
        let (channel, count) = row?;
        per_channel.push((channel, count as u64));
    }
    Ok(WorkspaceStats {
        profiles: profiles as u64,
        events: events as u64,
        events_per_day: fill_days(first_day, days, &per_day),
        events_per_channel: per_channel,
    })
}

pub(in crate::sqlite) fn event_exists(conn: &Connection, workspace_id: &str, message_id: &str) -> StoreResult<bool> {
    Ok(conn.prepare_cached(EVENT_EXISTS)?.exists((workspace_id, message_id))?)
}
