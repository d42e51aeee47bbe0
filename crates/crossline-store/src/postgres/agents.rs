//! [`crate::AgentStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;
use crate::agents::{Agent, AgentStatus, ConversationFilter, PeopleChange};
use crate::{Conversation, ConversationMessage, from_millis, to_millis};
use tokio_postgres::Row;

const AGENT_COLUMNS: &str = "id, name, email, skills, languages, capacity, status, created_at, status_at, phone, calls";

fn agent_from_row(row: &Row) -> StoreResult<Agent> {
    Ok(Agent {
        id: row.get(0),
        name: row.get(1),
        email: row.get(2),
        skills: serde_json::from_str(row.get(3))?,
        languages: serde_json::from_str(row.get(4))?,
        capacity: u32::try_from(row.get::<_, i64>(5)).unwrap_or(u32::MAX),
        status: AgentStatus::parse(row.get(6)).unwrap_or(AgentStatus::Offline),
        created_at: from_millis(row.get(7)),
        status_at: from_millis(row.get(8)),
        phone: row.get(9),
        calls: u32::try_from(row.get::<_, i64>(10)).unwrap_or(0),
    })
}

#[async_trait]
impl crate::AgentStore for PgStore {
    async fn mark_awaiting(&self, workspace_id: &str, conversation_id: &str, since: DateTime<Utc>) -> StoreResult<()> {
        let client = self.pool.get().await?;
        // The customer's message also wakes a snoozed conversation, in the same statement.
        client
            .execute(
                &client.prepare_cached("WITH woken AS (DELETE FROM conversation_snoozes WHERE workspace_id = $1 AND conversation_id = $2)
                 INSERT INTO conversation_waits (workspace_id, conversation_id, since) VALUES ($1, $2, $3)
                 ON CONFLICT (workspace_id, conversation_id) DO NOTHING").await?,
                &[&workspace_id, &conversation_id, &to_millis(since)],
            )
            .await?;
        Ok(())
    }

    async fn clear_awaiting(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client
                    .prepare_cached("DELETE FROM conversation_waits WHERE workspace_id = $1 AND conversation_id = $2")
                    .await?,
                &[&workspace_id, &conversation_id],
            )
            .await?;
        Ok(())
    }

