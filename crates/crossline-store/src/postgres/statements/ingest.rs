//! The statements identity resolution runs through (`IngestTx`), and what ingestion writes.

#[allow(unused_imports)]
use super::*;

/// The ingest statements over one transaction.
pub(in crate::postgres) struct PgTx<'a> {
    pub(in crate::postgres) tx: &'a Transaction<'a>,
}

impl IngestTx for PgTx<'_> {
    async fn existing_message_ids(
        &mut self,
        workspace_id: &str,
        ids: &[&str],
    ) -> StoreResult<foldhash::HashSet<String>> {
        let rows = self
            .tx
            .query(
                "SELECT message_id FROM events WHERE workspace_id = $1 AND message_id = ANY($2)",
                &[&workspace_id, &ids],
            )
            .await?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    async fn identity_owners(
        &mut self,
        workspace_id: &str,
        identities: &[Identity],
    ) -> StoreResult<foldhash::HashMap<Identity, String>> {
        let kinds: Vec<&str> = identities.iter().map(|identity| identity.kind.as_str()).collect();
        let values: Vec<&str> = identities.iter().map(|identity| identity.value.as_str()).collect();
        let rows = self
            .tx
            .query(
                "SELECT i.kind, i.value, i.profile_id FROM identities i
                 JOIN unnest($2::text[], $3::text[]) AS wanted(kind, value) ON i.kind = wanted.kind AND i.value = wanted.value
                 WHERE i.workspace_id = $1",
                &[&workspace_id, &kinds, &values],
            )
            .await?;
        let mut owners = foldhash::HashMap::default();
        for row in rows {
            if let Ok(kind) = row.get::<_, &str>(0).parse::<IdentityKind>() {
                owners.insert(Identity { kind, value: row.get(1) }, row.get(2));
            }
        }
        Ok(owners)
    }

    async fn load_profiles(&mut self, workspace_id: &str, ids: &[String]) -> StoreResult<Vec<ProfileState>> {
        let rows = self
            .tx
            .query(
                "SELECT id, traits, trait_times, consent, created_at, updated_at FROM profiles
                 WHERE workspace_id = $1 AND id = ANY($2) AND merged_into IS NULL",
                &[&workspace_id, &ids],
            )
            .await?;
        rows.iter().map(profile_state_from_row).collect()
    }

    async fn merge_stored_profile(&mut self, workspace_id: &str, survivor: &str, loser: &str) -> StoreResult<()> {
        let tx = self.tx;
        tx.execute(
            "UPDATE identities SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute(
            "UPDATE events SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute(
            "UPDATE conversations SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        // Segment memberships (imported lists above all) follow the person; where both were
        // members, the survivor's stays.
        tx.execute(
            "INSERT INTO segment_members (workspace_id, segment_id, profile_id, since)
             SELECT workspace_id, segment_id, $1, since FROM segment_members WHERE workspace_id = $2 AND profile_id = $3
             ON CONFLICT DO NOTHING",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute("DELETE FROM segment_members WHERE workspace_id = $1 AND profile_id = $2", &[&workspace_id, &loser])
            .await?;
        // Push addresses follow the person, and the survivor keeps its newest ten.
        let moved = tx
            .execute(
                "UPDATE push_addresses SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
                &[&survivor, &workspace_id, &loser],
            )
            .await?;
        if moved > 0 {
            tx.execute(
                "DELETE FROM push_addresses WHERE workspace_id = $1 AND profile_id = $2 AND (kind, value) NOT IN
                    (SELECT kind, value FROM push_addresses WHERE workspace_id = $1 AND profile_id = $2
                     ORDER BY created_at DESC, value LIMIT $3)",
                &[&workspace_id, &survivor, &(crate::engage::MAX_PUSH_ADDRESSES as i64)],
            )
            .await?;
        }
        tx.execute(
            "UPDATE profiles SET merged_into = $1 WHERE workspace_id = $2 AND merged_into = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute(
            "UPDATE profiles SET merged_into = $1, traits = '{}', trait_times = '{}', consent = '{}'
             WHERE workspace_id = $2 AND id = $3",
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
        let kinds: Vec<&str> = identities.iter().map(|(identity, _)| identity.kind.as_str()).collect();
        let values: Vec<&str> = identities.iter().map(|(identity, _)| identity.value.as_str()).collect();
        let owners: Vec<&str> = identities.iter().map(|(_, owner)| owner.as_str()).collect();
        self.tx
            .execute(
                "INSERT INTO identities (workspace_id, kind, value, profile_id, created_at)
                 SELECT $1, kind, value, profile_id, $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS t(kind, value, profile_id)",
                &[&workspace_id, &kinds, &values, &owners, &to_millis(now)],
            )
            .await?;
        Ok(())
    }

    async fn insert_events(&mut self, workspace_id: &str, rows: &[EventRow<'_>]) -> StoreResult<()> {
        let message_ids: Vec<&str> = rows.iter().map(|row| row.message_id.as_str()).collect();
        let profile_ids: Vec<&str> = rows.iter().map(|row| row.profile_id.as_str()).collect();
        let kinds: Vec<&str> = rows.iter().map(|row| row.kind.as_str()).collect();
        let names: Vec<Option<&str>> = rows.iter().map(|row| row.name).collect();
        let channels: Vec<&str> = rows.iter().map(|row| row.channel).collect();
        let properties: Vec<Value> =
            rows.iter().map(|row| Value::Object(row.properties.clone().into_owned())).collect();
        let contexts: Vec<Value> = rows.iter().map(|row| Value::Object(row.context.clone().into_owned())).collect();
        let timestamps: Vec<i64> = rows.iter().map(|row| to_millis(row.timestamp)).collect();
        let received: Vec<i64> = rows.iter().map(|row| to_millis(row.received_at)).collect();
        self.tx
            .execute(
                "INSERT INTO events (workspace_id, message_id, profile_id, kind, name, channel, properties, context, timestamp, received_at)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[], $9::int8[], $10::int8[])",
                &[&workspace_id, &message_ids, &profile_ids, &kinds, &names, &channels, &properties, &contexts, &timestamps, &received],
            )
            .await?;
        Ok(())
    }

    async fn add_event_counts(&mut self, workspace_id: &str, counts: &[(i64, &str, i64)]) -> StoreResult<()> {
        add_event_counts(self.tx, workspace_id, counts).await
    }

    async fn upsert_profiles(&mut self, workspace_id: &str, profiles: &[&ProfileState]) -> StoreResult<()> {
        for profile in profiles {
            upsert_profile(self.tx, workspace_id, profile).await?;
        }
        Ok(())
    }

    async fn identity_counts(
        &mut self,
        workspace_id: &str,
        profile_id: &str,
    ) -> StoreResult<Vec<(IdentityKind, usize)>> {
        let rows = self
            .tx
            .query(
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

pub(in crate::postgres) async fn add_event_counts(
    client: &impl GenericClient,
    workspace_id: &str,
    counts: &[(i64, &str, i64)],
) -> StoreResult<()> {
    let days: Vec<i64> = counts.iter().map(|(day, _, _)| *day).collect();
    let channels: Vec<&str> = counts.iter().map(|(_, channel, _)| *channel).collect();
    let deltas: Vec<i64> = counts.iter().map(|(_, _, count)| *count).collect();
    client
        .execute(
            "INSERT INTO event_counts (workspace_id, day, channel, count)
             SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::int8[])
             ON CONFLICT (workspace_id, day, channel) DO UPDATE SET count = event_counts.count + excluded.count",
            &[&workspace_id, &days, &channels, &deltas],
        )
        .await?;
    Ok(())
}

pub(in crate::postgres) async fn upsert_profile(
    client: &impl GenericClient,
    workspace_id: &str,
    profile: &ProfileState,
) -> StoreResult<()> {
    client
        .execute(
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
