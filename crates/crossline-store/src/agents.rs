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
    /// Conversations the agent holds at once at most, calls aside.
    pub capacity: u32,
    /// Where a live call is transferred to them: an E.164 number or a `sip:` address (None: they
    /// take no live calls).
    pub phone: Option<String>,
    /// Calls (voice conversations) the agent holds at once at most; 0 without a `phone`.
    pub calls: u32,
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
    /// A message to send with the change (an agent's reply by SMS or WhatsApp), queued in the same
    /// transaction: a reply stored is a reply sent, and a change refused sends nothing.
    pub delivery: Option<crate::engage::NewDelivery>,
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

/// The names of the contact centre's events the supervisor view counts (the partial index
/// `events_people` holds exactly these).
pub const PEOPLE_EVENTS: &str = "('conversation.started', 'conversation.handoff', 'conversation.resolved', \
    'conversation.sla_breached', 'csat.submitted')";

/// What the contact centre did since a moment (the supervisor view asks for today).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeopleStats {
    /// Conversations the bot started.
    pub started: u64,
    /// Conversations handed to people.
    pub handoffs: u64,
    /// Conversations people resolved.
    pub resolved: u64,
    /// First-response breaches.
    pub sla_breaches: u64,
    /// CSAT answers per score, 1 to 5.
    pub csat: [u64; 5],
    /// Mean wait before an agent took the conversation, of those resolved.
    pub mean_wait_seconds: Option<f64>,
    /// Mean time to the first answer of a person, of those resolved.
    pub mean_first_response_seconds: Option<f64>,
    /// Mean handle time (taken to resolved), of those resolved.
    pub mean_handle_seconds: Option<f64>,
}

impl PeopleStats {
    /// CSAT answers in all.
    pub fn csat_answers(&self) -> u64 {
        self.csat.iter().sum()
    }

    /// The mean CSAT score; None without answers.
    pub fn csat_mean(&self) -> Option<f64> {
        let answers = self.csat_answers();
        (answers > 0).then(|| {
            self.csat.iter().zip(1..=5u64).map(|(count, score)| count * score).sum::<u64>() as f64 / answers as f64
        })
    }

    /// The share of conversations the bot kept (not handed to people); None before any started.
    pub fn containment(&self) -> Option<f64> {
        (self.started > 0).then(|| 1.0 - (self.handoffs.min(self.started) as f64 / self.started as f64))
    }

    /// Add a count read from the store.
    pub fn add(&mut self, name: &str, score: Option<i64>, count: u64) {
        match name {
            "conversation.started" => self.started += count,
            "conversation.handoff" => self.handoffs += count,
            "conversation.resolved" => self.resolved += count,
            "conversation.sla_breached" => self.sla_breaches += count,
            "csat.submitted" => {
                if let Some(score @ 1..=5) = score {
                    self.csat[(score - 1) as usize] += count;
                }
            }
            _ => {}
        }
    }
}

/// A caller on the line for a person.
#[derive(Debug, Clone, PartialEq)]
pub struct CallHold {
    /// The caller's conversation.
    pub conversation_id: String,
    /// When the hold loop last heard from the call (or the call was put through).
    pub heard_at: DateTime<Utc>,
    /// The agent the call is being put through to.
    pub agent_id: Option<String>,
    /// Whether that agent answered.
    pub answered: bool,
    /// Whether the caller is on the line (false: promised a call back, off the line).
    pub on_line: bool,
}

/// An internal note on a conversation: for colleagues, never for the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// `nte_...`.
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The agent or user who wrote it (None: the workspace's API key).
    pub author_id: Option<String>,
    /// Their name as it was then.
    pub author_name: String,
    /// What they wrote.
    pub text: String,
    /// When.
    pub created_at: DateTime<Utc>,
}
