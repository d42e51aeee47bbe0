//! Layered configuration: built-in defaults, then a TOML file, then `CROSSLINE_*` environment
//! variables, then command-line flags. Everything is validated before the server starts, and a
//! bad value stops it with one sentence naming the setting and the fix.

use crossline_core::limits::ProfileLimits;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Every setting of `crossline serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Directory of the embedded store (and the generated operator token).
    pub data_dir: PathBuf,
    /// `postgres://...` to use PostgreSQL instead of the embedded store.
    pub database_url: Option<String>,
    /// `nats://...` to use NATS JetStream instead of the in-process bus.
    pub nats_url: Option<String>,
    /// The operator token; generated and saved under `data_dir` when unset.
    pub admin_token: Option<String>,
    /// The URL the server is reached at from outside (links, webhook signatures).
    pub public_url: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// A tracing filter such as `info` or `crossline=debug,info`.
    pub log_level: String,
    /// Default phone region of new workspaces.
    pub default_region: String,
    /// Default time zone of new workspaces.
    pub default_time_zone: String,
    /// Minutes without a message after which a conversation is over.
    pub conversation_idle_minutes: u32,
    /// Seconds an agent who closed the inbox has to come back before their conversations are re-queued.
    pub agent_grace_seconds: u32,
    /// A PEM file of the roots Alexa's signing certificates must chain to (default: the public roots).
    pub alexa_trust_roots: Option<PathBuf>,
    /// Fetch Alexa's signing certificates from this base URL instead of https://s3.amazonaws.com.
    pub alexa_cert_fetch_base: Option<String>,
    /// Traits one profile may have.
    pub max_traits_per_profile: usize,
    /// Bytes (as JSON) of one trait's value.
    pub max_trait_value_bytes: usize,
    /// Bytes (names and values as JSON) of all of one profile's traits.
    pub max_trait_bytes_per_profile: usize,
    /// Identities of one kind one profile may have.
    pub max_identities_per_kind: usize,
    /// Tracking-API requests of one workspace the store works on at once; more wait their turn, so
    /// one flooding workspace cannot fill the writer's queue ahead of the others.
    pub ingest_concurrency_per_workspace: usize,
    /// Seconds a client has to send a request's header (from its first byte, or the connection).
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    pub body_timeout_secs: u64,
    /// Seconds an idle keep-alive connection is kept between requests.
    pub keepalive_timeout_secs: u64,
    /// Connections open at once; unset: a little under the open-files limit.
    pub max_connections: Option<usize>,
    /// Connections open at once from one address (an IPv6 /64 is one); 0: no limit.
    pub max_connections_per_ip: usize,
    /// Connections of one address waiting for a request; a new one closes the oldest.
    pub max_pending_connections_per_ip: usize,
    /// Connections waiting for a request over all addresses; a new one closes the oldest.
    pub max_pending_connections: usize,
    /// Hours a console session lasts after sign-in.
    pub console_session_hours: u32,
    /// Trust `X-Forwarded-Proto` from a reverse proxy in front (for `Secure` cookies).
    pub trust_proxy: bool,
    /// Let outbound calls (fulfilment webhooks, event destinations, providers) reach private,
    /// loopback and link-local addresses: for tests, fake providers and on-premise receivers.
    pub allow_private_egress: bool,
    /// Seconds an event is retried for a destination that does not take it before it is kept as a failure.
    pub destination_retry_window_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("crossline-data"),
            database_url: None,
            nats_url: None,
            admin_token: None,
            public_url: None,
            log_format: "text".into(),
            log_level: "info".into(),
            default_region: "US".into(),
            default_time_zone: "UTC".into(),
            conversation_idle_minutes: 30,
            agent_grace_seconds: 120,
            alexa_trust_roots: None,
            alexa_cert_fetch_base: None,
            max_traits_per_profile: ProfileLimits::default().traits_per_profile,
            max_trait_value_bytes: ProfileLimits::default().trait_value_bytes,
            max_trait_bytes_per_profile: ProfileLimits::default().trait_bytes_per_profile,
            max_identities_per_kind: ProfileLimits::default().identities_per_kind,
            ingest_concurrency_per_workspace: crossline_server::admission::DEFAULT_PER_WORKSPACE,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            keepalive_timeout_secs: 75,
            max_connections: None,
            max_connections_per_ip: 4096,
            max_pending_connections_per_ip: 512,
            max_pending_connections: 2048,
            console_session_hours: 12,
            trust_proxy: false,
            allow_private_egress: false,
            destination_retry_window_secs: 3600,
        }
    }
}

