//! Typed inputs and replies of the scheduling scripts. Over 400 lines: declarations only, one
//! type per script input or reply, each with its doc comment.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

use crate::protocol::{ErrorCode, Mode, Pipeline};

/// What a task is: everything needed to build its `job_assign` and route its outcome. Stored once,
/// as JSON, in the task hash; a gateway that re-dispatches or completes the task reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub session_id: String,
    pub utterance_index: u64,
    pub src_lang: String,
    pub tgt_lang: String,
    pub dialect: Option<String>,
    pub mode: Mode,
    pub lang_a: Option<String>,
    pub lang_b: Option<String>,
    pub pipeline: Pipeline,
    pub audio_format: String,
    pub sample_rate: u32,
    pub trace_id: String,
    pub turn_id: Option<String>,
    /// This utterance's place in its turn (a turn cut by max-duration has several parts).
    #[serde(default)]
    pub part_index: u64,
    pub room_code: Option<String>,
    pub tenant_id: Option<String>,
    /// Sessions that receive this task's outcome.
    pub recipients: Vec<String>,
    pub created_ms: u64,
}

impl TaskSpec {
    /// PROTOCOL.md §3: a task is (speaker session, utterance_index, tgt_lang).
    pub fn task_id(&self) -> String {
        format!("{}:{}:{}", self.session_id, self.utterance_index, self.tgt_lang)
    }

    /// The utterance group of the fleet protocol (`translation_result.group_id`): the speaker's
    /// turn, or the utterance itself when it was sent whole.
    pub fn group_id(&self) -> String {
        match &self.turn_id {
            Some(turn) => turn.clone(),
            None => format!("utt-{}-{}", self.session_id, self.utterance_index),
        }
    }

    /// The load index the task draws its nodes from: `src>tgt`, or `lang_a>lang_b` in two-way mode.
    pub fn pool(&self) -> String {
        match (self.mode, &self.lang_a, &self.lang_b) {
            (Mode::TwoWayAuto, Some(a), Some(b)) => format!("{a}>{b}"),
            _ => format!("{}>{}", self.src_lang, self.tgt_lang),
        }
    }
}

/// The audio (or text) of a task, kept with a TTL so a re-dispatch after a node failure has it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub audio: Option<String>,
    pub text: Option<String>,
}

/// A node as `register_node` records it.
#[derive(Debug, Clone)]
pub struct NodeRegistration {
    pub id: String,
    pub presented_secret: Option<String>,
    pub secret: String,
    pub conn: String,
    pub gateway: String,
    pub capacity: u32,
    /// `src>tgt` pairs, sorted and unique.
    pub pairs: Vec<String>,
    pub ready: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub info: serde_json::Value,
}

/// Resource usage from a heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub cpu: f64,
    pub gpu: f64,
    pub gpu_mem: f64,
    pub mem: f64,
    pub gpu_queue: u32,
}

/// Capabilities a heartbeat replaces; `None` fields were not in the heartbeat.
#[derive(Debug, Clone, Default)]
pub struct CapabilityUpdate {
    pub pairs: Option<Vec<String>>,
    pub ready: Option<Vec<String>>,
}

/// A node `candidates` found for a task: the input of the node-selection policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Candidate {
    pub id: String,
    /// The capability class it was found in (lua/lib.lua); `dispatch_task` checks it still is.
    #[serde(default)]
    pub class: String,
    pub running: u32,
    pub capacity: u32,
    pub cpu: f64,
    pub gpu: f64,
    pub gpu_mem: f64,
    pub mem: f64,
    pub gpu_queue: u32,
    #[serde(deserialize_with = "csv")]
    pub ready: Vec<String>,
    #[serde(deserialize_with = "json_string")]
    pub labels: BTreeMap<String, String>,
    /// Its language pairs (`src>tgt`), shared by the candidates of one class.
    #[serde(skip)]
    pub pairs: Arc<Vec<String>>,
    pub heartbeat_age_ms: i64,
    /// The node serving this session's current turn.
    pub affinity: bool,
}

