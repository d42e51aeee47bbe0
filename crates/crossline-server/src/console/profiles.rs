//! Profile search (`/profiles`) and the customer 360 page (`/profiles/{id}`).

use super::error::ConsoleError;
use super::layout::{self, Section, base_url, channel_badge, count, empty_state, page_head, time, value_text};
use super::session::Session;
use super::url;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use crossline_core::{ConsentStatus, IdentityKind, Profile};
use crossline_store::{EventQuery, ProfilePage, ProfileQuery, StoredEvent};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

/// Profiles per page of the list.
pub const PAGE_SIZE: usize = 50;
/// Events on the customer 360 timeline.
pub const TIMELINE_LIMIT: usize = 200;

/// The list's query string.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// Search text: an identity's beginning or part of a trait.
    pub q: Option<String>,
    /// The cursor of the page to show.
    pub after: Option<String>,
}

/// The 360 page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct ProfileParams {
    /// Set when the visitor was redirected from a merged-away id.
    pub merged: Option<String>,
}

/// `GET /profiles`.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Query(params): Query<ListParams>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let search = params.q.as_deref().map(str::trim).filter(|text| !text.is_empty());
    let after = params.after.filter(|cursor| !cursor.is_empty());
    let text = search.map(|search| search_text(search, &workspace.default_region));
    let query = ProfileQuery { limit: PAGE_SIZE, after: after.clone(), trait_equals: None, text };
    let page = state.store.list_profiles(&workspace.id, &query).await?;
    let content = list_content(&page, search, after.is_some(), &base_url(&state, &headers));
    Ok(session.respond(layout::shell(&session, Section::Profiles, "Profiles", content)))
}

fn list_content(page: &ProfilePage, search: Option<&str>, paged: bool, base_url: &str) -> Markup {
    html! {
        (page_head("Profiles", Some(html! { "Every customer, unified across channels. Search by email, phone, user id or any trait." })))
        form.search method="get" action="/profiles" role="search" {
            input type="search" name="q" value=[search] placeholder="Search by email, phone, user id or trait  ( / )"
                aria-label="Search profiles" data-testid="profile-search";
            button.button type="submit" { "Search" }
            @if search.is_some() { a.button.secondary href="/profiles" { "Clear" } }
        }
        div.card.table-card {
            @if page.profiles.is_empty() {
                @if let Some(search) = search {
                    (empty_state(
                        &format!("No profiles match “{search}”"),
                        html! { "Search matches the beginning of an identity (email, phone in E.164 such as +14155550132, user id) or text inside a trait. Try fewer characters." },
                        None,
                    ))
                } @else if paged {
                    (empty_state("No more profiles", html! { "This is past the last page. " a href="/profiles" { "Back to the first page" } }, None))
                } @else {
                    (empty_state(
                        "No profiles yet",
                        html! { "A profile appears when an event names a customer. Send one with the workspace's write key:" },
                        Some(&format!(
                            "curl -X POST {base_url}/v1/identify -u \"$WRITE_KEY:\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"userId\":\"u-1\",\"traits\":{{\"email\":\"ada@example.com\",\"name\":\"Ada\"}}}}'"
                        )),
                    ))
                }
            } @else {
                table data-sortable {
                    thead { tr {
                        th data-sort="text" { "Customer" }
                        th data-sort="text" { "Email" }
                        th data-sort="text" { "Phone" }
                        th.num data-sort="number" { "Identities" }
                        th data-sort="text" { "Updated" }
                    } }
                    tbody {
                        @for profile in &page.profiles {
                            @let name = display_name(profile);
                            tr data-testid="profile-row" {
                                td.customer data-sort-value=(name.as_deref().unwrap_or("~")) {
                                    a href=(profile_url(&profile.id)) {
                                        @match &name {
                                            Some(name) => (name),
                                            None => span.anonymous { "Anonymous" },
                                        }
                                    }
                                    div.id { (profile.id) }
                                }
                                td.ellipsis { (contact(profile, "email", IdentityKind::Email).unwrap_or_default()) }
                                td.nowrap { (contact(profile, "phone", IdentityKind::Phone).unwrap_or_default()) }
                                td.num { (profile.identities.len()) }
                                td.muted data-sort-value=(profile.updated_at.to_rfc3339()) { (time(profile.updated_at)) }
                            }
                        }
                    }
                }
                div.pager {
                    span { (page.profiles.len()) " profiles on this page" }
                    span {
                        @if paged { a href=(list_url(search, None)) { "First page" } " " }
                        @if let Some(cursor) = &page.next_cursor {
                            a.button.secondary href=(list_url(search, Some(cursor))) data-testid="next-page" { "Next page →" }
                        }
                    }
                }
            }
        }
    }
}

