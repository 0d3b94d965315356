//! Result ordering for one listener: outcomes of one speaker's utterances (results,
//! `missing_result`, failures) are released in `utterance_index` order. The listener's gateway
//! learns of each task meant for it when the task is created (an *expectation*), so it knows which
//! earlier outcomes are still coming; a gap held longer than the timeout is skipped with
//! `missing_result{reason:"gap_timeout"}`, and a late outcome for a skipped index is dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::protocol::{MissingResult, ToClient, now_ms};

/// Utterances one speaker may have pending for one listener; beyond this the oldest is skipped
/// (a speaker cannot grow a listener's memory without bound).
const MAX_PENDING: usize = 1024;

#[derive(Debug)]
pub struct Sequencer {
    gap: Duration,
    speakers: HashMap<String, Line>,
    /// A gap timer is running for this listener.
    armed: bool,
}

/// One speaker's utterances for this listener.
#[derive(Debug, Default)]
struct Line {
    slots: BTreeMap<u64, Slot>,
    /// The highest index released or skipped; outcomes at or below it without a slot are late.
    floor: Option<u64>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Outcomes still to come (a listener may receive more than one task of an utterance).
    awaited: u32,
    frames: Vec<String>,
    /// When its first outcome arrived (and, if it cannot go yet, started waiting).
    held_since: Option<Instant>,
}

/// What an update released, in order, and whether outcomes still wait behind a gap (the caller
/// then calls [`Sequencer::expire`] after the gap timeout).
#[derive(Debug, Default)]
pub struct Released {
    pub frames: Vec<String>,
    pub held: bool,
    /// The outcome came after its index had been skipped, and was dropped.
    pub late: bool,
}

impl Sequencer {
    pub fn new(gap: Duration) -> Self {
        Self { gap, speakers: HashMap::new(), armed: false }
    }

    pub fn gap(&self) -> Duration {
        self.gap
    }

