//! Policy versions: list, push (active, shadow or canary), promote, roll back, end the canary,
//! clear the shadow, recent decisions for replay.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;

use super::AdminError;
use crate::gateway::AppState;
use crate::policy::{Rejected, Role, sha256_hex};
use crate::protocol::clip;
use crate::store::{CanaryEnd, PolicySlot, RollbackReply, SetPolicyReply};

pub(super) fn role(name: &str) -> Result<Role, AdminError> {
    Role::parse(name).ok_or_else(|| AdminError::UnknownRole(clip(name, 64)))
}

/// Each role's versions in memory (active, shadow, stats, last rejection), the stored state and
/// the rollback history.
#[utoipa::path(get, path = "/admin/policies", tag = "policies",
    responses((status = 200, description = "Policy state of this gateway and of the store", body = serde_json::Value)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AdminError> {
    Ok(Json(json!({
        "gateway_id": &*state.gateway_id,
        "policies": state.policies.status(),
        "stored": stored(&state).await?,
    })))
}

/// Per role, the stored state every gateway follows: active, shadow, canary, version, rollback
/// history, and the logged changes (pushes, promotions, rollbacks, canaries ended), newest first.
pub(super) async fn stored(state: &AppState) -> Result<serde_json::Value, AdminError> {
    let mut stored = serde_json::Map::new();
    for role in Role::ALL {
        let s = state.store.policy_state(role.as_str()).await?;
        let history = state.store.policy_history(role.as_str()).await?;
        let events = state.store.policy_events(role.as_str()).await?;
        stored.insert(
            role.as_str().into(),
            json!({ "active": s.active, "shadow": s.shadow, "canary": s.canary, "canary_share": s.canary_share,
                "canary_rolled_back": s.canary_rolled_back, "canary_reason": s.canary_reason,
                "version": s.version, "history": history, "events": events }),
        );
    }
    Ok(serde_json::Value::Object(stored))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct PushQuery {
    /// `active` (default), `shadow`, or `canary` (with `share`).
    mode: Option<String>,
    /// Canary: percent of the calls it decides, 1..100.
    share: Option<u32>,
}

/// Validates a component like the loader does, then stores it; every gateway loads it from Redis.
#[utoipa::path(put, path = "/admin/policies/{role}", tag = "policies",
    params(("role" = String, Path, description = "node-selection, room-routing or admission"), PushQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The policy component"),
    responses(
        (status = 200, description = "Stored; every gateway loads it", body = serde_json::Value),
        (status = 400, description = "Unknown mode"), (status = 401, description = "Missing or wrong token"),
        (status = 404, description = "Unknown role"), (status = 413, description = "Over 32 MiB"),
        (status = 422, description = "Rejected: does not load, fails its smoke test or is not pinned")))]
pub async fn push(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PushQuery>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let role = role(&name)?;
    let slot = match query.mode.as_deref().unwrap_or("active") {
        "active" => PolicySlot::Active,
        "shadow" => PolicySlot::Shadow,
        "canary" => match query.share {
            Some(share @ 1..=100) => PolicySlot::Canary { share },
            _ => return Err(AdminError::UnknownMode("canary needs share=1..100".into())),
        },
        other => return Err(AdminError::UnknownMode(clip(other, 32))),
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
    let version = match state.store.set_policy(role.as_str(), slot, &sha, &body).await? {
        SetPolicyReply::Ok { version } => version,
        SetPolicyReply::MissingBlob | SetPolicyReply::Stale => {
            unreachable!("the blob is stored by the same call; only canary_off is stale")
        }
    };
    let mode = match slot {
        PolicySlot::Active => "active",
        PolicySlot::Shadow => "shadow",
        PolicySlot::Canary { .. } => "canary",
    };
    tracing::info!(role = role.as_str(), sha256 = %sha, mode, "Policy pushed.");
    Ok(Json(json!({ "role": role, "sha256": sha, "mode": mode, "version": version })))
}

/// Makes the previous active version active again.
#[utoipa::path(post, path = "/admin/policies/{role}/rollback", tag = "policies",
    params(("role" = String, Path, description = "node-selection, room-routing or admission")),
    responses((status = 200, description = "Rolled back", body = serde_json::Value),
        (status = 409, description = "No earlier version")))]
pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let role = role(&name)?;
    match state.store.rollback_policy(role.as_str()).await? {
        RollbackReply::Ok { active, version } => {
            let active = if active.is_empty() { "embedded".to_owned() } else { active };
            tracing::info!(role = role.as_str(), %active, "Policy rolled back.");
            Ok(Json(json!({ "role": role, "active": active, "version": version })))
        }
        RollbackReply::Empty => Err(AdminError::NothingToRollBack),
    }
}

/// Makes the shadow version active on every gateway (its stored blob; the shadow slot empties).
#[utoipa::path(post, path = "/admin/policies/{role}/promote", tag = "policies",
    params(("role" = String, Path, description = "node-selection, room-routing or admission")),
    responses((status = 200, description = "Promoted", body = serde_json::Value),
        (status = 409, description = "No shadow version to promote")))]
pub async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let role = role(&name)?;
    let stored = state.store.policy_state(role.as_str()).await?;
    // The canary first: it has been deciding live calls; else the shadow.
    let (sha, from) = match (stored.canary.is_empty(), stored.shadow.is_empty()) {
        (false, _) => (stored.canary, "canary"),
        (true, false) => (stored.shadow, "shadow"),
        (true, true) => return Err(AdminError::NothingToPromote),
    };
    match state.store.set_policy(role.as_str(), PolicySlot::Active, &sha, b"").await? {
        SetPolicyReply::Ok { version } => {
            tracing::info!(role = role.as_str(), sha256 = %sha, from, "Policy promoted to active.");
            Ok(Json(json!({ "role": role, "active": sha, "promoted": from, "version": version })))
        }
        _ => Err(AdminError::Rejected(format!("the {from} version's bytes are gone"))),
    }
}

/// Recent live decisions of this gateway with their inputs, in the fixture format of `policy test
/// --fixtures`: what `policy replay` runs a candidate version on.
#[utoipa::path(get, path = "/admin/policies/{role}/samples", tag = "policies",
    params(("role" = String, Path, description = "node-selection, room-routing or admission")),
    responses((status = 200, description = "The kept decisions, oldest first", body = serde_json::Value)))]
pub async fn samples(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    match role(&name)? {
        Role::NodeSelection => Ok(Json(json!(state.policies.selection_samples()))),
        Role::RoomRouting => Ok(Json(json!(state.policies.routing_samples()))),
        Role::Admission => Ok(Json(json!(state.policies.admission_samples()))),
    }
}

/// Ends the role's canary on every gateway (an operator's rollback of it).
#[utoipa::path(delete, path = "/admin/policies/{role}/canary", tag = "policies",
    params(("role" = String, Path, description = "node-selection, room-routing or admission")),
    responses((status = 200, description = "Canary ended", body = serde_json::Value),
        (status = 409, description = "No canary")))]
pub async fn end_canary(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let role = role(&name)?;
    let canary = state.store.policy_state(role.as_str()).await?.canary;
    if canary.is_empty()
        || !state
            .store
            .end_canary(role.as_str(), &canary, CanaryEnd::RollBack, "ended by an operator", "admin")
            .await?
    {
        return Err(AdminError::NothingToPromote);
    }
    Ok(Json(json!({ "role": role, "canary": null, "ended": canary })))
}

/// Stops running a shadow version.
#[utoipa::path(delete, path = "/admin/policies/{role}/shadow", tag = "policies",
    params(("role" = String, Path, description = "node-selection, room-routing or admission")),
    responses((status = 200, description = "Shadow cleared", body = serde_json::Value)))]
pub async fn clear_shadow(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let role = role(&name)?;
    let reply = state.store.set_policy(role.as_str(), PolicySlot::Shadow, "", b"").await?;
    let SetPolicyReply::Ok { version } = reply else { unreachable!("clearing stores no blob") };
    Ok(Json(json!({ "role": role, "shadow": null, "version": version })))
}
