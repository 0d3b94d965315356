//! The scheduler's records as the WIT types policies see, and sample inputs for smoke tests.

use std::sync::Arc;

use super::bindings::{AdmissionRequest, Availability, Member, Mode, Node, ServiceTypes, Task, Utterance};
use super::host::{Candidates, NodeExtras, RoomView};
use crate::protocol;
use crate::store::{Candidate, TaskSpec, TenantLoad};

fn mode(mode: protocol::Mode) -> Mode {
    match mode {
        protocol::Mode::OneWay => Mode::OneWay,
        protocol::Mode::TwoWayAuto => Mode::TwoWayAuto,
    }
}

/// A new task and its cell's counts, as the admission policy sees them.
pub fn admission_request(spec: &TaskSpec, load: &TenantLoad) -> AdmissionRequest {
    AdmissionRequest {
        session_id: spec.session_id.clone(),
        utterance_index: spec.utterance_index,
        src_lang: spec.src_lang.clone(),
        tgt_lang: spec.tgt_lang.clone(),
        mode: mode(spec.mode),
        tenant_id: spec.tenant_id.clone(),
        room_code: spec.room_code.clone(),
        recipients: spec.recipients.len() as u32,
        tenant_waiting: load.tenant_waiting,
        tenant_running: load.tenant_running,
        pool_waiting: load.pool_waiting,
    }
}

pub fn task(spec: &TaskSpec, attempt: u32, excluded: &[String], affinity: Option<&str>) -> Task {
    Task {
        session_id: spec.session_id.clone(),
        utterance_index: spec.utterance_index,
        src_lang: spec.src_lang.clone(),
        tgt_lang: spec.tgt_lang.clone(),
        lang_a: spec.lang_a.clone(),
        lang_b: spec.lang_b.clone(),
        mode: mode(spec.mode),
        required_services: service_types(required_services(&spec.pipeline)),
        tenant_id: spec.tenant_id.clone(),
        turn_id: spec.turn_id.clone(),
        affinity_node: affinity.map(str::to_owned),
        paired_node: None,
        attempt,
        excluded_nodes: excluded.to_vec(),
    }
}

pub fn candidates(list: &[Candidate], cell: u32) -> Candidates {
    let nodes = list
        .iter()
        .map(|c| Node {
            id: c.id.clone(),
            cell,
            running: c.running,
            capacity: c.capacity,
            cpu_percent: c.cpu as f32,
            gpu_percent: c.gpu as f32,
            gpu_mem_percent: c.gpu_mem as f32,
            mem_percent: c.mem as f32,
            gpu_queue_length: c.gpu_queue,
            ready_services: service_types(c.ready.iter().map(String::as_str)),
            heartbeat_age_ms: c.heartbeat_age_ms.max(0) as u64,
            draining: false,
        })
        .collect();
    let extras = list
        .iter()
        .map(|c| NodeExtras {
            id: c.id.clone(),
            labels: c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            pairs: Arc::clone(&c.pairs),
        })
        .collect();
    Candidates { nodes, extras: Arc::new(extras) }
}

/// Service type names as flags; unknown names are ignored.
pub fn service_types<'a>(names: impl IntoIterator<Item = &'a str>) -> ServiceTypes {
    names.into_iter().fold(ServiceTypes::empty(), |set, name| {
        set | match name {
            "asr" => ServiceTypes::ASR,
            "nmt" => ServiceTypes::NMT,
            "tts" => ServiceTypes::TTS,
            "tone" => ServiceTypes::TONE,
            "semantic" => ServiceTypes::SEMANTIC,
            "phonetic" => ServiceTypes::PHONETIC,
            "punctuation" => ServiceTypes::PUNCTUATION,
            _ => ServiceTypes::empty(),
        }
    })
}

/// Service types a pipeline needs.
pub fn required_services(p: &protocol::Pipeline) -> Vec<&'static str> {
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

/// Inputs a new policy version must handle before it goes live.
pub mod samples {
    use super::*;

    pub fn task() -> Task {
        Task {
            session_id: "s-5A3F00D1".into(),
            utterance_index: 3,
            src_lang: "zh".into(),
            tgt_lang: "en".into(),
            lang_a: None,
            lang_b: None,
            mode: Mode::OneWay,
            required_services: ServiceTypes::ASR | ServiceTypes::NMT | ServiceTypes::TTS,
            tenant_id: Some("acme".into()),
            turn_id: None,
            affinity_node: None,
            paired_node: None,
            attempt: 1,
            excluded_nodes: vec![],
        }
    }

    pub fn nodes(n: usize) -> Candidates {
        let list: Vec<Candidate> = (0..n)
            .map(|i| Candidate {
                id: format!("node-{i:08X}"),
                running: (i % 4) as u32,
                capacity: 4,
                cpu: 10.0 + i as f64,
                gpu: 20.0,
                gpu_mem: 30.0,
                mem: 40.0,
                gpu_queue: (i % 3) as u32,
                ready: ["asr", "nmt", "tts"].map(String::from).to_vec(),
                labels: [("region".to_owned(), if i % 2 == 0 { "eu" } else { "us" }.to_owned())].into(),
                class: String::new(),
                pairs: Arc::new(vec!["zh>en".into()]),
                heartbeat_age_ms: (i as i64 * 37) % 5000,
                affinity: false,
            })
            .collect();
        candidates(&list, 0)
    }

    pub fn utterance() -> Utterance {
        Utterance {
            session_id: "s-00000001".into(),
            utterance_index: 0,
            src_lang: "en".into(),
            tgt_lang: "en".into(),
            room_code: "123456".into(),
            tenant_id: None,
        }
    }

    /// Three members; the third turned the speaker's original voice off.
    pub fn members() -> RoomView {
        let members = [("s-00000001", "en"), ("s-00000002", "zh"), ("s-00000003", "ja")]
            .into_iter()
            .map(|(s, lang)| Member {
                session_id: s.into(),
                participant_id: format!("p-{s}"),
                display_name: None,
                preferred_lang: Some(lang.into()),
            })
            .collect();
        let voices_off = vec![("s-00000003".to_owned(), vec!["s-00000001".to_owned()])];
        RoomView { members, voices_off: std::sync::Arc::new(voices_off) }
    }

    /// A room task of a tenant with tasks waiting and running.
    pub fn admission_request() -> AdmissionRequest {
        AdmissionRequest {
            session_id: "s-00000001".into(),
            utterance_index: 7,
            src_lang: "en".into(),
            tgt_lang: "zh".into(),
            mode: Mode::TwoWayAuto,
            tenant_id: Some("acme".into()),
            room_code: Some("123456".into()),
            recipients: 2,
            tenant_waiting: 3,
            tenant_running: 5,
            pool_waiting: 12,
        }
    }

    pub fn availability() -> Vec<Availability> {
        ["zh", "ja"].into_iter().map(|l| Availability { tgt_lang: l.into(), free_slots: 4 }).collect()
    }
}
