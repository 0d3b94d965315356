//! Result ordering for one listener: outcomes of one speaker's utterances (results,
//! `missing_result`, failures) are released in `utterance_index` order. The listener's gateway
//! learns of each task meant for it when the task is created (an *expectation*), so it knows which
//! earlier outcomes are still coming; a gap held longer than the timeout is skipped with
//! `missing_result{reason:"gap_timeout"}`, and a late outcome for a skipped index is dropped.
//!
//! A resumed session releases nothing for its first second ([`RESUME_SETTLE`]), and a failure closes
//! its utterance (nothing else goes out for it). The file is over 400 lines for its unit tests.
//!
//! Over 400 lines with its unit tests (the last third of the file).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::protocol::{MissingResult, ToClient, now_ms};
use crate::store::TaskRef;

/// How long a resumed session holds every outcome back: the utterances its client sends again
/// right after resuming announce themselves meanwhile (the expectations the dead gateway held
/// are gone), so a later utterance's result cannot pass one of them.
pub const RESUME_SETTLE: Duration = Duration::from_secs(1);

/// Utterances one speaker may have pending for one listener; beyond this the oldest is skipped
/// (a speaker cannot grow a listener's memory without bound).
const MAX_PENDING: usize = 1024;

#[derive(Debug)]
pub struct Sequencer {
    gap: Duration,
    speakers: HashMap<String, Line>,
    /// A gap timer is running for this listener.
    armed: bool,
    /// Nothing is released before this (a resumed session, see [`RESUME_SETTLE`]).
    settle_until: Option<Instant>,
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
    /// When its first task was announced.
    expected_at: Option<Instant>,
    /// Its announced tasks, looked up when the outcome is long awaited.
    tasks: Vec<TaskRef>,
    /// When an audit last found every task ended with an outcome still awaited.
    ended_seen: Option<Instant>,
    /// When it was last audited.
    audited_at: Option<Instant>,
    /// Its outcome was decided here (a failure, or given up): later outcomes and expectations for
    /// it are dropped, so the utterance still ends in exactly one outcome.
    closed: bool,
}

