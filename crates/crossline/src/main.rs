//! The `crossline` command: serve, demo, migrate, nlu eval and bench.

mod bot;
mod config;
mod demo;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{Config, Overrides};
use crossline_server::{AppState, Settings};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Crossline: one hub for every channel a business talks to its customers on.
#[derive(Parser)]
#[command(name = "crossline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Embedded SQLite under --data-dir by default; PostgreSQL when
    /// CROSSLINE_DATABASE_URL is set and NATS JetStream when CROSSLINE_NATS_URL is set.
    Serve(ServeArgs),
    /// Start a ready-to-try instance with a demo workspace, sample profiles and events, and print
    /// its URL and credentials.
    Demo(DemoArgs),
    /// Apply database migrations and exit (serve also applies them at start).
    Migrate(ServeArgs),
    /// Run the background work (event destinations, the durable job worker) without serving HTTP:
    /// for PostgreSQL deployments that run it on their own nodes (`serve` runs it too).
    Worker(ServeArgs),
    /// Language-understanding tools.
    #[command(subcommand)]
    Nlu(NluCommand),
    /// Benchmarks: a real server driven over loopback, or the real store in-process.
    #[command(subcommand)]
    Bench(crossline_bench::BenchCommand),
    /// Bot definitions from YAML or JSON files: check them offline, push them to a server.
    #[command(subcommand)]
    Bot(bot::BotCommand),
}

#[derive(Subcommand)]
enum NluCommand {
    /// Train on --train, tune on --validation, evaluate on --test, and print the scores.
    Eval(crossline_nlu_eval::EvalArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080; env: CROSSLINE_LISTEN]
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the embedded store [default: ./crossline-data; env: CROSSLINE_DATA_DIR]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file (keys: listen, data_dir, database_url, nats_url, ...; see docs/operations.md)
    #[arg(long, env = "CROSSLINE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Directory for the demo's data; a fresh temporary directory when not given.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// mimalloc instead of glibc's malloc: ingestion builds and frees many small JSON values on several
/// threads, and glibc's allocator was 10–30 % of those threads' time (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for the whole process (ring: no C toolchain beyond cc, no aws-lc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(load_config(&args)?).await,
            Command::Migrate(args) => migrate(load_config(&args)?).await,
            Command::Worker(args) => worker(load_config(&args)?).await,
            Command::Demo(args) => demo::run(args.listen, args.data_dir).await,
            Command::Nlu(NluCommand::Eval(args)) => {
                tokio::task::spawn_blocking(move || crossline_nlu_eval::run(&args)).await?
            }
            Command::Bench(command) => crossline_bench::run(command).await,
            Command::Bot(command) => bot::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    Config::load(args.config.as_deref(), &Overrides { listen: args.listen.clone(), data_dir: args.data_dir.clone() })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if config.log_format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// The operator token: configured, or generated once and kept under the data directory.
fn admin_token(config: &Config) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(token) = &config.admin_token {
        return Ok((token.clone(), None));
    }
    let path = config.data_dir.join("admin-token");
    if let Ok(saved) = std::fs::read_to_string(&path) {
        let token = saved.trim();
        // An empty or short file would make an empty or guessable operator token.
        if token.len() < 16 {
            anyhow::bail!(
                "the operator token in {} is {} characters long; it needs at least 16: put a long random token in it (e.g. the output of `openssl rand -hex 24`), or delete the file to have one generated",
                path.display(),
                token.len()
            );
        }
        return Ok((token.to_owned(), None));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let token = crossline_core::keys::generate_key(crossline_core::keys::KeyKind::Api).replacen("sk_", "op_", 1);
    write_private(&path, &token)?;
    Ok((token, Some(path)))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

async fn open_backends(config: &Config) -> anyhow::Result<(crossline_store::DynStore, crossline_bus::DynBus)> {
    let store = crossline_store::open_with(config.database_url.as_deref(), &config.data_dir, config.profile_limits())
        .await
        .context("cannot open the store")?;
    let bus = crossline_bus::open(config.nats_url.as_deref()).await.context("cannot open the event bus")?;
    Ok((store, bus))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

/// Build the server state from configuration.
async fn state_for(config: &Config, admin_token: String) -> anyhow::Result<AppState> {
    let (store, bus) = open_backends(config).await?;
    let settings = Settings {
        default_region: config.default_region.clone(),
        default_time_zone: config.default_time_zone.clone(),
        public_url: config.public_url.clone(),
        conversation_idle: chrono::Duration::minutes(i64::from(config.conversation_idle_minutes)),
        agent_grace: std::time::Duration::from_secs(u64::from(config.agent_grace_seconds)),
        webhook_timeout: std::time::Duration::from_secs(2),
        alexa: config.alexa_settings()?,
        rejected_retention: Default::default(),
        console_session: chrono::Duration::hours(i64::from(config.console_session_hours)),
        trust_proxy: config.trust_proxy,
        connections: config.connection_settings(),
        ingest_concurrency_per_workspace: config.ingest_concurrency_per_workspace,
        egress: crossline_engine::EgressRules {
            allow_private: config.allow_private_egress,
            ..crossline_engine::EgressRules::default()
        },
        destinations: crossline_engine::destinations::DestinationSettings {
            retry_window: std::time::Duration::from_secs(config.destination_retry_window_secs),
            ..Default::default()
        },
    };
    Ok(AppState::new(store, bus, &admin_token, settings))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let (token, generated) = admin_token(&config)?;
    let state = state_for(&config, token.clone()).await?;
    let address = config.listen_addr()?;
    let listener =
        crossline_server::connections::bind(address).with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr()?;
    if let Some(path) = generated {
        eprintln!(
            "Generated the operator token (saved in {}; set CROSSLINE_ADMIN_TOKEN to choose your own):\n  {token}",
            path.display()
        );
    }
    println!("crossline listening on http://{local} (store: {}, bus: {})", state.store.backend(), state.bus.backend());
    crossline_server::run(listener, state, shutdown_signal()).await?;
    Ok(())
}

async fn worker(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    if config.database_url.is_none() {
        anyhow::bail!(
            "crossline worker needs CROSSLINE_DATABASE_URL (PostgreSQL): with the embedded store, `crossline serve` delivers in the same process and a second process must not write its database"
        );
    }
    // No HTTP is served, so no operator token is needed: a random one that nobody knows.
    let state = state_for(&config, crossline_core::ids::new_random_id("unused")).await?;
    println!("crossline worker: event destinations and background jobs (store: {})", state.store.backend());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let background = crossline_server::background(&state, stopped);
    shutdown_signal().await;
    let _ = stop.send(true);
    for task in background {
        let _ = task.await;
    }
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let store = crossline_store::open_with(config.database_url.as_deref(), &config.data_dir, config.profile_limits())
        .await
        .context("cannot open the store")?;
    store.ping().await?;
    println!("migrations applied ({} store is up to date)", store.backend());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_short_token_file_stops_the_server_with_a_sentence() {
        let dir = std::env::temp_dir().join(format!("crossline-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config { data_dir: dir.clone(), ..Config::default() };
        for contents in ["", "\n", "  short-token \n"] {
            std::fs::write(dir.join("admin-token"), contents).unwrap();
            let err = admin_token(&config).unwrap_err().to_string();
            assert!(err.contains("needs at least 16"), "{err}");
        }
        std::fs::write(dir.join("admin-token"), "op_0123456789abcdef0123\n").unwrap();
        assert_eq!(admin_token(&config).unwrap().0, "op_0123456789abcdef0123");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
