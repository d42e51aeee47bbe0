//! Web Push payloads checked by an independent implementation: PyPI's `http_ece` (the library
//! behind pywebpush) decrypts what `crossline_channels::webpush::encrypt` sealed, for a browser key
//! pair made by Python's `cryptography`.

use crate::harness::pypi_package;

const HTTP_ECE: &str = "1.2.1";

/// `keys`: a browser's key pair and secret as JSON; `decrypt B64_BODY PRIVATE_PEM AUTH`: the plaintext.
const BROWSER: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
import http_ece

b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
unb64 = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
if sys.argv[1] == "keys":
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    print(json.dumps({"p256dh": b64(public), "auth": b64(b"0123456789abcdef"), "pem": pem.decode()}))
else:
    key = serialization.load_pem_private_key(sys.argv[3].encode(), password=None)
    plain = http_ece.decrypt(unb64(sys.argv[2]), private_key=key, auth_secret=unb64(sys.argv[4]), version="aes128gcm")
    sys.stdout.write(plain.decode())
"#;

fn python(site: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", BROWSER])
        .args(args)
        .env("PYTHONPATH", site)
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn http_ece_decrypts_what_crossline_encrypts() {
    use base64::Engine;
    let Some(site) = pypi_package("http_ece", HTTP_ECE, "http_ece/__init__.py") else { return };
    let keys: serde_json::Value = serde_json::from_str(&python(&site, &["keys"])).unwrap();
    let browser = serde_json::json!({"endpoint": "https://push.example.net/send/1",
                                     "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}});
    let subscription = crossline_channels::webpush::Subscription::parse(&browser, false).unwrap();
    for payload in [
        r#"{"title":"Your order shipped","body":"Track it","url":"https://shop.example/o/1","delivery_id":"dlv_1"}"#
            .to_owned(),
        "é".repeat(1500),
    ] {
        let body = crossline_channels::webpush::encrypt(&subscription, payload.as_bytes()).unwrap();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&body);
        let plain =
            python(&site, &["decrypt", &encoded, keys["pem"].as_str().unwrap(), keys["auth"].as_str().unwrap()]);
        assert_eq!(plain, payload);
    }
}

/// A workspace's VAPID key: made on first use, the same ever after (and for two requests at once),
/// its own per workspace, the private part never shown; the API key only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workspace_has_one_vapid_key_whose_private_part_is_never_shown() {
    use crate::harness::{TestServer, json_of};
    use base64::Engine;
    let server = TestServer::start().await;
    let (ws, other) = (server.workspace("push").await, server.workspace("push-other").await);
    let key_of = |key: String| {
        let server = &server;
        async move { json_of(server.get("/api/v1/channels/webpush", &key).await).await }
    };
    let (first, second) = tokio::join!(key_of(ws.api_key.clone()), key_of(ws.api_key.clone()));
    assert_eq!(first.0, reqwest::StatusCode::OK, "{}", first.1);
    assert_eq!(first.1, second.1, "made once, even when asked twice at once");
    let public = first.1["vapid_public_key"].as_str().unwrap().to_owned();
    let point = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&public).unwrap();
    assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
    assert_eq!(first.1.as_object().unwrap().len(), 1, "only the public key: {}", first.1);
    assert_eq!(key_of(ws.api_key.clone()).await.1, first.1, "the same later");
    assert_ne!(key_of(other.api_key.clone()).await.1, first.1, "another workspace has its own");
    let stored = server.store.channel(&ws.id, "settings.vapid_key").await.unwrap().unwrap();
    assert!(!stored.to_string().contains(&public), "the store keeps the private key");
    assert_eq!(key_of(ws.write_key.clone()).await.0, reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(key_of("nonsense".into()).await.0, reqwest::StatusCode::UNAUTHORIZED);
}
