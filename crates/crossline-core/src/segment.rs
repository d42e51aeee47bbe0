//! Segment filters: the language of `CONTRACT.md` § Engagement, parsed from JSON with every fault
//! named by its place (`filter.all[2].count.gte`), and bounded so a filter can always be evaluated.
//!
//! A filter is evaluated by the store (compiled to SQL) and never here: this module says what a
//! filter *is*, the backends say how to find its members.

use serde_json::{Map, Value};
use std::fmt;

/// Most conditions in one filter (counted over the whole tree, references not expanded).
pub const MAX_NODES: usize = 100;
/// Deepest nesting of `all` / `any` / `not`, and of segments referring to segments.
pub const MAX_DEPTH: usize = 8;
/// Most conditions a filter has with the segments it refers to inlined.
pub const MAX_RESOLVED_NODES: usize = 1_000;
/// The longest trait, property, event or intent name.
pub const MAX_NAME_LEN: usize = 256;
/// The longest window in days.
pub const MAX_WINDOW_DAYS: u32 = 3650;

/// A segment filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every sub-filter holds (an empty list holds for everyone).
    All(Vec<Filter>),
    /// At least one sub-filter holds (an empty list holds for no one).
    Any(Vec<Filter>),
    /// The sub-filter does not hold.
    Not(Box<Filter>),
    /// A trait compared with a value.
    Trait(ValueCondition),
    /// Events performed: how many, in which window, with which properties.
    Event(EventCondition),
    /// The profile has an address on the channel that is not unsubscribed and not unreachable.
    Reachable(String),
    /// Membership of another segment, by id.
    Segment(String),
    /// Conversation signals.
    Conversation(ConversationCondition),
    /// Membership of an imported list (a segment whose members were uploaded). Never parsed from
    /// JSON: a `{"segment": ID}` naming a list becomes this when references are resolved.
    List(String),
}

/// A comparison of a trait or an event property.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueCondition {
    /// The trait or property name; dots reach into objects (`address.city`).
    pub name: String,
    /// The comparison.
    pub op: Op,
    /// The value compared with; None only for `exists`.
    pub value: Option<Value>,
}

impl ValueCondition {
    /// The name as a path of object keys.
    pub fn path(&self) -> Vec<&str> {
        self.name.split('.').collect()
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal (strings case-sensitively, numbers by value).
    Eq,
    /// Not equal, or absent.
    Ne,
    /// Greater than (numbers, or strings such as ISO dates, compared as such).
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// A string containing the value (case-insensitive), or an array with the value as an element.
    Contains,
    /// Present and not null.
    Exists,
}

impl Op {
    fn parse(raw: &str) -> Option<Op> {
        Some(match raw {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "contains" => Op::Contains,
            "exists" => Op::Exists,
            _ => return None,
        })
    }

    /// The name in the filter language.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Contains => "contains",
            Op::Exists => "exists",
        }
    }
}

/// How many times an event was performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// At least N.
    Gte(u64),
    /// At most N (zero included: "did not do it more than N times").
    Lte(u64),
    /// Exactly N.
    Eq(u64),
}

impl Count {
    /// Whether a profile with `n` matching events satisfies the count.
    pub fn holds(self, n: u64) -> bool {
        match self {
            Count::Gte(bound) => n >= bound,
            Count::Lte(bound) => n <= bound,
            Count::Eq(bound) => n == bound,
        }
    }

    /// Whether a profile that never performed the event satisfies it: such profiles have no row to
    /// count, so the store finds them as "not among those who break it".
    pub fn holds_for_zero(self) -> bool {
        self.holds(0)
    }
}

/// An event condition.
#[derive(Debug, Clone, PartialEq)]
pub struct EventCondition {
    /// The track event's name.
    pub event: String,
    /// How many times; at least once when not given.
    pub count: Count,
    /// Only events of the last N days count.
    pub within_days: Option<u32>,
    /// Property conditions every counted event meets.
    pub conditions: Vec<ValueCondition>,
}

/// A sentiment label, as the NLU gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentimentLabel {
    /// Negative.
    Negative,
    /// Neutral.
    Neutral,
    /// Positive.
    Positive,
}

impl SentimentLabel {
    /// The name in events and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            SentimentLabel::Negative => "negative",
            SentimentLabel::Neutral => "neutral",
            SentimentLabel::Positive => "positive",
        }
    }
}

