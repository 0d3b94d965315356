//! The admin listener: the admin API (policies, nodes, tasks and jobs, rooms, gateways, log
//! level, a live overview), its OpenAPI document, the dashboard, `/metrics`, `/livez`, `/readyz`.
//! A bearer token guards the API; without a configured token it is read-only. The dashboard page
//! and the OpenAPI document hold no data and are served to anyone who reaches the listener.

mod dashboard;
mod fleet;
mod policies;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;
use utoipa::OpenApi;

use super::{AppState, bearer, same_secret};
use crate::store::StoreError;

/// Largest policy component accepted.
const MAX_POLICY_BYTES: usize = 32 << 20;

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/admin/policies", get(policies::list))
        .route("/admin/policies/{role}", put(policies::push))
        .route("/admin/policies/{role}/rollback", post(policies::rollback))
        .route("/admin/policies/{role}/shadow", delete(policies::clear_shadow))
        .route("/admin/policies/{role}/promote", post(policies::promote))
        .route("/admin/policies/{role}/samples", get(policies::samples))
        .route("/admin/policies/{role}/canary", delete(policies::end_canary))
        .route("/admin/nodes", get(fleet::nodes))
        .route("/admin/nodes/{id}/drain", post(fleet::drain))
        .route("/admin/tasks/{id}", get(fleet::task))
        .route("/admin/jobs/{id}", get(fleet::job))
        .route("/admin/rooms", get(fleet::rooms))
        .route("/admin/rooms/{code}", get(fleet::room))
        .route("/admin/gateways", get(fleet::gateways))
        .route("/admin/queues", get(fleet::queues))
        .route("/admin/log-level", put(fleet::log_level))
        .route("/admin/overview", get(dashboard::overview))
        .route("/admin/stream", get(dashboard::stream))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/admin/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/dashboard", get(dashboard::page))
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { super::prometheus::render(&state).await }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(super::readiness::readyz))
        .layer(DefaultBodyLimit::max(MAX_POLICY_BYTES))
        .with_state(state)
}

/// The OpenAPI document of the admin API (`/admin/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard admin API", description = "Policies, fleet, sessions' rooms and gateways of one Switchboard deployment. Send `Authorization: Bearer <admin_token>`; without a configured token only GET works."),
    paths(
        policies::list,
        policies::push,
        policies::rollback,
        policies::clear_shadow,
        policies::promote,
        policies::samples,
        policies::end_canary,
        fleet::nodes,
        fleet::drain,
        fleet::task,
        fleet::job,
        fleet::rooms,
        fleet::room,
        fleet::gateways,
        fleet::queues,
        fleet::log_level,
        dashboard::overview,
        dashboard::stream,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The admin API's failures; the one place they become HTTP responses.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("admin_token is not configured: the admin API is read-only")]
    ReadOnly,
    #[error("unknown policy role `{0}`: use node-selection, room-routing or admission")]
    UnknownRole(String),
    #[error("unknown mode `{0}`: use active or shadow")]
    UnknownMode(String),
    #[error("policy rejected: {0}")]
    Rejected(String),
    #[error("no earlier version to roll back to")]
    NothingToRollBack,
    #[error("no shadow or canary version")]
    NothingToPromote,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid log filter: {0}")]
    BadFilter(String),
    #[error("the policy store is unavailable: {0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::ReadOnly => StatusCode::FORBIDDEN,
            AdminError::UnknownRole(_) => StatusCode::NOT_FOUND,
            AdminError::UnknownMode(_) => StatusCode::BAD_REQUEST,
            AdminError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::NothingToRollBack | AdminError::NothingToPromote => StatusCode::CONFLICT,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::BadFilter(_) => StatusCode::BAD_REQUEST,
            AdminError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

async fn authorize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    match &state.config.admin_token {
        Some(token) => {
            let presented = bearer(request.headers()).unwrap_or("");
            if !same_secret(presented, token) {
                return Err(AdminError::Unauthorized);
            }
        }
        None if request.method() != Method::GET => return Err(AdminError::ReadOnly),
        None => {}
    }
    Ok(next.run(request).await)
}
