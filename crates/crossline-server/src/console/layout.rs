//! The page shell (head, sidebar, main column) and the small pieces every page uses.

use super::assets;
use super::session::Session;
use crate::auth::Caller;
use crate::state::AppState;
use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

/// The section of the console a page belongs to, for the sidebar's highlight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The workspace overview.
    Overview,
    /// Profile search and the customer 360 page.
    Profiles,
    /// Segments: their sizes, members and the builder.
    Segments,
    /// Message templates and their editor.
    Templates,
    /// Campaigns: status, results and funnels.
    Campaigns,
    /// Channels: the SMTP server, the Twilio account and the messaging settings.
    Channels,
    /// Events of batches that failed validation.
    Rejected,
    /// Bots: intents, versions, missed utterances.
    Bots,
    /// The operator's workspace list.
    Workspaces,
    /// The agent inbox.
    Inbox,
    /// The supervisor view of the contact centre.
    Supervisor,
    /// Users and their roles.
    Users,
}

/// A whole HTML document around `body`.
pub fn document(title: &str, body: Markup) -> Markup {
    document_with_csrf(title, body, None)
}

/// A whole HTML document around `body`, with the session's CSRF token for its scripts
/// (`<meta name="csrf-token">`) and in every form that posts.
pub fn document_with_csrf(title: &str, body: Markup, csrf: Option<&str>) -> Markup {
    let body = match csrf {
        Some(token) => with_csrf_fields(body, token),
        None => body,
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light";
                @if let Some(token) = csrf { meta name="csrf-token" content=(token); }
                title { (title) " · Crossline" }
                link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
                link rel="stylesheet" href=(assets::url("console.css"));
                script type="module" src=(assets::url("console.js")) {}
            }
            body { (body) }
        }
    }
}

/// `markup` with the CSRF field inserted at the start of every `<form method="post">`: one place
/// for every form, so a new form cannot forget it. Text from customers is escaped (`<` is `&lt;`), so
/// every `<form` here is the console's own.
pub fn with_csrf_fields(markup: Markup, token: &str) -> Markup {
    let html = markup.into_string();
    let field = html! { input type="hidden" name=(crate::sessions::CSRF_FIELD) value=(token); }.into_string();
    let mut out = String::with_capacity(html.len() + 128);
    let mut rest = html.as_str();
    while let Some(start) = rest.find("<form") {
        let Some(end) = rest[start..].find('>').map(|end| start + end + 1) else {
            break;
        };
        out.push_str(&rest[..end]);
        if rest[start..end].contains(r#"method="post""#) {
            out.push_str(&field);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    maud::PreEscaped(out)
}

/// The logo and name.
pub fn brand() -> Markup {
    html! {
        a.brand href="/" {
            img.brand-mark src=(assets::url("favicon.svg")) alt="";
            "Crossline"
        }
    }
}

/// A console page: sidebar with navigation, workspace and sign-out, and the page's content.
pub fn shell(session: &Session, section: Section, title: &str, content: Markup) -> Markup {
    let current = |candidate: Section| (candidate == section).then_some("page");
    let body = html! {
        div.shell {
            aside.sidebar {
                (brand())
                @if let Some(workspace) = &session.workspace {
                    div.workspace-switch {
                        div.label { "Workspace" }
                        div.name title=(workspace.id) { (workspace.name) }
                        @if session.is_admin() { a href="/workspaces" { "Switch workspace" } }
                    }
                    nav.nav aria-label="Main" {
                        @for (href, page_section, icon_path, label) in NAV {
                            @if session.may_see(href) {
                                a href=(href) aria-current=[current(page_section)] { (icon(icon_path)) (label) }
                            }
                        }
                        @if session.is_admin() {
                            a href="/workspaces" aria-current=[current(Section::Workspaces)] { (icon(WORKSPACES_ICON)) "Workspaces" }
                        }
                    }
                } @else {
                    nav.nav aria-label="Main" {
                        a href="/workspaces" aria-current=[current(Section::Workspaces)] { (icon(WORKSPACES_ICON)) "Workspaces" }
                    }
                }
                div.sidebar-foot {
                    a href="/api/docs" { "API reference" }
                    span.who {
                        @match &session.caller {
                            Caller::Admin => "Signed in as operator",
                            Caller::Workspace(_) => "Signed in with an API key",
                            Caller::Agent(..) => "Signed in as an agent",
                            Caller::User(_, user) => (format!("Signed in as {} ({})", user.name, user.role)),
                        }
                    }
                    form method="post" action="/logout" { button type="submit" { "Sign out" } }
                }
            }
            main.main { (content) }
        }
    };
    document_with_csrf(title, body, Some(&session.csrf))
}

/// The sidebar's links: where, which section, icon, label; each shown only to roles that may open it.
const NAV: [(&str, Section, &str, &str); 11] = [
    ("/", Section::Overview, OVERVIEW_ICON, "Overview"),
    ("/inbox", Section::Inbox, INBOX_ICON, "Inbox"),
    ("/supervisor", Section::Supervisor, SUPERVISOR_ICON, "Supervisor"),
    ("/profiles", Section::Profiles, PROFILES_ICON, "Profiles"),
    ("/segments", Section::Segments, SEGMENTS_ICON, "Segments"),
    ("/templates", Section::Templates, TEMPLATES_ICON, "Templates"),
    ("/campaigns", Section::Campaigns, CAMPAIGNS_ICON, "Campaigns"),
    ("/channels", Section::Channels, CHANNELS_ICON, "Channels"),
    ("/bots", Section::Bots, BOTS_ICON, "Bots"),
    ("/rejected", Section::Rejected, REJECTED_ICON, "Rejected events"),
    ("/users", Section::Users, USERS_ICON, "Users"),
];

const OVERVIEW_ICON: &str = "M3 13h4v8H3zM10 3h4v18h-4zM17 8h4v13h-4z";
const PROFILES_ICON: &str = "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm-8 9a8 8 0 0 1 16 0";
const WORKSPACES_ICON: &str = "M3 4h18v6H3zM3 14h18v6H3z";
const BOTS_ICON: &str = "M4 6h16v11H8l-4 3zM9 11h.01M15 11h.01";
const REJECTED_ICON: &str = "M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zM5.6 5.6l12.8 12.8";
const SEGMENTS_ICON: &str = "M3 5h18l-7 8v6l-4 2v-8z";
const TEMPLATES_ICON: &str = "M6 3h9l4 4v14H6zM14 3v5h5M9 12h7M9 16h7";
const CAMPAIGNS_ICON: &str = "M21 3L3 10.5l7 2.5 2.5 7zM10 13l5-5";
const CHANNELS_ICON: &str = "M3 5h18v14H3zM3 6l9 7 9-7";
const SUPERVISOR_ICON: &str = "M3 3v18h18M7 15l4-4 3 3 5-6";
const USERS_ICON: &str =
    "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21a7 7 0 0 1 14 0M17 11a3 3 0 1 0 0-6M22 21a6 6 0 0 0-5-6";
const INBOX_ICON: &str = "M3 13l3-8h12l3 8v6H3zM3 13h5l1 3h6l1-3h5";

fn icon(path: &str) -> Markup {
    html! {
        svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round" aria-hidden="true" {
            path d=(path) {}
        }
    }
}

/// A page heading with an optional line under it.
pub fn page_head(title: &str, sub: Option<Markup>) -> Markup {
    html! {
        div.page-head {
            div {
                h1 { (title) }
                @if let Some(sub) = sub { div.sub { (sub) } }
            }
        }
    }
}

/// An empty state: what is missing and what to do about it, optionally with a command to copy.
pub fn empty_state(title: &str, advice: Markup, command: Option<&str>) -> Markup {
    html! {
        div.empty {
            h3 { (title) }
            p { (advice) }
            @if let Some(command) = command { pre { code { (command) } } }
        }
    }
}

/// A channel's name as a coloured badge.
pub fn channel_badge(channel: &str) -> Markup {
    html! { span.badge.channel data-channel=(channel) { (channel) } }
}

/// A count with thousands separators: `12,345`.
pub fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A time as `<time>`, shown in UTC to the second.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) title=(at.format("%A, %B %-d, %Y %H:%M:%S UTC").to_string()) {
            (at.format("%b %-d, %Y %H:%M").to_string())
        }
    }
}

