//! Conversations and their messages.

#[allow(unused_imports)]
use super::*;

pub(in crate::sqlite) fn conversation_from_row(row: &Row<'_>) -> rusqlite::Result<(crate::Conversation, String)> {
    Ok((
        crate::Conversation {
            id: row.get(0)?,
            profile_id: row.get(1)?,
            bot: row.get(2)?,
            bot_version: row.get(3)?,
            status: crossline_core::ConversationStatus::parse(&row.get::<_, String>(4)?)
                .unwrap_or(crossline_core::ConversationStatus::Bot),
            channel: row.get(5)?,
            state: Value::Null,
            created_at: from_millis(row.get(7)?),
            updated_at: from_millis(row.get(8)?),
            queue: row.get(9)?,
            assignee: row.get(10)?,
            queued_at: row.get::<_, Option<i64>>(11)?.map(from_millis),
            assigned_at: row.get::<_, Option<i64>>(12)?.map(from_millis),
        },
        row.get(6)?,
    ))
}

pub(in crate::sqlite) fn open_conversation(
    conn: &Connection,
    workspace_id: &str,
    profile_id: &str,
    bot: &str,
    active_since: DateTime<Utc>,
) -> StoreResult<Option<crate::Conversation>> {
    let row = conn
        .prepare_cached(OPEN_CONVERSATION)?
        .query_row(params![workspace_id, profile_id, bot, to_millis(active_since)], conversation_from_row)
        .optional()?;
    row.map(|(mut conversation, state)| {
        conversation.state = parse_json(&state)?;
        Ok(conversation)
    })
    .transpose()
}

pub(in crate::sqlite) fn conversation(
    conn: &Connection,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<crate::Conversation>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = ?1 AND id = ?2"
        ))?
        .query_row((workspace_id, id), conversation_from_row)
        .optional()?;
    row.map(|(mut conversation, state)| {
        conversation.state = parse_json(&state)?;
        Ok(conversation)
    })
    .transpose()
}

pub(in crate::sqlite) fn save_conversation(
    conn: &Connection,
    workspace_id: &str,
    conversation: &crate::Conversation,
    messages: &[crate::ConversationMessage],
) -> StoreResult<()> {
    // The only status a turn changes is the bot's handing off (bot → queued, with a new queued_at):
    // whatever people did meanwhile (took, moved, resolved, handed back) stands, and a turn that read
    // the conversation before they did cannot write its old status back.
    conn.prepare_cached(
        "INSERT INTO conversations (workspace_id, id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at, queue, queued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (workspace_id, id) DO UPDATE SET profile_id = excluded.profile_id,
            status = CASE WHEN conversations.status = 'bot' AND excluded.status = 'queued' AND excluded.queued_at IS NOT conversations.queued_at THEN 'queued' ELSE conversations.status END,
            queue = CASE WHEN conversations.status = 'bot' AND excluded.status = 'queued' AND excluded.queued_at IS NOT conversations.queued_at THEN excluded.queue ELSE conversations.queue END,
            queued_at = CASE WHEN conversations.status = 'bot' AND excluded.status = 'queued' AND excluded.queued_at IS NOT conversations.queued_at THEN excluded.queued_at ELSE conversations.queued_at END,
            channel = excluded.channel, state = excluded.state, updated_at = excluded.updated_at",
    )?
    .execute(params![
        workspace_id,
        conversation.id,
        conversation.profile_id,
        conversation.bot,
        conversation.bot_version,
        conversation.status.as_str(),
        conversation.channel,
        serde_json::to_string(&conversation.state)?,
        to_millis(conversation.created_at),
        to_millis(conversation.updated_at),
        conversation.queue,
        conversation.queued_at.map(to_millis),
    ])?;
    append_messages(conn, workspace_id, &conversation.id, messages)
}

/// Append messages to a conversation, after those it has.
pub(in crate::sqlite) fn append_messages(
    conn: &Connection,
    workspace_id: &str,
    conversation_id: &str,
    messages: &[crate::ConversationMessage],
) -> StoreResult<()> {
    let mut seq: i64 = conn.query_row(
        "SELECT coalesce(max(seq), 0) FROM conversation_messages WHERE workspace_id = ?1 AND conversation_id = ?2",
        (workspace_id, conversation_id),
        |row| row.get(0),
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO conversation_messages (workspace_id, conversation_id, seq, author, channel, text, created_at, missed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for message in messages {
        seq += 1;
        insert.execute(params![
            workspace_id,
            conversation_id,
            seq,
            message.author.as_str(),
            message.channel,
            message.text,
            to_millis(message.created_at),
            message.missed
        ])?;
    }
    Ok(())
}

pub(in crate::sqlite) fn conversation_messages(
    conn: &Connection,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Vec<crate::ConversationMessage>> {
    let mut statement = conn.prepare_cached(
        "SELECT author, channel, text, created_at, missed FROM conversation_messages
         WHERE workspace_id = ?1 AND conversation_id = ?2 ORDER BY seq",
    )?;
    let rows = statement.query_map((workspace_id, id), |row| {
        Ok(crate::ConversationMessage {
            author: crossline_core::Author::parse(&row.get::<_, String>(0)?).unwrap_or(crossline_core::Author::Bot),
            channel: row.get(1)?,
            text: row.get(2)?,
            created_at: from_millis(row.get(3)?),
            missed: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(in crate::sqlite) fn missed_utterances(
    conn: &Connection,
    workspace_id: &str,
    bot: &str,
    limit: usize,
) -> StoreResult<Vec<crate::MissedUtterance>> {
    let mut statement = conn.prepare_cached(
        "SELECT m.text, m.channel, m.conversation_id, m.created_at
         FROM conversation_messages m INDEXED BY conversation_messages_missed
         JOIN conversations c ON c.workspace_id = m.workspace_id AND c.id = m.conversation_id
         WHERE m.workspace_id = ?1 AND m.missed = 1 AND c.bot = ?2
         ORDER BY m.created_at DESC LIMIT ?3",
    )?;
    let rows = statement.query_map(params![workspace_id, bot, limit as i64], |row| {
        Ok(crate::MissedUtterance {
            text: row.get(0)?,
            channel: row.get(1)?,
            conversation_id: row.get(2)?,
            created_at: from_millis(row.get(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
