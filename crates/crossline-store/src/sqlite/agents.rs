//! [`crate::AgentStore`] on SQLite.

#[allow(unused_imports)]
use super::*;
use crate::agents::{Agent, AgentStatus, ConversationFilter, PeopleChange};
use crate::{Conversation, ConversationMessage, from_millis, to_millis};

const AGENT_COLUMNS: &str = "id, name, email, skills, languages, capacity, status, created_at, status_at, phone, calls";

fn agent_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Agent, String, String)> {
    Ok((
        Agent {
            id: row.get(0)?,
            name: row.get(1)?,
            email: row.get(2)?,
            skills: Vec::new(),
            languages: Vec::new(),
            capacity: row.get(5)?,
            status: AgentStatus::parse(&row.get::<_, String>(6)?).unwrap_or(AgentStatus::Offline),
            created_at: from_millis(row.get(7)?),
            status_at: from_millis(row.get(8)?),
            phone: row.get(9)?,
            calls: row.get(10)?,
        },
        row.get(3)?,
        row.get(4)?,
    ))
}

fn agent_of((mut agent, skills, languages): (Agent, String, String)) -> StoreResult<Agent> {
    agent.skills = statements::parse_json(&skills)?;
    agent.languages = statements::parse_json(&languages)?;
    Ok(agent)
}

/// The supervisor view's count of a day. The IN list is the partial index's own, so the index
/// `events_people` serves it (a test asks SQLite's planner).
pub(in crate::sqlite) fn people_stats_sql() -> String {
    format!(
        "SELECT name,
                CASE WHEN name = 'csat.submitted' THEN CAST(json_extract(properties, '$.score') AS INTEGER) END,
                count(*),
                avg(CASE WHEN name = 'conversation.resolved' THEN json_extract(properties, '$.wait_seconds') END),
                avg(CASE WHEN name = 'conversation.resolved' THEN json_extract(properties, '$.first_response_seconds') END),
                avg(CASE WHEN name = 'conversation.resolved' THEN json_extract(properties, '$.handle_seconds') END)
         FROM events WHERE workspace_id = ?1 AND name IN {} AND timestamp >= ?2
         GROUP BY 1, 2",
        crate::agents::PEOPLE_EVENTS
    )
}

impl SqliteStore {
    /// Delete a conversation's row of `table` (a wait, a snooze); whether there was one. Most
    /// changes find none: a read (on the readers, in parallel) spares the writer a transaction.
    async fn delete_row_of(&self, table: &'static str, workspace_id: &str, conversation_id: &str) -> StoreResult<bool> {
        let (workspace_id, conversation_id) = (workspace_id.to_owned(), conversation_id.to_owned());
        let (ws, id) = (workspace_id.clone(), conversation_id.clone());
        let there: bool = self
            .read(move |conn| {
                Ok(conn.query_row(
                    &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE workspace_id = ?1 AND conversation_id = ?2)"),
                    (&ws, &id),
                    |row| row.get(0),
                )?)
            })
            .await?;
        if !there {
            return Ok(false);
        }
        self.write_aside(move |tx| {
            Ok(tx.execute(
                &format!("DELETE FROM {table} WHERE workspace_id = ?1 AND conversation_id = ?2"),
                (&workspace_id, &conversation_id),
            )? == 1)
        })
        .await
    }
}

#[async_trait]
impl crate::AgentStore for SqliteStore {
    async fn mark_awaiting(&self, workspace_id: &str, conversation_id: &str, since: DateTime<Utc>) -> StoreResult<()> {
        let (workspace_id, conversation_id) = (workspace_id.to_owned(), conversation_id.to_owned());
        self.write_aside(move |tx| {
            tx.execute(
                "INSERT INTO conversation_waits (workspace_id, conversation_id, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (workspace_id, conversation_id) DO NOTHING",
                rusqlite::params![workspace_id, conversation_id, to_millis(since)],
            )?;
            tx.execute(
                "DELETE FROM conversation_snoozes WHERE workspace_id = ?1 AND conversation_id = ?2",
                (&workspace_id, &conversation_id),
            )?;
            Ok(())
        })
        .await
    }

