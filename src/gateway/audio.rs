//! Streaming audio: a session's `audio_chunk`s buffered and cut into utterances. A cut happens on
//! `is_final`, after `pause_ms` without a chunk (both end the turn), at `max_duration_ms` of audio,
//! or when the buffer reaches the payload cap (the turn goes on: the next cut keeps its `turn_id`
//! and asks for the node that served the turn so far). The gateway numbers the utterances 0, 1, ….
//!
//! Durations come from the audio itself: pcm16 from its byte count and sample rate, Opus from the
//! table-of-contents byte of every packet (docs/protocol.md, "Audio").
//!
//! While the client plays a result's speech (`tts_started` … `tts_play_ended`) no pause is timed,
//! as the fleet's scheduler did: a device that plays speech is not listening, so the silence is
//! not the end of what its user said.

use std::time::{Duration, Instant};

use crate::config::AudioConfig;
use crate::store::new_id;

/// Audio formats a session can stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Opus packets, each preceded by its length (u16, little-endian): what the fleet's web
    /// client sends.
    Opus,
    /// Signed 16-bit little-endian mono samples.
    Pcm16,
}

impl Codec {
    /// The codec of an `audio_format` name; `None` for one the gateway cannot measure.
    pub fn parse(format: &str) -> Option<Self> {
        match format {
            "opus" => Some(Codec::Opus),
            "pcm16" | "pcm_s16le" | "pcm" => Some(Codec::Pcm16),
            _ => None,
        }
    }

    /// Microseconds of audio in `bytes`.
    pub fn duration_us(self, bytes: &[u8], sample_rate: u32) -> u64 {
        match self {
            Codec::Pcm16 => (bytes.len() as u64 / 2) * 1_000_000 / sample_rate.max(1) as u64,
            Codec::Opus => opus_duration_us(bytes),
        }
    }
}

/// Bytes per millisecond assumed for Opus that is not length-prefixed packets (32 kbit/s, typical
/// speech), so such a stream is still cut.
const OPUS_BYTES_PER_MS: u64 = 4;
/// A playback the client never reports ended stops suspending the pause timer after this long.
const PLAYBACK_LIMIT: Duration = Duration::from_secs(60);

/// Duration of length-prefixed Opus packets (RFC 6716 §3.1: the TOC byte's configuration gives the
/// frame duration, its code the frame count). Bytes that do not parse as such packets are counted
/// at [`OPUS_BYTES_PER_MS`].
pub fn opus_duration_us(mut bytes: &[u8]) -> u64 {
    let total = bytes.len() as u64;
    let mut us = 0;
    while bytes.len() >= 3 {
        let len = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
        if len == 0 || len > bytes.len() - 2 {
            break;
        }
        let packet = &bytes[2..2 + len];
        let Some(packet_us) = opus_packet_us(packet) else { break };
        us += packet_us;
        bytes = &bytes[2 + len..];
    }
    if bytes.is_empty() {
        us
    } else {
        // Not (or not only) framed packets: estimate all of it rather than half of it.
        total * 1000 / OPUS_BYTES_PER_MS
    }
}

fn opus_packet_us(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame_us = match config {
        0..=11 => [10_000, 20_000, 40_000, 60_000][(config % 4) as usize],
        12..=15 => [10_000, 20_000][(config % 2) as usize],
        _ => [2_500, 5_000, 10_000, 20_000][(config % 4) as usize],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => (*packet.get(1)? & 0x3f) as u64,
    };
    // RFC 6716: a packet holds at most 120 ms.
    (frames > 0 && frames * frame_us <= 120_000).then_some(frames * frame_us)
}

#[derive(Debug)]
pub struct AudioStream {
    pause: Duration,
    max_us: u64,
    max_bytes: usize,
    codec: Codec,
    sample_rate: u32,
    buffer: Vec<u8>,
    buffered_us: u64,
    last_seq: Option<u64>,
    last_chunk: Option<Instant>,
    /// The client is playing speech since then.
    playing_since: Option<Instant>,
    next_index: u64,
    turn: Option<Turn>,
}

#[derive(Debug, Clone)]
struct Turn {
    id: String,
    affinity: Option<String>,
    /// Cuts of this turn so far (a turn cut by max-duration has several).
    parts: u64,
}

