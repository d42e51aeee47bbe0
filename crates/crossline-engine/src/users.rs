//! Users of the console and the API: invited into one workspace with a role, they set a password
//! through the link (argon2id, kept only as its PHC string) and sign in with email and password.
//!
//! A user with the `agent` role answers customers as an agent of the contact centre: inviting one
//! (or giving a user that role) makes the agent — or links the workspace's agent with that email —
//! and taking the role away or removing the user removes the agent, whose conversations wait in
//! their queues again.

use crate::agents::{AgentError, ContactCentre, NewAgent};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use chrono::{DateTime, Duration, Utc};
use crossline_core::keys::{generate_token, hash_key};
use crossline_store::users::{Invitation, Role, User};
use crossline_store::{DynStore, StoreError};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

/// The prefix of an invitation's token.
pub const INVITATION_PREFIX: &str = "inv";
/// How long an invitation link works.
pub const INVITATION_DAYS: i64 = 7;
/// The shortest password accepted (NIST SP 800-63B asks for at least 8; we ask for a passphrase).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted (argon2 reads all of it; this bounds the work a request can ask).
pub const MAX_PASSWORD_BYTES: usize = 1_024;
/// An agent's capacity when the invitation does not give one.
pub const DEFAULT_AGENT_CAPACITY: u32 = 3;

/// A user to invite.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewUser {
    /// What they sign in with; unique on the server.
    pub email: String,
    /// Shown in the console.
    pub name: String,
    /// `admin`, `marketer`, `supervisor`, `agent` or `viewer`.
    pub role: String,
    /// For agents: skills routing matches.
    #[serde(default)]
    pub skills: Vec<String>,
    /// For agents: languages they answer in.
    #[serde(default)]
    pub languages: Vec<String>,
    /// For agents: conversations held at once (3 when not given).
    #[serde(default)]
    pub capacity: Option<u32>,
}

/// A change to a user.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserChange {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new role.
    #[serde(default)]
    pub role: Option<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> AgentError {
    AgentError::Invalid { field: field.to_owned(), message: message.into() }
}

fn role(name: &str) -> Result<Role, AgentError> {
    Role::parse(name.trim()).ok_or_else(|| invalid("role", "give one of admin, marketer, supervisor, agent, viewer"))
}

fn name(raw: &str) -> Result<String, AgentError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(invalid("name", "give the person's name (1-200 characters)"));
    }
    Ok(name.to_owned())
}

/// Whether a password may be set: long enough, bounded, not the email.
pub fn check_password(password: &str, email: &str) -> Result<(), AgentError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid("password", format!("use at most {MAX_PASSWORD_BYTES} bytes")));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid("password", format!("use at least {MIN_PASSWORD_CHARS} characters (a few words is fine)")));
    }
    if password.trim().eq_ignore_ascii_case(email) {
        return Err(invalid("password", "do not use your email address as your password"));
    }
    Ok(())
}

/// The argon2id PHC string of a password (OWASP's parameters: 19 MiB, 2 passes, 1 lane).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password up to its bound")
        .to_string()
}

/// Whether `password` matches a PHC string (false for a string that is not one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash nobody's password matches, verified when there is no user, so that an unknown email
/// costs the same time as a wrong password (no user enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&generate_token("decoy")))
}

/// What a session opened by `user` stands on: it ends when the password changes.
pub fn session_credential(user: &User) -> String {
    format!("user:{}:{}", user.id, user.password_hash.as_deref().unwrap_or(""))
}

/// The longest email accepted at sign-in (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// What a sign-in came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SignIn {
    /// The email and password match this user.
    Matched(Box<User>),
    /// They do not (or nobody has that email).
    Refused,
    /// The caller's gate said no once the attempt's turn came (throttled meanwhile).
    Held,
}

/// Users' engine.
pub struct Users {
    store: DynStore,
    contact_centre: Arc<ContactCentre>,
    /// Argon2 runs at most this many at once (19 MiB and a core each): a flood of sign-ins queues
    /// here instead of taking the machine's memory.
    hashing: Arc<tokio::sync::Semaphore>,
}

impl Users {
    /// Users over the store; agents are made through `contact_centre`.
    pub fn new(store: DynStore, contact_centre: Arc<ContactCentre>) -> Self {
        // Made now, not on the first unknown email's sign-in.
        let _ = decoy_hash();
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Users { store, contact_centre, hashing: Arc::new(tokio::sync::Semaphore::new(cores)) }
    }

