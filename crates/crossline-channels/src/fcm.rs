//! Firebase Cloud Messaging, HTTP v1: push to Android (and FCM-registered iOS and web) device
//! tokens. A workspace configures its service account (`PUT /api/v1/channels/fcm` with the JSON file
//! Google gives); the sender trades a signed JWT (RS256, `ring`) for an OAuth2 access token at the
//! account's `token_uri`, keeps it until shortly before it expires, and posts one message per token to
//! `{api_base_url}/v1/projects/{project_id}/messages:send`. Pure functions; the HTTP calls are the
//! caller's, through its egress client.

use crate::outbound::SendError;
use crate::{ConfigError, config_error};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Map, Value, json};

/// The OAuth2 scope of sending messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// FCM's API.
pub const DEFAULT_API_BASE_URL: &str = "https://fcm.googleapis.com";
/// Google's token endpoint (a service account file names it as `token_uri`).
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A workspace's FCM configuration: its service account, and where to reach FCM.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FcmConfig {
    /// The Firebase project.
    pub project_id: String,
    /// The service account's email (the JWT's issuer).
    pub client_email: String,
    /// The service account's RSA key, PKCS#8 PEM. Never returned by a GET.
    pub private_key: String,
    /// Where access tokens are issued (tests point it at a fake).
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
    /// FCM's API base (tests point it at a fake).
    #[serde(default = "default_api_base_url")]
    pub api_base_url: String,
}

impl std::fmt::Debug for FcmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmConfig")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("api_base_url", &self.api_base_url)
            .finish_non_exhaustive()
    }
}

fn default_token_uri() -> String {
    DEFAULT_TOKEN_URI.into()
}

fn default_api_base_url() -> String {
    DEFAULT_API_BASE_URL.into()
}

impl FcmConfig {
    /// Reads a service account file (`{"type": "service_account", "project_id", "client_email",
    /// "private_key", "token_uri", ...}`, other fields ignored) plus an optional `api_base_url`;
    /// the key must be an RSA key ring can sign with.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let text = |field: &str| -> Result<String, ConfigError> {
            value
                .get(field)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|text| !text.is_empty() && text.len() <= 8192)
                .map(str::to_owned)
                .ok_or_else(|| config_error(field, "is required (as in the service account JSON file from Google)"))
        };
        let optional = |field: &str, default: &str| -> Result<String, ConfigError> {
            match value.get(field) {
                None | Some(Value::Null) => Ok(default.to_owned()),
                Some(Value::String(url)) if url.starts_with("https://") || url.starts_with("http://") => {
                    Ok(url.trim_end_matches('/').to_owned())
                }
                Some(_) => Err(config_error(field, "must be an http(s) URL")),
            }
        };
        let project_id = text("project_id")?;
        if !project_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(config_error("project_id", "must be letters, digits and -"));
        }
        let config = FcmConfig {
            project_id,
            client_email: text("client_email")?,
            private_key: text("private_key")?,
            token_uri: optional("token_uri", DEFAULT_TOKEN_URI)?,
            api_base_url: optional("api_base_url", DEFAULT_API_BASE_URL)?,
        };
        config.key()?;
        Ok(config)
    }

    /// The configuration without its key.
    pub fn public_view(&self) -> Value {
        json!({"project_id": self.project_id, "client_email": self.client_email, "token_uri": self.token_uri,
               "api_base_url": self.api_base_url, "private_key_set": !self.private_key.is_empty()})
    }

    /// The service account's key, ready to sign.
    pub fn key(&self) -> Result<RsaKeyPair, ConfigError> {
        let der = crate::pkcs8_pem(&self.private_key)
            .ok_or_else(|| config_error("private_key", "is not a PEM \"PRIVATE KEY\" (PKCS#8)"))?;
        RsaKeyPair::from_pkcs8(&der)
            .map_err(|err| config_error("private_key", format!("is not an RSA key this server can sign with ({err})")))
    }

    /// Where one message is posted.
    pub fn send_url(&self) -> String {
        format!("{}/v1/projects/{}/messages:send", self.api_base_url, self.project_id)
    }
}

/// The signed JWT (RS256) a service account trades for an access token, valid an hour from `now`.
pub fn assertion(config: &FcmConfig, key: &RsaKeyPair, now: i64) -> Result<String, SendError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = json!({"iss": config.client_email, "scope": SCOPE, "aud": config.token_uri,
                        "iat": now, "exp": now + 3600});
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature)
        .map_err(|_| SendError::Misconfigured { message: "FCM: the service account key cannot sign".into() })?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The token request's form.
pub fn token_form(assertion: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "urn:ietf:params:oauth:grant-type:jwt-bearer".into()),
        ("assertion".into(), assertion.to_owned()),
    ]
}

/// An access token and how many seconds it lives, from the token endpoint's answer.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<(String, u64), SendError> {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match status {
        200 => match (parsed["access_token"].as_str(), parsed["expires_in"].as_u64()) {
            (Some(token), expires) if !token.is_empty() => Ok((token.to_owned(), expires.unwrap_or(3600))),
            _ => Err(SendError::Retryable {
                message: "FCM: the token endpoint gave no access_token".into(),
                retry_after: None,
            }),
        },
        400 | 401 | 403 => Err(SendError::Misconfigured {
            message: format!(
                "FCM: the service account was refused an access token ({}); check the key and that the account may send messages",
                parsed["error_description"].as_str().or(parsed["error"].as_str()).unwrap_or("no reason given")
            ),
        }),
        _ => Err(SendError::Retryable {
            message: format!("FCM: the token endpoint answered {status}"),
            retry_after: None,
        }),
    }
}