/// Conversation signals; every given part must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConversationCondition {
    /// The customer's last message in the window was recognised as this intent.
    pub intent: Option<String>,
    /// The customer's last message had this sentiment.
    pub sentiment: Option<SentimentLabel>,
    /// A message the bot did not understand.
    pub missed: Option<bool>,
    /// A handoff to a person.
    pub handoff: Option<bool>,
    /// Only the last N days count.
    pub within_days: Option<u32>,
}

/// A fault in a filter, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// Where: `filter`, `filter.all[1].count`, ...
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FilterError {}

struct Parser {
    nodes: usize,
}

impl Filter {
    /// Parses and checks a filter given as JSON.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        Parser { nodes: 0 }.filter(value, "filter", 0)
    }

    /// The filter as JSON, the inverse of [`Filter::parse`].
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        match self {
            Filter::All(items) => json!({"all": items.iter().map(Filter::to_json).collect::<Vec<_>>()}),
            Filter::Any(items) => json!({"any": items.iter().map(Filter::to_json).collect::<Vec<_>>()}),
            Filter::Not(inner) => json!({"not": inner.to_json()}),
            Filter::Trait(condition) => condition.to_json("trait"),
            Filter::Event(condition) => {
                let mut object = Map::new();
                object.insert("event".into(), condition.event.clone().into());
                let (op, n) = match condition.count {
                    Count::Gte(n) => ("gte", n),
                    Count::Lte(n) => ("lte", n),
                    Count::Eq(n) => ("eq", n),
                };
                object.insert("count".into(), json!({ op: n }));
                if let Some(days) = condition.within_days {
                    object.insert("within_days".into(), days.into());
                }
                if !condition.conditions.is_empty() {
                    let wheres = condition.conditions.iter().map(|c| c.to_json("property")).collect::<Vec<_>>();
                    object.insert("where".into(), wheres.into());
                }
                Value::Object(object)
            }
            Filter::Reachable(channel) => json!({"reachable": channel}),
            Filter::Segment(id) | Filter::List(id) => json!({"segment": id}),
            Filter::Conversation(condition) => {
                let mut object = Map::new();
                if let Some(intent) = &condition.intent {
                    object.insert("intent".into(), intent.clone().into());
                }
                if let Some(sentiment) = condition.sentiment {
                    object.insert("sentiment".into(), sentiment.as_str().into());
                }
                if let Some(missed) = condition.missed {
                    object.insert("missed".into(), missed.into());
                }
                if let Some(handoff) = condition.handoff {
                    object.insert("handoff".into(), handoff.into());
                }
                if let Some(days) = condition.within_days {
                    object.insert("within_days".into(), days.into());
                }
                json!({"conversation": object})
            }
        }
    }

    /// The ids of the segments this filter names, in order of appearance.
    pub fn referenced_segments(&self) -> Vec<&str> {
        let mut found = Vec::new();
        self.visit(&mut |filter| {
            if let Filter::Segment(id) = filter {
                found.push(id.as_str());
            }
        });
        found
    }

    /// Replaces every `{"segment": ID}` through `resolve` (the referenced segment's own filter,
    /// or [`Filter::List`] for an imported list), recursively; a cycle, a missing segment or
    /// nesting deeper than [`MAX_DEPTH`] is an error naming the segment.
    pub fn resolve(
        &self,
        resolve: &mut dyn FnMut(&str) -> Option<Filter>,
        depth: usize,
        chain: &mut Vec<String>,
    ) -> Result<Filter, FilterError> {
        self.resolve_within(resolve, depth, chain, &mut 0)
    }

    /// [`Filter::resolve`], counting the nodes made in `made`: a segment may be referenced many
    /// times over, and without a bound a few segments of a hundred references each would expand
    /// to more nodes than memory holds.
    fn resolve_within(
        &self,
        resolve: &mut dyn FnMut(&str) -> Option<Filter>,
        depth: usize,
        chain: &mut Vec<String>,
        made: &mut usize,
    ) -> Result<Filter, FilterError> {
        *made += 1;
        if *made > MAX_RESOLVED_NODES {
            return Err(FilterError {
                path: "filter".into(),
                message: format!("with the segments it refers to, it has more than {MAX_RESOLVED_NODES} conditions"),
            });
        }
        Ok(match self {
            Filter::All(items) => Filter::All(
                items.iter().map(|f| f.resolve_within(resolve, depth, chain, made)).collect::<Result<_, _>>()?,
            ),
            Filter::Any(items) => Filter::Any(
                items.iter().map(|f| f.resolve_within(resolve, depth, chain, made)).collect::<Result<_, _>>()?,
            ),
            Filter::Not(inner) => Filter::Not(Box::new(inner.resolve_within(resolve, depth, chain, made)?)),
            Filter::Segment(id) => {
                let at = || FilterError { path: format!("segment {id}"), message: String::new() };
                if chain.iter().any(|seen| seen == id) {
                    return Err(FilterError { message: "refers to itself through other segments".into(), ..at() });
                }
                if depth >= MAX_DEPTH {
                    return Err(FilterError { message: format!("segments nest deeper than {MAX_DEPTH}"), ..at() });
                }
                let Some(target) = resolve(id) else {
                    return Err(FilterError { message: "no such segment".into(), ..at() });
                };
                chain.push(id.clone());
                let resolved = target.resolve_within(resolve, depth + 1, chain, made)?;
                chain.pop();
                resolved
            }
            other => other.clone(),
        })
    }

    /// Whether who matches can change with the passing of time alone: an event or conversation
    /// condition with `within_days` (call it on a resolved filter, or references are not seen).
    pub fn looks_back(&self) -> bool {
        let mut found = false;
        self.visit(&mut |filter| match filter {
            Filter::Event(condition) => found |= condition.within_days.is_some(),
            Filter::Conversation(condition) => found |= condition.within_days.is_some(),
            _ => {}
        });
        found
    }

    fn visit<'a>(&'a self, each: &mut dyn FnMut(&'a Filter)) {
        each(self);
        match self {
            Filter::All(items) | Filter::Any(items) => items.iter().for_each(|item| item.visit(each)),
            Filter::Not(inner) => inner.visit(each),
            _ => {}
        }
    }
}

