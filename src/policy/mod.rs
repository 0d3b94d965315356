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
