//! A panic in a handler is caught, logged once, answered 500 `internal_panic` and counted.
//!
//! Input must never panic the server, and tests check it does not; this is the net below them. A panic
//! that escaped a handler used to drop the client's connection without an answer — and clients that
//! retry (the web chat resends an unacknowledged message on every reconnect) then hit it forever with
//! nothing in the metrics to show it.
//!
//! - [`catch_panic`] is the middleware of the whole application (`lib.rs::app`): the panicking request
//!   is answered `500 {"error": {"code": "internal_panic", ...}}`.
//! - [`guard`] runs any other future — one WebSocket frame's work, say — the same way and hands back
//!   [`Panicked`] for the caller to answer as its protocol wants.
//!
//! Both log the panic once, as one `error` event with the route, the panic message and where it
//! happened (and a backtrace when `RUST_BACKTRACE` asks for one), and count it in
//! `crossline_panics_total{route}`. "Once": while a guarded future is polled, the process panic hook
//! (installed on first use, chaining to the previous hook for every other panic) records the panic's
//! location instead of printing its own report.

use crate::error::ApiError;
use crate::error::ErrorCode;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;
use std::task::Poll;

/// The metric counting caught panics, labelled by `route`.
pub const PANICS_METRIC: &str = "crossline_panics_total";

/// What the client is told: nothing of the internals, which are in the log.
const PANIC_MESSAGE: &str = "the server hit an internal fault on this request; it is logged and counted, and retrying will likely fail \
     the same way — report it with the time of the request";

/// A panic caught by [`guard`], already logged and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("panicked at {}: {message}", location.as_deref().unwrap_or("an unknown place"))]
pub struct Panicked {
    /// The panic message (or a note that its payload was not text).
    pub message: String,
    /// `file:line:column` of the panic, when the hook saw it.
    pub location: Option<String>,
}

/// Middleware for the whole application: runs the rest of the stack under [`guard`] and answers a
/// panic `500 internal_panic`. The route in the log and the metric is the matched route template
/// (`/v1/{kind}` style, so the label stays bounded), or `unmatched`.
pub async fn catch_panic(request: Request, next: Next) -> Response {
    // Cheap clones (a shared string, a method enum): nothing is allocated per request for the log.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    match run_guarded(route, method.as_str(), next.run(request)).await {
        Ok(response) => response,
        Err(_) => internal_panic().into_response(),
    }
}

/// The error a caught panic is answered with.
pub fn internal_panic() -> ApiError {
    ApiError::new(ErrorCode::InternalPanic, PANIC_MESSAGE)
}

/// Runs `future`, catching a panic in any of its polls: `Err(Panicked)` once it has been logged and
/// counted under `route` (a fixed name such as `"/chat/{workspace_id}/ws"`: it is a metric label). The
/// future is not polled again after a panic.
///
/// For work outside the request/response cycle that [`catch_panic`] covers: a WebSocket frame, a
/// spawned task.
pub async fn guard<F: Future>(route: &'static str, future: F) -> Result<F::Output, Panicked> {
    run_guarded(route, "", future).await
}

async fn run_guarded<F: Future>(route: &str, method: &str, future: F) -> Result<F::Output, Panicked> {
    install_hook();
    let mut future = std::pin::pin!(future);
    // Polled here rather than through `FutureExt::catch_unwind` so that the hook knows, poll by poll,
    // which panics are caught (and no allocation is added to every request).
    let caught = std::future::poll_fn(|context| {
        let _inside = GuardedPoll::enter();
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(context))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await;
    caught.map_err(|payload| report(route, method, payload.as_ref()))
}

/// Logs and counts one caught panic.
fn report(route: &str, method: &str, payload: &(dyn Any + Send)) -> Panicked {
    let seen = SEEN_BY_HOOK.with(|seen| seen.borrow_mut().take());
    let (message, location, backtrace) = match seen {
        Some(seen) => (seen.message, Some(seen.location), seen.backtrace),
        // Another hook replaced ours after it was installed: the payload is all there is.
        None => (payload_text(payload), None, None),
    };
    tracing::error!(
        route,
        method,
        panic = %message,
        location = location.as_deref().unwrap_or("unknown"),
        backtrace = backtrace.as_deref().unwrap_or(""),
        "a handler panicked; answered as an internal fault ({PANICS_METRIC})"
    );
    metrics::counter!(PANICS_METRIC, "route" => route.to_owned()).increment(1);
    Panicked { message, location }
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic payload that is not text)".to_owned()
    }
}

