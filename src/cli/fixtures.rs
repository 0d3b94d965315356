//! `switchboard policy test FILE --fixtures F.json`: a policy's own cases, reported like `cargo
//! test`. A fixture is an input (a task and its candidates, a room utterance, its members and
//! availability, or an admission request) and what the policy must decide; the file is a JSON list
//! of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;
use switchboard::policy::replay::{SampleAdmission, SampleDecision};
use switchboard::policy::{
    Availability, Candidates, Compiled, Member, PolicyHost, Role, RoomView, Route, Task, Utterance, convert,
    samples,
};
use switchboard::store::Candidate;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    name: String,
    // node-selection
    #[serde(default)]
    task: FixtureTask,
    #[serde(default)]
    candidates: Vec<FixtureNode>,
    /// The ranking must begin with these ids, in this order (all of them: the whole ranking).
    #[serde(default)]
    expect_first: Option<Vec<String>>,
    // room-routing
    #[serde(default)]
    utterance: Option<FixtureUtterance>,
    #[serde(default)]
    members: Vec<FixtureMember>,
    /// Free slots per target language.
    #[serde(default)]
    availability: BTreeMap<String, u32>,
    /// Target language → recipients (order within a route does not matter).
    #[serde(default)]
    expect_routes: Option<BTreeMap<String, Vec<String>>>,
    // admission
    #[serde(default)]
    admission: SampleAdmission,
    #[serde(default)]
    expect_admission: Option<SampleDecision>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FixtureTask {
    src_lang: String,
    tgt_lang: String,
    attempt: u32,
    affinity: Option<String>,
    excluded: Vec<String>,
    tenant_id: Option<String>,
    room_code: Option<String>,
}

