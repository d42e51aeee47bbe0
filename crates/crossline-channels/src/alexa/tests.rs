use super::*;
use chrono::TimeZone;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alexa");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn test_roots() -> TrustRoots {
    TrustRoots::from_pem(&fixture("root.pem")).unwrap()
}

/// Sign like Alexa: RSA PKCS#1 v1.5 with SHA-256 over the raw body, base64.
fn sign(key: &str, body: &[u8]) -> String {
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&fixture(key)).unwrap();
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), body, &mut signature).unwrap();
    base64::engine::general_purpose::STANDARD.encode(signature)
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

#[test]
fn the_certificate_url_follows_amazons_rules() {
    for good in [
        "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com:443/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com/echo.api/../echo.api/echo-api-cert.pem",
        "HTTPS://s3.amazonaws.com/echo.api/echo-api-cert.pem",
        "https://S3.AMAZONAWS.COM/echo.api/echo-api-cert.pem",
    ] {
        assert!(check_cert_url(good).is_ok(), "{good} is valid");
    }
    for (bad, why) in [
        ("http://s3.amazonaws.com/echo.api/echo-api-cert.pem", "https"),
        ("https://notamazon.com/echo.api/echo-api-cert.pem", "host"),
        ("https://s3.amazonaws.com.evil.example/echo.api/cert.pem", "host"),
        ("https://s3.amazonaws.com/EcHo.aPi/echo-api-cert.pem", "path"),
        ("https://s3.amazonaws.com/invalid.path/echo-api-cert.pem", "path"),
        ("https://s3.amazonaws.com/echo.api/../invalid.path/cert.pem", "path"),
        ("https://s3.amazonaws.com:563/echo.api/echo-api-cert.pem", "port"),
        ("not a url", "URL"),
    ] {
        let err = check_cert_url(bad).unwrap_err();
        assert!(err.0.contains(why), "{bad}: {err}");
    }
}

#[test]
fn a_body_signed_by_the_trusted_echo_api_certificate_verifies() {
    let body = br#"{"version":"1.0"}"#;
    let chain = fixture("echo-api-chain.pem");
    let signature = sign("echo-api.pk8", body);
    verify_signature(&chain, &test_roots(), body, &signature, now()).unwrap();

    let tampered = br#"{"version":"1.1"}"#;
    let err = verify_signature(&chain, &test_roots(), tampered, &signature, now()).unwrap_err();
    assert!(err.0.contains("does not match"), "{err}");
    let err = verify_signature(&chain, &test_roots(), body, "not base64!", now()).unwrap_err();
    assert!(err.0.contains("base64"), "{err}");
}

#[test]
fn chains_that_are_untrusted_for_another_name_or_out_of_date_are_refused() {
    let body = b"{}";
    // Our test root is not a public root.
    let chain = fixture("echo-api-chain.pem");
    let signature = sign("echo-api.pk8", body);
    let err = verify_signature(&chain, &TrustRoots::public(), body, &signature, now()).unwrap_err();
    assert!(err.0.contains("not trusted"), "{err}");
    // A trusted certificate, but not for echo-api.amazon.com.
    let other = fixture("other-name-chain.pem");
    let err = verify_signature(&other, &test_roots(), body, &sign("other-name.pk8", body), now()).unwrap_err();
    assert!(err.0.contains("echo-api.amazon.com"), "{err}");
    // Expired, and not yet valid.
    for when in [Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap()]
    {
        let err = verify_signature(&chain, &test_roots(), body, &signature, when).unwrap_err();
        assert!(err.0.contains("not trusted"), "{when}: {err}");
    }
    // A chain without its intermediate does not lead to the root.
    let leaf_only: Vec<u8> =
        String::from_utf8(chain.clone()).unwrap().split_inclusive("-----END CERTIFICATE-----\n").next().unwrap().into();
    assert!(verify_signature(&leaf_only, &test_roots(), body, &signature, now()).is_err());
    assert!(verify_signature(b"garbage", &test_roots(), body, &signature, now()).is_err());
    assert!(TrustRoots::from_pem(b"nothing here").is_err());
}

fn envelope(kind: &str, timestamp: &str) -> Value {
    json!({
        "version": "1.0",
        "session": {"new": true, "sessionId": "amzn1.echo-api.session.1", "application": {"applicationId": "amzn1.ask.skill.test"},
                    "user": {"userId": "amzn1.ask.account.ADA"}},
        "context": {"System": {"application": {"applicationId": "amzn1.ask.skill.test"}, "user": {"userId": "amzn1.ask.account.ADA"},
                               "device": {"deviceId": "amzn1.ask.device.1"}}},
        "request": {"type": kind, "requestId": "amzn1.echo-api.request.1", "timestamp": timestamp, "locale": "en-US"}
    })
}

