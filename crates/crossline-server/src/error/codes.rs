//! Every error code the server answers with, its HTTP status and what it means: the one list
//! behind error responses, chat error frames and the table in `docs/api.md` (a test keeps that
//! table identical to [`ErrorCode::table`]).

use axum::http::StatusCode;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:literal, $sentence:literal;)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $sentence] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the documentation's table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as clients see it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status it is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::from_u16($status).expect("a valid status"),)*
                }
            }

            /// When it is answered, for the documentation.
            pub fn sentence(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $sentence,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidJson = "invalid_json", 400, "the body (or one event of a batch, or a chat frame) is not JSON of the expected shape";
    MissingField = "missing_field", 400, "a required field is absent (`event` for track, `groupId` for group, `previousId` for alias, `batch`, …)";
    InvalidField = "invalid_field", 400, "a field has the wrong type or value (`type`, `timestamp`, `properties`, consent values, a bot definition's field, …)";
    MissingIdentity = "missing_identity", 400, "an event has neither `userId` nor `anonymousId`";
    ReservedEventName = "reserved_event_name", 400, "a track event named as one Crossline records itself (`conversation.started`, `conversation.handoff`, `conversation.resolved`, `conversation.sla_breached`, `csat.submitted`): the supervisor view counts only the server's own";
    InvalidIdentity = "invalid_identity", 400, "`traits.email`, `traits.phone`, `context.device.token` cannot be an identity";
    InvalidEncoding = "invalid_encoding", 400, "`Content-Encoding: gzip` but the body is not gzip";
    InvalidQuery = "invalid_query", 400, "a query parameter is wrong (`limit`, `trait`/`value`, …)";
    TooManyTraits = "too_many_traits", 400, "the event would give its profile more traits than `max_traits_per_profile` (500)";
    TraitTooLarge = "trait_too_large", 400, "a trait's value is larger than `max_trait_value_bytes` (4 KiB as JSON), or its name longer than 256 bytes";
    TraitsTooLarge = "traits_too_large", 400, "the event would make its profile's traits larger than `max_trait_bytes_per_profile` (64 KiB as JSON)";
    TooManyIdentities = "too_many_identities", 400, "the event would give its profile more identities of one kind than `max_identities_per_kind` (100), by attaching them or by a merge";
    UnverifiedRequest = "unverified_request", 400, "a channel webhook's request failed the provider's verification (Alexa's signature, certificate, skill or timestamp); nothing was read or stored";
    Unauthorized = "unauthorized", 401, "missing or unknown key, token or signature";
    Forbidden = "forbidden", 403, "the credential is valid but not for this (operator token on a workspace endpoint, API key creating workspaces)";
    CrossSiteRequest = "cross_site_request", 403, "a change authenticated by the console's session cookie came from another site (docs/security.md)";
    IdentityNotVerified = "identity_not_verified", 403, "a chat `identify` named a user, email or phone its `userHash` does not cover (the workspace has an identity secret)";
    NotFound = "not_found", 404, "no such profile, workspace, bot or endpoint (also for another workspace's ids)";
    ChannelDisabled = "channel_disabled", 404, "the channel (web chat, Twilio, Alexa) is not configured for the workspace";
    BodyTimeout = "body_timeout", 408, "the request's body did not arrive within `body_timeout_secs` (30 s); the connection is closed";
    Conflict = "conflict", 409, "a name in use (a workspace, a segment, a template, a campaign), or an action the object's state does not allow (a campaign whose segment or template is gone, pausing a completed campaign)";
    AlreadyAssigned = "already_assigned", 409, "the conversation is not where the request needs it: another agent took it first (two accepted at once), it is resolved, or the agent does not have it; the message says which";
    NotDeliverable = "not_deliverable", 409, "an agent's message cannot reach the customer on their channel (they opted out of it, or have no reachable number there); nothing was stored or sent";
    DuplicateMessage = "duplicate_message", 409, "a channel's message id was handled before (a provider's retry or a replay); it is not answered again";
    EventTooLarge = "event_too_large", 413, "an event above 32 KB (after decompression)";
    RequestTooLarge = "request_too_large", 413, "a request above 500 KB (after decompression)";
    UnsupportedEncoding = "unsupported_encoding", 415, "a `Content-Encoding` other than gzip";
    RateLimited = "rate_limited", 429, "too many messages (a customer's turns with a bot, a chat visitor's frames, new chat sockets from one address)";
    TooManyConnections = "too_many_connections", 429, "the client's address holds `max_connections_per_ip` connections, all busy";
    Internal = "internal", 500, "the server failed; details are in its log, and nothing of the request was stored";
    InternalPanic = "internal_panic", 500, "a bug: the handler panicked; it was logged and counted (`crossline_panics_total`)";
    ConversationBusy = "conversation_busy", 503, "the conversation kept changing while the message was handled (several nodes answering at once); send it again";
    ConnectionLimit = "connection_limit", 503, "the server holds `max_connections` connections, all busy; try again in a second";
}

impl ErrorCode {
    /// The code of a name, as the domain crates give it (`crossline-core`'s validation and limits).
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|code| code.as_str() == name)
    }

    /// The table of `docs/api.md` § Errors.
    pub fn table() -> String {
        let mut table = String::from("| status | code | when |\n|---|---|---|\n");
        for code in ErrorCode::ALL {
            table.push_str(&format!("| {} | `{}` | {} |\n", code.status().as_u16(), code.as_str(), code.sentence()));
        }
        table
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in `docs/api.md` is the one the enum renders.
    #[test]
    fn the_documented_table_is_the_enum() {
        let docs = include_str!("../../../../docs/api.md");
        let table = ErrorCode::table();
        assert!(
            docs.contains(&table),
            "docs/api.md § Errors must hold exactly this table (every code, its status and sentence):\n{table}"
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
    }

    /// Every code the domain crates produce has its place in the enum: the codes written in
    /// `crossline-core`'s validation and profile limits are read from its source.
    #[test]
    fn every_code_of_the_core_is_known() {
        let sources = [
            include_str!("../../../crossline-core/src/event.rs"),
            include_str!("../../../crossline-core/src/limits.rs"),
        ];
        let mut found = 0;
        for source in sources {
            for (index, _) in source.match_indices("EventValidationError::new(").chain(source.match_indices("code: \""))
            {
                let rest = &source[index..];
                let Some(start) = rest.find('"') else { continue };
                let name: String =
                    rest[start + 1..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if name.is_empty() {
                    continue;
                }
                found += 1;
                assert!(ErrorCode::parse(&name).is_some(), "crossline-core answers `{name}`, which ErrorCode lacks");
            }
        }
        assert!(found >= 8, "the scan found the core's codes ({found})");
    }
}
