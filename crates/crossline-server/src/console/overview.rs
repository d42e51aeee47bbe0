//! The workspace overview (`/`) and the operator's workspace list (`/workspaces`).

use super::chart;
use super::error::ConsoleError;
use super::layout::{self, Section, base_url, count, empty_state, page_head};
use super::session::Session;
use super::url;
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use crossline_store::{Workspace, WorkspaceStats};
use maud::{Markup, html};

/// Days the overview's chart and channel totals cover.
pub const OVERVIEW_DAYS: u32 = 30;

/// `GET /`: the chosen workspace's overview, or the workspace list while an operator has not chosen.
pub async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return workspaces(State(state), headers, session).await;
    };
    let day_ago = chrono::Utc::now() - chrono::Duration::hours(24);
    let (stats, rejected) = tokio::join!(
        state.store.workspace_stats(&workspace.id, OVERVIEW_DAYS),
        state.store.rejected_count_since(&workspace.id, day_ago)
    );
    let content = overview_content(workspace, &stats?, rejected?, &base_url(&state, &headers));
    let page = layout::shell(&session, Section::Overview, "Overview", content);
    Ok(session.respond(page))
}

/// The overview's content: counters (with the events rejected in the last 24 hours), the per-day
/// chart and the per-channel bars.
pub fn overview_content(
    workspace: &Workspace,
    stats: &WorkspaceStats,
    rejected_last_day: u64,
    base_url: &str,
) -> Markup {
    let recent: u64 = stats.events_per_day.iter().map(|(_, events)| *events).sum();
    let busiest = stats.events_per_channel.iter().map(|(_, events)| *events).max().unwrap_or(0);
    let channels = stats.events_per_channel.iter().filter(|(channel, _)| channel != "system").count();
    html! {
        (page_head("Overview", Some(html! { (workspace.name) " · " code { (workspace.id) } " · " (workspace.time_zone) })))
        div.grid.stats {
            div.card.stat data-testid="stat-profiles" {
                div.label { "Profiles" }
                div.value { (count(stats.profiles)) }
                div.note { "unified customers" }
            }
            div.card.stat data-testid="stat-events" {
                div.label { "Events" }
                div.value { (count(stats.events)) }
                div.note { "all time" }
            }
            div.card.stat {
                div.label { "Events, last " (OVERVIEW_DAYS) " days" }
                div.value { (count(recent)) }
                div.note { "per UTC day below" }
            }
            div.card.stat {
                div.label { "Active channels" }
                div.value { (channels) }
                div.note { "last " (OVERVIEW_DAYS) " days" }
            }
            a.card.stat.link data-testid="stat-rejected" href="/rejected" {
                div.label { "Rejected events" }
                div.value { (count(rejected_last_day)) }
                div.note { "last 24 hours" }
            }
        }
        @if stats.events == 0 {
            div.card { (empty_state(
                "No events yet",
                html! { "Send events with the workspace's write key from a Segment library, or try one with curl. They appear here within a second." },
                Some(&format!(
                    "curl -X POST {base_url}/v1/track -u \"$WRITE_KEY:\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"userId\":\"u-1\",\"event\":\"Signed Up\",\"context\":{{\"traits\":{{\"email\":\"ada@example.com\"}}}}}}'"
                )),
            )) }
        } @else {
            div.grid.two {
                div.card {
                    div.card-head { h2 { "Events per day" } span.hint { "last " (OVERVIEW_DAYS) " days, UTC" } }
                    div.card-body { (chart::events_per_day(&stats.events_per_day)) }
                }
                div.card {
                    div.card-head { h2 { "Events per channel" } span.hint { "last " (OVERVIEW_DAYS) " days" } }
                    div.card-body {
                        @if stats.events_per_channel.is_empty() {
                            p.muted { "No events in the last " (OVERVIEW_DAYS) " days." }
                        } @else {
                            ul.channel-bars data-testid="channel-bars" {
                                @for (channel, events) in &stats.events_per_channel {
                                    @let share = 100.0 * (*events as f64) / (busiest.max(1) as f64);
                                    li data-channel=(channel) title=(format!("{channel}: {} events", count(*events))) {
                                        span { (layout::channel_badge(channel)) }
                                        span.track { span.fill style=(format!("width: {share:.1}%")) {} }
                                        span.count { (count(*events)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /workspaces`: the operator's list of workspaces to choose from; an API-key session has
/// only its own and goes to its overview.
pub async fn workspaces(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, ConsoleError> {
    if !session.is_admin() {
        return Ok(Redirect::to("/").into_response());
    }
    let workspaces = state.store.workspaces().await?;
    let deployment =
        Deployment { store: state.store.backend(), bus: state.bus.backend(), nodes: state.cluster.nodes() };
    let content = workspace_list(&workspaces, session.workspace.as_ref(), &base_url(&state, &headers), &deployment);
    let page = layout::shell(&session, Section::Workspaces, "Workspaces", content);
    Ok(session.respond(page))
}

/// What the operator's workspace list says about the deployment itself.
struct Deployment {
    store: &'static str,
    bus: &'static str,
    nodes: usize,
}

fn workspace_list(
    workspaces: &[Workspace],
    chosen: Option<&Workspace>,
    base_url: &str,
    deployment: &Deployment,
) -> Markup {
    let store = if deployment.store == "postgres" { "PostgreSQL" } else { "SQLite (embedded)" };
    let bus = if deployment.bus == "memory" { "in-process" } else { "NATS JetStream" };
    html! {
        (page_head("Workspaces", Some(html! { "Each workspace holds one business's customers and events. Choose one to open its console." })))
        div.card.table-card {
            @if workspaces.is_empty() {
                (empty_state(
                    "No workspaces yet",
                    html! { "Create the first one with the operator token; the answer holds its write key (for sending events) and API key (for the API and this console)." },
                    Some(&format!("curl -X POST {base_url}/api/v1/workspaces -H \"Authorization: Bearer $TOKEN\" -d '{{\"name\":\"acme\"}}'")),
                ))
            } @else {
                table.workspace-list data-sortable {
                    thead { tr {
                        th data-sort="text" { "Name" }
                        th { "Id" }
                        th data-sort="text" { "Region" }
                        th data-sort="text" { "Time zone" }
                        th data-sort="text" { "Created" }
                    } }
                    tbody {
                        @for workspace in workspaces {
                            tr data-testid="workspace-row" {
                                td {
                                    a.row-link href=(format!("/?workspace={}", url::encode(&workspace.id))) { (workspace.name) }
                                    @if chosen.is_some_and(|chosen| chosen.id == workspace.id) { " " span.badge.kind { "current" } }
                                }
                                td { code { (workspace.id) } }
                                td { (workspace.default_region) }
                                td { (workspace.time_zone) }
                                td.muted data-sort-value=(workspace.created_at.to_rfc3339()) { (layout::time(workspace.created_at)) }
                            }
                        }
                    }
                }
            }
        }
        div.card data-testid="deployment" {
            div.card-head { h2 { "This deployment" } span.hint { "every workspace shares it" } }
            div.card-body {
                p {
                    "Store: " strong { (store) } " · bus: " strong { (bus) } " · nodes: " strong data-testid="deployment-nodes" { (deployment.nodes) }
                }
                p.muted {
                    "Nodes are the " code { "crossline serve" } " processes on this store and bus that heard each other in the last 7 seconds. "
                    "Rate limits count for all of them together: each node allows its share."
                }
            }
        }
    }
}
