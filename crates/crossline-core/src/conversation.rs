//! The words of a conversation's life: its status and who wrote a message.

use serde::{Deserialize, Serialize};

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// The bot answers.
    Bot,
    /// Handed off: waiting for an agent.
    Queued,
    /// An agent has it.
    Assigned,
    /// Over.
    Resolved,
}

impl ConversationStatus {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Bot => "bot",
            ConversationStatus::Queued => "queued",
            ConversationStatus::Assigned => "assigned",
            ConversationStatus::Resolved => "resolved",
        }
    }

    /// Read a stored name; None for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        [
            ConversationStatus::Bot,
            ConversationStatus::Queued,
            ConversationStatus::Assigned,
            ConversationStatus::Resolved,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }

    /// Whether people, not the bot, answer now.
    pub fn with_agents(self) -> bool {
        matches!(self, ConversationStatus::Queued | ConversationStatus::Assigned)
    }
}

impl std::fmt::Display for ConversationStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Who wrote a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// The customer.
    Customer,
    /// The bot.
    Bot,
    /// A person of the contact centre.
    Agent,
}

impl Author {
    /// The name used in the API, the store and the chat page (`data-author`).
    pub fn as_str(self) -> &'static str {
        match self {
            Author::Customer => "customer",
            Author::Bot => "bot",
            Author::Agent => "agent",
        }
    }

    /// Read a stored name; None for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        [Author::Customer, Author::Bot, Author::Agent].into_iter().find(|author| author.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in [
            ConversationStatus::Bot,
            ConversationStatus::Queued,
            ConversationStatus::Assigned,
            ConversationStatus::Resolved,
        ] {
            assert_eq!(ConversationStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(ConversationStatus::parse("Queued"), None);
        assert_eq!(serde_json::to_value(Author::Agent).unwrap(), "agent");
    }
}
