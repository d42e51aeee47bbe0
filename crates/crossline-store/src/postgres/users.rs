//! [`crate::UserStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;
use crate::users::{Invitation, Role, User};
use crate::{from_millis, to_millis};
use tokio_postgres::Row;

const USER_COLUMNS: &str = "id, workspace_id, email, name, role, password_hash, agent_id, created_at, updated_at";

fn user_from_row(row: &Row) -> User {
    User {
        id: row.get(0),
        workspace_id: row.get(1),
        email: row.get(2),
        name: row.get(3),
        // An unknown role (a newer version's) reads as the least one.
        role: Role::parse(row.get(4)).unwrap_or(Role::Viewer),
        password_hash: row.get(5),
        agent_id: row.get(6),
        created_at: from_millis(row.get(7)),
        updated_at: from_millis(row.get(8)),
    }
}

#[async_trait]
impl crate::UserStore for PgStore {
    async fn create_user(&self, user: &User, invitation: &Invitation) -> StoreResult<()> {
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                &client
                    .prepare_cached(
                        "INSERT INTO users (id, workspace_id, email, name, role, password_hash, agent_id, invite_hash,
                                    invite_expires_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .await?,
                &[
                    &user.id,
                    &user.workspace_id,
                    &user.email,
                    &user.name,
                    &user.role.as_str(),
                    &user.password_hash,
                    &user.agent_id,
                    &invitation.token_hash,
                    &to_millis(invitation.expires_at),
                    &to_millis(user.created_at),
                    &to_millis(user.updated_at),
                ],
            )
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::Conflict(format!("a user with the email {} exists", user.email)))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn user(&self, workspace_id: &str, id: &str) -> StoreResult<Option<User>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt_cached(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND workspace_id = $2"),
                &[&id, &workspace_id],
            )
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let client = self.pool.get().await?;
        let row = client.query_opt_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), &[&id]).await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let client = self.pool.get().await?;
        let row =
            client.query_opt_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"), &[&email]).await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn users(&self, workspace_id: &str) -> StoreResult<Vec<User>> {
        let client = self.pool.get().await?;
        let rows = client
            .query_cached(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE workspace_id = $1 ORDER BY email"),
                &[&workspace_id],
            )
            .await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client.prepare_cached("UPDATE users SET name = $3, role = $4, agent_id = $5, updated_at = $6 WHERE id = $1 AND workspace_id = $2").await?,
                &[&user.id, &user.workspace_id, &user.name, &user.role.as_str(), &user.agent_id, &to_millis(user.updated_at)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn set_invitation(&self, workspace_id: &str, id: &str, invitation: &Invitation) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE users SET invite_hash = $3, invite_expires_at = $4 WHERE id = $1 AND workspace_id = $2",
                    )
                    .await?,
                &[&id, &workspace_id, &invitation.token_hash, &to_millis(invitation.expires_at)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn user_by_invitation(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<User>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt_cached(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE invite_hash = $1 AND invite_expires_at > $2"),
                &[&token_hash, &to_millis(now)],
            )
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let client = self.pool.get().await?;
        // One statement: two acceptances of one link at once set one password, the other finds nothing.
        let row = client
            .query_opt_cached(
                &format!(
                    "UPDATE users SET password_hash = $2, invite_hash = NULL, invite_expires_at = NULL, updated_at = $3
                     WHERE invite_hash = $1 AND invite_expires_at > $3 RETURNING {USER_COLUMNS}"
                ),
                &[&token_hash, &password_hash, &to_millis(now)],
            )
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn delete_user(&self, workspace_id: &str, id: &str) -> StoreResult<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM console_sessions WHERE user_id IN (SELECT id FROM users WHERE id = $1 AND workspace_id = $2)").await?,
            &[&id, &workspace_id],
        )
        .await?;
        let deleted = tx
            .execute(
                &tx.prepare_cached("DELETE FROM users WHERE id = $1 AND workspace_id = $2").await?,
                &[&id, &workspace_id],
            )
            .await?;
        tx.commit().await?;
        Ok(deleted == 1)
    }
}
