//! The admission policy world (`switchboard:policy/admission`, docs/overload.md): the example
//! policy's decisions and fixtures, hostile answers contained, and a version hot-swapped into live
//! gateways capping a trial tenant, turning away its surplus, then rolled back.

mod common;

use std::time::Duration;

use common::invariants::task_state;
use common::*;
use serde_json::{Value, json};
use switchboard::policy::{
    AdmissionDecision, AdmissionRequest, CallError, Limits, LoadError, Policies, PolicyHost, Rejected, Role,
    Terms, samples,
};

fn policies(config: Vec<(String, String)>) -> Policies {
    Policies::new(PolicyHost::new(
        Limits { deadline: Duration::from_millis(5), memory_bytes: 16 << 20 },
        config,
    ))
}

fn request(tenant: &str) -> AdmissionRequest {
    AdmissionRequest { tenant_id: Some(tenant.into()), room_code: None, ..samples::admission_request() }
}

fn admit(band: u8, weight: f64, max_running: Option<u32>) -> AdmissionDecision {
    AdmissionDecision::Admit(Terms { band, weight, max_running })
}

#[test]
fn the_example_puts_rooms_first_and_caps_trial_tenants() {
    let p = policies(vec![("trial_tenants".into(), "kiosk, demo".into())]);
    assert!(!p.admission_in_use(), "the embedded default is not called");
    assert_eq!(p.admit(&request("acme")), AdmissionDecision::Configured);
    p.load(Role::Admission, &component("interactive-first"), "test").unwrap();
    assert!(p.admission_in_use());

    let room = AdmissionRequest { room_code: Some("123456".into()), ..request("acme") };
    assert_eq!(p.admit(&room), admit(0, 1.0, None), "a room utterance goes first");
    assert_eq!(p.admit(&request("acme")), admit(1, 1.0, None), "two-way outside a room");
    let captions = AdmissionRequest { mode: switchboard::policy::Mode::OneWay, ..request("acme") };
    assert_eq!(p.admit(&captions), admit(2, 1.0, None), "one-way captioning last");
    // Trial tenants: by prefix or listed in [policy.config]; half weight, two running at most.
    for trial in ["trial-x", "kiosk", "demo"] {
        let waiting = AdmissionRequest { tenant_waiting: 19, ..request(trial) };
        assert_eq!(p.admit(&waiting), admit(1, 0.5, Some(2)), "{trial}");
    }
    let full = AdmissionRequest { tenant_waiting: 20, ..request("kiosk") };
    match p.admit(&full) {
        AdmissionDecision::Reject(why) => assert!(why.contains("20 utterances waiting"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!matches!(
        p.admit(&request("kiosks")),
        AdmissionDecision::Admit(Terms { max_running: Some(_), .. })
    ));
}

/// `switchboard policy test --fixtures` runs admission cases: the scaffold's fixtures for this
/// example pass, and a wrong expectation fails.
#[test]
fn admission_fixtures_run_in_the_policy_cli() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("interactive-first.wasm");
    std::fs::write(&wasm, component("interactive-first")).unwrap();
    let run = |fixtures: Value| {
        let file = dir.path().join("fixtures.json");
        std::fs::write(&file, fixtures.to_string()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["policy", "test"])
            .arg(&wasm)
            .arg("--fixtures")
            .arg(&file)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, text) = run(json!([
        {"name": "room first", "admission": {"room_code": "1", "mode": "two_way_auto"},
         "expect_admission": {"admit": {"band": 0, "weight": 1.0}}},
        {"name": "trial capped", "admission": {"tenant_id": "trial-a", "mode": "two_way_auto"},
         "expect_admission": {"admit": {"band": 1, "weight": 0.5, "max_running": 2}}},
        {"name": "trial turned away", "admission": {"tenant_id": "trial-a", "tenant_waiting": 25},
         "expect_admission": {"reject": ""}},
    ]));
    assert!(ok && text.contains("3 passed; 0 failed"), "{text}");
    let (ok, text) = run(json!([
        {"name": "wrong band", "admission": {"mode": "one_way"},
         "expect_admission": {"admit": {"band": 0, "weight": 1.0}}},
    ]));
    assert!(!ok && text.contains("fixture wrong band ... FAILED") && text.contains("band: 2"), "{text}");
}

/// Every hostile answer — a loop, a trap, memory past the cap, a band, weight or cap out of range,
/// a rejection without a reason, an error — falls back to the configuration for that call, is
/// counted on the version, and the gateway's next calls go on.
#[test]
fn hostile_admission_answers_fall_back_to_the_configuration() {
    let p = policies(vec![]);
    for wrong in ["hostile-loop", "by-language", "least-loaded"] {
        let err = p.load(Role::Admission, &component(wrong), "test").err().expect(wrong);
        assert!(matches!(err, Rejected::Load(LoadError::WrongWorld { .. })), "{wrong}: {err}");
    }
    let loaded = p.load(Role::Admission, &component("hostile-admission"), "test").unwrap();
    assert_eq!(p.admit(&request("fine")), admit(0, 1.0, None));

    let host = p.host();
    let call = |tenant: &str| host.admit(&loaded.compiled, &request(tenant));
    assert!(matches!(call("loop"), Err(CallError::Deadline(_))));
    assert!(matches!(call("trap"), Err(CallError::Trap(_))));
    assert!(matches!(call("memory"), Err(CallError::Trap(m)) if m.contains("memory")));
    assert!(matches!(call("error"), Err(CallError::Returned(m)) if m == "no opinion"));
    for (tenant, why) in [
        ("band", "band 12"),
        ("nan", "weight NaN"),
        ("zero-weight", "weight 0"),
        ("zero-cap", "max-running 0"),
        ("empty-reject", "without a reason"),
    ] {
        match call(tenant) {
            Err(CallError::InvalidOutput(m)) => assert!(m.contains(why), "{tenant}: {m}"),
            other => panic!("{tenant}: {other:?}"),
        }
    }

    let before = loaded.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed);
    let hostile =
        ["loop", "trap", "memory", "band", "nan", "zero-weight", "zero-cap", "empty-reject", "error"];
    for tenant in hostile {
        assert_eq!(p.admit(&request(tenant)), AdmissionDecision::Configured, "{tenant}");
    }
    let after = loaded.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after - before, hostile.len() as u64, "each fallback counted on the version");
}

