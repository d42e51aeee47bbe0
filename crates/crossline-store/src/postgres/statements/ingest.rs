//! The statements identity resolution runs through (`IngestTx`), and what ingestion writes.

#[allow(unused_imports)]
use super::*;
use tokio_postgres::types::Json;

/// The ingest statements over one transaction.
pub(in crate::postgres) struct PgTx<'a> {
    pub(in crate::postgres) tx: &'a deadpool_postgres::Transaction<'a>,
    /// A live profile this transaction already holds locked (a turn's customer): not locked again.
    pub(in crate::postgres) locked: Option<&'a str>,
}

/// Which of the wanted message ids are stored: the array form for any number of keys. It is planned
/// again on every run, but a single-key form's generic plan, made while the table had no
/// statistics, was seen to walk another index of the workspace's events (2 ms a call) — three
/// indexes of `events` start with the workspace.
const EXISTING_MESSAGE_IDS: &str = "SELECT e.message_id FROM unnest($2::text[]) AS wanted(id)
     CROSS JOIN LATERAL (SELECT message_id FROM events
        WHERE workspace_id = $1 AND message_id = wanted.id LIMIT 1) e";

/// The owner of one identity (a form whose generic plan PostgreSQL keeps).
const OWNER: &str =
    "SELECT kind, value, profile_id FROM identities WHERE workspace_id = $1 AND kind = $2 AND value = $3";

/// The owners of several identities.
const OWNERS: &str = "SELECT wanted.kind, wanted.value, i.profile_id
     FROM unnest($2::text[], $3::text[]) AS wanted(kind, value)
     CROSS JOIN LATERAL (SELECT profile_id FROM identities
        WHERE workspace_id = $1 AND kind = wanted.kind AND value = wanted.value LIMIT 1) i";

impl<'a> PgTx<'a> {
    pub(in crate::postgres) fn new(tx: &'a deadpool_postgres::Transaction<'a>) -> Self {
        PgTx { tx, locked: None }
    }

    /// The statement prepared once per connection: PostgreSQL parses and plans it once, and a
    /// batch's statements each cost one round trip.
    async fn cached(&self, sql: &str) -> StoreResult<tokio_postgres::Statement> {
        Ok(self.tx.prepare_cached(sql).await?)
    }

    async fn query_existing(&self, workspace_id: &str, ids: &[&str]) -> StoreResult<foldhash::HashSet<String>> {
        let rows = self.tx.query_cached(EXISTING_MESSAGE_IDS, &[&workspace_id, &ids]).await?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    /// Who owns these identities (not locked yet).
    async fn query_owners(
        &self,
        workspace_id: &str,
        identities: &[Identity],
    ) -> StoreResult<foldhash::HashMap<Identity, String>> {
        let kinds: Vec<&str> = identities.iter().map(|identity| identity.kind.as_str()).collect();
        let values: Vec<&str> = identities.iter().map(|identity| identity.value.as_str()).collect();
        let rows = if let ([kind], [value]) = (&kinds[..], &values[..]) {
            self.tx.query_cached(OWNER, &[&workspace_id, kind, value]).await?
        } else {
            self.tx.query_cached(OWNERS, &[&workspace_id, &kinds, &values]).await?
        };
        let mut owners = foldhash::HashMap::default();
        for row in rows {
            if let Ok(kind) = row.get::<_, &str>(0).parse::<IdentityKind>() {
                owners.insert(Identity { kind, value: row.get(1) }, row.get(2));
            }
        }
        Ok(owners)
    }

    /// Lock every owner before anything reads its state: events, identities, traits and merges of
    /// these profiles are this transaction's alone until it ends. An owner merged away or erased
    /// between the read of the owners and its lock means the graph changed: run the batch again.
    async fn lock_owners(&self, workspace_id: &str, owners: &foldhash::HashMap<Identity, String>) -> StoreResult<()> {
        let mut profiles: Vec<&str> =
            owners.values().map(String::as_str).filter(|profile| Some(*profile) != self.locked).collect();
        profiles.sort_unstable();
        profiles.dedup();
        if profiles.is_empty() {
            return Ok(());
        }
        let locked = if let [profile] = &profiles[..] {
            self.tx.query_cached(LOCK_PROFILE, &[&workspace_id, profile]).await?
        } else {
            self.tx.query_cached(LOCK_PROFILES, &[&workspace_id, &profiles]).await?
        };
        if locked.len() != profiles.len() {
            return Err(crate::postgres::changed_meanwhile("an identity's profile"));
        }
        Ok(())
    }
}

impl IngestTx for PgTx<'_> {
    async fn existing_message_ids(
        &mut self,
        workspace_id: &str,
        ids: &[&str],
    ) -> StoreResult<foldhash::HashSet<String>> {
        self.query_existing(workspace_id, ids).await
    }