impl Default for FixtureTask {
    fn default() -> Self {
        Self {
            src_lang: "zh".into(),
            tgt_lang: "en".into(),
            attempt: 1,
            affinity: None,
            excluded: Vec::new(),
            tenant_id: None,
            room_code: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureNode {
    id: String,
    #[serde(default)]
    running: u32,
    #[serde(default = "four")]
    capacity: u32,
    #[serde(default)]
    cpu: f64,
    #[serde(default)]
    gpu: f64,
    #[serde(default)]
    gpu_mem: f64,
    #[serde(default)]
    mem: f64,
    #[serde(default)]
    gpu_queue: u32,
    #[serde(default = "all_ready")]
    ready: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    pairs: Vec<String>,
    #[serde(default)]
    heartbeat_age_ms: i64,
}

fn four() -> u32 {
    4
}

fn all_ready() -> Vec<String> {
    ["asr", "nmt", "tts"].map(String::from).to_vec()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureUtterance {
    session_id: String,
    src_lang: String,
    #[serde(default)]
    tgt_lang: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureMember {
    session_id: String,
    #[serde(default)]
    preferred_lang: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    /// Session ids whose original voice this member turned off.
    #[serde(default)]
    voice_off: Vec<String>,
}

pub fn load(file: &Path) -> anyhow::Result<Vec<Fixture>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a list of fixtures", file.display()))
}

/// Runs every fixture; prints one line each and the failures; an error when any failed.
pub fn run(
    host: &PolicyHost,
    compiled: &Compiled,
    fixtures: &[Fixture],
    explain: bool,
) -> anyhow::Result<()> {
    println!("\nrunning {} fixtures", fixtures.len());
    let mut failures = Vec::new();
    warm_up(host, compiled, fixtures);
    for f in fixtures {
        let outcome = match compiled.role {
            Role::NodeSelection => node_selection(host, compiled, f, explain),
            Role::RoomRouting => room_routing(host, compiled, f, explain),
            Role::Admission => admission(host, compiled, f, explain),
        };
        match outcome {
            Ok(()) => println!("fixture {} ... ok", f.name),
            Err(why) => {
                println!("fixture {} ... FAILED", f.name);
                failures.push(format!("---- {} ----\n{why}", f.name));
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:\n\n{}\n", failures.join("\n\n"));
    }
    let verdict = if failures.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\nfixture result: {verdict}. {} passed; {} failed",
        fixtures.len() - failures.len(),
        failures.len()
    );
    if !failures.is_empty() {
        bail!("{} of {} fixtures failed", failures.len(), fixtures.len());
    }
    Ok(())
}

fn node_selection(host: &PolicyHost, compiled: &Compiled, f: &Fixture, explain: bool) -> Result<(), String> {
    let Some(expected) = &f.expect_first else { return Err("no `expect_first` (node-selection)".into()) };
    let (task, candidates) = selection_inputs(f);
    if explain {
        println!("  task:       {task:?}");
        for (node, extras) in candidates.nodes.iter().zip(candidates.extras.iter()) {
            println!("  candidate:  {node:?} labels {:?} pairs {:?}", extras.labels, extras.pairs);
        }
    }
    let ranked = host.select(compiled, &task, &candidates).map_err(|e| format!("the call failed: {e}"))?;
    if explain {
        println!("  ranked:     {ranked:?}");
    }
    if ranked.len() < expected.len() || ranked[..expected.len()] != expected[..] {
        return Err(format!("expected the ranking to begin with {expected:?}\n     got {ranked:?}"));
    }
    Ok(())
}

fn admission(host: &PolicyHost, compiled: &Compiled, f: &Fixture, explain: bool) -> Result<(), String> {
    let Some(expected) = &f.expect_admission else { return Err("no `expect_admission` (admission)".into()) };
    let request = f.admission.request();
    if explain {
        println!("  request:    {request:?}");
    }
    let decision = host.admit(compiled, &request).map_err(|e| format!("the call failed: {e}"))?;
    let got = SampleDecision::from(&decision);
    if explain {
        println!("  decision:   {got:?}");
    }
    if !expected.matches(&got) {
        return Err(format!("expected {expected:?}\n     got {got:?}"));
    }
    Ok(())
}

/// Runs `compiled` on recorded live decisions (fixtures whose `expect_first` is the active
/// version's ranking, or whose `expect_routes` are the routes decided) and reports how often, and
/// where, it decides otherwise.
pub fn replay(host: &PolicyHost, compiled: &Compiled, samples: &[Fixture]) -> anyhow::Result<()> {
    let (mut first, mut order, mut failed) = (0, 0, 0);
    let mut examples = Vec::new();
    warm_up(host, compiled, samples);
    for f in samples {
        let differs = match compiled.role {
            Role::NodeSelection => {
                let expected = f.expect_first.clone().unwrap_or_default();
                let (task, candidates) = selection_inputs(f);
                host.select(compiled, &task, &candidates).map(|ranked| {
                    let first_differs = ranked.first() != expected.first();
                    order += usize::from(ranked != expected);
                    first_differs
                        .then(|| format!("active {:?}, this one {:?}", expected.first(), ranked.first()))
                })
            }
            Role::RoomRouting => {
                let (utterance, room, availability) = routing_inputs(f)?;
                host.route(compiled, &utterance, &room, &availability).map(|routes| {
                    let (got, want) =
                        (sorted_routes(routes), sorted(f.expect_routes.clone().unwrap_or_default()));
                    (got != want).then(|| format!("active {want:?}, this one {got:?}"))
                })
            }
            Role::Admission => host.admit(compiled, &f.admission.request()).map(|decision| {
                let (got, want) = (SampleDecision::from(&decision), f.expect_admission.clone());
                (Some(&got) != want.as_ref()).then(|| format!("decided {want:?}, this one {got:?}"))
            }),
        };
        let example = match differs {
            Ok(None) => continue,
            Ok(Some(example)) => {
                first += 1;
                example
            }
            Err(err) => {
                failed += 1;
                format!("the call failed: {err}")
            }
        };
        if examples.len() < 5 {
            examples.push(format!("  {}: {example}", f.name));
        }
    }
    let n = samples.len().max(1) as f64;
    let percent = |k: usize| k as f64 * 100.0 / n;
    println!("replayed {} live decisions", samples.len());
    match compiled.role {
        Role::NodeSelection => {
            println!("  first choice differs from the active version's: {first} ({:.1} %)", percent(first));
            println!("  ranking differs:                                {order} ({:.1} %)", percent(order));
        }
        Role::RoomRouting => {
            println!("  routes differ from the ones decided:            {first} ({:.1} %)", percent(first));
        }
        Role::Admission => {
            println!("  decision differs from the one made:             {first} ({:.1} %)", percent(first));
        }
    }
    println!("  calls failed (the default would decide):        {failed} ({:.1} %)", percent(failed));
    if !examples.is_empty() {
        println!("examples:\n{}", examples.join("\n"));
    }
    Ok(())
}

/// Runs the first case once, unjudged: a gateway calls a warm instance, so the first call's
/// instantiation (milliseconds on a cold, busy machine) must not count against the deadline.
fn warm_up(host: &PolicyHost, compiled: &Compiled, cases: &[Fixture]) {
    let Some(f) = cases.first() else { return };
    match compiled.role {
        Role::NodeSelection => {
            let (task, candidates) = selection_inputs(f);
            let _ = host.select(compiled, &task, &candidates);
        }
        Role::RoomRouting => {
            if let Ok((utterance, room, availability)) = routing_inputs(f) {
                let _ = host.route(compiled, &utterance, &room, &availability);
            }
        }
        Role::Admission => {
            let _ = host.admit(compiled, &f.admission.request());
        }
    }
}

/// A node-selection fixture's inputs, as the policy gets them.
fn selection_inputs(f: &Fixture) -> (Task, Candidates) {
    let t = &f.task;
    let spec = switchboard::store::TaskSpec {
        src_lang: t.src_lang.clone(),
        tgt_lang: t.tgt_lang.clone(),
        tenant_id: t.tenant_id.clone(),
        room_code: t.room_code.clone(),
        ..switchboard::sim::task_spec("s-fixture", 0)
    };
    let list: Vec<Candidate> = f
        .candidates
        .iter()
        .map(|n| Candidate {
            id: n.id.clone(),
            class: String::new(),
            running: n.running,
            capacity: n.capacity,
            cpu: n.cpu,
            gpu: n.gpu,
            gpu_mem: n.gpu_mem,
            mem: n.mem,
            gpu_queue: n.gpu_queue,
            ready: n.ready.clone(),
            labels: n.labels.clone(),
            pairs: Arc::new(if n.pairs.is_empty() { vec![spec.pool()] } else { n.pairs.clone() }),
            heartbeat_age_ms: n.heartbeat_age_ms,
            affinity: t.affinity.as_deref() == Some(n.id.as_str()),
        })
        .collect();
    (convert::task(&spec, t.attempt, &t.excluded, t.affinity.as_deref()), convert::candidates(&list, 0))
}

/// A room-routing fixture's inputs, as the policy gets them.
fn routing_inputs(f: &Fixture) -> anyhow::Result<(Utterance, RoomView, Vec<Availability>)> {
    let Some(u) = &f.utterance else { bail!("{}: no `utterance` (room-routing)", f.name) };
    let utterance = Utterance {
        session_id: u.session_id.clone(),
        tgt_lang: u.tgt_lang.clone().unwrap_or_else(|| u.src_lang.clone()),
        src_lang: u.src_lang.clone(),
        ..samples::utterance()
    };
    let members: Vec<Member> = f
        .members
        .iter()
        .map(|m| Member {
            session_id: m.session_id.clone(),
            participant_id: format!("p-{}", m.session_id),
            display_name: m.display_name.clone(),
            preferred_lang: m.preferred_lang.clone(),
        })
        .collect();
    let voices_off = f.members.iter().map(|m| (m.session_id.clone(), m.voice_off.clone())).collect();
    let room = RoomView { members, voices_off: Arc::new(voices_off) };
    let availability: Vec<Availability> = f
        .availability
        .iter()
        .map(|(lang, free)| Availability { tgt_lang: lang.clone(), free_slots: *free })
        .collect();
    Ok((utterance, room, availability))
}

/// Routes as target language → recipients in order, to compare regardless of order.
fn sorted_routes(routes: Vec<Route>) -> BTreeMap<String, Vec<String>> {
    sorted(routes.into_iter().map(|r| (r.tgt_lang, r.recipients)).collect())
}

fn sorted(mut routes: BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    routes.values_mut().for_each(|r| r.sort());
    routes
}

fn room_routing(host: &PolicyHost, compiled: &Compiled, f: &Fixture, explain: bool) -> Result<(), String> {
    let Some(expected) = &f.expect_routes else { return Err("no `expect_routes` (room-routing)".into()) };
    let (utterance, room, availability) = routing_inputs(f).map_err(|e| e.to_string())?;
    if explain {
        println!("  utterance:    {utterance:?}");
        println!("  members:      {:?}", room.members);
        println!("  voices off:   {:?}", room.voices_off);
        println!("  availability: {availability:?}");
    }
    let routes = host
        .route(compiled, &utterance, &room, &availability)
        .map_err(|e| format!("the call failed: {e}"))?;
    let (got, want) = (sorted_routes(routes), sorted(expected.clone()));
    if explain {
        println!("  routes:       {got:?}");
    }
    if got != want {
        return Err(format!("expected routes {want:?}\n     got {got:?}"));
    }
    Ok(())
}