/// One utterance cut from the stream.
#[derive(Debug)]
pub struct Cut {
    pub index: u64,
    pub audio: Vec<u8>,
    pub turn_id: String,
    /// The node that served this turn's earlier cuts.
    pub affinity: Option<String>,
    /// This cut's place in its turn (0, 1, … for a turn cut by max-duration).
    pub part: u64,
    /// Microseconds of audio in the cut.
    pub duration_us: u64,
    pub reason: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Buffered,
    /// The chunk repeats or precedes one already received.
    Duplicate,
}

impl AudioStream {
    pub fn new(config: &AudioConfig, codec: Codec, sample_rate: u32, max_bytes: usize) -> Self {
        Self {
            pause: Duration::from_millis(config.pause_ms),
            max_us: config.max_duration_ms * 1000,
            max_bytes,
            codec,
            sample_rate,
            buffer: Vec::new(),
            buffered_us: 0,
            last_seq: None,
            last_chunk: None,
            playing_since: None,
            next_index: 0,
            turn: None,
        }
    }

    /// Adds a chunk; returns the cut it completes, if any.
    pub fn push(&mut self, seq: u64, audio: &[u8], is_final: bool, now: Instant) -> (Pushed, Option<Cut>) {
        if self.last_seq.is_some_and(|last| seq <= last) {
            return (Pushed::Duplicate, None);
        }
        self.last_seq = Some(seq);
        self.last_chunk = Some(now);
        self.turn.get_or_insert_with(|| Turn { id: new_id("turn-", 12), affinity: None, parts: 0 });
        self.buffer.extend_from_slice(audio);
        self.buffered_us += self.codec.duration_us(audio, self.sample_rate);
        let cut = if is_final {
            self.cut("is_final", true)
        } else if self.buffered_us >= self.max_us {
            self.cut("max_duration", false)
        } else if self.buffer.len() >= self.max_bytes {
            self.cut("buffer_cap", false)
        } else {
            None
        };
        (Pushed::Buffered, cut)
    }

    /// When the pause timer fires, if a turn is open.
    pub fn pause_deadline(&self) -> Option<Instant> {
        self.turn.as_ref()?;
        if let Some(since) = self.playing_since {
            return Some(since + PLAYBACK_LIMIT);
        }
        Some(self.last_chunk? + self.pause)
    }

    /// `tts_started`: no pause is timed until the playback ends.
    pub fn playback_started(&mut self, now: Instant) {
        self.playing_since = Some(now);
    }

    /// `tts_play_ended`: the pause timer starts again from now.
    pub fn playback_ended(&mut self, now: Instant) {
        self.playing_since = None;
        if self.last_chunk.is_some() {
            self.last_chunk = Some(now);
        }
    }

    /// No chunk for `pause_ms`: cuts what is buffered and ends the turn.
    pub fn pause(&mut self) -> Option<Cut> {
        self.last_chunk = None;
        self.playing_since = None;
        self.cut("pause", true)
    }

    /// The node a cut of `turn_id` went to: later cuts of the turn ask for it.
    pub fn assigned(&mut self, turn_id: &str, node_id: &str) {
        if let Some(turn) = self.turn.as_mut().filter(|t| t.id == turn_id) {
            turn.affinity = Some(node_id.to_owned());
        }
    }

