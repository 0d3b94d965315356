//! Rooms in Redis under their own tag `{r:<code>}`: a room hash and a members hash (session id →
//! member JSON). Every membership change and every room utterance is one script; each returns the
//! members so the caller can broadcast `room_members` or route the utterance.

use serde::Deserialize;

use super::{Result, RoomKeys, Store};
use crate::protocol::RoomMember;

/// Replies of the room scripts; the error statuses are the protocol's `room_error` codes.
#[derive(Debug, Deserialize)]
#[serde(tag = "status")]
pub enum RoomReply {
    #[serde(rename = "created")]
    Created,
    #[serde(rename = "ok")]
    Ok {
        #[serde(default)]
        room_id: Option<String>,
        #[serde(default, deserialize_with = "members")]
        members: Vec<RoomMember>,
    },
    #[serde(rename = "code_taken")]
    CodeTaken,
    #[serde(rename = "room_not_found")]
    NotFound,
    #[serde(rename = "room_full")]
    Full,
    #[serde(rename = "already_in_room")]
    AlreadyIn,
    #[serde(rename = "not_a_member")]
    NotAMember,
}

/// Whether a WebRTC signal may go from one member to another (room_signal.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignalReply {
    Relay,
    NotAMember,
    NoReceiver,
    VoiceOff,
    Crossing,
}

/// How long an offer waits for its answer before another offer may cross it.
const OFFER_PENDING_MS: u64 = 10_000;

/// Member JSON strings (an empty list arrives as `{}` from cjson), sorted by join time.
fn members<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<RoomMember>, D::Error> {
    let raw = match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items,
        _ => Vec::new(),
    };
    let mut members = raw
        .iter()
        .map(|v| serde_json::from_str::<RoomMember>(v.as_str().unwrap_or("")))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(serde::de::Error::custom)?;
    members.sort_by(|a, b| a.joined_at.cmp(&b.joined_at).then(a.session_id.cmp(&b.session_id)));
    Ok(members)
}

impl Store {
    fn room_keys(&self, code: &str) -> RoomKeys {
        RoomKeys::new(&self.config.prefix, code)
    }

    pub async fn room_create(
        &self,
        code: &str,
        room_id: &str,
        member: &RoomMember,
        max_members: u32,
        idle_ttl_ms: u64,
    ) -> Result<RoomReply> {
        let k = self.room_keys(code);
        let mut inv = self.scripts.room_create.prepare_invoke();
        inv.key(&k.room).key(&k.members);
        inv.arg(room_id)
            .arg(&member.session_id)
            .arg(serde_json::to_string(member).expect("members serialize"))
            .arg(max_members)
            .arg(idle_ttl_ms);
        self.call("room_create", &inv).await
    }

    /// Joins (`update == false`) or changes a member's record (`update == true`).
    pub async fn room_join(
        &self,
        code: &str,
        member: &RoomMember,
        idle_ttl_ms: u64,
        update: bool,
    ) -> Result<RoomReply> {
        let k = self.room_keys(code);
        let mut inv = self.scripts.room_join.prepare_invoke();
        inv.key(&k.room).key(&k.members);
        inv.arg(&member.session_id)
            .arg(serde_json::to_string(member).expect("members serialize"))
            .arg(idle_ttl_ms)
            .arg(if update { "update" } else { "join" });
        self.call("room_join", &inv).await
    }

    pub async fn room_leave(&self, code: &str, session_id: &str) -> Result<RoomReply> {
        let k = self.room_keys(code);
        let mut inv = self.scripts.room_leave.prepare_invoke();
        inv.key(&k.room).key(&k.members).arg(session_id);
        self.call("room_leave", &inv).await
    }

    /// Checks a WebRTC signal of `kind` (`offer`, `answer`, `ice`) from `from` to `to`.
    pub async fn room_signal(&self, code: &str, from: &str, to: &str, kind: &str) -> Result<SignalReply> {
        let k = self.room_keys(code);
        let mut inv = self.scripts.room_signal.prepare_invoke();
        inv.key(&k.members).key(k.offer(from, to)).key(k.offer(to, from));
        inv.arg(from).arg(to).arg(kind).arg(OFFER_PENDING_MS);
        self.call("room_signal", &inv).await
    }

    /// The members, when `session_id` is one of them; renews the room's idle ttl.
    pub async fn room_speak(&self, code: &str, session_id: &str, idle_ttl_ms: u64) -> Result<RoomReply> {
        let k = self.room_keys(code);
        let mut inv = self.scripts.room_speak.prepare_invoke();
        inv.key(&k.room).key(&k.members).arg(session_id).arg(idle_ttl_ms);
        self.call("room_speak", &inv).await
    }
}
