//! The OpenAPI 3 document, generated from the handlers' annotations. Routes are registered through
//! [`router`] together with their documentation, so a route cannot exist without its entry; the
//! test `openapi_document_is_current` guards the committed `docs/openapi.json` copy.

use crate::api::{bots, channels, conversations, ingest, profiles, rejected, workspaces};
use crate::state::AppState;
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Crossline API", description = "Segment-compatible tracking API and the Crossline REST API. Errors are `{\"error\": {\"code\", \"message\"}}`."),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tracking", description = "Segment HTTP tracking API"),
        (name = "workspaces", description = "Workspaces and keys"),
        (name = "profiles", description = "Unified customer profiles"),
        (name = "bots", description = "Bot definitions and recognition"),
        (name = "conversations", description = "Conversations with bots on every channel"),
        (name = "channels", description = "Channel configuration"),
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
        .routes(routes!(bots::list_bots))
        .routes(routes!(bots::put_bot, bots::get_bot))
        .routes(routes!(bots::recognize))
        .routes(routes!(bots::missed))
        .routes(routes!(conversations::post_message))
        .routes(routes!(channels::put_channel, channels::get_channel))
}

/// The document as pretty JSON (what `/api/openapi.json` serves).
pub fn document_json() -> String {
    let (_, openapi) = router().split_for_parts();
    openapi.to_pretty_json().expect("the OpenAPI document serialises")
}

/// `/api/openapi.json` and the Swagger UI at `/api/docs`, served from assets inside the binary.
pub fn docs(openapi: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi))
}
