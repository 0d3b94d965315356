//! The fleet as stored in Redis: nodes (and draining one), tasks and jobs by id, rooms, gateways;
//! and the log level of this gateway.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::AdminError;
use crate::gateway::AppState;
use crate::protocol::clip;
use crate::store::Record;

/// Fields of stored records that hold names, not numbers, even when they look like numbers.
const NAME_FIELDS: &[&str] =
    &["id", "node", "task", "job", "gateway", "tried", "pairs", "ready", "cell", "state", "code", "room_id"];

/// A stored record as JSON: numeric fields as numbers, JSON fields (spec, labels, info) parsed.
pub(super) fn record_json(record: &Record) -> Value {
    let fields = record.iter().map(|(k, v)| {
        let value = if matches!(k.as_str(), "spec" | "labels" | "info" | "jobs") {
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
        } else if NAME_FIELDS.contains(&k.as_str()) {
            Value::String(v.clone())
        } else if let Ok(n) = v.parse::<i64>() {
            json!(n)
        } else if let Ok(x) = v.parse::<f64>() {
            json!(x)
        } else {
            Value::String(v.clone())
        };
        (k.clone(), value)
    });
    Value::Object(fields.collect())
}

/// Online nodes: load, capacity, pairs, readiness, labels, cell, gateway, usage, jobs in flight.
#[utoipa::path(get, path = "/admin/nodes", tag = "fleet",
    responses((status = 200, description = "Online nodes, by id", body = serde_json::Value)))]
pub async fn nodes(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    let (nodes, _) = state.store.list_nodes(usize::MAX).await?;
    Ok(Json(json!({ "nodes": nodes.iter().map(record_json).collect::<Vec<_>>() })))
}

/// Drains a node: it leaves every load index and gets no new jobs; its jobs in flight finish.
#[utoipa::path(post, path = "/admin/nodes/{id}/drain", tag = "fleet",
    params(("id" = String, Path, description = "Node id")),
    responses((status = 200, description = "Draining", body = serde_json::Value),
        (status = 404, description = "No such online node")))]
pub async fn drain(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    if !state.store.drain_node_by_operator(&id).await? {
        return Err(AdminError::NotFound(format!("node {}", clip(&id, 64))));
    }
    tracing::info!(node.id = %id, "Node drained by an operator.");
    Ok(Json(json!({ "node_id": id, "draining": true })))
}

/// A task: state, attempts, tried nodes, current job, spec (recipients, languages), timings.
#[utoipa::path(get, path = "/admin/tasks/{id}", tag = "fleet",
    params(("id" = String, Path, description = "Task id: <session>:<utterance_index>:<tgt_lang>")),
    responses((status = 200, description = "The task", body = serde_json::Value), (status = 404, description = "Unknown or expired")))]
pub async fn task(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let record = state
        .store
        .task_record(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("task {}", clip(&id, 64))))?;
    Ok(Json(record_json(&record)))
}

/// A job attempt: its task, node, attempt, state and timings (assigned, acked, started, done).
#[utoipa::path(get, path = "/admin/jobs/{id}", tag = "fleet",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = serde_json::Value), (status = 404, description = "Unknown or expired")))]
pub async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let record = state
        .store
        .job_record(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("job {}", clip(&id, 64))))?;
    Ok(Json(record_json(&record)))
}

/// Live rooms (a page of at most 500 codes).
#[utoipa::path(get, path = "/admin/rooms", tag = "rooms",
    responses((status = 200, description = "Room codes", body = serde_json::Value)))]
pub async fn rooms(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(json!({ "rooms": state.store.room_codes().await? })))
}

/// A room and its members.
#[utoipa::path(get, path = "/admin/rooms/{code}", tag = "rooms",
    params(("code" = String, Path, description = "6-digit room code")),
    responses((status = 200, description = "The room", body = serde_json::Value), (status = 404, description = "No such room")))]
pub async fn room(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let (room, members) = state
        .store
        .room_record(&code)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("room {}", clip(&code, 64))))?;
    let members: Vec<Value> = members.values().filter_map(|m| serde_json::from_str(m).ok()).collect();
    Ok(Json(json!({ "room_code": code, "room": record_json(&room), "members": members })))
}

/// Live gateways (with their presence deadline) and gateways found dead recently.
#[utoipa::path(get, path = "/admin/gateways", tag = "gateways",
    responses((status = 200, description = "The gateway registry", body = serde_json::Value)))]
pub async fn gateways(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(registry(&state).await?))
}

/// This gateway, the live ones with their presence deadline, those found dead recently.
pub(super) async fn registry(state: &AppState) -> Result<Value, AdminError> {
    let live = state.store.gateways().await?;
    let dead = state.store.dead_gateways().await?;
    let view = |list: Vec<(String, u64)>, field: &str| -> Vec<Value> {
        list.into_iter().map(|(id, ms)| json!({ "gateway_id": id, field: ms })).collect()
    };
    Ok(json!({
        "this": &*state.gateway_id,
        "live": view(live, "presence_deadline_ms"),
        "dead": view(dead, "found_dead_ms"),
    }))
}

/// Sets this gateway's log filter (`RUST_LOG` syntax, e.g. `info,switchboard=debug`).
#[utoipa::path(put, path = "/admin/log-level", tag = "gateways",
    request_body(content = String, content_type = "text/plain", description = "A log filter"),
    responses((status = 200, description = "Applied", body = serde_json::Value), (status = 400, description = "Invalid filter")))]
pub async fn log_level(body: Bytes) -> Result<Json<Value>, AdminError> {
    let filter = std::str::from_utf8(&body).map_err(|_| AdminError::BadFilter("not UTF-8".into()))?.trim();
    crate::set_log_filter(filter).map_err(AdminError::BadFilter)?;
    tracing::info!(filter, "Log filter changed.");
    Ok(Json(json!({ "filter": filter })))
}

/// Tasks waiting for a slot per cell, tenant and pool, and running per tenant (the fair queue's
/// counts).
#[utoipa::path(get, path = "/admin/queues", tag = "fleet",
    responses((status = 200, description = "Per cell: `tenants` (waiting), `pools` (waiting), `running`", body = serde_json::Value)))]
pub async fn queues(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(json!({ "waiting": waiting(&state).await? })))
}

pub(super) async fn waiting(state: &AppState) -> Result<Value, AdminError> {
    let cells = state.store.queues().await?;
    Ok(json!(
        cells
            .into_iter()
            .map(|q| json!({ "cell": q.cell, "tenants": q.waiting, "pools": q.pools, "running": q.running }))
            .collect::<Vec<_>>()
    ))
}
