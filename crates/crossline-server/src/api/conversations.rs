//! The generic REST channel, `POST /api/v1/conversations/messages`: parse and check the message,
//! hand it to the conversation engine ([`crossline_engine::Conversations`]), render its outcome.

use crate::auth::WorkspaceCaller;
use crate::error::ErrorCode;
use crate::error::json_rejection;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use chrono::Utc;
use crossline_core::consent::is_valid_channel_name;
use crossline_core::{Identity, IdentityKind};
use crossline_engine::Turn;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest customer message accepted.
pub const MAX_MESSAGE_CHARS: usize = 4_000;

/// Who sent a message.
#[derive(Deserialize, ToSchema)]
pub struct From {
    /// Identity kind: `user_id`, `email`, `phone`, `anonymous_id`, ...
    pub kind: String,
    /// Its value (normalised as at ingestion).
    pub value: String,
}

/// A customer message on the REST channel.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundMessage {
    /// The bot's name. `bot`, `from` and `text` are required; they are `Option`s only so that a
    /// missing one gets a sentence naming it.
    #[schema(required = true, nullable = false)]
    pub bot: Option<String>,
    /// The customer.
    #[schema(required = true, nullable = false)]
    pub from: Option<From>,
    /// What they said (not empty, at most 4,000 characters).
    #[schema(required = true, nullable = false, min_length = 1, max_length = 4000)]
    pub text: Option<String>,
    /// The channel to record the message under (`rest` by default): a lower-case channel name.
    #[schema(nullable = false)]
    pub channel: Option<String>,
}

/// One reply.
#[derive(Serialize, ToSchema)]
pub struct Reply {
    /// The text.
    pub text: String,
    /// Answers the customer can tap (on the last reply of a turn only; absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quick_replies: Vec<String>,
}

/// The bot's answer.
#[derive(Serialize, ToSchema)]
pub struct TurnAnswer {
    /// The conversation the message belongs to.
    pub conversation_id: String,
    /// The replies, in order.
    pub replies: Vec<Reply>,
    /// `bot`, `queued`, `assigned` or `resolved`.
    pub status: String,
}

impl std::convert::From<crossline_engine::TurnOutcome> for TurnAnswer {
    fn from(outcome: crossline_engine::TurnOutcome) -> Self {
        TurnAnswer {
            conversation_id: outcome.conversation_id,
            replies: outcome
                .replies
                .into_iter()
                .map(|reply| Reply { text: reply.text, quick_replies: reply.quick_replies })
                .collect(),
            status: outcome.status.as_str().to_owned(),
        }
    }
}

/// Send a customer message to a bot over the generic REST channel.
#[utoipa::path(post, path = "/api/v1/conversations/messages", tag = "conversations",
    description = "`{\"bot\", \"from\": {\"kind\", \"value\"}, \"text\", \"channel\"?}` → `{\"conversation_id\", \"replies\": [{\"text\", \"quick_replies\"?}], \"status\"}` (`quick_replies`, on the last reply, are answers the customer can tap: yes/no, a small slot type's values, the bot's `suggestions`). The same customer reaching the same bot on another channel continues the open conversation (idle timeout 30 minutes by default).",
    request_body = InboundMessage,
    responses((status = 200, description = "The bot's replies.", body = TurnAnswer),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, description = "`not_found`: no bot of that name in the workspace.", body = crate::error::ErrorBody),
              (status = 429, response = crate::openapi::RateLimited),
              (status = 500, response = crate::openapi::Internal),
              (status = 503, response = crate::openapi::ConversationBusy)),
    security(("bearer" = [])))]
pub async fn post_message(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    body: Result<Json<InboundMessage>, JsonRejection>,
) -> ApiResult<Json<TurnAnswer>> {
    let Json(message) = body.map_err(json_rejection)?;
    let bot = message
        .bot
        .ok_or_else(|| ApiError::bad_request(ErrorCode::MissingField, "bot: is required, the bot's name"))?;
    let from = message.from.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::MissingField,
            "from: is required, e.g. {\"kind\": \"phone\", \"value\": \"+14155550123\"}",
        )
    })?;
    let kind: IdentityKind = from.kind.parse().map_err(|err: crossline_core::IdentityError| {
        ApiError::bad_request(ErrorCode::InvalidField, format!("from.kind: {err}"))
    })?;
    let identity = Identity::parse(kind, &from.value, &workspace.default_region)
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, format!("from.value: {err}")))?;
    let text = message.text.ok_or_else(|| ApiError::bad_request(ErrorCode::MissingField, "text: is required"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(ErrorCode::InvalidField, "text: is empty"));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("text: is longer than {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    let channel = message.channel.unwrap_or_else(|| "rest".into());
    if !is_valid_channel_name(&channel) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "channel: use a lower-case channel name such as rest, chat or sms",
        ));
    }
    let turn = Turn {
        bot: &bot,
        from: identity,
        text: &text,
        channel: &channel,
        now: Utc::now(),
        message_id: None,
        start: None,
    };
    let outcome = state.conversations.converse(&workspace, turn).await?;
    Ok(Json(outcome.into()))
}
