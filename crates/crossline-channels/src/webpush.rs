//! Web Push (RFC 8030): a payload encrypted for one browser subscription (RFC 8291, the
//! `aes128gcm` content coding of RFC 8188) and the VAPID `Authorization` header that identifies
//! the application server (RFC 8292). Pure functions over `ring`; the HTTP POST to the push
//! service is the caller's, through its egress client.
//!
//! Encryption, per message: a fresh P-256 key pair (the application server's side of ECDH) and a
//! fresh 16-byte salt; `IKM = HKDF(auth, ECDH, "WebPush: info\0" ‖ ua_public ‖ as_public)`;
//! `CEK` and `NONCE` from `HKDF(salt, IKM, …)`; one record of the plaintext, the delimiter `0x02`,
//! sealed with AES-128-GCM; the body is `salt ‖ rs ‖ idlen ‖ as_public ‖ ciphertext`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, agreement, hkdf, signature};

/// The record size announced in the header (the whole body fits one record).
pub const RECORD_SIZE: u32 = 4096;
/// The largest plaintext one message carries: a push service takes 4,096 bytes of body; the
/// header takes 86 and the record's tag and delimiter 17.
pub const MAX_PLAINTEXT: usize = 4096 - 86 - 17;

/// How long a VAPID `Authorization` header is valid (its JWT's `exp`; services accept up to 24 h).
pub const VAPID_LIFETIME_SECONDS: i64 = 12 * 3600;

/// Why a subscription or a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebPushError {
    /// A field of a `PushSubscription` is missing or malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// Which (`endpoint`, `keys.p256dh`, `keys.auth`).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The payload is larger than one message carries.
    #[error("the payload is {0} bytes; a push message carries at most {MAX_PLAINTEXT}")]
    TooLarge(usize),
    /// The cryptography failed (a key the library refused).
    #[error("encryption failed: {0}")]
    Crypto(&'static str),
}

fn invalid(field: &'static str, message: impl Into<String>) -> WebPushError {
    WebPushError::Invalid { field, message: message.into() }
}

/// A browser's `PushSubscription`, checked: where to post, and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The push service URL for this browser.
    pub endpoint: url::Url,
    /// The browser's P-256 public key, uncompressed (65 bytes).
    pub p256dh: Vec<u8>,
    /// The browser's authentication secret (16 bytes).
    pub auth: Vec<u8>,
}

impl Subscription {
    /// Reads `{"endpoint", "keys": {"p256dh", "auth"}}` (the browser's `PushSubscription.toJSON()`):
    /// the endpoint an `https` URL (`http` too when `allow_http`, for local test services), the keys
    /// base64url, `p256dh` a point on P-256, `auth` 16 bytes.
    pub fn parse(value: &serde_json::Value, allow_http: bool) -> Result<Self, WebPushError> {
        fn text<'v>(field: &'static str, found: Option<&'v serde_json::Value>) -> Result<&'v str, WebPushError> {
            found
                .and_then(serde_json::Value::as_str)
                .filter(|text| !text.is_empty() && text.len() <= 2048)
                .ok_or_else(|| invalid(field, "is required (a string of at most 2048 bytes)"))
        }
        let endpoint = text("endpoint", value.get("endpoint"))?;
        let endpoint = url::Url::parse(endpoint).map_err(|err| invalid("endpoint", format!("not a URL: {err}")))?;
        match endpoint.scheme() {
            "https" => {}
            "http" if allow_http => {}
            _ => return Err(invalid("endpoint", "must be an https URL of a push service")),
        }
        if endpoint.host_str().is_none() || !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(invalid("endpoint", "must name a host, without credentials"));
        }
        let keys = value.get("keys");
        let decode = |field: &'static str, found| {
            URL_SAFE_NO_PAD
                .decode(text(field, found)?.trim_end_matches('='))
                .map_err(|_| invalid(field, "is not base64url"))
        };
        let p256dh = decode("keys.p256dh", keys.and_then(|keys| keys.get("p256dh")))?;
        if p256dh.len() != 65 || p256dh[0] != 4 {
            return Err(invalid("keys.p256dh", "must be an uncompressed P-256 public key (65 bytes)"));
        }
        // The point must be on the curve: an agreement with a throwaway key says so.
        let probe = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &SystemRandom::new())
            .map_err(|_| WebPushError::Crypto("no key could be made"))?;
        agreement::agree_ephemeral(probe, &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &p256dh), |_| ())
            .map_err(|_| invalid("keys.p256dh", "is not a point on P-256"))?;
        let auth = decode("keys.auth", keys.and_then(|keys| keys.get("auth")))?;
        if auth.len() != 16 {
            return Err(invalid("keys.auth", "must be 16 bytes"));
        }
        Ok(Subscription { endpoint, p256dh, auth })
    }
}

