//! What each role may do: one table for every API route and console page.
//!
//! A route belongs to an area of the product; a role has no access, read access or write access to
//! each area. Reading is `GET`/`HEAD` and the few `POST`s that change nothing (recognising an
//! utterance, previewing a template). The API key of a workspace acts as `admin`; an agent token as
//! `agent`; the operator token is not a role (it manages workspaces and may look at any).
//!
//! The check runs in the extractors every handler uses ([`crate::auth::Caller`] and the console's
//! [`crate::console::session::Session`]) against the route axum matched, so a route cannot be
//! reached without it; a route this table does not know is open to `admin` alone.
//!
//! | area | admin | marketer | supervisor | agent | viewer |
//! |---|---|---|---|---|---|
//! | team (users, keys) | write | — | — | — | — |
//! | settings (channels, destinations, messaging settings, dead jobs) | write | read | read | — | read |
//! | engagement (profiles, segments, templates, campaigns, calls) | write | write | read | — | read |
//! | bots | write | write | read | — | read |
//! | contact centre (agents, queues, canned replies, supervisor view) | write | read | write | read¹ | read |
//! | conversations with people (and the inbox) | write | read | write | write² | read |
//! | data (rejected events, overview) | read | read | read | — | read |
//!
//! ¹ through the API (agents and queues, to route and transfer), and their own status; not the
//! supervisor view. ² the conversations they take or are given; the handlers check which.

use axum::http::Method;
use crossline_store::users::Role;

/// A part of the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Users and the workspace's keys.
    Team,
    /// Channels, destinations, messaging settings, the worker's dead letters.
    Settings,
    /// Profiles and everything that reaches customers: segments, templates, campaigns, calls.
    Engagement,
    /// Bot definitions, recognition, and messages sent to bots through the API.
    Bots,
    /// Agents, queues and the supervisor view.
    ContactCentre,
    /// Conversations with people, and the inbox.
    Conversations,
    /// What was ingested: rejected events, the overview.
    Data,
}

/// How much of an area a role has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing.
    None,
    /// Reads.
    Read,
    /// Reads and changes.
    Write,
}

/// A role's access to an area.
pub fn access(role: Role, area: Area) -> Access {
    use Access::{None, Read, Write};
    match (role, area) {
        (Role::Admin, Area::Data) => Read,
        (Role::Admin, _) => Write,
        (_, Area::Team) => None,
        (Role::Marketer, Area::Engagement | Area::Bots) => Write,
        (Role::Supervisor, Area::ContactCentre | Area::Conversations) => Write,
        (Role::Marketer | Role::Supervisor | Role::Viewer, _) => Read,
        (Role::Agent, Area::Conversations) => Write,
        (Role::Agent, Area::ContactCentre) => Read,
        (Role::Agent, _) => None,
    }
}

/// The area of an API route (as axum matched it, e.g. `/api/v1/profiles/{id}`).
pub fn api_area(route: &str) -> Option<Area> {
    const AREAS: [(&str, Area); 17] = [
        ("/api/v1/users", Area::Team),
        ("/api/v1/workspaces", Area::Team),
        ("/api/v1/channels", Area::Settings),
        ("/api/v1/destinations", Area::Settings),
        ("/api/v1/jobs", Area::Settings),
        ("/api/v1/settings", Area::Settings),
        ("/api/v1/profiles", Area::Engagement),
        ("/api/v1/segments", Area::Engagement),
        ("/api/v1/templates", Area::Engagement),
        ("/api/v1/campaigns", Area::Engagement),
        ("/api/v1/calls", Area::Engagement),
        // Messages sent to bots as a customer: a machine's integration, never an agent's.
        ("/api/v1/conversations/messages", Area::Bots),
        ("/api/v1/bots", Area::Bots),
        ("/api/v1/agents", Area::ContactCentre),
        ("/api/v1/queues", Area::ContactCentre),
        ("/api/v1/canned-replies", Area::ContactCentre),
        ("/api/v1/conversations", Area::Conversations),
    ];
    if route.starts_with("/api/v1/rejected-events") {
        return Some(Area::Data);
    }
    AREAS.iter().find(|(prefix, _)| under(route, prefix)).map(|(_, area)| *area)
}

/// The area of a console page (as axum matched it, e.g. `/segments/{id}`).
pub fn page_area(route: &str) -> Option<Area> {
    const AREAS: [(&str, Area); 13] = [
        ("/users", Area::Team),
        ("/workspaces", Area::Team),
        ("/channels", Area::Settings),
        ("/settings", Area::Settings),
        ("/profiles", Area::Engagement),
        ("/segments", Area::Engagement),
        ("/templates", Area::Engagement),
        ("/campaigns", Area::Engagement),
        ("/bots", Area::Bots),
        ("/supervisor", Area::ContactCentre),
        ("/inbox", Area::Conversations),
        ("/rejected", Area::Data),
        ("/", Area::Data),
    ];
    AREAS.iter().find(|(prefix, _)| route == *prefix || under(route, prefix)).map(|(_, area)| *area)
}

