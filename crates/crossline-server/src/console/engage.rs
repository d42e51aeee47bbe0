//! Engagement in the console: segments (`/segments`, counted live, with a builder form), templates
//! (`/templates`, an editor whose preview re-renders as the author types) and campaigns
//! (`/campaigns`, with their status, results, a funnel per treatment and the pause, resume and
//! cancel buttons).
//!
//! The few changes these pages make go through the REST API's own code (creating a segment, acting
//! on a campaign) or, for saving a template, the same compile check before storing. Every form and
//! the preview are POSTs, which the [`Session`] extractor accepts only from the console's own pages.

use super::assets;
use super::error::ConsoleError;
use super::layout::{self, Section, base_url, channel_badge, count, empty_state, page_head, time};
use super::session::Session;
use super::url;
use crate::api::engage as api;
use crate::auth::WorkspaceCaller;
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use chrono::Utc;
use crossline_core::segment::Filter;
use crossline_core::{IdentityKind, Profile};
use crossline_engage::EngageError;
use crossline_engage::campaign::{self, CampaignSpec, Schedule};
use crossline_engage::template::{self, RenderContext, TemplateError, TemplateSource};
use crossline_store::engage::{EngageObject, ObjectKind};
use crossline_store::{ProfileQuery, Workspace};
use maud::{DOCTYPE, Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Members listed on a segment's page.
pub const MEMBERS_SHOWN: usize = 50;
/// The filter the builder form starts with.
pub const EXAMPLE_FILTER: &str = r#"{"all": [{"trait": "plan", "op": "eq", "value": "pro"}, {"reachable": "email"}]}"#;
/// The profile a template is previewed for when the workspace has none yet.
pub const STAND_IN_PROFILE: &str = "prf_preview";
/// Where a preview's unsubscribe link points (a preview is never sent).
const PREVIEW_UNSUBSCRIBE_URL: &str = "https://example.invalid/unsubscribe-preview";
/// A template body for the empty state's command.
const TEMPLATE_EXAMPLE: &str = r#"{"name":"welcome","channel":"email","subject":"Welcome, {{ profile.traits.name | default: \"friend\" }}","body":"<p>Hello {{ profile.traits.name | default: \"friend\" }}!</p>"}"#;
/// A campaign body for the empty state's command.
const CAMPAIGN_EXAMPLE: &str = r#"{"name":"Winter sale","segment_id":"seg_...","channel":"email","template_id":"tpl_...","schedule":{"at":"2026-12-01T09:00:00Z","local_time":true}}"#;

// ---- segments ----

/// A segment as the list shows it.
#[derive(Debug, Clone)]
pub struct SegmentRow {
    /// The stored segment.
    pub segment: EngageObject,
    /// How many profiles are in it now, or why that cannot be counted (a segment it refers to is
    /// gone).
    pub size: Result<u64, String>,
}

/// The builder form's fields (also what it shows again after a fault).
#[derive(Debug, Default, Deserialize)]
pub struct SegmentForm {
    /// The new segment's name.
    #[serde(default)]
    pub name: String,
    /// Its filter as JSON.
    #[serde(default)]
    pub filter: String,
}

/// `GET /segments`: every segment with its size now, and the builder form.
pub async fn segment_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let rows = segment_rows(&state, &workspace.id).await?;
    let form = SegmentForm { name: String::new(), filter: example_filter() };
    let content = segments_content(&rows, &form, None, &base_url(&state, &headers));
    Ok(session.respond(layout::shell(&session, Section::Segments, "Segments", content)))
}

/// `POST /segments`: create a segment from the builder form, then show it. A fault shows the list
/// again with the fault above the form and what was typed kept.
pub async fn segment_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<SegmentForm>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let created = match parse_filter(&form.filter) {
        Ok(filter) => {
            // The API's own handler: the same name rules, reference checks and stored shape.
            let body = json!({"name": form.name, "filter": filter});
            match api::create_segment(State(state.clone()), WorkspaceCaller(workspace.clone()), Ok(Json(body))).await {
                Ok((_, Json(answer))) => Ok(answer["id"].as_str().unwrap_or_default().to_owned()),
                Err(err) if err.status.is_server_error() => return Err(err.into()),
                Err(err) => Err(err.message),
            }
        }
        Err(fault) => Err(fault),
    };
    match created {
        Ok(id) => Ok(Redirect::to(&segment_url(&id)).into_response()),
        Err(fault) => {
            let rows = segment_rows(&state, &workspace.id).await?;
            let content = segments_content(&rows, &form, Some(&fault), &base_url(&state, &headers));
            let page = layout::shell(&session, Section::Segments, "Segments", content);
            Ok(session.respond((StatusCode::BAD_REQUEST, page)))
        }
    }
}

/// `GET /segments/{id}`: the definition, the size now and the first members.
pub async fn segment_show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let Some(segment) = state.store.object(&workspace.id, ObjectKind::Segment, &id).await? else {
        return Err(ConsoleError::not_found(format!("There is no segment {id} in this workspace.")));
    };
    let members = match state.engage.resolve_segment(&workspace.id, &id).await {
        Ok(filter) => {
            let now = Utc::now();
            let size = state.store.segment_size(&workspace.id, &filter, now).await?;
            let ids = state.store.segment_members(&workspace.id, &filter, now, None, MEMBERS_SHOWN).await?;
            let mut profiles = Vec::with_capacity(ids.len());
            for profile_id in &ids {
                profiles.extend(state.store.profile(&workspace.id, profile_id).await?);
            }
            Ok((size, profiles))
        }
        Err(EngageError::Store(err)) => return Err(err.into()),
        Err(err) => Err(err.to_string()),
    };
    let content = segment_content(&segment, &members);
    Ok(session.respond(layout::shell(&session, Section::Segments, &segment.name, content)))
}

/// The builder's filter text checked as the API checks it: JSON first (a syntax fault with its line
/// and column), then the filter language (a fault named by its place, `filter.all[0].op`).
pub fn parse_filter(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|err| format!("filter: not JSON: {err}"))?;
    Filter::parse(&value).map_err(|err| err.to_string())?;
    Ok(value)
}

fn example_filter() -> String {
    serde_json::from_str::<Value>(EXAMPLE_FILTER)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| EXAMPLE_FILTER.to_owned())
}

async fn segment_rows(state: &AppState, workspace_id: &str) -> Result<Vec<SegmentRow>, ConsoleError> {
    let segments = state.store.objects(workspace_id, ObjectKind::Segment).await?;
    let now = Utc::now();
    let mut rows = Vec::with_capacity(segments.len());
    for segment in segments {
        let size = match state.engage.resolve_segment(workspace_id, &segment.id).await {
            Ok(filter) => Ok(state.store.segment_size(workspace_id, &filter, now).await?),
            Err(EngageError::Store(err)) => return Err(err.into()),
            Err(err) => Err(err.to_string()),
        };
        rows.push(SegmentRow { segment, size });
    }
    Ok(rows)
}

fn segment_url(id: &str) -> String {
    format!("/segments/{}", url::encode(id))
}

fn profile_url(id: &str) -> String {
    format!("/profiles/{}", url::encode(id))
}

/// `filter` or `list` (members imported from CSV).
fn segment_kind(segment: &EngageObject) -> &'static str {
    if segment.body.get("list").and_then(Value::as_bool) == Some(true) { "list" } else { "filter" }
}

/// The email address of a profile: its `email` trait, else its email identity.
fn email_of(profile: &Profile) -> Option<String> {
    let email = profile.traits.get("email").and_then(Value::as_str).map(str::to_owned);
    email.or_else(|| profile.identities.iter().find(|i| i.kind == IdentityKind::Email).map(|i| i.value.clone()))
}

