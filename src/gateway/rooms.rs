//! Room messages of a session (`room_create`, `room_join`, `room_leave`, `room_set_lang`) and the
//! room side of an utterance: the room-routing policy turns it into one task per route.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::info;

use super::connections::Outbox;
use super::limits::RateLimit;
use super::{AppState, error_frame};
use crate::policy::{Availability, Member, RoomView, Utterance};
use crate::protocol::{
    Mode, RawVoicePreference, RoomCreate, RoomCreateAck, RoomError, RoomErrorCode, RoomJoin, RoomMember,
    RoomMembers, ToClient, now_ms,
};
use crate::protocol::{clip, is_language_code};
use crate::store::{RoomReply, StoreError, TaskSpec, new_id};

/// Codes drawn before room_create gives up (a collision needs ~10^6 live rooms to be likely).
const CODE_DRAWS: usize = 5;

/// Members whose original voice one member may turn off: more than a room holds, so a client
/// cannot grow its record without bound with ids of members long gone.
const MAX_MUTED_VOICES: usize = 64;

/// The room this session is in, its failed joins (to rate-limit code guessing) and its WebRTC
/// signal budget.
#[derive(Debug, Default)]
pub struct Membership {
    pub(super) room: Option<(String, RoomMember)>,
    /// The room's code, shared with the room watcher, which clears it when the room expires.
    shared: Arc<Mutex<Option<String>>>,
    failed_joins: VecDeque<Instant>,
    pub(super) signals: Option<RateLimit>,
}

impl Membership {
    /// A membership restored on resume (`room` is the member record, if still a member).
    pub fn new(
        shared: Arc<Mutex<Option<String>>>,
        room: Option<(String, RoomMember)>,
        signals_per_second: u32,
    ) -> Self {
        *shared.lock() = room.as_ref().map(|(code, _)| code.clone());
        Self { room, shared, failed_joins: VecDeque::new(), signals: RateLimit::new(signals_per_second) }
    }

    pub fn room_code(&self) -> Option<&str> {
        self.room.as_ref().map(|(code, _)| code.as_str())
    }

    /// Forgets a room the watcher found expired.
    pub(super) fn sync(&mut self) {
        if self.shared.lock().is_none() {
            self.room = None;
        }
    }

    pub(super) fn set(&mut self, room: Option<(String, RoomMember)>) {
        *self.shared.lock() = room.as_ref().map(|(code, _)| code.clone());
        self.room = room;
    }
}

pub(super) fn room_error(outbox: &Outbox, code: RoomErrorCode, message: &str) {
    outbox.send(&ToClient::RoomError(RoomError { code, message: Some(message.into()) }));
}

fn new_member(session_id: &str, display_name: Option<String>, preferred_lang: Option<String>) -> RoomMember {
    RoomMember {
        participant_id: new_id("p-", 8),
        session_id: session_id.to_owned(),
        display_name: display_name.map(|n| clip(&n, 64)),
        preferred_lang,
        raw_voice_preferences: Default::default(),
        joined_at: now_ms(),
    }
}