/// Whether `route` is `prefix` or below it.
fn under(route: &str, prefix: &str) -> bool {
    route.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether a request to `route` only reads.
fn reads(method: &Method, route: &str) -> bool {
    const READING_POSTS: [&str; 3] =
        ["/api/v1/bots/{name}/recognize", "/api/v1/templates/preview", "/templates/preview"];
    matches!(*method, Method::GET | Method::HEAD) || (*method == Method::POST && READING_POSTS.contains(&route))
}

/// The access a request needs.
fn needed(method: &Method, route: &str) -> Access {
    if reads(method, route) { Access::Read } else { Access::Write }
}

/// Whether `role` may call the API `route` with `method`.
pub fn api_allows(role: Role, method: &Method, route: &str) -> bool {
    // An agent sets their own status (the handler checks whose).
    if role == Role::Agent && *method == Method::PUT && route == "/api/v1/agents/{id}/status" {
        return true;
    }
    allows(role, api_area(route), needed(method, route))
}

/// Whether `role` may open the console `route` with `method`. Agents have the inbox: the
/// supervisor view (colleagues' load, CSAT) is for the others.
pub fn page_allows(role: Role, method: &Method, route: &str) -> bool {
    if role == Role::Agent && under(route, "/supervisor") {
        return false;
    }
    allows(role, page_area(route), needed(method, route))
}

fn allows(role: Role, area: Option<Area>, needed: Access) -> bool {
    match area {
        Some(area) => access(role, area) >= needed,
        None => role == Role::Admin,
    }
}

/// Whether a role sees agents' phones (often personal numbers): admins and supervisors (`None`:
/// the operator).
pub fn sees_phones(role: Option<Role>) -> bool {
    matches!(role, None | Some(Role::Admin | Role::Supervisor))
}

/// Whether a role says where an agent's calls are put through (their `phone`): admins only — a
/// phone pointed at a premium-rate number or a stranger's SIP server is paid for by the workspace
/// and hears its customers.
pub fn sets_phones(role: Option<Role>) -> bool {
    matches!(role, None | Some(Role::Admin))
}

/// The sentence of a refusal.
pub fn refusal(role: Role, method: &Method, route: &str) -> String {
    let what = if reads(method, route) { "see" } else { "change" };
    let hint = match role {
        Role::Agent => " (agents have the inbox and the conversation API)",
        Role::Viewer => " (viewers read and change nothing)",
        _ => "",
    };
    format!("the {role} role may not {what} this{hint}; ask an admin of the workspace for another role")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_as_documented() {
        let get = Method::GET;
        let post = Method::POST;
        assert!(api_allows(Role::Admin, &post, "/api/v1/users"));
        for role in [Role::Marketer, Role::Supervisor, Role::Agent, Role::Viewer] {
            assert!(!api_allows(role, &get, "/api/v1/users"), "{role}");
            assert!(!api_allows(role, &post, "/api/v1/workspaces/{id}/keys/{kind}/rotate"), "{role}");
        }
        assert!(api_allows(Role::Marketer, &post, "/api/v1/campaigns"));
        assert!(!api_allows(Role::Supervisor, &post, "/api/v1/campaigns"));
        assert!(api_allows(Role::Supervisor, &Method::PUT, "/api/v1/queues/{name}"));
        assert!(!api_allows(Role::Marketer, &Method::PUT, "/api/v1/queues/{name}"));
        assert!(api_allows(Role::Agent, &post, "/api/v1/conversations/{id}/assign"));
        assert!(!api_allows(Role::Agent, &post, "/api/v1/conversations/messages"), "agents cannot pose as customers");
        assert!(api_allows(Role::Agent, &Method::PUT, "/api/v1/agents/{id}/status"));
        assert!(!api_allows(Role::Agent, &Method::DELETE, "/api/v1/agents/{id}"));
        assert!(!api_allows(Role::Agent, &get, "/api/v1/profiles"));
        assert!(api_allows(Role::Viewer, &post, "/api/v1/bots/{name}/recognize"), "recognising changes nothing");
        assert!(!api_allows(Role::Viewer, &Method::PUT, "/api/v1/bots/{name}"));
        assert!(!api_allows(Role::Marketer, &get, "/api/v1/unknown"), "unknown routes: admin only");
        assert!(api_allows(Role::Admin, &get, "/api/v1/unknown"));
        assert!(!api_allows(Role::Admin, &post, "/api/v1/rejected-events"), "data is read-only for everyone");
        assert!(page_allows(Role::Agent, &get, "/inbox/ws"));
        assert!(!page_allows(Role::Agent, &get, "/supervisor"));
        assert!(page_allows(Role::Viewer, &get, "/supervisor"));
        assert!(!page_allows(Role::Agent, &get, "/"));
        assert!(!page_allows(Role::Agent, &get, "/profiles/{id}"));
        assert!(page_allows(Role::Viewer, &get, "/campaigns/{id}"));
        assert!(!page_allows(Role::Viewer, &post, "/campaigns/{id}/{action}"));
        assert!(page_allows(Role::Viewer, &post, "/templates/preview"));
        assert!(!page_allows(Role::Marketer, &post, "/channels/smtp"));
        assert!(page_allows(Role::Admin, &post, "/users/{id}"));
        assert!(!page_allows(Role::Supervisor, &get, "/users"));
        assert!(!under("/usersx", "/users"));
    }
}
