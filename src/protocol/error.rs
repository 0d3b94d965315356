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

impl ErrorCode {
    /// The code named `wire` (`"JOB_TIMEOUT"`), if it is one of the protocol's.
    pub fn parse(wire: &str) -> Option<ErrorCode> {
        serde_json::from_value(serde_json::Value::String(wire.to_owned())).ok()
    }

    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::InvalidSession => "INVALID_SESSION",
            ErrorCode::SessionClosed => "SESSION_CLOSED",
            ErrorCode::NodeUnavailable => "NODE_UNAVAILABLE",
            ErrorCode::NodeOverloaded => "NODE_OVERLOADED",
            ErrorCode::ModelNotAvailable => "MODEL_NOT_AVAILABLE",
            ErrorCode::UnsupportedFeature => "UNSUPPORTED_FEATURE",
            ErrorCode::InvalidPairingCode => "INVALID_PAIRING_CODE",
            ErrorCode::NoAvailableNode => "NO_AVAILABLE_NODE",
            ErrorCode::JobTimeout => "JOB_TIMEOUT",
            ErrorCode::NodeIdConflict => "NODE_ID_CONFLICT",
            ErrorCode::NodeNotRegistered => "NODE_NOT_REGISTERED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::SchedulerDependencyDown => "SCHEDULER_DEPENDENCY_DOWN",
        }
    }
}

/// Codes of `room_error` (PROTOCOL.md §2, rooms): the documented five, and the generic ones a room
/// message can also meet (a malformed field, a member that is not there, an internal failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoomErrorCode {
    RoomNotFound,
    AlreadyInRoom,
    RoomFull,
    InvalidRoomCode,
    RateLimited,
    MemberNotFound,
    InvalidMessage,
    InternalError,
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

#[cfg(test)]
mod code_tests {
    use super::ErrorCode;

    #[test]
    fn as_str_is_the_wire_name() {
        for code in
            [ErrorCode::InvalidMessage, ErrorCode::NoAvailableNode, ErrorCode::SchedulerDependencyDown]
        {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
