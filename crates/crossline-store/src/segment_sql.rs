//! Segment filters compiled to one SQL condition over `profiles p`, for both backends.
//!
//! The shape is set-based, so a segment over a million profiles is one pass over `profiles` and
//! one range scan per event condition (the `events_name` index), never a query per profile:
//! - a trait comparison reads `p.traits` with the backend's JSON functions, type-checked so a
//!   string never compares with a number;
//! - an event condition becomes `p.id IN (owners whose count holds)`, or, when a profile with no
//!   such event satisfies it (`lte`, `eq 0`), `p.id NOT IN (owners whose count breaks it)`;
//! - events stay filed under a merged-away profile's id on SQLite, so counts are taken per stored
//!   id and summed per owner (`coalesce(merged_into, id)`, tombstones always name the survivor).
//!
//! Every value, name and path is a bound parameter: nothing a user writes is spliced into SQL.

use crossline_core::segment::{ConversationCondition, Count, EventCondition, Filter, Op, ValueCondition};
use serde_json::Value;

/// Which SQL the condition is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite with its JSON1 functions; placeholders `?N`.
    Sqlite,
    /// PostgreSQL with jsonb; placeholders `$N` with explicit casts.
    Postgres,
}

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// A real number.
    Real(f64),
    /// A boolean.
    Bool(bool),
    /// A list of text (PostgreSQL paths; SQLite paths are text).
    TextArray(Vec<String>),
}

/// A compiled filter: a boolean SQL expression over `p` (a row of `profiles`) and its parameters,
/// the first of which is always the workspace id.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The condition.
    pub condition: String,
    /// The parameters, numbered from 1.
    pub params: Vec<Param>,
}

/// The channels' address kinds: which identities can receive a channel's messages.
pub fn address_kinds(channel: &str) -> &'static [&'static str] {
    match channel {
        "email" => &["email"],
        "sms" | "voice" | "whatsapp" => &["phone"],
        "push" => &["device_token"],
        _ => &[],
    }
}

/// Compiles `filter` (references already resolved: no [`Filter::Segment`] left) for one workspace.
pub fn compile(filter: &Filter, workspace_id: &str, now_millis: i64, dialect: Dialect) -> Compiled {
    let mut compiler = Compiler { dialect, params: vec![Param::Text(workspace_id.to_owned())], now_millis };
    let condition = compiler.filter(filter);
    Compiled { condition, params: compiler.params }
}

struct Compiler {
    dialect: Dialect,
    params: Vec<Param>,
    now_millis: i64,
}

const TRUE: &str = "(1=1)";
const FALSE: &str = "(1=0)";

impl Compiler {
    /// Adds a parameter and returns its placeholder, cast on PostgreSQL.
    fn bind(&mut self, param: Param) -> String {
        let cast = match &param {
            Param::Text(_) => "::text",
            Param::Int(_) => "::bigint",
            Param::Real(_) => "::float8",
            Param::Bool(_) => "::boolean",
            Param::TextArray(_) => "::text[]",
        };
        self.params.push(param);
        match self.dialect {
            Dialect::Sqlite => format!("?{}", self.params.len()),
            Dialect::Postgres => format!("${}{cast}", self.params.len()),
        }
    }