    /// Run argon2 on a blocking thread, when a slot is free.
    async fn argon2<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
        let _slot = self.hashing.acquire().await.map_err(|err| StoreError::Backend(err.to_string()))?;
        tokio::task::spawn_blocking(work).await.map_err(|err| StoreError::Backend(format!("argon2 failed: {err}")))
    }

    fn invitation(now: DateTime<Utc>) -> (Invitation, String) {
        let token = generate_token(INVITATION_PREFIX);
        (Invitation { token_hash: hash_key(&token), expires_at: now + Duration::days(INVITATION_DAYS) }, token)
    }

    /// A new agent for this user.
    async fn agent_for(
        &self,
        workspace_id: &str,
        name: &str,
        email: &str,
        new: Option<&NewUser>,
        now: DateTime<Utc>,
    ) -> Result<String, AgentError> {
        // An agent made with a token (POST /api/v1/agents) is not linked: whoever kept its token
        // could act as this person.
        if self.store.agents(workspace_id).await?.iter().any(|agent| agent.email == email) {
            return Err(invalid(
                "email",
                "an agent with this email exists (made with an agent token): delete it first, or use another email",
            ));
        }
        let agent = NewAgent {
            name: name.to_owned(),
            email: email.to_owned(),
            skills: new.map(|new| new.skills.clone()).unwrap_or_default(),
            languages: new.map(|new| new.languages.clone()).unwrap_or_default(),
            capacity: new.and_then(|new| new.capacity).unwrap_or(DEFAULT_AGENT_CAPACITY),
            ..NewAgent::default()
        };
        // The agent's own token is dropped: this person signs in with their password.
        let (agent, _token) = self.contact_centre.create_agent(workspace_id, agent, now).await?;
        Ok(agent.id)
    }

    /// Invite a user; returns them with the invitation's token (only its SHA-256 is kept).
    pub async fn invite(
        &self,
        workspace_id: &str,
        new: NewUser,
        now: DateTime<Utc>,
    ) -> Result<(User, String), AgentError> {
        let role = role(&new.role)?;
        let name = name(&new.name)?;
        let email = crossline_core::identity::normalize_email(&new.email)
            .map_err(|_| invalid("email", "give the person's email address"))?;
        if self.store.user_by_email(&email).await?.is_some() {
            return Err(invalid("email", "a user with this email exists on this server"));
        }
        let agent = match role {
            Role::Agent => Some(self.agent_for(workspace_id, &name, &email, Some(&new), now).await?),
            _ => None,
        };
        let user = User {
            id: crossline_core::ids::new_id("usr"),
            workspace_id: workspace_id.to_owned(),
            email,
            name,
            role,
            password_hash: None,
            agent_id: agent.clone(),
            created_at: now,
            updated_at: now,
        };
        let (invitation, token) = Self::invitation(now);
        match self.store.create_user(&user, &invitation).await {
            Ok(()) => Ok((user, token)),
            Err(err) => {
                if let Some(agent_id) = agent {
                    let _ = self.contact_centre.remove_agent(workspace_id, &agent_id, now).await;
                }
                Err(match err {
                    StoreError::Conflict(_) => invalid("email", "a user with this email exists on this server"),
                    other => other.into(),
                })
            }
        }
    }

    /// A new invitation for a user (to set a forgotten password); the previous link stops working.
    pub async fn reinvite(&self, workspace_id: &str, id: &str, now: DateTime<Utc>) -> Result<String, AgentError> {
        let (invitation, token) = Self::invitation(now);
        if !self.store.set_invitation(workspace_id, id, &invitation).await? {
            return Err(AgentError::NotFound(format!("user {id}")));
        }
        Ok(token)
    }

    /// The user an invitation link is for, while it works.
    pub async fn invited(&self, token: &str, now: DateTime<Utc>) -> Result<Option<User>, StoreError> {
        if !token.starts_with("inv_") || token.len() > 128 {
            return Ok(None);
        }
        self.store.user_by_invitation(&hash_key(token), now).await
    }

    /// Accept an invitation: set the password (the link then stops working).
    pub async fn accept(&self, token: &str, password: &str, now: DateTime<Utc>) -> Result<User, AgentError> {
        let user = self.invited(token, now).await?.ok_or_else(|| AgentError::NotFound("invitation".into()))?;
        check_password(password, &user.email)?;
        let password = password.to_owned();
        let phc = self.argon2(move || hash_password(&password)).await?;
        self.store
            .accept_invitation(&hash_key(token), &phc, now)
            .await?
            .ok_or_else(|| AgentError::NotFound("invitation".into()))
    }

    /// Whether an email and password sign a user in. `may_try` is asked once the attempt's turn to
    /// run argon2 comes (a throttle that closed meanwhile holds it, so a burst of parallel guesses
    /// cannot all slip past a check made before any of them failed).
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        may_try: impl FnOnce() -> bool + Send,
    ) -> Result<SignIn, StoreError> {
        if password.len() > MAX_PASSWORD_BYTES || email.len() > MAX_EMAIL_BYTES {
            return Ok(SignIn::Refused);
        }
        let user = match crossline_core::identity::normalize_email(email) {
            Ok(email) => self.store.user_by_email(&email).await?,
            Err(_) => None,
        };
        let phc = user.as_ref().and_then(|user| user.password_hash.clone()).unwrap_or_else(|| decoy_hash().to_owned());
        let password = password.to_owned();
        let _slot = self.hashing.acquire().await.map_err(|err| StoreError::Backend(err.to_string()))?;
        if !may_try() {
            return Ok(SignIn::Held);
        }
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
            .await
            .map_err(|err| StoreError::Backend(format!("argon2 failed: {err}")))?;

        Ok(match user.filter(|user| matches && user.password_hash.is_some()) {
            Some(user) => SignIn::Matched(Box::new(user)),
            None => SignIn::Refused,
        })
    }

    /// Change a user's name or role. Becoming an agent makes (or links) the agent; no longer being
    /// one removes it, and its conversations wait in their queues again.
    pub async fn change(
        &self,
        workspace_id: &str,
        id: &str,
        change: UserChange,
        now: DateTime<Utc>,
    ) -> Result<User, AgentError> {
        let mut user =
            self.store.user(workspace_id, id).await?.ok_or_else(|| AgentError::NotFound(format!("user {id}")))?;
        if let Some(new_name) = &change.name {
            user.name = name(new_name)?;
        }
        if let Some(new_role) = &change.role {
            let new_role = role(new_role)?;
            let has_agent = match &user.agent_id {
                Some(agent_id) => self.store.agent(workspace_id, agent_id).await?.is_some(),
                None => false,
            };
            if new_role == Role::Agent && !has_agent {
                user.agent_id = Some(self.agent_for(workspace_id, &user.name, &user.email, None, now).await?);
            }
            if new_role != Role::Agent
                && let Some(agent_id) = user.agent_id.take()
            {
                self.forget_agent(workspace_id, &agent_id, now).await?;
            }
            user.role = new_role;
        }
        user.updated_at = now;
        if !self.store.update_user(&user).await? {
            return Err(AgentError::NotFound(format!("user {id}")));
        }
        Ok(user)
    }

    async fn forget_agent(&self, workspace_id: &str, agent_id: &str, now: DateTime<Utc>) -> Result<(), AgentError> {
        match self.contact_centre.remove_agent(workspace_id, agent_id, now).await {
            Ok(_) | Err(AgentError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Remove a user: their sessions end at once; their agent goes with them.
    pub async fn remove(&self, workspace_id: &str, id: &str, now: DateTime<Utc>) -> Result<(), AgentError> {
        let user =
            self.store.user(workspace_id, id).await?.ok_or_else(|| AgentError::NotFound(format!("user {id}")))?;
        if !self.store.delete_user(workspace_id, id).await? {
            return Err(AgentError::NotFound(format!("user {id}")));
        }
        if let Some(agent_id) = &user.agent_id {
            self.forget_agent(workspace_id, agent_id, now).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_argon2id_and_verify_only_themselves() {
        let phc = hash_password("correct horse battery staple");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapl", &phc));
        assert!(!verify_password("anything", "not a phc string"));
        assert_ne!(phc, hash_password("correct horse battery staple"), "a fresh salt every time");
    }

    #[test]
    fn passwords_are_long_bounded_and_not_the_email() {
        assert!(check_password("correct horse battery staple", "ann@example.com").is_ok());
        for bad in ["short", "ann@example.com", &"x".repeat(MAX_PASSWORD_BYTES + 1)] {
            assert!(matches!(check_password(bad, "ann@example.com"), Err(AgentError::Invalid { .. })), "{bad}");
        }
    }
}
