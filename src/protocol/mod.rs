//! Wire protocol v1 (see docs/protocol.md): JSON text frames tagged by `"type"`.
//!
//! Incoming types ignore unknown fields and accept `null` for every optional field, so peers of the
//! existing fleet connect unchanged. Decoding never panics; every failure becomes an `INVALID_MESSAGE`.

mod client;
mod error;
mod node;

pub use client::*;
pub use error::{ErrorCode, ErrorFrame};
pub use node::*;

use serde::de::DeserializeOwned;

/// Why a frame could not be decoded; the text goes back to the peer in an `INVALID_MESSAGE` error.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("binary frames are not supported; send JSON text frames")]
    Binary,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("message has no string `type` field")]
    MissingType,
}

/// Decodes one text frame into `T`, telling an unknown `type` apart from a malformed known one.
pub fn decode<T: DeserializeOwned>(text: &str, known_types: &[&str]) -> Result<T, DecodeError> {
    match serde_json::from_str::<T>(text) {
        Ok(message) => Ok(message),
        Err(err) => {
            let kind = serde_json::from_str::<TypeOnly>(text).ok().and_then(|t| t.kind);
            match kind {
                None => Err(if serde_json::from_str::<serde_json::Value>(text).is_ok() {
                    DecodeError::MissingType
                } else {
                    DecodeError::Malformed(err.to_string())
                }),
                Some(kind) if !known_types.contains(&kind.as_str()) => {
                    Err(DecodeError::UnknownType(truncate(&kind, 64)))
                }
                Some(_) => Err(DecodeError::Malformed(err.to_string())),
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Milliseconds since the Unix epoch, for the `created_at_ms`/`timestamp` fields peers expect.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
