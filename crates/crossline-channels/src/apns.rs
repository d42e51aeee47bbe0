//! Apple Push Notification service, token-based: push to iOS apps' device tokens. A workspace
//! configures its APNs key (`PUT /api/v1/channels/apns`: the team, the key id, the `.p8` key and the
//! app's bundle id as `topic`); the sender signs a provider token (an ES256 JWT, `ring`), reuses it
//! for 50 minutes (Apple refuses tokens older than an hour and ones renewed more often than every
//! 20 minutes), and posts one message per device over HTTP/2 to `{api_base_url}/3/device/{token}`.
//! Pure functions; the HTTP/2 calls are the caller's, through its egress client.

use crate::outbound::SendError;
use crate::{ConfigError, config_error};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Map, Value, json};

/// APNs in production.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// APNs for development builds.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";
/// How long one provider token is used.
pub const TOKEN_LIFETIME_SECONDS: u64 = 50 * 60;
/// The largest payload APNs takes for an alert.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// A workspace's APNs configuration.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApnsConfig {
    /// The Apple developer team id (10 characters).
    pub team_id: String,
    /// The APNs key's id (10 characters).
    pub key_id: String,
    /// The `.p8` key (PKCS#8 PEM, P-256). Never returned by a GET.
    pub private_key: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Where messages go: production, sandbox, or a test's fake.
    pub api_base_url: String,
}

impl std::fmt::Debug for ApnsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsConfig")
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field("topic", &self.topic)
            .field("api_base_url", &self.api_base_url)
            .finish_non_exhaustive()
    }
}

impl ApnsConfig {
    /// Reads `{"team_id", "key_id", "private_key", "topic", "environment"?: "production" | "sandbox",
    /// "api_base_url"?}`; the key must be a P-256 key ring can sign with.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let text = |field: &str, max: usize| -> Result<String, ConfigError> {
            value
                .get(field)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|text| !text.is_empty() && text.len() <= max)
                .map(str::to_owned)
                .ok_or_else(|| config_error(field, format!("is required (at most {max} characters)")))
        };
        let id = |field: &str| -> Result<String, ConfigError> {
            let id = text(field, 10)?;
            if id.len() != 10 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(config_error(field, "must be the 10 letters and digits Apple shows"));
            }
            Ok(id)
        };
        let topic = text("topic", 255)?;
        if !topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Err(config_error("topic", "must be the app's bundle id, e.g. com.example.app"));
        }
        let environment = match value.get("environment").and_then(Value::as_str) {
            None | Some("production") => PRODUCTION_URL,
            Some("sandbox" | "development") => SANDBOX_URL,
            Some(_) => return Err(config_error("environment", "must be \"production\" or \"sandbox\"")),
        };
        let api_base_url = match value.get("api_base_url") {
            None | Some(Value::Null) => environment.to_owned(),
            Some(Value::String(url)) if url.starts_with("https://") || url.starts_with("http://") => {
                url.trim_end_matches('/').to_owned()
            }
            Some(_) => return Err(config_error("api_base_url", "must be an http(s) URL")),
        };
        let config = ApnsConfig {
            team_id: id("team_id")?,
            key_id: id("key_id")?,
            private_key: text("private_key", 8192)?,
            topic,
            api_base_url,
        };
        config.key()?;
        Ok(config)
    }

    /// The configuration without its key.
    pub fn public_view(&self) -> Value {
        json!({"team_id": self.team_id, "key_id": self.key_id, "topic": self.topic,
               "api_base_url": self.api_base_url, "private_key_set": !self.private_key.is_empty()})
    }

    /// The key, ready to sign.
    pub fn key(&self) -> Result<EcdsaKeyPair, ConfigError> {
        let der = crate::pkcs8_pem(&self.private_key)
            .ok_or_else(|| config_error("private_key", "is not a PEM \"PRIVATE KEY\" (the .p8 file Apple gives)"))?;
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
            .map_err(|err| config_error("private_key", format!("is not a P-256 key this server can sign with ({err})")))
    }

    /// Where a message to `device_token` is posted.
    pub fn device_url(&self, device_token: &str) -> String {
        format!("{}/3/device/{device_token}", self.api_base_url)
    }
}

/// The provider token: an ES256 JWT `{"alg": "ES256", "kid": KEY_ID}.{"iss": TEAM_ID, "iat": NOW}`.
pub fn provider_token(config: &ApnsConfig, key: &EcdsaKeyPair, now: i64) -> Result<String, SendError> {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": config.key_id}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(json!({"iss": config.team_id, "iat": now}).to_string());
    let input = format!("{header}.{claims}");
    let signature = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(|_| SendError::Misconfigured { message: "APNs: the key cannot sign".into() })?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
}

