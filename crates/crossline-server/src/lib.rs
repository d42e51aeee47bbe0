//! The Crossline HTTP server.
//!
//! [`run`] serves the product on a listener until a shutdown future resolves, so tests start it
//! in-process on port 0 and the binary starts it on the configured address.
//!
//! **Invariant:** this crate knows no SQL; it speaks to storage only through
//! [`crossline_store::Store`].

pub mod admission;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod connections;
pub mod console;
pub mod error;
pub mod live;
pub mod openapi;
pub mod panic;
pub mod rate;
pub mod roles;
pub mod sessions;
pub mod state;
pub mod throttle;

pub use state::{AppState, Settings};

use crate::error::ErrorCode;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpListener;

/// The process-wide Prometheus recorder (a recorder can be installed once per process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding several servers).
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The whole application: API, ingestion, console, docs, health and metrics.
pub fn app(state: AppState) -> Router {
    let (api_router, openapi) = openapi::router().split_for_parts();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        // Provider webhooks: authenticated by the provider's signature, so not in the API document.
        .route("/hooks/{workspace_id}/twilio/sms", axum::routing::post(api::channels::twilio_sms))
        .route("/hooks/{workspace_id}/twilio/voice", axum::routing::post(api::channels::twilio_voice))
        .route("/hooks/{workspace_id}/alexa", axum::routing::post(api::alexa::alexa))
        .route("/hooks/{workspace_id}/twilio/status", axum::routing::post(api::channels::twilio_status))
        .route("/hooks/{workspace_id}/twilio/call/{delivery_id}", axum::routing::post(api::calls::twilio_call))
        .route(
            "/hooks/{workspace_id}/twilio/call/{delivery_id}/status",
            axum::routing::post(api::calls::twilio_call_status),
        )
        // A recipient's unsubscribe link: deliberately public, named by an unguessable delivery id.
        .route("/u/{workspace_id}/{delivery_id}", get(api::engage::unsubscribe_page).post(api::engage::unsubscribe))
        // Opens and clicks of an email, named by its delivery id; a click's target is signed.
        .route("/o/{workspace_id}/{delivery_id}", get(api::engage::open_pixel))
        .route("/c/{workspace_id}/{delivery_id}", get(api::engage::click))
        .route("/chat/{workspace_id}", get(api::webchat::page))
        .route("/chat/{workspace_id}/ws", get(api::webchat::socket))
        .route("/kiosk/{workspace_id}", get(api::webchat::kiosk))
        .route("/widget.js", get(api::webchat::widget_script))
        .route("/widget-sw.js", get(api::webchat::widget_service_worker))
        .route("/widget/frame", get(api::webchat::widget_frame))
        .merge(api_router)
        .merge(openapi::docs(openapi))
        .merge(console::router())
        .fallback(not_found)
        .layer(axum::middleware::map_response(close_after_refused_body))
        .layer(axum::middleware::from_fn(panic::catch_panic))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// A request refused for its size is answered before its body was read: the connection is closed
/// after the answer, and says so (`Connection: close`), so a client does not send its next request on
/// a connection the server is about to drop.
async fn close_after_refused_body(mut response: axum::response::Response) -> axum::response::Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

/// Serve until `shutdown` resolves, then stop accepting, finish in-flight requests and return.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, store = state.store.backend(), bus = state.bus.backend(), "serving");
    let settings = state.settings.connections.clone();
    // Background work — event destinations and the durable worker — runs while the server does.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut background = background(&state, stopped.clone());
    let until = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    background.push(tokio::spawn(state.live.clone().run(state.bus.clone(), until(stopped.clone()))));
    background.push(tokio::spawn(cluster::run(state.clone(), until(stopped.clone()))));
    background.push(tokio::spawn(live::run_router(state.clone(), until(stopped))));
    connections::serve(listener, app(state), settings, shutdown).await?;
    let _ = stop.send(true);
    for task in background {
        let _ = task.await;
    }
    tracing::info!("stopped accepting; in-flight requests finished");
    Ok(())
}

/// Start the background work of a node: event destinations, the delivery senders and the durable worker, until `stop`
/// turns true. `crossline worker` runs just this.
pub fn background(state: &AppState, stop: tokio::sync::watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let until = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    vec![
        tokio::spawn(state.destinations.clone().run(until(stop.clone()))),
        tokio::spawn(state.engage.clone().run(until(stop.clone()))),
        tokio::spawn(state.engage.clone().listen(state.bus.clone(), until(stop.clone()))),
        tokio::spawn(state.worker.clone().run(until(stop))),
    ]
}

/// How long a store that answered a health check counts as healthy without asking it again: a
/// monitor polling often (or a flood of checks) costs the store one query a second.
const HEALTH_FRESH: Duration = Duration::from_secs(1);

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let ok = || (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"})));
    let fresh = |at: &Option<std::time::Instant>| at.is_some_and(|at| at.elapsed() < HEALTH_FRESH);
    if fresh(&state.last_healthy.lock().unwrap_or_else(|p| p.into_inner())) {
        return ok();
    }
    let answer = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    *state.last_healthy.lock().unwrap_or_else(|p| p.into_inner()) =
        matches!(answer, Ok(Ok(()))).then(std::time::Instant::now);
    match answer {
        Ok(Ok(())) => ok(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "health check: storage failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "unavailable", "reason": "storage"})),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "unavailable", "reason": "storage timeout"})),
        ),
    }
}

async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn not_found() -> error::ApiError {
    error::ApiError::new(ErrorCode::NotFound, "no such endpoint; see /api/docs for the API")
}
