//! [`crate::ConversationStore`] on SQLite.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::ConversationStore for SqliteStore {
    async fn open_conversation(
        &self,
        workspace_id: &str,
        profile_id: &str,
        bot: &str,
        active_since: DateTime<Utc>,
    ) -> StoreResult<Option<crate::Conversation>> {
        let (workspace_id, profile_id, bot) = (workspace_id.to_owned(), profile_id.to_owned(), bot.to_owned());
        self.read(move |conn| statements::open_conversation(conn, &workspace_id, &profile_id, &bot, active_since)).await
    }

    async fn save_conversation(
        &self,
        workspace_id: &str,
        conversation: &crate::Conversation,
        messages: &[crate::ConversationMessage],
    ) -> StoreResult<()> {
        let (workspace_id, conversation, messages) = (workspace_id.to_owned(), conversation.clone(), messages.to_vec());
        self.write(move |tx| statements::save_conversation(tx, &workspace_id, &conversation, &messages)).await
    }

    async fn record_turn(
        &self,
        workspace_id: &str,
        conversation: &crate::Conversation,
        _read: &crate::TurnRead,
        messages: &[crate::ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<Vec<IngestedEvent>> {
        // One SQLite file is one node, whose turn lock already serialises each customer's turns, so
        // the conversation cannot have changed since the turn read it: no check on the (busiest)
        // writer thread. PostgreSQL, shared by nodes, checks.
        let (workspace_id, conversation, messages) = (workspace_id.to_owned(), conversation.clone(), messages.to_vec());
        let limits = self.profile_limits;
        self.write_events(move |tx, pending| {
            statements::save_conversation(tx, &workspace_id, &conversation, &messages)?;
            let mut statements = statements::SqliteTx { conn: tx, json: Default::default(), cache: None, pending };
            futures::executor::block_on(apply_batch(&mut statements, &workspace_id, &events, Utc::now(), &limits))
        })
        .await
    }

    async fn conversation(&self, workspace_id: &str, id: &str) -> StoreResult<Option<crate::Conversation>> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.read(move |conn| statements::conversation(conn, &workspace_id, &id)).await
    }

    async fn conversation_messages(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<Vec<crate::ConversationMessage>> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.read(move |conn| statements::conversation_messages(conn, &workspace_id, &id)).await
    }

    async fn missed_utterances(
        &self,
        workspace_id: &str,
        bot: &str,
        limit: usize,
    ) -> StoreResult<Vec<crate::MissedUtterance>> {
        let (workspace_id, bot) = (workspace_id.to_owned(), bot.to_owned());
        self.read(move |conn| statements::missed_utterances(conn, &workspace_id, &bot, limit)).await
    }
}