#[test]
fn requests_are_read_and_checked_for_time_and_skill() {
    let at = "2026-11-23T12:00:00Z";
    let at_time = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let launch = parse_request(envelope("LaunchRequest", at).to_string().as_bytes()).unwrap();
    assert_eq!(launch.kind, RequestKind::Launch);
    assert_eq!(
        (launch.user_id.as_str(), launch.request_id.as_str()),
        ("amzn1.ask.account.ADA", "amzn1.echo-api.request.1")
    );
    check_request(&launch, "amzn1.ask.skill.test", at_time + chrono::Duration::seconds(149)).unwrap();
    let err = check_request(&launch, "amzn1.ask.skill.test", at_time + chrono::Duration::seconds(151)).unwrap_err();
    assert!(err.0.contains("150 seconds"), "{err}");
    assert!(check_request(&launch, "amzn1.ask.skill.test", at_time - chrono::Duration::seconds(151)).is_err());
    assert!(check_request(&launch, "amzn1.ask.skill.other", at_time).unwrap_err().0.contains("another skill"));

    let mut intent = envelope("IntentRequest", at);
    intent["request"]["intent"] = json!({"name": "CatchAllIntent", "slots": {"utterance": {"name": "utterance", "value": "book me in for tomorrow"}}});
    let read = parse_request(intent.to_string().as_bytes()).unwrap();
    assert_eq!(
        read.kind,
        RequestKind::Intent { name: "CatchAllIntent".into(), utterance: Some("book me in for tomorrow".into()) }
    );
    intent["request"]["intent"] = json!({"name": "AMAZON.StopIntent", "slots": {}});
    let read = parse_request(intent.to_string().as_bytes()).unwrap();
    assert_eq!(read.kind, RequestKind::Intent { name: "AMAZON.StopIntent".into(), utterance: None });
    assert!(matches!(built_in("AMAZON.StopIntent"), Some(BuiltIn::Stop)));

    let mut ended = envelope("SessionEndedRequest", at);
    ended["request"]["reason"] = json!("USER_INITIATED");
    assert_eq!(
        parse_request(ended.to_string().as_bytes()).unwrap().kind,
        RequestKind::SessionEnded { reason: "USER_INITIATED".into() }
    );

    let mut broken = envelope("LaunchRequest", "yesterday");
    assert!(parse_request(broken.to_string().as_bytes()).unwrap_err().0.contains("request.timestamp"));
    broken = envelope("LaunchRequest", at);
    broken["context"]["System"]["user"] = json!(null);
    broken["session"]["user"] = json!(null);
    assert!(parse_request(broken.to_string().as_bytes()).unwrap_err().0.contains("userId"));
    assert!(parse_request(b"{").unwrap_err().0.starts_with("body:"));
}

#[test]
fn the_response_speaks_ssml_and_reprompts() {
    let rendered = crate::reply::render(
        &[crate::reply::Reply { text: "Shall I book it?".into(), quick_replies: vec!["Yes".into(), "No".into()] }],
        &ALEXA_CAPABILITIES,
    );
    let envelope = response(&rendered, false);
    assert_eq!(envelope["version"], "1.0");
    assert_eq!(envelope["response"]["outputSpeech"]["type"], "SSML");
    assert_eq!(envelope["response"]["outputSpeech"]["ssml"], "<speak>Shall I book it? You can say yes or no.</speak>");
    assert_eq!(
        envelope["response"]["reprompt"]["outputSpeech"]["ssml"],
        "<speak>Shall I book it? You can say yes or no.</speak>"
    );
    assert_eq!(envelope["response"]["shouldEndSession"], false);
    let goodbye = response(&crate::reply::render(&[crate::reply::Reply::text("Goodbye.")], &ALEXA_CAPABILITIES), true);
    assert_eq!(goodbye["response"]["shouldEndSession"], true);
    assert!(goodbye["response"].get("reprompt").is_none());
}

#[test]
fn config_is_validated() {
    let config = AlexaConfig { skill_id: " amzn1.ask.skill.0a1b ".into(), bot: "bank".into() }.validate().unwrap();
    assert_eq!(config.skill_id, "amzn1.ask.skill.0a1b");
    assert_eq!(AlexaConfig { skill_id: "skill".into(), bot: "bank".into() }.validate().unwrap_err().field, "skill_id");
    assert_eq!(
        AlexaConfig { skill_id: "amzn1.ask.skill.1".into(), bot: " ".into() }.validate().unwrap_err().field,
        "bot"
    );
}