/// A time as `<time>` showing the day only; the full time is in its title.
pub fn date(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) title=(at.format("%A, %B %-d, %Y %H:%M:%S UTC").to_string()) {
            (at.format("%b %-d, %Y").to_string())
        }
    }
}

/// A JSON value as short text: strings bare, everything else as JSON, cut at `limit` characters.
pub fn value_text(value: &Value, limit: usize) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > limit {
        let mut cut: String = text.chars().take(limit.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

/// The URL people reach this server at, for commands shown in empty states and links handed out
/// (invitations): `public_url`, else the `Host` reached, over HTTPS when a trusted proxy says so.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.settings.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or("localhost:8080");
    // Behind a trusted proxy that says the request came over HTTPS, links keep HTTPS.
    let scheme = if crate::sessions::secure(state, headers) { "https" } else { "http" };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_posting_form_gets_the_csrf_field() {
        let page = html! {
            form method="post" action="/a" { input name="x"; }
            form method="get" action="/search" {}
            p { "<form method=\"post\">" }
            form.stacked method="post" action="/b" {}
        };
        let out = with_csrf_fields(page, "tok").into_string();
        assert_eq!(out.matches(r#"<input type="hidden" name="csrf" value="tok">"#).count(), 2, "{out}");
        assert!(out.contains(r#"<form method="post" action="/a"><input type="hidden" name="csrf" value="tok">"#));
        assert!(out.contains(r#"<form method="get" action="/search"></form>"#));
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(value_text(&Value::String("abcdef".into()), 4), "abc…");
        assert_eq!(value_text(&serde_json::json!(12), 4), "12");
        assert_eq!(value_text(&serde_json::json!({"a": 1}), 40), "{\"a\":1}");
    }

    #[test]
    fn markup_is_escaped() {
        let rendered = empty_state("<b>", html! { "<script>alert(1)</script>" }, Some("a && b")).into_string();
        assert!(rendered.contains("&lt;b&gt;"));
        assert!(rendered.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(rendered.contains("a &amp;&amp; b"));
        assert!(!rendered.contains("<script>"));
        let badge = channel_badge("\"><img src=x>").into_string();
        assert!(!badge.contains("<img"), "{badge}");
    }
}