impl Subscription {
    /// A subscription as stored after [`Subscription::parse`] checked it: the endpoint and the
    /// base64url keys, only decoded (the curve check is not repeated per message).
    pub fn from_stored(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, WebPushError> {
        let endpoint = url::Url::parse(endpoint).map_err(|err| invalid("endpoint", format!("not a URL: {err}")))?;
        let decode = |field: &'static str, text: &str, len: usize| {
            URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .ok()
                .filter(|bytes| bytes.len() == len)
                .ok_or_else(|| invalid(field, format!("must be {len} bytes of base64url")))
        };
        Ok(Subscription { endpoint, p256dh: decode("keys.p256dh", p256dh, 65)?, auth: decode("keys.auth", auth, 16)? })
    }

    /// The keys as stored: base64url without padding.
    pub fn stored_keys(&self) -> (String, String) {
        (URL_SAFE_NO_PAD.encode(&self.p256dh), URL_SAFE_NO_PAD.encode(&self.auth))
    }
}

/// What a push service's answer to a message means (RFC 8030 § 5, and the services' documented
/// codes): 201 (or another 2xx) accepted; 404 and 410 the subscription is gone (never retried,
/// the address marked); 429 and 5xx retried (with `Retry-After`); 413 a payload too large and
/// 400/401/403 a request the service refused (a VAPID key the subscription was not made with is a
/// 403): failed, not retried, the address kept.
pub fn classify_response(
    status: u16,
    body: &[u8],
    retry_after: Option<std::time::Duration>,
) -> Result<(), crate::outbound::SendError> {
    use crate::outbound::SendError;
    let said = || {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
        if text.is_empty() {
            format!("the push service answered {status}")
        } else {
            format!("the push service answered {status}: {text}")
        }
    };
    match status {
        200..=299 => Ok(()),
        404 | 410 => {
            Err(SendError::Permanent { message: said(), code: Some(status.to_string()), address_unreachable: true })
        }
        429 | 500..=599 => Err(SendError::Retryable { message: said(), retry_after }),
        _ => Err(SendError::Permanent { message: said(), code: Some(status.to_string()), address_unreachable: false }),
    }
}

/// HKDF output of `len` bytes.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], len: usize) -> Result<Vec<u8>, WebPushError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let okm = prk.expand(info, Len(len)).map_err(|_| WebPushError::Crypto("HKDF"))?;
    let mut out = vec![0u8; len];
    okm.fill(&mut out).map_err(|_| WebPushError::Crypto("HKDF"))?;
    Ok(out)
}

/// Encrypts `plaintext` for the subscription: the body of the push message
/// (`Content-Encoding: aes128gcm`).
pub fn encrypt(subscription: &Subscription, plaintext: &[u8]) -> Result<Vec<u8>, WebPushError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(WebPushError::TooLarge(plaintext.len()));
    }
    let rng = SystemRandom::new();
    let private = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| WebPushError::Crypto("no key could be made"))?;
    let public = private.compute_public_key().map_err(|_| WebPushError::Crypto("no public key"))?;
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| WebPushError::Crypto("no randomness"))?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &subscription.p256dh);
    let secret = agreement::agree_ephemeral(private, &peer, <[u8]>::to_vec)
        .map_err(|_| invalid("keys.p256dh", "is not a point on P-256"))?;
    encrypt_with(&secret, &subscription.p256dh, public.as_ref(), &subscription.auth, &salt, plaintext)
}

