//! Property tests: no input panics the event parser, and whatever it answers keeps its promises
//! (times within the documented range, every batch event either kept or rejected with its path, bounded
//! rejection records). Case counts are set so that each test runs in about a second in a debug build:
//! they run in every `cargo test`.

use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::json;

fn options() -> NormalizeOptions<'static> {
    NormalizeOptions { default_region: "US", received_at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() }
}

const CALLS: [EventKind; 6] =
    [EventKind::Identify, EventKind::Track, EventKind::Page, EventKind::Screen, EventKind::Group, EventKind::Alias];

/// Checks what the parser promises about its answer to `body` on `endpoint`; `batch_length` is the
/// number of events when the body is known to be a batch.
fn check(endpoint: Endpoint, body: &[u8], batch_length: Option<usize>) -> Result<(), TestCaseError> {
    let received = options().received_at;
    match parse_request(endpoint, body, &options()) {
        Ok(request) => {
            match endpoint {
                Endpoint::Single(_) => {
                    prop_assert_eq!(request.events.len(), 1);
                    prop_assert!(request.rejected.is_empty());
                }
                Endpoint::Batch => {
                    if let Some(length) = batch_length {
                        prop_assert_eq!(request.events.len() + request.rejected.len(), length);
                    }
                    prop_assert!(
                        !request.events.is_empty() || !request.rejected.is_empty(),
                        "an empty batch is refused"
                    );
                }
            }
            for event in &request.events {
                prop_assert!(event.timestamp.year() >= MIN_EVENT_YEAR, "{}", event.timestamp);
                prop_assert!(event.timestamp <= received + MAX_FUTURE_SKEW, "{}", event.timestamp);
                prop_assert!(!event.message_id.is_empty() && event.message_id.len() <= MAX_NAME_LEN);
                prop_assert!(!event.identities.is_empty() || !event.previous_ids.is_empty());
            }
            let mut previous_index = None;
            for rejected in &request.rejected {
                prop_assert!(previous_index < Some(rejected.index), "in request order");
                previous_index = Some(rejected.index);
                let path = format!("batch[{}]", rejected.index);
                prop_assert!(rejected.message.starts_with(&path), "{}", rejected.message);
                prop_assert!(rejected.raw.len() <= MAX_REJECTED_RAW_BYTES);
                prop_assert!(rejected.message_id.as_ref().is_none_or(|id| id.len() <= MAX_NAME_LEN));
            }
        }
        Err(err) => {
            prop_assert!(err.message.starts_with(&err.path), "the message names the field: {}", err.message);
            prop_assert!(!err.code.is_empty());
        }
    }
    Ok(())
}

/// Any instant chrono can represent, in milliseconds since 1970.
fn chrono_millis() -> BoxedStrategy<i64> {
    (DateTime::<Utc>::MIN_UTC.timestamp_millis()..=DateTime::<Utc>::MAX_UTC.timestamp_millis()).boxed()
}

/// Time texts: ISO 8601 with any year (signed six-digit ones too), the edges of the accepted range, and
/// garbage.
fn time_text() -> BoxedStrategy<String> {
    let year = prop_oneof![
        2 => -300_000i32..300_000,
        6 => 1960i32..2110,
        1 => prop_oneof![
        Just(1969),
        Just(1970),
        Just(2100),
        Just(2101),
        Just(9999),
        Just(262_143),
        Just(-262_144),
        ],
    ];
    let offset = prop_oneof![Just(""), Just("Z"), Just("+14:00"), Just("-12:00"), Just("+23:59"), Just(".999999999Z")];
    let month = prop_oneof![9 => 1u32..13, 1 => 0u32..100];
    let day = prop_oneof![9 => 1u32..29, 1 => 0u32..100];
    let iso = (year, month, day, 0u32..25, 0u32..61, offset, any::<bool>()).prop_map(
        |(year, month, day, hour, minute, offset, spaced)| {
            let year = if (0..=9999).contains(&year) { format!("{year:04}") } else { format!("{year:+}") };
            let separator = if spaced { ' ' } else { 'T' };
            format!("{year}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:00{offset}")
        },
    );
    prop_oneof![4 => iso, 1 => "\\PC{0,30}", 1 => Just(String::new())].boxed()
}

