//! The supervisor view (`GET /supervisor`): the contact centre now — how many wait in each queue and
//! for how long, agents by status and how many conversations each holds, and today's (UTC) SLA
//! breaches, CSAT and bot containment — with SVG charts. The page refreshes itself every
//! [`REFRESH_SECONDS`]; every number comes from the store, so every node shows the same.

use super::chart::{self, Bar};
use super::error::ConsoleError;
use super::layout::{self, Section, count, page_head};
use super::session::Session;
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use crossline_core::ConversationStatus;
use crossline_store::agents::{Agent, AgentStatus, ConversationFilter, PeopleStats};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// How often the page reads again.
pub const REFRESH_SECONDS: u32 = 10;
/// Waiting conversations read for the longest waits (the counts come from the store's totals).
const WAITING_READ: usize = 1_000;
/// Held conversations read to count each agent's.
const HELD_READ: usize = 20_000;

/// A queue as the supervisor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueNow {
    /// Its name.
    pub name: String,
    /// Conversations waiting.
    pub waiting: u64,
    /// How long the longest-waiting one has waited, in seconds.
    pub longest_wait_seconds: Option<i64>,
}

/// An agent as the supervisor sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentNow {
    /// The agent.
    pub agent: Agent,
    /// Conversations they hold.
    pub holding: u64,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorView {
    /// Queues with someone waiting, the longest wait first.
    pub queues: Vec<QueueNow>,
    /// Agents, by name.
    pub agents: Vec<AgentNow>,
    /// Today so far.
    pub today: PeopleStats,
}

/// A wait as people say it: `45 s`, `3 min`, `2 h 5 min`.
pub fn wait_text(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        _ => format!("{} h {} min", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// Read what the page shows.
pub async fn load(state: &AppState, workspace_id: &str, now: DateTime<Utc>) -> Result<SupervisorView, ConsoleError> {
    let totals = state.store.waiting_queues(workspace_id).await?;
    let waiting = state
        .store
        .list_conversations(
            workspace_id,
            &ConversationFilter {
                statuses: vec![ConversationStatus::Queued],
                limit: WAITING_READ,
                without_state: true,
                ..Default::default()
            },
        )
        .await?;
    // Longest waiting first: the first of each queue is its longest wait.
    let mut longest: BTreeMap<String, i64> = BTreeMap::new();
    for conversation in &waiting {
        let queue = conversation.queue.clone().unwrap_or_else(|| "default".into());
        if let Some(queued_at) = conversation.queued_at {
            longest.entry(queue).or_insert((now - queued_at).num_seconds());
        }
    }
    let mut queues: Vec<QueueNow> = totals
        .into_iter()
        .filter(|(_, waiting)| *waiting > 0)
        .map(|(name, waiting)| QueueNow { longest_wait_seconds: longest.get(&name).copied(), name, waiting })
        .collect();
    queues.sort_by(|a, b| b.longest_wait_seconds.cmp(&a.longest_wait_seconds).then(a.name.cmp(&b.name)));
    let held = state
        .store
        .list_conversations(
            workspace_id,
            &ConversationFilter {
                statuses: vec![ConversationStatus::Assigned],
                limit: HELD_READ,
                without_state: true,
                ..Default::default()
            },
        )
        .await?;
    let mut holding: BTreeMap<String, u64> = BTreeMap::new();
    for conversation in &held {
        if let Some(agent) = &conversation.assignee {
            *holding.entry(agent.clone()).or_default() += 1;
        }
    }
    let agents = state
        .store
        .agents(workspace_id)
        .await?
        .into_iter()
        .map(|agent| AgentNow { holding: holding.get(&agent.id).copied().unwrap_or(0), agent })
        .collect();
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let today = state.store.people_stats(workspace_id, midnight).await?;
    Ok(SupervisorView { queues, agents, today })
}

/// `GET /supervisor`.
pub async fn page(State(state): State<AppState>, session: Session) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let mut view = load(&state, &workspace.id, Utc::now()).await?;
    if !crate::roles::sees_phones(session.caller.role()) {
        for agent in &mut view.agents {
            agent.agent.phone = agent.agent.phone.take().map(|_| "a phone".to_owned());
        }
    }
    let content = supervisor_content(&view);
    Ok(session.respond(layout::shell(&session, Section::Supervisor, "Supervisor", content)))
}

fn seconds_text(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "—".into(), |seconds| wait_text(seconds.round() as i64))
}