impl ValueCondition {
    fn to_json(&self, key: &str) -> Value {
        let mut object = Map::new();
        object.insert(key.into(), self.name.clone().into());
        object.insert("op".into(), self.op.as_str().into());
        if let Some(value) = &self.value {
            object.insert("value".into(), value.clone());
        }
        Value::Object(object)
    }
}

fn fault(path: &str, message: impl Into<String>) -> FilterError {
    FilterError { path: path.to_owned(), message: message.into() }
}

fn name(value: Option<&Value>, path: &str) -> Result<String, FilterError> {
    match value {
        Some(Value::String(text)) if !text.trim().is_empty() && text.len() <= MAX_NAME_LEN => {
            if text.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                return Err(fault(path, "a name cannot hold quotes, backslashes or control characters"));
            }
            if text.split('.').any(str::is_empty) {
                return Err(fault(path, "a name cannot start or end with a dot or hold two dots in a row"));
            }
            Ok(text.clone())
        }
        Some(Value::String(text)) if text.len() > MAX_NAME_LEN => {
            Err(fault(path, format!("is longer than {MAX_NAME_LEN} bytes")))
        }
        Some(_) => Err(fault(path, "must be a non-empty string")),
        None => Err(fault(path, "is required")),
    }
}

fn days(value: Option<&Value>, path: &str) -> Result<Option<u32>, FilterError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if (1..=MAX_WINDOW_DAYS as u64).contains(&n) => Ok(Some(n as u32)),
            _ => Err(fault(path, format!("must be a whole number of days from 1 to {MAX_WINDOW_DAYS}"))),
        },
    }
}

fn only_keys(object: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), FilterError> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => {
            Err(fault(&format!("{path}.{key}"), format!("is not known here (expected one of: {})", allowed.join(", "))))
        }
        None => Ok(()),
    }
}

