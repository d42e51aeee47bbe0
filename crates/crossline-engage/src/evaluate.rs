//! One profile against a filter, in memory: what an arriving event needs (incremental membership,
//! triggers), where running the set-based SQL would cost a scan. Meant to have the same semantics
//! as `crossline_store::segment_sql`; `tests/evaluate_matches_sql.rs` compares the two on random data.
//!
//! Bounded: the profile's newest [`EVENT_WINDOW`] events are read; a count beyond them is counted
//! as far as they go (size, members and planning always run the SQL, which has no such bound).

use chrono::{DateTime, Utc};
use crossline_core::segment::{ConversationCondition, Count, EventCondition, Filter, Op, ValueCondition};
use crossline_core::{ConsentStatus, Profile};
use crossline_store::StoredEvent;
use crossline_store::engage::AddressState;
use serde_json::{Map, Value};

/// How many of a profile's newest events incremental evaluation reads.
pub const EVENT_WINDOW: usize = 1000;

/// What is known about one profile.
pub struct Facts<'a> {
    /// The profile.
    pub profile: &'a Profile,
    /// Its newest events, newest first.
    pub events: &'a [StoredEvent],
    /// Its unreachable addresses.
    pub unreachable: &'a [AddressState],
    /// The segments it is stored as a member of (imported lists).
    pub lists: &'a [String],
    /// Now.
    pub now: DateTime<Utc>,
}

/// Whether the profile matches (references already resolved).
pub fn matches(filter: &Filter, facts: &Facts<'_>) -> bool {
    match filter {
        Filter::All(items) => items.iter().all(|item| matches(item, facts)),
        Filter::Any(items) => items.iter().any(|item| matches(item, facts)),
        Filter::Not(inner) => !matches(inner, facts),
        Filter::Trait(condition) => value_test(&facts.profile.traits, condition),
        Filter::Event(condition) => event(condition, facts),
        Filter::Reachable(channel) => reachable(channel, facts),
        Filter::List(id) => facts.lists.iter().any(|list| list == id),
        Filter::Conversation(condition) => conversation(condition, facts),
        Filter::Segment(_) => false,
    }
}

fn lookup<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut parts = name.split('.');
    let mut current = object.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn equal(found: &Value, wanted: &Value) -> bool {
    match (found, wanted) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    }
}

/// The comparison, as the SQL makes it: typed, absent never matches (`ne` aside).
pub fn value_test(object: &Map<String, Value>, condition: &ValueCondition) -> bool {
    let found = lookup(object, &condition.name);
    let Some(wanted) = &condition.value else {
        return matches!(found, Some(value) if !value.is_null());
    };
    let Some(found) = found else {
        return condition.op == Op::Ne;
    };
    match condition.op {
        Op::Exists => !found.is_null(),
        Op::Eq => equal(found, wanted),
        Op::Ne => !equal(found, wanted),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            let ordering = match (found, wanted) {
                (Value::Number(a), Value::Number(b)) => a.as_f64().zip(b.as_f64()).and_then(|(a, b)| a.partial_cmp(&b)),
                (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
                _ => None,
            };
            let Some(ordering) = ordering else { return false };
            match condition.op {
                Op::Gt => ordering.is_gt(),
                Op::Gte => ordering.is_ge(),
                Op::Lt => ordering.is_lt(),
                _ => ordering.is_le(),
            }
        }
        Op::Contains => match (found, wanted) {
            (Value::String(text), Value::String(needle)) => text.to_lowercase().contains(&needle.to_lowercase()),
            (Value::Array(items), wanted) => items.iter().any(|item| equal(item, wanted)),
            _ => false,
        },
    }
}

/// In milliseconds, as the store keeps times and the SQL compares them.
fn in_window(event: &StoredEvent, within_days: Option<u32>, now: DateTime<Utc>) -> bool {
    within_days
        .is_none_or(|days| event.timestamp.timestamp_millis() >= now.timestamp_millis() - i64::from(days) * 86_400_000)
}

fn event(condition: &EventCondition, facts: &Facts<'_>) -> bool {
    let count = facts
        .events
        .iter()
        .filter(|event| event.event.as_deref() == Some(condition.event.as_str()))
        .filter(|event| in_window(event, condition.within_days, facts.now))
        .filter(|event| condition.conditions.iter().all(|property| value_test(&event.properties, property)))
        .count() as u64;
    match condition.count {
        Count::Gte(0) => true,
        count_rule => count_rule.holds(count),
    }
}

fn reachable(channel: &str, facts: &Facts<'_>) -> bool {
    let kinds = crossline_store::segment_sql::address_kinds(channel);
    let consent = facts.profile.consent.0.get(channel).map(|entry| entry.status).unwrap_or(ConsentStatus::Unknown);
    consent != ConsentStatus::Unsubscribed
        && facts.profile.identities.iter().any(|identity| {
            kinds.contains(&identity.kind.as_str())
                && !facts
                    .unreachable
                    .iter()
                    .any(|state| state.kind == identity.kind.as_str() && state.value == identity.value)
        })
}

fn conversation(condition: &ConversationCondition, facts: &Facts<'_>) -> bool {
    let window = |event: &&StoredEvent| in_window(event, condition.within_days, facts.now);
    let named = |name: &'static str| move |event: &&StoredEvent| event.event.as_deref() == Some(name);
    if condition.intent.is_some() || condition.sentiment.is_some() {
        let last =
            facts.events.iter().filter(named("message.received")).filter(window).max_by_key(|event| event.timestamp);
        let Some(last) = last else { return false };
        if let Some(intent) = &condition.intent
            && last.properties.get("intent").and_then(Value::as_str) != Some(intent.as_str())
        {
            return false;
        }
        if let Some(sentiment) = condition.sentiment
            && lookup(&last.properties, "sentiment.label").and_then(Value::as_str) != Some(sentiment.as_str())
        {
            return false;
        }
    }
    if let Some(wanted) = condition.missed {
        let missed = facts
            .events
            .iter()
            .filter(named("message.received"))
            .filter(window)
            .any(|event| event.properties.get("missed") == Some(&Value::Bool(true)));
        if missed != wanted {
            return false;
        }
    }
    if let Some(wanted) = condition.handoff {
        let handed = facts.events.iter().filter(named("conversation.handoff")).any(|event| window(&event));
        if handed != wanted {
            return false;
        }
    }
    true
}
