//! Users and their roles (`/users`, admins only) and accepting an invitation (`/invite/{token}`).
//!
//! An admin invites a person with a role; the page shows the invitation link once (only its SHA-256
//! is kept) to pass on. Opening the link, the person sets a password and is signed in; from then on
//! they sign in at `/login` with email and password. An admin changes roles (applied on the user's
//! next request), sends a new link (a forgotten password) or removes a user (their sessions end).

use super::error::ConsoleError;
use super::layout::{self, Section, page_head, time};
use super::session::Session;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use crossline_engine::users::{MIN_PASSWORD_CHARS, NewUser, UserChange};
use crossline_store::users::{Role, User};
use maud::{Markup, html};
use serde::Deserialize;

/// What the page says above the table.
pub enum UsersNotice {
    /// Nothing.
    None,
    /// An invitation link to pass on (shown once).
    Link {
        /// Whose.
        email: String,
        /// The link.
        url: String,
    },
    /// A refusal, with the form's fault.
    Fault(String),
    /// Something done.
    Done(String),
}

/// The invitation form.
#[derive(Debug, Default, Deserialize)]
pub struct InviteForm {
    /// Their email.
    #[serde(default)]
    pub email: String,
    /// Their name.
    #[serde(default)]
    pub name: String,
    /// Their role.
    #[serde(default)]
    pub role: String,
}

/// The role form of one user.
#[derive(Debug, Default, Deserialize)]
pub struct RoleForm {
    /// The new role.
    #[serde(default)]
    pub role: String,
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Admin => "Admin — everything, users and keys",
        Role::Marketer => "Marketer — profiles, segments, templates, campaigns, bots",
        Role::Supervisor => "Supervisor — agents, queues, every conversation",
        Role::Agent => "Agent — the inbox",
        Role::Viewer => "Viewer — reads everything, changes nothing",
    }
}

fn role_select(name: &str, selected: Option<Role>, testid: &str) -> Markup {
    html! {
        select name=(name) data-testid=(testid) {
            @for role in Role::ALL {
                option value=(role.as_str()) selected[selected == Some(role)] { (role_label(role)) }
            }
        }
    }
}

/// The page's content.
pub fn users_content(users: &[User], notice: &UsersNotice, form: &InviteForm) -> Markup {
    let chosen = Role::parse(&form.role).or(Some(Role::Viewer));
    html! {
        (page_head("Users", Some(html! {
            "People who sign in to the console with email and password, each with a role. A role applies to their next click; removing someone ends their sessions at once. Machines keep using the API key."
        })))
        @match notice {
            UsersNotice::Link { email, url } => div.alert.info role="status" data-testid="users-invite-link" {
                "Send this link to " strong { (email) } ". It sets their password, works once, for 7 days, and is not shown again: "
                code.copyable data-testid="users-invite-url" { (url) }
            },
            UsersNotice::Fault(fault) => div.alert.error role="alert" data-testid="users-error" { (fault) },
            UsersNotice::Done(done) => div.alert.info role="status" data-testid="users-done" { (done) },
            UsersNotice::None => {},
        }
        div.card { div.card-body {
            h2 { "Invite someone" }
            form.stacked.inline-form method="post" action="/users" data-testid="users-invite-form" {
                label for="invite-email" { "Email" }
                input #invite-email type="email" name="email" required value=(form.email) data-testid="users-invite-email";
                label for="invite-name" { "Name" }
                input #invite-name type="text" name="name" required maxlength="200" value=(form.name) data-testid="users-invite-name";
                label for="invite-role" { "Role" }
                (role_select("role", chosen, "users-invite-role"))
                button.button type="submit" data-testid="users-invite-submit" { "Invite" }
            }
        } }
        div.card.table-card {
            table data-testid="users-table" {
                thead { tr { th { "Email" } th { "Name" } th { "Role" } th { "Status" } th { "Invited" } th {} } }
                tbody {
                    @for user in users {
                        tr data-testid="users-row" data-user-id=(user.id) data-role=(user.role.as_str()) {
                            td { (user.email) }
                            td { (user.name) }
                            td {
                                form.inline-form method="post" action=(format!("/users/{}", user.id)) {
                                    (role_select("role", Some(user.role), "users-role"))
                                    button.button.secondary type="submit" data-testid="users-role-save" { "Change" }
                                }
                            }
                            td {
                                @if user.password_hash.is_some() { span.badge.subscribed { "active" } }
                                @else { span.badge { "invited" } }
                            }
                            td.muted { (time(user.created_at)) }
                            td {
                                form.inline-form method="post" action=(format!("/users/{}/invite", user.id)) {
                                    button.button.secondary type="submit" data-testid="users-reinvite" { "New link" }
                                }
                                form.inline-form method="post" action=(format!("/users/{}/remove", user.id)) {
                                    button.button.danger type="submit" data-testid="users-remove" { "Remove" }
                                }
                            }
                        }
                    }
                    @if users.is_empty() {
                        tr { td colspan="6" .muted { "Nobody yet: invite the first person above." } }
                    }
                }
            }
        }
    }
}

async fn page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    notice: UsersNotice,
    form: &InviteForm,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let users = state.store.users(&workspace.id).await?;
    let content = users_content(&users, &notice, form);
    Ok(session.respond((status, layout::shell(session, Section::Users, "Users", content))))
}

/// A refusal of the engine as the page's fault; a server error as an error page.
fn fault(err: crossline_engine::agents::AgentError) -> Result<(StatusCode, UsersNotice), ConsoleError> {
    let err = ApiError::from(err);
    if err.status.is_server_error() {
        return Err(err.into());
    }
    Ok((err.status, UsersNotice::Fault(err.message)))
}

/// `GET /users`.
pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, ConsoleError> {
    page(&state, &session, StatusCode::OK, UsersNotice::None, &InviteForm::default()).await
}

