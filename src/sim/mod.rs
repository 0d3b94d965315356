//! Simulated worker nodes and clients speaking PROTOCOL.md over real WebSockets: the load of the
//! benchmark (`switchboard bench`).

pub mod client;
pub mod node;

use futures_util::stream::{SplitSink, SplitStream};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type WsSink = SplitSink<Ws, tokio_tungstenite::tungstenite::Message>;
pub type WsStream = SplitStream<Ws>;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the gateway closed the socket")]
    Closed,
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// Reads the next JSON text message.
pub async fn next_json(stream: &mut WsStream) -> Result<serde_json::Value, SimError> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| SimError::Unexpected(e.to_string()));
            }
            Some(Ok(Message::Close(_))) | None => return Err(SimError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// A zh → en one_way task of `session`, addressed to it: what the simulators and tests dispatch
/// when they call the scheduler directly.
pub fn task_spec(session: &str, index: u64) -> crate::store::TaskSpec {
    crate::store::TaskSpec {
        session_id: session.into(),
        utterance_index: index,
        src_lang: "zh".into(),
        tgt_lang: "en".into(),
        dialect: None,
        mode: crate::protocol::Mode::OneWay,
        lang_a: None,
        lang_b: None,
        pipeline: Default::default(),
        audio_format: "opus".into(),
        sample_rate: 16000,
        trace_id: "sim".into(),
        turn_id: None,
        part_index: 0,
        room_code: None,
        tenant_id: None,
        recipients: vec![session.into()],
        created_ms: 0,
    }
}