/// A version beside the active one (shadow) runs on the same requests and is not enforced.
#[test]
fn an_admission_shadow_is_compared_not_enforced() {
    let p = policies(vec![]);
    let example = p.prepare(Role::Admission, &component("interactive-first"), "test").unwrap();
    p.set_shadow(Role::Admission, Some(example.clone()));
    assert!(p.admission_in_use(), "a shadow needs the calls");
    for i in 0..4 {
        let r = AdmissionRequest { utterance_index: i, ..request("acme") };
        assert_eq!(p.admit(&r), AdmissionDecision::Configured, "the active version decides");
    }
    let disagreements = example.stats.disagreements.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(disagreements, 4);
    assert_eq!(p.admission_samples().len(), 1, "one decision in 16 kept for replay");
}

fn init(tenant: &str) -> Value {
    json!({"type":"session_init","client_version":"t","platform":"linux","src_lang":"zh",
        "tgt_lang":"en","mode":"one_way","tenant_id":tenant})
}

/// The next message of `peer` that is not a heartbeat.
async fn next(peer: &mut Peer) -> Value {
    loop {
        let m = peer.recv().await;
        if m["type"] != "server_heartbeat" {
            return m;
        }
    }
}

/// The stored record of the task a job belongs to.
async fn task_of_job(gw: &TestGateway, job: &Value) -> Value {
    let job_id = job["job_id"].as_str().unwrap();
    let task_id = job_id.split_once(':').unwrap().1;
    let mut conn = gw.state.store.connection();
    task_state(&mut conn, &gw.state.store.cell(0).task(task_id)).await.unwrap()
}