    async fn identity_owners(
        &mut self,
        workspace_id: &str,
        identities: &[Identity],
    ) -> StoreResult<foldhash::HashMap<Identity, String>> {
        let owners = self.query_owners(workspace_id, identities).await?;
        self.lock_owners(workspace_id, &owners).await?;
        Ok(owners)
    }

    /// The two reads go out at once (both prepared first), then the owners are locked.
    async fn read_batch(
        &mut self,
        workspace_id: &str,
        ids: &[&str],
        identities: &[Identity],
    ) -> StoreResult<(foldhash::HashSet<String>, foldhash::HashMap<Identity, String>)> {
        if identities.is_empty() {
            return Ok((self.query_existing(workspace_id, ids).await?, foldhash::HashMap::default()));
        }
        self.cached(EXISTING_MESSAGE_IDS).await?;
        self.cached(if identities.len() == 1 { OWNER } else { OWNERS }).await?;
        let (existing, owners) =
            futures::try_join!(self.query_existing(workspace_id, ids), self.query_owners(workspace_id, identities))?;
        self.lock_owners(workspace_id, &owners).await?;
        Ok((existing, owners))
    }

    async fn load_profiles(&mut self, workspace_id: &str, ids: &[String]) -> StoreResult<Vec<ProfileState>> {
        let rows = if let [id] = ids {
            let sql = "SELECT id, traits, trait_times, consent, created_at, updated_at FROM profiles
                 WHERE workspace_id = $1 AND id = $2 AND merged_into IS NULL";
            self.tx.query_cached(sql, &[&workspace_id, id]).await?
        } else {
            let sql = "SELECT p.* FROM unnest($2::text[]) AS wanted(id)
                 CROSS JOIN LATERAL (SELECT id, traits, trait_times, consent, created_at, updated_at FROM profiles
                    WHERE workspace_id = $1 AND id = wanted.id AND merged_into IS NULL LIMIT 1) p";
            self.tx.query_cached(sql, &[&workspace_id, &ids]).await?
        };
        rows.iter().map(profile_state_from_row).collect()
    }