/// What to search for: a phone number as people type it (`(415) 555-0132`) becomes E.164, the
/// form identities are stored in; anything else is searched as typed.
pub fn search_text(search: &str, default_region: &str) -> String {
    let phone_like = search.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c))
        && search.chars().filter(char::is_ascii_digit).count() >= 7;
    if phone_like && let Ok(e164) = crossline_core::identity::normalize_phone(search, default_region) {
        return e164;
    }
    search.to_owned()
}

fn list_url(search: Option<&str>, after: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(search) = search {
        parts.push(format!("q={}", url::encode(search)));
    }
    if let Some(after) = after {
        parts.push(format!("after={}", url::encode(after)));
    }
    if parts.is_empty() { "/profiles".to_owned() } else { format!("/profiles?{}", parts.join("&")) }
}

fn profile_url(id: &str) -> String {
    format!("/profiles/{}", url::encode(id))
}

/// The person's name from `name`, else `first_name`/`last_name` (or their camel-case forms).
pub fn display_name(profile: &Profile) -> Option<String> {
    let text =
        |key: &str| profile.traits.get(key).and_then(Value::as_str).map(str::trim).filter(|text| !text.is_empty());
    if let Some(name) = text("name") {
        return Some(name.to_owned());
    }
    let parts: Vec<&str> = [text("first_name").or(text("firstName")), text("last_name").or(text("lastName"))]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// A contact detail from a trait, else from the matching identity.
fn contact(profile: &Profile, trait_name: &str, kind: IdentityKind) -> Option<String> {
    profile.traits.get(trait_name).and_then(Value::as_str).map(str::to_owned).or_else(|| {
        profile.identities.iter().find(|identity| identity.kind == kind).map(|identity| identity.value.clone())
    })
}

fn identity_label(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::UserId => "User ID",
        IdentityKind::AnonymousId => "Anonymous ID",
        IdentityKind::Email => "Email",
        IdentityKind::Phone => "Phone",
        IdentityKind::DeviceToken => "Device token",
        IdentityKind::AlexaUserId => "Alexa user",
        IdentityKind::ChatVisitorId => "Chat visitor",
    }
}

/// `GET /profiles/{id}`: the customer 360 page. A merged-away id redirects to its survivor.
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(params): Query<ProfileParams>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let Some(profile) = state.store.profile(&workspace.id, &id).await? else {
        return Err(ConsoleError::not_found(format!(
            "There is no profile {id} in workspace {}. It may have been erased; search the profiles list for the person.",
            workspace.name
        )));
    };
    if profile.id != id {
        let target = format!("{}?merged={}", profile_url(&profile.id), url::encode(&id));
        return Ok(session.respond(Redirect::to(&target)));
    }
    let query = EventQuery { limit: TIMELINE_LIMIT, kind: None };
    let events = state.store.events(&workspace.id, &profile.id, &query).await?;
    let title = display_name(&profile).unwrap_or_else(|| profile.id.clone());
    let content = profile_content(&profile, &events, params.merged.as_deref());
    Ok(session.respond(layout::shell(&session, Section::Profiles, &title, content)))
}

