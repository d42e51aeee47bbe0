//! The statements identity resolution runs through (`IngestTx`), and what ingestion writes.

#[allow(unused_imports)]
use super::*;

/// The ingest statements over one transaction (or savepoint).
pub(in crate::sqlite) struct SqliteTx<'a> {
    pub(in crate::sqlite) conn: &'a Connection,
    /// `properties` and `context` as JSON text by message id, prepared off the writer thread.
    pub(in crate::sqlite) json: foldhash::HashMap<&'a str, (&'a str, &'a str)>,
    /// The writer's identity owners, kept up to date with what this transaction reads and writes.
    /// The caller clears it if the transaction does not commit.
    pub(in crate::sqlite) cache: Option<&'a mut IdentityCache>,
    /// Event numbers and the timeline changes the writer applies when this transaction commits.
    pub(in crate::sqlite) pending: &'a mut Pending,
}

impl IngestTx for SqliteTx<'_> {
    async fn existing_message_ids(
        &mut self,
        workspace_id: &str,
        ids: &[&str],
    ) -> StoreResult<foldhash::HashSet<String>> {
        let mut statement = self.conn.prepare_cached(EVENT_EXISTS)?;
        let mut existing = foldhash::HashSet::default();
        for id in ids {
            if statement.exists((workspace_id, id))? {
                existing.insert((*id).to_owned());
            }
        }
        Ok(existing)
    }

    async fn identity_owners(
        &mut self,
        workspace_id: &str,
        identities: &[Identity],
    ) -> StoreResult<foldhash::HashMap<Identity, String>> {
        let mut owners = foldhash::HashMap::default();
        for identity in identities {
            if let Some(owner) = self.cache.as_mut().and_then(|cache| cache.get(workspace_id, identity)) {
                owners.insert(identity.clone(), owner.as_ref().to_owned());
            } else if let Some(owner) = identity_owner(self.conn, workspace_id, identity)? {
                if let Some(cache) = self.cache.as_mut() {
                    cache.insert(workspace_id, identity, &owner);
                }
                owners.insert(identity.clone(), owner);
            }
        }
        Ok(owners)
    }

    async fn load_profiles(&mut self, workspace_id: &str, ids: &[String]) -> StoreResult<Vec<ProfileState>> {
        let mut profiles = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(state) = profile_state(self.conn, workspace_id, id)? {
                profiles.push(state);
            }
        }
        Ok(profiles)
    }

    async fn merge_stored_profile(&mut self, workspace_id: &str, survivor: &str, loser: &str) -> StoreResult<()> {
        let conn = self.conn;
        let mut moved = conn.prepare_cached(MOVE_IDENTITIES)?;
        let mut rows = moved.query((survivor, workspace_id, loser))?;
        while let Some(row) = rows.next()? {
            // The survivor owns the loser's identities now; the writer's cache learns it here.
            if let (Some(cache), Ok(kind)) = (self.cache.as_mut(), row.get::<_, String>(0)?.parse::<IdentityKind>()) {
                cache.insert(workspace_id, &Identity { kind, value: row.get(1)? }, survivor);
            }
        }
        drop(rows);
        drop(moved);
        // The loser's events stay filed under its id, which the tombstone below resolves.
        conn.prepare_cached(MOVE_CONVERSATIONS)?.execute((survivor, workspace_id, loser))?;
        conn.prepare_cached(MOVE_MEMBERSHIPS)?.execute((survivor, workspace_id, loser))?;
        conn.prepare_cached(DROP_MEMBERSHIPS)?.execute((workspace_id, loser))?;
        // Push addresses follow the person, and the survivor keeps its newest ten.
        if conn.prepare_cached(MOVE_PUSH_ADDRESSES)?.execute((survivor, workspace_id, loser))? > 0 {
            crate::sqlite::engage::trim_push_addresses(conn, workspace_id, survivor)?;
        }
        // Two statements, not one with OR: an OR cannot use the partial index and scans every profile.
        // INDEXED BY because SQLite 3.50's planner otherwise walks the whole workspace's primary-key
        // range when an UPDATE changes a column of the better index (measured: 1.4 ms per merge).
        conn.prepare_cached(REPOINT_TOMBSTONES)?.execute((survivor, workspace_id, loser))?;
        conn.prepare_cached(TOMBSTONE)?.execute((survivor, workspace_id, loser))?;
        Ok(())
    }

    async fn insert_identities(
        &mut self,
        workspace_id: &str,
        identities: &[(Identity, String)],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO identities (workspace_id, kind, value, profile_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (identity, profile_id) in identities {
            statement.execute((workspace_id, identity.kind.as_str(), &identity.value, profile_id, to_millis(now)))?;
            if let Some(cache) = self.cache.as_mut() {
                cache.insert(workspace_id, identity, profile_id);
            }
        }
        Ok(())
    }

    async fn insert_events(&mut self, workspace_id: &str, rows: &[EventRow<'_>]) -> StoreResult<()> {
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO events (workspace_id, message_id, profile_id, kind, name, channel, properties, context, timestamp, received_at, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for row in rows {
            let (properties, context) = match self.json.get(row.message_id.as_str()) {
                Some((properties, context)) => (Cow::Borrowed(*properties), Cow::Borrowed(*context)),
                None => (
                    Cow::Owned(serde_json::to_string(&*row.properties)?),
                    Cow::Owned(serde_json::to_string(&*row.context)?),
                ),
            };
            let timestamp = to_millis(row.timestamp);
            let seq = self.pending.add(&row.profile_id, timestamp);
            statement.execute(params![
                workspace_id,
                row.message_id,
                row.profile_id,
                row.kind.as_str(),
                row.name,
                row.channel,
                properties,
                context,
                timestamp,
                to_millis(row.received_at),
                seq,
            ])?;
        }
        Ok(())
    }

    async fn add_event_counts(&mut self, workspace_id: &str, counts: &[(i64, &str, i64)]) -> StoreResult<()> {
        add_event_counts(self.conn, workspace_id, counts)
    }

    async fn upsert_profiles(&mut self, workspace_id: &str, profiles: &[&ProfileState]) -> StoreResult<()> {
        for profile in profiles {
            upsert_profile(self.conn, workspace_id, profile)?;
        }
        Ok(())
    }

    async fn identity_counts(
        &mut self,
        workspace_id: &str,
        profile_id: &str,
    ) -> StoreResult<Vec<(IdentityKind, usize)>> {
        let mut statement = self.conn.prepare_cached(IDENTITY_COUNTS)?;
        let rows = statement
            .query_map((profile_id, workspace_id), |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (kind, count) = row?;
            // A kind this build does not know cannot take part in a limit it checks.
            if let Ok(kind) = kind.parse::<IdentityKind>() {
                counts.push((kind, usize::try_from(count).unwrap_or(usize::MAX)));
            }
        }
        Ok(counts)
    }
}

/// Identities per kind of one profile, for the per-profile limit.
pub(in crate::sqlite) const IDENTITY_COUNTS: &str =
    "SELECT kind, count(*) FROM identities INDEXED BY identities_profile
     WHERE profile_id = ?1 AND workspace_id = ?2 GROUP BY kind";

pub(in crate::sqlite) fn add_event_counts(
    conn: &Connection,
    workspace_id: &str,
    counts: &[(i64, &str, i64)],
) -> StoreResult<()> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO event_counts (workspace_id, day, channel, count) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (workspace_id, day, channel) DO UPDATE SET count = count + excluded.count",
    )?;
    for (day, channel, count) in counts {
        statement.execute((workspace_id, day, channel, count))?;
    }
    Ok(())
}

pub(in crate::sqlite) fn upsert_profile(
    conn: &Connection,
    workspace_id: &str,
    profile: &ProfileState,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO profiles (workspace_id, id, traits, trait_times, consent, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (workspace_id, id) DO UPDATE SET
            traits = excluded.traits, trait_times = excluded.trait_times, consent = excluded.consent,
            created_at = excluded.created_at, updated_at = excluded.updated_at",
    )?
    .execute(params![
        workspace_id,
        profile.id,
        serde_json::to_string(&profile.traits)?,
        serde_json::to_string(&profile.trait_times)?,
        serde_json::to_string(&profile.consent)?,
        to_millis(profile.created_at),
        to_millis(profile.updated_at),
    ])?;
    Ok(())
}

pub(in crate::sqlite) fn identity_owner(
    conn: &Connection,
    workspace_id: &str,
    identity: &Identity,
) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached(IDENTITY_OWNER)?
        .query_row((workspace_id, identity.kind.as_str(), &identity.value), |row| row.get(0))
        .optional()?)
}
