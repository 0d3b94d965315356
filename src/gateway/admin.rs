//! The admin listener: the admin API for policies (list, push, shadow, rollback), `/metrics`,
//! `/livez`, `/readyz`. A bearer token guards it; without a configured token it is read-only.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, constant_time_eq};
use crate::policy::{Rejected, Role, sha256_hex};
use crate::scheduler::{PolicySlot, RollbackReply, SchedulerError, SetPolicyReply};

/// Largest policy component accepted.
const MAX_POLICY_BYTES: usize = 32 << 20;

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/admin/policies", get(list))
        .route("/admin/policies/{role}", put(push))
        .route("/admin/policies/{role}/rollback", post(rollback))
        .route("/admin/policies/{role}/shadow", delete(clear_shadow))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { super::prometheus::render(&state).await }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(super::readyz))
        .layer(DefaultBodyLimit::max(MAX_POLICY_BYTES))
        .with_state(state)
}

/// The admin API's failures; the one place they become HTTP responses.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("admin_token is not configured: the admin API is read-only")]
    ReadOnly,
    #[error("unknown policy role `{0}`: use node-selection or room-routing")]
    UnknownRole(String),
    #[error("unknown mode `{0}`: use active or shadow")]
    UnknownMode(String),
    #[error("policy rejected: {0}")]
    Rejected(String),
    #[error("no earlier version to roll back to")]
    NothingToRollBack,
    #[error("the policy store is unavailable: {0}")]
    Store(#[from] SchedulerError),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::ReadOnly => StatusCode::FORBIDDEN,
            AdminError::UnknownRole(_) => StatusCode::NOT_FOUND,
            AdminError::UnknownMode(_) => StatusCode::BAD_REQUEST,
            AdminError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::NothingToRollBack => StatusCode::CONFLICT,
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
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
                return Err(AdminError::Unauthorized);
            }
        }
        None if request.method() != Method::GET => return Err(AdminError::ReadOnly),
        None => {}
    }
    Ok(next.run(request).await)
}

fn role(name: &str) -> Result<Role, AdminError> {
    Role::parse(name).ok_or_else(|| AdminError::UnknownRole(name.chars().take(64).collect()))
}

async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AdminError> {
    let mut stored = serde_json::Map::new();
    for role in Role::ALL {
        let s = state.scheduler.policy_state(role.as_str()).await?;
        stored.insert(
            role.as_str().into(),
            json!({ "active": s.active, "shadow": s.shadow, "version": s.version }),
        );
    }
    Ok(Json(json!({
        "gateway_id": &*state.gateway_id,
        "policies": state.policies.status(),
        "stored": stored,
    })))
}

#[derive(Deserialize)]
struct PushQuery {
    mode: Option<String>,
}

/// Validates a component like the loader does, then stores it; every gateway loads it from Redis.
async fn push(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PushQuery>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let role = role(&name)?;
    let slot = match query.mode.as_deref().unwrap_or("active") {
        "active" => PolicySlot::Active,
        "shadow" => PolicySlot::Shadow,
        other => return Err(AdminError::UnknownMode(other.chars().take(32).collect())),
    };
    let policies = state.policies.clone();
    let bytes = body.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let result = policies.prepare(role, &bytes, "admin").map(|_| ());
        if let Err(why) = &result {
            policies.reject(role, &bytes, "admin", why);
        }
        result
    })
    .await
    .map_err(|e| AdminError::Rejected(format!("validation did not finish: {e}")))?;
    checked.map_err(|why: Rejected| AdminError::Rejected(why.to_string()))?;
    let sha = sha256_hex(&body);
    let version = match state.scheduler.set_policy(role.as_str(), slot, &sha, &body).await? {
        SetPolicyReply::Ok { version } => version,
        SetPolicyReply::MissingBlob => unreachable!("the blob is stored by the same call"),
    };
    let mode = if slot == PolicySlot::Active { "active" } else { "shadow" };
    tracing::info!(role = role.as_str(), sha256 = %sha, mode, "Policy pushed.");
    Ok(Json(json!({ "role": role, "sha256": sha, "mode": mode, "version": version })))
}

async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let role = role(&name)?;
    match state.scheduler.rollback_policy(role.as_str()).await? {
        RollbackReply::Ok { active, version } => {
            let active = if active.is_empty() { "embedded".to_owned() } else { active };
            tracing::info!(role = role.as_str(), %active, "Policy rolled back.");
            Ok(Json(json!({ "role": role, "active": active, "version": version })))
        }
        RollbackReply::Empty => Err(AdminError::NothingToRollBack),
    }
}

async fn clear_shadow(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let role = role(&name)?;
    let reply = state.scheduler.set_policy(role.as_str(), PolicySlot::Shadow, "", b"").await?;
    let SetPolicyReply::Ok { version } = reply else { unreachable!("clearing stores no blob") };
    Ok(Json(json!({ "role": role, "shadow": null, "version": version })))
}
