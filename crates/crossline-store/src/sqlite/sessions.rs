//! [`crate::SessionStore`] on SQLite.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::SessionStore for SqliteStore {
    async fn create_session(&self, session: &crate::ConsoleSession) -> StoreResult<()> {
        let session = session.clone();
        self.write_aside(move |tx| {
            let now = crate::to_millis(session.created_at);
            tx.execute("DELETE FROM console_sessions WHERE expires_at <= ?1", [now])?;
            tx.execute(
                "INSERT INTO console_sessions (id_hash, credential_hash, created_at, expires_at, user_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    session.id_hash,
                    session.credential_hash,
                    now,
                    crate::to_millis(session.expires_at),
                    session.user_id
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<crate::ConsoleSession>> {
        let id_hash = id_hash.to_owned();
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT credential_hash, created_at, expires_at, user_id FROM console_sessions
                     WHERE id_hash = ?1 AND expires_at > ?2",
                    rusqlite::params![id_hash, crate::to_millis(now)],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, Option<String>>(3)?,
                        ))
                    },
                )
                .optional()?;
            Ok(row.map(|(credential_hash, created_at, expires_at, user_id)| crate::ConsoleSession {
                id_hash,
                credential_hash,
                user_id,
                created_at: crate::from_millis(created_at),
                expires_at: crate::from_millis(expires_at),
            }))
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        let id_hash = id_hash.to_owned();
        self.write_aside(move |tx| {
            tx.execute("DELETE FROM console_sessions WHERE id_hash = ?1", [id_hash])?;
            Ok(())
        })
        .await
    }
}
