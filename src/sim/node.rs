//! A simulated worker node: registers, heartbeats, answers every `job_assign` after a delay drawn
//! from a range, failing a given share of jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{SimError, next_json};

#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The id to register under (the gateway draws one when absent).
    pub node_id: Option<String>,
    pub asr_languages: Vec<String>,
    pub semantic_languages: Vec<String>,
    pub capacity: u32,
    pub heartbeat: Duration,
    /// Time between a `job_assign` and its `job_result`: uniform in `answer_delay..=answer_delay_max`.
    pub answer_delay: Duration,
    pub answer_delay_max: Duration,
    /// Share of jobs answered with `success: false`.
    pub failure_rate: f64,
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    /// A node serving `asr × semantic` with `capacity` slots that answers at once.
    pub fn new(asr: &[&str], semantic: &[&str], capacity: u32) -> Self {
        Self {
            node_id: None,
            asr_languages: asr.iter().map(|l| l.to_string()).collect(),
            semantic_languages: semantic.iter().map(|l| l.to_string()).collect(),
            capacity,
            heartbeat: Duration::from_secs(5),
            answer_delay: Duration::ZERO,
            answer_delay_max: Duration::ZERO,
            failure_rate: 0.0,
            labels: BTreeMap::new(),
        }
    }

    fn delay(&self) -> Duration {
        if self.answer_delay_max <= self.answer_delay {
            return self.answer_delay;
        }
        let span = (self.answer_delay_max - self.answer_delay).as_secs_f64();
        self.answer_delay + Duration::from_secs_f64(span * rand::random::<f64>())
    }
}

/// Connects and registers a node; returns its id and a future that serves it until `stop`.
pub async fn start(
    url: &str,
    spec: NodeSpec,
    answered: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Result<(String, impl Future<Output = ()> + Send + use<>), SimError> {
    let (ws, _) = connect_async_with_config(url, None, true).await?;
    let (mut sink, mut stream) = ws.split();
    let register = json!({
        "type": "node_register", "version": "sim", "platform": "linux", "node_id": spec.node_id, "labels": spec.labels,
        "capability_by_type": [{"type":"asr","ready":true},{"type":"nmt","ready":true},{"type":"tts","ready":true}],
        "language_capabilities": {"asr_languages": spec.asr_languages, "semantic_languages": spec.semantic_languages},
        "max_concurrent_jobs": spec.capacity,
    });
    sink.send(Message::Text(register.to_string().into())).await?;
    let ack = next_json(&mut stream).await?;
    if ack["type"] != "node_register_ack" {
        return Err(SimError::Unexpected(ack.to_string()));
    }
    let id = ack["node_id"].as_str().unwrap_or_default().to_owned();
    let node_id = id.clone();
    let serve = async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + spec.heartbeat, spec.heartbeat);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = heartbeat.tick() => {
                    let hb = json!({"type":"node_heartbeat","node_id":node_id,"timestamp":crate::protocol::now_ms(),
                        "resource_usage":{"cpu_percent":10.0,"mem_percent":20.0,"running_jobs":0}});
                    if sink.send(Message::Text(hb.to_string().into())).await.is_err() { break }
                }
                Some(out) = rx.recv() => {
                    if sink.send(Message::Text(out.into())).await.is_err() { break }
                }
                message = next_json(&mut stream) => {
                    let Ok(m) = message else { break };
                    if m["type"] != "job_assign" { continue }
                    let result = if rand::random::<f64>() < spec.failure_rate {
                        json!({"type":"job_result","job_id":m["job_id"],"attempt_id":m["attempt_id"],
                            "node_id":node_id,"success":false,"trace_id":m["trace_id"],
                            "error":{"code":"INTERNAL_ERROR","message":"simulated failure"}})
                    } else {
                        let text = format!("[{}] hello #{}", m["tgt_lang"].as_str().unwrap_or("?"), m["utterance_index"]);
                        json!({"type":"job_result","job_id":m["job_id"],"attempt_id":m["attempt_id"],
                            "node_id":node_id,"session_id":m["session_id"],"utterance_index":m["utterance_index"],
                            "success":true,"text_asr":"ni hao","text_translated":text,"tts_audio":"",
                            "tts_format":"opus","trace_id":m["trace_id"]})
                    }
                    .to_string();
                    answered.fetch_add(1, Ordering::Relaxed);
                    let delay = spec.delay();
                    if delay.is_zero() {
                        if sink.send(Message::Text(result.into())).await.is_err() { break }
                    } else {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(result);
                        });
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    Ok((id, serve))
}
