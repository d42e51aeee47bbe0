//! Bots: definitions (`PUT/GET /api/v1/bots/{name}`, versioned) and recognition
//! (`POST /api/v1/bots/{name}/recognize`).
//!
//! A bot is trained when it is stored (on the blocking pool, never on the async runtime) and the
//! new model replaces the old one on this node at once. Other nodes, and this one after a restart,
//! see the new version in the store on their next request and train it then.

use crate::auth::WorkspaceCaller;
use crate::error::ErrorCode;
use crate::error::{ApiError, ApiResult};
use crate::error::{json_rejection, query_rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use crossline_store::{StoredBot, Workspace};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Longest text `recognize` accepts.
pub const MAX_TEXT_CHARS: usize = 10_000;

pub use crossline_engine::LiveBot;

/// The latest version of a bot, parsed and trained (training it here if this node has not yet).
pub async fn live_bot(state: &AppState, workspace: &Workspace, name: &str) -> ApiResult<Arc<LiveBot>> {
    bot_model(state, workspace, name, None).await
}

/// A version of a bot (the latest when None) and its trained model.
pub async fn bot_model(
    state: &AppState,
    workspace: &Workspace,
    name: &str,
    version: Option<i64>,
) -> ApiResult<Arc<LiveBot>> {
    Ok(state.bots.live(&workspace.id, name, version).await?)
}

/// A stored bot version.
#[derive(Serialize, ToSchema)]
pub struct BotView {
    /// The bot's name.
    pub name: String,
    /// Its version: 1 for the first PUT, then one more each time.
    pub version: i64,
    /// When this version was stored.
    pub created_at: DateTime<Utc>,
    /// The definition.
    #[schema(value_type = Object)]
    pub definition: Value,
}

impl From<StoredBot> for BotView {
    fn from(bot: StoredBot) -> Self {
        let mut definition = bot.definition;
        // The webhook secret signs requests; like every secret, it is never returned.
        if let Some(object) = definition.as_object_mut()
            && object.remove("webhook_secret").is_some()
        {
            object.insert("webhook_secret_set".into(), Value::Bool(true));
        }
        BotView { name: bot.name, version: bot.version, created_at: bot.created_at, definition }
    }
}

/// A bot in the list.
#[derive(Serialize, ToSchema)]
pub struct BotSummary {
    /// Name.
    pub name: String,
    /// Latest version.
    pub version: i64,
    /// When the latest version was stored.
    pub created_at: DateTime<Utc>,
    /// Number of intents.
    pub intents: usize,
}

/// The bots of a workspace.
#[derive(Serialize, ToSchema)]
pub struct BotList {
    /// By name.
    pub bots: Vec<BotSummary>,
}

/// Which version to show.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionParams {
    /// A version number; the latest when absent.
    #[param(nullable = false, minimum = 1)]
    pub version: Option<i64>,
}

fn check_name(name: &str) -> ApiResult<()> {
    if crossline_bot::is_valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(ErrorCode::InvalidField, "name: use 1–64 letters, digits, _ or - in the bot's name"))
    }
}

