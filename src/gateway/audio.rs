//! Streaming audio: a session's `audio_chunk`s buffered and cut into utterances. A cut happens on
//! `is_final`, after `pause_ms` without a chunk (both end the turn), at `max_duration_ms` of audio,
//! or when the buffer reaches the payload cap (the turn goes on: the next cut keeps its `turn_id`
//! and asks for the node that served the turn so far). The gateway numbers the utterances 0, 1, ….

use std::time::{Duration, Instant};

use crate::config::AudioConfig;
use crate::scheduler::new_id;

/// Bytes per millisecond of audio assumed for compressed formats (32 kbit/s, typical speech
/// Opus); pcm16 is measured exactly from the sample rate.
const COMPRESSED_BYTES_PER_MS: usize = 4;

#[derive(Debug)]
pub struct AudioStream {
    pause: Duration,
    max_ms: u64,
    max_bytes: usize,
    bytes_per_ms: usize,
    buffer: Vec<u8>,
    last_seq: Option<u64>,
    last_chunk: Option<Instant>,
    next_index: u64,
    turn: Option<Turn>,
}

#[derive(Debug, Clone)]
struct Turn {
    id: String,
    affinity: Option<String>,
}

/// One utterance cut from the stream.
#[derive(Debug)]
pub struct Cut {
    pub index: u64,
    pub audio: Vec<u8>,
    pub turn_id: String,
    /// The node that served this turn's earlier cuts.
    pub affinity: Option<String>,
    pub reason: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Buffered,
    /// The chunk repeats or precedes one already received.
    Duplicate,
}

impl AudioStream {
    pub fn new(config: &AudioConfig, format: &str, sample_rate: u32, max_bytes: usize) -> Self {
        let bytes_per_ms = match format {
            "pcm16" | "pcm_s16le" | "pcm" | "wav" => (sample_rate as usize * 2 / 1000).max(1),
            _ => COMPRESSED_BYTES_PER_MS,
        };
        Self {
            pause: Duration::from_millis(config.pause_ms),
            max_ms: config.max_duration_ms,
            max_bytes,
            bytes_per_ms,
            buffer: Vec::new(),
            last_seq: None,
            last_chunk: None,
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
        self.turn.get_or_insert_with(|| Turn { id: new_id("turn-", 12), affinity: None });
        self.buffer.extend_from_slice(audio);
        let cut = if is_final {
            self.cut("is_final", true)
        } else if (self.buffer.len() / self.bytes_per_ms) as u64 >= self.max_ms {
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
        Some(self.last_chunk? + self.pause)
    }

    /// No chunk for `pause_ms`: cuts what is buffered and ends the turn.
    pub fn pause(&mut self) -> Option<Cut> {
        self.last_chunk = None;
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
        let index = self.next_index;
        self.next_index += 1;
        Some(Cut {
            index,
            audio: std::mem::take(&mut self.buffer),
            turn_id: turn.id,
            affinity: turn.affinity,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> AudioStream {
        // pcm16 at 16 kHz: 32 bytes per ms; 100 ms per utterance at most.
        AudioStream::new(&AudioConfig { pause_ms: 50, max_duration_ms: 100 }, "pcm16", 16_000, 1 << 20)
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