/// An outcome awaited long enough to look its tasks up (see [`Sequencer::overdue`]).
#[derive(Debug, Clone)]
pub struct Overdue {
    pub speaker: String,
    pub index: u64,
    pub tasks: Vec<TaskRef>,
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
        Self { gap, speakers: HashMap::new(), armed: false, settle_until: None }
    }

    /// The sequencer of a session that resumed here: it releases nothing for [`RESUME_SETTLE`].
    pub fn resumed(gap: Duration) -> Self {
        Self { settle_until: Some(Instant::now() + RESUME_SETTLE), ..Self::new(gap) }
    }

    /// When the gap timer should look again: at the end of the settling, else after the gap.
    pub fn next_check(&self, now: Instant) -> Duration {
        match self.settle_until {
            Some(until) if until > now => until - now,
            _ => self.gap,
        }
    }

    fn settling(&self, now: Instant) -> bool {
        self.settle_until.is_some_and(|until| now < until)
    }

    /// Marks the gap timer running; false when it already was.
    pub fn arm(&mut self) -> bool {
        !std::mem::replace(&mut self.armed, true)
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// A task of `speaker`'s utterance `index` is meant for this listener.
    pub fn expect(&mut self, speaker: &str, index: u64, task: Option<TaskRef>) {
        let line = self.speakers.entry(speaker.to_owned()).or_default();
        if line.floor.is_some_and(|f| index <= f) {
            return; // already skipped: its outcome will be dropped as late
        }
        let slot = line.slots.entry(index).or_default();
        if slot.closed {
            return;
        }
        slot.awaited += 1;
        slot.expected_at.get_or_insert_with(Instant::now);
        slot.tasks.extend(task);
        while line.slots.len() > MAX_PENDING {
            let (skipped, _) = line.slots.pop_first().expect("not empty");
            line.floor = Some(skipped);
        }
    }

    /// An outcome of `speaker`'s utterance `index`; one that `closes` it is its last (a failure:
    /// a task whose submission timed out may still be created and answer later).
    pub fn outcome(&mut self, speaker: &str, index: u64, frame: String, closes: bool) -> Released {
        let now = Instant::now();
        let settling = self.settling(now);
        let line = self.speakers.entry(speaker.to_owned()).or_default();
        let late = match line.slots.get(&index) {
            Some(slot) => slot.closed,
            None => line.floor.is_some_and(|f| index <= f),
        };
        if late {
            return Released { late: true, ..Released::default() };
        }
        let slot = line.slots.entry(index).or_default();
        slot.awaited = if closes { 0 } else { slot.awaited.saturating_sub(1) };
        slot.closed = closes;
        slot.frames.push(frame);
        slot.held_since.get_or_insert(now);
        release(speaker, line, now, self.gap, settling)
    }

    /// Whether an outcome of `speaker`'s utterance `index` was released, is held or is awaited.
    fn known(&self, speaker: &str, index: u64) -> bool {
        self.speakers.get(speaker).is_some_and(|line| {
            line.floor.is_some_and(|f| index <= f)
                || line.slots.get(&index).is_some_and(|s| s.awaited > 0 || !s.frames.is_empty())
        })
    }

    /// Expects an outcome of `speaker`'s utterance `index` unless it is known here already.
    pub fn expect_unless_known(&mut self, speaker: &str, index: u64, task: TaskRef) {
        if !self.known(speaker, index) {
            self.expect(speaker, index, Some(task));
        }
    }

    /// Outcomes awaited (or last audited) at least `after` ago whose tasks are known.
    pub fn overdue(&mut self, now: Instant, after: Duration) -> Vec<Overdue> {
        let mut out = Vec::new();
        for (speaker, line) in &mut self.speakers {
            for (&index, slot) in &mut line.slots {
                let since = slot.audited_at.or(slot.expected_at);
                if slot.awaited == 0 || slot.tasks.is_empty() || since.is_none_or(|t| now - t < after) {
                    continue;
                }
                slot.audited_at = Some(now);
                out.push(Overdue { speaker: speaker.clone(), index, tasks: slot.tasks.clone() });
            }
        }
        out
    }

    /// What an audit found of an overdue outcome: once its tasks were found `ended` by two audits
    /// in a row and it still has not come, it never will (it was lost with a gateway that died):
    /// it is reported as `missing_result{reason:"outcome_unavailable"}`.
    pub fn audited(&mut self, speaker: &str, index: u64, ended: bool, now: Instant) -> Released {
        let settling = self.settling(now);
        let Some(line) = self.speakers.get_mut(speaker) else { return Released::default() };
        let Some(slot) = line.slots.get_mut(&index) else { return Released::default() };
        if !ended || slot.awaited == 0 {
            slot.ended_seen = None;
            return Released::default();
        }
        if slot.ended_seen.replace(now).is_none() {
            return Released::default();
        }
        slot.awaited = 0;
        slot.closed = true;
        if slot.frames.is_empty() {
            slot.frames.push(missing(speaker, index, "outcome_unavailable"));
        }
        slot.held_since.get_or_insert(now);
        release(speaker, line, now, self.gap, settling)
    }

    /// Skips gaps held longer than the timeout; returns what that released.
    pub fn expire(&mut self, now: Instant) -> Released {
        let mut out = Released::default();
        let settling = self.settling(now);
        for (speaker, line) in &mut self.speakers {
            let released = release(speaker, line, now, self.gap, settling);
            out.frames.extend(released.frames);
            out.held |= released.held;
        }
        out
    }

    /// Gives up the outcomes awaited for utterances announced before `before` (their tasks are
    /// gone: Redis lost its data): each such utterance gets `frame(speaker, index)` as its outcome,
    /// in order; returns what that released.
    pub fn give_up(&mut self, before: Instant, frame: impl Fn(&str, u64) -> String) -> Vec<String> {
        let now = Instant::now();
        let settling = self.settling(now);
        let mut out = Vec::new();
        for (speaker, line) in &mut self.speakers {
            for (&index, slot) in &mut line.slots {
                if slot.awaited > 0 && slot.expected_at.is_some_and(|t| t < before) {
                    slot.awaited = 0;
                    slot.closed = true;
                    slot.frames.push(frame(speaker, index));
                    slot.held_since.get_or_insert(now);
                }
            }
            out.extend(release(speaker, line, now, self.gap, settling).frames);
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
/// While `settling`, nothing goes.
fn release(speaker: &str, line: &mut Line, now: Instant, gap: Duration, settling: bool) -> Released {
    let mut out = Released::default();
    while let Some((&index, slot)) = line.slots.first_key_value() {
        if settling {
            break;
        }
        if slot.awaited > 0 {
            let waiting_since = line.slots.values().skip(1).filter_map(|s| s.held_since).min();
            if waiting_since.is_none_or(|t| now.duration_since(t) < gap) {
                break;
            }
            if slot.frames.is_empty() {
                out.frames.push(missing(speaker, index, "gap_timeout"));
            }
        }
        let slot = line.slots.remove(&index).expect("the first key");
        out.frames.extend(slot.frames);
        line.floor = Some(line.floor.map_or(index, |f| f.max(index)));
    }
    out.held = line.slots.values().any(|s| !s.frames.is_empty());
    out
}

pub fn missing(speaker: &str, index: u64, reason: &str) -> String {
    let frame = ToClient::MissingResult(MissingResult {
        session_id: speaker.to_owned(),
        utterance_index: index,
        reason: reason.into(),
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

    fn task(index: u64) -> TaskRef {
        TaskRef { cell: "c0-101".into(), id: format!("a:{index}:en") }
    }

    #[test]
    fn an_outcome_whose_tasks_ended_is_given_up_after_two_audits() {
        let mut s = seq();
        let start = Instant::now();
        s.expect("a", 0, Some(task(0)));
        s.expect("a", 1, Some(task(1)));
        assert!(s.outcome("a", 1, "r1".into(), false).held);
        let after = Duration::from_secs(5);
        assert!(s.overdue(start, after).is_empty(), "not awaited long yet");
        let later = Instant::now() + after;
        let overdue = s.overdue(later, after);
        assert_eq!(overdue.len(), 1, "only the awaited one: {overdue:?}");
        assert_eq!(overdue[0].tasks, [task(0)]);
        assert!(s.overdue(later, after).is_empty(), "audited just now");
        assert!(s.audited("a", 0, false, later).frames.is_empty(), "still running");
        assert!(s.audited("a", 0, true, later).frames.is_empty(), "ended: one more round");
        let r = s.audited("a", 0, true, later + after);
        assert!(r.frames[0].contains("outcome_unavailable") && r.frames[0].contains("\"utterance_index\":0"));
        assert_eq!(r.frames[1], "r1");
        assert!(s.outcome("a", 0, "r0".into(), false).late, "the lost one turning up is dropped");
    }

    #[test]
    fn releases_in_index_order() {
        let mut s = seq();
        for i in 0..3 {
            s.expect("a", i, None);
        }
        let r = s.outcome("a", 2, "r2".into(), false);
        assert!(r.frames.is_empty() && r.held);
        assert!(s.outcome("a", 1, "r1".into(), false).frames.is_empty());
        assert_eq!(s.outcome("a", 0, "r0".into(), false).frames, ["r0", "r1", "r2"]);
    }

    #[test]
    fn an_expectation_unless_known_only_adds_what_nothing_answers() {
        let mut s = seq();
        s.expect("a", 0, None);
        assert_eq!(s.outcome("a", 0, "r0".into(), false).frames, ["r0"]);
        s.expect_unless_known("a", 0, task(0));
        assert!(s.outcome("a", 0, "r0".into(), false).late, "released already: not awaited again");
        s.expect_unless_known("a", 1, task(1));
        s.expect_unless_known("a", 1, task(1));
        assert_eq!(s.outcome("a", 1, "r1".into(), false).frames, ["r1"], "expected once");
    }

    #[test]
    fn a_failure_closes_its_utterance_even_while_it_is_held() {
        let mut s = seq();
        s.expect("a", 0, None);
        assert!(s.outcome("a", 1, "failed1".into(), true).held, "held behind 0");
        s.expect("a", 1, None);
        assert!(s.outcome("a", 1, "r1".into(), false).late, "the task created after all answers late");
        assert_eq!(s.outcome("a", 0, "r0".into(), false).frames, ["r0", "failed1"]);
        assert!(s.outcome("a", 1, "r1".into(), false).late);
    }

    #[test]
    fn a_resumed_session_holds_outcomes_until_what_is_sent_again_announced_itself() {
        let mut s = Sequencer::resumed(Duration::from_millis(100));
        // The result of utterance 25 comes before the resent 24 is announced.
        let r = s.outcome("a", 25, "r25".into(), false);
        assert!(r.frames.is_empty() && r.held, "held while settling");
        assert!(s.next_check(Instant::now()) > Duration::from_millis(100), "first check when settled");
        s.expect("a", 24, None);
        assert!(s.outcome("a", 24, "r24".into(), false).frames.is_empty());
        assert_eq!(s.expire(Instant::now() + RESUME_SETTLE).frames, ["r24", "r25"]);
        assert_eq!(s.next_check(Instant::now() + RESUME_SETTLE), Duration::from_millis(100));
    }

    #[test]
    fn speakers_do_not_wait_for_each_other() {
        let mut s = seq();
        s.expect("a", 0, None);
        s.expect("b", 0, None);
        assert_eq!(s.outcome("b", 0, "b0".into(), false).frames, ["b0"]);
    }

    #[test]
    fn a_gap_is_skipped_after_the_timeout_and_its_late_outcome_dropped() {
        let mut s = seq();
        s.expect("a", 0, None);
        s.expect("a", 1, None);
        s.expect("a", 2, None);
        let start = Instant::now();
        assert!(s.outcome("a", 1, "r1".into(), false).held);
        assert!(s.expire(start).frames.is_empty(), "not before the timeout");
        let r = s.expire(Instant::now() + Duration::from_millis(150));
        assert_eq!(r.frames.len(), 2);
        assert!(r.frames[0].contains("gap_timeout") && r.frames[0].contains("\"utterance_index\":0"));
        assert_eq!(r.frames[1], "r1");
        assert!(s.outcome("a", 0, "r0".into(), false).late);
        // Index 2 is still awaited and nothing waits behind it: no gap.
        assert_eq!(s.outcome("a", 2, "r2".into(), false).frames, ["r2"]);
    }

    #[test]
    fn an_unannounced_outcome_passes_when_nothing_is_before_it() {
        let mut s = seq();
        assert_eq!(s.outcome("a", 7, "r7".into(), false).frames, ["r7"]);
        assert!(s.outcome("a", 3, "r3".into(), false).late, "below the floor");
    }

    #[test]
    fn two_outcomes_for_one_utterance_wait_for_each_other() {
        let mut s = seq();
        s.expect("a", 0, None);
        s.expect("a", 0, None);
        s.expect("a", 1, None);
        assert!(s.outcome("a", 1, "r1".into(), false).frames.is_empty());
        assert!(s.outcome("a", 0, "en".into(), false).frames.is_empty());
        assert_eq!(s.outcome("a", 0, "zh".into(), false).frames, ["en", "zh", "r1"]);
    }

    #[test]
    fn given_up_utterances_get_their_outcome_in_order_and_later_ones_still_wait() {
        let mut s = seq();
        s.expect("a", 0, None);
        s.expect("a", 1, None);
        assert!(s.outcome("a", 1, "r1".into(), false).frames.is_empty());
        let cut = Instant::now() + Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(2));
        s.expect("a", 2, None);
        let released = s.give_up(cut, |speaker, index| format!("lost {speaker} {index}"));
        assert_eq!(released, ["lost a 0", "r1"]);
        assert!(s.outcome("a", 0, "r0".into(), false).late, "the real outcome comes too late");
        assert_eq!(s.outcome("a", 2, "r2".into(), false).frames, ["r2"], "announced after: not given up");
    }

    #[test]
    fn flush_releases_everything_held() {
        let mut s = seq();
        s.expect("a", 0, None);
        s.expect("a", 1, None);
        s.outcome("a", 1, "r1".into(), false);
        assert_eq!(s.flush(), ["r1"]);
    }
}
