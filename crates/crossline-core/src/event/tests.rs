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
fn a_bad_event_is_rejected_alone_naming_the_field() {
    let good = json!({"type": "track", "userId": "u", "event": "Fine", "messageId": "good-1"});
    let cases = [
        (json!({"type": "track", "event": "B", "messageId": "bad-1"}), "missing_identity", "batch[1]"),
        (json!({"type": "track", "userId": "u"}), "missing_field", "batch[1].event"),
        (json!({"type": "track", "userId": "u", "event": "csat.submitted"}), "reserved_event_name", "batch[1].event"),
        (
            json!({"type": "track", "userId": "u", "event": " conversation.resolved "}),
            "reserved_event_name",
            "batch[1].event",
        ),
        (json!({"type": "shout", "userId": "u"}), "invalid_field", "batch[1].type"),
        (
            json!({"type": "identify", "userId": "u", "traits": {"email": "nope"}}),
            "invalid_identity",
            "batch[1].traits.email",
        ),
        (
            json!({"type": "identify", "userId": "u", "traits": {"phone": 12}}),
            "invalid_identity",
            "batch[1].traits.phone",
        ),
        (json!({"type": "track", "event": "x", "userId": {"a": 1}}), "invalid_field", "batch[1].userId"),
        (json!({"type": "track", "event": "x", "userId": " "}), "invalid_field", "batch[1].userId"),
        (
            json!({"type": "track", "event": "x", "userId": "u", "properties": [1]}),
            "invalid_field",
            "batch[1].properties",
        ),
        (
            json!({"type": "track", "event": "x", "userId": "u", "timestamp": "yesterday"}),
            "invalid_field",
            "batch[1].timestamp",
        ),
        (json!({"type": "alias", "userId": "u"}), "missing_field", "batch[1].previousId"),
        (json!({"type": "group", "userId": "u"}), "missing_field", "batch[1].groupId"),
        (
            json!({"type": "identify", "userId": "u", "traits": {"consent": {"sms": "maybe"}}}),
            "invalid_field",
            "batch[1].traits.consent.sms",
        ),
        (json!("not an event"), "invalid_field", "batch[1]"),
        (json!([1, 2]), "invalid_field", "batch[1]"),
        (json!(null), "invalid_field", "batch[1]"),
    ];
    for (bad, code, path) in cases {
        let body = json!({"batch": [good, bad]});
        let request = batch(body.clone()).unwrap_or_else(|err| panic!("{body}: the request stands ({err})"));
        assert_eq!(request.events.len(), 1, "{body}: the good event is kept");
        assert_eq!(request.events[0].message_id, "good-1");
        let [rejected] = request.rejected.as_slice() else { panic!("{body}: one rejection: {:?}", request.rejected) };
        assert_eq!((rejected.index, rejected.code), (1, code), "{body}: {}", rejected.message);
        assert!(rejected.message.starts_with(&format!("{path}:")), "message names the field: {}", rejected.message);
        assert_eq!(serde_json::from_str::<Value>(&rejected.raw).unwrap(), bad, "raw is the event as sent");
    }
}

#[test]
fn rejected_events_carry_their_message_id_and_a_bounded_raw_text() {
    let long_text = "é".repeat(3_000);
    let request = batch(json!({"batch": [
        {"type": "track", "event": "x", "messageId": " m-1 "},
        {"type": "track", "event": "x", "messageId": 7},
        {"type": "track", "userId": "u", "event": "x", "messageId": "m-3", "properties": {"text": long_text}, "timestamp": 5},
        {"type": "track", "userId": "u", "event": "x", "messageId": "m-4", "properties": {"blob": "x".repeat(MAX_EVENT_BYTES)}},
    ]}))
    .unwrap();
    assert!(request.events.is_empty(), "every event rejected is still a request that stands");
    let summary: Vec<(usize, Option<&str>, &str)> =
        request.rejected.iter().map(|event| (event.index, event.message_id.as_deref(), event.code)).collect();
    assert_eq!(
        summary,
        [
            (0, Some("m-1"), "missing_identity"),
            (1, None, "missing_identity"),
            (2, Some("m-3"), "invalid_field"),
            (3, Some("m-4"), "event_too_large"),
        ]
    );
    assert!(request.rejected[2].message.starts_with("batch[2].timestamp:"), "{}", request.rejected[2].message);
    for rejected in &request.rejected[2..] {
        assert!(rejected.raw.len() <= MAX_REJECTED_RAW_BYTES && rejected.raw.len() > MAX_REJECTED_RAW_BYTES - 4);
    }
    assert!(request.rejected[2].raw.ends_with('é'), "cut on a character boundary");
}