    fn workspace(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "?1",
            Dialect::Postgres => "$1::text",
        }
    }

    fn filter(&mut self, filter: &Filter) -> String {
        match filter {
            Filter::All(items) if items.is_empty() => TRUE.into(),
            Filter::Any(items) if items.is_empty() => FALSE.into(),
            Filter::All(items) => self.join(items, " AND "),
            Filter::Any(items) => self.join(items, " OR "),
            Filter::Not(inner) => format!("(NOT {})", self.filter(inner)),
            Filter::Trait(condition) => self.value_test("p.traits", condition),
            Filter::Event(condition) => self.event(condition),
            Filter::Reachable(channel) => self.reachable(channel),
            Filter::Conversation(condition) => self.conversation(condition),
            Filter::List(id) => {
                let id = self.bind(Param::Text(id.clone()));
                let ws = self.workspace();
                format!(
                    "(p.id IN (SELECT m.profile_id FROM segment_members m WHERE m.workspace_id = {ws} AND m.segment_id = {id}))"
                )
            }
            // Unresolved references match no one; the engagement layer resolves them first.
            Filter::Segment(_) => FALSE.into(),
        }
    }

    fn join(&mut self, items: &[Filter], glue: &str) -> String {
        let parts: Vec<String> = items.iter().map(|item| self.filter(item)).collect();
        format!("({})", parts.join(glue))
    }

    /// A JSON path parameter for `column`: SQLite `$."a"."b"`, PostgreSQL `{a,b}`.
    fn path(&mut self, name: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let path: String = name.split('.').map(|key| format!(".\"{key}\"")).collect();
                self.bind(Param::Text(format!("${path}")))
            }
            Dialect::Postgres => self.bind(Param::TextArray(name.split('.').map(str::to_owned).collect())),
        }
    }

    /// A comparison of the JSON value at `condition.name` inside `column`. Never NULL: an absent
    /// value is simply not equal, not greater, not contained.
    fn value_test(&mut self, column: &str, condition: &ValueCondition) -> String {
        if condition.op == Op::Ne {
            let equal = ValueCondition { op: Op::Eq, ..condition.clone() };
            return format!("(NOT {})", self.value_test(column, &equal));
        }
        let path = self.path(&condition.name);
        match self.dialect {
            Dialect::Sqlite => self.sqlite_test(column, &path, condition),
            Dialect::Postgres => self.postgres_test(column, &path, condition),
        }
    }

    fn sqlite_test(&mut self, column: &str, path: &str, condition: &ValueCondition) -> String {
        let value = format!("json_extract({column}, {path})");
        let kind = format!("coalesce(json_type({column}, {path}), '')");
        let number = format!("{kind} IN ('integer', 'real')");
        let test = match (condition.op, condition.value.as_ref()) {
            (Op::Exists, _) => format!("{kind} NOT IN ('', 'null')"),
            (Op::Contains, Some(Value::String(text))) => {
                let needle = self.bind(Param::Text(text.to_lowercase()));
                let element = self.bind(Param::Text(text.clone()));
                format!(
                    "(({kind} = 'text' AND instr(lower({value}), {needle}) > 0) OR ({kind} = 'array' AND EXISTS (SELECT 1 FROM json_each({column}, {path}) j WHERE j.type = 'text' AND j.value = {element})))"
                )
            }
            (Op::Contains, Some(other)) => {
                let (element, element_kind) = self.sqlite_scalar(other);
                format!(
                    "({kind} = 'array' AND EXISTS (SELECT 1 FROM json_each({column}, {path}) j WHERE j.type {element_kind} AND j.value = {element}))"
                )
            }
            (Op::Eq, Some(Value::Bool(flag))) => {
                format!("{kind} = '{}'", if *flag { "true" } else { "false" })
            }
            (op, Some(Value::Number(n))) => {
                let bound = self.bind(Param::Real(n.as_f64().unwrap_or(0.0)));
                format!("({number} AND {value} {} {bound})", sql_op(op))
            }
            (op, Some(Value::String(text))) => {
                let bound = self.bind(Param::Text(text.clone()));
                format!("({kind} = 'text' AND {value} {} {bound})", sql_op(op))
            }
            // Parsing refused everything else.
            _ => FALSE.into(),
        };
        format!("coalesce({test}, 0)")
    }

    /// A scalar for comparison with `json_each`'s value, and the test on its type.
    fn sqlite_scalar(&mut self, value: &Value) -> (String, &'static str) {
        match value {
            Value::Bool(flag) => (self.bind(Param::Int(*flag as i64)), if *flag { "= 'true'" } else { "= 'false'" }),
            Value::Number(n) => (self.bind(Param::Real(n.as_f64().unwrap_or(0.0))), "IN ('integer', 'real')"),
            other => (self.bind(Param::Text(other.to_string())), "= 'text'"),
        }
    }

    fn postgres_test(&mut self, column: &str, path: &str, condition: &ValueCondition) -> String {
        let value = format!("({column} #> {path})");
        let kind = format!("coalesce(jsonb_typeof({value}), '')");
        let test = match (condition.op, condition.value.as_ref()) {
            (Op::Exists, _) => format!("{kind} NOT IN ('', 'null')"),
            (Op::Contains, Some(Value::String(text))) => {
                let needle = self.bind(Param::Text(text.to_lowercase()));
                let element = self.bind(Param::Text(text.clone()));
                format!(
                    "(({kind} = 'string' AND strpos(lower({column} #>> {path}), {needle}) > 0) OR ({kind} = 'array' AND {value} @> jsonb_build_array({element})))"
                )
            }
            (Op::Contains, Some(other)) => {
                let element = self.postgres_scalar(other);
                format!("({kind} = 'array' AND {value} @> jsonb_build_array({element}))")
            }
            (Op::Eq, Some(Value::Bool(flag))) => {
                let bound = self.bind(Param::Bool(*flag));
                format!("({kind} = 'boolean' AND {value} = to_jsonb({bound}))")
            }
            (op, Some(Value::Number(n))) => {
                let bound = self.bind(Param::Real(n.as_f64().unwrap_or(0.0)));
                format!("({kind} = 'number' AND {value} {} to_jsonb({bound}))", sql_op(op))
            }
            (op, Some(Value::String(text))) => {
                let bound = self.bind(Param::Text(text.clone()));
                format!("({kind} = 'string' AND {value} {} to_jsonb({bound}))", sql_op(op))
            }
            _ => FALSE.into(),
        };
        format!("coalesce({test}, false)")
    }

    fn postgres_scalar(&mut self, value: &Value) -> String {
        match value {
            Value::Bool(flag) => self.bind(Param::Bool(*flag)),
            Value::Number(n) => self.bind(Param::Real(n.as_f64().unwrap_or(0.0))),
            other => self.bind(Param::Text(other.to_string())),
        }
    }

    fn since(&mut self, within_days: Option<u32>) -> Option<String> {
        within_days.map(|days| self.bind(Param::Int(self.now_millis - i64::from(days) * 86_400_000)))
    }

    /// `SELECT owner ...`: the surviving profile of each stored id in `per_stored_id` (rows of
    /// `pid`, and `n` when `compare` is given: then only owners whose summed `n` meets it, e.g.
    /// `>= 2`). Most ids were never merged into or away: they are answered from their own row,
    /// and only ids that took part in a merge are mapped and summed (measured on a million
    /// profiles: regrouping every id by its owner cost more than counting the events).
    fn owners(&self, per_stored_id: &str, compare: Option<&str>) -> String {
        let ws = self.workspace();
        let tombstones = format!(
            "t AS MATERIALIZED (SELECT o.id AS id, o.merged_into AS owner FROM profiles o WHERE o.workspace_id = {ws} AND o.merged_into IS NOT NULL)"
        );
        match compare {
            Some(compare) => format!(
                "WITH g AS MATERIALIZED ({per_stored_id}), {tombstones} \
                 SELECT g.pid FROM g WHERE g.n {compare} AND g.pid NOT IN (SELECT id FROM t) AND g.pid NOT IN (SELECT owner FROM t) \
                 UNION ALL SELECT x.owner FROM (SELECT g.pid AS owner, g.n AS n FROM g WHERE g.pid IN (SELECT owner FROM t) \
                 UNION ALL SELECT t.owner AS owner, g.n AS n FROM g JOIN t ON t.id = g.pid) x GROUP BY x.owner HAVING sum(x.n) {compare}"
            ),
            None => format!(
                "WITH g AS MATERIALIZED ({per_stored_id}), {tombstones} \
                 SELECT g.pid FROM g WHERE g.pid NOT IN (SELECT id FROM t) UNION ALL SELECT t.owner FROM g JOIN t ON t.id = g.pid"
            ),
        }
    }

    fn event(&mut self, condition: &EventCondition) -> String {
        if condition.count == Count::Gte(0) {
            return TRUE.into();
        }
        let ws = self.workspace();
        let name = self.bind(Param::Text(condition.event.clone()));
        let mut filters = format!("e.workspace_id = {ws} AND e.name = {name}");
        if let Some(since) = self.since(condition.within_days) {
            filters.push_str(&format!(" AND e.timestamp >= {since}"));
        }
        for property in &condition.conditions {
            let test = self.value_test("e.properties", property);
            filters.push_str(&format!(" AND {test}"));
        }
        let counted =
            format!("SELECT e.profile_id AS pid, count(*) AS n FROM events e WHERE {filters} GROUP BY e.profile_id");
        let (negated, having) = match condition.count {
            Count::Gte(n) => (false, format!(">= {n}")),
            Count::Eq(0) => (true, ">= 1".to_owned()),
            Count::Eq(n) => (false, format!("= {n}")),
            Count::Lte(n) => (true, format!("> {n}")),
        };
        let owners = self.owners(&counted, Some(&having));
        format!("(p.id {}IN ({owners}))", if negated { "NOT " } else { "" })
    }

    fn consent_not_unsubscribed(&mut self, channel: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let path = self.bind(Param::Text(format!("$.\"{channel}\".status")));
                format!("coalesce(json_extract(p.consent, {path}), 'unknown') <> 'unsubscribed'")
            }
            Dialect::Postgres => {
                let path = self.bind(Param::TextArray(vec![channel.to_owned(), "status".to_owned()]));
                format!("coalesce(p.consent #>> {path}, 'unknown') <> 'unsubscribed'")
            }
        }
    }

    fn reachable(&mut self, channel: &str) -> String {
        let kinds = address_kinds(channel);
        if kinds.is_empty() {
            return FALSE.into();
        }
        let ws = self.workspace();
        let kinds: Vec<String> = kinds.iter().map(|kind| self.bind(Param::Text((*kind).to_owned()))).collect();
        let kinds = kinds.join(", ");
        let consent = self.consent_not_unsubscribed(channel);
        // Correlated on the profile (the identities-by-profile index): by the time it runs, the
        // other conditions of a segment have usually cut the candidates to a few.
        // Push addresses registered through the API or the widget count for push.
        let registered = if channel == "push" {
            format!(
                " OR EXISTS (SELECT 1 FROM push_addresses a WHERE a.workspace_id = {ws} AND a.profile_id = p.id \
                 AND NOT EXISTS (SELECT 1 FROM address_states s WHERE s.workspace_id = {ws} AND s.kind = a.kind AND s.value = a.value AND s.unreachable_at IS NOT NULL))"
            )
        } else {
            String::new()
        };
        // WhatsApp's marks are its own (a number it cannot reach may still take SMS) besides the phone's.
        let marked = if channel == "whatsapp" { "(s.kind = i.kind OR s.kind = 'whatsapp')" } else { "s.kind = i.kind" };
        format!(
            "({consent} AND (EXISTS (SELECT 1 FROM identities i WHERE i.profile_id = p.id AND i.workspace_id = {ws} AND i.kind IN ({kinds}) \
             AND NOT EXISTS (SELECT 1 FROM address_states s WHERE s.workspace_id = {ws} AND {marked} AND s.value = i.value AND s.unreachable_at IS NOT NULL)){registered}))"
        )
    }

    fn conversation(&mut self, condition: &ConversationCondition) -> String {
        let ws = self.workspace();
        let since = self.since(condition.within_days);
        let window = since.map(|since| format!(" AND e.timestamp >= {since}")).unwrap_or_default();
        let mut parts = Vec::new();
        if condition.intent.is_some() || condition.sentiment.is_some() {
            // Bound only when used: PostgreSQL cannot type a parameter no statement mentions.
            let received = self.bind(Param::Text("message.received".into()));
            // The customer's last message in the window, per stored profile id.
            let mut tests = Vec::new();
            if let Some(intent) = &condition.intent {
                let test =
                    ValueCondition { name: "intent".into(), op: Op::Eq, value: Some(Value::String(intent.clone())) };
                tests.push(self.value_test("l.properties", &test));
            }
            if let Some(sentiment) = condition.sentiment {
                let test = ValueCondition {
                    name: "sentiment.label".into(),
                    op: Op::Eq,
                    value: Some(Value::String(sentiment.as_str().into())),
                };
                tests.push(self.value_test("l.properties", &test));
            }
            let last = match self.dialect {
                Dialect::Sqlite => format!(
                    "SELECT e.profile_id AS profile_id, e.properties AS properties, max(e.timestamp) AS at FROM events e \
                     WHERE e.workspace_id = {ws} AND e.name = {received}{window} GROUP BY e.profile_id"
                ),
                Dialect::Postgres => format!(
                    "SELECT DISTINCT ON (e.profile_id) e.profile_id AS profile_id, e.properties AS properties FROM events e \
                     WHERE e.workspace_id = {ws} AND e.name = {received}{window} ORDER BY e.profile_id, e.timestamp DESC, e.seq DESC"
                ),
            };
            let per_stored_id = format!("SELECT l.profile_id AS pid FROM ({last}) l WHERE {}", tests.join(" AND "));
            parts.push(format!("p.id IN ({})", self.owners(&per_stored_id, None)));
        }
        let mut flagged = |compiler: &mut Compiler, wanted: bool, name: &str, property: Option<&str>| {
            let name = compiler.bind(Param::Text(name.into()));
            let mut filters = format!("e.workspace_id = {ws} AND e.name = {name}{window}");
            if let Some(property) = property {
                let test = ValueCondition { name: property.into(), op: Op::Eq, value: Some(Value::Bool(true)) };
                filters.push_str(&format!(" AND {}", compiler.value_test("e.properties", &test)));
            }
            let per_stored_id = format!("SELECT DISTINCT e.profile_id AS pid FROM events e WHERE {filters}");
            let owners = compiler.owners(&per_stored_id, None);
            parts.push(format!("p.id {}IN ({owners})", if wanted { "" } else { "NOT " }));
        };
        if let Some(missed) = condition.missed {
            flagged(self, missed, "message.received", Some("missed"));
        }
        if let Some(handoff) = condition.handoff {
            flagged(self, handoff, "conversation.handoff", None);
        }
        format!("({})", parts.join(" AND "))
    }
}