    async fn clear_awaiting(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<()> {
        // A wait marked after the read is a newer one, which stays anyway.
        self.delete_row_of("conversation_waits", workspace_id, conversation_id).await.map(|_| ())
    }

    async fn awaiting(
        &self,
        workspace_id: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT conversation_id, since FROM conversation_waits w WHERE workspace_id = ?1 AND since < ?2
                 AND NOT EXISTS (SELECT 1 FROM conversation_snoozes s
                                 WHERE s.workspace_id = w.workspace_id AND s.conversation_id = w.conversation_id)
                 ORDER BY since LIMIT ?3",
            )?;
            let waits = statement
                .query_map(rusqlite::params![workspace_id, to_millis(before), limit as i64], |row| {
                    Ok((row.get::<_, String>(0)?, from_millis(row.get(1)?)))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(waits)
        })
        .await
    }

    async fn add_note(&self, workspace_id: &str, note: &crate::agents::Note) -> StoreResult<()> {
        let (workspace_id, note) = (workspace_id.to_owned(), note.clone());
        self.write_aside(move |tx| {
            tx.execute(
                "INSERT INTO conversation_notes (workspace_id, conversation_id, id, author_id, author_name, text, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    workspace_id,
                    note.conversation_id,
                    note.id,
                    note.author_id,
                    note.author_name,
                    note.text,
                    to_millis(note.created_at)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn notes(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<crate::agents::Note>> {
        let (workspace_id, conversation_id) = (workspace_id.to_owned(), conversation_id.to_owned());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, author_id, author_name, text, created_at FROM conversation_notes
                 WHERE workspace_id = ?1 AND conversation_id = ?2 ORDER BY created_at DESC, id DESC LIMIT ?3",
            )?;
            let mut notes = statement
                .query_map(rusqlite::params![workspace_id, conversation_id, limit as i64], |row| {
                    Ok(crate::agents::Note {
                        id: row.get(0)?,
                        conversation_id: conversation_id.clone(),
                        author_id: row.get(1)?,
                        author_name: row.get(2)?,
                        text: row.get(3)?,
                        created_at: from_millis(row.get(4)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            notes.reverse();
            Ok(notes)
        })
        .await
    }

    async fn people_stats(&self, workspace_id: &str, since: DateTime<Utc>) -> StoreResult<crate::agents::PeopleStats> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&people_stats_sql())?;
            let mut stats = crate::agents::PeopleStats::default();
            let mut rows = statement.query(rusqlite::params![workspace_id, to_millis(since)])?;
            while let Some(row) = rows.next()? {
                let name: String = row.get(0)?;
                stats.add(&name, row.get(1)?, row.get::<_, i64>(2)?.max(0) as u64);
                if name == "conversation.resolved" {
                    stats.mean_wait_seconds = row.get(3)?;
                    stats.mean_first_response_seconds = row.get(4)?;
                    stats.mean_handle_seconds = row.get(5)?;
                }
            }
            Ok(stats)
        })
        .await
    }

    async fn create_agent(&self, workspace_id: &str, agent: &Agent, token_hash: &str) -> StoreResult<()> {
        let (workspace_id, agent, token_hash) = (workspace_id.to_owned(), agent.clone(), token_hash.to_owned());
        self.write_aside(move |tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM agents WHERE workspace_id = ?1 AND email = ?2)",
                (&workspace_id, &agent.email),
                |row| row.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict(format!("an agent with the email {} exists", agent.email)));
            }
            tx.execute(
                "INSERT INTO agents (workspace_id, id, name, email, skills, languages, capacity, status, token_hash, created_at, status_at, phone, calls)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                rusqlite::params![
                    workspace_id,
                    agent.id,
                    agent.name,
                    agent.email,
                    serde_json::to_string(&agent.skills)?,
                    serde_json::to_string(&agent.languages)?,
                    agent.capacity,
                    agent.status.as_str(),
                    token_hash,
                    to_millis(agent.created_at),
                    to_millis(agent.status_at),
                    agent.phone,
                    agent.calls,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn agent(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Agent>> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = ?1 AND id = ?2"),
                (&workspace_id, &id),
                agent_from_row,
            )
            .optional()?
            .map(agent_of)
            .transpose()
        })
        .await
    }