#[test]
fn request_level_faults_still_refuse_the_batch() {
    let event = json!({"type": "track", "userId": "u", "event": "Fine"});
    let cases = [
        (json!({"batch": []}), "invalid_field", "batch"),
        (json!({"events": []}), "missing_field", "batch"),
        (json!({"batch": {"type": "track"}}), "invalid_json", "body"),
        (json!({"batch": [event], "sentAt": "soon"}), "invalid_field", "sentAt"),
        (json!({"batch": [event], "sentAt": "2200-01-01T00:00:00Z"}), "invalid_field", "sentAt"),
        (json!({"batch": [event], "context": "web"}), "invalid_field", "context"),
    ];
    for (body, code, path) in cases {
        let err = batch(body.clone()).unwrap_err();
        assert_eq!((err.code, err.path.as_str()), (code, path), "{body}: {}", err.message);
        assert!(err.message.starts_with(path), "message names the field: {}", err.message);
    }
}

#[test]
fn a_single_event_call_still_fails_whole() {
    let err =
        parse_request(Endpoint::Single(EventKind::Track), br#"{"event": "x", "userId": " "}"#, &options()).unwrap_err();
    assert_eq!((err.code, err.path.as_str()), ("invalid_field", "body.userId"));
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
    let body = json!({"type": "track", "event": "x", "userId": "u", "properties": {"blob": big}});
    let err = parse_request(Endpoint::Single(EventKind::Track), body.to_string().as_bytes(), &options()).unwrap_err();
    assert_eq!(err.code, "event_too_large");
    assert!(err.is_too_large());
    let rejected = batch(json!({"batch": [body]})).unwrap().rejected;
    assert_eq!((rejected[0].index, rejected[0].code), (0, "event_too_large"));
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

#[test]
fn times_outside_1970_to_2100_are_invalid_fields() {
    let single =
        |body: Value| parse_request(Endpoint::Single(EventKind::Track), body.to_string().as_bytes(), &options());
    // Finding 5: this overflowed the skew correction and panicked.
    let err = single(json!({"userId": "u", "event": "x", "timestamp": "-200000-01-01T00:00:00",
        "sentAt": "+200000-01-01T00:00:00"}))
    .unwrap_err();
    assert_eq!((err.code, err.path.as_str()), ("invalid_field", "body.timestamp"), "{}", err.message);
    assert!(err.message.contains("1970-2100"), "{}", err.message);
    for (field, raw) in [
        ("timestamp", "9999-12-31T23:59:59Z"),
        ("timestamp", "1969-12-31T23:59:59Z"),
        ("originalTimestamp", "+200000-01-01T00:00:00"),
        ("sentAt", "+200000-01-01T00:00:00"),
        ("sentAt", "2101-01-01T00:00:00Z"),
    ] {
        let err = single(json!({"userId": "u", "event": "x", field: raw})).unwrap_err();
        assert_eq!((err.code, err.path), ("invalid_field", format!("body.{field}")), "{raw}: {}", err.message);
    }
    let rejected =
        batch(json!({"batch": [{"type": "track", "userId": "u", "event": "x", "timestamp": "9999-01-01T00:00:00Z"}]}))
            .unwrap()
            .rejected;
    assert!(rejected[0].message.starts_with("batch[0].timestamp:"), "{}", rejected[0].message);
    // The edges of the range are accepted.
    for raw in ["1970-01-01T00:00:00Z", "2100-12-31T23:59:59Z"] {
        assert!(single(json!({"userId": "u", "event": "x", "sentAt": raw})).is_ok(), "{raw}");
    }
}

#[test]
fn future_times_are_clamped_to_receipt_and_pre_1970_ones_rejected() {
    let received = options().received_at;
    let single =
        |body: Value| parse_request(Endpoint::Single(EventKind::Track), body.to_string().as_bytes(), &options());
    let time_of = |body: Value| single(body).unwrap().events[0].timestamp;
    // Up to 24 hours ahead is kept (a client a little ahead, time zones written wrong)...
    assert_eq!(
        time_of(json!({"userId": "u", "event": "x", "timestamp": "2026-11-24T12:00:00Z"})),
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
    );
    // ...beyond that it is the receive time, with or without sentAt.
    assert_eq!(time_of(json!({"userId": "u", "event": "x", "timestamp": "2026-11-24T12:00:01Z"})), received);
    assert_eq!(time_of(json!({"userId": "u", "event": "x", "timestamp": "2099-01-01T00:00:00Z"})), received);
    assert_eq!(
        time_of(
            json!({"userId": "u", "event": "x", "timestamp": "2100-01-01T00:00:00Z", "sentAt": "1970-01-01T00:00:00Z"})
        ),
        received
    );
    // Corrected for skew, this lands 130 years before the receive time: before 1970, so invalid.
    let err = single(json!({"userId": "u", "event": "x", "timestamp": "1970-01-01T00:00:00Z",
        "sentAt": "2100-01-01T00:00:00Z"}))
    .unwrap_err();
    assert_eq!((err.code, err.path.as_str()), ("invalid_field", "body.timestamp"), "{}", err.message);
    let err = single(json!({"userId": "u", "event": "x", "originalTimestamp": "1970-01-01T00:00:00Z",
        "sentAt": "2100-01-01T00:00:00Z"}))
    .unwrap_err();
    assert_eq!(err.path, "body.originalTimestamp");
    assert_eq!(corrected_timestamp(None, None, received), Some(received));
    assert_eq!(corrected_timestamp(Some(DateTime::<Utc>::MIN_UTC), Some(DateTime::<Utc>::MAX_UTC), received), None);
    assert_eq!(
        corrected_timestamp(Some(DateTime::<Utc>::MAX_UTC), Some(DateTime::<Utc>::MIN_UTC), received),
        Some(received)
    );
}

#[test]
fn identify_traits_come_from_context_when_traits_is_absent() {
    // rudder-sdk-python's identify: traits only in context.traits.
    let rudder = json!({"type": "identify", "userId": "u-7", "messageId": "r-1",
        "context": {"traits": {"email": "Grace@Example.com", "phone": "+1 415 555 0100", "plan": "pro",
                               "consent": {"email": "subscribed"}},
                    "library": {"name": "analytics-python"}},
        "channel": "server"});
    let event = &batch(json!({"batch": [rudder]})).unwrap().events[0];
    let identities: Vec<String> = event.identities.iter().map(ToString::to_string).collect();
    assert_eq!(identities, ["user_id:u-7", "email:grace@example.com", "phone:+14155550100"]);
    assert_eq!(event.traits["plan"], "pro");
    assert_eq!(event.traits["email"], "grace@example.com");
    assert_eq!(event.consent, vec![("email".to_owned(), ConsentStatus::Subscribed)]);
    assert_eq!(event.properties["plan"], "pro", "the timeline shows the traits it set");
    // A faulty context trait is named by its path.
    let rejected = batch(json!({"batch": [{"type": "identify", "userId": "u", "context": {"traits": {"email": 5}}}]}))
        .unwrap()
        .rejected;
    assert!(rejected[0].message.starts_with("batch[0].context.traits.email:"), "{}", rejected[0].message);
    // `traits` given (even empty) wins, as the Segment spec has it; `null` counts as absent.
    let both = json!({"userId": "u", "traits": {"plan": "basic"}, "context": {"traits": {"plan": "pro"}}});
    let event = &parse_request(Endpoint::Single(EventKind::Identify), both.to_string().as_bytes(), &options())
        .unwrap()
        .events[0];
    assert_eq!(event.traits["plan"], "basic");
    let null = json!({"userId": "u", "traits": null, "context": {"traits": {"plan": "pro"}}});
    let event = &parse_request(Endpoint::Single(EventKind::Identify), null.to_string().as_bytes(), &options())
        .unwrap()
        .events[0];
    assert_eq!(event.traits["plan"], "pro");
}
