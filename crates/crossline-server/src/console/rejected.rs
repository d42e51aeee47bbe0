//! Rejected events (`/rejected`): events of batches that failed validation while the rest of their
//! batch was stored, newest first, with the reason and the event as it was sent.

use super::error::ConsoleError;
use super::layout::{self, Section, empty_state, page_head, time};
use super::session::Session;
use super::url;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use crossline_store::{RejectedEventPage, RejectedRetention};
use maud::{Markup, html};
use serde::Deserialize;

/// Rejected events per page.
pub const PAGE_SIZE: usize = 50;

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct RejectedParams {
    /// The cursor of the page to show: only events older than it.
    pub before: Option<String>,
}

/// `GET /rejected`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(params): Query<RejectedParams>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let before = params.before.filter(|cursor| !cursor.is_empty());
    let page = state.store.rejected_events(&workspace.id, PAGE_SIZE, before.as_deref()).await?;
    let content = rejected_content(&page, before.is_some(), &state.settings.rejected_retention);
    Ok(session.respond(layout::shell(&session, Section::Rejected, "Rejected events", content)))
}

/// The page's content: the table of rejected events, or what an empty one means.
pub fn rejected_content(page: &RejectedEventPage, paged: bool, retention: &RejectedRetention) -> Markup {
    let days = retention.max_age.num_days();
    html! {
        (page_head("Rejected events", Some(html! {
            "Events of a batch that failed validation and were not stored; the rest of their batch was. Newest first, kept "
            (days) (if days == 1 { " day" } else { " days" }) ", at most " (layout::count(retention.max_per_workspace as u64)) "."
        })))
        div.card.table-card {
            @if page.events.is_empty() {
                @if paged {
                    (empty_state("No older rejected events", html! { "This is past the last page. " a href="/rejected" { "Back to the newest" } }, None))
                } @else {
                    (empty_state(
                        "Every event you sent was accepted",
                        html! { "When an event of a batch fails validation (no userId or anonymousId, a wrong type, a bad timestamp), the rest of the batch is still stored and that event shows here with the reason, so you can fix the sender." },
                        None,
                    ))
                }
            } @else {
                table.rejected-list {
                    thead { tr {
                        th { "Received" }
                        th { "Code" }
                        th { "Message" }
                        th { "Message id" }
                        th { "Event as sent" }
                    } }
                    tbody {
                        @for event in &page.events {
                            tr data-testid="rejected-row" data-code=(event.code) {
                                td.muted { (time(event.received_at)) }
                                td { span.badge.unsubscribed { (event.code) } }
                                td.wrap { (event.message) }
                                td.wrap {
                                    @match &event.message_id {
                                        Some(id) => code { (id) },
                                        None => span.muted { "none" },
                                    }
                                }
                                td {
                                    details.raw {
                                        summary { "batch[" (event.index) "]" }
                                        pre { code { (event.raw) } }
                                    }
                                }
                            }
                        }
                    }
                }
                div.pager {
                    span { (page.events.len()) " rejected events on this page" }
                    span {
                        @if paged { a href="/rejected" { "Newest" } " " }
                        @if let Some(cursor) = &page.next_cursor {
                            a.button.secondary href=(format!("/rejected?before={}", url::encode(cursor))) data-testid="older-page" { "Older →" }
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
    use chrono::{TimeZone, Utc};
    use crossline_store::StoredRejectedEvent;

    fn rejected(index: u32, message_id: Option<&str>, raw: &str) -> StoredRejectedEvent {
        StoredRejectedEvent {
            id: format!("rej_{index:032x}"),
            received_at: Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).unwrap(),
            endpoint: "/v1/batch".into(),
            index,
            message_id: message_id.map(str::to_owned),
            code: "missing_identity".into(),
            message: format!(
                "batch[{index}]: has neither userId nor anonymousId; every event needs at least one of them"
            ),
            raw: raw.into(),
        }
    }

    #[test]
    fn the_rejected_events_page_matches_its_reviewed_snapshot() {
        let page = RejectedEventPage {
            events: vec![
                rejected(1, Some("bad-1"), r#"{"type":"track","event":"<b>Forgot who</b>"}"#),
                rejected(0, None, "{}"),
            ],
            next_cursor: Some(format!("rej_{:032x}", 0)),
        };
        let html = rejected_content(&page, false, &RejectedRetention::default()).into_string();
        assert!(!html.contains("<b>Forgot"), "the event as sent is text");
        crate::console::snapshot::assert_snapshot("rejected_events.html", &html);
    }

    #[test]
    fn an_empty_page_says_every_event_was_accepted() {
        let html = rejected_content(&RejectedEventPage::default(), false, &RejectedRetention::default()).into_string();
        assert!(html.contains("Every event you sent was accepted"));
        assert!(html.contains("kept 7 days, at most 10,000"));
        let past_the_end = rejected_content(&RejectedEventPage::default(), true, &RejectedRetention::default());
        assert!(past_the_end.into_string().contains("No older rejected events"));
    }
}