    async fn agent_by_token(&self, token_hash: &str) -> StoreResult<Option<(String, Agent)>> {
        let token_hash = token_hash.to_owned();
        self.read(move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {AGENT_COLUMNS}, workspace_id FROM agents WHERE token_hash = ?1"),
                    [&token_hash],
                    |row| Ok((agent_from_row(row)?, row.get::<_, String>(11)?)),
                )
                .optional()?;
            row.map(|(agent, workspace_id)| Ok((workspace_id, agent_of(agent)?))).transpose()
        })
        .await
    }

    async fn agents(&self, workspace_id: &str) -> StoreResult<Vec<Agent>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement =
                conn.prepare(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = ?1 ORDER BY name, id"))?;
            let rows = statement.query_map([&workspace_id], agent_from_row)?.collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(agent_of).collect()
        })
        .await
    }

    async fn delete_agent(&self, workspace_id: &str, id: &str) -> StoreResult<bool> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.write_aside(move |tx| {
            Ok(tx.execute("DELETE FROM agents WHERE workspace_id = ?1 AND id = ?2", (&workspace_id, &id))? == 1)
        })
        .await
    }

    async fn set_agent_status(
        &self,
        workspace_id: &str,
        id: &str,
        status: AgentStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.write_aside(move |tx| {
            let changed = tx.execute(
                "UPDATE agents SET status = ?1, status_at = ?2 WHERE workspace_id = ?3 AND id = ?4",
                rusqlite::params![status.as_str(), to_millis(now), workspace_id, id],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn update_agent(&self, workspace_id: &str, agent: &Agent) -> StoreResult<bool> {
        let (workspace_id, agent) = (workspace_id.to_owned(), agent.clone());
        self.write_aside(move |tx| {
            let changed = tx.execute(
                "UPDATE agents SET name = ?1, skills = ?2, languages = ?3, capacity = ?4, phone = ?5, calls = ?6
                 WHERE workspace_id = ?7 AND id = ?8",
                rusqlite::params![
                    agent.name,
                    serde_json::to_string(&agent.skills)?,
                    serde_json::to_string(&agent.languages)?,
                    agent.capacity,
                    agent.phone,
                    agent.calls,
                    workspace_id,
                    agent.id,
                ],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn snooze(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        agent_id: &str,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (workspace_id, conversation_id, agent_id) =
            (workspace_id.to_owned(), conversation_id.to_owned(), agent_id.to_owned());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "INSERT INTO conversation_snoozes (workspace_id, conversation_id, agent_id, until)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM conversations WHERE workspace_id = ?1 AND id = ?2
                                                     AND status = 'assigned' AND assignee = ?3)
                 ON CONFLICT (workspace_id, conversation_id) DO UPDATE SET agent_id = excluded.agent_id, until = excluded.until",
                rusqlite::params![workspace_id, conversation_id, agent_id, to_millis(until)],
            )? == 1)
        })
        .await
    }

    async fn snoozed_until(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let (workspace_id, conversation_id) = (workspace_id.to_owned(), conversation_id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT until FROM conversation_snoozes WHERE workspace_id = ?1 AND conversation_id = ?2",
                    (&workspace_id, &conversation_id),
                    |row| row.get::<_, i64>(0),
                )
                .optional()?
                .map(from_millis))
        })
        .await
    }

    async fn unsnooze(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<bool> {
        self.delete_row_of("conversation_snoozes", workspace_id, conversation_id).await
    }

    async fn snoozes(&self, workspace_id: &str, limit: usize) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT conversation_id, until FROM conversation_snoozes WHERE workspace_id = ?1 ORDER BY until LIMIT ?2",
            )?;
            let rows = statement
                .query_map(rusqlite::params![workspace_id, limit as i64], |row| {
                    Ok((row.get::<_, String>(0)?, from_millis(row.get(1)?)))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn hold_call(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        now: DateTime<Utc>,
        agent_id: Option<&str>,
    ) -> StoreResult<()> {
        let (workspace_id, conversation_id, agent_id) =
            (workspace_id.to_owned(), conversation_id.to_owned(), agent_id.map(str::to_owned));
        self.write_aside(move |tx| {
            tx.execute(
                "INSERT INTO call_holds (workspace_id, conversation_id, heard_at, agent_id, answered, on_line)
                 VALUES (?1, ?2, ?3, ?4, 0, 1)
                 ON CONFLICT (workspace_id, conversation_id) DO UPDATE SET heard_at = excluded.heard_at,
                 agent_id = excluded.agent_id, answered = 0, on_line = 1",
                rusqlite::params![workspace_id, conversation_id, to_millis(now), agent_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn answer_call(&self, workspace_id: &str, conversation_id: &str, agent_id: &str) -> StoreResult<bool> {
        let (workspace_id, conversation_id, agent_id) =
            (workspace_id.to_owned(), conversation_id.to_owned(), agent_id.to_owned());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "UPDATE call_holds SET answered = 1 WHERE workspace_id = ?1 AND conversation_id = ?2 AND agent_id = ?3",
                (&workspace_id, &conversation_id, &agent_id),
            )? == 1)
        })
        .await
    }

    async fn promise_call_back(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (workspace_id, conversation_id) = (workspace_id.to_owned(), conversation_id.to_owned());
        self.write_aside(move |tx| {
            tx.execute(
                "INSERT INTO call_holds (workspace_id, conversation_id, heard_at, agent_id, answered, on_line)
                 VALUES (?1, ?2, ?3, NULL, 0, 0)
                 ON CONFLICT (workspace_id, conversation_id) DO UPDATE SET heard_at = excluded.heard_at,
                 agent_id = NULL, answered = 0, on_line = 0",
                rusqlite::params![workspace_id, conversation_id, to_millis(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn end_call_hold(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<()> {
        let (workspace_id, conversation_id) = (workspace_id.to_owned(), conversation_id.to_owned());
        self.write_aside(move |tx| {
            tx.execute(
                "DELETE FROM call_holds WHERE workspace_id = ?1 AND conversation_id = ?2",
                (&workspace_id, &conversation_id),
            )?;
            Ok(())
        })
        .await
    }

    async fn call_hold(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<crate::agents::CallHold>> {
        let (workspace_id, conversation_id) = (workspace_id.to_owned(), conversation_id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT conversation_id, heard_at, agent_id, answered, on_line FROM call_holds
                     WHERE workspace_id = ?1 AND conversation_id = ?2",
                    (&workspace_id, &conversation_id),
                    |row| {
                        Ok(crate::agents::CallHold {
                            conversation_id: row.get(0)?,
                            heard_at: from_millis(row.get(1)?),
                            agent_id: row.get(2)?,
                            answered: row.get(3)?,
                            on_line: row.get(4)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn claim_routing(
        &self,
        _workspace_id: &str,
        _holder: &str,
        _now: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // One SQLite file has one server, whose router passes one at a time.
        Ok(true)
    }

    async fn release_routing(&self, _workspace_id: &str, _holder: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn call_holds(&self, workspace_id: &str, limit: usize) -> StoreResult<Vec<crate::agents::CallHold>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT conversation_id, heard_at, agent_id, answered, on_line FROM call_holds WHERE workspace_id = ?1
                 ORDER BY heard_at DESC LIMIT ?2",
            )?;
            let rows = statement
                .query_map(rusqlite::params![workspace_id, limit as i64], |row| {
                    Ok(crate::agents::CallHold {
                        conversation_id: row.get(0)?,
                        heard_at: from_millis(row.get(1)?),
                        agent_id: row.get(2)?,
                        answered: row.get(3)?,
                        on_line: row.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn waiting_queues(&self, workspace_id: &str) -> StoreResult<Vec<(String, u64)>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT coalesce(queue, 'default'), count(*) FROM conversations INDEXED BY conversations_status
                 WHERE workspace_id = ?1 AND status = 'queued' GROUP BY 1 ORDER BY 1",
            )?;
            let rows = statement.query_map([&workspace_id], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn list_conversations(
        &self,
        workspace_id: &str,
        filter: &ConversationFilter,
    ) -> StoreResult<Vec<Conversation>> {
        let (workspace_id, filter) = (workspace_id.to_owned(), filter.clone());
        self.read(move |conn| {
            let statuses = crate::agents::status_names(&filter.statuses);
            // Statuses are our own names, not input: they may be spelled into the SQL.
            let list = statuses.iter().map(|status| format!("'{status}'")).collect::<Vec<_>>().join(", ");
            let order = if statuses == ["queued"] { "queued_at, id" } else { "updated_at DESC, id" };
            let columns = if filter.without_state {
                statements::CONVERSATION_COLUMNS.replace(" state,", " '{}',")
            } else {
                statements::CONVERSATION_COLUMNS.to_owned()
            };
            let sql = format!(
                "SELECT {columns} FROM conversations WHERE workspace_id = ?1 AND status IN ({list})
                   AND (?2 IS NULL OR coalesce(queue, 'default') = ?2) AND (?3 IS NULL OR assignee = ?3) AND (?5 IS NULL OR profile_id = ?5)
                 ORDER BY {order} LIMIT ?4"
            );
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement
                .query_map(
                    rusqlite::params![
                        workspace_id,
                        filter.queue,
                        filter.assignee,
                        filter.limit as i64,
                        filter.profile_id
                    ],
                    statements::conversation_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(mut conversation, state)| {
                    conversation.state = statements::parse_json(&state)?;
                    Ok(conversation)
                })
                .collect()
        })
        .await
    }

    async fn record_people_change(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        change: &PeopleChange,
        messages: &[ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<(Conversation, Vec<IngestedEvent>)> {
        let (workspace_id, conversation_id, change, messages) =
            (workspace_id.to_owned(), conversation_id.to_owned(), change.clone(), messages.to_vec());
        let limits = self.profile_limits;
        self.write_events(move |tx, pending| {
            let now = to_millis(change.now);
            let changed = tx.execute(
                "UPDATE conversations SET status = ?1, assignee = ?2, queue = ?3,
                    queued_at = CASE WHEN ?1 = 'queued' AND (status != 'queued' OR queue IS NOT ?3) THEN ?4 ELSE queued_at END,
                    assigned_at = CASE WHEN ?1 = 'assigned' AND assignee IS NOT ?2 THEN ?4 ELSE assigned_at END,
                    updated_at = CASE WHEN ?5 THEN max(updated_at, ?4) ELSE updated_at END
                 WHERE workspace_id = ?6 AND id = ?7 AND status = ?8 AND assignee IS ?9",
                rusqlite::params![
                    change.status.as_str(),
                    change.assignee,
                    change.queue,
                    now,
                    !messages.is_empty(),
                    workspace_id,
                    conversation_id,
                    change.expected_status.as_str(),
                    change.expected_assignee,
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::Conflict("the conversation changed since it was read".into()));
            }
            statements::append_messages(tx, &workspace_id, &conversation_id, &messages)?;
            if let Some(delivery) = &change.delivery {
                super::engage::insert_delivery_rows(tx, &workspace_id, std::slice::from_ref(delivery))?;
            }
            let ingested = {
                let mut statements =
                    statements::SqliteTx { conn: tx, json: Default::default(), cache: None, pending };
                futures::executor::block_on(apply_batch(&mut statements, &workspace_id, &events, Utc::now(), &limits))?
            };
            let conversation = statements::conversation(tx, &workspace_id, &conversation_id)?
                .ok_or_else(|| StoreError::Backend("the conversation vanished while it was changed".into()))?;
            Ok((conversation, ingested))
        })
        .await
    }
}