/// `POST /users`: invite.
pub async fn invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<InviteForm>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = session.workspace.clone() else {
        return Ok(Redirect::to("/").into_response());
    };
    let new =
        NewUser { email: form.email.clone(), name: form.name.clone(), role: form.role.clone(), ..Default::default() };
    match state.users.invite(&workspace.id, new, Utc::now()).await {
        Ok((user, token)) => {
            let url = crate::api::users::invite_url(&state, &headers, &token);
            let notice = UsersNotice::Link { email: user.email, url };
            page(&state, &session, StatusCode::CREATED, notice, &InviteForm::default()).await
        }
        Err(err) => {
            let (status, notice) = fault(err)?;
            page(&state, &session, status, notice, &form).await
        }
    }
}

/// `POST /users/{id}`: change the role.
pub async fn change_role(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = session.workspace.clone() else {
        return Ok(Redirect::to("/").into_response());
    };
    let change = UserChange { role: Some(form.role), name: None };
    let (status, notice) = match state.users.change(&workspace.id, &id, change, Utc::now()).await {
        Ok(user) => (StatusCode::OK, UsersNotice::Done(format!("{} is now {}.", user.email, user.role))),
        Err(err) => fault(err)?,
    };
    page(&state, &session, status, notice, &InviteForm::default()).await
}

/// `POST /users/{id}/invite`: a new link.
pub async fn reinvite(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = session.workspace.clone() else {
        return Ok(Redirect::to("/").into_response());
    };
    let (status, notice) = match state.users.reinvite(&workspace.id, &id, Utc::now()).await {
        Ok(token) => {
            let email = state.store.user(&workspace.id, &id).await?.map(|user| user.email).unwrap_or_default();
            (StatusCode::OK, UsersNotice::Link { email, url: crate::api::users::invite_url(&state, &headers, &token) })
        }
        Err(err) => fault(err)?,
    };
    page(&state, &session, status, notice, &InviteForm::default()).await
}

/// `POST /users/{id}/remove`.
pub async fn remove(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = session.workspace.clone() else {
        return Ok(Redirect::to("/").into_response());
    };
    let (status, notice) = match state.users.remove(&workspace.id, &id, Utc::now()).await {
        Ok(()) => (StatusCode::OK, UsersNotice::Done("Removed; their sessions have ended.".into())),
        Err(err) => fault(err)?,
    };
    page(&state, &session, status, notice, &InviteForm::default()).await
}

/// The password form of an invitation.
#[derive(Debug, Default, Deserialize)]
pub struct PasswordForm {
    /// The new password.
    #[serde(default)]
    pub password: String,
    /// The same again.
    #[serde(default)]
    pub confirm: String,
}

fn invitation_page(user: &User, token: &str, fault: Option<&str>) -> Markup {
    let body = html! {
        div.login-wrap { div.login {
            (layout::brand())
            div.card { div.card-body {
                h1 { "Welcome, " (user.name) }
                p.sub { "Choose a password for " strong { (user.email) } ". You will sign in with it from now on." }
                @if let Some(fault) = fault { div.alert.error role="alert" data-testid="invite-error" { (fault) } }
                form.stacked method="post" action=(format!("/invite/{token}")) data-testid="invite-form" {
                    input type="email" name="username" value=(user.email) autocomplete="username" hidden;
                    label for="password" { "Password" }
                    input #password type="password" name="password" required minlength=(MIN_PASSWORD_CHARS)
                        autocomplete="new-password" autofocus data-testid="invite-password";
                    div.field-hint { "At least " (MIN_PASSWORD_CHARS) " characters; a few words make a good one." }
                    label for="confirm" { "The same again" }
                    input #confirm type="password" name="confirm" required autocomplete="new-password" data-testid="invite-confirm";
                    button.button type="submit" data-testid="invite-submit" { "Set password and sign in" }
                }
            } }
        } }
    };
    layout::document("Set your password", body)
}

fn invitation_gone() -> ConsoleError {
    ConsoleError {
        status: StatusCode::NOT_FOUND,
        message: "This invitation link has been used or has expired. Ask an admin of your workspace for a new one."
            .into(),
    }
}

/// `GET /invite/{token}`.
pub async fn invitation(State(state): State<AppState>, Path(token): Path<String>) -> Result<Response, ConsoleError> {
    let user = state.users.invited(&token, Utc::now()).await?.ok_or_else(invitation_gone)?;
    Ok(invitation_page(&user, &token, None).into_response())
}

/// `POST /invite/{token}`: set the password and sign in.
pub async fn accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<PasswordForm>,
) -> Result<Response, ConsoleError> {
    super::login::refuse_cross_site(&state, &headers)?;
    let now = Utc::now();
    let user = state.users.invited(&token, now).await?.ok_or_else(invitation_gone)?;
    if form.password != form.confirm {
        let page = invitation_page(&user, &token, Some("The two passwords differ. Type the same one twice."));
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let user = match state.users.accept(&token, &form.password, now).await {
        Ok(user) => user,
        Err(crossline_engine::agents::AgentError::NotFound(_)) => return Err(invitation_gone()),
        Err(err) => {
            let err = ApiError::from(err);
            if err.status.is_server_error() {
                return Err(err.into());
            }
            let fault = err.message.trim_start_matches("password: ").to_owned();
            return Ok((StatusCode::BAD_REQUEST, invitation_page(&user, &token, Some(&fault))).into_response());
        }
    };
    let previous = crate::auth::session_cookie(&headers);
    let id = crate::sessions::open_for_user(&state, &user, previous.as_deref()).await?;
    let home = if user.role == Role::Agent { "/inbox" } else { "/" };
    super::login::signed_in(&state, &headers, &id, home)
}
