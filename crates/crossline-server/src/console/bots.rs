//! Bots (`/bots`, `/bots/{name}`): each bot's intents and versions, and what customers said that it
//! did not understand — identical texts counted together, the most recent first — so a bot
//! designer sees what to teach next.

use super::error::ConsoleError;
use super::layout::{self, Section, channel_badge, empty_state, page_head, time};
use super::session::Session;
use super::url;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use crossline_store::{MissedUtterance, StoredBot};
use maud::{Markup, html};
use serde_json::Value;
use std::collections::HashMap;

/// Earlier versions listed on a bot's page.
const VERSIONS_SHOWN: i64 = 10;
/// Missed utterances read to group (the newest ones).
const MISSED_READ: usize = 1_000;
/// Groups of missed utterances shown.
const MISSED_SHOWN: usize = 100;

/// `GET /bots`.
pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let bots = state.store.bots(&workspace.id).await?;
    Ok(session.respond(layout::shell(&session, Section::Bots, "Bots", list_content(&bots))))
}

/// `GET /bots/{name}`.
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    if !crossline_bot::is_valid_name(&name) {
        return Err(ConsoleError::not_found("There is no bot of that name in this workspace."));
    }
    let Some(latest) = state.store.bot(&workspace.id, &name, None).await? else {
        return Err(ConsoleError::not_found("There is no bot of that name in this workspace."));
    };
    let mut versions = vec![latest.clone()];
    for version in (1.max(latest.version - VERSIONS_SHOWN)..latest.version).rev() {
        versions.extend(state.store.bot(&workspace.id, &name, Some(version)).await?);
    }
    let missed = state.store.missed_utterances(&workspace.id, &name, MISSED_READ).await?;
    let content = bot_content(&latest, &versions, &group_missed(&missed));
    Ok(session.respond(layout::shell(&session, Section::Bots, &name, content)))
}

/// Identical missed texts (ignoring case and surrounding spaces) together.
#[derive(Debug, Clone, PartialEq)]
pub struct MissedGroup {
    /// The text as last said.
    pub text: String,
    /// How many times it was said.
    pub count: usize,
    /// When it was last said.
    pub last: DateTime<Utc>,
    /// On which channel it was last said.
    pub channel: String,
}

/// Group missed utterances (given newest first): most recently said first.
pub fn group_missed(missed: &[MissedUtterance]) -> Vec<MissedGroup> {
    let mut groups: Vec<MissedGroup> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for utterance in missed {
        let key = utterance.text.trim().to_lowercase();
        if key.is_empty() {
            continue;
        }
        match index.get(&key) {
            Some(&at) => groups[at].count += 1,
            None => {
                index.insert(key, groups.len());
                groups.push(MissedGroup {
                    text: utterance.text.trim().to_owned(),
                    count: 1,
                    last: utterance.created_at,
                    channel: utterance.channel.clone(),
                });
            }
        }
    }
    groups.truncate(MISSED_SHOWN);
    groups
}

fn intents(definition: &Value) -> &[Value] {
    definition.get("intents").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn fulfilment(intent: &Value) -> &'static str {
    match intent.get("fulfillment") {
        Some(fulfilment) if fulfilment.get("webhook").is_some() => "webhook",
        Some(fulfilment) if fulfilment.get("handoff").is_some() => "handoff",
        Some(fulfilment) if fulfilment.get("response").is_some() => "response",
        _ => "none",
    }
}