fn sql_op(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "<>",
        Op::Gt => ">",
        Op::Gte => ">=",
        Op::Lt => "<",
        Op::Lte => "<=",
        Op::Contains | Op::Exists => "=",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_text_is_bound_never_spliced() {
        let filter = Filter::parse(&json!({"all": [
            {"trait": "name", "op": "eq", "value": "x'); DROP TABLE profiles; --"},
            {"event": "a'b", "where": [{"property": "p", "op": "contains", "value": "'"}]}
        ]}))
        .unwrap();
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let compiled = compile(&filter, "ws", 0, dialect);
            assert!(!compiled.condition.contains("DROP"), "{}", compiled.condition);
            assert!(!compiled.condition.contains("a'b"));
            let count = match dialect {
                Dialect::Sqlite => compiled.condition.matches('?').count(),
                Dialect::Postgres => compiled.condition.matches('$').count(),
            };
            assert!(count >= compiled.params.len() - 1, "every parameter is used");
        }
    }

    #[test]
    fn counts_that_zero_satisfies_are_negated_sets() {
        let lte = Filter::parse(&json!({"event": "x", "count": {"lte": 2}})).unwrap();
        assert!(compile(&lte, "ws", 0, Dialect::Sqlite).condition.starts_with("(p.id NOT IN"));
        let gte = Filter::parse(&json!({"event": "x", "count": {"gte": 2}})).unwrap();
        assert!(compile(&gte, "ws", 0, Dialect::Sqlite).condition.starts_with("(p.id IN"));
    }
}
