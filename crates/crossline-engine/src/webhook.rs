//! Fulfilment webhooks: a signed POST of the conversation's state; the JSON answer gives the reply
//! and may set slots and traits.
//!
//! Signature: `X-Crossline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed
//! with the bot's `webhook_secret`; a receiver recomputes it and rejects old timestamps (replays).
//! Each attempt may take `webhook_timeout`; a timeout, a connection error or a 5xx is retried once.
//! The call goes through the [`Egress`] client: no redirects, a size limit on the answer, and no
//! private addresses unless allowed.

use crate::egress::{Egress, EgressError};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::time::Duration;

/// What a webhook answered.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAnswer {
    /// Replies to send.
    pub replies: Vec<String>,
    /// Slot values to record.
    pub slots: Map<String, Value>,
    /// Profile traits to set.
    pub traits: Map<String, Value>,
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Read a webhook's answer: `{"reply": TEXT}` or `{"replies": [TEXT, ...]}`, optionally `"slots"` and `"traits"` objects.
pub fn parse_answer(body: &[u8]) -> Result<WebhookAnswer, String> {
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return Err("the answer is not a JSON object".into());
    };
    let mut replies = Vec::new();
    match answer.get("reply") {
        Some(Value::String(reply)) => replies.push(reply.clone()),
        Some(_) => return Err("\"reply\" is not a string".into()),
        None => {}
    }
    match answer.get("replies") {
        Some(Value::Array(items)) => {
            for item in items {
                replies.push(item.as_str().ok_or("\"replies\" holds something other than strings")?.to_owned());
            }
        }
        Some(_) => return Err("\"replies\" is not a list".into()),
        None => {}
    }
    if replies.is_empty() {
        return Err("the answer has neither \"reply\" nor \"replies\"".into());
    }
    let object = |name: &str| match answer.get(name) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(format!("\"{name}\" is not an object")),
    };
    Ok(WebhookAnswer { replies, slots: object("slots")?, traits: object("traits")? })
}

/// POST `payload` to `url`, signed with `secret`, through the egress client.
pub async fn call(
    egress: &Egress,
    url: &str,
    secret: &str,
    payload: &Value,
    timeout: Duration,
) -> Result<WebhookAnswer, String> {
    let body = serde_json::to_vec(payload).map_err(|err| err.to_string())?;
    let mut last_error = String::new();
    for attempt in 0..2 {
        let header = signature_header(secret, chrono::Utc::now().timestamp(), &body);
        match egress.post_json(url, &[("x-crossline-signature", header)], body.clone(), timeout).await {
            Ok(answer) if (200..300).contains(&answer.status) => return parse_answer(&answer.body),
            Ok(answer) if answer.status >= 500 => last_error = format!("status {}", answer.status),
            Ok(answer) => return Err(format!("status {}", answer.status)),
            Err(err @ (EgressError::Timeout(_) | EgressError::Transport(_) | EgressError::Connect(_))) => {
                last_error = err.to_string()
            }
            Err(err) => return Err(err.to_string()),
        }
        tracing::debug!(url, attempt, error = %last_error, "webhook attempt failed");
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // Recomputed independently: HMAC-SHA256(key "secret", "1700000000.{}").
        let header = signature_header("secret", 1_700_000_000, b"{}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(header, signature_header("other", 1_700_000_000, b"{}"));
        assert_ne!(header, signature_header("secret", 1_700_000_001, b"{}"));
    }

    #[test]
    fn answers_are_validated() {
        let answer = parse_answer(br#"{"reply": "Your balance is $20.", "traits": {"balance": 20}}"#).unwrap();
        assert_eq!(answer.replies, ["Your balance is $20."]);
        assert_eq!(answer.traits["balance"], 20);
        assert_eq!(parse_answer(br#"{"replies": ["a", "b"]}"#).unwrap().replies, ["a", "b"]);
        for garbage in
            [&b"<html>"[..], b"[]", br#"{"text": "x"}"#, br#"{"reply": 5}"#, br#"{"reply": "x", "slots": []}"#]
        {
            assert!(parse_answer(garbage).is_err(), "{}", String::from_utf8_lossy(garbage));
        }
    }
}
