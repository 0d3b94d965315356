//! WebRTC signalling between the members of a room (`webrtc_offer`, `webrtc_answer`,
//! `webrtc_ice`): relayed to the member named in `to`, on whichever gateway it is.

use std::time::Instant;

use super::connections::Outbox;
use super::rooms::{Membership, room_error};
use super::{AppState, Metrics};
use crate::protocol::{RelayedSignal, RoomErrorCode, Signal, ToClient};
use crate::store::SignalReply;

/// The three WebRTC signalling messages, relayed alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Offer,
    Answer,
    Ice,
}

impl SignalKind {
    fn name(self) -> &'static str {
        match self {
            SignalKind::Offer => "webrtc_offer",
            SignalKind::Answer => "webrtc_answer",
            SignalKind::Ice => "webrtc_ice",
        }
    }
}

impl AppState {
    /// Relays a WebRTC signal to the member named in `to`, on whichever gateway it is. Only between
    /// members of the same room; the receiver learns the sender from the gateway (`to`/`from` are
    /// set here, never copied from the frame). A receiver that turned the sender's voice off does
    /// not get it, as with the fleet's scheduler; an offer crossing one from the receiver is
    /// withheld (room_signal.lua says why). Problems are answered with `room_error`, which the
    /// fleet's client logs (an `error` frame would be an alert in it).
    pub async fn relay_signal(
        &self,
        outbox: &Outbox,
        session_id: &str,
        m: &mut Membership,
        kind: SignalKind,
        signal: Signal,
    ) {
        m.sync();
        if let Some(rate) = m.signals.as_mut()
            && !rate.allow(Instant::now())
        {
            Metrics::inc(&self.metrics.signals_dropped);
            if rate.notice(Instant::now()) {
                room_error(outbox, RoomErrorCode::RateLimited, "too many WebRTC signals; some were dropped");
            }
            return;
        }
        let Some((room, _)) = m.room.as_ref().filter(|(room, _)| *room == signal.room_code) else {
            return room_error(outbox, RoomErrorCode::RoomNotFound, "not a member of this room");
        };
        let (sdp, candidate) = match kind {
            SignalKind::Ice => (None, signal.candidate),
            SignalKind::Offer | SignalKind::Answer => (signal.sdp, None),
        };
        let Some(body) = sdp.as_ref().or(candidate.as_ref()) else {
            let field = if kind == SignalKind::Ice { "candidate" } else { "sdp" };
            return room_error(
                outbox,
                RoomErrorCode::InvalidMessage,
                &format!("{} needs `{field}`", kind.name()),
            );
        };
        if serde_json::to_string(body).map_or(usize::MAX, |b| b.len()) > self.config.room_signal_max_bytes {
            return room_error(
                outbox,
                RoomErrorCode::InvalidMessage,
                &format!("{} is too large", kind.name()),
            );
        }
        if signal.to == session_id {
            return room_error(outbox, RoomErrorCode::InvalidMessage, "`to` must name another member");
        }
        let kind_name = match kind {
            SignalKind::Offer => "offer",
            SignalKind::Answer => "answer",
            SignalKind::Ice => "ice",
        };
        match self.store.room_signal(room, session_id, &signal.to, kind_name).await {
            Ok(SignalReply::Relay) => {}
            Ok(SignalReply::NotAMember) => {
                m.set(None);
                return room_error(outbox, RoomErrorCode::RoomNotFound, "not a member of this room");
            }
            Ok(SignalReply::NoReceiver) => {
                return room_error(
                    outbox,
                    RoomErrorCode::MemberNotFound,
                    "`to` is not a member of this room",
                );
            }
            Ok(withheld @ (SignalReply::VoiceOff | SignalReply::Crossing)) => {
                Metrics::inc(&self.metrics.signals_dropped);
                tracing::debug!(to = %signal.to, reason = ?withheld, "WebRTC signal withheld.");
                return;
            }
            Err(err) => return self.store_error(outbox, &err),
        }
        let relayed = RelayedSignal {
            room_code: room.clone(),
            to: session_id.to_owned(),
            from: session_id.to_owned(),
            sdp,
            candidate,
        };
        let message = match kind {
            SignalKind::Offer => ToClient::WebrtcOffer(relayed),
            SignalKind::Answer => ToClient::WebrtcAnswer(relayed),
            SignalKind::Ice => ToClient::WebrtcIce(relayed),
        };
        Metrics::inc(&self.metrics.signals_relayed);
        self.to_session(&signal.to, &message);
    }
}