/// `candidates`: the nodes, and the pairs of each class among them (once per class, not per node).
#[derive(Debug, Deserialize)]
pub(crate) struct CandidatesReply {
    #[serde(deserialize_with = "lua_list")]
    nodes: Vec<Candidate>,
    classes: BTreeMap<String, String>,
}

impl CandidatesReply {
    /// The candidates, each with its class's pairs: from the reply, or from `known` (what earlier
    /// replies said; a class id is a hash of its pairs, so an entry never goes stale), which learns
    /// the new ones.
    pub(crate) fn into_candidates(self, known: &ClassPairs) -> Vec<Candidate> {
        let mut known = known.lock();
        for (class, csv) in self.classes {
            if known.len() < MAX_KNOWN_CLASSES {
                known.insert(
                    class,
                    Arc::new(csv.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect()),
                );
            }
        }
        let mut nodes = self.nodes;
        for node in &mut nodes {
            if let Some(p) = known.get(&node.class) {
                node.pairs = Arc::clone(p);
            }
        }
        nodes
    }
}

/// The pairs of each capability class a gateway has seen, by class id.
pub(crate) type ClassPairs = parking_lot::Mutex<BTreeMap<String, Arc<Vec<String>>>>;

/// Classes remembered at most (a fleet has a handful of node shapes): the ids are sent with every
/// `candidates` call.
pub(crate) const MAX_KNOWN_CLASSES: usize = 64;