/// The bot list.
pub fn list_content(bots: &[StoredBot]) -> Markup {
    html! {
        (page_head("Bots", Some(html! { "Each bot's intents, versions and what customers said that it did not understand." })))
        div.card.table-card {
            @if bots.is_empty() {
                (empty_state(
                    "No bots yet",
                    html! { "A bot is defined with the API: its intents with a few example utterances each, slots and fulfilments. Every save is a new version, trained at once." },
                    Some("curl -X PUT $URL/api/v1/bots/help -H \"Authorization: Bearer $API_KEY\" -d @bot.json"),
                ))
            } @else {
                table {
                    thead { tr { th { "Bot" } th { "Latest version" } th { "Intents" } th { "Saved" } } }
                    tbody {
                        @for bot in bots {
                            tr data-testid="bot-row" {
                                td { a href=(format!("/bots/{}", url::encode(&bot.name))) { (bot.name) } }
                                td { "v" (bot.version) }
                                td { (intents(&bot.definition).len()) }
                                td.muted { (time(bot.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One bot's page.
pub fn bot_content(latest: &StoredBot, versions: &[StoredBot], missed: &[MissedGroup]) -> Markup {
    let intents = intents(&latest.definition);
    html! {
        (page_head(&latest.name, Some(html! { "Version " (latest.version) ", saved " (time(latest.created_at)) ". " a href="/bots" { "All bots" } })))
        section.card.table-card {
            h2 { "Missed utterances" }
            @if missed.is_empty() {
                (empty_state(
                    "Nothing missed yet",
                    html! { "When a customer says something this bot does not understand, it shows here, identical texts counted together, so you can add it to an intent's utterances." },
                    None,
                ))
            } @else {
                table data-testid="missed" {
                    thead { tr { th { "What customers said" } th { "Times" } th { "Last" } th { "Channel" } } }
                    tbody {
                        @for group in missed {
                            tr data-testid="missed-row" {
                                td.wrap { (group.text) }
                                td { (group.count) }
                                td.muted { (time(group.last)) }
                                td { (channel_badge(&group.channel)) }
                            }
                        }
                    }
                }
            }
        }
        section.card.table-card {
            h2 { "Intents" }
            table data-testid="intents" {
                thead { tr { th { "Intent" } th { "Utterances" } th { "Slots" } th { "Fulfilment" } } }
                tbody {
                    @for intent in intents {
                        tr {
                            td { code { (intent.get("name").and_then(Value::as_str).unwrap_or("?")) } }
                            td { (intent.get("utterances").and_then(Value::as_array).map_or(0, Vec::len)) }
                            td { (intent.get("slots").and_then(Value::as_array).map_or(0, Vec::len)) }
                            td { (fulfilment(intent)) }
                        }
                    }
                }
            }
        }
        section.card.table-card {
            h2 { "Versions" }
            table data-testid="versions" {
                thead { tr { th { "Version" } th { "Intents" } th { "Saved" } } }
                tbody {
                    @for version in versions {
                        tr {
                            td { "v" (version.version) }
                            td { (self::intents(&version.definition).len()) }
                            td.muted { (time(version.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn missed(text: &str, minute: u32) -> MissedUtterance {
        MissedUtterance {
            text: text.into(),
            channel: "sms".into(),
            conversation_id: "cnv_1".into(),
            created_at: Utc.with_ymd_and_hms(2026, 12, 6, 9, minute, 0).unwrap(),
        }
    }

    #[test]
    fn identical_texts_are_counted_together_newest_first() {
        let newest_first = [
            missed("Do you ship to Canada?", 50),
            missed("cancel my order", 40),
            missed("  do you ship to canada? ", 30),
            missed("", 20),
        ];
        let groups = group_missed(&newest_first);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!((groups[0].text.as_str(), groups[0].count), ("Do you ship to Canada?", 2));
        assert_eq!(groups[0].last, newest_first[0].created_at);
        assert_eq!((groups[1].text.as_str(), groups[1].count), ("cancel my order", 1));
    }

    #[test]
    fn the_bot_page_shows_intents_versions_and_escaped_misses() {
        let at = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
        let bot = |version, intents: Value| StoredBot {
            name: "help".into(),
            version,
            definition: json!({"intents": intents}),
            created_at: at,
        };
        let latest = bot(
            2,
            json!([
                {"name": "hours", "utterances": ["when are you open", "opening hours"], "fulfillment": {"response": "9 to 5"}},
                {"name": "agent", "utterances": ["a person please"], "fulfillment": {"handoff": {"queue": "support"}}}
            ]),
        );
        let versions = [latest.clone(), bot(1, json!([{"name": "hours", "utterances": ["x"]}]))];
        let groups = group_missed(&[missed("<script>alert(1)</script>", 10), missed("<SCRIPT>alert(1)</SCRIPT>", 5)]);
        let html = bot_content(&latest, &versions, &groups).into_string();
        assert!(!html.contains("<script>alert"), "customer text is escaped");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<td>2</td>"), "counted twice");
        for expected in ["hours", "agent", "handoff", "response", "v2", "v1"] {
            assert!(html.contains(expected), "{expected}");
        }
        let empty = bot_content(&latest, &versions, &[]).into_string();
        assert!(empty.contains("Nothing missed yet"));
        assert!(list_content(&[]).into_string().contains("No bots yet"));
        assert!(list_content(&versions[..1]).into_string().contains("href=\"/bots/help\""));
    }
}
