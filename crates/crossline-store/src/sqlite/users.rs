//! [`crate::UserStore`] on SQLite.

#[allow(unused_imports)]
use super::*;
use crate::users::{Invitation, Role, User};
use crate::{from_millis, to_millis};

const USER_COLUMNS: &str = "id, workspace_id, email, name, role, password_hash, agent_id, created_at, updated_at";

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        email: row.get(2)?,
        name: row.get(3)?,
        // An unknown role (a newer version's) reads as the least one.
        role: Role::parse(&row.get::<_, String>(4)?).unwrap_or(Role::Viewer),
        password_hash: row.get(5)?,
        agent_id: row.get(6)?,
        created_at: from_millis(row.get(7)?),
        updated_at: from_millis(row.get(8)?),
    })
}

#[async_trait]
impl crate::UserStore for SqliteStore {
    async fn create_user(&self, user: &User, invitation: &Invitation) -> StoreResult<()> {
        let (user, invitation) = (user.clone(), invitation.clone());
        self.write_aside(move |tx| {
            let taken: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM users WHERE email = ?1)", [&user.email], |row| row.get(0))?;
            if taken {
                return Err(StoreError::Conflict(format!("a user with the email {} exists", user.email)));
            }
            tx.execute(
                "INSERT INTO users (id, workspace_id, email, name, role, password_hash, agent_id, invite_hash,
                                    invite_expires_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                rusqlite::params![
                    user.id,
                    user.workspace_id,
                    user.email,
                    user.name,
                    user.role.as_str(),
                    user.password_hash,
                    user.agent_id,
                    invitation.token_hash,
                    to_millis(invitation.expires_at),
                    to_millis(user.created_at),
                    to_millis(user.updated_at),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn user(&self, workspace_id: &str, id: &str) -> StoreResult<Option<User>> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1 AND workspace_id = ?2"),
                    (&id, &workspace_id),
                    user_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"), [&id], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"), [&email], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn users(&self, workspace_id: &str) -> StoreResult<Vec<User>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement =
                conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users WHERE workspace_id = ?1 ORDER BY email"))?;
            let users = statement.query_map([&workspace_id], user_from_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(users)
        })
        .await
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        let user = user.clone();
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "UPDATE users SET name = ?3, role = ?4, agent_id = ?5, updated_at = ?6 WHERE id = ?1 AND workspace_id = ?2",
                rusqlite::params![
                    user.id,
                    user.workspace_id,
                    user.name,
                    user.role.as_str(),
                    user.agent_id,
                    to_millis(user.updated_at)
                ],
            )? == 1)
        })
        .await
    }

    async fn set_invitation(&self, workspace_id: &str, id: &str, invitation: &Invitation) -> StoreResult<bool> {
        let (workspace_id, id, invitation) = (workspace_id.to_owned(), id.to_owned(), invitation.clone());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "UPDATE users SET invite_hash = ?3, invite_expires_at = ?4 WHERE id = ?1 AND workspace_id = ?2",
                rusqlite::params![id, workspace_id, invitation.token_hash, to_millis(invitation.expires_at)],
            )? == 1)
        })
        .await
    }

    async fn user_by_invitation(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<User>> {
        let token_hash = token_hash.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE invite_hash = ?1 AND invite_expires_at > ?2"),
                    rusqlite::params![token_hash, to_millis(now)],
                    user_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let (token_hash, password_hash) = (token_hash.to_owned(), password_hash.to_owned());
        self.write_aside(move |tx| {
            let id: Option<String> = tx
                .query_row(
                    "SELECT id FROM users WHERE invite_hash = ?1 AND invite_expires_at > ?2",
                    rusqlite::params![token_hash, to_millis(now)],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(id) = id else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE users SET password_hash = ?2, invite_hash = NULL, invite_expires_at = NULL, updated_at = ?3
                 WHERE id = ?1",
                rusqlite::params![id, password_hash, to_millis(now)],
            )?;
            Ok(tx
                .query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"), [&id], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn delete_user(&self, workspace_id: &str, id: &str) -> StoreResult<bool> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.write_aside(move |tx| {
            tx.execute(
                "DELETE FROM console_sessions WHERE user_id IN (SELECT id FROM users WHERE id = ?1 AND workspace_id = ?2)",
                (&id, &workspace_id),
            )?;
            Ok(tx.execute("DELETE FROM users WHERE id = ?1 AND workspace_id = ?2", (&id, &workspace_id))? == 1)
        })
        .await
    }
}