fn time_value() -> BoxedStrategy<Value> {
    prop_oneof![6 => time_text().prop_map(Value::String), 1 => Just(Value::Null), 1 => any::<i64>().prop_map(Value::from)].boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof!["\\PC{0,16}", Just(" ".to_owned()), Just("x".repeat(MAX_NAME_LEN + 1)), Just("é".repeat(300))].boxed()
}

/// An id or a name as clients send them: mostly fine, sometimes wrong or absurd.
fn name_value() -> BoxedStrategy<Value> {
    prop_oneof![6 => "[a-zA-Z0-9 _.@-]{1,24}".prop_map(Value::String), 1 => id_value()].boxed()
}

/// A wrong-or-absurd id: wrong types, blanks, too long, huge numbers.
fn id_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => text().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(json!(5.5e300)),
        1 => Just(Value::Null),
        1 => Just(json!({"id": 1})),
        1 => Just(json!([])),
    ]
    .boxed()
}

/// Any JSON value, a few levels deep, with Segment's field names among the keys.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON numbers are finite", |number| serde_json::Number::from_f64(number)
            .map(Value::Number)),
        text().prop_map(Value::String),
        time_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    const KNOWN: [&str; 23] = [
        "type",
        "userId",
        "anonymousId",
        "previousId",
        "messageId",
        "event",
        "name",
        "groupId",
        "traits",
        "context",
        "properties",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "channel",
        "batch",
        "writeKey",
        "email",
        "phone",
        "consent",
        "device",
        "token",
        "library",
    ];
    prop_oneof![3 => prop::sample::select(&KNOWN[..]).prop_map(str::to_owned), 1 => "\\PC{0,8}"].boxed()
}

fn traits_value() -> BoxedStrategy<Value> {
    let email = prop_oneof![6 => Just(json!("Ada@Example.com")), 1 => Just(json!("nope")), 1 => id_value()];
    let phone = prop_oneof![6 => Just(json!("(415) 555-0132")), 1 => Just(json!("+999")), 1 => id_value()];
    let consent = prop_oneof![
        6 => Just(json!({"email": "subscribed", "sms": "unsubscribed"})),
        1 => Just(json!({"Bad Channel": "subscribed"})),
        1 => Just(json!({"sms": "maybe"})),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.5, email),
        prop::option::weighted(0.3, phone),
        prop::option::weighted(0.2, consent),
        prop::option::weighted(0.5, json_value()),
    )
        .prop_map(|(email, phone, consent, extra)| {
            let mut traits = Map::new();
            for (name, value) in [("email", email), ("phone", phone), ("consent", consent), ("extra", extra)] {
                if let Some(value) = value {
                    traits.insert(name.to_owned(), value);
                }
            }
            Value::Object(traits)
        })
        .boxed()
}

fn context_value() -> BoxedStrategy<Value> {
    let channel = prop_oneof![
        3 => Just(json!("web")),
        3 => Just(json!("mobile")),
        1 => Just(json!("Carrier Pigeon")),
        1 => id_value(),
    ];
    let library = prop_oneof![
        3 => Just(json!({"name": "analytics.js"})),
        3 => Just(json!({"name": "analytics-ios"})),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.5, traits_value()),
        prop::option::weighted(0.2, name_value()),
        prop::option::weighted(0.2, channel),
        prop::option::weighted(0.4, library),
    )
        .prop_map(|(traits, token, channel, library)| {
            let mut context = Map::new();
            if let Some(traits) = traits {
                context.insert("traits".into(), traits);
            }
            if let Some(token) = token {
                context.insert("device".into(), json!({"token": token}));
            }
            if let Some(channel) = channel {
                context.insert("channel".into(), channel);
            }
            if let Some(library) = library {
                context.insert("library".into(), library);
            }
            Value::Object(context)
        })
        .boxed()
}

