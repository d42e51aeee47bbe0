//! The webhook channel: a campaign calls the business's own system once per recipient, with a
//! JSON message signed per Standard Webhooks (as event destinations are). The configuration is a
//! URL and a `whsec_` secret; the signing and the HTTP call are the caller's.

use crate::outbound::SendError;
use crate::{ConfigError, config_error};
use serde_json::{Value, json};

/// A workspace's webhook channel.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookChannelConfig {
    /// Where each message is posted.
    pub url: String,
    /// The signing secret (`whsec_` + base64). Shown once, when it is made.
    pub secret: String,
}

impl std::fmt::Debug for WebhookChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannelConfig").field("url", &self.url).finish_non_exhaustive()
    }
}

impl WebhookChannelConfig {
    /// Reads `{"url", "secret"?}`; without a secret, `secret` is None (the caller keeps the stored
    /// one or makes one).
    pub fn parse(value: &Value) -> Result<(String, Option<String>), ConfigError> {
        let url = value
            .get("url")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|url| (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 2048)
            .ok_or_else(|| config_error("url", "is required: the http(s) URL each message is posted to"))?;
        let secret = match value.get("secret") {
            None | Some(Value::Null) => None,
            Some(Value::String(secret))
                if secret.starts_with("whsec_") && secret.len() >= 30 && secret.len() <= 200 =>
            {
                Some(secret.clone())
            }
            Some(_) => {
                return Err(config_error("secret", "must be a whsec_ secret (or leave it out to have one made)"));
            }
        };
        Ok((url.to_owned(), secret))
    }

    /// The configuration without its secret.
    pub fn public_view(&self) -> Value {
        json!({"url": self.url, "secret_set": !self.secret.is_empty()})
    }
}

/// What the receiver's answer means: 2xx delivered; 429 and 5xx retried (with `Retry-After`);
/// any other answer failed for this message.
pub fn classify_response(status: u16, retry_after: Option<std::time::Duration>) -> Result<(), SendError> {
    match status {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(SendError::Retryable { message: format!("the webhook answered {status}"), retry_after }),
        _ => Err(SendError::Permanent {
            message: format!("the webhook answered {status}"),
            code: Some(status.to_string()),
            address_unreachable: false,
        }),
    }
}