impl Parser {
    fn filter(&mut self, value: &Value, path: &str, depth: usize) -> Result<Filter, FilterError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(fault(path, format!("the filter has more than {MAX_NODES} conditions")));
        }
        if depth > MAX_DEPTH {
            return Err(fault(path, format!("filters nest deeper than {MAX_DEPTH}")));
        }
        let Value::Object(object) = value else {
            return Err(fault(path, "must be an object such as {\"all\": [...]} or a condition"));
        };
        let list = |parser: &mut Parser, key: &str| -> Result<Vec<Filter>, FilterError> {
            only_keys(object, &[key], path)?;
            let at = format!("{path}.{key}");
            let Some(Value::Array(items)) = object.get(key) else {
                return Err(fault(&at, "must be a list of filters"));
            };
            items
                .iter()
                .enumerate()
                .map(|(index, item)| parser.filter(item, &format!("{at}[{index}]"), depth + 1))
                .collect()
        };
        if object.contains_key("all") {
            return Ok(Filter::All(list(self, "all")?));
        }
        if object.contains_key("any") {
            return Ok(Filter::Any(list(self, "any")?));
        }
        if let Some(inner) = object.get("not") {
            only_keys(object, &["not"], path)?;
            return Ok(Filter::Not(Box::new(self.filter(inner, &format!("{path}.not"), depth + 1)?)));
        }
        if object.contains_key("trait") {
            only_keys(object, &["trait", "op", "value"], path)?;
            return Ok(Filter::Trait(value_condition(object, "trait", path)?));
        }
        if object.contains_key("event") {
            return Ok(Filter::Event(event_condition(object, path)?));
        }
        if let Some(channel) = object.get("reachable") {
            only_keys(object, &["reachable"], path)?;
            let at = format!("{path}.reachable");
            return match channel.as_str() {
                Some(channel) if crate::consent::is_valid_channel_name(channel) => {
                    Ok(Filter::Reachable(channel.to_owned()))
                }
                _ => Err(fault(&at, "must be a channel name such as \"email\" or \"sms\"")),
            };
        }
        if let Some(id) = object.get("segment") {
            only_keys(object, &["segment"], path)?;
            return match id.as_str() {
                Some(id) if !id.is_empty() && id.len() <= 64 => Ok(Filter::Segment(id.to_owned())),
                _ => Err(fault(&format!("{path}.segment"), "must be a segment id")),
            };
        }
        if let Some(signals) = object.get("conversation") {
            only_keys(object, &["conversation"], path)?;
            return Ok(Filter::Conversation(conversation_condition(signals, &format!("{path}.conversation"))?));
        }
        Err(fault(path, "is not a filter: expected all, any, not, trait, event, reachable, segment or conversation"))
    }
}

fn value_condition(object: &Map<String, Value>, key: &str, path: &str) -> Result<ValueCondition, FilterError> {
    let name = name(object.get(key), &format!("{path}.{key}"))?;
    let op_path = format!("{path}.op");
    let op = match object.get("op") {
        Some(Value::String(raw)) => Op::parse(raw)
            .ok_or_else(|| fault(&op_path, "must be one of eq, ne, gt, gte, lt, lte, contains, exists"))?,
        None => return Err(fault(&op_path, "is required")),
        Some(_) => return Err(fault(&op_path, "must be a string")),
    };
    let value_path = format!("{path}.value");
    let value = object.get("value").cloned();
    match (op, &value) {
        (Op::Exists, None) => {}
        (Op::Exists, Some(_)) => return Err(fault(&value_path, "is not used with exists")),
        (_, None) => return Err(fault(&value_path, "is required")),
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(value)) if !(value.is_number() || value.is_string()) => {
            return Err(fault(&value_path, "must be a number or a string to be ordered"));
        }
        (Op::Contains, Some(value)) if !(value.is_string() || value.is_number() || value.is_boolean()) => {
            return Err(fault(&value_path, "must be a string, a number or a boolean"));
        }
        (Op::Eq | Op::Ne, Some(value)) if value.is_object() || value.is_array() || value.is_null() => {
            return Err(fault(&value_path, "must be a string, a number or a boolean (use exists for presence)"));
        }
        (_, Some(Value::String(text))) if text.len() > 1024 => {
            return Err(fault(&value_path, "is longer than 1024 bytes"));
        }
        _ => {}
    }
    Ok(ValueCondition { name, op, value })
}

/// A `where` list: at most 20 property conditions `{"property", "op", "value"?}` (an event
/// condition's, a campaign trigger's); absent or null is none.
pub fn property_conditions(value: Option<&Value>, path: &str) -> Result<Vec<ValueCondition>, FilterError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= 20 => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let at = format!("{path}[{index}]");
                let Value::Object(condition) = item else {
                    return Err(fault(&at, "must be a property condition {\"property\", \"op\", \"value\"}"));
                };
                only_keys(condition, &["property", "op", "value"], &at)?;
                value_condition(condition, "property", &at)
            })
            .collect(),
        Some(_) => Err(fault(path, "must be a list of at most 20 property conditions")),
    }
}

