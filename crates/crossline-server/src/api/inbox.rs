//! What helps people answer: internal notes on a conversation (for colleagues, never the customer)
//! and canned replies (Liquid, rendered for the conversation's customer).

use crate::auth::{PeopleCaller, WorkspaceCaller};
use crate::error::{ApiError, ApiResult, ErrorCode, json_rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use crossline_engage::template::{self, RenderContext, TemplateSource};
use crossline_store::Workspace;
use crossline_store::agents::Note;
use crossline_store::engage::{EngageObject, ObjectKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Notes a conversation's view carries at most (the newest).
pub const NOTES_SHOWN: usize = 200;
/// Canned replies a workspace keeps at most.
pub const MAX_CANNED_REPLIES: usize = 500;
/// The longest canned reply.
pub const MAX_CANNED_CHARS: usize = 4_000;

/// A note to leave.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    /// What colleagues should know (1–4,000 characters).
    pub text: String,
}

/// An internal note.
#[derive(Serialize, ToSchema)]
pub struct NoteView {
    /// `nte_...`.
    pub id: String,
    /// Who wrote it: an agent's or user's id, or null for the API key.
    pub author_id: Option<String>,
    /// Their name.
    pub author_name: String,
    /// What they wrote.
    pub text: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<Note> for NoteView {
    fn from(note: Note) -> Self {
        NoteView {
            id: note.id,
            author_id: note.author_id,
            author_name: note.author_name,
            text: note.text,
            created_at: note.created_at,
        }
    }
}

/// A conversation's notes, oldest first.
pub async fn notes_of(state: &AppState, workspace_id: &str, conversation_id: &str) -> ApiResult<Vec<NoteView>> {
    Ok(state.store.notes(workspace_id, conversation_id, NOTES_SHOWN).await?.into_iter().map(NoteView::from).collect())
}

/// Leave an internal note.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/notes", tag = "agents",
    description = "A note for colleagues on the conversation: shown in the inbox beside the transcript, never sent or shown to the customer (kept apart from the messages), erased with the customer.",
    params(("id" = String, Path, description = "The conversation")),
    request_body(content = NewNote, example = json!({"text": "Called the branch: the card is frozen."})),
    responses((status = 201, description = "Kept.", body = NoteView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn add_note(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
    body: Result<Json<NewNote>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<NoteView>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let author = caller.author();
    let author = author.as_ref().map(|(id, name)| (id.as_str(), name.as_str()));
    let note = state.contact_centre.add_note(&caller.workspace.id, &id, author, &body.text, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(NoteView::from(note))))
}

/// Tell the customer the agent is typing.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/typing", tag = "agents",
    description = "The customer's chat page shows that someone is typing (for a few seconds; the inbox sends it every few seconds while the agent types). Nothing is stored. The agent must have the conversation.",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 204, description = "Told."),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "`already_assigned`: the agent does not have the conversation.", body = crate::error::ErrorBody),
              (status = 429, description = "`rate_limited`: more than the sender's message allowance.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn typing(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let sender = caller.author().map_or_else(|| caller.workspace.id.clone(), |(id, _)| id);
    if !state
        .limits
        .agent_messages
        .allow(&format!("typing:{}:{sender}", caller.workspace.id), std::time::Instant::now())
    {
        return Err(ApiError::rate_limited("too many typing notices"));
    }
    let conversation = state.contact_centre.conversation(&caller.workspace.id, &id).await?;
    crossline_engine::agents::may_act(&conversation, caller.agent.as_ref())?;
    crossline_engine::agents::announce_typing(&state.bus, &caller.workspace.id, &conversation, "agent").await;
    Ok(StatusCode::NO_CONTENT)
}

/// A canned reply as saved.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CannedReply {
    /// The reply (Liquid: `{{ profile.traits.first_name | default: "there" }}`), 1–4,000 characters.
    pub text: String,
}

/// A canned reply with its name.
#[derive(Serialize, ToSchema)]
pub struct CannedReplyView {
    /// Its name (letters, digits, `_`, `-`).
    pub name: String,
    /// The text: as saved, or rendered for a conversation's customer.
    pub text: String,
}

/// The workspace's canned replies.
#[derive(Serialize, ToSchema)]
pub struct CannedReplyList {
    /// By name.
    pub canned_replies: Vec<CannedReplyView>,
}

fn compile(text: &str) -> ApiResult<template::CompiledTemplate> {
    let source = TemplateSource { channel: "sms".into(), body: text.to_owned(), ..Default::default() };
    template::compile(&source).map_err(|err| {
        ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("text: {}", err.to_string().trim_start_matches("body: ")),
        )
    })
}