/// An alert's payload: `aps.alert` with the title and body, and beside `aps` the template's data, the
/// page (`url`) and the delivery id.
pub fn payload(title: &str, body: &str, data: &Map<String, Value>) -> Value {
    let mut payload = data.clone();
    payload.insert("aps".into(), json!({"alert": {"title": title, "body": body}, "sound": "default"}));
    Value::Object(payload)
}

/// The headers of one alert: the provider token, the topic, the push type, the priority (10 now, 5
/// when the device may wait) and the expiry (UNIX seconds).
pub fn headers(config: &ApnsConfig, provider_token: &str, urgent: bool, expires: i64) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("bearer {provider_token}")),
        ("apns-topic", config.topic.clone()),
        ("apns-push-type", "alert".into()),
        ("apns-priority", if urgent { "10" } else { "5" }.into()),
        ("apns-expiration", expires.to_string()),
    ]
}

/// Whether a device token is one APNs could take (64 hexadecimal digits).
pub fn is_device_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// What APNs's answer means: 200 sent (its `apns-id` is not read here); 410 `Unregistered`, 400
/// `BadDeviceToken` or `DeviceTokenNotForTopic` the token is gone; 429 and 5xx retried; 403 for the
/// provider token (`InvalidProviderToken`, `ExpiredProviderToken`, `MissingProviderToken`) and
/// `TopicDisallowed` the configuration; other answers failed.
pub fn classify_response(status: u16, body: &[u8], retry_after: Option<std::time::Duration>) -> Result<(), SendError> {
    if status == 200 {
        return Ok(());
    }
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reason = parsed["reason"].as_str().unwrap_or("").to_owned();
    let message = format!("APNs answered {status} {reason}").trim().to_owned();
    let code = Some(if reason.is_empty() { status.to_string() } else { reason.clone() });
    match (status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            Err(SendError::Permanent { message, code, address_unreachable: true })
        }
        (429, _) | (500..=599, _) => Err(SendError::Retryable { message, retry_after }),
        (403, "InvalidProviderToken" | "ExpiredProviderToken" | "MissingProviderToken" | "TopicDisallowed")
        | (403, "") => Err(SendError::Misconfigured { message }),
        _ => Err(SendError::Permanent { message, code, address_unreachable: false }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn answers_are_classified_as_the_pipeline_acts_on_them() {
        assert!(classify_response(200, b"", None).is_ok());
        let gone = br#"{"reason": "Unregistered", "timestamp": 1700000000000}"#;
        assert!(matches!(
            classify_response(410, gone, None),
            Err(SendError::Permanent { address_unreachable: true, ref code, .. }) if code.as_deref() == Some("Unregistered")
        ));
        assert!(matches!(
            classify_response(400, br#"{"reason": "BadDeviceToken"}"#, None),
            Err(SendError::Permanent { address_unreachable: true, .. })
        ));
        assert!(matches!(
            classify_response(429, br#"{"reason": "TooManyRequests"}"#, None),
            Err(SendError::Retryable { .. })
        ));
        assert!(matches!(classify_response(503, b"", None), Err(SendError::Retryable { .. })));
        assert!(matches!(
            classify_response(403, br#"{"reason": "ExpiredProviderToken"}"#, None),
            Err(SendError::Misconfigured { .. })
        ));
        assert!(matches!(
            classify_response(413, br#"{"reason": "PayloadTooLarge"}"#, None),
            Err(SendError::Permanent { address_unreachable: false, .. })
        ));
    }

    #[test]
    fn the_configuration_is_checked_field_by_field() {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pem =
            format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", STANDARD.encode(pkcs8.as_ref()));
        let good = json!({"team_id": "ABCDE12345", "key_id": "KEY1234567", "private_key": pem, "topic": "com.example.app",
                          "environment": "sandbox"});
        let config = ApnsConfig::from_json(&good).unwrap();
        assert_eq!(config.api_base_url, SANDBOX_URL);
        assert!(!config.public_view().to_string().contains("PRIVATE KEY"));
        let token = provider_token(&config, &config.key().unwrap(), 1_800_000_000).unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "ES256", "kid": "KEY1234567"}));
        for (field, value) in [
            ("team_id", json!("short")),
            ("topic", json!("com.example/../x")),
            ("private_key", json!("nope")),
            ("environment", json!("staging")),
        ] {
            let mut bad = good.clone();
            bad[field] = value;
            assert_eq!(ApnsConfig::from_json(&bad).unwrap_err().field, field);
        }
        assert!(is_device_token(&"ab".repeat(32)) && !is_device_token("abc"));
    }
}
