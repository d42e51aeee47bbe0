//! The web console (placeholder replaced below).
use crate::state::AppState;
use axum::Router;

/// Console routes.
pub fn router() -> Router<AppState> {
    Router::new()
}
