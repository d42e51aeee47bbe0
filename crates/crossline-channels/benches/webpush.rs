//! What one Web Push message costs the sender: the payload encrypted for its subscription (a fresh
//! P-256 key pair, ECDH, HKDF and AES-128-GCM per message) and the VAPID header (an ES256
//! signature). Run with `cargo bench -p crossline-channels --bench webpush`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crossline_channels::webpush::{Subscription, VapidKey, encrypt};
use divan::Bencher;
use ring::agreement;
use ring::rand::SystemRandom;

fn main() {
    divan::main();
}

fn subscription() -> Subscription {
    let browser = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &SystemRandom::new()).unwrap();
    let public = browser.compute_public_key().unwrap();
    let json = serde_json::json!({"endpoint": "https://push.example.net/send/abc", "keys": {
        "p256dh": URL_SAFE_NO_PAD.encode(public.as_ref()), "auth": URL_SAFE_NO_PAD.encode([7u8; 16])}});
    Subscription::parse(&json, false).unwrap()
}

/// A typical notification payload.
const PAYLOAD: &[u8] =
    br#"{"title":"Your order shipped","body":"Ada, your boots are on their way.","url":"https://shop.example/o/1042","delivery_id":"dlv_01a24ec8548471fab349d234c8cd743a"}"#;

#[divan::bench]
fn encrypt_payload(bencher: Bencher) {
    let subscription = subscription();
    bencher.bench(|| encrypt(&subscription, divan::black_box(PAYLOAD)).unwrap());
}

#[divan::bench]
fn vapid_header(bencher: Bencher) {
    let key = VapidKey::generate().unwrap();
    let endpoint = url::Url::parse("https://push.example.net/send/abc").unwrap();
    bencher.bench(|| key.authorization(&endpoint, "mailto:ops@example.com", 1_800_000_000).unwrap());
}

#[divan::bench]
fn parse_subscription(bencher: Bencher) {
    let subscription = subscription();
    let json = serde_json::json!({"endpoint": subscription.endpoint.as_str(), "keys": {
        "p256dh": URL_SAFE_NO_PAD.encode(&subscription.p256dh), "auth": URL_SAFE_NO_PAD.encode(&subscription.auth)}});
    bencher.bench(|| Subscription::parse(divan::black_box(&json), false).unwrap());
}