fn event_condition(object: &Map<String, Value>, path: &str) -> Result<EventCondition, FilterError> {
    only_keys(object, &["event", "count", "within_days", "where"], path)?;
    let event = name(object.get("event"), &format!("{path}.event"))?;
    let count_path = format!("{path}.count");
    let count = match object.get("count") {
        None | Some(Value::Null) => Count::Gte(1),
        Some(Value::Object(count)) if count.len() == 1 => {
            let (op, bound) = count.iter().next().expect("one entry");
            let at = format!("{count_path}.{op}");
            let bound = bound
                .as_u64()
                .filter(|n| *n <= 1_000_000)
                .ok_or_else(|| fault(&at, "must be a whole number from 0 to 1000000"))?;
            match op.as_str() {
                "gte" => Count::Gte(bound),
                "lte" => Count::Lte(bound),
                "eq" => Count::Eq(bound),
                _ => return Err(fault(&at, "must be gte, lte or eq")),
            }
        }
        Some(_) => return Err(fault(&count_path, "must be one of {\"gte\": N}, {\"lte\": N}, {\"eq\": N}")),
    };
    let within_days = days(object.get("within_days"), &format!("{path}.within_days"))?;
    let conditions = property_conditions(object.get("where"), &format!("{path}.where"))?;
    Ok(EventCondition { event, count, within_days, conditions })
}

