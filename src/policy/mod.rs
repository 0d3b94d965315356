//! Node selection: ranks the candidates `candidates.lua` found for a task. The dispatch path calls
//! [`select_node`] once per dispatch, just before `dispatch_task`; the Lua script still refuses a
//! node that is dead, draining, full or wrong for the pair, whatever the ranking says.

use crate::scheduler::{Candidate, TaskSpec};

/// Least loaded first: the turn's affinity node while it has a slot, then nodes whose required
/// services are all ready, then the lowest `running / capacity`, then the freshest heartbeat.
pub fn select_node(task: &TaskSpec, candidates: &[Candidate]) -> Vec<String> {
    let required = required_services(task);
    let mut ranked: Vec<&Candidate> = candidates.iter().collect();
    ranked.sort_by(|a, b| {
        let ready = |c: &Candidate| required.iter().all(|s| c.ready.iter().any(|r| r == s));
        b.affinity
            .cmp(&a.affinity)
            .then(ready(b).cmp(&ready(a)))
            .then(a.load().total_cmp(&b.load()))
            .then(a.heartbeat_age_ms.cmp(&b.heartbeat_age_ms))
    });
    ranked.into_iter().map(|c| c.id.clone()).collect()
}

/// Service types the task's pipeline needs.
pub fn required_services(task: &TaskSpec) -> Vec<&'static str> {
    let p = &task.pipeline;
    [
        (p.use_asr, "asr"),
        (p.use_nmt, "nmt"),
        (p.use_tts, "tts"),
        (p.use_semantic, "semantic"),
        (p.use_tone, "tone"),
    ]
    .into_iter()
    .filter_map(|(on, kind)| on.then_some(kind))
    .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::protocol::{Mode, Pipeline};

    fn node(id: &str, running: u32, capacity: u32, ready: &[&str], age: i64, affinity: bool) -> Candidate {
        Candidate {
            id: id.into(),
            running,
            capacity,
            cpu: 0.0,
            gpu: 0.0,
            gpu_mem: 0.0,
            mem: 0.0,
            gpu_queue: 0,
            ready: ready.iter().map(|s| s.to_string()).collect(),
            labels: BTreeMap::new(),
            pairs: vec![],
            heartbeat_age_ms: age,
            affinity,
        }
    }

    fn task() -> TaskSpec {
        TaskSpec {
            session_id: "s".into(),
            utterance_index: 0,
            src_lang: "zh".into(),
            tgt_lang: "en".into(),
            dialect: None,
            mode: Mode::OneWay,
            lang_a: None,
            lang_b: None,
            pipeline: Pipeline::default(),
            audio_format: "opus".into(),
            sample_rate: 16000,
            trace_id: "t".into(),
            turn_id: None,
            room_code: None,
            tenant_id: None,
            recipients: vec![],
            created_ms: 0,
        }
    }

    #[test]
    fn ranks_affinity_then_ready_then_load_then_freshness() {
        let all = ["asr", "nmt", "tts"];
        let candidates = [
            node("busy", 3, 4, &all, 10, false),
            node("idle-not-ready", 0, 4, &["asr"], 10, false),
            node("idle-stale", 0, 4, &all, 4000, false),
            node("idle-fresh", 0, 4, &all, 5, false),
            node("affinity", 3, 4, &all, 10, true),
        ];
        assert_eq!(
            select_node(&task(), &candidates),
            ["affinity", "idle-fresh", "idle-stale", "busy", "idle-not-ready"]
        );
    }
}