/// Create or update a bot; answered once it is trained and live.
#[utoipa::path(put, path = "/api/v1/bots/{name}", tag = "bots",
    description = "The bot definition of the contract (`locale`, `greeting`, `fallback`, `intents` with `utterances`, `slots`, `confirmation`, `fulfillment`, and `slot_types`). Every PUT stores a new version; errors name the faulty field, e.g. `intents[0].slots[1].type`.",
    params(("name" = String, Path, description = "Bot name: 1–64 letters, digits, `_` or `-`")),
    request_body(content = Object, content_type = "application/json", description = "The bot definition."),
    responses((status = 200, description = "The new version, trained and live.", body = BotView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn put_bot(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<BotView>> {
    check_name(&name)?;
    let Json(definition) = body.map_err(json_rejection)?;
    let bot = state.bots.put(&workspace.id, &name, &definition).await?;
    let view = BotView::from(bot.stored.clone());
    Ok(Json(view))
}

/// A bot's definition (the latest version, or `?version=N`).
#[utoipa::path(get, path = "/api/v1/bots/{name}", tag = "bots",
    params(("name" = String, Path, description = "Bot name"), VersionParams),
    responses((status = 200, description = "The bot version (secrets left out).", body = BotView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_bot(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
    params: Result<Query<VersionParams>, QueryRejection>,
) -> ApiResult<Json<BotView>> {
    let Query(params) = params.map_err(query_rejection)?;
    let stored =
        state.store.bot(&workspace.id, &name, params.version).await?.ok_or_else(|| ApiError::not_found("bot"))?;
    Ok(Json(stored.into()))
}

/// The workspace's bots.
#[utoipa::path(get, path = "/api/v1/bots", tag = "bots",
    responses((status = 200, description = "The workspace's bots, by name.", body = BotList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_bots(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
) -> ApiResult<Json<BotList>> {
    let bots = state.store.bots(&workspace.id).await?;
    Ok(Json(BotList {
        bots: bots
            .into_iter()
            .map(|bot| BotSummary {
                intents: bot.definition.get("intents").and_then(Value::as_array).map_or(0, Vec::len),
                name: bot.name,
                version: bot.version,
                created_at: bot.created_at,
            })
            .collect(),
    }))
}

/// How many missed utterances to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MissedParams {
    /// At most this many (1–1000, default 100).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A message the bot did not understand.
#[derive(Serialize, ToSchema)]
pub struct MissedView {
    /// What the customer said.
    pub text: String,
    /// The channel.
    pub channel: String,
    /// The conversation.
    pub conversation_id: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Missed utterances, newest first.
#[derive(Serialize, ToSchema)]
pub struct MissedList {
    /// The messages.
    pub missed: Vec<MissedView>,
}

/// Messages the bot did not understand, newest first: what to add as utterances next.
#[utoipa::path(get, path = "/api/v1/bots/{name}/missed", tag = "bots",
    params(("name" = String, Path, description = "Bot name"), MissedParams),
    responses((status = 200, description = "Missed utterances, newest first.", body = MissedList),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn missed(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
    params: Result<Query<MissedParams>, QueryRejection>,
) -> ApiResult<Json<MissedList>> {
    let Query(params) = params.map_err(query_rejection)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("limit: {limit} is out of range; use 1 to 1000"),
        ));
    }
    if state.store.bot(&workspace.id, &name, None).await?.is_none() {
        return Err(ApiError::not_found("bot"));
    }
    let missed = state.store.missed_utterances(&workspace.id, &name, limit).await?;
    Ok(Json(MissedList {
        missed: missed
            .into_iter()
            .map(|item| MissedView {
                text: item.text,
                channel: item.channel,
                conversation_id: item.conversation_id,
                created_at: item.created_at,
            })
            .collect(),
    }))
}

/// What to recognise.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecognizeRequest {
    /// The customer's message (at most 10,000 characters). Required; `Option` only so that a missing
    /// text gets a sentence naming it.
    #[schema(required = true, nullable = false, max_length = 10000, example = "I lost my card")]
    pub text: Option<String>,
    /// The moment relative expressions resolve against (RFC 3339); now when absent.
    #[schema(nullable = false, format = DateTime)]
    pub now: Option<String>,
    /// The customer's IANA time zone; the workspace's when absent.
    #[schema(nullable = false, example = "Europe/Paris")]
    pub time_zone: Option<String>,
}

/// What the bot understood in a message: the answer of recognize (built as JSON by the handler;
/// this type describes it for the API document).
#[derive(ToSchema)]
pub struct RecognitionView {
    /// The intent, or null when the message is out of scope.
    #[schema(required = true)]
    pub intent: Option<ScoredIntentView>,
    /// The next most likely intents (up to three), most likely first.
    pub alternatives: Vec<ScoredIntentView>,
    /// Filled slots of the intent, by slot name.
    pub slots: std::collections::BTreeMap<String, SlotView>,
    /// Sentiment of the message.
    pub sentiment: SentimentView,
    /// Detected language: ISO 639-1 code where one exists (`en`), `und` when undetermined.
    pub language: String,
    /// The language detector's confidence in `[0, 1]`.
    pub language_confidence: f64,
    /// The bot version that answered.
    pub bot_version: i64,
}

/// An intent with its probability.
#[derive(ToSchema)]
pub struct ScoredIntentView {
    /// Intent name.
    pub name: String,
    /// Calibrated probability in `[0, 1]`.
    pub confidence: f32,
}

/// A filled slot.
#[derive(ToSchema)]
pub struct SlotView {
    /// The value in the contract's format (a date, a number, an email, a slot type's value, ...).
    #[schema(value_type = Value)]
    pub value: Value,
    /// The text it was read from, as typed.
    pub text: String,
}

/// Sentiment of a message.
#[derive(ToSchema)]
pub struct SentimentView {
    /// VADER compound score in `[-1, 1]`.
    pub score: f64,
    /// `positive` (score ≥ 0.05), `negative` (≤ -0.05) or `neutral`.
    pub label: String,
}

/// Recognise intent, slots, sentiment and language in a message.
#[utoipa::path(post, path = "/api/v1/bots/{name}/recognize", tag = "bots",
    description = "Answers `{\"intent\": {\"name\", \"confidence\"} | null, \"alternatives\", \"slots\": {NAME: {\"value\", \"text\"}}, \"sentiment\": {\"score\", \"label\"}, \"language\", \"language_confidence\", \"bot_version\"}`; `intent` is null when the text is out of scope.",
    params(("name" = String, Path, description = "Bot name")),
    request_body = RecognizeRequest,
    responses((status = 200, description = "What the bot understood.", body = RecognitionView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn recognize(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
    body: Result<Json<RecognizeRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(request) = body.map_err(json_rejection)?;
    let text = request.text.ok_or_else(|| {
        ApiError::bad_request(ErrorCode::MissingField, "text: is required, e.g. {\"text\": \"I lost my card\"}")
    })?;
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("text: is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    let now = match &request.now {
        Some(raw) => DateTime::parse_from_rfc3339(raw).map(|time| time.with_timezone(&Utc)).map_err(|_| {
            ApiError::bad_request(
                ErrorCode::InvalidField,
                format!("now: \"{raw}\" is not an RFC 3339 time such as 2026-11-23T10:15:00Z"),
            )
        })?,
        None => Utc::now(),
    };
    let zone_name = request.time_zone.as_deref().unwrap_or(&workspace.time_zone);
    let time_zone: chrono_tz::Tz = zone_name.parse().map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("time_zone: \"{zone_name}\" is not an IANA time zone such as Europe/Paris"),
        )
    })?;
    let bot = live_bot(&state, &workspace, &name).await?;
    let context = crossline_nlu::RecognizeContext { now, time_zone, default_region: workspace.default_region.clone() };
    let recognition = bot.model.recognize(&text, &context);
    let slots: Map<String, Value> = recognition
        .slots
        .iter()
        .map(|(name, slot)| (name.clone(), serde_json::json!({"value": slot.value, "text": slot.text})))
        .collect();
    Ok(Json(serde_json::json!({
        "intent": recognition.intent,
        "alternatives": recognition.alternatives,
        "slots": slots,
        "sentiment": recognition.sentiment,
        "language": recognition.language.code,
        "language_confidence": recognition.language.confidence,
        "bot_version": bot.stored.version,
    })))
}
