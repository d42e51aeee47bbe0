//! The OpenAPI 3 document, generated from the handlers' annotations. Routes are registered through
//! [`router`] together with their documentation, so a route cannot exist without its entry; the
//! test `openapi_document_is_current` guards the committed `docs/openapi.json` copy, and
//! `openapi_served_document_passes_an_independent_validator` checks the served one with a parser
//! utoipa did not write (CI also runs `openapi-spec-validator` on the committed copy).
//!
//! The error answers every operation shares are reusable responses defined here
//! (`#/components/responses/...`), so each annotation lists its statuses in one line and each status
//! means the same thing everywhere.

use crate::api::{
    agents, bots, calls, channels, conversations, destinations, engage, inbox, ingest, jobs, profiles, rejected, users,
    workspaces,
};
use crate::error::{ErrorBody, ErrorDetail};
use crate::state::AppState;
use axum::Router;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, Object, OneOf, Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Crossline API", description = "Segment-compatible tracking API and the Crossline REST API. Errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code` and a sentence naming the field at fault."),
    modifiers(&SecuritySchemes),
    components(
        schemas(ErrorBody, ErrorDetail),
        responses(
            BadRequest, InvalidEvent, Unauthorized, InvalidWriteKey, WorkspaceOnly, NotFound, PayloadTooLarge,
            UnsupportedEncoding, RateLimited, ConversationBusy, Internal, BodyTimeout, TooManyConnections,
            ConnectionLimit,
        ),
    ),
    tags(
        (name = "tracking", description = "Segment HTTP tracking API"),
        (name = "workspaces", description = "Workspaces and keys"),
        (name = "profiles", description = "Unified customer profiles"),
        (name = "bots", description = "Bot definitions and recognition"),
        (name = "conversations", description = "Conversations with bots on every channel"),
        (name = "agents", description = "The contact centre: agents, and the conversations the bot hands to people"),
        (name = "channels", description = "Channel configuration"),
        (name = "destinations", description = "Event destinations: every event, signed, to other systems"),
        (name = "engagement", description = "Segments, templates, campaigns and the send policy"),
        (name = "jobs", description = "The durable worker's dead letters"),
        (name = "users", description = "Users of the console and the API, with their roles"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("write_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// 400 on the REST API: the body or a query parameter is wrong; the message names the field.
#[derive(ToResponse)]
#[response(
    description = "The request is invalid and nothing was changed. `code`: `invalid_json` (the body is not JSON of the expected shape, or is sent without `Content-Type: application/json`), `missing_field`, `invalid_field` or `invalid_query`; `message` names the field at fault.",
    example = json!({"error": {"code": "missing_field", "message": "text: is required, e.g. {\"text\": \"I lost my card\"}"}})
)]
pub struct BadRequest(pub ErrorBody);

/// 400 on `/v1/*`: the body, or the event of a single call, fails validation.
#[derive(ToResponse)]
#[response(
    description = "The request is invalid and nothing was stored. `code`: `invalid_json`, `missing_field`, `invalid_field`, `missing_identity`, `invalid_identity`, `invalid_encoding` (`Content-Encoding: gzip` on a body that is not gzip), or a profile limit: `too_many_traits`, `trait_too_large`, `traits_too_large`, `too_many_identities`; `message` names the field, e.g. `batch[3].traits.email`.",
    example = json!({"error": {"code": "missing_identity", "message": "body: has neither userId nor anonymousId; every event needs at least one of them"}})
)]
pub struct InvalidEvent(pub ErrorBody);

/// 401 on the REST API.
#[derive(ToResponse)]
#[response(
    description = "`unauthorized`: no `Authorization: Bearer` token (nor console session), or one that is neither a workspace's API key nor the operator token.",
    example = json!({"error": {"code": "unauthorized", "message": "the bearer token is not a valid API key or operator token"}})
)]
pub struct Unauthorized(pub ErrorBody);

/// 401 on `/v1/*`.
#[derive(ToResponse)]
#[response(
    description = "`unauthorized`: no write key (HTTP Basic user name or `writeKey` in the body), or one that is not a workspace's current write key.",
    example = json!({"error": {"code": "unauthorized", "message": "the write key is not valid (it may have been rotated); use the workspace's current write_key"}})
)]
pub struct InvalidWriteKey(pub ErrorBody);

/// 403 on the endpoints that act on one workspace.
#[derive(ToResponse)]
#[response(
    description = "`forbidden`: the caller's role may not do this (roles: admin, marketer, supervisor, agent, viewer; an API key acts as admin, an agent token as agent), or the operator token was sent to an endpoint that acts on one workspace (use that workspace's API key). Or `cross_site_request`: a change authenticated by the console's session cookie came from another site or without the session's CSRF token (send `Authorization: Bearer` instead).",
    example = json!({"error": {"code": "forbidden", "message": "this endpoint acts on one workspace: use that workspace's api_key, not the operator token"}})
)]
pub struct WorkspaceOnly(pub ErrorBody);

/// 404.
#[derive(ToResponse)]
#[response(
    description = "`not_found`: no such resource in the caller's workspace (another workspace's ids are not found either).",
    example = json!({"error": {"code": "not_found", "message": "profile was not found"}})
)]
pub struct NotFound(pub ErrorBody);

/// 413 on `/v1/*`.
#[derive(ToResponse)]
#[response(
    description = "`event_too_large` (an event above 32 KB) or `request_too_large` (a request above 500 KB, after gzip is inflated); nothing was stored.",
    example = json!({"error": {"code": "request_too_large", "message": "body: the request is larger than 512000 bytes; send fewer events per batch"}})
)]
pub struct PayloadTooLarge(pub ErrorBody);

/// 415 on `/v1/*`.
#[derive(ToResponse)]
#[response(
    description = "`unsupported_encoding`: a `Content-Encoding` other than `gzip` (or none).",
    example = json!({"error": {"code": "unsupported_encoding", "message": "Content-Encoding \"br\" is not supported; send the body plain or gzip-compressed"}})
)]
pub struct UnsupportedEncoding(pub ErrorBody);

/// 429 where a rate limit applies.
#[derive(ToResponse)]
#[response(
    description = "`rate_limited`: the customer sends messages to this bot faster than allowed (5 a second after a burst of 10); wait a moment and send again. Or `too_many_connections`: the client's address holds `max_connections_per_ip` busy connections.",
    example = json!({"error": {"code": "rate_limited", "message": "too many messages: at most 5 per second per conversation after a burst of 10; wait a moment and send again"}})
)]
pub struct RateLimited(pub ErrorBody);

/// 503 when a conversation turn could not be taken.
#[derive(ToResponse)]
#[response(
    description = "`conversation_busy`: other nodes kept changing the conversation while the message was handled; nothing was stored, send it again. Or `connection_limit`: the server holds `max_connections` busy connections; try again in a second.",
    example = json!({"error": {"code": "conversation_busy", "message": "the conversation kept changing while this message was handled (several nodes answering at once); send it again"}})
)]
pub struct ConversationBusy(pub ErrorBody);

/// 500.
#[derive(ToResponse)]
#[response(
    description = "`internal` (the server failed, e.g. its storage) or `internal_panic` (a bug was caught); the cause is in the server's log and nothing of the request was stored.",
    example = json!({"error": {"code": "internal", "message": "the server failed; the error is logged, and nothing of the request was stored"}})
)]
pub struct Internal(pub ErrorBody);

/// 408 on every operation with a body (added by [`finish`]).
#[derive(ToResponse)]
#[response(
    description = "`body_timeout`: the body did not arrive in full within `body_timeout_secs` (30 s) of the header; nothing was stored and the connection is closed.",
    example = json!({"error": {"code": "body_timeout", "message": "the request body was not received in time; send it at once after the headers"}})
)]
pub struct BodyTimeout(pub ErrorBody);

/// 429 on every operation without a rate limit of its own (added by [`finish`]).
#[derive(ToResponse)]
#[response(
    description = "`too_many_connections`: the client's address holds `max_connections_per_ip` connections, all busy (docs/operations.md, Connections); the connection is closed.",
    example = json!({"error": {"code": "too_many_connections", "message": "your address has too many connections open; close some and try again"}})
)]
pub struct TooManyConnections(pub ErrorBody);

/// 503 on every operation without a 503 of its own (added by [`finish`]).
#[derive(ToResponse)]
#[response(
    description = "`connection_limit`: the server holds `max_connections` connections, all busy; try again in a second (`Retry-After`).",
    example = json!({"error": {"code": "connection_limit", "message": "the server is at its connection limit; try again in a second"}})
)]
pub struct ConnectionLimit(pub ErrorBody);

/// The connection layer's answers, which any operation can get: 408 (with a body), 429 and 503.
fn add_connection_responses(operation: &mut utoipa::openapi::path::Operation) {
    let responses = &mut operation.responses.responses;
    let shared = |name: &str| RefOr::Ref(utoipa::openapi::Ref::from_response_name(name));
    if operation.request_body.is_some() {
        responses.entry("408".into()).or_insert_with(|| shared("BodyTimeout"));
    }
    responses.entry("429".into()).or_insert_with(|| shared("TooManyConnections"));
    responses.entry("503".into()).or_insert_with(|| shared("ConnectionLimit"));
}

/// The documented routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ingest::identify))
        .routes(routes!(ingest::track))
        .routes(routes!(ingest::page))
        .routes(routes!(ingest::screen))
        .routes(routes!(ingest::group))
        .routes(routes!(ingest::alias))
        .routes(routes!(ingest::batch))
        .routes(routes!(rejected::list_rejected_events))
        .routes(routes!(workspaces::create_workspace, workspaces::list_workspaces))
        .routes(routes!(workspaces::rotate_key))
        .routes(routes!(profiles::list_profiles))
        .routes(routes!(profiles::lookup))
        .routes(routes!(profiles::get_profile, profiles::delete_profile))
        .routes(routes!(profiles::profile_events))
        .routes(routes!(profiles::set_consent))
        .routes(routes!(profiles::add_push_subscription, profiles::list_push_subscriptions))
        .routes(routes!(calls::place_call))
        .routes(routes!(calls::get_call))
        .routes(routes!(profiles::in_app_messages))
        .routes(routes!(profiles::in_app_event))
        .routes(routes!(bots::list_bots))
        .routes(routes!(bots::put_bot, bots::get_bot))
        .routes(routes!(bots::recognize))
        .routes(routes!(bots::missed))
        .routes(routes!(conversations::post_message))
        .routes(routes!(agents::create_agent, agents::list_agents))
        .routes(routes!(agents::set_status))
        .routes(routes!(agents::update_agent, agents::delete_agent))
        .routes(routes!(agents::list_conversations))
        .routes(routes!(agents::get_conversation))
        .routes(routes!(agents::customer))
        .routes(routes!(agents::assign))
        .routes(routes!(agents::post_agent_message))
        .routes(routes!(agents::transfer))
        .routes(routes!(agents::resolve))
        .routes(routes!(agents::snooze))
        .routes(routes!(agents::hand_back))
        .routes(routes!(agents::put_queue, agents::delete_queue))
        .routes(routes!(agents::list_queues))
        .routes(routes!(inbox::add_note))
        .routes(routes!(inbox::typing))
        .routes(routes!(inbox::conversation_canned_replies))
        .routes(routes!(inbox::list_canned_replies))
        .routes(routes!(inbox::put_canned_reply, inbox::delete_canned_reply))
        .routes(routes!(users::create_user, users::list_users))
        .routes(routes!(users::change_user, users::delete_user))
        .routes(routes!(users::reinvite_user))
        .routes(routes!(channels::put_channel, channels::get_channel))
        .routes(routes!(destinations::list_destinations))
        .routes(routes!(destinations::put_destination, destinations::delete_destination))
        .routes(routes!(destinations::rotate_secret))
        .routes(routes!(destinations::list_failures))
        .routes(routes!(destinations::replay_failure))
        .routes(routes!(jobs::list_dead_jobs))
        .routes(routes!(jobs::replay_job))
        .routes(routes!(engage::create_segment, engage::list_segments))
        .routes(routes!(engage::get_segment, engage::delete_segment))
        .routes(routes!(engage::segment_size))
        .routes(routes!(engage::segment_members))
        .routes(routes!(engage::import_segment))
        .routes(routes!(engage::create_template, engage::list_templates))
        .routes(routes!(engage::get_template, engage::delete_template))
        .routes(routes!(engage::preview_template))
        .routes(routes!(engage::test_template))
        .routes(routes!(engage::create_campaign, engage::list_campaigns))
        .routes(routes!(engage::get_campaign))
        .routes(routes!(engage::campaign_action))
        .routes(routes!(engage::put_messaging_settings, engage::get_messaging_settings))
}

/// The document as pretty JSON (what `/api/openapi.json` serves).
pub fn document_json() -> String {
    let (_, openapi) = router().split_for_parts();
    finish(openapi).to_pretty_json().expect("the OpenAPI document serialises")
}

/// `/api/openapi.json` and the Swagger UI at `/api/docs`, served from assets inside the binary.
pub fn docs(openapi: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", finish(openapi)))
}

/// What the document needs once every route has added its paths and schemas (utoipa's modifiers run
/// before the routes are merged, so this cannot be one).
///
/// OpenAPI 3.1 writes a nullable type as a list, `"type": ["string", "null"]`. Tools built on the 3.0
/// model reject that list (the `openapiv3` crate behind Rust client generators, older generators),
/// so each such schema is written as the equivalent `"oneOf": [{"type": "string"}, {"type": "null"}]`,
/// the form utoipa already uses for a nullable reference, which both generations read.
fn finish(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in openapi.paths.paths.values_mut() {
        for parameter in item.parameters.iter_mut().flatten() {
            parameter.schema.iter_mut().for_each(type_lists_as_one_of);
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            add_connection_responses(operation);
            for parameter in operation.parameters.iter_mut().flatten() {
                parameter.schema.iter_mut().for_each(type_lists_as_one_of);
            }
            for content in operation.request_body.iter_mut().flat_map(|body| body.content.values_mut()) {
                content.schema.iter_mut().for_each(type_lists_as_one_of);
            }
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    for content in response.content.values_mut() {
                        content.schema.iter_mut().for_each(type_lists_as_one_of);
                    }
                }
            }
        }
    }
    if let Some(components) = openapi.components.as_mut() {
        components.schemas.values_mut().for_each(type_lists_as_one_of);
        for response in components.responses.values_mut() {
            if let RefOr::T(response) = response {
                for content in response.content.values_mut() {
                    content.schema.iter_mut().for_each(type_lists_as_one_of);
                }
            }
        }
    }
    openapi
}

/// Rewrite a schema and every schema inside it (see [`finish`]).
fn type_lists_as_one_of(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else { return };
    match schema {
        Schema::Object(object) => {
            object.properties.values_mut().for_each(type_lists_as_one_of);
            if let Some(additional) = object.additional_properties.as_deref_mut()
                && let AdditionalProperties::RefOr(additional) = additional
            {
                type_lists_as_one_of(additional);
            }
            if let SchemaType::Array(types) = &object.schema_type {
                let types = types.clone();
                let mut one_of = OneOf::new();
                // What describes the value as a whole stays outside; the constraints go with each type.
                one_of.description = object.description.take();
                one_of.title = object.title.take();
                one_of.default = object.default.take();
                one_of.examples = std::mem::take(&mut object.examples);
                one_of.items = types
                    .into_iter()
                    .map(|kind| {
                        let branch = if kind == Type::Null {
                            Object::with_type(Type::Null)
                        } else {
                            let mut branch = object.clone();
                            branch.schema_type = SchemaType::Type(kind);
                            branch
                        };
                        RefOr::T(Schema::Object(branch))
                    })
                    .collect();
                *schema = Schema::OneOf(one_of);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                type_lists_as_one_of(items);
            }
            if let SchemaType::Array(types) = &array.schema_type {
                let nullable = types.contains(&Type::Null);
                array.schema_type = SchemaType::Type(Type::Array);
                if nullable {
                    let mut one_of = OneOf::new();
                    one_of.description = array.description.take();
                    one_of.title = array.title.take();
                    one_of.default = array.default.take();
                    one_of.items = vec![
                        RefOr::T(Schema::Array(array.clone())),
                        RefOr::T(Schema::Object(Object::with_type(Type::Null))),
                    ];
                    *schema = Schema::OneOf(one_of);
                }
            }
        }
        Schema::OneOf(one_of) => one_of.items.iter_mut().for_each(type_lists_as_one_of),
        Schema::AllOf(all_of) => all_of.items.iter_mut().for_each(type_lists_as_one_of),
        Schema::AnyOf(any_of) => any_of.items.iter_mut().for_each(type_lists_as_one_of),
        _ => {}
    }
}