/// Pushed through the admin API into two live gateways, the example caps a trial tenant at two
/// running tasks (the third waits, held, while another tenant's task still starts at once), turns
/// away its utterance past `trial_max_waiting`, releases the held one when a result comes; rolled
/// back, the configuration decides again.
#[tokio::test]
async fn an_admission_policy_swapped_in_caps_and_rejects_then_rolls_back() {
    let redis = redis();
    let config = |c: &mut switchboard::config::Config| {
        c.admin_token = Some("tok".into());
        c.policy.sync_interval_ms = 100;
        c.policy.config.insert("trial_max_waiting".into(), "1".into());
        c.scheduler.retry_ms = 60_000;
    };
    let a = TestGateway::start(&redis, config).await;
    let b = TestGateway::start(&redis, config).await;
    let token = Some("tok");
    let put = "/admin/policies/admission";
    let (status, body) = admin(&a, "PUT", put, token, &component("interactive-first")).await;
    assert_eq!(status, 200, "{body}");
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("the admission policy on every gateway", || async { p.admission_in_use() }).await;
    }

    let mut node = a.node().await;
    node.register(&["zh"], &["en"], 4).await;
    let mut trial = b.client().await;
    trial.send(init("trial-kiosk")).await;
    let trial_session = trial.expect("session_init_ack").await["session_id"].as_str().unwrap().to_owned();
    for i in 0..2 {
        trial.utter(&trial_session, i).await;
    }
    let first = node.expect("job_assign").await;
    let second = node.expect("job_assign").await;
    let stored = task_of_job(&a, &first).await;
    assert_eq!(
        (stored["band"].as_u64(), stored["weight"].as_f64(), stored["cap"].as_u64()),
        (Some(2), Some(0.5), Some(2))
    );

    // The third waits, held by the cap, though the node has two free slots.
    trial.utter(&trial_session, 2).await;
    loop {
        let m = next(&mut trial).await;
        if m["type"] == "ui_event" && m["event"] == "QUEUED" && m["utterance_index"] == 2 {
            break;
        }
    }
    // Past trial_max_waiting (1 waiting): turned away with the policy's reason (the error comes
    // in the speaker's order, after the outcomes of its earlier utterances).
    trial.utter(&trial_session, 3).await;
    // Another tenant is not held behind the trial: its task starts at once.
    let mut acme = a.client().await;
    acme.send(init("acme")).await;
    let acme_session = acme.expect("session_init_ack").await["session_id"].as_str().unwrap().to_owned();
    acme.utter(&acme_session, 0).await;
    let acme_job = node.expect("job_assign").await;
    assert_eq!(acme_job["session_id"], acme_session.as_str());
    // A result of the trial tenant lets its held task run.
    node.answer(&first, "one").await;
    let released = node.expect("job_assign").await;
    assert_eq!(
        (released["session_id"].as_str(), released["utterance_index"].as_u64()),
        (Some(trial_session.as_str()), Some(2))
    );
    for job in [&second, &released, &acme_job] {
        node.answer(job, "done").await;
    }
    let mut outcomes = Vec::new();
    let error = loop {
        let m = next(&mut trial).await;
        match m["type"].as_str() {
            Some("error") => break m,
            Some("translation_result") => outcomes.push(m["utterance_index"].as_u64().unwrap()),
            _ => {}
        }
    };
    assert_eq!(outcomes, [0, 1, 2], "in order, before the rejection");
    assert_eq!(error["code"], "NODE_OVERLOADED", "{error}");
    assert!(error["message"].as_str().unwrap().contains("not admitted: trial tenant trial-kiosk"), "{error}");
    let (_, kept) = admin(&a, "GET", "/admin/policies/admission/samples", token, b"").await;
    let (_, kept_b) = admin(&b, "GET", "/admin/policies/admission/samples", token, b"").await;
    let kept: Vec<Value> =
        [kept, kept_b].into_iter().flat_map(|k| k.as_array().cloned().unwrap_or_default()).collect();
    assert!(kept.iter().any(|k| k["expect_admission"]["admit"]["max_running"] == 2), "{kept:?}");

    // Rolled back: the configuration decides again (no cap, the default band).
    let (status, body) = admin(&a, "POST", &format!("{put}/rollback"), token, b"").await;
    assert_eq!(status, 200, "{body}");
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("the embedded default again", || async { !p.admission_in_use() }).await;
    }
    trial.utter(&trial_session, 4).await;
    let later = node.expect("job_assign").await;
    let stored = task_of_job(&a, &later).await;
    assert_eq!((stored["band"].as_u64(), stored.get("cap")), (Some(1), None), "{stored}");
    let problems = common::invariants::redis_problems(&a.state.store).await;
    assert!(problems.is_empty(), "{problems:?}");
    a.stop().await;
    b.stop().await;
}
