//! Records of the contact centre: agents and what routing reads and writes about conversations.

use chrono::{DateTime, Utc};
use crossline_core::ConversationStatus;
use serde::{Deserialize, Serialize};

/// Whether an agent takes conversations now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Routed to, up to capacity.
    Available,
    /// Signed in but not routed to.
    Away,
    /// Not routed to (a new agent starts here).
    Offline,
}

impl AgentStatus {
    /// The name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Available => "available",
            AgentStatus::Away => "away",
            AgentStatus::Offline => "offline",
        }
    }

    /// Read a name; None for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        [AgentStatus::Available, AgentStatus::Away, AgentStatus::Offline]
            .into_iter()
            .find(|status| status.as_str() == name)
    }
}

/// A person of the contact centre.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// `agt_...`.
    pub id: String,
    /// Shown to colleagues (never to customers unless a reply says it).
    pub name: String,
    /// Unique in the workspace, lower-case.
    pub email: String,
    /// Skills routing matches against a queue's.
    pub skills: Vec<String>,
    /// Languages (ISO 639-1) the agent answers in.
    pub languages: Vec<String>,
    /// Conversations the agent holds at once at most.
    pub capacity: u32,
    /// Available, away or offline.
    pub status: AgentStatus,
    /// When the agent was made.
    pub created_at: DateTime<Utc>,
    /// When the status last changed.
    pub status_at: DateTime<Utc>,
}

/// Which conversations a listing wants.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only these statuses (all with people when empty: queued and assigned).
    pub statuses: Vec<ConversationStatus>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only those this agent has.
    pub assignee: Option<String>,
    /// Only this customer's.
    pub profile_id: Option<String>,
    /// Leave out the dialog state (an empty object instead): routing does not read it.
    pub without_state: bool,
    /// At most this many: the longest waiting first for queued ones, else the most recent first.
    pub limit: usize,
}

/// A change people make to a conversation, written only if it still stands as `expected` says
/// (another agent, node or turn may have changed it since it was read).
#[derive(Debug, Clone, PartialEq)]
pub struct PeopleChange {
    /// The status it must have now.
    pub expected_status: ConversationStatus,
    /// The agent who must have it now (None: nobody).
    pub expected_assignee: Option<String>,
    /// Its status afterwards.
    pub status: ConversationStatus,
    /// Who has it afterwards.
    pub assignee: Option<String>,
    /// Its queue afterwards.
    pub queue: Option<String>,
    /// When this happens.
    pub now: DateTime<Utc>,
}

/// The names of the statuses a filter asks for (queued and assigned when it names none).
pub fn status_names(statuses: &[ConversationStatus]) -> Vec<&'static str> {
    if statuses.is_empty() {
        return vec!["queued", "assigned"];
    }
    let mut names: Vec<&'static str> = statuses.iter().map(|status| status.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}