    /// Marks the gap timer running; false when it already was.
    pub fn arm(&mut self) -> bool {
        !std::mem::replace(&mut self.armed, true)
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// A task of `speaker`'s utterance `index` is meant for this listener.
    pub fn expect(&mut self, speaker: &str, index: u64) {
        let line = self.speakers.entry(speaker.to_owned()).or_default();
        if line.floor.is_some_and(|f| index <= f) {
            return; // already skipped: its outcome will be dropped as late
        }
        line.slots.entry(index).or_default().awaited += 1;
        while line.slots.len() > MAX_PENDING {
            let (skipped, _) = line.slots.pop_first().expect("not empty");
            line.floor = Some(skipped);
        }
    }

    /// An outcome of `speaker`'s utterance `index`.
    pub fn outcome(&mut self, speaker: &str, index: u64, frame: String) -> Released {
        let now = Instant::now();
        let line = self.speakers.entry(speaker.to_owned()).or_default();
        if !line.slots.contains_key(&index) && line.floor.is_some_and(|f| index <= f) {
            return Released { late: true, ..Released::default() };
        }
        let slot = line.slots.entry(index).or_default();
        slot.awaited = slot.awaited.saturating_sub(1);
        slot.frames.push(frame);
        slot.held_since.get_or_insert(now);
        release(speaker, line, now, self.gap)
    }

    /// Skips gaps held longer than the timeout; returns what that released.
    pub fn expire(&mut self, now: Instant) -> Released {
        let mut out = Released::default();
        for (speaker, line) in &mut self.speakers {
            let released = release(speaker, line, now, self.gap);
            out.frames.extend(released.frames);
            out.held |= released.held;
        }
        out
    }

    /// Everything held, in order, with nothing more awaited (the session closes).
    pub fn flush(&mut self) -> Vec<String> {
        let mut frames = Vec::new();
        for line in self.speakers.values_mut() {
            for (_, slot) in std::mem::take(&mut line.slots) {
                frames.extend(slot.frames);
            }
        }
        frames
    }
}

/// Releases the line's leading slots that have all their outcomes. An awaited slot is given up
/// (its missing outcome reported as a gap timeout) once an outcome behind it has waited `gap`.
fn release(speaker: &str, line: &mut Line, now: Instant, gap: Duration) -> Released {
    let mut out = Released::default();
    while let Some((&index, slot)) = line.slots.first_key_value() {
        if slot.awaited > 0 {
            let waiting_since = line.slots.values().skip(1).filter_map(|s| s.held_since).min();
            if waiting_since.is_none_or(|t| now.duration_since(t) < gap) {
                break;
            }
            if slot.frames.is_empty() {
                out.frames.push(gap_timeout(speaker, index));
            }
        }
        let slot = line.slots.remove(&index).expect("the first key");
        out.frames.extend(slot.frames);
        line.floor = Some(line.floor.map_or(index, |f| f.max(index)));
    }
    out.held = line.slots.values().any(|s| !s.frames.is_empty());
    out
}

fn gap_timeout(speaker: &str, index: u64) -> String {
    let frame = ToClient::MissingResult(MissingResult {
        session_id: speaker.to_owned(),
        utterance_index: index,
        reason: "gap_timeout".into(),
        created_at_ms: now_ms(),
        trace_id: None,
    });
    serde_json::to_string(&frame).expect("frames serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq() -> Sequencer {
        Sequencer::new(Duration::from_millis(100))
    }

    #[test]
    fn releases_in_index_order() {
        let mut s = seq();
        for i in 0..3 {
            s.expect("a", i);
        }
        let r = s.outcome("a", 2, "r2".into());
        assert!(r.frames.is_empty() && r.held);
        assert!(s.outcome("a", 1, "r1".into()).frames.is_empty());
        assert_eq!(s.outcome("a", 0, "r0".into()).frames, ["r0", "r1", "r2"]);
    }

    #[test]
    fn speakers_do_not_wait_for_each_other() {
        let mut s = seq();
        s.expect("a", 0);
        s.expect("b", 0);
        assert_eq!(s.outcome("b", 0, "b0".into()).frames, ["b0"]);
    }

    #[test]
    fn a_gap_is_skipped_after_the_timeout_and_its_late_outcome_dropped() {
        let mut s = seq();
        s.expect("a", 0);
        s.expect("a", 1);
        s.expect("a", 2);
        let start = Instant::now();
        assert!(s.outcome("a", 1, "r1".into()).held);
        assert!(s.expire(start).frames.is_empty(), "not before the timeout");
        let r = s.expire(Instant::now() + Duration::from_millis(150));
        assert_eq!(r.frames.len(), 2);
        assert!(r.frames[0].contains("gap_timeout") && r.frames[0].contains("\"utterance_index\":0"));
        assert_eq!(r.frames[1], "r1");
        assert!(s.outcome("a", 0, "r0".into()).late);
        // Index 2 is still awaited and nothing waits behind it: no gap.
        assert_eq!(s.outcome("a", 2, "r2".into()).frames, ["r2"]);
    }

    #[test]
    fn an_unannounced_outcome_passes_when_nothing_is_before_it() {
        let mut s = seq();
        assert_eq!(s.outcome("a", 7, "r7".into()).frames, ["r7"]);
        assert!(s.outcome("a", 3, "r3".into()).late, "below the floor");
    }

    #[test]
    fn two_outcomes_for_one_utterance_wait_for_each_other() {
        let mut s = seq();
        s.expect("a", 0);
        s.expect("a", 0);
        s.expect("a", 1);
        assert!(s.outcome("a", 1, "r1".into()).frames.is_empty());
        assert!(s.outcome("a", 0, "en".into()).frames.is_empty());
        assert_eq!(s.outcome("a", 0, "zh".into()).frames, ["en", "zh", "r1"]);
    }

    #[test]
    fn flush_releases_everything_held() {
        let mut s = seq();
        s.expect("a", 0);
        s.expect("a", 1);
        s.outcome("a", 1, "r1".into());
        assert_eq!(s.flush(), ["r1"]);
    }
}