/// A structurally plausible Segment event: the right field names, with values right, wrong or absurd.
fn segment_event() -> BoxedStrategy<Value> {
    let kind = prop_oneof![
        12 => prop::sample::select(&CALLS[..]).prop_map(|kind| json!(kind.as_str())),
        1 => Just(json!("merge")),
        1 => id_value(),
    ];
    let ids = (
        prop::option::weighted(0.8, name_value()),
        prop::option::weighted(0.3, name_value()),
        prop::option::weighted(0.3, name_value()),
    );
    let times = (
        prop::option::weighted(0.6, time_value()),
        prop::option::weighted(0.2, time_value()),
        prop::option::weighted(0.5, time_value()),
    );
    let names = (
        prop::option::weighted(0.5, name_value()),
        prop::option::weighted(0.7, name_value()),
        prop::option::weighted(0.3, name_value()),
    );
    let properties = prop_oneof![
        4 => prop::collection::vec((key(), json_value()), 0..5).prop_map(|entries| Value::Object(entries.into_iter().collect())),
        1 => json_value(),
    ];
    let bodies = (
        prop::option::weighted(0.5, traits_value()),
        prop::option::weighted(0.5, context_value()),
        prop::option::weighted(0.4, properties),
        prop::option::weighted(0.3, name_value()),
    );
    (prop::option::weighted(0.95, kind), ids, times, names, bodies)
        .prop_map(
            |(
                kind,
                (user_id, anonymous_id, previous_id),
                (timestamp, original, sent_at),
                (message_id, event, group_id),
                (traits, context, properties, name),
            )| {
                let mut fields = Map::new();
                let all = [
                    ("type", kind),
                    ("userId", user_id),
                    ("anonymousId", anonymous_id),
                    ("previousId", previous_id),
                    ("timestamp", timestamp),
                    ("originalTimestamp", original),
                    ("sentAt", sent_at),
                    ("messageId", message_id),
                    ("event", event),
                    ("groupId", group_id),
                    ("traits", traits),
                    ("context", context),
                    ("properties", properties),
                    ("name", name),
                ];
                for (field, value) in all {
                    if let Some(value) = value {
                        fields.insert(field.to_owned(), value);
                    }
                }
                Value::Object(fields)
            },
        )
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(Endpoint::Batch, &bytes, None)?;
        check(Endpoint::Single(EventKind::Track), &bytes, None)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics(value in json_value(), kind in prop::sample::select(&CALLS[..])) {
        let body = serde_json::to_vec(&value).unwrap();
        check(Endpoint::Batch, &body, None)?;
        check(Endpoint::Single(kind), &body, None)?;
        let batch = json!({"batch": [value]});
        check(Endpoint::Batch, &serde_json::to_vec(&batch).unwrap(), Some(1))?;
    }

    #[test]
    fn plausible_single_events_never_panic(event in segment_event(), kind in prop::sample::select(&CALLS[..])) {
        check(Endpoint::Single(kind), &serde_json::to_vec(&event).unwrap(), None)?;
    }

    #[test]
    fn plausible_batches_never_panic(
        events in prop::collection::vec(segment_event(), 1..8),
        sent_at in prop::option::of(time_value()),
        context in prop::option::of(context_value()),
    ) {
        let length = events.len();
        let mut body = json!({"batch": events});
        if let Some(sent_at) = sent_at {
            body["sentAt"] = sent_at;
        }
        if let Some(context) = context {
            body["context"] = context;
        }
        check(Endpoint::Batch, &serde_json::to_vec(&body).unwrap(), Some(length))?;
    }

    #[test]
    fn skew_correction_never_panics(
        original in prop::option::of(chrono_millis()),
        sent_at in prop::option::of(chrono_millis()),
    ) {
        let at = |millis: i64| DateTime::<Utc>::from_timestamp_millis(millis);
        let received = options().received_at;
        if let Some(corrected) = corrected_timestamp(original.and_then(at), sent_at.and_then(at), received) {
            prop_assert!(corrected.year() >= MIN_EVENT_YEAR && corrected <= received + MAX_FUTURE_SKEW);
        }
    }
}
