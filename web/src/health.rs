//! `/healthz` (the process answers) and `/readyz` (it can do its job: the
//! store answers, the key-server engine answers, and every group with
//! cooperative key servers knows its role). No token: they say nothing
//! but "ok" or what is not ready (docs/OPERATIONS.md, "Health").

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::ApiState;

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(s): State<ApiState>) -> Response {
    let mut not_ready = Vec::new();
    if let Err(e) = s.store.groups().await {
        not_ready.push(format!("store: {e}"));
    }
    not_ready.extend(s.control.not_ready().await);
    if not_ready.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let mut body = not_ready.join("\n");
        body.push('\n');
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `/healthz` and `/readyz`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}