/// [`encrypt`] with its random parts given: the ECDH secret, both public keys and the salt.
pub fn encrypt_with(
    ecdh_secret: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    auth: &[u8],
    salt: &[u8; 16],
    plaintext: &[u8],
) -> Result<Vec<u8>, WebPushError> {
    let ikm = hkdf(auth, ecdh_secret, &[b"WebPush: info\0", ua_public, as_public], 32)?;
    let cek = hkdf(salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], 16)?;
    let nonce = hkdf(salt, &ikm, &[b"Content-Encoding: nonce\0"], 12)?;
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(|_| WebPushError::Crypto("AES key"))?,
    );
    let nonce = aead::Nonce::try_assume_unique_for_key(&nonce).map_err(|_| WebPushError::Crypto("nonce"))?;
    // One record, the last: the plaintext then the delimiter 0x02 (no padding).
    let mut record = Vec::with_capacity(plaintext.len() + 1 + aead::AES_128_GCM.tag_len());
    record.extend_from_slice(plaintext);
    record.push(2);
    key.seal_in_place_append_tag(nonce, aead::Aad::empty(), &mut record)
        .map_err(|_| WebPushError::Crypto("AES-GCM"))?;
    let id_len = u8::try_from(as_public.len()).map_err(|_| WebPushError::Crypto("key id"))?;
    let mut body = Vec::with_capacity(16 + 4 + 1 + as_public.len() + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(id_len);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

/// A workspace's VAPID key (ES256): the private part stays in the store, the public part is what
/// browsers subscribe with (`applicationServerKey`).
pub struct VapidKey {
    pkcs8: Vec<u8>,
    pair: signature::EcdsaKeyPair,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey").field("public", &self.public_key()).finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A new key.
    pub fn generate() -> Result<Self, WebPushError> {
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| WebPushError::Crypto("no key could be made"))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A stored key (PKCS#8 DER, as [`VapidKey::pkcs8`] gives it).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, WebPushError> {
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| WebPushError::Crypto("not a P-256 PKCS#8 key"))?;
        Ok(VapidKey { pkcs8: pkcs8.to_vec(), pair })
    }

    /// The key to store (never to show).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key, uncompressed, base64url: the `applicationServerKey` and the `k=` of the header.
    pub fn public_key(&self) -> String {
        use signature::KeyPair;
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// The `Authorization` header for a message to `endpoint`: `vapid t=JWT, k=KEY`, the JWT's
    /// `aud` the endpoint's origin, `exp` 12 hours after `now` (at most 24 are allowed), `sub` the
    /// contact (`mailto:` or `https:`).
    pub fn authorization(&self, endpoint: &url::Url, subject: &str, now: i64) -> Result<String, WebPushError> {
        let audience = endpoint.origin().ascii_serialization();
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({"aud": audience, "exp": now + VAPID_LIFETIME_SECONDS, "sub": subject});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| WebPushError::Crypto("ES256 signing"))?;
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(format!("vapid t={token}, k={}", self.public_key()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The browser's side: its key pair and secret, and decryption as a push-receiving browser does it.
    struct Browser {
        private: agreement::EphemeralPrivateKey,
        public: Vec<u8>,
        auth: [u8; 16],
    }

    impl Browser {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let private = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).unwrap();
            let public = private.compute_public_key().unwrap().as_ref().to_vec();
            let mut auth = [0u8; 16];
            rng.fill(&mut auth).unwrap();
            Browser { private, public, auth }
        }

        fn subscription(&self) -> serde_json::Value {
            json!({"endpoint": "https://push.example.net/send/abc", "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(&self.public), "auth": URL_SAFE_NO_PAD.encode(self.auth)}})
        }

        fn decrypt(self, body: &[u8]) -> Vec<u8> {
            let (salt, rest) = body.split_at(16);
            assert_eq!(u32::from_be_bytes(rest[..4].try_into().unwrap()), RECORD_SIZE);
            let id_len = rest[4] as usize;
            let (as_public, ciphertext) = rest[5..].split_at(id_len);
            let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, as_public.to_vec());
            let secret = agreement::agree_ephemeral(self.private, &peer, <[u8]>::to_vec).unwrap();
            let ikm = hkdf(&self.auth, &secret, &[b"WebPush: info\0", &self.public, as_public], 32).unwrap();
            let cek = hkdf(salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], 16).unwrap();
            let nonce = hkdf(salt, &ikm, &[b"Content-Encoding: nonce\0"], 12).unwrap();
            let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
            let mut record = ciphertext.to_vec();
            let plain = key
                .open_in_place(aead::Nonce::try_assume_unique_for_key(&nonce).unwrap(), aead::Aad::empty(), &mut record)
                .unwrap();
            assert_eq!(plain.last(), Some(&2), "the last record's delimiter");
            plain[..plain.len() - 1].to_vec()
        }
    }

    #[test]
    fn a_message_decrypts_in_the_browser_it_was_sealed_for() {
        let browser = Browser::new();
        let subscription = Subscription::parse(&browser.subscription(), false).unwrap();
        let payload = br#"{"title":"Hi","body":"Your order shipped","delivery_id":"dlv_1"}"#;
        let body = encrypt(&subscription, payload).unwrap();
        assert_eq!(body.len(), 16 + 4 + 1 + 65 + payload.len() + 1 + 16);
        let again = encrypt(&subscription, payload).unwrap();
        assert_ne!(body, again, "a fresh key and salt each time");
        assert_eq!(browser.decrypt(&body), payload);
        assert_eq!(
            encrypt(&subscription, &vec![b'x'; MAX_PLAINTEXT + 1]),
            Err(WebPushError::TooLarge(MAX_PLAINTEXT + 1))
        );
        assert_eq!(encrypt(&subscription, &vec![b'x'; MAX_PLAINTEXT]).unwrap().len(), 4096);
    }

    #[test]
    fn malformed_subscriptions_are_refused_naming_the_field() {
        let browser = Browser::new();
        let with = |path: &[&str], value: serde_json::Value| {
            let mut subscription = browser.subscription();
            let mut at = &mut subscription;
            for key in &path[..path.len() - 1] {
                at = &mut at[*key];
            }
            at[path[path.len() - 1]] = value;
            match Subscription::parse(&subscription, false).unwrap_err() {
                WebPushError::Invalid { field, .. } => field,
                other => panic!("{other}"),
            }
        };
        assert_eq!(with(&["endpoint"], json!("http://push.example.net/x")), "endpoint");
        assert_eq!(with(&["endpoint"], json!("https://user:pw@push.example.net/x")), "endpoint");
        assert_eq!(with(&["endpoint"], json!(42)), "endpoint");
        assert_eq!(with(&["keys", "p256dh"], json!(URL_SAFE_NO_PAD.encode([4u8; 64]))), "keys.p256dh");
        let off_curve = {
            let mut point = vec![4u8];
            point.extend([1u8; 64]);
            URL_SAFE_NO_PAD.encode(point)
        };
        assert_eq!(with(&["keys", "p256dh"], json!(off_curve)), "keys.p256dh");
        assert_eq!(with(&["keys", "auth"], json!(URL_SAFE_NO_PAD.encode([0u8; 15]))), "keys.auth");
        assert_eq!(with(&["keys", "auth"], json!("not base64!")), "keys.auth");
        let local = json!({"endpoint": "http://127.0.0.1:9/push", "keys": browser.subscription()["keys"].clone()});
        assert!(Subscription::parse(&local, true).is_ok(), "http for a local test service when allowed");
    }

    #[test]
    fn the_vapid_header_is_an_es256_jwt_for_the_push_service_origin() {
        let key = VapidKey::generate().unwrap();
        let stored = VapidKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(stored.public_key(), key.public_key());
        let endpoint = url::Url::parse("https://fcm.example.com/wp/abc?x=1").unwrap();
        let header = stored.authorization(&endpoint, "mailto:ops@example.com", 1_800_000_000).unwrap();
        let (token, k) = header.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
        assert_eq!(k, key.public_key());
        let public = URL_SAFE_NO_PAD.decode(k).unwrap();
        assert_eq!(public.len(), 65);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"aud": "https://fcm.example.com", "exp": 1_800_043_200i64, "sub": "mailto:ops@example.com"})
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public)
            .verify(signed.as_bytes(), &signature)
            .expect("the signature verifies with the public key");
    }
}