/// What the hook saw of a panic inside a guarded poll.
struct SeenPanic {
    message: String,
    location: String,
    backtrace: Option<String>,
}

thread_local! {
    /// How many guarded polls are running on this thread (nested guards each count).
    static GUARDED_POLLS: Cell<u32> = const { Cell::new(0) };
    /// The last panic inside a guarded poll on this thread, until [`report`] takes it.
    static SEEN_BY_HOOK: RefCell<Option<SeenPanic>> = const { RefCell::new(None) };
}

/// Marks the current thread as inside a guarded poll for as long as it lives.
struct GuardedPoll;

impl GuardedPoll {
    fn enter() -> Self {
        GUARDED_POLLS.with(|polls| polls.set(polls.get() + 1));
        GuardedPoll
    }
}

impl Drop for GuardedPoll {
    fn drop(&mut self) {
        GUARDED_POLLS.with(|polls| polls.set(polls.get().saturating_sub(1)));
    }
}

/// Installs, once per process, a panic hook that keeps the report of a guarded panic for [`report`] to
/// log, and hands every other panic to the hook that was there before (the default report to stderr).
fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if GUARDED_POLLS.with(Cell::get) == 0 {
                previous(info);
                return;
            }
            let backtrace = Backtrace::capture();
            let seen = SeenPanic {
                message: payload_text(info.payload()),
                location: info.location().map_or_else(|| "unknown".to_owned(), ToString::to_string),
                backtrace: (backtrace.status() == BacktraceStatus::Captured).then(|| backtrace.to_string()),
            };
            SEEN_BY_HOOK.with(|slot| *slot.borrow_mut() = Some(seen));
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    fn panics_counted(route: &str) -> u64 {
        let rendered = crate::metrics_handle().render();
        let prefix = format!("{PANICS_METRIC}{{route=\"{route}\"}} ");
        rendered.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |value| value.parse().unwrap())
    }

    async fn boom() -> &'static str {
        panic!("boom at the handler")
    }

    async fn boom_after_a_wait() -> String {
        tokio::task::yield_now().await;
        let index = std::hint::black_box(7);
        [1, 2, 3][index].to_string()
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_counted() {
        let app = Router::new()
            .route("/test/boom/{id}", get(boom))
            .route("/test/late", get(boom_after_a_wait))
            .route("/test/fine", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(catch_panic));
        let before = panics_counted("/test/boom/{id}");
        let response = app.clone().oneshot(Request::get("/test/boom/42").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal_panic");
        assert!(body["error"]["message"].as_str().unwrap().contains("internal fault"), "{body}");
        assert!(!body.to_string().contains("boom"), "the panic message stays in the log: {body}");
        assert_eq!(panics_counted("/test/boom/{id}"), before + 1, "counted under the route template");

        let response = app.clone().oneshot(Request::get("/test/late").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "a panic after an await is caught too");
        let response = app.oneshot(Request::get("/test/fine").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "the app serves on");
    }

    #[tokio::test]
    async fn guard_hands_back_the_panic_with_its_location() {
        assert_eq!(guard("test.guard", async { 5 }).await, Ok(5));
        let before = panics_counted("test.guard");
        let caught = guard("test.guard", async {
            tokio::task::yield_now().await;
            panic!("frame {} broke", 3)
        })
        .await
        .unwrap_err();
        assert_eq!(caught.message, "frame 3 broke");
        // The location comes from this crate's hook: the panic was reported once, by `report`.
        assert!(caught.location.as_deref().is_some_and(|at| at.contains("panic.rs")), "{caught:?}");
        assert_eq!(panics_counted("test.guard"), before + 1);
        let caught = guard("test.guard", async { std::panic::panic_any(42_u8) }).await.unwrap_err();
        assert!(caught.message.contains("not text"), "{caught:?}");
        // A panic outside any guard still reaches the previous hook and unwinds as usual.
        assert!(std::panic::catch_unwind(|| panic!("unguarded")).is_err());
        assert_eq!(GUARDED_POLLS.with(Cell::get), 0);
    }
}
