//! A simulated client session: opens a one_way session and sends utterances, closed loop (K in
//! flight) or open loop (a fixed rate), recording utterance-sent → translation_result latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{SimError, WsSink, WsStream, next_json};
use crate::histogram::Histogram;

pub struct Session {
    pub id: String,
    sink: WsSink,
    stream: WsStream,
    audio: Arc<str>,
}

/// How a session sends.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Keep this many utterances in flight.
    Closed { in_flight: usize },
    /// Send one utterance every interval.
    Open { interval: Duration },
    /// Send nothing (idle sessions).
    Idle,
}

/// What one session saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub sent: u64,
    pub results: u64,
    pub errors: u64,
}

impl Session {
    pub async fn open(url: &str, src: &str, tgt: &str, audio: Arc<str>) -> Result<Self, SimError> {
        Self::open_as(url, src, tgt, None, audio).await
    }

    /// `open`, for a tenant (`session_init.tenant_id`).
    pub async fn open_as(
        url: &str,
        src: &str,
        tgt: &str,
        tenant: Option<&str>,
        audio: Arc<str>,
    ) -> Result<Self, SimError> {
        let (ws, _) = connect_async_with_config(url, None, true).await?;
        let (mut sink, mut stream) = ws.split();
        let init = json!({"type":"session_init","client_version":"sim","platform":"linux",
            "src_lang":src,"tgt_lang":tgt,"mode":"one_way","tenant_id":tenant});
        sink.send(Message::Text(init.to_string().into())).await?;
        let ack = next_json(&mut stream).await?;
        let id = ack["session_id"].as_str().ok_or_else(|| SimError::Unexpected(ack.to_string()))?.to_owned();
        Ok(Self { id, sink, stream, audio })
    }

    /// Creates a room with this session in it; returns its code.
    pub async fn create_room(&mut self, preferred_lang: &str) -> Result<String, SimError> {
        let create = json!({"type":"room_create","client_ts":0,"preferred_lang":preferred_lang});
        self.sink.send(Message::Text(create.to_string().into())).await?;
        loop {
            let m = next_json(&mut self.stream).await?;
            if m["type"] == "room_create_ack" {
                return Ok(m["room_code"].as_str().unwrap_or_default().to_owned());
            }
        }
    }

    pub async fn join_room(&mut self, code: &str, preferred_lang: &str) -> Result<(), SimError> {
        let join = json!({"type":"room_join","room_code":code,"preferred_lang":preferred_lang});
        self.sink.send(Message::Text(join.to_string().into())).await?;
        loop {
            let m = next_json(&mut self.stream).await?;
            match m["type"].as_str() {
                Some("room_members") => return Ok(()),
                Some("room_error") => return Err(SimError::Unexpected(m.to_string())),
                _ => continue,
            }
        }
    }

    async fn send(&mut self, index: u64) -> Result<(), SimError> {
        let utterance = format!(
            r#"{{"type":"utterance","session_id":"{}","utterance_index":{index},"manual_cut":true,"audio":"{}","audio_format":"opus","sample_rate":16000}}"#,
            self.id, self.audio
        );
        self.sink.send(Message::Text(utterance.into())).await?;
        Ok(())
    }

    /// Runs `load` until `stop`, then waits up to `drain` for outstanding results.
    pub async fn run(
        mut self,
        load: Load,
        latency: Arc<Histogram>,
        stop: CancellationToken,
        drain: Duration,
    ) -> Tally {
        let mut tally = Tally::default();
        let mut sent_at: HashMap<u64, Instant> = HashMap::new();
        let mut next = 0u64;
        let interval = match load {
            Load::Open { interval } => interval,
            _ => Duration::from_secs(3600),
        };
        // Open loop: each session starts at a random phase, so sessions do not send in lockstep.
        let phase = interval.mul_f64(rand::random::<f64>());
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        if let Load::Closed { in_flight } = load {
            for _ in 0..in_flight {
                if self.send(next).await.is_err() {
                    return tally;
                }
                sent_at.insert(next, Instant::now());
                next += 1;
                tally.sent += 1;
            }
        }
        let mut stopping = false;
        let deadline = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(deadline);
        loop {
            if stopping && sent_at.is_empty() {
                break;
            }
            tokio::select! {
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    deadline.as_mut().reset(tokio::time::Instant::now() + drain);
                }
                _ = &mut deadline => break,
                _ = ticker.tick(), if matches!(load, Load::Open { .. }) && !stopping => {
                    if self.send(next).await.is_err() { break }
                    sent_at.insert(next, Instant::now());
                    next += 1;
                    tally.sent += 1;
                }
                message = next_json(&mut self.stream) => {
                    let Ok(m) = message else { break };
                    let index = m["utterance_index"].as_u64().or(m["details"]["utterance_index"].as_u64());
                    match m["type"].as_str() {
                        Some("translation_result") => tally.results += 1,
                        Some("error") => tally.errors += 1,
                        _ => continue,
                    }
                    if let Some(at) = index.and_then(|i| sent_at.remove(&i)) {
                        latency.record(at.elapsed().as_micros() as u64);
                    }
                    if let (Load::Closed { .. }, false) = (load, stopping) {
                        if self.send(next).await.is_err() { break }
                        sent_at.insert(next, Instant::now());
                        next += 1;
                        tally.sent += 1;
                    }
                }
            }
        }
        let _ = self.sink.close().await;
        tally
    }
}