    async fn awaiting(
        &self,
        workspace_id: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT conversation_id, since FROM conversation_waits w WHERE workspace_id = $1 AND since < $2
                 AND NOT EXISTS (SELECT 1 FROM conversation_snoozes s
                                 WHERE s.workspace_id = w.workspace_id AND s.conversation_id = w.conversation_id)
                 ORDER BY since LIMIT $3",
                    )
                    .await?,
                &[&workspace_id, &to_millis(before), &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), from_millis(row.get(1)))).collect())
    }

    async fn add_note(&self, workspace_id: &str, note: &crate::agents::Note) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client.prepare_cached("INSERT INTO conversation_notes (workspace_id, conversation_id, id, author_id, author_name, text, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)").await?,
                &[
                    &workspace_id,
                    &note.conversation_id,
                    &note.id,
                    &note.author_id,
                    &note.author_name,
                    &note.text,
                    &to_millis(note.created_at),
                ],
            )
            .await?;
        Ok(())
    }

    async fn notes(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<crate::agents::Note>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT id, author_id, author_name, text, created_at FROM conversation_notes
                 WHERE workspace_id = $1 AND conversation_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3",
                    )
                    .await?,
                &[&workspace_id, &conversation_id, &(limit as i64)],
            )
            .await?;
        let mut notes: Vec<crate::agents::Note> = rows
            .iter()
            .map(|row| crate::agents::Note {
                id: row.get(0),
                conversation_id: conversation_id.to_owned(),
                author_id: row.get(1),
                author_name: row.get(2),
                text: row.get(3),
                created_at: from_millis(row.get(4)),
            })
            .collect();
        notes.reverse();
        Ok(notes)
    }

    async fn people_stats(&self, workspace_id: &str, since: DateTime<Utc>) -> StoreResult<crate::agents::PeopleStats> {
        let client = self.pool.get().await?;
        // The IN list is the partial index's own, so the index serves the query. Only the server
        // writes these events (clients may not: `OWN_EVENT_NAMES`), and the casts are guarded anyway.
        let rows = client
            .query_cached(
                &format!(
                    "SELECT name,
                            CASE WHEN name = 'csat.submitted' AND properties->>'score' ~ '^[1-5](\\.0+)?$' THEN (properties->>'score')::float8::int8 END,
                            count(*)::int8,
                            avg(CASE WHEN name = 'conversation.resolved' AND jsonb_typeof(properties->'wait_seconds') = 'number' THEN (properties->>'wait_seconds')::float8 END),
                            avg(CASE WHEN name = 'conversation.resolved' AND jsonb_typeof(properties->'first_response_seconds') = 'number' THEN (properties->>'first_response_seconds')::float8 END),
                            avg(CASE WHEN name = 'conversation.resolved' AND jsonb_typeof(properties->'handle_seconds') = 'number' THEN (properties->>'handle_seconds')::float8 END)
                     FROM events WHERE workspace_id = $1 AND name IN {} AND timestamp >= $2
                     GROUP BY 1, 2",
                    crate::agents::PEOPLE_EVENTS
                ),
                &[&workspace_id, &to_millis(since)],
            )
            .await?;
        let mut stats = crate::agents::PeopleStats::default();
        for row in rows {
            let name: String = row.get(0);
            stats.add(&name, row.get(1), row.get::<_, i64>(2).max(0) as u64);
            if name == "conversation.resolved" {
                stats.mean_wait_seconds = row.get(3);
                stats.mean_first_response_seconds = row.get(4);
                stats.mean_handle_seconds = row.get(5);
            }
        }
        Ok(stats)
    }

    async fn create_agent(&self, workspace_id: &str, agent: &Agent, token_hash: &str) -> StoreResult<()> {
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                &client.prepare_cached("INSERT INTO agents (workspace_id, id, name, email, skills, languages, capacity, status, token_hash, created_at, status_at, phone, calls)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)").await?,
                &[
                    &workspace_id,
                    &agent.id,
                    &agent.name,
                    &agent.email,
                    &serde_json::to_string(&agent.skills)?,
                    &serde_json::to_string(&agent.languages)?,
                    &i64::from(agent.capacity),
                    &agent.status.as_str(),
                    &token_hash,
                    &to_millis(agent.created_at),
                    &to_millis(agent.status_at),
                    &agent.phone,
                    &i64::from(agent.calls),
                ],
            )
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::Conflict(format!("an agent with the email {} exists", agent.email)))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn agent(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Agent>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt_cached(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = $1 AND id = $2"),
                &[&workspace_id, &id],
            )
            .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn agent_by_token(&self, token_hash: &str) -> StoreResult<Option<(String, Agent)>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt_cached(
                &format!("SELECT {AGENT_COLUMNS}, workspace_id FROM agents WHERE token_hash = $1"),
                &[&token_hash],
            )
            .await?;
        row.map(|row| Ok((row.get(11), agent_from_row(&row)?))).transpose()
    }

    async fn agents(&self, workspace_id: &str) -> StoreResult<Vec<Agent>> {
        let client = self.pool.get().await?;
        let rows = client
            .query_cached(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = $1 ORDER BY name, id"),
                &[&workspace_id],
            )
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn delete_agent(&self, workspace_id: &str, id: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &client.prepare_cached("DELETE FROM agents WHERE workspace_id = $1 AND id = $2").await?,
                &[&workspace_id, &id],
            )
            .await?
            == 1)
    }

    async fn set_agent_status(
        &self,
        workspace_id: &str,
        id: &str,
        status: AgentStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client
                    .prepare_cached("UPDATE agents SET status = $1, status_at = $2 WHERE workspace_id = $3 AND id = $4")
                    .await?,
                &[&status.as_str(), &to_millis(now), &workspace_id, &id],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn update_agent(&self, workspace_id: &str, agent: &Agent) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client.prepare_cached("UPDATE agents SET name = $1, skills = $2, languages = $3, capacity = $4, phone = $5, calls = $6
                 WHERE workspace_id = $7 AND id = $8").await?,
                &[
                    &agent.name,
                    &serde_json::to_string(&agent.skills)?,
                    &serde_json::to_string(&agent.languages)?,
                    &i64::from(agent.capacity),
                    &agent.phone,
                    &i64::from(agent.calls),
                    &workspace_id,
                    &agent.id,
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn snooze(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        agent_id: &str,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &client.prepare_cached("INSERT INTO conversation_snoozes (workspace_id, conversation_id, agent_id, until)
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM conversations WHERE workspace_id = $1 AND id = $2
                                                     AND status = 'assigned' AND assignee = $3)
                 ON CONFLICT (workspace_id, conversation_id) DO UPDATE SET agent_id = excluded.agent_id, until = excluded.until").await?,
                &[&workspace_id, &conversation_id, &agent_id, &to_millis(until)],
            )
            .await?
            == 1)
    }

    async fn snoozed_until(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(
                        "SELECT until FROM conversation_snoozes WHERE workspace_id = $1 AND conversation_id = $2",
                    )
                    .await?,
                &[&workspace_id, &conversation_id],
            )
            .await?;
        Ok(row.map(|row| from_millis(row.get(0))))
    }

    async fn unsnooze(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &client
                    .prepare_cached("DELETE FROM conversation_snoozes WHERE workspace_id = $1 AND conversation_id = $2")
                    .await?,
                &[&workspace_id, &conversation_id],
            )
            .await?
            == 1)
    }

    async fn snoozes(&self, workspace_id: &str, limit: usize) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client.prepare_cached("SELECT conversation_id, until FROM conversation_snoozes WHERE workspace_id = $1 ORDER BY until LIMIT $2").await?,
                &[&workspace_id, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), from_millis(row.get(1)))).collect())
    }

    async fn hold_call(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        now: DateTime<Utc>,
        agent_id: Option<&str>,
    ) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "INSERT INTO call_holds (workspace_id, conversation_id, heard_at, agent_id, answered, on_line)
                 VALUES ($1, $2, $3, $4, false, true)
                 ON CONFLICT (workspace_id, conversation_id) DO UPDATE SET heard_at = excluded.heard_at,
                 agent_id = excluded.agent_id, answered = false, on_line = true",
                    )
                    .await?,
                &[&workspace_id, &conversation_id, &to_millis(now), &agent_id],
            )
            .await?;
        Ok(())
    }

    async fn answer_call(&self, workspace_id: &str, conversation_id: &str, agent_id: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &client.prepare_cached("UPDATE call_holds SET answered = true WHERE workspace_id = $1 AND conversation_id = $2 AND agent_id = $3").await?,
                &[&workspace_id, &conversation_id, &agent_id],
            )
            .await?
            == 1)
    }

    async fn promise_call_back(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "INSERT INTO call_holds (workspace_id, conversation_id, heard_at, agent_id, answered, on_line)
                 VALUES ($1, $2, $3, NULL, false, false)
                 ON CONFLICT (workspace_id, conversation_id) DO UPDATE SET heard_at = excluded.heard_at,
                 agent_id = NULL, answered = false, on_line = false",
                    )
                    .await?,
                &[&workspace_id, &conversation_id, &to_millis(now)],
            )
            .await?;
        Ok(())
    }

    async fn end_call_hold(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client
                    .prepare_cached("DELETE FROM call_holds WHERE workspace_id = $1 AND conversation_id = $2")
                    .await?,
                &[&workspace_id, &conversation_id],
            )
            .await?;
        Ok(())
    }

    async fn call_hold(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<crate::agents::CallHold>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(
                        "SELECT conversation_id, heard_at, agent_id, answered, on_line FROM call_holds
                 WHERE workspace_id = $1 AND conversation_id = $2",
                    )
                    .await?,
                &[&workspace_id, &conversation_id],
            )
            .await?;
        Ok(row.map(|row| crate::agents::CallHold {
            conversation_id: row.get(0),
            heard_at: from_millis(row.get(1)),
            agent_id: row.get(2),
            answered: row.get(3),
            on_line: row.get(4),
        }))
    }

    async fn claim_routing(
        &self,
        workspace_id: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &client
                    .prepare_cached(
                        "INSERT INTO routing_leases (workspace_id, holder, until) VALUES ($1, $2, $4)
                 ON CONFLICT (workspace_id) DO UPDATE SET holder = excluded.holder, until = excluded.until
                 WHERE routing_leases.until < $3 OR routing_leases.holder = excluded.holder",
                    )
                    .await?,
                &[&workspace_id, &holder, &to_millis(now), &to_millis(until)],
            )
            .await?
            == 1)
    }

    async fn release_routing(&self, workspace_id: &str, holder: &str) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client.prepare_cached("DELETE FROM routing_leases WHERE workspace_id = $1 AND holder = $2").await?,
                &[&workspace_id, &holder],
            )
            .await?;
        Ok(())
    }

    async fn call_holds(&self, workspace_id: &str, limit: usize) -> StoreResult<Vec<crate::agents::CallHold>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client.prepare_cached("SELECT conversation_id, heard_at, agent_id, answered, on_line FROM call_holds WHERE workspace_id = $1
                 ORDER BY heard_at DESC LIMIT $2").await?,
                &[&workspace_id, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| crate::agents::CallHold {
                conversation_id: row.get(0),
                heard_at: from_millis(row.get(1)),
                agent_id: row.get(2),
                answered: row.get(3),
                on_line: row.get(4),
            })
            .collect())
    }

    async fn waiting_queues(&self, workspace_id: &str) -> StoreResult<Vec<(String, u64)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT coalesce(queue, 'default'), count(*) FROM conversations
                 WHERE workspace_id = $1 AND status = 'queued' GROUP BY 1 ORDER BY 1",
                    )
                    .await?,
                &[&workspace_id],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get::<_, i64>(1) as u64)).collect())
    }

    async fn list_conversations(
        &self,
        workspace_id: &str,
        filter: &ConversationFilter,
    ) -> StoreResult<Vec<Conversation>> {
        let client = self.pool.get().await?;
        let statuses: Vec<String> =
            crate::agents::status_names(&filter.statuses).into_iter().map(str::to_owned).collect();
        let order = if statuses == ["queued"] { "queued_at, id" } else { "updated_at DESC, id" };
        let columns = if filter.without_state {
            statements::CONVERSATION_COLUMNS.replace(" state,", " '{}'::jsonb,")
        } else {
            statements::CONVERSATION_COLUMNS.to_owned()
        };
        let rows = client
            .query_cached(
                &format!(
                    "SELECT {columns} FROM conversations WHERE workspace_id = $1 AND status = ANY($2)
                       AND ($3::text IS NULL OR coalesce(queue, 'default') = $3) AND ($4::text IS NULL OR assignee = $4)
                       AND ($6::text IS NULL OR profile_id = $6)
                     ORDER BY {order} LIMIT $5"
                ),
                &[
                    &workspace_id,
                    &statuses,
                    &filter.queue,
                    &filter.assignee,
                    &(filter.limit as i64),
                    &filter.profile_id,
                ],
            )
            .await?;
        Ok(rows.iter().map(statements::conversation_from_row).collect())
    }

    async fn record_people_change(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        change: &PeopleChange,
        messages: &[ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<(Conversation, Vec<IngestedEvent>)> {
        retried_transaction!(self, |tx| {
            async {
        // The same lock as a customer's turn (their profile, before the conversation): the two never
        // interleave their messages.
        let profile: Option<String> = tx
            .query_opt(&tx.prepare_cached("SELECT profile_id FROM conversations WHERE workspace_id = $1 AND id = $2").await?, &[&workspace_id, &conversation_id])
            .await?
            .map(|row| row.get(0));
        if let Some(profile) = profile {
            lock_live_profile(&tx, workspace_id, &profile).await?;
        }
        let now = to_millis(change.now);
        let changed = tx
            .execute(
                &tx.prepare_cached("UPDATE conversations SET status = $1, assignee = $2, queue = $3,
                    queued_at = CASE WHEN $1 = 'queued' AND (status != 'queued' OR queue IS DISTINCT FROM $3) THEN $4 ELSE queued_at END,
                    assigned_at = CASE WHEN $1 = 'assigned' AND assignee IS DISTINCT FROM $2 THEN $4 ELSE assigned_at END,
                    updated_at = CASE WHEN $5 THEN greatest(updated_at, $4) ELSE updated_at END
                 WHERE workspace_id = $6 AND id = $7 AND status = $8 AND assignee IS NOT DISTINCT FROM $9").await?,
                &[
                    &change.status.as_str(),
                    &change.assignee,
                    &change.queue,
                    &now,
                    &!messages.is_empty(),
                    &workspace_id,
                    &conversation_id,
                    &change.expected_status.as_str(),
                    &change.expected_assignee,
                ],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::Conflict("the conversation changed since it was read".into()));
        }
        statements::append_messages(&tx, workspace_id, conversation_id, messages).await?;
        if let Some(delivery) = &change.delivery {
            super::engage::insert_delivery_rows(&tx, workspace_id, std::slice::from_ref(delivery)).await?;
        }
        let ingested = {
            let mut statements = statements::PgTx::new(&tx);
            apply_batch(&mut statements, workspace_id, &events, Utc::now(), &self.profile_limits).await?
        };
        let conversation = statements::conversation(&tx, workspace_id, conversation_id)
            .await?
            .ok_or_else(|| StoreError::Backend("the conversation vanished while it was changed".into()))?;
        Ok((conversation, ingested))
        }
        .await
        })
    }
}
