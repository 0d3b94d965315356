use serde::{Deserialize, Serialize};

/// Error codes of PROTOCOL.md §2 `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidMessage,
    InternalError,
    InvalidSession,
    SessionClosed,
    NodeUnavailable,
    NodeOverloaded,
    ModelNotAvailable,
    UnsupportedFeature,
    InvalidPairingCode,
    NoAvailableNode,
    JobTimeout,
    NodeIdConflict,
    NodeNotRegistered,
    Unauthorized,
    PayloadTooLarge,
    RateLimited,
    SchedulerDependencyDown,
}

/// `{"type":"error","code":…,"message":…,"details":…}`, sent to nodes and clients alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}
