//! Wire protocol v1 (see docs/protocol.md): JSON text frames tagged by `"type"`.
//!
//! Incoming types ignore unknown fields and accept `null` for every optional field, so peers of the
//! existing fleet connect unchanged. Decoding never panics; every failure becomes an `INVALID_MESSAGE`.

mod client;
mod error;
mod node;

pub use client::*;
pub use error::{ErrorCode, ErrorFrame, RoomErrorCode};
pub use node::*;

use serde::de::DeserializeOwned;

/// A language code fit for a key name: `auto`, `zh`, `zh-Hant`, `yue_HK`, …
pub fn is_language_code(code: &str) -> bool {
    (1..=16).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

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
                    Err(DecodeError::UnknownType(clip(&kind, 64)))
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

/// At most `max` characters of a peer-supplied string, as it goes into an error, a log line or a
/// stored record.
pub fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Milliseconds since the Unix epoch, for the `created_at_ms`/`timestamp` fields peers expect.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_ignored_and_optional_fields_may_be_null() {
        let text = r#"{"type":"node_register","node_id":null,"version":"1","platform":null,
            "hardware":null,"installed_services":null,"capability_by_type":null,
            "language_capabilities":{"asr_languages":null,"semantic_languages":["en"]},
            "labels":null,"max_concurrent_jobs":null,"brand_new_field":{"x":1}}"#;
        let FromNode::NodeRegister(r) = decode::<FromNode>(text, FromNode::TYPES).unwrap() else {
            panic!("not a register");
        };
        assert_eq!(r.node_id, None);
        assert!(r.language_capabilities.asr_languages.is_empty());
        assert_eq!(r.language_capabilities.semantic_languages, ["en"]);
        assert_eq!(r.max_concurrent_jobs, None);
    }

    #[test]
    fn decode_errors_tell_unknown_types_from_malformed_ones() {
        let err = |t: &str| decode::<FromClient>(t, FromClient::TYPES).unwrap_err();
        assert!(matches!(err(r#"{"type":"warp_drive"}"#), DecodeError::UnknownType(k) if k == "warp_drive"));
        assert!(matches!(err(r#"{"type":"utterance","utterance_index":-1}"#), DecodeError::Malformed(_)));
        assert!(matches!(err(r#"{"utterance_index":1}"#), DecodeError::MissingType));
        assert!(matches!(err("{"), DecodeError::Malformed(_)));
        assert!(matches!(err(&"[".repeat(10_000)), DecodeError::Malformed(_)));
    }

    #[test]
    fn job_result_empty_acknowledgements() {
        let parse = |t: &str| match decode::<FromNode>(t, FromNode::TYPES).unwrap() {
            FromNode::JobResult(r) => r,
            other => panic!("{other:?}"),
        };
        let empty = parse(
            r#"{"type":"job_result","job_id":"j","success":true,"text_asr":"","extra":{"reason":"ASR_EMPTY"}}"#,
        );
        assert_eq!(empty.empty_reason(), Some("ASR_EMPTY"));
        let full = parse(
            r#"{"type":"job_result","job_id":"j","success":true,"text_asr":"hi","extra":{"reason":"ASR_EMPTY"}}"#,
        );
        assert_eq!(full.empty_reason(), None);
        let plain =
            parse(r#"{"type":"job_result","job_id":"j","success":true,"text_asr":null,"extra":null}"#);
        assert_eq!(plain.empty_reason(), None);
    }

    #[test]
    fn outgoing_messages_carry_their_type_tag() {
        let frame = ErrorFrame::new(ErrorCode::NoAvailableNode, "none");
        let json = serde_json::to_value(ToClient::Error(frame)).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["code"], "NO_AVAILABLE_NODE");
    }
}
