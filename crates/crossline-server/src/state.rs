//! Shared state of a running server.

use crossline_bus::DynBus;
use crossline_store::DynStore;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// What every handler can reach. Built by [`AppState::new`].
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
    pub bots: Arc<crossline_engine::BotRegistry>,
    /// The conversation engine every channel shares.
    pub conversations: Arc<crossline_engine::Conversations>,
    /// Rate limits of the public endpoints (web chat).
    pub limits: Arc<crate::rate::PublicLimits>,
    /// When the store last answered a health check: checks within a second of it answer at once.
    pub last_healthy: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Fair admission of tracking-API requests to the store, per workspace.
    pub admission: Arc<crate::admission::Admission>,
    /// Failed console sign-ins, per address and account.
    pub logins: Arc<crate::throttle::LoginThrottle>,
    /// The only way anything becomes an event: stored, then published.
    pub recorder: crossline_engine::EventRecorder,
    /// Every outbound HTTP call, with the egress rules.
    pub egress: crossline_engine::Egress,
    /// Alexa's signing certificate chains fetched lately.
    pub alexa_certs: Arc<crate::api::alexa::CertCache>,
    /// Event destinations: saved through the API, delivered in the background.
    pub destinations: Arc<crossline_engine::destinations::Destinations>,
    /// The durable worker, running in the background.
    pub worker: Arc<crossline_engine::worker::Worker>,
    /// Engagement: segments, templates, campaigns and the delivery senders.
    pub engage: Arc<crossline_engage::Engage>,
    /// The contact centre: agents, and conversations people have.
    pub contact_centre: Arc<crossline_engine::agents::ContactCentre>,
    /// Users of the console and the API: invitations, passwords, roles.
    pub users: Arc<crossline_engine::users::Users>,
    /// Live views of conversations on this node (chat sockets, inboxes).
    pub live: Arc<crate::live::LiveConversations>,
    /// The other nodes this one hears of: the limits above are shared by them.
    pub cluster: Arc<crate::cluster::Cluster>,
}

impl AppState {
    /// The state of a server on these backends with these settings.
    pub fn new(store: DynStore, bus: DynBus, admin_token: &str, settings: Settings) -> Self {
        let recorder = crossline_engine::EventRecorder::new(store.clone(), bus.clone());
        let cluster = Arc::new(crate::cluster::Cluster::new(crossline_core::ids::new_random_id("node")));
        let egress = crossline_engine::Egress::new(settings.egress.clone());
        let bots = Arc::new(crossline_engine::BotRegistry::new(
            store.clone(),
            egress.clone(),
            crossline_engine::bots::DEFAULT_MODEL_CAPACITY,
        ));
        let conversations = Arc::new(crossline_engine::Conversations::new(
            store.clone(),
            recorder.clone(),
            bots.clone(),
            egress.clone(),
            crossline_engine::ConversationSettings {
                idle: settings.conversation_idle,
                webhook_timeout: settings.webhook_timeout,
                cluster: cluster.share().clone(),
            },
        ));
        let destinations = Arc::new(crossline_engine::destinations::Destinations::new(
            store.clone(),
            egress.clone(),
            settings.destinations.clone(),
            crossline_core::ids::new_random_id("node"),
        ));
        let worker = Arc::new(crossline_engine::worker::Worker::new(
            store.clone(),
            Arc::new(crossline_engine::worker::SystemClock),
            crossline_engine::worker::WorkerConfig::default(),
        ));
        let engage = Arc::new(crossline_engage::Engage::new(
            store.clone(),
            recorder.clone(),
            egress.clone(),
            crossline_engage::PipelineConfig {
                public_url: settings.public_url.clone().unwrap_or_else(|| "http://127.0.0.1:8080".into()),
                ..Default::default()
            },
        ));
        let contact_centre = Arc::new(crossline_engine::agents::ContactCentre::new(store.clone(), recorder.clone()));
        let users = Arc::new(crossline_engine::users::Users::new(store.clone(), contact_centre.clone()));
        AppState {
            last_healthy: Arc::default(),
            users,
            contact_centre,
            live: Arc::default(),
            engage,
            recorder,
            egress,
            destinations,
            worker,
            bots,
            conversations,
            admission: Arc::new(crate::admission::Admission::new(settings.ingest_concurrency_per_workspace)),
            store,
            bus,
            admin_token: admin_token.into(),
            settings: Arc::new(settings),
            metrics: crate::metrics_handle(),
            limits: Arc::new(crate::rate::PublicLimits::default().shared_by(cluster.share())),
            cluster,
            logins: Default::default(),
            alexa_certs: Default::default(),
        }
    }
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
    /// Tracking-API requests of one workspace in the store at once.
    pub ingest_concurrency_per_workspace: usize,
    /// What outbound HTTP calls may reach.
    pub egress: crossline_engine::EgressRules,
    /// How event destinations are delivered to.
    pub destinations: crossline_engine::destinations::DestinationSettings,
    /// How long an agent who closed the inbox has to come back before they go offline and their
    /// conversations wait in their queues again.
    pub agent_grace: std::time::Duration,
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
            ingest_concurrency_per_workspace: crate::admission::DEFAULT_PER_WORKSPACE,
            egress: Default::default(),
            destinations: Default::default(),
            agent_grace: std::time::Duration::from_secs(120),
        }
    }
}
