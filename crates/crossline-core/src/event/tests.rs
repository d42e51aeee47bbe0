use super::*;
use chrono::TimeZone;
use serde_json::json;

fn options() -> NormalizeOptions<'static> {
    NormalizeOptions { default_region: "US", received_at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() }
}

fn batch(body: Value) -> Result<SegmentRequest, EventValidationError> {
    parse_request(Endpoint::Batch, &serde_json::to_vec(&body).unwrap(), &options())
}

#[test]
fn identify_collects_normalised_identities_and_traits() {
    let body = json!({
        "userId": "u-1", "anonymousId": "anon-1", "messageId": "m-1",
        "traits": {"email": " Ada@Example.com", "phone": "(415) 555-0132", "name": "Ada",
                   "consent": {"sms": "subscribed"}},
        "context": {"device": {"token": "tok-1"}}
    });
    let request =
        parse_request(Endpoint::Single(EventKind::Identify), body.to_string().as_bytes(), &options()).unwrap();
    let event = &request.events[0];
    assert_eq!(event.kind, EventKind::Identify);
    let identities: Vec<String> = event.identities.iter().map(ToString::to_string).collect();
    assert_eq!(
        identities,
        ["user_id:u-1", "anonymous_id:anon-1", "email:ada@example.com", "phone:+14155550132", "device_token:tok-1"]
    );
    assert_eq!(event.traits["email"], "ada@example.com");
    assert_eq!(event.traits["name"], "Ada");
    assert!(!event.traits.contains_key("consent"));
    assert_eq!(event.consent, vec![("sms".to_owned(), ConsentStatus::Subscribed)]);
    assert_eq!(event.channel, "server");
}

#[test]
fn clock_skew_is_corrected_with_sent_at() {
    // The client clock is 1 hour fast: it stamped the event 10 s before sending.
    let body = json!({"sentAt": "2026-11-23T13:00:10Z", "batch": [
        {"type": "track", "event": "Viewed", "userId": "u", "timestamp": "2026-11-23T13:00:00Z"},
        {"type": "track", "event": "Viewed", "userId": "u"},
        {"type": "page", "userId": "u", "timestamp": "2026-11-23T11:59:00+00:00", "sentAt": null}
    ]});
    let events = batch(body).unwrap().events;
    assert_eq!(events[0].timestamp, Utc.with_ymd_and_hms(2026, 11, 23, 11, 59, 50).unwrap());
    assert_eq!(events[1].timestamp, options().received_at);
    // A per-event `sentAt: null` falls back to the batch's: 12:00:00 - (13:00:10 - 11:59:00).
    assert_eq!(events[2].timestamp, Utc.with_ymd_and_hms(2026, 11, 23, 10, 58, 50).unwrap());
    assert_eq!(events[2].channel, "web");
}

#[test]
fn one_bad_event_rejects_the_batch_naming_the_field() {
    let cases = [
        (
            json!({"batch": [{"type": "track", "userId": "u", "event": "A"}, {"type": "track", "event": "B"}]}),
            "missing_identity",
            "batch[1]",
        ),
        (json!({"batch": [{"type": "track", "userId": "u"}]}), "missing_field", "batch[0].event"),
        (json!({"batch": [{"type": "shout", "userId": "u"}]}), "invalid_field", "batch[0].type"),
        (
            json!({"batch": [{"type": "identify", "userId": "u", "traits": {"email": "nope"}}]}),
            "invalid_identity",
            "batch[0].traits.email",
        ),
        (
            json!({"batch": [{"type": "identify", "userId": "u", "traits": {"phone": 12}}]}),
            "invalid_identity",
            "batch[0].traits.phone",
        ),
        (json!({"batch": [{"type": "track", "event": "x", "userId": {"a": 1}}]}), "invalid_field", "batch[0].userId"),
        (
            json!({"batch": [{"type": "track", "event": "x", "userId": "u", "properties": [1]}]}),
            "invalid_field",
            "batch[0].properties",
        ),
        (
            json!({"batch": [{"type": "track", "event": "x", "userId": "u", "timestamp": "yesterday"}]}),
            "invalid_field",
            "batch[0].timestamp",
        ),
        (json!({"batch": [{"type": "alias", "userId": "u"}]}), "missing_field", "batch[0].previousId"),
        (json!({"batch": [{"type": "group", "userId": "u"}]}), "missing_field", "batch[0].groupId"),
        (
            json!({"batch": [{"type": "identify", "userId": "u", "traits": {"consent": {"sms": "maybe"}}}]}),
            "invalid_field",
            "batch[0].traits.consent.sms",
        ),
        (json!({"batch": []}), "invalid_field", "batch"),
        (json!({"events": []}), "missing_field", "batch"),
    ];
    for (body, code, path) in cases {
        let err = batch(body.clone()).unwrap_err();
        assert_eq!((err.code, err.path.as_str()), (code, path), "{body}: {}", err.message);
        assert!(err.message.starts_with(path), "message names the field: {}", err.message);
    }
}

#[test]
fn malformed_json_and_wrong_endpoint() {
    let err = parse_request(Endpoint::Batch, b"{\"batch\": [", &options()).unwrap_err();
    assert_eq!(err.code, "invalid_json");
    let err =
        parse_request(Endpoint::Single(EventKind::Track), br#"{"type":"page","userId":"u"}"#, &options()).unwrap_err();
    assert_eq!(err.code, "invalid_field");
    assert!(err.message.contains("/v1/page"));
}

#[test]
fn sizes_are_limited() {
    let big = "x".repeat(MAX_EVENT_BYTES);
    let err = batch(json!({"batch": [{"type": "track", "event": "x", "userId": "u", "properties": {"blob": big}}]}))
        .unwrap_err();
    assert_eq!(err.code, "event_too_large");
    assert!(err.is_too_large());
    let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
    assert_eq!(parse_request(Endpoint::Batch, &huge, &options()).unwrap_err().code, "request_too_large");
}

#[test]
fn alias_offers_both_readings_of_previous_id() {
    let events = batch(json!({"batch": [{"type": "alias", "userId": "u-2", "previousId": "anon-9"}]})).unwrap().events;
    let previous: Vec<String> = events[0].previous_ids.iter().map(ToString::to_string).collect();
    assert_eq!(previous, ["user_id:anon-9", "anonymous_id:anon-9"]);
}

#[test]
fn write_key_and_batch_context() {
    let request = batch(json!({"writeKey": "wk_1", "context": {"channel": "email"},
        "batch": [{"type": "track", "event": "Opened", "userId": 42, "context": {"ip": "1.2.3.4"}}]}))
    .unwrap();
    assert_eq!(request.write_key.as_deref(), Some("wk_1"));
    assert_eq!(request.events[0].channel, "email");
    assert_eq!(request.events[0].identities[0].value, "42");
}

#[test]
fn rudderstack_mobile_channel_and_original_timestamp() {
    let events = batch(json!({"batch": [{"type": "screen", "anonymousId": "a", "channel": "mobile",
        "originalTimestamp": "2026-11-23T11:00:00.000Z", "sentAt": "2026-11-23T11:00:00.000Z"}]}))
    .unwrap()
    .events;
    assert_eq!(events[0].channel, "app");
    assert_eq!(events[0].timestamp, options().received_at);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = parse_request(Endpoint::Batch, &bytes, &options());
        let _ = parse_request(Endpoint::Single(EventKind::Track), &bytes, &options());
    }
}
