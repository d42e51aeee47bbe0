//! An agent's settings (`GET`/`POST /supervisor/agents/{id}`): name, skills, languages, capacity, and —
//! for agents who take calls — the number or SIP address a live call is put through to and how many
//! calls they hold at once. Admins and supervisors change them (the phone: admins only); the other
//! roles that see the supervisor view read them (without the phone).

use super::error::ConsoleError;
use super::layout::{self, Section, page_head};
use super::session::Session;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use crossline_engine::agents::{MAX_CALLS, MAX_CAPACITY, NewAgent};
use crossline_store::agents::Agent;
use crossline_store::users::Role;
use maud::{Markup, html};
use serde::Deserialize;

/// The form as posted.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentForm {
    name: String,
    /// Comma-separated.
    #[serde(default)]
    skills: String,
    /// Comma-separated.
    #[serde(default)]
    languages: String,
    #[serde(default)]
    capacity: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    calls: String,
}

impl AgentForm {
    fn of(agent: &Agent) -> Self {
        AgentForm {
            name: agent.name.clone(),
            skills: agent.skills.join(", "),
            languages: agent.languages.join(", "),
            capacity: agent.capacity.to_string(),
            phone: agent.phone.clone().unwrap_or_default(),
            calls: agent.calls.to_string(),
        }
    }

    /// The change it asks for; a number that is not one is named.
    fn change(&self) -> Result<NewAgent, String> {
        let list = |text: &str| {
            text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect::<Vec<_>>()
        };
        let number = |field: &str, text: &str| -> Result<Option<u32>, String> {
            match text.trim() {
                "" => Ok(None),
                text => text.parse().map(Some).map_err(|_| format!("{field}: give a whole number")),
            }
        };
        Ok(NewAgent {
            name: self.name.clone(),
            email: String::new(),
            skills: list(&self.skills),
            languages: list(&self.languages),
            capacity: number("capacity", &self.capacity)?.unwrap_or(3),
            phone: Some(self.phone.clone()).filter(|phone| !phone.trim().is_empty()),
            calls: number("calls", &self.calls)?,
        })
    }
}

/// The page's content.
pub fn agent_content(
    agent: &Agent,
    form: &AgentForm,
    role: Option<Role>,
    notice: Option<Result<&str, &str>>,
) -> Markup {
    let (sees, sets) = (crate::roles::sees_phones(role), crate::roles::sets_phones(role));
    html! {
        (page_head(&format!("Agent: {}", agent.name), Some(html! {
            (agent.email) " · " (agent.status.as_str()) ". Routing uses these settings from its next pass. "
            a href="/supervisor" { "Back to the supervisor view" }
        })))
        @match notice {
            Some(Ok(done)) => div.alert.info role="status" data-testid="agent-done" { (done) },
            Some(Err(fault)) => div.alert.error role="alert" data-testid="agent-error" { (fault) },
            None => {},
        }
        div.card { div.card-body {
            form.stacked method="post" action=(format!("/supervisor/agents/{}", agent.id)) data-testid="agent-form" {
                label for="agent-name" { "Name" }
                input #agent-name type="text" name="name" required maxlength="200" value=(form.name);
                label for="agent-skills" { "Skills " span.muted { "(comma-separated; a queue routes to agents with all its skills)" } }
                input #agent-skills type="text" name="skills" value=(form.skills);
                label for="agent-languages" { "Languages " span.muted { "(ISO 639-1, e.g. en, de)" } }
                input #agent-languages type="text" name="languages" value=(form.languages);
                label for="agent-capacity" { "Conversations at once " span.muted { "(calls aside)" } }
                input #agent-capacity type="number" name="capacity" min="1" max=(MAX_CAPACITY) value=(form.capacity);
                @if sets {
                    label for="agent-phone" { "Phone for calls " span.muted { "(+E.164 number or sip: address; empty: no calls)" } }
                    input #agent-phone type="text" name="phone" maxlength="200" value=(form.phone) data-testid="agent-phone"
                        placeholder="+15551234567 or sip:grace@pbx.example";
                } @else {
                    p.muted data-testid="agent-phone-fixed" {
                        "Phone for calls: "
                        @if !sees { @if agent.phone.is_some() { "set" } @else { "none" } }
                        @else { (agent.phone.as_deref().unwrap_or("none")) }
                        " (an admin changes it)"
                    }
                }
                label for="agent-calls" { "Calls at once" }
                input #agent-calls type="number" name="calls" min="0" max=(MAX_CALLS) value=(form.calls);
                button.button type="submit" data-testid="agent-save" { "Save" }
            }
        } }
    }
}

async fn agent_of(state: &AppState, session: &Session, id: &str) -> Result<Option<Agent>, ConsoleError> {
    let Some(workspace) = &session.workspace else { return Ok(None) };
    Ok(state.store.agent(&workspace.id, id).await?)
}

/// `GET /supervisor/agents/{id}`.
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let Some(agent) = agent_of(&state, &session, &id).await? else {
        return Ok(Redirect::to("/supervisor").into_response());
    };
    let content = agent_content(&agent, &AgentForm::of(&agent), session.caller.role(), None);
    Ok(session.respond(layout::shell(&session, Section::Supervisor, "Agent", content)))
}

/// `POST /supervisor/agents/{id}`.
pub async fn save(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<AgentForm>,
) -> Result<Response, ConsoleError> {
    let Some(agent) = agent_of(&state, &session, &id).await? else {
        return Ok(Redirect::to("/supervisor").into_response());
    };
    let workspace_id = session.workspace.as_ref().map(|workspace| workspace.id.clone()).unwrap_or_default();
    let role = session.caller.role();
    let mut form = form;
    if !crate::roles::sets_phones(role) {
        // The field is not shown to them: the phone stays as it is.
        form.phone = agent.phone.clone().unwrap_or_default();
    }
    let changed = match form.change() {
        Ok(change) => crate::api::agents::update(&state, &workspace_id, &agent, change, role).await,
        Err(fault) => Err(ApiError::bad_request(crate::error::ErrorCode::InvalidField, fault)),
    };
    let (status, content) = match changed {
        Ok(agent) => (StatusCode::OK, agent_content(&agent, &AgentForm::of(&agent), role, Some(Ok("Saved.")))),
        Err(err) if err.status.is_server_error() => return Err(err.into()),
        Err(err) => (err.status, agent_content(&agent, &form, role, Some(Err(&err.message)))),
    };
    Ok(session.respond((status, layout::shell(&session, Section::Supervisor, "Agent", content))))
}