    fn cut(&mut self, reason: &'static str, ends_turn: bool) -> Option<Cut> {
        let turn = if ends_turn { self.turn.take() } else { self.turn.clone() };
        let turn = turn?;
        if self.buffer.is_empty() {
            return None;
        }
        if let Some(open) = self.turn.as_mut() {
            open.parts += 1;
        }
        let index = self.next_index;
        self.next_index += 1;
        Some(Cut {
            index,
            audio: std::mem::take(&mut self.buffer),
            turn_id: turn.id,
            affinity: turn.affinity,
            part: turn.parts,
            duration_us: std::mem::take(&mut self.buffered_us),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> AudioStream {
        // pcm16 at 16 kHz: 32 bytes per ms; 100 ms per utterance at most.
        AudioStream::new(&AudioConfig { pause_ms: 50, max_duration_ms: 100 }, Codec::Pcm16, 16_000, 1 << 20)
    }

    #[test]
    fn is_final_cuts_and_ends_the_turn() {
        let mut s = stream();
        let now = Instant::now();
        assert!(s.push(0, &[0; 320], false, now).1.is_none());
        let cut = s.push(1, &[0; 320], true, now).1.expect("a cut");
        assert_eq!((cut.index, cut.audio.len(), cut.reason), (0, 640, "is_final"));
        assert!(s.pause_deadline().is_none(), "the turn ended");
        let next = s.push(2, &[0; 32], true, now).1.unwrap();
        assert_eq!(next.index, 1);
        assert_ne!(next.turn_id, cut.turn_id);
    }

    #[test]
    fn max_duration_cuts_keep_the_turn_and_its_node() {
        let mut s = stream();
        let now = Instant::now();
        let first = s.push(0, &[0; 3200], false, now).1.expect("100 ms cut");
        assert_eq!(first.reason, "max_duration");
        s.assigned(&first.turn_id, "node-A");
        let second = s.push(1, &[0; 3200], false, now).1.unwrap();
        assert_eq!(second.turn_id, first.turn_id);
        assert_eq!(second.affinity.as_deref(), Some("node-A"));
        assert_eq!((first.part, second.part), (0, 1));
        assert_eq!(second.duration_us, 100_000);
    }

    /// A 20 ms SILK wideband packet (TOC config 9, one frame) as the fleet's web client frames it.
    fn opus_packet(payload_len: usize) -> Vec<u8> {
        let mut p = (payload_len as u16 + 1).to_le_bytes().to_vec();
        p.push(9 << 3);
        p.extend(std::iter::repeat_n(0xAB, payload_len));
        p
    }

    #[test]
    fn opus_duration_comes_from_the_packets() {
        let chunk: Vec<u8> = (0..13).flat_map(|_| opus_packet(60)).collect();
        assert_eq!(opus_duration_us(&chunk), 260_000);
        // Code 3 (arbitrary frame count) with 3 frames of 20 ms CELT (config 31).
        let packet = [4, 0, (31 << 3) | 3, 3, 0, 0];
        assert_eq!(opus_duration_us(&packet), 60_000);
        // Not framed packets: the byte-rate estimate.
        assert_eq!(opus_duration_us(&[0xff; 400]), 100_000);
    }

    #[test]
    fn opus_speech_is_cut_every_max_duration() {
        let config = AudioConfig { pause_ms: 3000, max_duration_ms: 10_000 };
        let mut s = AudioStream::new(&config, Codec::Opus, 16_000, 1 << 20);
        let chunk: Vec<u8> = (0..13).flat_map(|_| opus_packet(60)).collect(); // 260 ms
        let now = Instant::now();
        let cuts: Vec<Cut> = (0..312).filter_map(|seq| s.push(seq, &chunk, false, now).1).collect();
        // 81 s of speech: a cut every 10 s (39 chunks of 260 ms = 10.14 s).
        assert_eq!(cuts.len(), 8);
        assert!(cuts.iter().all(|c| c.reason == "max_duration" && c.duration_us >= 10_000_000));
        assert!(cuts.iter().all(|c| c.turn_id == cuts[0].turn_id));
    }

    #[test]
    fn no_pause_is_timed_while_the_client_plays_speech() {
        let mut s = stream();
        let now = Instant::now();
        s.push(0, &[0; 64], false, now);
        s.playback_started(now);
        assert_eq!(s.pause_deadline(), Some(now + PLAYBACK_LIMIT));
        let later = now + Duration::from_secs(5);
        s.playback_ended(later);
        assert_eq!(s.pause_deadline(), Some(later + Duration::from_millis(50)));
    }

    #[test]
    fn a_pause_cuts_what_is_buffered() {
        let mut s = stream();
        let now = Instant::now();
        s.push(0, &[0; 64], false, now);
        assert_eq!(s.pause_deadline(), Some(now + Duration::from_millis(50)));
        let cut = s.pause().unwrap();
        assert_eq!((cut.reason, cut.audio.len()), ("pause", 64));
        assert!(s.pause_deadline().is_none());
    }

    #[test]
    fn repeated_chunks_are_ignored() {
        let mut s = stream();
        let now = Instant::now();
        s.push(5, &[0; 64], false, now);
        assert_eq!(s.push(5, &[0; 64], false, now).0, Pushed::Duplicate);
        assert_eq!(s.push(4, &[0; 64], false, now).0, Pushed::Duplicate);
        assert_eq!(s.pause().unwrap().audio.len(), 64);
    }
}