fn conversation_condition(value: &Value, path: &str) -> Result<ConversationCondition, FilterError> {
    let Value::Object(object) = value else {
        return Err(fault(path, "must be an object of signals"));
    };
    only_keys(object, &["intent", "sentiment", "missed", "handoff", "within_days"], path)?;
    let mut condition = ConversationCondition::default();
    if let Some(intent) = object.get("intent") {
        condition.intent = Some(name(Some(intent), &format!("{path}.intent"))?);
    }
    if let Some(sentiment) = object.get("sentiment") {
        condition.sentiment = Some(match sentiment.as_str() {
            Some("negative") => SentimentLabel::Negative,
            Some("neutral") => SentimentLabel::Neutral,
            Some("positive") => SentimentLabel::Positive,
            _ => return Err(fault(&format!("{path}.sentiment"), "must be negative, neutral or positive")),
        });
    }
    for (key, slot) in [("missed", &mut condition.missed), ("handoff", &mut condition.handoff)] {
        if let Some(flag) = object.get(key) {
            *slot = Some(flag.as_bool().ok_or_else(|| fault(&format!("{path}.{key}"), "must be true or false"))?);
        }
    }
    condition.within_days = days(object.get("within_days"), &format!("{path}.within_days"))?;
    if condition.intent.is_none()
        && condition.sentiment.is_none()
        && condition.missed.is_none()
        && condition.handoff.is_none()
    {
        return Err(fault(path, "needs at least one of intent, sentiment, missed, handoff"));
    }
    Ok(condition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_contract_filter_parses_and_prints_back() {
        let raw = json!({"all": [
            {"trait": "plan", "op": "eq", "value": "pro"},
            {"event": "Order Completed", "count": {"gte": 2}, "within_days": 30,
             "where": [{"property": "total", "op": "gt", "value": 50}]},
            {"reachable": "email"},
            {"not": {"segment": "seg_1"}},
            {"conversation": {"intent": "cancel", "within_days": 7}},
            {"any": [{"trait": "vip", "op": "exists"}]}
        ]});
        let filter = Filter::parse(&raw).unwrap();
        assert_eq!(Filter::parse(&filter.to_json()).unwrap(), filter);
        assert_eq!(filter.referenced_segments(), vec!["seg_1"]);
    }

    #[test]
    fn faults_name_their_place() {
        let cases = [
            (
                json!({"all": [{"trait": "a", "op": "eq", "value": 1}, {"event": "x", "count": {"gt": 1}}]}),
                "filter.all[1].count.gt",
            ),
            (json!({"all": [{"trait": "a", "op": "between", "value": 1}]}), "filter.all[0].op"),
            (json!({"any": [{"trait": "a", "op": "eq"}]}), "filter.any[0].value"),
            (json!({"not": {"reachable": "E-mail"}}), "filter.not.reachable"),
            (json!({"event": "x", "within_days": 0}), "filter.within_days"),
            (json!({"event": "x", "where": [{"trait": "a"}]}), "filter.where[0].trait"),
            (json!({"conversation": {"sentiment": "angry"}}), "filter.conversation.sentiment"),
            (json!({"conversation": {}}), "filter.conversation"),
            (json!({"trait": "a", "op": "exists", "colour": 1}), "filter.colour"),
            (json!([1]), "filter"),
            (json!({"trait": "a..b", "op": "exists"}), "filter.trait"),
        ];
        for (raw, path) in cases {
            let err = Filter::parse(&raw).unwrap_err();
            assert_eq!(err.path, path, "{raw}: {err}");
        }
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let wide = json!({"any": (0..=MAX_NODES).map(|i| json!({"trait": format!("t{i}"), "op": "exists"})).collect::<Vec<_>>()});
        assert!(Filter::parse(&wide).unwrap_err().message.contains("more than"));
        let mut deep = json!({"trait": "a", "op": "exists"});
        for _ in 0..=MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert!(Filter::parse(&deep).unwrap_err().message.contains("deeper"));
    }

    #[test]
    fn only_windows_look_back() {
        let parse = |value: Value| Filter::parse(&value).unwrap();
        assert!(!parse(json!({"trait": "plan", "op": "eq", "value": "pro"})).looks_back());
        assert!(!parse(json!({"event": "Order Completed"})).looks_back());
        assert!(parse(json!({"not": {"event": "Order Completed", "within_days": 30}})).looks_back());
        assert!(
            parse(json!({"any": [{"reachable": "sms"}, {"conversation": {"handoff": true, "within_days": 7}}]}))
                .looks_back()
        );
    }

    #[test]
    fn references_cannot_expand_without_bound() {
        // s0 is one condition; each s(n) refers to s(n-1) 99 times: s7 would be 99^7 nodes.
        let wide = |n: usize| -> Filter {
            if n == 0 {
                return Filter::parse(&json!({"trait": "x", "op": "exists"})).unwrap();
            }
            let refs: Vec<Value> = (0..99).map(|_| json!({"segment": format!("s{}", n - 1)})).collect();
            Filter::parse(&json!({"any": refs})).unwrap()
        };
        let mut lookup = |id: &str| id.strip_prefix('s').and_then(|n| n.parse().ok()).map(wide);
        let started = std::time::Instant::now();
        let err = wide(7).resolve(&mut lookup, 0, &mut Vec::new()).unwrap_err();
        assert!(err.message.contains("more than 1000 conditions"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // One level of 99 references is fine.
        assert!(wide(1).resolve(&mut lookup, 0, &mut Vec::new()).is_ok());
    }

    #[test]
    fn references_resolve_and_cycles_are_refused() {
        let a = Filter::parse(&json!({"segment": "b"})).unwrap();
        let b = Filter::parse(&json!({"all": [{"trait": "x", "op": "exists"}, {"segment": "c"}]})).unwrap();
        let mut lookup = |id: &str| match id {
            "b" => Some(b.clone()),
            "c" => Some(Filter::List("c".into())),
            "loop" => Some(Filter::Segment("loop".into())),
            _ => None,
        };
        let resolved = a.resolve(&mut lookup, 0, &mut Vec::new()).unwrap();
        assert_eq!(resolved, Filter::All(vec![b_trait(), Filter::List("c".into())]));
        let err = Filter::Segment("loop".into()).resolve(&mut lookup, 0, &mut Vec::new()).unwrap_err();
        assert!(err.message.contains("itself"), "{err}");
        let err = Filter::Segment("nope".into()).resolve(&mut lookup, 0, &mut Vec::new()).unwrap_err();
        assert_eq!(err.path, "segment nope");
    }

    fn b_trait() -> Filter {
        Filter::Trait(ValueCondition { name: "x".into(), op: Op::Exists, value: None })
    }

    #[test]
    fn counts_know_whether_zero_holds() {
        assert!(Count::Lte(2).holds_for_zero());
        assert!(Count::Eq(0).holds_for_zero());
        assert!(!Count::Gte(1).holds_for_zero());
        assert!(Count::Gte(0).holds_for_zero());
    }
}
