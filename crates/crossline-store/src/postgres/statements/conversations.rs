//! Conversations and their messages.

#[allow(unused_imports)]
use super::*;

macro_rules! conversation_columns {
    () => {
        "id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at, queue, assignee, queued_at, assigned_at"
    };
}

pub(in crate::postgres) const CONVERSATION_COLUMNS: &str = conversation_columns!();

pub(in crate::postgres) fn conversation_from_row(row: &Row) -> crate::Conversation {
    crate::Conversation {
        id: row.get(0),
        profile_id: row.get(1),
        bot: row.get(2),
        bot_version: row.get(3),
        status: crossline_core::ConversationStatus::parse(row.get(4))
            .unwrap_or(crossline_core::ConversationStatus::Bot),
        channel: row.get(5),
        state: row.get(6),
        created_at: from_millis(row.get(7)),
        updated_at: from_millis(row.get(8)),
        queue: row.get(9),
        assignee: row.get(10),
        queued_at: row.get::<_, Option<i64>>(11).map(from_millis),
        assigned_at: row.get::<_, Option<i64>>(12).map(from_millis),
    }
}

/// A customer's open conversation with a bot: not resolved, and active since `$4` (or waiting
/// for, or with, an agent).
pub(in crate::postgres) const OPEN_CONVERSATION: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations
     WHERE workspace_id = $1 AND profile_id = $2 AND bot = $3 AND status != 'resolved'
       AND (updated_at >= $4 OR status IN ('queued', 'assigned'))
     ORDER BY updated_at DESC LIMIT 1"
);

pub(in crate::postgres) async fn open_conversation(
    client: &impl GenericClient,
    workspace_id: &str,
    profile_id: &str,
    bot: &str,
    active_since: DateTime<Utc>,
) -> StoreResult<Option<crate::Conversation>> {
    let row = client
        .query_opt_cached(OPEN_CONVERSATION, &[&workspace_id, &profile_id, &bot, &to_millis(active_since)])
        .await?;
    Ok(row.as_ref().map(conversation_from_row))
}

pub(in crate::postgres) async fn conversation(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<crate::Conversation>> {
    let row = client
        .query_opt_cached(
            &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = $1 AND id = $2"),
            &[&workspace_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(conversation_from_row))
}

pub(in crate::postgres) async fn save_conversation(
    tx: &deadpool_postgres::Transaction<'_>,
    workspace_id: &str,
    conversation: &crate::Conversation,
    messages: &[crate::ConversationMessage],
) -> StoreResult<()> {
    // The only status a turn changes is the bot's handing off (bot → queued, with a new queued_at):
    // whatever people did meanwhile (took, moved, resolved, handed back) stands, and a turn that read
    // the conversation before they did cannot write its old status back. Both statements go out at
    // once (prepared first, so they are sent, and run, in this order).
    tx.prepare_cached(UPSERT_CONVERSATION).await?;
    tx.prepare_cached(APPEND_MESSAGES).await?;
    let upsert = async {
        tx.execute_cached(
            UPSERT_CONVERSATION,
            &[
                &workspace_id,
                &conversation.id,
                &conversation.profile_id,
                &conversation.bot,
                &conversation.bot_version,
                &conversation.status.as_str(),
                &conversation.channel,
                &conversation.state,
                &to_millis(conversation.created_at),
                &to_millis(conversation.updated_at),
                &conversation.queue,
                &conversation.queued_at.map(to_millis),
            ],
        )
        .await?;
        Ok::<_, StoreError>(())
    };
    futures::try_join!(upsert, append_messages(tx, workspace_id, &conversation.id, messages))?;
    Ok(())
}

const APPEND_MESSAGES: &str =
    "INSERT INTO conversation_messages (workspace_id, conversation_id, seq, author, channel, text, created_at, missed)
             SELECT $1, $2, last.seq + m.ord, m.author, m.channel, m.text, m.created_at, m.missed
             FROM (SELECT coalesce(max(seq), 0)::int8 AS seq FROM conversation_messages
                   WHERE workspace_id = $1 AND conversation_id = $2) last,
                  unnest($3::text[], $4::text[], $5::text[], $6::int8[], $7::bool[])
                    WITH ORDINALITY AS m(author, channel, text, created_at, missed, ord)";

const UPSERT_CONVERSATION: &str = "INSERT INTO conversations (workspace_id, id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at, queue, queued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (workspace_id, id) DO UPDATE SET profile_id = excluded.profile_id,
            status = CASE WHEN conversations.status = 'bot' AND excluded.status = 'queued' AND excluded.queued_at IS DISTINCT FROM conversations.queued_at THEN 'queued' ELSE conversations.status END,
            queue = CASE WHEN conversations.status = 'bot' AND excluded.status = 'queued' AND excluded.queued_at IS DISTINCT FROM conversations.queued_at THEN excluded.queue ELSE conversations.queue END,
            queued_at = CASE WHEN conversations.status = 'bot' AND excluded.status = 'queued' AND excluded.queued_at IS DISTINCT FROM conversations.queued_at THEN excluded.queued_at ELSE conversations.queued_at END,
            channel = excluded.channel, state = excluded.state, updated_at = excluded.updated_at";

/// Messages appended after those the conversation has: the next numbers after its last, in the
/// order given (one statement).
pub(in crate::postgres) async fn append_messages(
    tx: &deadpool_postgres::Transaction<'_>,
    workspace_id: &str,
    conversation_id: &str,
    messages: &[crate::ConversationMessage],
) -> StoreResult<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let authors: Vec<&str> = messages.iter().map(|message| message.author.as_str()).collect();
    let channels: Vec<&str> = messages.iter().map(|message| message.channel.as_str()).collect();
    let texts: Vec<&str> = messages.iter().map(|message| message.text.as_str()).collect();
    let times: Vec<i64> = messages.iter().map(|message| to_millis(message.created_at)).collect();
    let missed: Vec<bool> = messages.iter().map(|message| message.missed).collect();
    tx.execute_cached(
        APPEND_MESSAGES,
        &[&workspace_id, &conversation_id, &authors, &channels, &texts, &times, &missed],
    )
    .await?;
    Ok(())
}

pub(in crate::postgres) async fn conversation_messages(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Vec<crate::ConversationMessage>> {
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "SELECT author, channel, text, created_at, missed FROM conversation_messages
             WHERE workspace_id = $1 AND conversation_id = $2 ORDER BY seq",
                )
                .await?,
            &[&workspace_id, &id],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| crate::ConversationMessage {
            author: crossline_core::Author::parse(row.get(0)).unwrap_or(crossline_core::Author::Bot),
            channel: row.get(1),
            text: row.get(2),
            created_at: from_millis(row.get(3)),
            missed: row.get(4),
        })
        .collect())
}

pub(in crate::postgres) async fn missed_utterances(
    client: &impl GenericClient,
    workspace_id: &str,
    bot: &str,
    limit: usize,
) -> StoreResult<Vec<crate::MissedUtterance>> {
    let rows = client
        .query(
            &client.prepare_cached("SELECT m.text, m.channel, m.conversation_id, m.created_at
             FROM conversation_messages m JOIN conversations c ON c.workspace_id = m.workspace_id AND c.id = m.conversation_id
             WHERE m.workspace_id = $1 AND m.missed AND c.bot = $2
             ORDER BY m.created_at DESC LIMIT $3").await?,
            &[&workspace_id, &bot, &(limit as i64)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| crate::MissedUtterance {
            text: row.get(0),
            channel: row.get(1),
            conversation_id: row.get(2),
            created_at: from_millis(row.get(3)),
        })
        .collect())
}
