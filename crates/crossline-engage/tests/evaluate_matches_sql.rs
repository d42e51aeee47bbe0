//! The in-memory evaluation (incremental memberships, triggers) and the SQL (sizes, members,
//! planning) must agree: random profiles, events and filters on the real SQLite store, every
//! profile checked both ways.

use chrono::{Duration, Utc};
use crossline_core::segment::Filter;
use crossline_store::{EngageStore, EventQuery, ProfileStore, WorkspaceStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn random_condition(rng: &mut StdRng) -> Value {
    let traits = ["plan", "age", "tags", "city"];
    let values = [json!("pro"), json!("free"), json!(30), json!(41.5), json!("Oslo"), json!("vip"), json!(true)];
    match rng.random_range(0..6) {
        0 => {
            let op = ["eq", "ne", "gt", "gte", "lt", "lte", "contains"][rng.random_range(0..7)];
            let mut value = values[rng.random_range(0..values.len())].clone();
            if ["gt", "gte", "lt", "lte"].contains(&op) && value.is_boolean() {
                value = json!(35);
            }
            json!({"trait": traits[rng.random_range(0..traits.len())], "op": op, "value": value})
        }
        1 => json!({"trait": traits[rng.random_range(0..traits.len())], "op": "exists"}),
        2 => {
            let count = match rng.random_range(0..3) {
                0 => json!({"gte": rng.random_range(0..4)}),
                1 => json!({"lte": rng.random_range(0..3)}),
                _ => json!({"eq": rng.random_range(0..3)}),
            };
            let mut condition = json!({"event": (["Bought", "Viewed"][rng.random_range(0..2)]), "count": count});
            if rng.random_bool(0.5) {
                condition["within_days"] = json!(rng.random_range(1..40));
            }
            if rng.random_bool(0.3) {
                condition["where"] = json!([{"property": "total", "op": "gt", "value": rng.random_range(0..100)}]);
            }
            condition
        }
        3 => json!({"reachable": (["email", "sms"][rng.random_range(0..2)])}),
        4 => {
            let mut signals = serde_json::Map::new();
            match rng.random_range(0..4) {
                0 => signals.insert("intent".into(), json!(["cancel", "book"][rng.random_range(0..2)])),
                1 => signals
                    .insert("sentiment".into(), json!(["negative", "neutral", "positive"][rng.random_range(0..3)])),
                2 => signals.insert("missed".into(), json!(rng.random_bool(0.5))),
                _ => signals.insert("handoff".into(), json!(rng.random_bool(0.5))),
            };
            if rng.random_bool(0.5) {
                signals.insert("within_days".into(), json!(rng.random_range(1..40)));
            }
            json!({"conversation": signals})
        }
        _ => json!({"not": {"trait": "plan", "op": "eq", "value": "pro"}}),
    }
}

fn random_filter(rng: &mut StdRng, depth: usize) -> Value {
    if depth > 1 || rng.random_bool(0.5) {
        return random_condition(rng);
    }
    let items: Vec<Value> = (0..rng.random_range(1..4)).map(|_| random_filter(rng, depth + 1)).collect();
    if rng.random_bool(0.5) { json!({"all": items}) } else { json!({"any": items}) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_evaluation_agrees_with_the_sql() {
    let dir = tempfile::tempdir().unwrap();
    let store = crossline_store::sqlite::SqliteStore::open(&dir.path().join("crossline.db")).await.unwrap();
    let workspace = crossline_store::testsuite::sample_workspace("agree");
    store.create_workspace(&workspace, "w-agree", "a-agree").await.unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let now = Utc::now();
    let mut batch = Vec::new();
    for person in 0..60 {
        let mut traits = serde_json::Map::new();
        if rng.random_bool(0.8) {
            traits.insert("plan".into(), json!(["pro", "free", "Pro"][rng.random_range(0..3)]));
        }
        if rng.random_bool(0.6) {
            traits.insert(
                "age".into(),
                ([json!(30), json!(41.5), json!("30"), json!(18)][rng.random_range(0..4)]).clone(),
            );
        }
        if rng.random_bool(0.4) {
            traits.insert("tags".into(), json!(["vip", "beta"][..rng.random_range(1..3)]));
        }
        if rng.random_bool(0.4) {
            traits.insert("city".into(), json!(["Oslo", "oslo city", "Bergen"][rng.random_range(0..3)]));
        }
        if rng.random_bool(0.6) {
            traits.insert("email".into(), json!(format!("p{person}@example.com")));
        }
        if rng.random_bool(0.4) {
            traits.insert("phone".into(), json!(format!("+1415555{:04}", person)));
        }
        if rng.random_bool(0.3) {
            traits.insert("consent".into(), json!({"email": (["subscribed", "unsubscribed"][rng.random_range(0..2)])}));
        }
        batch.push(json!({"type": "identify", "userId": format!("u{person}"), "traits": traits}));
        for _ in 0..rng.random_range(0..6) {
            let age = Duration::hours(rng.random_range(0..24 * 50));
            let timestamp = (now - age).to_rfc3339();
            let event = match rng.random_range(0..4) {
                0 | 1 => {
                    json!({"type": "track", "userId": format!("u{person}"), "event": (["Bought", "Viewed"][rng.random_range(0..2)]),
                    "properties": {"total": rng.random_range(0..150)}, "timestamp": timestamp})
                }
                2 => {
                    json!({"type": "track", "userId": format!("u{person}"), "event": "message.received", "timestamp": timestamp,
                    "properties": {"intent": ([json!("cancel"), json!("book"), Value::Null][rng.random_range(0..3)]),
                                   "missed": rng.random_bool(0.3),
                                   "sentiment": {"label": (["negative", "neutral", "positive"][rng.random_range(0..3)])}}})
                }
                _ => {
                    json!({"type": "track", "userId": format!("u{person}"), "event": "conversation.handoff", "timestamp": timestamp})
                }
            };
            batch.push(event);
        }
    }
    store.ingest(&workspace.id, crossline_store::testsuite::events(json!({"batch": batch}))).await.unwrap();
    let everyone = store.segment_members(&workspace.id, &Filter::All(vec![]), now, None, 1000).await.unwrap();
    let mut checked = 0;
    for round in 0..150 {
        let raw = random_filter(&mut rng, 0);
        let filter = Filter::parse(&raw).unwrap();
        let sql: std::collections::BTreeSet<String> =
            store.segment_members(&workspace.id, &filter, now, None, 1000).await.unwrap().into_iter().collect();
        for id in &everyone {
            let profile = store.profile(&workspace.id, id).await.unwrap().unwrap();
            let events = store.events(&workspace.id, id, &EventQuery { limit: 1000, kind: None }).await.unwrap();
            let unreachable = store.address_states(&workspace.id, id).await.unwrap();
            let lists = store.memberships(&workspace.id, id).await.unwrap();
            let facts = crossline_engage::evaluate::Facts {
                profile: &profile,
                events: &events,
                unreachable: &unreachable,
                lists: &lists,
                now,
            };
            let memory = crossline_engage::evaluate::matches(&filter, &facts);
            assert_eq!(memory, sql.contains(id), "round {round}, filter {raw}, profile {} {:?}", id, profile.traits);
            checked += 1;
        }
    }
    assert!(checked > 1000);
}