    async fn merge_stored_profile(&mut self, workspace_id: &str, survivor: &str, loser: &str) -> StoreResult<()> {
        let tx = self.tx;
        tx.execute_cached(
            "UPDATE identities SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute_cached(
            "UPDATE events SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute_cached(
            "UPDATE conversations SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        // Segment memberships (imported lists above all) follow the person; where both were
        // members, the survivor's stays.
        tx.execute(
            &self
                .cached(
                    "INSERT INTO segment_members (workspace_id, segment_id, profile_id, since)
             SELECT workspace_id, segment_id, $1, since FROM segment_members WHERE workspace_id = $2 AND profile_id = $3
             ON CONFLICT DO NOTHING",
                )
                .await?,
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute_cached(
            "DELETE FROM segment_members WHERE workspace_id = $1 AND profile_id = $2",
            &[&workspace_id, &loser],
        )
        .await?;
        // Push addresses follow the person, and the survivor keeps its newest ten.
        let moved = tx
            .execute_cached(
                "UPDATE push_addresses SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
                &[&survivor, &workspace_id, &loser],
            )
            .await?;
        if moved > 0 {
            tx.execute_cached(
                "DELETE FROM push_addresses WHERE workspace_id = $1 AND profile_id = $2 AND (kind, value) NOT IN
                    (SELECT kind, value FROM push_addresses WHERE workspace_id = $1 AND profile_id = $2
                     ORDER BY created_at DESC, value LIMIT $3)",
                &[&workspace_id, &survivor, &(crate::engage::MAX_PUSH_ADDRESSES as i64)],
            )
            .await?;
        }
        tx.execute_cached(
            "UPDATE profiles SET merged_into = $1 WHERE workspace_id = $2 AND merged_into = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute(
            &self
                .cached(
                    "UPDATE profiles SET merged_into = $1, traits = '{}', trait_times = '{}', consent = '{}'
             WHERE workspace_id = $2 AND id = $3",
                )
                .await?,
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        Ok(())
    }

    async fn insert_identities(
        &mut self,
        workspace_id: &str,
        identities: &[(Identity, String)],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        // In key order: two batches claiming the same new identities wait for each other (the second
        // then fails on the key and runs again) rather than deadlock.
        let mut sorted: Vec<&(Identity, String)> = identities.iter().collect();
        sorted.sort_unstable_by(|(a, _), (b, _)| (a.kind.as_str(), &a.value).cmp(&(b.kind.as_str(), &b.value)));
        let kinds: Vec<&str> = sorted.iter().map(|(identity, _)| identity.kind.as_str()).collect();
        let values: Vec<&str> = sorted.iter().map(|(identity, _)| identity.value.as_str()).collect();
        let owners: Vec<&str> = sorted.iter().map(|(_, owner)| owner.as_str()).collect();
        self.tx.execute_cached(INSERT_IDENTITIES, &[&workspace_id, &kinds, &values, &owners, &to_millis(now)]).await?;
        Ok(())
    }

    async fn insert_events(&mut self, workspace_id: &str, rows: &[EventRow<'_>]) -> StoreResult<()> {
        let message_ids: Vec<&str> = rows.iter().map(|row| row.message_id.as_str()).collect();
        let profile_ids: Vec<&str> = rows.iter().map(|row| row.profile_id.as_str()).collect();
        let kinds: Vec<&str> = rows.iter().map(|row| row.kind.as_str()).collect();
        let names: Vec<Option<&str>> = rows.iter().map(|row| row.name).collect();
        let channels: Vec<&str> = rows.iter().map(|row| row.channel).collect();
        let properties: Vec<Json<&Map<String, Value>>> = rows.iter().map(|row| Json(row.properties.as_ref())).collect();
        let contexts: Vec<Json<&Map<String, Value>>> = rows.iter().map(|row| Json(row.context.as_ref())).collect();
        let timestamps: Vec<i64> = rows.iter().map(|row| to_millis(row.timestamp)).collect();
        let received: Vec<i64> = rows.iter().map(|row| to_millis(row.received_at)).collect();
        self.tx
            .execute_cached(
                INSERT_EVENTS,
                &[
                    &workspace_id,
                    &message_ids,
                    &profile_ids,
                    &kinds,
                    &names,
                    &channels,
                    &properties,
                    &contexts,
                    &timestamps,
                    &received,
                ],
            )
            .await?;
        Ok(())
    }

    async fn add_event_counts(&mut self, workspace_id: &str, counts: &[(i64, &str, i64)]) -> StoreResult<()> {
        add_event_counts(self.tx, &self.cached(ADD_EVENT_COUNTS).await?, workspace_id, counts).await
    }

    async fn upsert_profiles(&mut self, workspace_id: &str, profiles: &[&ProfileState]) -> StoreResult<()> {
        let ids: Vec<&str> = profiles.iter().map(|profile| profile.id.as_str()).collect();
        let traits: Vec<Json<_>> = profiles.iter().map(|profile| Json(&profile.traits)).collect();
        let trait_times: Vec<Json<_>> = profiles.iter().map(|profile| Json(&profile.trait_times)).collect();
        let consent: Vec<Json<_>> = profiles.iter().map(|profile| Json(&profile.consent)).collect();
        let created: Vec<i64> = profiles.iter().map(|profile| to_millis(profile.created_at)).collect();
        let updated: Vec<i64> = profiles.iter().map(|profile| to_millis(profile.updated_at)).collect();
        self.tx
            .execute_cached(
                UPSERT_PROFILES,
                &[&workspace_id, &ids, &traits, &trait_times, &consent, &created, &updated],
            )
            .await?;
        Ok(())
    }

    /// The four writes go out at once, pipelined on the connection: PostgreSQL runs them in the
    /// order sent (the statements are prepared first, so each is sent when its future is first
    /// polled, in this order), and the batch waits for one round trip rather than four.
    async fn write_batch(&mut self, workspace_id: &str, batch: BatchWrites<'_, '_>) -> StoreResult<()> {
        for sql in [INSERT_IDENTITIES, INSERT_EVENTS, ADD_EVENT_COUNTS, UPSERT_PROFILES] {
            self.cached(sql).await?;
        }
        let tx = self.tx;
        let (mut identities, mut events, mut counts, mut profiles) =
            (PgTx::new(tx), PgTx::new(tx), PgTx::new(tx), PgTx::new(tx));
        let BatchWrites { identities: new_identities, now, rows, counts: new_counts, profiles: dirty } = batch;
        futures::try_join!(
            async {
                match new_identities.is_empty() {
                    true => Ok(()),
                    false => identities.insert_identities(workspace_id, new_identities, now).await,
                }
            },
            async {
                match rows.is_empty() {
                    true => Ok(()),
                    false => events.insert_events(workspace_id, rows).await,
                }
            },
            async {
                match new_counts.is_empty() {
                    true => Ok(()),
                    false => counts.add_event_counts(workspace_id, new_counts).await,
                }
            },
            async {
                match dirty.is_empty() {
                    true => Ok(()),
                    false => profiles.upsert_profiles(workspace_id, dirty).await,
                }
            },
        )?;
        Ok(())
    }

    async fn identity_counts(
        &mut self,
        workspace_id: &str,
        profile_id: &str,
    ) -> StoreResult<Vec<(IdentityKind, usize)>> {
        let rows = self
            .tx
            .query_cached(
                "SELECT kind, count(*) FROM identities WHERE workspace_id = $1 AND profile_id = $2 GROUP BY kind",
                &[&workspace_id, &profile_id],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let kind: String = row.get(0);
                let count: i64 = row.get(1);
                Some((kind.parse::<IdentityKind>().ok()?, usize::try_from(count).unwrap_or(usize::MAX)))
            })
            .collect())
    }
}

/// Lock live profiles (the ids sorted and distinct), in id order so two transactions never wait on
/// each other in a cycle.
///
/// The batch statements here probe an index once per wanted key (a `LATERAL` subquery with `LIMIT
/// 1`, which the planner cannot turn into a join): with `= ANY(array)` or a plain join the planner,
/// misled by a workspace's statistics (a new, fast-growing or dominant workspace), chose to read the
/// whole workspace's rows and filter or hash them — measured at 10–60 ms a statement where the
/// probes take well under 1 ms.
const LOCK_PROFILES: &str = "SELECT p.id FROM unnest($2::text[]) AS wanted(id)
     CROSS JOIN LATERAL (SELECT id FROM profiles WHERE workspace_id = $1 AND id = wanted.id AND merged_into IS NULL
        LIMIT 1 FOR NO KEY UPDATE) p";

const INSERT_IDENTITIES: &str = "INSERT INTO identities (workspace_id, kind, value, profile_id, created_at)
     SELECT $1, kind, value, profile_id, $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS t(kind, value, profile_id)";

const INSERT_EVENTS: &str = "INSERT INTO events
        (workspace_id, message_id, profile_id, kind, name, channel, properties, context, timestamp, received_at)
     SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[],
        $9::int8[], $10::int8[])";

/// [`LOCK_PROFILES`] for one profile (a form whose generic plan PostgreSQL keeps).
pub(in crate::postgres) const LOCK_PROFILE: &str =
    "SELECT id FROM profiles WHERE workspace_id = $1 AND id = $2 AND merged_into IS NULL FOR NO KEY UPDATE";

/// Profiles written whole, in id order.
const UPSERT_PROFILES: &str =
    "INSERT INTO profiles (workspace_id, id, traits, trait_times, consent, created_at, updated_at)
     SELECT $1, * FROM unnest($2::text[], $3::jsonb[], $4::jsonb[], $5::jsonb[], $6::int8[], $7::int8[])
     ON CONFLICT (workspace_id, id) DO UPDATE SET
        traits = excluded.traits, trait_times = excluded.trait_times, consent = excluded.consent,
        created_at = excluded.created_at, updated_at = excluded.updated_at";

/// Add to the event counters: each database session adds to its own shard (its backend pid modulo
/// 16), so concurrent batches do not queue on one row.
pub(in crate::postgres) const ADD_EVENT_COUNTS: &str = "INSERT INTO event_counts (workspace_id, day, channel, shard, count)
     SELECT $1, day, channel, pg_backend_pid() % 16, count FROM unnest($2::int8[], $3::text[], $4::int8[]) AS t(day, channel, count)
     ON CONFLICT (workspace_id, day, channel, shard) DO UPDATE SET count = event_counts.count + excluded.count";

pub(in crate::postgres) async fn add_event_counts<S: tokio_postgres::ToStatement + ?Sized + Sync + Send>(
    client: &impl GenericClient,
    statement: &S,
    workspace_id: &str,
    counts: &[(i64, &str, i64)],
) -> StoreResult<()> {
    let days: Vec<i64> = counts.iter().map(|(day, _, _)| *day).collect();
    let channels: Vec<&str> = counts.iter().map(|(_, channel, _)| *channel).collect();
    let deltas: Vec<i64> = counts.iter().map(|(_, _, count)| *count).collect();
    client.execute(statement, &[&workspace_id, &days, &channels, &deltas]).await?;
    Ok(())
}

pub(in crate::postgres) async fn upsert_profile(
    client: &impl GenericClient,
    workspace_id: &str,
    profile: &ProfileState,
) -> StoreResult<()> {
    client
        .execute_cached(
            "INSERT INTO profiles (workspace_id, id, traits, trait_times, consent, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (workspace_id, id) DO UPDATE SET
                traits = excluded.traits, trait_times = excluded.trait_times, consent = excluded.consent,
                created_at = excluded.created_at, updated_at = excluded.updated_at",
            &[
                &workspace_id,
                &profile.id,
                &Value::Object(profile.traits.clone()),
                &serde_json::to_value(&profile.trait_times)?,
                &serde_json::to_value(&profile.consent)?,
                &to_millis(profile.created_at),
                &to_millis(profile.updated_at),
            ],
        )
        .await?;
    Ok(())
}
