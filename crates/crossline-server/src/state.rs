//! Shared state of a running server.

use crossline_bus::DynBus;
use crossline_store::DynStore;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: DynStore,
    /// Event bus.
    pub bus: DynBus,
    /// The operator token.
    pub admin_token: Arc<str>,
    /// The settings.
    pub settings: Arc<Settings>,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Trained bots, by workspace and name.
    pub bots: Arc<crate::api::bots::BotRegistry>,
    /// Rate limits of the public endpoints (web chat).
    pub limits: Arc<crate::rate::PublicLimits>,
    /// Fair admission of tracking-API requests to the store, per workspace.
    pub admission: Arc<crate::admission::Admission>,
    /// Failed console sign-ins, per address and account.
    pub logins: Arc<crate::throttle::LoginThrottle>,
}

/// Server settings that handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Region for phone numbers of new workspaces (ISO 3166 alpha-2).
    pub default_region: String,
    /// Time zone of new workspaces (IANA).
    pub default_time_zone: String,
    /// The URL the server is reached at from outside, for links and webhook signatures.
    pub public_url: Option<String>,
    /// A conversation without a message for this long is over; the next message starts a new one.
    pub conversation_idle: chrono::Duration,
    /// How long a fulfilment webhook may take per attempt (there is one retry).
    pub webhook_timeout: std::time::Duration,
    /// Alexa request verification: trusted roots and where certificates are fetched.
    pub alexa: crate::api::alexa::AlexaSettings,
    /// How many rejected events of batches are kept per workspace, and for how long.
    pub rejected_retention: crossline_store::RejectedRetention,
    /// How long a console session lasts after sign-in.
    pub console_session: chrono::Duration,
    /// Whether a reverse proxy in front sets `X-Forwarded-Proto` (then trusted for `Secure` cookies).
    pub trust_proxy: bool,
    /// Timeouts and caps of client connections.
    pub connections: crate::connections::ConnectionSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_region: "US".into(),
            default_time_zone: "UTC".into(),
            public_url: None,
            conversation_idle: chrono::Duration::minutes(30),
            webhook_timeout: std::time::Duration::from_secs(2),
            alexa: Default::default(),
            rejected_retention: Default::default(),
            console_session: chrono::Duration::hours(12),
            trust_proxy: false,
            connections: Default::default(),
        }
    }
}
