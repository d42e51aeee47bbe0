//! [`crate::SessionStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::SessionStore for PgStore {
    async fn create_session(&self, session: &crate::ConsoleSession) -> StoreResult<()> {
        let client = self.pool.get().await?;
        let now = crate::to_millis(session.created_at);
        client
            .execute(&client.prepare_cached("DELETE FROM console_sessions WHERE expires_at <= $1").await?, &[&now])
            .await?;
        client
            .execute(
                &client.prepare_cached("INSERT INTO console_sessions (id_hash, credential_hash, created_at, expires_at, user_id) VALUES ($1, $2, $3, $4, $5)").await?,
                &[&session.id_hash, &session.credential_hash, &now, &crate::to_millis(session.expires_at), &session.user_id],
            )
            .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<crate::ConsoleSession>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(
                        "SELECT credential_hash, created_at, expires_at, user_id FROM console_sessions
                 WHERE id_hash = $1 AND expires_at > $2",
                    )
                    .await?,
                &[&id_hash, &crate::to_millis(now)],
            )
            .await?;
        Ok(row.map(|row| crate::ConsoleSession {
            id_hash: id_hash.to_owned(),
            credential_hash: row.get(0),
            user_id: row.get(3),
            created_at: crate::from_millis(row.get(1)),
            expires_at: crate::from_millis(row.get(2)),
        }))
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(&client.prepare_cached("DELETE FROM console_sessions WHERE id_hash = $1").await?, &[&id_hash])
            .await?;
        Ok(())
    }
}