/// The 360 page's content: who, how to reach them, what they agreed to, and what they did.
pub fn profile_content(profile: &Profile, events: &[StoredEvent], merged_from: Option<&str>) -> Markup {
    let name = display_name(profile);
    let heading =
        name.clone().or_else(|| contact(profile, "email", IdentityKind::Email)).unwrap_or_else(|| profile.id.clone());
    let initials: String =
        heading.split_whitespace().filter_map(|word| word.chars().next()).take(2).collect::<String>().to_uppercase();
    let mut channels: Vec<(&str, usize)> = Vec::new();
    for event in events {
        match channels.iter_mut().find(|(channel, _)| *channel == event.channel) {
            Some((_, seen)) => *seen += 1,
            None => channels.push((&event.channel, 1)),
        }
    }
    html! {
        div.crumbs { a href="/profiles" { "Profiles" } " / " code { (profile.id) } }
        div.page-head {
            div.person {
                div.avatar aria-hidden="true" { (initials) }
                div {
                    h1 data-testid="profile-name" { (heading) }
                    div.meta {
                        span { code { (profile.id) } }
                        span { "Created " (time(profile.created_at)) }
                        span { "Updated " (time(profile.updated_at)) }
                    }
                }
            }
        }
        @if let Some(merged_from) = merged_from.filter(|merged| *merged != profile.id) {
            div.alert.info role="status" { "Profile " code { (merged_from) } " was merged into this one; its identities and events are shown here." }
        }
        div.grid.profile {
            div.stack {
                div.card {
                    div.card-head { h2 { "Identities" } span.hint { (profile.identities.len()) } }
                    div.card-body.flush {
                        @if profile.identities.is_empty() {
                            p.empty { "No identities: the profile was created from traits only." }
                        } @else {
                            ul.identity-list {
                                @for identity in &profile.identities {
                                    li data-testid="identity" data-kind=(identity.kind.as_str()) {
                                        span.kind { (identity_label(identity.kind)) }
                                        span.value { (identity.value) }
                                    }
                                }
                            }
                        }
                    }
                }
                div.card.table-card {
                    div.card-head { h2 { "Consent" } span.hint { "per channel" } }
                    div.card-body.flush {
                        table.compact {
                            thead { tr { th { "Channel" } th { "Status" } th { "Source, since" } } }
                            tbody {
                                @for (channel, status) in profile.consent.summary() {
                                    @let entry = profile.consent.0.get(&channel).filter(|entry| entry.status != ConsentStatus::Unknown);
                                    tr data-testid="consent" data-channel=(channel) {
                                        td { (channel) }
                                        td { span.badge.(status) { (status) } }
                                        td.muted {
                                            @match entry {
                                                Some(entry) => { (entry.source) ", " (layout::date(entry.updated_at)) }
                                                None => "—",
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                div.card.table-card {
                    div.card-head { h2 { "Traits" } span.hint { (profile.traits.len()) } }
                    div.card-body.flush {
                        @if profile.traits.is_empty() {
                            p.empty { "No traits yet. " code { "identify" } " calls set them." }
                        } @else {
                            table.compact {
                                thead { tr { th { "Trait" } th { "Value" } } }
                                tbody {
                                    @for (key, value) in &profile.traits {
                                        tr data-testid="trait" data-trait=(key) {
                                            td { code { (key) } }
                                            td.wrap title=(value_text(value, 2000)) { (value_text(value, 160)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            div.card {
                div.card-head {
                    h2 { "Timeline" }
                    span.hint {
                        @if events.len() >= TIMELINE_LIMIT { "latest " (TIMELINE_LIMIT) " events" } @else { (count(events.len() as u64)) " events" }
                        ", newest first"
                    }
                }
                @if channels.len() > 1 {
                    div.card-body style="padding-bottom: 0" {
                        div.filters data-timeline-filters="timeline" role="group" aria-label="Show channel" {
                            button type="button" data-filter="" aria-pressed="true" { "All " (events.len()) }
                            @for (channel, seen) in &channels {
                                button type="button" data-filter=(channel) aria-pressed="false" { (channel) " " (seen) }
                            }
                        }
                    }
                }
                div.card-body.flush {
                    @if events.is_empty() {
                        (empty_state("No events yet", html! { "Events sent for any of this person's identities appear here." }, None))
                    } @else {
                        ul.timeline #timeline {
                            @for event in events { (timeline_item(event)) }
                        }
                    }
                }
            }
        }
    }
}

fn timeline_item(event: &StoredEvent) -> Markup {
    let is_merge = event.kind == "merge";
    html! {
        li.merge[is_merge] data-testid="timeline-event" data-channel=(event.channel) data-type=(event.kind) {
            (time(event.timestamp))
            span { (channel_badge(&event.channel)) }
            div.what {
                @if is_merge {
                    @let merged = event.properties.get("merged_profile_id").and_then(Value::as_str).unwrap_or("another profile");
                    div.title data-testid="merge-event" { "Merged profile " code { (merged) } " into this one" }
                    @if let Some(cause) = event.properties.get("cause_message_id").and_then(Value::as_str) {
                        div.chips { span.chip { "caused by message " b { (cause) } } }
                    }
                } @else {
                    div.title {
                        span.type { (event.kind) }
                        (event_name(event))
                    }
                    @let properties = key_properties(event);
                    @if !properties.is_empty() {
                        div.chips {
                            @for (key, value) in properties {
                                span.chip title=(format!("{key}: {value}")) { (key) ": " b { (value) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the timeline calls an event: the track or screen name, the page's name or path, ...
fn event_name(event: &StoredEvent) -> String {
    let property = |key: &str| event.properties.get(key).and_then(Value::as_str).map(str::to_owned);
    match event.kind.as_str() {
        "identify" => "Identified".to_owned(),
        "alias" => "Aliased".to_owned(),
        "page" | "screen" => event
            .event
            .clone()
            .or_else(|| property("title"))
            .or_else(|| property("path"))
            .unwrap_or_else(|| "Viewed".to_owned()),
        "group" => format!("Joined group {}", event.event.as_deref().unwrap_or("?")),
        _ => event.event.clone().unwrap_or_else(|| event.kind.clone()),
    }
}

/// Up to five properties worth a glance; for pages the URL comes first.
fn key_properties(event: &StoredEvent) -> Vec<(String, String)> {
    const PREFERRED: [&str; 6] = ["path", "url", "title", "revenue", "total", "text"];
    let mut keys: Vec<&String> =
        PREFERRED.iter().filter_map(|key| event.properties.get_key_value(*key).map(|(key, _)| key)).collect();
    for key in event.properties.keys() {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .filter(|key| !matches!(event.properties[key.as_str()], Value::Null | Value::Object(_)))
        .take(5)
        .map(|key| (key.clone(), value_text(&event.properties[key.as_str()], 60)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use crossline_core::Identity;
    use crossline_core::consent::Consent;
    use serde_json::json;

    fn profile(traits: Value) -> Profile {
        let at = Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap();
        let mut consent = Consent::default();
        consent.set("sms", ConsentStatus::Unsubscribed, "sms_stop", at);
        Profile {
            id: "prf_1".into(),
            identities: vec![Identity { kind: IdentityKind::Email, value: "ada@example.com".into() }],
            traits: traits.as_object().unwrap().clone(),
            consent,
            created_at: at,
            updated_at: at,
        }
    }

    fn event(kind: &str, channel: &str, name: Option<&str>, properties: Value) -> StoredEvent {
        let at = Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        StoredEvent {
            id: format!("m-{kind}-{channel}"),
            profile_id: "prf_1".into(),
            kind: kind.into(),
            event: name.map(str::to_owned),
            properties: properties.as_object().unwrap().clone(),
            context: Default::default(),
            timestamp: at,
            received_at: at,
            channel: channel.into(),
        }
    }

    #[test]
    fn names_come_from_name_or_first_and_last() {
        assert_eq!(display_name(&profile(json!({"name": "Ada Lovelace"}))).as_deref(), Some("Ada Lovelace"));
        assert_eq!(display_name(&profile(json!({"firstName": "Ada", "last_name": "L"}))).as_deref(), Some("Ada L"));
        assert_eq!(display_name(&profile(json!({"plan": "pro"}))), None);
    }

    #[test]
    fn the_360_page_escapes_what_customers_send() {
        let hostile = profile(json!({"name": "<script>alert(1)</script>", "note": "\"><img src=x onerror=alert(1)>"}));
        let events = [event("track", "web", Some("<b>Bought</b>"), json!({"item": "<i>x</i>"}))];
        let html = profile_content(&hostile, &events, None).into_string();
        assert!(
            !html.contains("<script>")
                && !html.contains("<img")
                && !html.contains("<b>Bought")
                && !html.contains("<i>x")
        );
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;Bought&lt;/b&gt;"));
    }

    #[test]
    fn merges_are_shown_as_merges_and_consent_per_channel() {
        let events = [
            event(
                "merge",
                "system",
                None,
                json!({"merged_profile_id": "prf_2", "survivor_profile_id": "prf_1", "cause_message_id": "join"}),
            ),
            event("track", "sms", Some("SMS Replied"), json!({"text": "yes"})),
            event("page", "web", None, json!({"path": "/pricing", "referrer": "https://example.com"})),
        ];
        let html = profile_content(&profile(json!({"name": "Ada"})), &events, Some("prf_2")).into_string();
        assert!(html.contains("Merged profile <code>prf_2</code> into this one"), "{html}");
        assert!(html.contains("Profile <code>prf_2</code> was merged into this one"));
        assert_eq!(html.matches("data-testid=\"timeline-event\"").count(), 3);
        assert!(html.contains("data-channel=\"sms\" data-type=\"track\""));
        assert!(html.contains("path: <b>/pricing</b>"));
        // Every standard channel is listed; sms carries its source.
        assert_eq!(html.matches("data-testid=\"consent\"").count(), 5);
        assert!(html.contains("sms_stop"));
        assert!(html.contains("data-testid=\"identity\" data-kind=\"email\""));
    }

    #[test]
    fn typed_phone_numbers_are_searched_in_e164() {
        assert_eq!(search_text("(415) 555-0132", "US"), "+14155550132");
        assert_eq!(search_text("+44 20 7946 0958", "US"), "+442079460958");
        assert_eq!(search_text("4155", "US"), "4155", "too short to be a number: searched as typed");
        assert_eq!(search_text("ada@example.com", "US"), "ada@example.com");
        assert_eq!(search_text("u-1234567", "US"), "u-1234567");
    }

    #[test]
    fn the_360_page_matches_its_reviewed_snapshot() {
        let events = [
            event("track", "email", Some("Email Opened"), json!({"campaign": "Welcome", "subject": "Hello"})),
            event(
                "merge",
                "system",
                None,
                json!({"merged_profile_id": "prf_2", "survivor_profile_id": "prf_1", "cause_message_id": "join"}),
            ),
            event("page", "web", Some("Pricing"), json!({"path": "/pricing", "url": "https://example.com/pricing"})),
        ];
        let html =
            profile_content(&profile(json!({"name": "Ada Lovelace", "plan": "pro"})), &events, None).into_string();
        crate::console::snapshot::assert_snapshot("profile_360.html", &html);
    }

    #[test]
    fn list_urls_keep_the_search() {
        assert_eq!(list_url(Some("ada@example.com"), Some("prf_9")), "/profiles?q=ada%40example.com&after=prf_9");
        assert_eq!(list_url(None, None), "/profiles");
    }
}