/// The page's content.
pub fn supervisor_content(view: &SupervisorView) -> Markup {
    let today = &view.today;
    let waiting: u64 = view.queues.iter().map(|queue| queue.waiting).sum();
    let longest = view.queues.iter().filter_map(|queue| queue.longest_wait_seconds).max();
    let by_status =
        |status: AgentStatus| view.agents.iter().filter(|agent| agent.agent.status == status).count() as u64;
    let queue_bars: Vec<Bar> = view
        .queues
        .iter()
        .map(|queue| Bar {
            label: queue.name.clone(),
            value: queue.waiting,
            note: queue
                .longest_wait_seconds
                .map(|seconds| format!("longest {}", wait_text(seconds)))
                .unwrap_or_default(),
        })
        .collect();
    let status_bars: Vec<Bar> = [AgentStatus::Available, AgentStatus::Away, AgentStatus::Offline]
        .into_iter()
        .map(|status| Bar { label: status.as_str().into(), value: by_status(status), note: String::new() })
        .collect();
    let load_bars: Vec<Bar> = view
        .agents
        .iter()
        .filter(|agent| agent.agent.status != AgentStatus::Offline || agent.holding > 0)
        .map(|agent| Bar {
            label: agent.agent.name.clone(),
            value: agent.holding,
            note: format!("of {} · {}", agent.agent.capacity, agent.agent.status.as_str()),
        })
        .collect();
    let csat_bars: Vec<Bar> = (1..=5)
        .rev()
        .map(|score| Bar { label: format!("{score} ★"), value: today.csat[score - 1], note: String::new() })
        .collect();
    html! {
        (page_head("Supervisor", Some(html! {
            "The contact centre now, and today so far (UTC). Reads again every " (REFRESH_SECONDS) " seconds."
        })))
        div data-refresh-seconds=(REFRESH_SECONDS) data-testid="supervisor" {
            div.grid.stats {
                div.card.stat data-testid="supervisor-waiting" data-value=(waiting) {
                    div.label { "Waiting" }
                    div.value { (count(waiting)) }
                    div.note { @match longest { Some(seconds) => { "longest " (wait_text(seconds)) }, None => "nobody waits" } }
                }
                div.card.stat data-testid="supervisor-available" data-value=(by_status(AgentStatus::Available)) {
                    div.label { "Agents available" }
                    div.value { (count(by_status(AgentStatus::Available))) }
                    div.note { (count(by_status(AgentStatus::Away))) " away · " (count(by_status(AgentStatus::Offline))) " offline" }
                }
                div.card.stat data-testid="supervisor-breaches" data-value=(today.sla_breaches) {
                    div.label { "SLA breaches today" }
                    div.value { (count(today.sla_breaches)) }
                    div.note { "first response over the queue's limit" }
                }
                div.card.stat data-testid="supervisor-csat" data-value=(today.csat_mean().map(|mean| format!("{mean:.2}")).unwrap_or_default()) {
                    div.label { "CSAT today" }
                    div.value { @match today.csat_mean() { Some(mean) => (format!("{mean:.1}")), None => "—" } }
                    div.note { (count(today.csat_answers())) " answers, 1–5" }
                }
                div.card.stat data-testid="supervisor-containment" data-value=(today.containment().map(|share| format!("{share:.4}")).unwrap_or_default()) {
                    div.label { "Bot containment today" }
                    div.value { @match today.containment() { Some(share) => (format!("{:.0} %", share * 100.0)), None => "—" } }
                    div.note { (count(today.started)) " conversations, " (count(today.handoffs)) " handed to people" }
                }
            }
            div.grid.halves {
                div.card {
                    div.card-head { h2 { "Waiting per queue" } span.hint { "hover for the longest wait" } }
                    div.card-body { (chart::bars("supervisor-queues", "Conversations waiting per queue", &queue_bars, "Nobody is waiting")) }
                }
                div.card {
                    div.card-head { h2 { "Agents by status" } }
                    div.card-body { (chart::bars("supervisor-statuses", "Agents by status", &status_bars, "No agents yet")) }
                }
                div.card {
                    div.card-head { h2 { "Conversations per agent" } span.hint { "agents signed in, or holding any" } }
                    div.card-body { (chart::bars("supervisor-load", "Conversations each agent holds", &load_bars, "No agent is signed in")) }
                }
                div.card {
                    div.card-head { h2 { "CSAT today" } span.hint { (count(today.resolved)) " resolved by people" } }
                    div.card-body { (chart::bars("supervisor-csat-chart", "CSAT answers today per score", &csat_bars, "")) }
                }
            }
            div.card.table-card {
                div.card-head { h2 { "Today's times" } span.hint { "means over conversations people resolved today" } }
                table {
                    thead { tr { th { "Wait before an agent" } th { "First response" } th { "Handle time" } } }
                    tbody { tr {
                        td data-testid="supervisor-mean-wait" { (seconds_text(today.mean_wait_seconds)) }
                        td { (seconds_text(today.mean_first_response_seconds)) }
                        td { (seconds_text(today.mean_handle_seconds)) }
                    } }
                }
            }
            div.card.table-card {
                div.card-head { h2 { "Agents" } }
                table data-testid="supervisor-agents" {
                    thead { tr { th { "Agent" } th { "Status" } th { "Holding" } th { "Skills" } th { "Languages" } th { "Calls" } } }
                    tbody {
                        @for agent in &view.agents {
                            tr data-testid="supervisor-agent" data-agent-id=(agent.agent.id) data-status=(agent.agent.status.as_str()) data-holding=(agent.holding) {
                                td { a href=(format!("/supervisor/agents/{}", agent.agent.id)) { (agent.agent.name) } " " span.muted { (agent.agent.email) } }
                                td { span.badge { (agent.agent.status.as_str()) } }
                                td { (agent.holding) " / " (agent.agent.capacity) }
                                td { (agent.agent.skills.join(", ")) }
                                td { (agent.agent.languages.join(", ")) }
                                td { @match &agent.agent.phone { Some(phone) => { (agent.agent.calls) " on " (phone) }, None => span.muted { "—" } } }
                            }
                        }
                        @if view.agents.is_empty() {
                            tr { td colspan="6" .muted { "No agents yet: invite a user with the agent role, or POST /api/v1/agents." } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_like_people_say_them() {
        assert_eq!(wait_text(-3), "0 s");
        assert_eq!(wait_text(45), "45 s");
        assert_eq!(wait_text(185), "3 min");
        assert_eq!(wait_text(7_500), "2 h 5 min");
    }
}
