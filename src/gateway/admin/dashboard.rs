//! The dashboard: one self-contained page (`assets/dashboard.html`, no CDN) and the live overview
//! it draws, as JSON (`/admin/overview`) and as a server-sent event stream (`/admin/stream`, one
//! overview a second).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{Value, json};

use super::AdminError;
use super::fleet::record_json;
use crate::gateway::AppState;
use crate::protocol::now_ms;

/// Rooms and nodes the overview shows at most.
const OVERVIEW_ROOMS: usize = 50;
const OVERVIEW_NODES: usize = 200;

pub async fn page() -> Html<&'static str> {
    Html(include_str!("../../../assets/dashboard.html"))
}

/// Everything the dashboard shows, now: counters, latency, nodes, policies, rooms, gateways.
#[utoipa::path(get, path = "/admin/overview", tag = "dashboard",
    responses((status = 200, description = "A snapshot of this gateway and the fleet", body = serde_json::Value)))]
pub async fn overview(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(snapshot(&state).await?))
}

/// The overview once a second as server-sent events (`data: <overview JSON>`).
#[utoipa::path(get, path = "/admin/stream", tag = "dashboard",
    responses((status = 200, description = "text/event-stream of overviews", content_type = "text/event-stream")))]
pub async fn stream(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures_util::stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = state.shutdown.cancelled() => return None,
            }
        }
        let event = match snapshot(&state).await {
            Ok(view) => Event::default().event("overview").data(view.to_string()),
            Err(err) => Event::default().event("error").data(err.to_string()),
        };
        Some((Ok(event), (state, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn snapshot(state: &AppState) -> Result<Value, AdminError> {
    let m = &state.metrics;
    let counters: serde_json::Map<String, Value> =
        m.snapshot().into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect();
    let ms = |us: u64| us as f64 / 1000.0;
    // Bounded work per overview (one a second per open dashboard): a page of nodes, and the rooms
    // of this gateway's sessions rather than a scan of the keyspace.
    let (nodes, nodes_online) = state.store.list_nodes(OVERVIEW_NODES).await?;
    let mut rooms = Vec::new();
    let mut codes: Vec<String> = state.peers.rooms().into_keys().collect();
    codes.sort();
    for code in codes.into_iter().take(OVERVIEW_ROOMS) {
        if let Some((_, members)) = state.store.room_record(&code).await? {
            let langs: Vec<Value> = members
                .values()
                .filter_map(|m| serde_json::from_str::<Value>(m).ok())
                .map(|m| m["preferred_lang"].clone())
                .collect();
            rooms.push(json!({ "room_code": code, "members": members.len(), "languages": langs }));
        }
    }
    let (connected_nodes, connected_sessions) = state.peers.counts();
    Ok(json!({
        "gateway_id": &*state.gateway_id,
        "time_ms": now_ms(),
        "counters": counters,
        "failures": &*m.failures.lock(),
        "latency_ms": {
            "dispatch_p50": ms(m.dispatch_latency.quantile(0.5)),
            "dispatch_p99": ms(m.dispatch_latency.quantile(0.99)),
            "result_p50": ms(m.result_latency.quantile(0.5)),
            "result_p99": ms(m.result_latency.quantile(0.99)),
        },
        "connected": { "nodes": connected_nodes, "sessions": connected_sessions },
        "nodes": nodes.iter().map(record_json).collect::<Vec<_>>(),
        "nodes_online": nodes_online,
        "policies": { "loaded": state.policies.status(), "stored": super::policies::stored(state).await? },
        "rooms": rooms,
        "gateways": super::fleet::registry(state).await?,
        "waiting": super::fleet::waiting(state).await?,
    }))
}