/// The segment list and the builder form; `fault` is shown above the form.
pub fn segments_content(rows: &[SegmentRow], form: &SegmentForm, fault: Option<&str>, base_url: &str) -> Markup {
    html! {
        (page_head("Segments", Some(html! { "Groups of customers by traits, events, reachability and conversations, counted live. Campaigns send to a segment." })))
        div.stack {
            div.card.table-card {
                @if rows.is_empty() {
                    (empty_state(
                        "No segments yet",
                        html! {
                            "A segment is a filter over your customers, or a list imported from CSV. Write a filter in the form below, or create one with the API; "
                            code { "docs/engagement.md" } " describes the filter language."
                        },
                        Some(&format!(
                            "curl -X POST {base_url}/api/v1/segments -H \"Authorization: Bearer $API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"name\":\"Pro customers\",\"filter\":{EXAMPLE_FILTER}}}'"
                        )),
                    ))
                } @else {
                    table data-sortable data-testid="segments-table" {
                        thead { tr {
                            th data-sort="text" { "Segment" }
                            th data-sort="text" { "Kind" }
                            th.num data-sort="number" { "Size" }
                            th data-sort="text" { "Created" }
                        } }
                        tbody {
                            @for row in rows {
                                tr data-testid="segment-row" {
                                    td {
                                        a href=(segment_url(&row.segment.id)) { (row.segment.name) }
                                        div.muted { code { (row.segment.id) } }
                                    }
                                    td { span.badge.kind { (segment_kind(&row.segment)) } }
                                    @match &row.size {
                                        Ok(size) => {
                                            td.num data-testid="segment-size" data-sort-value=(*size) { (count(*size)) }
                                        }
                                        Err(reason) => {
                                            td.num.muted data-testid="segment-size" data-sort-value="-1" title=(reason) { "—" }
                                        }
                                    }
                                    td.muted data-sort-value=(row.segment.created_at.to_rfc3339()) { (time(row.segment.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
            section.card #new-segment {
                div.card-head {
                    h2 { "New segment" }
                    span.hint { "all / any / not of trait, event, reachable, segment and conversation conditions" }
                }
                div.card-body {
                    form.stacked method="post" action="/segments" data-testid="segment-builder" {
                        @if let Some(fault) = fault {
                            div.alert.error role="alert" data-testid="segment-error" { (fault) }
                        }
                        label for="segment-name" { "Name" }
                        input #segment-name type="text" name="name" value=(form.name) required maxlength="128"
                            placeholder="Pro customers reachable by email" data-testid="segment-name";
                        label for="segment-filter" { "Filter (JSON)" }
                        // The newline is eaten by the HTML parser, so a filter's own first line survives.
                        textarea #segment-filter class="code" name="filter" rows="10" spellcheck="false" required
                            data-testid="segment-filter" { "\n" (form.filter) }
                        div.field-hint {
                            "Conditions: " code { "{\"trait\": NAME, \"op\": \"eq\", \"value\": V}" } ", "
                            code { "{\"event\": NAME, \"count\": {\"gte\": 1}, \"within_days\": 30}" } ", "
                            code { "{\"reachable\": \"email\"}" } ", " code { "{\"segment\": ID}" }
                            ". The size is counted as soon as it is saved."
                        }
                        div.form-actions {
                            button.button type="submit" data-testid="segment-create" { "Create segment" }
                        }
                    }
                }
            }
        }
    }
}

/// One segment's page: its size and first members (or why they cannot be found), and its
/// definition.
pub fn segment_content(segment: &EngageObject, members: &Result<(u64, Vec<Profile>), String>) -> Markup {
    let definition = match segment.body.get("filter") {
        Some(filter) if !filter.is_null() => {
            Some(serde_json::to_string_pretty(filter).unwrap_or_else(|_| filter.to_string()))
        }
        _ => None,
    };
    html! {
        (page_head(&segment.name, Some(html! {
            span.badge.kind { (segment_kind(segment)) } " · " code { (segment.id) } " · created " (time(segment.created_at)) ". "
            a href="/segments" { "All segments" }
        })))
        div.stack {
            @match members {
                Ok((size, _)) => {
                    div.grid.stats {
                        div.card.stat {
                            div.label { "Profiles in this segment" }
                            div.value data-testid="segment-size" { (count(*size)) }
                            div.note { "counted now" }
                        }
                    }
                }
                Err(reason) => {
                    div.alert.error role="alert" data-testid="segment-error" { "This segment cannot be counted: " (reason) }
                }
            }
            div.grid.two {
                section.card.table-card {
                    div.card-head {
                        h2 { "Members" }
                        span.hint { "the first " (MEMBERS_SHOWN) ", by profile id" }
                    }
                    div.card-body.flush {
                        @match members {
                            Ok((_, profiles)) => {
                                @if profiles.is_empty() {
                                    (empty_state(
                                        "Nobody is in this segment yet",
                                        html! { "Customers enter as soon as their traits, events or consent match; the count is live, so send events or change the filter and reload." },
                                        None,
                                    ))
                                } @else {
                                    table data-testid="segment-members" {
                                        thead { tr { th { "Profile" } th { "Email" } th { "Updated" } } }
                                        tbody {
                                            @for profile in profiles {
                                                tr data-testid="member-row" {
                                                    td { a href=(profile_url(&profile.id)) { code { (profile.id) } } }
                                                    td.ellipsis { (email_of(profile).unwrap_or_default()) }
                                                    td.muted { (time(profile.updated_at)) }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                            Err(_) => {
                                (empty_state("No members to show", html! { "Fix or recreate the segment this one refers to." }, None))
                            }
                        }
                    }
                }
                section.card {
                    div.card-head { h2 { "Definition" } }
                    div.card-body {
                        @match &definition {
                            Some(definition) => { pre.json data-testid="segment-definition" { (definition) } }
                            None => {
                                p.muted {
                                    "An imported list: its members are uploaded as CSV with "
                                    code { "POST /api/v1/segments/" (segment.id) "/import" } "."
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- templates ----

/// The editor page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct TemplateParams {
    /// Set after a save.
    pub saved: Option<String>,
    /// Set after a test send.
    pub tested: Option<String>,
}

/// The test-send form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct TestSendForm {
    /// The address the test goes to.
    #[serde(default)]
    pub to: String,
    /// The profile it is rendered for (none: an empty one).
    #[serde(default)]
    pub profile_id: Option<String>,
}

/// What the editor says above itself.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateNotice {
    /// Nothing.
    None,
    /// The template was saved.
    Saved,
    /// A test was sent.
    TestSent,
    /// A test was not sent, and why.
    TestFailed(String),
}

/// The editor form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct TemplateForm {
    /// The subject (email).
    #[serde(default)]
    pub subject: Option<String>,
    /// The body.
    #[serde(default)]
    pub body: String,
    /// The profile the preview is rendered for.
    #[serde(default)]
    pub profile_id: Option<String>,
    /// The channel's own fields as a JSON object (push, in-app, WhatsApp, voice): see
    /// [`CHANNEL_FIELDS`].
    #[serde(default)]
    pub fields: Option<String>,
}

/// A template's fields that belong to its channel, edited as one JSON object in the console: a
/// push title and page, an in-app layout and buttons, an approved WhatsApp template, a call's bot.
pub const CHANNEL_FIELDS: [&str; 14] = [
    "title",
    "url",
    "icon",
    "data",
    "layout",
    "image_url",
    "buttons",
    "background_color",
    "text_color",
    "content_sid",
    "content_variables",
    "bot",
    "intent",
    "slots",
];

/// The channels whose templates have fields of their own.
fn has_channel_fields(channel: &str) -> bool {
    matches!(channel, "push" | "in_app" | "whatsapp" | "voice")
}

/// A template's channel fields as the editor shows them (pretty JSON).
fn channel_fields_json(source: &TemplateSource) -> String {
    let all = serde_json::to_value(source).unwrap_or_default();
    let fields: serde_json::Map<String, Value> = all
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| CHANNEL_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    serde_json::to_string_pretty(&fields).unwrap_or_default()
}

/// `source` with its channel fields replaced by those of the editor's JSON object; what is wrong
/// with it, naming the field.
fn with_channel_fields(source: &TemplateSource, fields: &str) -> Result<TemplateSource, String> {
    let given: serde_json::Map<String, Value> = match serde_json::from_str(fields.trim()) {
        Ok(Value::Object(given)) => given,
        Ok(_) => return Err("channel fields: give a JSON object".into()),
        Err(err) => return Err(format!("channel fields: not JSON ({err})")),
    };
    if let Some(unknown) = given.keys().find(|name| !CHANNEL_FIELDS.contains(&name.as_str())) {
        return Err(format!("channel fields: {unknown} is not one of {}", CHANNEL_FIELDS.join(", ")));
    }
    let mut all = serde_json::to_value(source).map_err(|err| err.to_string())?;
    let object = all.as_object_mut().ok_or("the template is not an object")?;
    object.retain(|name, _| !CHANNEL_FIELDS.contains(&name.as_str()));
    object.extend(given.into_iter().filter(|(_, value)| !value.is_null()));
    serde_json::from_value(all).map_err(|err| format!("channel fields: {err}"))
}

/// What the editor sends to `POST /templates/preview`.
#[derive(Debug, Default, Deserialize)]
pub struct PreviewRequest {
    /// A stored template: its channel and plain-text part are used with the subject and body given.
    #[serde(default)]
    pub template_id: Option<String>,
    /// The channel, when no `template_id` is given.
    #[serde(default)]
    pub channel: Option<String>,
    /// The subject being written (email).
    #[serde(default)]
    pub subject: Option<String>,
    /// The body being written.
    #[serde(default)]
    pub body: String,
    /// The profile to render for; the workspace's first when absent or empty.
    #[serde(default)]
    pub profile_id: Option<String>,
}

/// A template rendered for one customer, or the fault that stopped it (the preview's JSON answer).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Preview {
    /// The message as that customer would get it.
    Rendered {
        /// Whom it was rendered for ([`STAND_IN_PROFILE`] when the workspace has no profiles).
        profile_id: String,
        /// The subject (email).
        subject: Option<String>,
        /// The HTML body (email).
        html: Option<String>,
        /// The plain text.
        text: String,
        /// The document the preview frame shows: the HTML, or the text for other channels.
        srcdoc: String,
    },
    /// Why it could not be rendered.
    Fault {
        /// The fault as a sentence, with its field, line and column when it has them.
        error: String,
        /// The field at fault (`subject`, `body`, `channel`, `profile_id`).
        field: String,
        /// Its line, from 1.
        line: Option<usize>,
        /// Its column, from 1.
        column: Option<usize>,
    },
}

impl Preview {
    fn fault(err: &TemplateError) -> Self {
        let (line, column) = (Some(err.line), Some(err.column));
        Preview::Fault { error: err.to_string(), field: err.field.clone(), line, column }
    }
}

/// `GET /templates`.
pub async fn template_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let templates = state.store.objects(&workspace.id, ObjectKind::Template).await?;
    let content = templates_content(&templates, &base_url(&state, &headers));
    Ok(session.respond(layout::shell(&session, Section::Templates, "Templates", content)))
}

/// `GET /templates/{id}`: the editor, with the stored version previewed for the first profile.
pub async fn template_show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(params): Query<TemplateParams>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let Some(stored) = state.store.object(&workspace.id, ObjectKind::Template, &id).await? else {
        return Err(ConsoleError::not_found(format!("There is no template {id} in this workspace.")));
    };
    let source = stored_source(&stored)?;
    let preview = preview(&state, workspace, &source, None).await?;
    let notice = if params.saved.is_some() {
        TemplateNotice::Saved
    } else if params.tested.is_some() {
        TemplateNotice::TestSent
    } else {
        TemplateNotice::None
    };
    let content = template_content(&stored, &source, None, &preview, &notice);
    Ok(session.respond(layout::shell(&session, Section::Templates, &stored.name, content)))
}

/// `POST /templates/{id}`: store the editor's subject and body when they compile (as a new version:
/// campaigns pick it up at their next send); otherwise the editor again with the fault and what
/// was typed.
pub async fn template_save(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<TemplateForm>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let Some(stored) = state.store.object(&workspace.id, ObjectKind::Template, &id).await? else {
        return Err(ConsoleError::not_found(format!("There is no template {id} in this workspace.")));
    };
    let mut source = stored_source(&stored)?;
    // Browsers send a textarea's line breaks as CRLF; templates written through the API use LF.
    source.body = form.body.replace("\r\n", "\n");
    if source.channel == "email" {
        source.subject = Some(form.subject.as_deref().unwrap_or_default().replace("\r\n", "\n"));
    }
    if let Some(fields) = form.fields.as_deref().filter(|_| has_channel_fields(&source.channel)) {
        match with_channel_fields(&source, fields) {
            Ok(changed) => source = changed,
            Err(why) => {
                let profile_id = form.profile_id.as_deref().map(str::trim).filter(|id| !id.is_empty());
                let fault = Preview::Fault { error: why, field: "fields".into(), line: None, column: None };
                let content = template_content(&stored, &source, profile_id, &fault, &TemplateNotice::None);
                let page = layout::shell(&session, Section::Templates, &stored.name, content);
                return Ok(session.respond((StatusCode::BAD_REQUEST, page)));
            }
        }
    }
    if let Err(err) = template::compile(&source) {
        let profile_id = form.profile_id.as_deref().map(str::trim).filter(|id| !id.is_empty());
        let content = template_content(&stored, &source, profile_id, &Preview::fault(&err), &TemplateNotice::None);
        let page = layout::shell(&session, Section::Templates, &stored.name, content);
        return Ok(session.respond((StatusCode::BAD_REQUEST, page)));
    }
    let mut updated = stored.clone();
    updated.body = serde_json::to_value(&source).map_err(ConsoleError::internal)?;
    // A later `updated_at` is what tells the senders' template cache that this is a new version.
    updated.updated_at = Utc::now().max(stored.updated_at + chrono::Duration::milliseconds(1));
    state.store.put_object(&workspace.id, &updated).await?;
    Ok(Redirect::to(&format!("{}?saved=1", template_url(&id))).into_response())
}

/// `POST /templates/{id}/test`: send the stored version to an address as a test, then back to the
/// editor saying whether it went.
pub async fn template_test_send(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<TestSendForm>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let Some(stored) = state.store.object(&workspace.id, ObjectKind::Template, &id).await? else {
        return Err(ConsoleError::not_found(format!("There is no template {id} in this workspace.")));
    };
    let to = form.to.trim();
    let profile_id = form.profile_id.as_deref().map(str::trim).filter(|id| !id.is_empty());
    let why = if to.is_empty() || to.len() > 320 || to.contains(['\r', '\n']) {
        Some((StatusCode::BAD_REQUEST, "give one email address or phone number".to_owned()))
    } else {
        match crate::api::engage::send_test(&state, workspace, &id, to, profile_id).await {
            Ok(_) => None,
            Err(err) => Some((err.status, err.message)),
        }
    };
    let Some((status, why)) = why else {
        return Ok(Redirect::to(&format!("{}?tested=1", template_url(&id))).into_response());
    };
    let source = stored_source(&stored)?;
    let preview = preview(&state, workspace, &source, profile_id).await?;
    let content = template_content(&stored, &source, profile_id, &preview, &TemplateNotice::TestFailed(why));
    let page = layout::shell(&session, Section::Templates, &stored.name, content);
    Ok(session.respond((status, page)))
}

/// `POST /templates/preview`: render a template being written for one customer. A template that
/// does not compile or render is an answer too (200 with `error`, `field`, `line`, `column`), as
/// it is what the author sees while typing; a request that is not JSON is a 400.
pub async fn template_preview(
    State(state): State<AppState>,
    session: Session,
    request: Result<Json<PreviewRequest>, JsonRejection>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        let answer = json!({"error": "choose a workspace first"});
        return Ok((StatusCode::BAD_REQUEST, Json(answer)).into_response());
    };
    let request = match request {
        Ok(Json(request)) => request,
        Err(rejection) => {
            let answer = json!({"error": format!("body: {}", rejection.body_text())});
            return Ok((StatusCode::BAD_REQUEST, Json(answer)).into_response());
        }
    };
    // A stored template keeps its other fields (an email's text part, a push message's title, page
    // and icon); the editor changes the subject and the body.
    let base = match request.template_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => match state.store.object(&workspace.id, ObjectKind::Template, id).await? {
            Some(stored) => stored_source(&stored)?,
            None => {
                let answer = json!({"error": format!("template_id: there is no template {id} in this workspace")});
                return Ok((StatusCode::NOT_FOUND, Json(answer)).into_response());
            }
        },
        None => TemplateSource { channel: request.channel.clone().unwrap_or_default(), ..Default::default() },
    };
    let source = TemplateSource { subject: request.subject, body: request.body, ..base };
    let profile_id = request.profile_id.as_deref().map(str::trim).filter(|id| !id.is_empty());
    let preview = preview(&state, workspace, &source, profile_id).await?;
    Ok(Json(preview).into_response())
}

/// Compile `source` and render it for `profile_id`, else the workspace's first profile, else a
/// stand-in without traits.
pub async fn preview(
    state: &AppState,
    workspace: &Workspace,
    source: &TemplateSource,
    profile_id: Option<&str>,
) -> Result<Preview, ConsoleError> {
    let compiled = match template::compile(source) {
        Ok(compiled) => compiled,
        Err(err) => return Ok(Preview::fault(&err)),
    };
    let profile = match profile_id {
        Some(id) => match state.store.profile(&workspace.id, id).await? {
            Some(profile) => Some(profile),
            None => {
                return Ok(Preview::Fault {
                    error: format!("profile_id: there is no profile {id} in this workspace"),
                    field: "profile_id".into(),
                    line: None,
                    column: None,
                });
            }
        },
        None => {
            let first = ProfileQuery { limit: 1, ..ProfileQuery::default() };
            state.store.list_profiles(&workspace.id, &first).await?.profiles.into_iter().next()
        }
    };
    let (profile_id, profile) = match &profile {
        Some(profile) => (profile.id.clone(), json!({"id": profile.id, "traits": profile.traits})),
        None => (STAND_IN_PROFILE.to_owned(), json!({"id": STAND_IN_PROFILE, "traits": {}})),
    };
    // As the senders do: the customer's time zone, else the workspace's.
    let zone = profile["traits"]["timezone"]
        .as_str()
        .unwrap_or(&workspace.time_zone)
        .parse::<chrono_tz::Tz>()
        .unwrap_or(chrono_tz::UTC);
    let context =
        RenderContext { profile: &profile, event: None, unsubscribe_url: PREVIEW_UNSUBSCRIBE_URL, time_zone: zone };
    Ok(match compiled.render(&context) {
        Ok(rendered) => {
            let srcdoc = frame_document(rendered.html.as_deref(), &rendered.text);
            // A push message's title stands where an email's subject does.
            let subject = rendered.subject.or(rendered.push.map(|push| push.title));
            let (html, text) = (rendered.html, rendered.text);
            Preview::Rendered { profile_id, subject, html, text, srcdoc }
        }
        Err(err) => Preview::fault(&err),
    })
}

/// The document the preview frame shows: an email's HTML as it is, another channel's text escaped
/// and wrapped.
pub fn frame_document(email_html: Option<&str>, text: &str) -> String {
    if let Some(email_html) = email_html {
        return email_html.to_owned();
    }
    let document = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; }
            body style="margin: 16px; font: 14px/1.5 system-ui, sans-serif; color: #1b2430" {
                pre style="margin: 0; white-space: pre-wrap; font: inherit" { (text) }
            }
        }
    };
    document.into_string()
}

fn stored_source(template: &EngageObject) -> Result<TemplateSource, ConsoleError> {
    serde_json::from_value(template.body.clone()).map_err(ConsoleError::internal)
}

fn template_url(id: &str) -> String {
    format!("/templates/{}", url::encode(id))
}

fn template_channel(template: &EngageObject) -> &str {
    template.body.get("channel").and_then(Value::as_str).unwrap_or("?")
}

/// The template list.
pub fn templates_content(templates: &[EngageObject], base_url: &str) -> Markup {
    html! {
        (page_head("Templates", Some(html! { "Messages written in Liquid: email (HTML or MJML, with a subject) and SMS. Open one to edit it with a live preview." })))
        div.card.table-card {
            @if templates.is_empty() {
                (empty_state(
                    "No templates yet",
                    html! {
                        "A template is a message with placeholders such as " code { "{{ profile.traits.name }}" }
                        ", checked when it is saved. Create one with the API, then open it here to edit it with a live preview:"
                    },
                    Some(&format!(
                        "curl -X POST {base_url}/api/v1/templates -H \"Authorization: Bearer $API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{TEMPLATE_EXAMPLE}'"
                    )),
                ))
            } @else {
                table data-sortable data-testid="templates-table" {
                    thead { tr {
                        th data-sort="text" { "Template" }
                        th data-sort="text" { "Channel" }
                        th { "Subject" }
                        th data-sort="text" { "Updated" }
                    } }
                    tbody {
                        @for template in templates {
                            @let channel = template_channel(template);
                            tr data-testid="template-row" {
                                td {
                                    a href=(template_url(&template.id)) { (template.name) }
                                    div.muted { code { (template.id) } }
                                }
                                td data-sort-value=(channel) { (channel_badge(channel)) }
                                td.ellipsis { (template.body.get("subject").and_then(Value::as_str).unwrap_or_default()) }
                                td.muted data-sort-value=(template.updated_at.to_rfc3339()) { (time(template.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The editor: the source (as stored, or as typed when a save failed) beside its preview.
pub fn template_content(
    template: &EngageObject,
    source: &TemplateSource,
    profile_id: Option<&str>,
    preview: &Preview,
    notice: &TemplateNotice,
) -> Markup {
    let email = source.channel == "email";
    let (srcdoc, subject, rendered_for, fault) = match preview {
        Preview::Rendered { srcdoc, subject, profile_id, .. } => {
            (srcdoc.as_str(), subject.as_deref(), Some(profile_id.as_str()), None)
        }
        Preview::Fault { error, .. } => ("", None, None, Some(error.as_str())),
    };
    let rendered_for_url = match rendered_for {
        Some(id) if id != STAND_IN_PROFILE => profile_url(id),
        _ => "/profiles".to_owned(),
    };
    html! {
        (page_head(&template.name, Some(html! {
            (channel_badge(&source.channel)) " · " code { (template.id) } " · updated " (time(template.updated_at)) ". "
            a href="/templates" { "All templates" }
        })))
        @match notice {
            TemplateNotice::Saved => {
                div.alert.info role="status" data-testid="template-saved" { "Saved. Campaigns that use this template send this version from now on." }
            }
            TemplateNotice::TestSent => {
                div.alert.info role="status" data-testid="template-test-sent" { "The test was sent. It is not counted in any campaign's stats." }
            }
            TemplateNotice::TestFailed(why) => {
                div.alert.error role="alert" data-testid="template-test-failed" {
                    @if why.starts_with("the test was not sent") { "T" (why[1..]) } @else { "The test was not sent: " (why) }
                }
            }
            TemplateNotice::None => {}
        }
        div.grid.editor data-template-editor data-preview-url="/templates/preview" data-template-id=(template.id) {
            section.card {
                div.card-head {
                    h2 { "Source" }
                    span.hint { "Liquid: " code { "{{ profile.traits.NAME | default: \"…\" }}" } ", " code { "{{ unsubscribe_url }}" } }
                }
                div.card-body {
                    form.stacked method="post" action=(template_url(&template.id)) data-testid="template-form" {
                        @if email {
                            label for="template-subject" { "Subject" }
                            input #template-subject type="text" name="subject" value=(source.subject.as_deref().unwrap_or_default())
                                data-testid="template-subject";
                        }
                        label for="template-body" { "Body" @if email { " (HTML, or MJML starting with " code { "<mjml>" } ")" } }
                        textarea #template-body class="code" name="body" rows="18" spellcheck="false" data-testid="template-body" {
                            "\n" (source.body)
                        }
                        @if has_channel_fields(&source.channel) {
                            label for="template-fields" { "Channel fields (JSON)" }
                            textarea #template-fields class="code" name="fields" rows="8" spellcheck="false" data-testid="template-fields" {
                                "\n" (channel_fields_json(source))
                            }
                            span.field-hint {
                                @match source.channel.as_str() {
                                    "push" => { code { "title" } " (required), " code { "url" } ", " code { "icon" } ", " code { "data" } ". " }
                                    "in_app" => { code { "layout" } " (required: top_banner, middle_banner, bottom_banner, modal, full_screen), " code { "title" } ", " code { "image_url" } ", " code { "buttons" } " (" code { "{\"text\", \"action\": \"close\" | \"link\" | \"deep_link\", \"link\"}" } ", at most 2), " code { "background_color" } ", " code { "text_color" } ", " code { "data" } ". " }
                                    "whatsapp" => { code { "content_sid" } " (an approved template, HX…) and " code { "content_variables" } ". " }
                                    _ => { code { "bot" } " (required), " code { "intent" } ", " code { "slots" } "; the body is the greeting. " }
                                }
                                "Saved with the body; the preview shows the saved fields."
                            }
                        }
                        label for="template-profile" { "Preview for profile" }
                        input #template-profile type="text" name="profile_id" value=[profile_id]
                            placeholder="the workspace's first profile" data-testid="template-profile";
                        div.form-actions {
                            button.button type="submit" data-testid="template-save" { "Save" }
                            span.field-hint { "Saved only when it compiles." }
                        }
                    }
                    form.stacked.test-send method="post" action=(format!("{}/test", template_url(&template.id))) data-testid="template-test-form" {
                        label for="template-test-to" { "Send the saved version as a test to" }
                        input #template-test-to type="text" name="to" required maxlength="320"
                            placeholder=(if email { "you@example.com" } else { "+15551234567" }) data-testid="template-test-to";
                        input type="hidden" name="profile_id" value=[profile_id.or(rendered_for).filter(|id| *id != STAND_IN_PROFILE)];
                        div.form-actions {
                            button.button.secondary type="submit" data-testid="template-test-send" { "Send test" }
                            span.field-hint { "Through this workspace's " (if email { "SMTP server" } else { "Twilio account" }) "; rendered for the previewed profile; not counted in stats." }
                        }
                    }
                }
            }
            section.card {
                div.card-head {
                    h2 { "Preview" }
                    span.hint data-preview-state { "as rendered by the server" }
                }
                div.card-body {
                    div.alert.error role="alert" data-testid="template-error" hidden[fault.is_none()] {
                        @if let Some(fault) = fault { (fault) }
                    }
                    @if email {
                        div.preview-subject { span.muted { "Subject: " } strong data-preview-subject { (subject.unwrap_or_default()) } }
                    }
                    // Sandboxed: the author's HTML runs no script and reaches nothing of the console.
                    iframe.preview-frame data-testid="template-preview" title="Preview of the message" sandbox="" srcdoc=(srcdoc) {}
                    div.field-hint {
                        "Rendered for "
                        a data-preview-profile href=(rendered_for_url) { (rendered_for.unwrap_or("—")) }
                        ". The preview loads no images from other sites."
                    }
                }
            }
        }
        script type="module" src=(assets::url("template-editor.js")) {}
    }
}

// ---- campaigns ----

/// A campaign as the list shows it.
#[derive(Debug, Clone)]
pub struct CampaignRow {
    /// The stored campaign.
    pub campaign: EngageObject,
    /// Its definition, when it parses.
    pub spec: Option<CampaignSpec>,
    /// Its segment's name, when the segment exists.
    pub segment_name: Option<String>,
    /// Deliveries planned.
    pub targeted: u64,
    /// Messages sent.
    pub sent: u64,
}

/// Everything a campaign's page shows.
#[derive(Debug, Clone)]
pub struct CampaignDetail {
    /// The stored campaign.
    pub campaign: EngageObject,
    /// Its definition, when it parses.
    pub spec: Option<CampaignSpec>,
    /// Its stats as `GET /api/v1/campaigns/{id}` gives them: `stats` and `treatments`.
    pub view: Value,
    /// Its segment's name, when the segment exists.
    pub segment_name: Option<String>,
    /// Its templates in treatment order: id, and name while the template exists.
    pub templates: Vec<(String, Option<String>)>,
}

/// The stages of a funnel, in order: label and the stats key it is read from.
pub const FUNNEL_STAGES: [(&str, &str); 6] = [
    ("Targeted", "targeted"),
    ("Sent", "sent"),
    ("Delivered", "delivered"),
    ("Opened", "opened"),
    ("Clicked", "clicked"),
    ("Converted", "converted"),
];

/// The rows of the results table: label and stats key.
const STAT_ROWS: [(&str, &str); 12] = [
    ("Targeted", "targeted"),
    ("Suppressed", "suppressed"),
    ("Deferred by quiet hours", "deferred"),
    ("Queued", "queued"),
    ("Sent", "sent"),
    ("Delivered", "delivered"),
    ("Failed", "failed"),
    ("Bounced", "bounced"),
    ("Opened", "opened"),
    ("Clicked", "clicked"),
    ("Unsubscribed", "unsubscribed"),
    ("Converted", "converted"),
];

/// The buttons of a campaign: action, label, test id and class.
const ACTIONS: [(&str, &str, &str, &str); 3] = [
    ("pause", "Pause", "campaign-pause", "button secondary"),
    ("resume", "Resume", "campaign-resume", "button"),
    ("cancel", "Cancel campaign", "campaign-cancel", "button danger"),
];

/// `GET /campaigns`.
pub async fn campaign_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let campaigns = state.store.objects(&workspace.id, ObjectKind::Campaign).await?;
    let segments = state.store.objects(&workspace.id, ObjectKind::Segment).await?;
    let mut rows = Vec::with_capacity(campaigns.len());
    for campaign in campaigns {
        let view = campaign_view(&state, workspace, &campaign.id).await?.unwrap_or_default();
        let spec = serde_json::from_value::<CampaignSpec>(campaign.body.clone()).ok();
        let segment_name = spec
            .as_ref()
            .and_then(|spec| segments.iter().find(|segment| segment.id == spec.segment_id))
            .map(|segment| segment.name.clone());
        let (targeted, sent) = (stat(&view["stats"], "targeted"), stat(&view["stats"], "sent"));
        rows.push(CampaignRow { campaign, spec, segment_name, targeted, sent });
    }
    let content = campaigns_content(&rows, &base_url(&state, &headers));
    Ok(session.respond(layout::shell(&session, Section::Campaigns, "Campaigns", content)))
}

/// `GET /campaigns/{id}`.
pub async fn campaign_show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let page = campaign_page(&state, &session, workspace, &id, None).await?;
    Ok(session.respond(page))
}

/// `POST /campaigns/{id}/{action}`: pause, resume or cancel by the API's rule, then back to the
/// campaign's page; a campaign whose state does not allow it shows its page again with the reason.
pub async fn campaign_act(
    State(state): State<AppState>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    match api::act_on_campaign(&state, &workspace.id, &id, &action).await {
        Ok(_) => Ok(Redirect::to(&campaign_url(&id)).into_response()),
        Err(err) if err.status == StatusCode::CONFLICT => {
            let page = campaign_page(&state, &session, workspace, &id, Some(&err.message)).await?;
            Ok(session.respond((StatusCode::CONFLICT, page)))
        }
        Err(err) if err.status == StatusCode::NOT_FOUND => {
            let message = if api::campaign_transition(&action).is_none() {
                format!("A campaign can be paused, resumed or cancelled, not “{action}”.")
            } else {
                format!("There is no campaign {id} in this workspace.")
            };
            Err(ConsoleError::not_found(message))
        }
        Err(err) => Err(err.into()),
    }
}

/// A campaign with its stats, exactly as the API answers `GET /api/v1/campaigns/{id}`; None when
/// it does not exist.
async fn campaign_view(state: &AppState, workspace: &Workspace, id: &str) -> Result<Option<Value>, ConsoleError> {
    let answer = api::get_campaign(State(state.clone()), WorkspaceCaller(workspace.clone()), Path(id.to_owned())).await;
    match answer {
        Ok(Json(view)) => Ok(Some(view)),
        Err(err) if err.status == StatusCode::NOT_FOUND => Ok(None),
        Err(err) => Err(err.into()),
    }
}

async fn campaign_page(
    state: &AppState,
    session: &Session,
    workspace: &Workspace,
    id: &str,
    problem: Option<&str>,
) -> Result<Markup, ConsoleError> {
    let Some(campaign) = state.store.object(&workspace.id, ObjectKind::Campaign, id).await? else {
        return Err(ConsoleError::not_found(format!("There is no campaign {id} in this workspace.")));
    };
    let view = campaign_view(state, workspace, id).await?.unwrap_or_default();
    let spec = serde_json::from_value::<CampaignSpec>(campaign.body.clone()).ok();
    let mut segment_name = None;
    let mut templates = Vec::new();
    if let Some(spec) = &spec {
        segment_name = state.store.object(&workspace.id, ObjectKind::Segment, &spec.segment_id).await?.map(|s| s.name);
        for (_, template_id) in spec.templates() {
            let name = state.store.object(&workspace.id, ObjectKind::Template, template_id).await?.map(|t| t.name);
            templates.push((template_id.to_owned(), name));
        }
    }
    let detail = CampaignDetail { campaign, spec, view, segment_name, templates };
    Ok(layout::shell(session, Section::Campaigns, &detail.campaign.name, campaign_content(&detail, problem)))
}

fn campaign_url(id: &str) -> String {
    format!("/campaigns/{}", url::encode(id))
}

/// A counter of the API's stats (0 when absent).
fn stat(stats: &Value, key: &str) -> u64 {
    stats.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A campaign's status as a coloured badge.
pub fn status_badge(status: &str) -> Markup {
    html! { span.badge.status data-status=(status) data-testid="campaign-status" { (status) } }
}

fn status_advice(status: &str) -> &'static str {
    match status {
        campaign::status::DRAFT => "Not started.",
        campaign::status::SCHEDULED => "Waiting for its time or its trigger. Pausing holds it; cancelling ends it.",
        campaign::status::RUNNING => "Sending. Pausing stops sending; nothing queued is lost.",
        campaign::status::PAUSED => "Nothing is sent until it is resumed.",
        campaign::status::COMPLETED => "Everything planned was sent or suppressed.",
        campaign::status::CANCELLED => "Cancelled: what was not sent never will be.",
        _ => "",
    }
}

fn schedule_text(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Now(_) => "At once, when it was created".to_owned(),
        Schedule::At { at, local_time: false } => format!("Once, at {}", at.format("%b %-d, %Y %H:%M UTC")),
        Schedule::At { at, local_time: true } => {
            format!("Once, at {} in each customer's time zone", at.format("%b %-d, %Y %H:%M"))
        }
        Schedule::Cron { cron, time_zone } => format!("Recurring: {cron} ({time_zone})"),
        Schedule::Trigger { trigger } => {
            let when = match trigger.delay_seconds {
                0 => format!("When a customer does “{}”", trigger.event),
                delay => format!("{} after a customer does “{}”", delay_text(delay), trigger.event),
            };
            let conditions: Vec<String> = trigger
                .conditions()
                .iter()
                .map(|condition| match &condition.value {
                    Some(value) => format!("{} {} {value}", condition.name, condition.op.as_str()),
                    None => format!("{} {}", condition.name, condition.op.as_str()),
                })
                .collect();
            if conditions.is_empty() { when } else { format!("{when}, where {}", conditions.join(" and ")) }
        }
    }
}

fn delay_text(seconds: u64) -> String {
    let (amount, unit) = match seconds {
        s if s.is_multiple_of(86_400) => (s / 86_400, "day"),
        s if s.is_multiple_of(3_600) => (s / 3_600, "hour"),
        s if s.is_multiple_of(60) => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{amount} {unit}{}", if amount == 1 { "" } else { "s" })
}

fn treatment_label(name: &str) -> String {
    if name == "holdout" { "Holdout".to_owned() } else { format!("Treatment {name}") }
}

/// The treatments that get a funnel: those of the definition (`A` alone without A/B treatments),
/// then any other with deliveries; never the holdout, which is sent nothing.
fn funnel_treatments(spec: Option<&CampaignSpec>, treatments: &[(String, Value)]) -> Vec<String> {
    let mut names: Vec<String> = match spec {
        Some(spec) if !spec.treatments.is_empty() => (0..spec.treatments.len()).map(campaign::treatment_name).collect(),
        _ => vec!["A".to_owned()],
    };
    for (name, _) in treatments {
        if name != "holdout" && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// One treatment's stats (null when it has no deliveries yet).
fn treatment_stats(treatments: &[(String, Value)], name: &str) -> Value {
    treatments.iter().find(|(other, _)| other == name).map_or(Value::Null, |(_, stats)| stats.clone())
}

/// A funnel's stages read from the API's stats of one treatment.
pub fn funnel_stages(stats: &Value) -> Vec<(&'static str, u64)> {
    FUNNEL_STAGES.iter().map(|&(label, key)| (label, stat(stats, key))).collect()
}

/// The campaign list.
pub fn campaigns_content(rows: &[CampaignRow], base_url: &str) -> Markup {
    html! {
        (page_head("Campaigns", Some(html! { "Templates sent to segments: at once, at a time, on a schedule or when a customer does something." })))
        div.card.table-card {
            @if rows.is_empty() {
                (empty_state(
                    "No campaigns yet",
                    html! {
                        "A campaign sends a template to a segment. Make a " a href="/segments" { "segment" } " and a "
                        a href="/templates" { "template" } " first, then create the campaign with the API; it shows here with its results."
                    },
                    Some(&format!(
                        "curl -X POST {base_url}/api/v1/campaigns -H \"Authorization: Bearer $API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{CAMPAIGN_EXAMPLE}'"
                    )),
                ))
            } @else {
                table data-sortable data-testid="campaigns-table" {
                    thead { tr {
                        th data-sort="text" { "Campaign" }
                        th data-sort="text" { "Status" }
                        th { "Channels" }
                        th data-sort="text" { "Segment" }
                        th.num data-sort="number" { "Targeted" }
                        th.num data-sort="number" { "Sent" }
                        th data-sort="text" { "Created" }
                    } }
                    tbody {
                        @for row in rows {
                            tr data-testid="campaign-row" data-status=(row.campaign.status) {
                                td {
                                    a href=(campaign_url(&row.campaign.id)) { (row.campaign.name) }
                                    div.muted { code { (row.campaign.id) } }
                                }
                                td data-sort-value=(row.campaign.status) { (status_badge(&row.campaign.status)) }
                                td {
                                    @if let Some(spec) = &row.spec {
                                        @for channel in &spec.channels { (channel_badge(channel)) " " }
                                    }
                                }
                                td {
                                    @if let Some(spec) = &row.spec {
                                        a href=(segment_url(&spec.segment_id)) {
                                            @match &row.segment_name {
                                                Some(name) => (name),
                                                None => code { (spec.segment_id) },
                                            }
                                        }
                                    }
                                }
                                td.num data-sort-value=(row.targeted) { (count(row.targeted)) }
                                td.num data-sort-value=(row.sent) { (count(row.sent)) }
                                td.muted data-sort-value=(row.campaign.created_at.to_rfc3339()) { (time(row.campaign.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One campaign's page: status and buttons, definition, results and a funnel per treatment;
/// `problem` (an action its state did not allow) is shown on top.
pub fn campaign_content(detail: &CampaignDetail, problem: Option<&str>) -> Markup {
    let campaign = &detail.campaign;
    let stats = &detail.view["stats"];
    let treatments: Vec<(String, Value)> = detail.view["treatments"]
        .as_object()
        .map(|map| map.iter().map(|(name, stats)| (name.clone(), stats.clone())).collect())
        .unwrap_or_default();
    let funnels = funnel_treatments(detail.spec.as_ref(), &treatments);
    let allowed = |action: &str| {
        api::campaign_transition(action).is_some_and(|(_, from)| from.contains(&campaign.status.as_str()))
    };
    html! {
        (page_head(&campaign.name, Some(html! {
            code { (campaign.id) } " · created " (time(campaign.created_at)) ". " a href="/campaigns" { "All campaigns" }
        })))
        @if let Some(problem) = problem {
            div.alert.error role="alert" data-testid="campaign-problem" { (problem) }
        }
        div.stack {
            div.grid.two {
                section.card {
                    div.card-head { h2 { "Status" } }
                    div.card-body {
                        p.status-line { (status_badge(&campaign.status)) " " span.muted { (status_advice(&campaign.status)) } }
                        @if let Some(reason) = &campaign.status_reason {
                            p data-testid="campaign-status-reason" { (reason) }
                        }
                        div.actions {
                            @for (action, label, testid, class) in ACTIONS {
                                @if allowed(action) {
                                    form method="post" action=(format!("{}/{action}", campaign_url(&campaign.id))) {
                                        button type="submit" class=(class) data-testid=(testid) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                section.card {
                    div.card-head { h2 { "Definition" } }
                    div.card-body {
                        @match &detail.spec {
                            Some(spec) => { (definition(spec, detail)) }
                            None => { p.muted { "This campaign's definition could not be read." } }
                        }
                    }
                }
            }
            section.card.table-card {
                div.card-head { h2 { "Results" } span.hint { "deliveries of every run, in all and per treatment" } }
                div.card-body.flush {
                    table data-testid="campaign-stats" {
                        thead { tr {
                            th { "" }
                            th.num { "All" }
                            @for (name, _) in &treatments { th.num { (treatment_label(name)) } }
                        } }
                        tbody {
                            @for (label, key) in STAT_ROWS {
                                tr data-stat=(key) {
                                    td { (label) }
                                    td.num { (count(stat(stats, key))) }
                                    @for (_, treatment) in &treatments { td.num { (count(stat(treatment, key))) } }
                                }
                            }
                        }
                    }
                    (reasons("Suppressed", &stats["suppressed_by"]))
                    (reasons("Failed", &stats["failed_by"]))
                }
            }
            section.card {
                div.card-head { h2 { "Funnel" } span.hint { "per treatment; shares are of those targeted" } }
                div.card-body {
                    div.funnels {
                        @for name in &funnels {
                            figure.funnel-figure {
                                figcaption { (treatment_label(name)) }
                                (funnel(name, &funnel_stages(&treatment_stats(&treatments, name))))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The definition's facts: segment, channels, templates, kind, schedule and the optional parts.
fn definition(spec: &CampaignSpec, detail: &CampaignDetail) -> Markup {
    html! {
        dl.facts {
            dt { "Segment" }
            dd {
                a href=(segment_url(&spec.segment_id)) {
                    @match &detail.segment_name {
                        Some(name) => (name),
                        None => code { (spec.segment_id) },
                    }
                }
                @if detail.segment_name.is_none() { " " span.muted { "(deleted)" } }
            }
            dt { "Channels" }
            dd {
                @for channel in &spec.channels { (channel_badge(channel)) " " }
                @if spec.channels.len() > 1 { span.muted { "in order of preference" } }
            }
            dt { @if spec.treatments.is_empty() { "Template" } @else { "Treatments" } }
            dd {
                @for (index, (id, name)) in detail.templates.iter().enumerate() {
                    div {
                        @if let Some(treatment) = spec.treatments.get(index) {
                            (campaign::treatment_name(index)) " · " (treatment.percent) "% · "
                        }
                        a href=(template_url(id)) {
                            @match name {
                                Some(name) => (name),
                                None => code { (id) },
                            }
                        }
                        @if name.is_none() { " " span.muted { "(deleted)" } }
                    }
                }
            }
            dt { "Kind" }
            dd { (spec.kind.as_str()) }
            dt { "Schedule" }
            dd { (schedule_text(&spec.schedule)) }
            @if spec.holdout_percent > 0 {
                dt { "Holdout" }
                dd { (spec.holdout_percent) "% of the segment get nothing, to measure against" }
            }
            @if let Some(conversion) = &spec.conversion {
                dt { "Conversion" }
                dd { "“" (conversion.event) "” within " (conversion.within_hours) " hours of a message" }
            }
        }
    }
}

/// A line breaking a counter down by reason (`suppressed_by`, `failed_by`), when there are any.
fn reasons(label: &str, by_reason: &Value) -> Markup {
    let reasons: Vec<(&String, u64)> = by_reason
        .as_object()
        .map(|map| map.iter().map(|(reason, n)| (reason, n.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    html! {
        @if !reasons.is_empty() {
            p.reasons {
                span.muted { (label) " because: " }
                @for (index, (reason, n)) in reasons.iter().enumerate() {
                    @if index > 0 { " · " }
                    code { (reason) } " " (count(*n))
                }
            }
        }
    }
}

// ---- the funnel chart ----

/// Width of a funnel's coordinate system (it scales to its container).
pub const FUNNEL_WIDTH: f64 = 640.0;
/// Room for the stage names, left of the bars.
const FUNNEL_LABELS: f64 = 96.0;
/// Room for the counts and shares, right of the bars.
const FUNNEL_VALUES: f64 = 136.0;
/// Height of one stage's row.
const FUNNEL_ROW: f64 = 30.0;
/// Height of a bar within its row.
const FUNNEL_BAR: f64 = 20.0;
/// Space above the first row and below the last.
const FUNNEL_PAD: f64 = 6.0;

/// One stage's bar, in chart coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelBar {
    /// The stage.
    pub stage: &'static str,
    /// How many reached it.
    pub count: u64,
    /// Its share of the first stage (those targeted) in percent; None when nobody was targeted.
    pub percent: Option<f64>,
    /// Left edge.
    pub x: f64,
    /// Top.
    pub y: f64,
    /// Width: proportional to `count`, zero for none.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// The bars of a funnel, top to bottom in the order given; the first stage is the 100 %.
pub fn funnel_bars(stages: &[(&'static str, u64)]) -> Vec<FunnelBar> {
    let first = stages.first().map_or(0, |&(_, count)| count);
    // Normally the first stage is the widest; a later one counted more (a receipt without its
    // send) must still fit.
    let widest = stages.iter().map(|&(_, count)| count).max().unwrap_or(0);
    let plot_width = FUNNEL_WIDTH - FUNNEL_LABELS - FUNNEL_VALUES;
    stages
        .iter()
        .enumerate()
        .map(|(index, &(stage, count))| FunnelBar {
            stage,
            count,
            percent: if first > 0 { Some(100.0 * count as f64 / first as f64) } else { None },
            x: FUNNEL_LABELS,
            y: FUNNEL_PAD + FUNNEL_ROW * index as f64 + (FUNNEL_ROW - FUNNEL_BAR) / 2.0,
            width: if widest == 0 { 0.0 } else { plot_width * count as f64 / widest as f64 },
            height: FUNNEL_BAR,
        })
        .collect()
}

/// A share as text: `45.6%`.
fn percent_text(percent: f64) -> String {
    format!("{percent:.1}%")
}

fn number(value: f64) -> String {
    format!("{value:.2}")
}

/// One treatment's funnel as inline SVG: a horizontal bar per stage with its count and its share of
/// those targeted, each with a hover title.
pub fn funnel(treatment: &str, stages: &[(&'static str, u64)]) -> Markup {
    let bars = funnel_bars(stages);
    let height = FUNNEL_PAD * 2.0 + FUNNEL_ROW * bars.len() as f64;
    let plot_width = FUNNEL_WIDTH - FUNNEL_LABELS - FUNNEL_VALUES;
    let label = format!("{}: from targeted to converted", treatment_label(treatment));
    let nobody = bars.first().is_none_or(|bar| bar.count == 0);
    html! {
        svg.chart.funnel data-testid="campaign-funnel" data-treatment=(treatment)
            viewBox=(format!("0 0 {FUNNEL_WIDTH} {}", number(height))) role="img" aria-label=(label)
            xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet" {
            title { (label) }
            @for bar in &bars {
                @let middle = bar.y + bar.height / 2.0 + 4.0;
                g.bar-group {
                    title {
                        (bar.stage) ": " (count(bar.count))
                        @if let Some(percent) = bar.percent { " (" (percent_text(percent)) " of those targeted)" }
                    }
                    text.stage x=(number(FUNNEL_LABELS - 10.0)) y=(number(middle)) text-anchor="end" { (bar.stage) }
                    rect.track x=(number(bar.x)) y=(number(bar.y)) width=(number(plot_width)) height=(number(bar.height)) rx="3" {}
                    rect.bar x=(number(bar.x)) y=(number(bar.y)) width=(number(bar.width)) height=(number(bar.height)) rx="3"
                        data-stage=(bar.stage.to_lowercase()) data-count=(bar.count) {}
                    text.value x=(number(FUNNEL_WIDTH - FUNNEL_VALUES + 10.0)) y=(number(middle)) {
                        (count(bar.count))
                        @if let Some(percent) = bar.percent { tspan.share dx="8" { (percent_text(percent)) } }
                    }
                }
            }
            @if nobody {
                text.empty-note x=(number(FUNNEL_LABELS + plot_width / 2.0)) y=(number(height / 2.0 + 4.0)) text-anchor="middle" {
                    "Nothing sent yet"
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn stages(counts: [u64; 6]) -> Vec<(&'static str, u64)> {
        FUNNEL_STAGES.iter().zip(counts).map(|(&(label, _), count)| (label, count)).collect()
    }

    #[test]
    fn funnel_bars_are_proportional_with_shares_of_those_targeted() {
        let bars = funnel_bars(&stages([1000, 800, 400, 200, 50, 0]));
        assert_eq!(bars.len(), 6);
        let plot_width = FUNNEL_WIDTH - FUNNEL_LABELS - FUNNEL_VALUES;
        assert!((bars[0].width - plot_width).abs() < 1e-9, "those targeted fill the plot");
        assert!((bars[1].width - 2.0 * bars[2].width).abs() < 1e-9);
        assert_eq!(bars[5].width, 0.0);
        assert_eq!(bars[2].percent, Some(40.0));
        assert_eq!(bars[5].percent, Some(0.0));
        assert!(bars.windows(2).all(|pair| (pair[1].y - pair[0].y - FUNNEL_ROW).abs() < 1e-9), "one row each");
        assert!(bars.iter().all(|bar| bar.x == FUNNEL_LABELS));
    }

    #[test]
    fn an_empty_funnel_has_no_shares_and_says_so() {
        let bars = funnel_bars(&stages([0; 6]));
        assert!(bars.iter().all(|bar| bar.width == 0.0 && bar.percent.is_none()));
        let svg = funnel("A", &stages([0; 6])).into_string();
        assert!(svg.contains("data-testid=\"campaign-funnel\" data-treatment=\"A\""), "{svg}");
        assert!(svg.contains("Nothing sent yet"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(funnel_bars(&[]).is_empty());
    }

    #[test]
    fn the_funnel_labels_each_stage_with_count_and_share() {
        let svg = funnel("B", &stages([1200, 1200, 900, 300, 30, 12])).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 6);
        assert!(svg.contains("data-stage=\"targeted\" data-count=\"1200\""), "{svg}");
        assert!(svg.contains("<title>Opened: 300 (25.0% of those targeted)</title>"), "{svg}");
        assert!(svg.contains(">1,200<"), "counts are grouped");
        assert!(svg.contains(">1.0%</tspan>"), "{svg}");
        assert!(!svg.contains("Nothing sent yet"));
    }

    #[test]
    fn a_later_stage_larger_than_the_first_still_fits() {
        let bars = funnel_bars(&stages([10, 5, 20, 0, 0, 0]));
        let plot_width = FUNNEL_WIDTH - FUNNEL_LABELS - FUNNEL_VALUES;
        assert!(bars.iter().all(|bar| bar.width <= plot_width + 1e-9));
        assert_eq!(bars[2].percent, Some(200.0));
    }

    #[test]
    fn filters_are_checked_as_json_then_as_filters() {
        assert!(parse_filter(EXAMPLE_FILTER).is_ok());
        let not_json = parse_filter("{\"all\": [").unwrap_err();
        assert!(not_json.starts_with("filter: not JSON") && not_json.contains("line 1"), "{not_json}");
        let wrong_op = parse_filter(r#"{"all": [{"trait": "plan", "op": "equals", "value": "pro"}]}"#).unwrap_err();
        assert!(wrong_op.starts_with("filter.all[0].op:"), "{wrong_op}");
    }

    #[test]
    fn pages_escape_what_users_wrote() {
        let at = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
        let segment = EngageObject {
            id: "seg_1".into(),
            kind: ObjectKind::Segment,
            name: "<b>VIP</b>".into(),
            body: json!({"filter": {"trait": "note", "op": "eq", "value": "<script>alert(1)</script>"}}),
            status: "active".into(),
            status_reason: None,
            created_at: at,
            updated_at: at,
        };
        let rows = [SegmentRow { segment: segment.clone(), size: Ok(1234) }];
        let form = SegmentForm { name: "x".into(), filter: "</textarea><script>".into() };
        let list = segments_content(&rows, &form, Some("filter.all[0]: <nope>"), "http://localhost").into_string();
        assert!(list.contains("data-testid=\"segments-table\"") && list.contains("data-testid=\"segment-row\""));
        assert!(list.contains(">1,234</td>"), "{list}");
        assert!(list.contains("&lt;b&gt;VIP&lt;/b&gt;") && !list.contains("<b>VIP"));
        assert!(!list.contains("</textarea><script>") && list.contains("&lt;nope&gt;"));
        let page = segment_content(&segment, &Ok((0, Vec::new()))).into_string();
        assert!(page.contains("Nobody is in this segment yet") && !page.contains("<script>alert"), "{page}");
        let gone = segment_content(&segment, &Err("filter: segment seg_0 does not exist".into())).into_string();
        assert!(gone.contains("cannot be counted") && gone.contains("seg_0"));
    }

    #[test]
    fn text_messages_are_previewed_as_escaped_text() {
        let document = frame_document(None, "Hi <Ada> & co");
        assert!(document.contains("Hi &lt;Ada&gt; &amp; co") && document.starts_with("<!DOCTYPE html>"), "{document}");
        assert_eq!(frame_document(Some("<p>Hi</p>"), "Hi"), "<p>Hi</p>");
    }

    #[test]
    fn schedules_and_delays_read_as_sentences() {
        let at = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(schedule_text(&Schedule::At { at, local_time: false }), "Once, at Jan 1, 2099 00:00 UTC");
        let trigger: Schedule = serde_json::from_value(serde_json::json!({"trigger": {"event": "segment.entered",
            "delay_seconds": 3600, "where": [{"property": "segment_id", "op": "eq", "value": "seg_1"}]}}))
        .unwrap();
        assert_eq!(
            schedule_text(&trigger),
            "1 hour after a customer does “segment.entered”, where segment_id eq \"seg_1\""
        );
        assert_eq!(delay_text(3_600), "1 hour");
        assert_eq!(delay_text(172_800), "2 days");
        assert_eq!(delay_text(90), "90 seconds");
    }
}
