//! People who use the console and the API as themselves: a role in one workspace, a password
//! (argon2id, kept only as its PHC string) set through an invitation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a user may do in their workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the workspace: users, keys, channels, settings.
    Admin,
    /// Audiences and messages: profiles, segments, templates, campaigns, bots.
    Marketer,
    /// The contact centre: agents, queues, every conversation, the supervisor view.
    Supervisor,
    /// The inbox and the conversations they are given or take.
    Agent,
    /// Reads what the others see; changes nothing.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [Role::Admin, Role::Marketer, Role::Supervisor, Role::Agent, Role::Viewer];

    /// The name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Marketer => "marketer",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
            Role::Viewer => "viewer",
        }
    }

    /// Read a name; None for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person with a role in one workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// `usr_...`.
    pub id: String,
    /// The one workspace the user belongs to.
    pub workspace_id: String,
    /// Lower-case; unique on the server (it is what the user signs in with).
    pub email: String,
    /// Shown in the console.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The argon2id PHC string; None until an invitation is accepted.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    /// The agent the user answers customers as (role `agent`).
    pub agent_id: Option<String>,
    /// When the user was invited.
    pub created_at: DateTime<Utc>,
    /// When the role, name or password last changed.
    pub updated_at: DateTime<Utc>,
}

/// An invitation: the SHA-256 of its token (the link holds the token) and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// The end of its validity.
    pub expires_at: DateTime<Utc>,
}