/// The environment variables read, as `CROSSLINE_` + the upper-cased key.
const ENV_KEYS: [&str; 30] = [
    "listen",
    "data_dir",
    "database_url",
    "nats_url",
    "admin_token",
    "public_url",
    "log_format",
    "log_level",
    "default_region",
    "default_time_zone",
    "conversation_idle_minutes",
    "agent_grace_seconds",
    "alexa_trust_roots",
    "alexa_cert_fetch_base",
    "max_traits_per_profile",
    "max_trait_value_bytes",
    "max_trait_bytes_per_profile",
    "max_identities_per_kind",
    "ingest_concurrency_per_workspace",
    "header_timeout_secs",
    "body_timeout_secs",
    "keepalive_timeout_secs",
    "max_connections",
    "max_connections_per_ip",
    "max_pending_connections_per_ip",
    "max_pending_connections",
    "console_session_hours",
    "trust_proxy",
    "allow_private_egress",
    "destination_retry_window_secs",
];

/// Flags given on the command line; they override everything else.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Load from defaults, `file` (if given, it must exist), the environment, and `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!(
                    "configuration file {} does not exist; check --config or CROSSLINE_CONFIG",
                    file.display()
                );
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("CROSSLINE_").only(&ENV_KEYS)).merge(Serialized::defaults(overrides));
        let config: Config = figment.extract().map_err(|err| anyhow::anyhow!("configuration error: {err}"))?;
        config.validate()?;
        Ok(config)
    }

    /// What one profile may hold.
    pub fn profile_limits(&self) -> ProfileLimits {
        ProfileLimits {
            traits_per_profile: self.max_traits_per_profile,
            trait_value_bytes: self.max_trait_value_bytes,
            trait_bytes_per_profile: self.max_trait_bytes_per_profile,
            identities_per_kind: self.max_identities_per_kind,
        }
    }

    /// Check every setting; the error names the setting and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        self.profile_limits().validate().map_err(|err| anyhow::anyhow!("{}", err.replace("limits.", "max_")))?;
        if self.ingest_concurrency_per_workspace == 0 {
            anyhow::bail!(
                "ingest_concurrency_per_workspace is 0; give a positive number (default {})",
                crossline_server::admission::DEFAULT_PER_WORKSPACE
            );
        }
        for (name, value) in [
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("keepalive_timeout_secs", self.keepalive_timeout_secs),
        ] {
            if !(1..=3600).contains(&value) {
                anyhow::bail!("{name} (CROSSLINE_{}) must be 1 to 3600 seconds", name.to_uppercase());
            }
        }
        if self.max_connections == Some(0)
            || self.max_pending_connections_per_ip == 0
            || self.max_pending_connections == 0
        {
            anyhow::bail!(
                "max_connections, max_pending_connections and max_pending_connections_per_ip must be positive (leave max_connections unset to follow the open-files limit)"
            );
        }
        if !(1..=720).contains(&self.console_session_hours) {
            anyhow::bail!("console_session_hours (CROSSLINE_CONSOLE_SESSION_HOURS) must be 1 to 720 (30 days)");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            anyhow::bail!(
                "database_url (CROSSLINE_DATABASE_URL) must start with postgres://, e.g. postgres://user@127.0.0.1:5432/crossline; unset it to use the embedded store"
            );
        }
        if let Some(url) = &self.nats_url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            anyhow::bail!(
                "nats_url (CROSSLINE_NATS_URL) must start with nats://, e.g. nats://127.0.0.1:4222; unset it to use the in-process bus"
            );
        }
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            anyhow::bail!(
                "admin_token (CROSSLINE_ADMIN_TOKEN) is too short: use at least 16 characters, e.g. the output of `openssl rand -hex 24`"
            );
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            anyhow::bail!(
                "public_url (CROSSLINE_PUBLIC_URL) must be an http:// or https:// URL, e.g. https://crossline.example.com"
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            anyhow::bail!("log_format (CROSSLINE_LOG_FORMAT) is \"{}\"; use text or json", self.log_format);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            anyhow::bail!(
                "log_level (CROSSLINE_LOG_LEVEL) \"{}\" is not a valid filter; use e.g. info, debug or crossline=debug,info",
                self.log_level
            );
        }
        if !crossline_core::identity::is_known_region(&self.default_region) {
            anyhow::bail!(
                "default_region (CROSSLINE_DEFAULT_REGION) \"{}\" is not an ISO 3166 alpha-2 code such as US, GB or DE",
                self.default_region
            );
        }
        if self.default_time_zone.parse::<chrono_tz::Tz>().is_err() {
            anyhow::bail!(
                "default_time_zone (CROSSLINE_DEFAULT_TIME_ZONE) \"{}\" is not an IANA time zone such as UTC or Europe/Paris",
                self.default_time_zone
            );
        }
        if !(1..=10_080).contains(&self.conversation_idle_minutes) {
            anyhow::bail!(
                "conversation_idle_minutes (CROSSLINE_CONVERSATION_IDLE_MINUTES) must be 1 to 10080 (a week)"
            );
        }
        if !(1..=86_400).contains(&self.agent_grace_seconds) {
            anyhow::bail!("agent_grace_seconds (CROSSLINE_AGENT_GRACE_SECONDS) must be 1 to 86400 (a day)");
        }
        if let Some(base) = &self.alexa_cert_fetch_base
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            anyhow::bail!(
                "alexa_cert_fetch_base (CROSSLINE_ALEXA_CERT_FETCH_BASE) \"{base}\" is not an http(s) URL such as https://certs.example.com"
            );
        }
        self.alexa_settings()?;
        Ok(())
    }

    /// Alexa request verification settings: trust roots read from `alexa_trust_roots`.
    pub fn alexa_settings(&self) -> anyhow::Result<crossline_server::api::alexa::AlexaSettings> {
        let roots = match &self.alexa_trust_roots {
            None => crossline_channels::alexa::TrustRoots::public(),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|err| {
                    anyhow::anyhow!(
                        "alexa_trust_roots (CROSSLINE_ALEXA_TRUST_ROOTS) {}: cannot be read ({err}); give a PEM file of root certificates",
                        path.display()
                    )
                })?;
                crossline_channels::alexa::TrustRoots::from_pem(&pem).map_err(|err| {
                    anyhow::anyhow!("alexa_trust_roots (CROSSLINE_ALEXA_TRUST_ROOTS) {}: {err}", path.display())
                })?
            }
        };
        Ok(crossline_server::api::alexa::AlexaSettings { roots, cert_fetch_base: self.alexa_cert_fetch_base.clone() })
    }

    /// Timeouts and caps of client connections.
    pub fn connection_settings(&self) -> crossline_server::connections::ConnectionSettings {
        use std::time::Duration;
        crossline_server::connections::ConnectionSettings {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout_secs),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_pending_per_ip: self.max_pending_connections_per_ip,
            max_pending: self.max_pending_connections,
            ..Default::default()
        }
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().map_err(|_| {
            anyhow::anyhow!("listen (--listen or CROSSLINE_LISTEN) \"{}\" is not an address; use HOST:PORT such as 127.0.0.1:8080 or 0.0.0.0:8080", self.listen)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure's error type.
    fn layers_apply_in_order_and_bad_values_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("crossline.toml", "listen = \"127.0.0.1:9000\"\nlog_level = \"debug\"\n")?;
            jail.set_env("CROSSLINE_LOG_LEVEL", "warn");
            jail.set_env("CROSSLINE_TEST_DATABASE_URL", "ignored: not a setting");
            let config = Config::load(Some(Path::new("crossline.toml")), &Overrides::default()).unwrap();
            assert_eq!(config.listen, "127.0.0.1:9000", "file over defaults");
            assert_eq!(config.log_level, "warn", "environment over file");
            let config = Config::load(
                Some(Path::new("crossline.toml")),
                &Overrides { listen: Some("127.0.0.1:9100".into()), data_dir: None },
            )
            .unwrap();
            assert_eq!(config.listen, "127.0.0.1:9100", "flags over everything");

            jail.set_env("CROSSLINE_DATABASE_URL", "mysql://x");
            let err = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("CROSSLINE_DATABASE_URL") && err.contains("postgres://"), "{err}");
            jail.set_env("CROSSLINE_DATABASE_URL", "postgres://localhost/x");
            jail.set_env("CROSSLINE_DEFAULT_TIME_ZONE", "Mars/Olympus");
            let err = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("default_time_zone"), "{err}");
            jail.set_env("CROSSLINE_DEFAULT_TIME_ZONE", "Europe/Paris");
            jail.create_file("typo.toml", "listn = \"x\"\n")?;
            let err = Config::load(Some(Path::new("typo.toml")), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("listn"), "{err}");
            let err = Config::load(Some(Path::new("missing.toml")), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("does not exist"), "{err}");
            Ok(())
        });
    }
}
