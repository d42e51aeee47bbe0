//! The web console: server-rendered HTML (maud), a little hand-written CSS and JavaScript embedded
//! in the binary, charts drawn on the server as SVG.
//!
//! Routes:
//! - `GET /login`, `POST /login`, `POST /logout`: sign in with email and password (users), or the
//!   operator token, a workspace API key or an agent's token; a server-side session rides in the
//!   `crossline_session` cookie. Roles gate every page ([`crate::roles`]); every form that changes
//!   something carries the session's CSRF token ([`csrf`]).
//! - `GET /`: the workspace overview (or, for an operator who has not chosen, the workspace list).
//! - `GET /workspaces`: the operator's workspace list; `?workspace=ID` on any page chooses one.
//! - `GET /profiles?q=&after=`: profile search and paged list.
//! - `GET /profiles/{id}`: the customer 360 page.
//! - `GET /rejected?before=`: events of batches that failed validation, newest first.
//! - `GET /bots`, `GET /bots/{name}`: each bot's intents, versions and missed utterances.
//! - `GET /segments`, `POST /segments` (the builder form), `GET /segments/{id}`: segments with
//!   their sizes counted live, and a segment's filter and first members.
//! - `GET /templates`, `GET /templates/{id}`, `POST /templates/{id}` (save),
//!   `POST /templates/preview` (JSON, for the editor's live preview), `POST /templates/{id}/test`
//!   (a test send).
//! - `GET /campaigns`, `GET /campaigns/{id}`, `POST /campaigns/{id}/{pause|resume|cancel}`:
//!   campaigns with their status, results and a funnel per treatment.
//! - `GET /channels`, `POST /channels/smtp`, `POST /channels/twilio`, `POST /settings/messaging`:
//!   the SMTP server, the Twilio account and the messaging settings (quiet hours, frequency cap),
//!   secrets never shown.
//! - `GET /inbox`, `GET /inbox/ws`: the agent inbox and its live notices (an agent's session may
//!   open these and nothing else).
//! - `GET /users`, `POST /users` (invite), `POST /users/{id}` (role), `POST /users/{id}/invite`
//!   (a new link), `POST /users/{id}/remove`: users and their roles, for admins.
//! - `GET /invite/{token}`, `POST /invite/{token}`: an invited person sets a password and is signed in.
//! - `GET /supervisor`: the contact centre now — queues, agents, SLA breaches, CSAT, containment.
//! - `GET`/`POST /supervisor/agents/{id}`: an agent's skills, capacity, phone and calls.
//! - `GET /assets/{name}`: embedded CSS, JavaScript and icon, cacheable for a year.
//!
//! Every page but `/login` and the assets redirects a visitor without a valid session to `/login`.
//!
//! **Invariant:** handlers read through [`crossline_store::Store`]; besides its own cookies the
//! console changes only engagement definitions (creating a segment, saving a template, pausing,
//! resuming or cancelling a campaign) and the workspace's email, SMS and messaging settings, with
//! the same checks as the REST API, and only on a POST that the [`session::Session`] extractor
//! accepted as coming from the console's own pages.

pub mod agents;
pub mod assets;
pub mod bots;
pub mod channels;
pub mod chart;
pub mod csrf;
pub mod engage;
pub mod error;
pub mod inbox;
pub mod layout;
pub mod login;
pub mod overview;
pub mod profiles;
pub mod rejected;
pub mod session;
pub mod supervisor;
pub mod url;
pub mod users;

#[cfg(test)]
mod snapshot;
#[cfg(test)]
mod tests;

use crate::state::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::overview))
        .route("/workspaces", get(overview::workspaces))
        .route("/profiles", get(profiles::list))
        .route("/profiles/{id}", get(profiles::show))
        .route("/rejected", get(rejected::list))
        .route("/inbox", get(inbox::page))
        .route("/inbox/ws", get(inbox::socket))
        .route("/bots", get(bots::list))
        .route("/bots/{name}", get(bots::show))
        .route("/segments", get(engage::segment_list).post(engage::segment_create))
        .route("/segments/{id}", get(engage::segment_show))
        .route("/templates", get(engage::template_list))
        .route("/templates/preview", post(engage::template_preview))
        .route("/templates/{id}", get(engage::template_show).post(engage::template_save))
        .route("/templates/{id}/test", post(engage::template_test_send))
        .route("/campaigns", get(engage::campaign_list))
        .route("/campaigns/{id}", get(engage::campaign_show))
        .route("/campaigns/{id}/{action}", post(engage::campaign_act))
        .route("/channels", get(channels::show))
        .route("/channels/smtp", post(channels::save_smtp))
        .route("/channels/twilio", post(channels::save_twilio))
        .route("/settings/messaging", post(channels::save_messaging))
        .route("/supervisor", get(supervisor::page))
        .route("/supervisor/agents/{id}", get(agents::show).post(agents::save))
        .route("/users", get(users::list).post(users::invite))
        .route("/users/{id}", post(users::change_role))
        .route("/users/{id}/invite", post(users::reinvite))
        .route("/users/{id}/remove", post(users::remove))
        .route("/invite/{token}", get(users::invitation).post(users::accept))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/assets/{name}", get(assets::serve))
        .layer(axum::middleware::from_fn(csrf::guard))
        .layer(axum::middleware::map_response(security_headers))
}

/// What a browser may do with console pages: run only the console's own script, load nothing from
/// elsewhere, never be framed (clickjacking), and not leak URLs (which hold profile ids) as referrers.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        // Pages show customer data: never keep them in shared caches.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    }
    response
}