/// Jobs a transition ended early, and what the caller must do about them.
#[derive(Debug, Default, Deserialize)]
pub struct Released {
    /// Tasks back in `waiting`: dispatch them again (a new attempt).
    #[serde(deserialize_with = "lua_list")]
    pub requeued: Vec<String>,
    /// Tasks whose attempts are used up: tell their recipients.
    #[serde(deserialize_with = "lua_list")]
    pub failed: Vec<FailedTask>,
    /// Jobs that timed out on a node that may still run them: send `job_cancel`.
    #[serde(deserialize_with = "lua_list")]
    pub cancel: Vec<CancelJob>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FailedTask {
    pub task_id: String,
    pub code: ErrorCode,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(deserialize_with = "json_string")]
    pub spec: TaskSpec,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CancelJob {
    pub job_id: String,
    pub node_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RegisterReply {
    Registered { released: Released },
    NodeIdConflict,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NodeReply {
    Ok,
    Draining,
    NotRegistered,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DispatchReply {
    Assigned {
        attempt: u32,
        job_id: String,
    },
    Refused {
        reason: String,
    },
    Waiting,
    /// A slot was free, but the fair queue puts another waiting task first: this task waits, and
    /// the slot went to the queue's head (`dispatch_task.lua`): send it its job.
    Queued {
        handoff: Handoff,
    },
    /// The task's tenant runs as many tasks as its cap: the task waits, held, and the slot went
    /// to the queue's head, if one could take it.
    Held {
        handoff: Option<Handoff>,
    },
    Failed {
        code: ErrorCode,
        #[serde(deserialize_with = "json_string")]
        spec: TaskSpec,
        /// The slot this task would have waited behind went to the queue's head.
        #[serde(default)]
        handoff: Option<Handoff>,
    },
    /// The task exists, in `state` (`waiting`, `assigned`, `completed`, `failed`, …).
    Duplicate {
        state: String,
    },
    Stale,
}

/// Where a new task waits when no slot is free, and how much it may run: the fair queue's band
/// (0 first) and weight, and its tenant's cap on running tasks. From the configuration
/// (`SchedulerConfig::admission`) or the admission policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub weight: f64,
    pub band: u32,
    pub max_running: Option<u32>,
}

/// What a cell holds of a new task's tenant and pool (`admission_state.lua`), for the admission
/// policy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TenantLoad {
    pub tenant_waiting: u32,
    pub tenant_running: u32,
    pub pool_waiting: u32,
}

/// A waiting task the script assigned to the slot another task could not take.
#[derive(Debug, PartialEq, Deserialize)]
pub struct Handoff {
    pub task_id: String,
    pub node_id: String,
    pub attempt: u32,
    pub job_id: String,
    #[serde(deserialize_with = "json_string")]
    pub spec: TaskSpec,
    #[serde(deserialize_with = "json_string")]
    pub payload: Payload,
}

/// Where a task lives: its cell's tag and its id (an expectation carries it, so the listener's
/// gateway can look the task up when its outcome is long awaited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub cell: String,
    pub id: String,
}

/// A task that ended with a node's result.
#[derive(Debug, Deserialize)]
pub struct Ended {
    pub task_id: String,
    pub attempt: u32,
    /// `None` when the call was a replay (its first reply was lost): the ended task no longer
    /// keeps its spec (docs/redis.md, "Memory per task").
    #[serde(default, deserialize_with = "optional_json_string")]
    pub spec: Option<TaskSpec>,
    /// Without the fair queue: its head when a full node's slot just freed (dispatch it now), or
    /// empty.
    pub wake: String,
    /// A task of the same tenant its cap held, back in its queue now that this one ended, or
    /// empty: dispatch it too.
    #[serde(default)]
    pub unheld: String,
    /// The waiting task the freed slot went to (the fair queue's head): send it its job.
    #[serde(default)]
    pub handoff: Option<Handoff>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CompleteReply {
    Completed(Ended),
    Failed(Ended),
    Unknown,
    Stale {
        #[serde(default)]
        state: Option<String>,
    },
}

/// `ack_job` and `job_route`: the job's task when the node holds it.
#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobReply {
    Ok {
        task_id: String,
        #[serde(deserialize_with = "json_string")]
        spec: TaskSpec,
        #[serde(default)]
        assigned_ms: Option<u64>,
    },
    Stale,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OfflineReply {
    Offline { released: Released },
    Stale,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LoadTaskReply {
    Waiting {
        attempt: u32,
        #[serde(deserialize_with = "csv")]
        tried: Vec<String>,
        #[serde(deserialize_with = "json_string")]
        spec: TaskSpec,
        #[serde(deserialize_with = "json_string")]
        payload: Payload,
    },
    Missing,
    Assigned,
    Completed,
    Failed,
    Moved,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MoveReply {
    /// Marked moved; create it in the other cell with this dispatch wait (ms since the epoch).
    Moved {
        wait_until: u64,
    },
    Stale,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SweepReply {
    Busy,
    Swept {
        #[serde(deserialize_with = "lua_list")]
        offline: Vec<String>,
        released: Released,
        #[serde(deserialize_with = "lua_list")]
        due: Vec<String>,
    },
}

/// cjson encodes an empty Lua table as `{}`; read it as an empty list.
pub(crate) fn lua_list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    // A visitor, not a detour through `serde_json::Value`: that cost ~10 % of the gateway's CPU
    // on the `candidates` reply (perf, docs/benchmarks.md).
    struct LuaList<T>(std::marker::PhantomData<T>);

    impl<'de, T: DeserializeOwned> serde::de::Visitor<'de> for LuaList<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list, or {} for an empty one")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
            match map.next_key::<serde::de::IgnoredAny>()? {
                None => Ok(Vec::new()),
                Some(_) => Err(serde::de::Error::custom("a non-empty object where a list was expected")),
            }
        }
    }

    d.deserialize_any(LuaList(std::marker::PhantomData))
}

/// A field that holds JSON text (specs, payloads and labels are stored as JSON strings).
fn json_string<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let text =
        Option::<String>::deserialize(d)?.ok_or_else(|| serde::de::Error::custom("missing JSON field"))?;
    serde_json::from_str(&text).map_err(serde::de::Error::custom)
}

/// Like `json_string`, but a missing or empty field is `None`.
fn optional_json_string<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(text) if !text.is_empty() => {
            serde_json::from_str(&text).map(Some).map_err(serde::de::Error::custom)
        }
        _ => Ok(None),
    }
}

fn csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    Ok(text.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
}