/// One message to one device token: the notification (title, body, image) and `data` (FCM carries
/// only string values: other values are sent as their JSON text).
pub fn message_body(token: &str, title: &str, body: &str, image: Option<&str>, data: &Map<String, Value>) -> Value {
    let data: Map<String, Value> = data
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), Value::String(text))
        })
        .collect();
    let mut notification = json!({"title": title, "body": body});
    if let Some(image) = image {
        notification["image"] = json!(image);
    }
    json!({"message": {"token": token, "notification": notification, "data": data}})
}

/// What FCM's answer to a send means: 200 sent (the message's `name`); `UNREGISTERED` (404) or an
/// invalid token the address is gone; 429 and 5xx retried (with `Retry-After`); 401 and
/// `THIRD_PARTY_AUTH_ERROR` the configuration; `SENDER_ID_MISMATCH` a token of another project
/// (failed, not retried); other 4xx failed.
pub fn classify_send_response(
    status: u16,
    body: &[u8],
    retry_after: Option<std::time::Duration>,
) -> Result<Option<String>, SendError> {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(parsed["name"].as_str().map(str::to_owned));
    }
    let error = &parsed["error"];
    let code = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|detail| detail["errorCode"].as_str())
        .or(error["status"].as_str())
        .unwrap_or("")
        .to_owned();
    let message = format!("FCM answered {status} {code}: {}", error["message"].as_str().unwrap_or("").trim());
    let permanent = |unreachable| SendError::Permanent {
        message: message.clone(),
        code: Some(if code.is_empty() { status.to_string() } else { code.clone() }),
        address_unreachable: unreachable,
    };
    match (status, code.as_str()) {
        // Only FCM's own word marks a token: a bare 404 may be a wrong project or base URL.
        (_, "UNREGISTERED") => Err(permanent(true)),
        (400, "INVALID_ARGUMENT") if message.to_ascii_lowercase().contains("registration token") => {
            Err(permanent(true))
        }
        (429, _) | (500..=599, _) | (_, "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") => {
            Err(SendError::Retryable { message, retry_after })
        }
        (_, "SENDER_ID_MISMATCH") => Err(permanent(false)),
        (401 | 403, _) | (_, "THIRD_PARTY_AUTH_ERROR") => Err(SendError::Misconfigured { message }),
        _ => Err(permanent(false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_pipeline_acts_on_them() {
        let unregistered = br#"{"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}"#;
        assert!(matches!(
            classify_send_response(404, unregistered, None),
            Err(SendError::Permanent { address_unreachable: true, ref code, .. }) if code.as_deref() == Some("UNREGISTERED")
        ));
        let ok = br#"{"name": "projects/p/messages/0:1500415314455276%31bd1c9631bd1c96"}"#;
        assert_eq!(
            classify_send_response(200, ok, None).unwrap().as_deref(),
            Some("projects/p/messages/0:1500415314455276%31bd1c9631bd1c96")
        );
        let busy = br#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"errorCode": "QUOTA_EXCEEDED"}]}}"#;
        assert!(matches!(classify_send_response(429, busy, None), Err(SendError::Retryable { .. })));
        assert!(matches!(classify_send_response(503, b"", None), Err(SendError::Retryable { .. })));
        let auth = br#"{"error": {"code": 401, "status": "UNAUTHENTICATED"}}"#;
        assert!(matches!(classify_send_response(401, auth, None), Err(SendError::Misconfigured { .. })));
        let wrong_project = br#"{"error": {"code": 404, "status": "NOT_FOUND", "message": "no such project"}}"#;
        assert!(
            matches!(
                classify_send_response(404, wrong_project, None),
                Err(SendError::Permanent { address_unreachable: false, .. })
            ),
            "a bare 404 marks no token"
        );
        let denied = br#"{"error": {"code": 403, "status": "PERMISSION_DENIED"}}"#;
        assert!(matches!(classify_send_response(403, denied, None), Err(SendError::Misconfigured { .. })));
        let mismatch = br#"{"error": {"code": 403, "status": "PERMISSION_DENIED", "details": [{"errorCode": "SENDER_ID_MISMATCH"}]}}"#;
        assert!(matches!(
            classify_send_response(403, mismatch, None),
            Err(SendError::Permanent { address_unreachable: false, .. })
        ));
        let bad_token = br#"{"error": {"code": 400, "message": "The registration token is not a valid FCM registration token", "status": "INVALID_ARGUMENT"}}"#;
        assert!(matches!(
            classify_send_response(400, bad_token, None),
            Err(SendError::Permanent { address_unreachable: true, .. })
        ));
    }

    #[test]
    fn data_values_are_strings_and_the_config_needs_a_key() {
        let mut data = Map::new();
        data.insert("url".into(), json!("https://shop.example"));
        data.insert("count".into(), json!(3));
        let message = message_body("tok", "T", "B", None, &data);
        assert_eq!(message["message"]["data"], json!({"url": "https://shop.example", "count": "3"}));
        assert!(message["message"]["notification"].get("image").is_none());
        let missing = FcmConfig::from_json(&json!({"project_id": "p", "client_email": "a@b"})).unwrap_err();
        assert_eq!(missing.field, "private_key");
        let not_rsa = FcmConfig::from_json(&json!({"project_id": "p", "client_email": "a@b",
            "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}))
        .unwrap_err();
        assert_eq!(not_rsa.field, "private_key");
    }
}
