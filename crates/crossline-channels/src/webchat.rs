//! The web chat channel (the hosted chat page, the embeddable widget and the kiosk share it): its
//! validated configuration.

use crate::{ConfigError, config_error};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Shortest identity secret accepted.
pub const MIN_IDENTITY_SECRET_CHARS: usize = 16;

/// The web chat's configuration: the bot that answers, and the secret that signs host-page
/// identities (without one, an identify is only a claim on the visitor's own profile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebChatConfig {
    /// The bot's name.
    pub bot: String,
    /// The HMAC secret of `userHash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<String>,
}

impl WebChatConfig {
    /// Read and check a configuration as an API client sends it: `{"bot", "identity_secret"?}`.
    pub fn from_json(body: &Value) -> Result<Self, ConfigError> {
        let Some(fields) = body.as_object() else {
            return Err(config_error("body", "give {\"bot\", \"identity_secret\"?}"));
        };
        if let Some(unknown) = fields.keys().find(|field| !matches!(field.as_str(), "bot" | "identity_secret")) {
            return Err(config_error(unknown, "is not a web chat setting; use bot and identity_secret"));
        }
        let bot = match fields.get("bot") {
            Some(Value::String(bot)) if !bot.trim().is_empty() => bot.clone(),
            _ => return Err(config_error("bot", "is required, the bot that answers the chat")),
        };
        let identity_secret = match fields.get("identity_secret") {
            None | Some(Value::Null) => None,
            Some(Value::String(secret)) if secret.chars().count() >= MIN_IDENTITY_SECRET_CHARS => Some(secret.clone()),
            Some(_) => {
                return Err(config_error(
                    "identity_secret",
                    "use a string of at least 16 characters, e.g. the output of `openssl rand -hex 24`",
                ));
            }
        };
        Ok(WebChatConfig { bot, identity_secret })
    }

    /// The configuration without its secret: whether host-page identities must be signed.
    pub fn public_view(&self) -> Value {
        json!({"bot": self.bot, "identity_verification": self.identity_secret.is_some()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_are_checked_field_by_field() {
        let config = WebChatConfig::from_json(&json!({"bot": "bank", "identity_secret": "0123456789abcdef"})).unwrap();
        assert_eq!(config.public_view(), json!({"bot": "bank", "identity_verification": true}));
        assert_eq!(WebChatConfig::from_json(&json!({"bot": "bank"})).unwrap().identity_secret, None);
        for (body, field) in [
            (json!({}), "bot"),
            (json!({"bot": ""}), "bot"),
            (json!({"bot": "bank", "identity_secret": "short"}), "identity_secret"),
            (json!({"bot": "bank", "identity_secret": 5}), "identity_secret"),
            (json!({"bot": "bank", "colour": "red"}), "colour"),
            (json!([]), "body"),
        ] {
            assert_eq!(WebChatConfig::from_json(&body).unwrap_err().field, field, "{body}");
        }
        let stored = serde_json::to_value(&config).unwrap();
        assert_eq!(serde_json::from_value::<WebChatConfig>(stored).unwrap(), config);
    }
}