fn valid_code(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

fn valid_lang(lang: &Option<String>) -> bool {
    lang.as_deref().is_none_or(is_language_code)
}

impl AppState {
    pub async fn room_create(&self, outbox: &Outbox, session_id: &str, m: &mut Membership, msg: RoomCreate) {
        m.sync();
        if m.room.is_some() {
            return room_error(outbox, RoomErrorCode::AlreadyInRoom, "leave the current room first");
        }
        if !valid_lang(&msg.preferred_lang) {
            return room_error(outbox, RoomErrorCode::InvalidMessage, "invalid preferred_lang");
        }
        let member = new_member(session_id, msg.display_name, msg.preferred_lang);
        let room_id = new_id("room-", 12);
        for _ in 0..CODE_DRAWS {
            let code = format!("{:06}", rand::rng().random_range(0..1_000_000));
            let cfg = &self.config;
            match self
                .store
                .room_create(&code, &room_id, &member, cfg.room_max_members, cfg.room_idle_ttl_ms)
                .await
            {
                Ok(RoomReply::Created) => {
                    info!(room.code = %code, session.id = %session_id, "Room created.");
                    outbox.send(&ToClient::RoomCreateAck(RoomCreateAck { room_code: code.clone(), room_id }));
                    self.broadcast_members(&code, vec![member.clone()]);
                    self.record_room(session_id, Some(&code)).await;
                    m.set(Some((code, member)));
                    return;
                }
                Ok(_) => continue,
                Err(err) => return self.store_error(outbox, &err),
            }
        }
        room_error(outbox, RoomErrorCode::InternalError, "no free room code; retry")
    }

    pub async fn room_join(&self, outbox: &Outbox, session_id: &str, m: &mut Membership, msg: RoomJoin) {
        let minute = Duration::from_secs(60);
        while m.failed_joins.front().is_some_and(|t| t.elapsed() > minute) {
            m.failed_joins.pop_front();
        }
        m.sync();
        if m.failed_joins.len() >= self.config.room_failed_joins_per_minute as usize {
            return room_error(outbox, RoomErrorCode::RateLimited, "too many failed joins; wait a minute");
        }
        if m.room.is_some() {
            return room_error(outbox, RoomErrorCode::AlreadyInRoom, "leave the current room first");
        }
        if !valid_code(&msg.room_code) {
            m.failed_joins.push_back(Instant::now());
            return room_error(outbox, RoomErrorCode::InvalidRoomCode, "room codes are 6 digits");
        }
        if !valid_lang(&msg.preferred_lang) {
            return room_error(outbox, RoomErrorCode::InvalidMessage, "invalid preferred_lang");
        }
        let member = new_member(session_id, msg.display_name, msg.preferred_lang);
        match self.store.room_join(&msg.room_code, &member, self.config.room_idle_ttl_ms, false).await {
            Ok(RoomReply::Ok { members, room_id }) => {
                info!(room.code = %msg.room_code, session.id = %session_id, "Joined a room.");
                // The fleet's web client enters a room only on `room_create_ack` (its join path
                // never sets the room it joined, so it would ignore the room's `room_members`
                // and WebRTC offers): a join is acknowledged with it too, before the members.
                outbox.send(&ToClient::RoomCreateAck(RoomCreateAck {
                    room_code: msg.room_code.clone(),
                    room_id: room_id.unwrap_or_default(),
                }));
                self.broadcast_members(&msg.room_code, members);
                self.record_room(session_id, Some(&msg.room_code)).await;
                m.set(Some((msg.room_code, member)));
            }
            Ok(RoomReply::NotFound) => {
                m.failed_joins.push_back(Instant::now());
                room_error(outbox, RoomErrorCode::RoomNotFound, "no room with this code")
            }
            Ok(RoomReply::Full) => room_error(outbox, RoomErrorCode::RoomFull, "the room is full"),
            Ok(_) => room_error(outbox, RoomErrorCode::AlreadyInRoom, "already a member"),
            Err(err) => self.store_error(outbox, &err),
        }
    }

    pub async fn room_set_lang(&self, outbox: &Outbox, m: &mut Membership, code: &str, lang: Option<String>) {
        m.sync();
        let Some((_, member)) = m.room.as_mut().filter(|(room, _)| room == code) else {
            return room_error(outbox, RoomErrorCode::RoomNotFound, "not a member of this room");
        };
        if !valid_lang(&lang) {
            return room_error(outbox, RoomErrorCode::InvalidMessage, "invalid preferred_lang");
        }
        member.preferred_lang = lang;
        self.save_member(outbox, m).await;
    }

    /// `room_raw_voice_preference`: whether this member hears `target`'s original voice. Stored on
    /// the member's record (every member sees it in `room_members`, the room-routing policy through
    /// `host.raw-voice-off`) and enforced on the WebRTC signalling between the two.
    pub async fn room_raw_voice(
        &self,
        outbox: &Outbox,
        session_id: &str,
        m: &mut Membership,
        msg: RawVoicePreference,
    ) {
        m.sync();
        let Some((room, member)) = m.room.as_mut().filter(|(room, _)| *room == msg.room_code) else {
            return room_error(outbox, RoomErrorCode::RoomNotFound, "not a member of this room");
        };
        let target = msg.target_session_id;
        if target.is_empty() || target == session_id {
            return room_error(
                outbox,
                RoomErrorCode::InvalidMessage,
                "target_session_id must name another member",
            );
        }
        match self.store.room_member(room, &target).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return room_error(
                    outbox,
                    RoomErrorCode::MemberNotFound,
                    "target_session_id is not a member of this room",
                );
            }
            Err(err) => return self.store_error(outbox, &err),
        }
        // Absent means "hears it": only the voices turned off are kept.
        if msg.receive_raw_voice {
            member.raw_voice_preferences.remove(&target);
        } else if member.raw_voice_preferences.len() >= MAX_MUTED_VOICES {
            return room_error(outbox, RoomErrorCode::InvalidMessage, "too many voices turned off");
        } else {
            member.raw_voice_preferences.insert(target, false);
        }
        self.save_member(outbox, m).await;
    }

    /// Writes this session's member record as changed in `m` and shows every member the room; a
    /// room gone meanwhile is left.
    async fn save_member(&self, outbox: &Outbox, m: &mut Membership) {
        let Some((room, member)) = m.room.clone() else { return };
        match self.store.room_join(&room, &member, self.config.room_idle_ttl_ms, true).await {
            Ok(RoomReply::Ok { members, .. }) => self.broadcast_members(&room, members),
            Ok(_) => {
                m.set(None);
                room_error(outbox, RoomErrorCode::RoomNotFound, "the room is gone")
            }
            Err(err) => self.store_error(outbox, &err),
        }
    }

    /// Leaves `code` (a client's room_leave) or, with `None`, whatever room the session is in
    /// (the session ended).
    pub async fn room_leave(
        &self,
        outbox: Option<&Outbox>,
        session_id: &str,
        m: &mut Membership,
        code: Option<&str>,
    ) {
        m.sync();
        let Some((room, _)) = m.room.take_if(|(room, _)| code.is_none_or(|c| c == room)) else {
            if let Some(outbox) = outbox {
                room_error(outbox, RoomErrorCode::RoomNotFound, "not a member of this room");
            }
            return;
        };
        m.set(None);
        if let Some(members) = self.depart_room(session_id, &room).await
            && let Some(outbox) = outbox
        {
            outbox.send(&ToClient::RoomMembers(RoomMembers { room_code: room.clone(), members }));
        }
    }

    /// Takes a session out of a room and tells the members left; returns them.
    pub async fn depart_room(&self, session_id: &str, room: &str) -> Option<Vec<RoomMember>> {
        self.record_room(session_id, None).await;
        match self.store.room_leave(room, session_id).await {
            Ok(RoomReply::Ok { members, .. }) => {
                info!(room.code = %room, session.id = %session_id, "Left a room.");
                self.broadcast_members(room, members.clone());
                Some(members)
            }
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(%err, room.code = %room, "Leaving a room failed; its idle ttl ends it.");
                None
            }
        }
    }

    /// Notes the session's room on its record, so a resume keeps it.
    async fn record_room(&self, session_id: &str, room: Option<&str>) {
        if let Err(err) = self.store.session_room(session_id, room).await {
            tracing::warn!(%err, session.id = %session_id, "Recording the session's room failed.");
        }
    }

    fn broadcast_members(&self, code: &str, members: Vec<RoomMember>) {
        let message = ToClient::RoomMembers(RoomMembers { room_code: code.to_owned(), members });
        let ToClient::RoomMembers(RoomMembers { members, .. }) = &message else { unreachable!() };
        for member in members {
            self.to_session(&member.session_id, &message);
        }
    }

    pub(super) fn store_error(&self, outbox: &Outbox, err: &StoreError) {
        outbox.send(&ToClient::Error(error_frame(err)));
    }

    /// The tasks of one room utterance: one per route of the room-routing policy, each to its own
    /// recipients. Empty when the speaker is not in a room or the policy routes nothing (the
    /// caller then uses single-session mode).
    pub async fn room_tasks(&self, m: &mut Membership, spec: &TaskSpec) -> Result<Vec<TaskSpec>, StoreError> {
        m.sync();
        let Some((code, _)) = &m.room else { return Ok(Vec::new()) };
        let members =
            match self.store.room_speak(code, &spec.session_id, self.config.room_idle_ttl_ms).await? {
                RoomReply::Ok { members, .. } => members,
                _ => {
                    m.set(None); // the room expired or this session was removed
                    return Ok(Vec::new());
                }
            };
        let utterance = Utterance {
            session_id: spec.session_id.clone(),
            utterance_index: spec.utterance_index,
            src_lang: spec.src_lang.clone(),
            tgt_lang: spec.tgt_lang.clone(),
            room_code: code.clone(),
            tenant_id: spec.tenant_id.clone(),
        };
        let voices_off: Vec<(String, Vec<String>)> = members
            .iter()
            .filter(|m| !m.raw_voice_preferences.is_empty())
            .map(|m| {
                let off = m.raw_voice_preferences.iter().filter(|(_, on)| !**on).map(|(s, _)| s.clone());
                (m.session_id.clone(), off.collect())
            })
            .collect();
        let members: Vec<Member> = members
            .into_iter()
            .map(|m| Member {
                session_id: m.session_id,
                participant_id: m.participant_id,
                display_name: m.display_name,
                preferred_lang: m.preferred_lang,
            })
            .collect();
        let mut langs: Vec<String> = members
            .iter()
            .filter(|m| m.session_id != spec.session_id)
            .filter_map(|m| m.preferred_lang.clone())
            .collect();
        langs.sort();
        langs.dedup();
        let pools: Vec<String> = langs.iter().map(|l| format!("{}>{l}", spec.src_lang)).collect();
        let counts = self.store.availability_everywhere(&pools).await?;
        let availability: Vec<Availability> = langs
            .into_iter()
            .zip(counts)
            .map(|(tgt_lang, free_slots)| Availability { tgt_lang, free_slots })
            .collect();
        let members = RoomView { members, voices_off: Arc::new(voices_off) };
        let routes = self.policies.route(&utterance, &members, &availability);
        Ok(routes
            .into_iter()
            .map(|route| TaskSpec {
                tgt_lang: route.tgt_lang,
                recipients: route.recipients,
                room_code: Some(code.clone()),
                // A route names its target: the node pool is src → that target, whatever the
                // speaker's own session mode.
                mode: Mode::OneWay,
                lang_a: None,
                lang_b: None,
                ..spec.clone()
            })
            .collect())
    }
}
