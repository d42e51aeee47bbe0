//! [`crate::ConversationStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::ConversationStore for PgStore {
    async fn open_conversation(
        &self,
        workspace_id: &str,
        profile_id: &str,
        bot: &str,
        active_since: DateTime<Utc>,
    ) -> StoreResult<Option<crate::Conversation>> {
        let client = self.pool.get().await?;
        statements::open_conversation(&client, workspace_id, profile_id, bot, active_since).await
    }

    async fn save_conversation(
        &self,
        workspace_id: &str,
        conversation: &crate::Conversation,
        messages: &[crate::ConversationMessage],
    ) -> StoreResult<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        statements::save_conversation(&tx, workspace_id, conversation, messages).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_turn(
        &self,
        workspace_id: &str,
        conversation: &crate::Conversation,
        read: &crate::TurnRead,
        messages: &[crate::ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<Vec<IngestedEvent>> {
        retried_transaction!(self, |tx| async {
            // Every turn of the customer's locks their profile first: nobody changes the conversation
            // between this check and the write, and no merge moves it meanwhile. A profile merged away
            // (or erased) since the turn read it is a conflict: the turn is read again, for the survivor
            // (or not at all), rather than written under a tombstone.
            // Both statements go out at once (prepared first, so they are sent in this order): the
            // lock, then the read of the open conversation, which PostgreSQL runs once it holds it.
            tx.prepare_cached(statements::LOCK_PROFILE).await?;
            tx.prepare_cached(statements::OPEN_CONVERSATION).await?;
            let (locked, open) = futures::try_join!(
                async {
                    Ok::<_, StoreError>(
                        tx.query_opt_cached(statements::LOCK_PROFILE, &[&workspace_id, &conversation.profile_id])
                            .await?,
                    )
                },
                statements::open_conversation(
                    &tx,
                    workspace_id,
                    &conversation.profile_id,
                    &conversation.bot,
                    read.active_since,
                ),
            )?;
            if locked.is_none() || open.map(|open| (open.id, open.state)) != read.open {
                return Err(crate::turn_conflict());
            }
            statements::save_conversation(&tx, workspace_id, conversation, messages).await?;
            let mut statements = statements::PgTx { tx: &tx, locked: Some(&conversation.profile_id) };
            apply_batch(&mut statements, workspace_id, &events, Utc::now(), &self.profile_limits).await
        }
        .await)
    }

    async fn conversation(&self, workspace_id: &str, id: &str) -> StoreResult<Option<crate::Conversation>> {
        let client = self.pool.get().await?;
        statements::conversation(&client, workspace_id, id).await
    }

    async fn conversation_messages(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<Vec<crate::ConversationMessage>> {
        let client = self.pool.get().await?;
        statements::conversation_messages(&client, workspace_id, id).await
    }

    async fn missed_utterances(
        &self,
        workspace_id: &str,
        bot: &str,
        limit: usize,
    ) -> StoreResult<Vec<crate::MissedUtterance>> {
        let client = self.pool.get().await?;
        statements::missed_utterances(&client, workspace_id, bot, limit).await
    }
}