async fn canned(state: &AppState, workspace: &Workspace) -> ApiResult<Vec<EngageObject>> {
    let mut replies = state.store.objects(&workspace.id, ObjectKind::CannedReply).await?;
    replies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(replies)
}

fn text_of(object: &EngageObject) -> String {
    object.body.get("text").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned()
}

/// Save a canned reply.
#[utoipa::path(put, path = "/api/v1/canned-replies/{name}", tag = "agents",
    description = "A reply agents pick in the inbox and edit before sending; Liquid, rendered for the conversation's customer (`{{ profile.traits.first_name }}`). A Liquid fault is refused naming its line and column.",
    params(("name" = String, Path, description = "The reply's name (letters, digits, `_`, `-`)")),
    request_body(content = CannedReply, example = json!({"text": "Hi {{ profile.traits.first_name | default: \"there\" }}, thanks for waiting."})),
    responses((status = 200, description = "Saved.", body = CannedReplyView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn put_canned_reply(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
    body: Result<Json<CannedReply>, JsonRejection>,
) -> ApiResult<Json<CannedReplyView>> {
    if !crossline_engine::agents::valid_tag(&name) {
        return Err(ApiError::bad_request(ErrorCode::InvalidField, "name: use 1-64 letters, digits, _ or -"));
    }
    let Json(body) = body.map_err(json_rejection)?;
    if body.text.trim().is_empty() || body.text.chars().count() > MAX_CANNED_CHARS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("text: write the reply (1-{MAX_CANNED_CHARS} characters)"),
        ));
    }
    compile(&body.text)?;
    let existing = canned(&state, &workspace).await?;
    let previous = existing.iter().find(|object| object.name == name);
    if previous.is_none() && existing.len() >= MAX_CANNED_REPLIES {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("name: a workspace keeps at most {MAX_CANNED_REPLIES} canned replies; delete one first"),
        ));
    }
    let now = Utc::now();
    let object = EngageObject {
        id: previous.map_or_else(|| crossline_core::ids::new_id("cnr"), |object| object.id.clone()),
        kind: ObjectKind::CannedReply,
        name: name.clone(),
        body: serde_json::json!({"text": body.text}),
        status: "active".into(),
        status_reason: None,
        created_at: previous.map_or(now, |object| object.created_at),
        updated_at: now,
    };
    state.store.put_object(&workspace.id, &object).await?;
    Ok(Json(CannedReplyView { name, text: body.text }))
}

/// List canned replies.
#[utoipa::path(get, path = "/api/v1/canned-replies", tag = "agents",
    responses((status = 200, description = "The workspace's canned replies as saved, by name.", body = CannedReplyList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_canned_replies(
    State(state): State<AppState>,
    caller: PeopleCaller,
) -> ApiResult<Json<CannedReplyList>> {
    let canned_replies = canned(&state, &caller.workspace)
        .await?
        .iter()
        .map(|object| CannedReplyView { name: object.name.clone(), text: text_of(object) })
        .collect();
    Ok(Json(CannedReplyList { canned_replies }))
}

/// Delete a canned reply.
#[utoipa::path(delete, path = "/api/v1/canned-replies/{name}", tag = "agents",
    params(("name" = String, Path, description = "The reply's name")),
    responses((status = 204, description = "Deleted."),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn delete_canned_reply(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let existing = canned(&state, &workspace).await?;
    let Some(object) = existing.iter().find(|object| object.name == name) else {
        return Err(ApiError::not_found("canned reply"));
    };
    state.store.delete_object(&workspace.id, ObjectKind::CannedReply, &object.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The canned replies, rendered for a conversation's customer.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/canned-replies", tag = "agents",
    description = "Every canned reply rendered for this conversation's customer (their traits fill the Liquid); a reply that fails to render for them is left out.",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, description = "The replies, by name.", body = CannedReplyList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn conversation_canned_replies(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<CannedReplyList>> {
    let conversation = state.contact_centre.conversation(&caller.workspace.id, &id).await?;
    let (profile, zone) =
        crate::api::engage::rendered_for(&state, &caller.workspace, Some(&conversation.profile_id)).await?;
    let context = RenderContext { profile: &profile, event: None, unsubscribe_url: "", time_zone: zone };
    let canned_replies = canned(&state, &caller.workspace)
        .await?
        .iter()
        .filter_map(|object| {
            let rendered = compile(&text_of(object)).ok()?.render(&context).ok()?;
            Some(CannedReplyView { name: object.name.clone(), text: rendered.text })
        })
        .collect();
    Ok(Json(CannedReplyList { canned_replies }))
}
