//! Push addresses as customers give them: a browser's `PushSubscription` or an app's device token,
//! checked before they are stored (what `POST /api/v1/profiles/{id}/push-subscriptions` and the
//! widget's `Crossline.subscribePush()` accept).

use crossline_channels::webpush::Subscription;
use crossline_store::engage::PushAddress;
use serde_json::Value;

/// The push services browsers subscribe with. An endpoint elsewhere is refused unless private
/// egress is allowed (tests and on-premise services): a push message is a POST Crossline makes to
/// whatever URL a visitor gave, so the URL must be a push service's.
pub const PUSH_SERVICES: [&str; 6] = [
    "fcm.googleapis.com",
    "android.googleapis.com",
    "updates.push.services.mozilla.com",
    "push.services.mozilla.com",
    "push.apple.com",
    "notify.windows.com",
];

/// The longest endpoint accepted.
pub const MAX_ENDPOINT_LEN: usize = 1024;

/// The longest device token accepted.
pub const MAX_DEVICE_TOKEN_LEN: usize = 512;

/// Why a push address was refused: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `endpoint`, `keys.p256dh`, `keys.auth`, `token` or `platform`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn refused(field: &str, message: impl Into<String>) -> Refused {
    Refused { field: field.to_owned(), message: message.into() }
}

/// Reads a browser subscription `{"endpoint", "keys": {"p256dh", "auth"}}` or a device token
/// `{"token", "platform": "fcm" | "apns"}`. `allow_private` (private egress allowed) also admits
/// `http` endpoints and endpoints that are not a known push service's.
pub fn parse(body: &Value, allow_private: bool, now: chrono::DateTime<chrono::Utc>) -> Result<PushAddress, Refused> {
    if !body.is_object() {
        return Err(refused("body", "give a PushSubscription {\"endpoint\", \"keys\"} or {\"token\", \"platform\"}"));
    }
    if body.get("endpoint").is_none() && body.get("token").is_some() {
        return device_token(body, now);
    }
    let subscription = Subscription::parse(body, allow_private).map_err(|err| match err {
        crossline_channels::webpush::WebPushError::Invalid { field, message } => refused(field, message),
        other => refused("keys.p256dh", other.to_string()),
    })?;
    let host = subscription.endpoint.host_str().unwrap_or_default().to_ascii_lowercase();
    let known = PUSH_SERVICES.iter().any(|service| host == *service || host.ends_with(&format!(".{service}")));
    if subscription.endpoint.port().is_some() && !allow_private {
        return Err(refused("endpoint", "must use the push service's own port (no port in the URL)"));
    }
    if !known && !allow_private {
        return Err(refused(
            "endpoint",
            format!("{host} is not a push service browsers use ({})", PUSH_SERVICES.join(", ")),
        ));
    }
    if subscription.endpoint.as_str().len() > MAX_ENDPOINT_LEN {
        return Err(refused("endpoint", format!("is longer than {MAX_ENDPOINT_LEN} bytes")));
    }
    let (p256dh, auth) = subscription.stored_keys();
    Ok(PushAddress {
        kind: "webpush".into(),
        value: subscription.endpoint.to_string(),
        platform: "webpush".into(),
        p256dh: Some(p256dh),
        auth: Some(auth),
        created_at: now,
    })
}

fn device_token(body: &Value, now: chrono::DateTime<chrono::Utc>) -> Result<PushAddress, Refused> {
    let token = body.get("token").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if token.is_empty()
        || token.len() > MAX_DEVICE_TOKEN_LEN
        || !token.bytes().all(|byte| byte.is_ascii_graphic())
        || token.contains("://")
    {
        return Err(refused(
            "token",
            format!("give the device token: 1 to {MAX_DEVICE_TOKEN_LEN} printable characters"),
        ));
    }
    let platform = match body.get("platform").and_then(Value::as_str) {
        Some("fcm" | "android") => "fcm",
        Some("apns" | "ios") => "apns",
        _ => return Err(refused("platform", "must be \"fcm\" (or \"android\") or \"apns\" (or \"ios\")")),
    };
    if platform == "apns" && !(token.len() == 64 && token.bytes().all(|byte| byte.is_ascii_hexdigit())) {
        return Err(refused("token", "an APNs device token is 64 hexadecimal digits"));
    }
    Ok(PushAddress {
        kind: "device_token".into(),
        value: token.to_owned(),
        platform: platform.into(),
        p256dh: None,
        auth: None,
        created_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn at() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_browser_subscription_at_a_push_service_is_kept_with_its_keys() {
        let body =
            json!({"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": {"p256dh": P256DH, "auth": AUTH}});
        let address = parse(&body, false, at()).unwrap();
        assert_eq!((address.kind.as_str(), address.platform.as_str()), ("webpush", "webpush"));
        assert_eq!(address.value, "https://fcm.googleapis.com/fcm/send/abc");
        assert_eq!(address.p256dh.as_deref(), Some(P256DH));
        let apple = json!({"endpoint": "https://web.push.apple.com/QGuQ", "keys": {"p256dh": P256DH, "auth": AUTH}});
        assert!(parse(&apple, false, at()).is_ok());
    }

    #[test]
    fn endpoints_that_are_not_push_services_are_refused_naming_the_field() {
        for endpoint in [
            "https://evil.example.com/x",
            "https://fcm.googleapis.com.evil.example/x",
            "http://fcm.googleapis.com/x",
            "https://fcm.googleapis.com:9/x",
        ] {
            let body = json!({"endpoint": endpoint, "keys": {"p256dh": P256DH, "auth": AUTH}});
            assert_eq!(parse(&body, false, at()).unwrap_err().field, "endpoint", "{endpoint}");
        }
        let local = json!({"endpoint": "http://127.0.0.1:9/push", "keys": {"p256dh": P256DH, "auth": AUTH}});
        assert!(parse(&local, true, at()).is_ok(), "tests may use a local push service");
        let short_auth =
            json!({"endpoint": "https://fcm.googleapis.com/x", "keys": {"p256dh": P256DH, "auth": "AAAA"}});
        assert_eq!(parse(&short_auth, false, at()).unwrap_err().field, "keys.auth");
        assert_eq!(parse(&json!([1]), false, at()).unwrap_err().field, "body");
    }

    #[test]
    fn device_tokens_need_a_platform_and_a_plausible_token() {
        let apns = json!({"token": "a".repeat(64), "platform": "ios"});
        assert_eq!(parse(&apns, false, at()).unwrap().platform, "apns");
        let fcm = json!({"token": "fcm-token:APA91b", "platform": "android"});
        assert_eq!(parse(&fcm, false, at()).unwrap().platform, "fcm");
        assert_eq!(parse(&json!({"token": "x"}), false, at()).unwrap_err().field, "platform");
        assert_eq!(parse(&json!({"token": "short", "platform": "apns"}), false, at()).unwrap_err().field, "token");
        assert_eq!(parse(&json!({"token": "has space", "platform": "fcm"}), false, at()).unwrap_err().field, "token");
    }
}
