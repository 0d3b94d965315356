//! Policies: hostile components rejected at load or contained at run time, custom policies changing
//! decisions end to end, hot swap from a directory and through the admin API, rollback, shadow mode.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard::policy::canary::{self, Totals};
use switchboard::policy::{
    Breaker, CallError, CanaryLimits, CanaryVerdict, Limits, LoadError, Loaded, Member, Policies, PolicyHost,
    Rejected, Role, RoomView, TaskEnd, Utterance, samples, sha256_hex,
};
use switchboard::store::Candidate;

fn policies() -> Policies {
    Policies::new(PolicyHost::new(
        Limits { deadline: Duration::from_millis(5), memory_bytes: 16 << 20 },
        vec![],
    ))
}

#[test]
fn hostile_policies_are_rejected_at_load() {
    let p = policies();
    let embedded = p.active(Role::NodeSelection).compiled.sha256.clone();
    let load = |name: &str| p.load(Role::NodeSelection, &component(name), "test").err().expect(name);
    assert!(
        matches!(load("hostile-foreign-import"), Rejected::Load(LoadError::ForeignImport(i)) if i == "steal-secrets")
    );
    assert!(matches!(load("hostile-loop"), Rejected::Smoke(CallError::Deadline(_))));
    let memory = load("hostile-memory");
    assert!(matches!(&memory, Rejected::Smoke(CallError::Trap(m)) if m.contains("memory")), "{memory}");
    assert!(matches!(load("hostile-trap"), Rejected::Smoke(CallError::Trap(_))));
    assert!(
        matches!(load("hostile-unknown-ids"), Rejected::Smoke(CallError::InvalidOutput(m)) if m.contains("IMPOSTOR"))
    );
    // A million ids overflow the guest's memory cap, its deadline, or the output bound.
    assert!(matches!(load("hostile-million-ids"), Rejected::Smoke(_)));
    assert!(matches!(load("by-language"), Rejected::Load(LoadError::WrongWorld { .. })));
    let garbage = p.load(Role::NodeSelection, b"\0asm not really", "test").err().unwrap();
    assert!(matches!(garbage, Rejected::Load(LoadError::Invalid(_))));
    assert_eq!(p.active(Role::NodeSelection).compiled.sha256, embedded, "the old version stays");
    let status = p.status();
    let rejection = status[0].last_rejection.as_ref().unwrap();
    assert!(rejection.reason.contains("not a valid component"), "{rejection:?}");
}

#[test]
fn room_routing_defaults_and_examples() {
    let p = policies();
    let member = |s: &str, lang: Option<&str>| Member {
        session_id: s.into(),
        participant_id: format!("p-{s}"),
        display_name: None,
        preferred_lang: lang.map(Into::into),
    };
    let members = [
        member("s-1", Some("en")),
        member("s-2", Some("zh")),
        member("s-3", Some("ja")),
        member("s-4", Some("zh")),
        member("s-5", None),
    ];
    let speaker = Utterance { session_id: "s-1".into(), ..samples::utterance() };
    let routes = p.route(&speaker, &members.to_vec().into(), &[]);
    let got: Vec<(String, Vec<String>)> = routes.into_iter().map(|r| (r.tgt_lang, r.recipients)).collect();
    assert_eq!(got, [("ja".into(), vec!["s-3".into()]), ("zh".into(), vec!["s-2".into(), "s-4".into()])]);
    assert!(p.route(&speaker, &members[..1].to_vec().into(), &[]).is_empty(), "alone: single-session mode");

    p.load(Role::RoomRouting, &component("include-speaker"), "test").unwrap();
    let routes = p.route(&speaker, &members[..2].to_vec().into(), &[]);
    let got: Vec<(String, Vec<String>)> = routes.into_iter().map(|r| (r.tgt_lang, r.recipients)).collect();
    assert_eq!(got, [("en".into(), vec!["s-1".into()]), ("zh".into(), vec!["s-2".into()])]);
}

/// WIT 0.1.1 added `host.raw-voice-off`: a policy built against 0.1.0 still loads and runs, and one
/// built against 0.1.1 sees the voices each member turned off.
#[test]
fn raw_voice_preferences_reach_room_routing_and_old_policies_still_load() {
    let p = policies();
    let member = |s: &str, lang: &str| Member {
        session_id: s.into(),
        participant_id: format!("p-{s}"),
        display_name: None,
        preferred_lang: Some(lang.into()),
    };
    let speaker = Utterance { session_id: "s-1".into(), src_lang: "zh".into(), ..samples::utterance() };
    let members = vec![member("s-1", "zh"), member("s-2", "zh"), member("s-3", "zh"), member("s-4", "en")];

    p.load(Role::RoomRouting, &component("legacy-0-1-0"), "test").expect("a 0.1.0 policy loads");
    let routes = p.route(&speaker, &members.clone().into(), &[]);
    assert_eq!(routes.len(), 1);
    assert_eq!((routes[0].tgt_lang.as_str(), routes[0].recipients.len()), ("en", 3), "and it ran");

    p.load(Role::RoomRouting, &component("same-language-by-voice"), "test").unwrap();
    // s-3 turned the speaker's voice off: it gets the same-language result; s-2 hears the voice.
    let voices_off = vec![("s-3".to_owned(), vec!["s-1".to_owned()])];
    let room = RoomView { members, voices_off: Arc::new(voices_off) };
    let got: Vec<(String, Vec<String>)> =
        p.route(&speaker, &room, &[]).into_iter().map(|r| (r.tgt_lang, r.recipients)).collect();
    assert_eq!(got, [("en".into(), vec!["s-4".into()]), ("zh".into(), vec!["s-3".into()])]);
}

#[tokio::test]
async fn hostile_policies_are_contained_at_run_time_while_dispatch_goes_on() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    let (node, mut client, session) = gw.node_and_client(4).await;
    let _node = auto_answer(node, "n");
    let policies = &gw.state.policies;
    for (i, name) in
        ["hostile-loop", "hostile-memory", "hostile-trap", "hostile-unknown-ids", "hostile-million-ids"]
            .into_iter()
            .enumerate()
    {
        // Skip the smoke test, as a version that only misbehaves on live inputs would.
        let compiled = policies.host().compile(Role::NodeSelection, &component(name)).unwrap();
        policies.activate(Role::NodeSelection, Arc::new(Loaded::new(compiled, name)));
        client.utter(&session, i as u64).await;
        let result = client.expect("translation_result").await;
        assert_eq!(result["utterance_index"], i, "{name}");
        let status = &policies.status()[0].active;
        assert_eq!((status.calls, status.fallbacks), (1, 1), "{name}: one call, one fallback");
    }
    assert_eq!(gw.metric("tasks_failed"), 0);
    gw.stop().await;
}

/// A version failing every live call is suspended after `failures` calls in a row: it is no longer
/// called (the default decides, without waiting its deadline each time) until the cool-down ends;
/// then one more failure suspends it again. Shadow versions have the same breaker.
#[test]
fn the_breaker_suspends_a_failing_version_and_tries_it_again_after_the_cool_down() {
    let p = policies().breaker(Breaker { failures: 3, cooldown_ms: 300 });
    let spec = switchboard::sim::task_spec("s-1", 0);
    let candidates = three_candidates();
    let trap = |name: &str| {
        let compiled = p.host().compile(Role::NodeSelection, &component("hostile-trap")).unwrap();
        Arc::new(Loaded::new(compiled, name))
    };
    p.activate(Role::NodeSelection, trap("active"));
    p.set_shadow(Role::NodeSelection, Some(trap("shadow")));
    let select = || p.select(0, &spec, 1, &[], None, &candidates);
    for _ in 0..10 {
        assert_eq!(select(), ["n0", "n1", "n2"], "the default decides every call");
    }
    let status = &p.status()[0];
    for v in [&status.active, status.shadow.as_ref().unwrap()] {
        assert_eq!((v.calls, v.suspensions, v.skipped), (3, 1, 7), "{v:?}");
        assert!(v.suspended_until_ms.is_some());
    }
    assert_eq!(status.active.fallbacks, 10);

    std::thread::sleep(Duration::from_millis(350));
    assert!(p.status()[0].active.suspended_until_ms.is_none(), "the cool-down is over");
    select();
    let active = &p.status()[0].active;
    assert_eq!((active.calls, active.suspensions), (4, 2), "one more failure suspends it again");
    assert!(active.suspended_until_ms.is_some());
}

/// The operator CLI does every admin action: push (active or shadow), status, promote, rollback,
/// shadow clear; it finds the token `switchboard dev` writes for an admin address. Pushing the
/// active version again stops it shadowing itself.
#[tokio::test]
async fn the_policy_cli_pushes_promotes_rolls_back_and_clears_the_shadow() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| {
        c.admin_token = Some("tok".into());
        c.policy.sync_interval_ms = 100;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let weighted = dir.path().join("weighted.wasm");
    std::fs::write(&weighted, component("weighted-random")).unwrap();
    let least = dir.path().join("least.wasm");
    std::fs::write(&least, component("least-loaded")).unwrap();
    let sha = sha256_hex(&component("weighted-random"));
    let url = gw.admin_url.clone();
    let cli = |args: Vec<String>, token: bool| {
        let url = url.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
            cmd.arg("policy").args(&args).arg("--admin-url").arg(&url).env_remove("SWITCHBOARD_ADMIN_TOKEN");
            if token {
                cmd.arg("--token").arg("tok");
            }
            let out = cmd.output().await.unwrap();
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
    };
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let p = gw.state.policies.clone();
    let role = ["--role", "node-selection"];

    let path = |f: &std::path::Path| f.display().to_string();
    let (ok, out) = cli(args(&["push", &path(&weighted), role[0], role[1], "--shadow"]), false).await;
    assert!(!ok && out.contains("401"), "no token: refused with a hint: {out}");
    let (ok, out) = cli(args(&["push", &path(&weighted), role[0], role[1], "--shadow"]), true).await;
    assert!(ok, "{out}");
    eventually("the shadow", || async { p.shadow(Role::NodeSelection).is_some() }).await;
    let (ok, out) = cli(args(&["status"]), true).await;
    assert!(ok && out.contains("shadow") && out.contains(&sha[..12]), "{out}");

    let (ok, out) = cli(args(&["promote", role[0], role[1]]), true).await;
    assert!(ok, "{out}");
    eventually("promoted", || async {
        p.active(Role::NodeSelection).compiled.sha256 == sha && p.shadow(Role::NodeSelection).is_none()
    })
    .await;
    let (ok, out) = cli(args(&["promote", role[0], role[1]]), true).await;
    assert!(!ok && out.contains("409"), "nothing to promote: {out}");

    // The active version pushed as shadow, then as active again: it stops shadowing itself.
    assert!(cli(args(&["push", &path(&weighted), role[0], role[1], "--shadow"]), true).await.0);
    eventually("self-shadow", || async { p.shadow(Role::NodeSelection).is_some() }).await;
    assert!(cli(args(&["push", &path(&weighted), role[0], role[1]]), true).await.0);
    eventually("no self-shadow", || async { p.shadow(Role::NodeSelection).is_none() }).await;

    assert!(cli(args(&["push", &path(&least), role[0], role[1], "--shadow"]), true).await.0);
    eventually("a shadow", || async { p.shadow(Role::NodeSelection).is_some() }).await;
    let (ok, out) = cli(args(&["shadow", "clear", role[0], role[1]]), true).await;
    assert!(ok, "{out}");
    eventually("shadow cleared", || async { p.shadow(Role::NodeSelection).is_none() }).await;
    let (ok, out) = cli(args(&["rollback", role[0], role[1]]), true).await;
    assert!(ok, "{out}");
    eventually("rolled back", || async { p.active(Role::NodeSelection).compiled.sha256 != sha }).await;

    // The token `switchboard dev` wrote for this admin address is found without --token.
    let token_file = switchboard::admin_client::dev_token_file(&url);
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    std::fs::write(&token_file, "tok").unwrap();
    let (ok, out) = cli(args(&["status"]), false).await;
    std::fs::remove_file(&token_file).unwrap();
    assert!(ok, "{out}");
    gw.stop().await;
}

/// `policy new` writes a crate anywhere (its own WIT, an example, a README); `policy build` makes the
/// component with cargo alone, and it loads and decides like any policy.
#[test]
fn policy_new_and_build_make_a_working_component_outside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    // A target directory kept between runs, so only the first builds wit-bindgen.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/policy-scaffold");
    let p = policies();
    for (name, role) in [("my-ranking", Role::NodeSelection), ("my-routing", Role::RoomRouting)] {
        let run = |args: &[&str], cwd: &std::path::Path| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .arg("policy")
                .args(args)
                .current_dir(cwd)
                .env("CARGO_TARGET_DIR", &target)
                .output()
                .unwrap();
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "policy {args:?}: {text}");
            text
        };
        run(&["new", name, "--role", role.as_str()], dir.path());
        let crate_dir = dir.path().join(name);
        for file in ["Cargo.toml", "src/lib.rs", "wit/policy.wit", "README.md", "fixtures.json"] {
            assert!(crate_dir.join(file).exists(), "{name}/{file}");
        }
        let out = run(&["build"], &crate_dir);
        assert!(out.contains(&format!("world    switchboard:policy/{}", role.as_str())), "{out}");
        assert!(out.contains("smoke    ok"), "{out}");
        let bytes = std::fs::read(crate_dir.join(format!("{name}.wasm"))).unwrap();
        let loaded = p.prepare(role, &bytes, "test").expect("the built component loads");
        assert_eq!(loaded.compiled.role, role);
        // Its fixtures pass, reported like cargo test; --explain prints the inputs.
        let wasm = format!("{name}.wasm");
        let out =
            run(&["test", &wasm, "--calls", "10", "--fixtures", "fixtures.json", "--explain"], &crate_dir);
        assert!(out.contains("fixture result: ok.") && out.contains("0 failed"), "{out}");
        assert!(out.contains(if role == Role::NodeSelection { "candidate:" } else { "members:" }), "{out}");
    }
    // A fixture the policy does not meet fails the command.
    let crate_dir = dir.path().join("my-ranking");
    std::fs::write(
        crate_dir.join("wrong.json"),
        r#"[{"name": "wrong on purpose", "candidates": [{"id": "a", "running": 3}, {"id": "b"}], "expect_first": ["a"]}]"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["policy", "test", "my-ranking.wasm", "--calls", "1", "--fixtures", "wrong.json"])
        .current_dir(&crate_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("wrong on purpose ... FAILED"), "{text}");
    assert!(text.contains(r#"got ["b", "a"]"#), "{text}");
    // `new` does not overwrite.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["policy", "new", "my-ranking", "--role", "node-selection"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
}

/// A gateway keeps recent live node-selection inputs with its decisions; `policy replay` runs a
/// candidate version on them and reports how often it would decide otherwise, before any push.
#[tokio::test]
async fn policy_replay_runs_a_candidate_on_recent_live_decisions() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.policy.replay_every = 1).await;
    let (node, mut client, session) = gw.node_and_client(4).await;
    let _node = auto_answer(node, "n");
    for i in 0..5 {
        client.utter(&session, i).await;
        client.expect("translation_result").await;
    }
    let (status, samples) = admin(&gw, "GET", "/admin/policies/node-selection/samples", None, b"").await;
    assert_eq!(status, 200);
    let samples = samples.as_array().unwrap();
    assert_eq!(samples.len(), 5, "{samples:?}");
    assert_eq!(samples[0]["candidates"][0]["capacity"], 4);
    assert_eq!(samples[0]["expect_first"].as_array().unwrap().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    for (name, expect) in [
        ("least-loaded", "first choice differs from the active version's: 0 (0.0 %)"),
        ("hostile-trap", "calls failed (the default would decide):        5 (100.0 %)"),
    ] {
        let text = replay(&gw, dir.path(), name).await;
        assert!(text.contains("replayed 5 live decisions") && text.contains(expect), "{name}: {text}");
    }

    // Room routing: the gateway's routing decisions (made here through its policies, as the room
    // handler makes them) are kept too, and replayed the same way.
    let member = |s: &str, lang: &str| Member {
        session_id: s.into(),
        participant_id: format!("p-{s}"),
        display_name: None,
        preferred_lang: Some(lang.into()),
    };
    let room: RoomView = vec![member("s-1", "zh"), member("s-2", "en"), member("s-3", "ja")].into();
    for i in 0..4 {
        let speaker = Utterance {
            session_id: "s-1".into(),
            src_lang: "zh".into(),
            utterance_index: i,
            ..samples::utterance()
        };
        assert_eq!(gw.state.policies.route(&speaker, &room, &[]).len(), 2);
    }
    let (_, samples) = admin(&gw, "GET", "/admin/policies/room-routing/samples", None, b"").await;
    assert_eq!(samples.as_array().unwrap().len(), 4, "{samples}");
    assert_eq!(samples[0]["expect_routes"]["en"], json!(["s-2"]), "{samples}");
    for (name, expect) in [
        ("by-language", "routes differ from the ones decided:            0 (0.0 %)"),
        ("include-speaker", "routes differ from the ones decided:            4 (100.0 %)"),
    ] {
        let text = replay(&gw, dir.path(), name).await;
        assert!(text.contains("replayed 4 live decisions") && text.contains(expect), "{name}: {text}");
    }
    gw.stop().await;
}

/// `switchboard policy replay` of the test component `name` against `gw`'s kept decisions.
async fn replay(gw: &TestGateway, dir: &std::path::Path, name: &str) -> String {
    let file = dir.join(format!("{name}.wasm"));
    std::fs::write(&file, component(name)).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["policy", "replay"])
        .arg(&file)
        .args(["--admin-url", &gw.admin_url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// A canary gets its share of live calls on every gateway; one that misbehaves on live traffic is
/// rolled back on its own (every gateway stops using it, the stored state says why), and no task
/// is lost meanwhile; a sound canary is promoted with `policy promote`.
#[tokio::test]
async fn a_canary_misbehaving_on_live_traffic_is_rolled_back_on_every_gateway() {
    let redis = redis();
    let config = |c: &mut switchboard::config::Config| {
        c.admin_token = Some("tok".into());
        c.policy.sync_interval_ms = 100;
        c.policy.canary_min_calls = 4;
    };
    let a = TestGateway::start(&redis, config).await;
    let b = TestGateway::start(&redis, config).await;
    let token = Some("tok");
    let put = "/admin/policies/node-selection";
    let trap = component("live-trap");
    let sha = sha256_hex(&trap);
    assert_eq!(
        admin(&a, "PUT", &format!("{put}?mode=canary"), token, &trap).await.0,
        400,
        "a share is needed"
    );
    let (status, body) = admin(&a, "PUT", &format!("{put}?mode=canary&share=50"), token, &trap).await;
    assert_eq!(status, 200, "{body}");
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("the canary on every gateway", || async { p.canary(Role::NodeSelection).is_some() }).await;
    }
    // Live traffic on both gateways: every utterance gets its result (the default decides the
    // canary's failed calls) until the canary is rolled back.
    let (node_a, mut client_a, session_a) = a.node_and_client(4).await;
    let (node_b, mut client_b, session_b) = b.node_and_client(4).await;
    let _nodes = (auto_answer(node_a, "na"), auto_answer(node_b, "nb"));
    for i in 0..30 {
        client_a.utter(&session_a, i).await;
        client_a.expect("translation_result").await;
        client_b.utter(&session_b, i).await;
        client_b.expect("translation_result").await;
    }
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("the canary rolled back everywhere", || async { p.canary(Role::NodeSelection).is_none() })
            .await;
    }
    let (_, listing) = admin(&b, "GET", "/admin/policies", token, b"").await;
    let stored = &listing["stored"]["node-selection"];
    assert_eq!(stored["canary"], "", "{listing}");
    assert_eq!(stored["canary_rolled_back"], sha.as_str(), "{listing}");
    assert!(stored["canary_reason"].as_str().unwrap().contains("fell back to the default"), "{listing}");
    let rollbacks = a.state.policies.canary_ends(Role::NodeSelection).0
        + b.state.policies.canary_ends(Role::NodeSelection).0;
    assert_eq!(rollbacks, 1, "one gateway ends it; the other finds it ended");
    assert_eq!(a.metric("tasks_failed") + b.metric("tasks_failed"), 0);

    // A sound canary is promoted; an operator can end one too.
    let weighted = component("weighted-random");
    assert_eq!(admin(&a, "PUT", &format!("{put}?mode=canary&share=10"), token, &weighted).await.0, 200);
    let p = b.state.policies.clone();
    eventually("the second canary", || async { p.canary(Role::NodeSelection).is_some() }).await;
    let (status, body) = admin(&b, "POST", &format!("{put}/promote"), token, b"").await;
    assert_eq!((status, body["promoted"].as_str()), (200, Some("canary")), "{body}");
    eventually("promoted", || async {
        p.canary(Role::NodeSelection).is_none()
            && p.active(Role::NodeSelection).compiled.sha256 == sha256_hex(&weighted)
    })
    .await;
    assert_eq!(
        admin(&a, "PUT", &format!("{put}?mode=canary&share=10"), token, &component("least-loaded")).await.0,
        200
    );
    eventually("a third canary", || async { p.canary(Role::NodeSelection).is_some() }).await;
    assert_eq!(admin(&a, "DELETE", &format!("{put}/canary"), token, b"").await.0, 200);
    eventually("ended by the operator", || async { p.canary(Role::NodeSelection).is_none() }).await;
    assert_eq!(admin(&a, "DELETE", &format!("{put}/canary"), token, b"").await.0, 409);
    a.stop().await;
    b.stop().await;
}

/// The tasks a canary placed are judged against the active version's: a higher failure rate or a
/// slower result p99 rolls it back; with `promote_after`, one within every limit is promoted. The
/// counts add up across gateways (`Totals` fields, as Redis sums them).
#[test]
fn a_canary_is_judged_on_the_outcomes_of_the_tasks_it_placed() {
    // The p99 per decision is not what this test is about (a cold instance's first call is slow).
    let limits =
        CanaryLimits { min_calls: 20, promote_after: 40, max_p99_us: 1_000_000, ..CanaryLimits::default() };
    let p = policies().with_canary_limits(limits);
    let canary = || {
        let compiled = p.host().compile(Role::NodeSelection, &component("weighted-random")).unwrap();
        Arc::new(Loaded::new(compiled, "canary"))
    };
    let verdict = || {
        let (canary, active) = p.canary_and_active(Role::NodeSelection).unwrap();
        let (c, a) = (Totals::of(&canary.stats), Totals::of(&active.stats));
        // Through the field names `canary_report.lua` adds up.
        let fields = |t: &Totals, prefix| t.fields(prefix).into_iter().collect();
        assert_eq!(Totals::from_fields(&fields(&c, "c"), "c"), c);
        canary::judge(Role::NodeSelection, &c, &a, &limits)
    };
    let placed_by_canary = |id: &str| switchboard::store::stable_hash(id) % 100 < 50;
    let tasks: Vec<String> = (0..400).map(|i| format!("s-1:{i}:en")).collect();

    // Failures: 30 % of the canary's tasks, none of the active's.
    p.set_canary(Role::NodeSelection, Some(canary()), 50);
    assert_eq!(verdict(), None, "no evidence yet");
    for (i, id) in tasks.iter().enumerate() {
        let end = if placed_by_canary(id) && i % 10 < 3 {
            TaskEnd::Failed
        } else {
            TaskEnd::Delivered { result_ms: 300 }
        };
        p.record_outcome(id, end);
    }
    let v = verdict();
    assert!(matches!(&v, Some(CanaryVerdict::RollBack(r)) if r.contains("failed or timed out")), "{v:?}");

    // Slow results: the canary's tasks take 3× as long.
    p.set_canary(Role::NodeSelection, Some(canary()), 50);
    for id in &tasks {
        let result_ms = if placed_by_canary(id) { 900 } else { 300 };
        p.record_outcome(id, TaskEnd::Delivered { result_ms });
    }
    let v = verdict();
    assert!(matches!(&v, Some(CanaryVerdict::RollBack(r)) if r.contains("result p99")), "{v:?}");

    // Within the limits: promoted once it decided `promote_after` calls.
    p.set_canary(Role::NodeSelection, Some(canary()), 50);
    for id in &tasks {
        p.record_outcome(id, TaskEnd::Delivered { result_ms: 300 });
    }
    assert_eq!(verdict(), None, "outcomes alone are not decisions");
    let spec = switchboard::sim::task_spec("s-1", 0);
    let candidates = three_candidates();
    let mut i = 0;
    while p.canary(Role::NodeSelection).unwrap().stats.calls.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        let spec = switchboard::store::TaskSpec { utterance_index: i, ..spec.clone() };
        p.select(0, &spec, 1, &[], None, &candidates);
        i += 1;
    }
    let v = verdict();
    assert!(matches!(&v, Some(CanaryVerdict::Promote(_))), "{v:?}");
}

/// A version whose last call was slow runs its next ones off the async worker: with one worker
/// thread, another task still runs while the slow policy spins to its deadline.
#[test]
fn a_slow_policy_does_not_stall_other_tasks_on_its_worker() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let p = Arc::new(policies().breaker(Breaker { failures: 0, cooldown_ms: 0 }));
    let compiled = p.host().compile(Role::NodeSelection, &component("live-slow")).unwrap();
    p.activate(Role::NodeSelection, Arc::new(Loaded::new(compiled, "slow")));
    let in_call = Arc::new(AtomicBool::new(false));
    let ran_during_calls = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let (flag, seen) = (in_call.clone(), ran_during_calls.clone());
        let other = tokio::spawn(async move {
            loop {
                if flag.load(Relaxed) {
                    seen.fetch_add(1, Relaxed);
                }
                tokio::task::yield_now().await;
            }
        });
        let spec = switchboard::sim::task_spec("s-1", 0);
        let candidates = three_candidates();
        let (p, flag) = (p.clone(), in_call.clone());
        tokio::spawn(async move {
            for _ in 0..10 {
                flag.store(true, Relaxed);
                assert_eq!(p.select(0, &spec, 1, &[], None, &candidates), ["n0", "n1", "n2"]);
                flag.store(false, Relaxed);
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        other.abort();
    });
    let status = &p.status()[0].active;
    assert_eq!((status.calls, status.fallbacks, status.offloaded), (10, 10, 9), "{status:?}");
    assert!(ran_during_calls.load(Relaxed) > 0, "the other task ran while the policy spun");
}

fn three_candidates() -> Vec<Candidate> {
    (0..3)
        .map(|i| {
            serde_json::from_value(json!({
                "id": format!("n{i}"), "class": "c", "running": i, "capacity": 4, "cpu": 0.0, "gpu": 0.0,
                "gpu_mem": 0.0, "mem": 0.0, "gpu_queue": 0, "ready": "asr,nmt,tts", "labels": "{}",
                "heartbeat_age_ms": 0, "affinity": false
            }))
            .unwrap()
        })
        .collect()
}

/// Live, on two gateways: a canary whose decisions all succeed but whose tasks fail (it prefers a
/// node that fails every job) is rolled back on its own — its decisions are made on one gateway,
/// its failures seen on the other, and the fleet's totals judged — and dropped by both; once that
/// node is healthy again, the same canary is promoted on its own (`canary_promote_after`). The
/// role's events say what happened, by whom and why.
#[tokio::test]
async fn a_canary_is_rolled_back_for_its_tasks_failures_and_promoted_when_sound() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let redis = redis();
    let config = |c: &mut switchboard::config::Config| {
        c.admin_token = Some("tok".into());
        c.policy.sync_interval_ms = 100;
        c.policy.canary_min_calls = 6;
        c.policy.canary_promote_after = 20;
        // Judged on its tasks here, not on its speed: a loaded test machine may miss 5 ms deadlines.
        c.policy.deadline_ms = 50;
        c.policy.canary_max_p99_us = 1_000_000;
        c.policy.config.insert("default_region".into(), "us".into());
    };
    let a = TestGateway::start(&redis, config).await;
    let b = TestGateway::start(&redis, config).await;
    // The default prefers eu (every service ready); region-affinity prefers us, which fails every
    // job while `us_fails` holds.
    let mut eu = a.node().await;
    eu.send(register_with("eu", true)).await;
    eu.expect("node_register_ack").await;
    let _eu = auto_answer(eu, "eu");
    let mut us = b.node().await;
    us.send(register_with("us", false)).await;
    us.expect("node_register_ack").await;
    let us_fails = Arc::new(AtomicBool::new(true));
    let fails = us_fails.clone();
    let _us = tokio::spawn(async move {
        while let Some(job) = us.try_recv(Duration::from_secs(30)).await {
            if job["type"] != "job_assign" {
                continue;
            }
            if fails.load(Relaxed) {
                us.send(json!({"type":"job_result","job_id":job["job_id"],"attempt_id":job["attempt_id"],
                    "success":false,"error":{"code":"MODEL_NOT_AVAILABLE","message":"no model"}}))
                    .await;
            } else {
                us.answer(&job, "us").await;
            }
        }
    });
    let mut client = a.client().await;
    let session = client.init_one_way("zh", "en").await;
    let put = "/admin/policies/node-selection";
    let canary = component("region-affinity");
    let sha = sha256_hex(&canary);
    let token = Some("tok");
    assert_eq!(admin(&a, "PUT", &format!("{put}?mode=canary&share=50"), token, &canary).await.0, 200);
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("the canary on every gateway", || async { p.canary(Role::NodeSelection).is_some() }).await;
    }
    let index = std::cell::Cell::new(0);
    let mut utter = async || {
        client.utter(&session, index.get()).await;
        index.set(index.get() + 1);
        loop {
            let frame = client.recv().await;
            if frame["type"] == "translation_result" || frame["type"] == "error" {
                return frame["type"] == "error";
            }
        }
    };
    let mut failed = 0;
    while a.state.policies.canary(Role::NodeSelection).is_some() && index.get() < 200 {
        failed += utter().await as u32;
    }
    assert!(failed >= 6, "{failed} failed tasks before the rollback ({} utterances)", index.get());
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("the canary rolled back everywhere", || async { p.canary(Role::NodeSelection).is_none() })
            .await;
    }
    let (_, listing) = admin(&a, "GET", "/admin/policies", token, b"").await;
    let stored = &listing["stored"]["node-selection"];
    assert_eq!(stored["canary_rolled_back"], sha.as_str(), "{listing}");
    let event = &stored["events"][0];
    assert_eq!((event["change"].as_str(), event["sha256"].as_str()), (Some("canary_off"), Some(&*sha)));
    // The failures were seen by b, the decisions made by a: either may judge the fleet's totals.
    let by = event["by"].as_str().unwrap();
    assert!(by == &*a.state.gateway_id || by == &*b.state.gateway_id, "{listing}");
    assert!(event["reason"].as_str().unwrap().contains("failed or timed out"), "{listing}");
    for _ in 0..10 {
        assert!(!utter().await, "the default decides again: no failure");
    }

    // The node is healthy again: the same version, canaried again, is promoted on its own.
    us_fails.store(false, Relaxed);
    assert_eq!(admin(&a, "PUT", &format!("{put}?mode=canary&share=50"), token, &canary).await.0, 200);
    let p = b.state.policies.clone();
    eventually("the canary again", || async { p.canary(Role::NodeSelection).is_some() }).await;
    while a.state.policies.active(Role::NodeSelection).compiled.sha256 != sha && index.get() < 400 {
        assert!(!utter().await);
    }
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("promoted everywhere", || async {
            p.canary(Role::NodeSelection).is_none() && p.active(Role::NodeSelection).compiled.sha256 == sha
        })
        .await;
    }
    let (_, listing) = admin(&b, "GET", "/admin/policies", token, b"").await;
    let events = &listing["stored"]["node-selection"]["events"];
    assert_eq!(events[0]["change"], "canary_promote", "{listing}");
    assert_eq!(events[1]["change"], "canary", "{listing}");
    assert_eq!(events[1]["by"], "admin", "{listing}");
    a.stop().await;
    b.stop().await;
}

fn register_with(region: &str, tts_ready: bool) -> serde_json::Value {
    let mut r = node_register(None, &["zh"], &["en"], 4);
    r["labels"] = json!({ "region": region });
    r["capability_by_type"] =
        json!([{"type":"asr","ready":true},{"type":"nmt","ready":true},{"type":"tts","ready":tts_ready}]);
    r
}

#[tokio::test]
async fn a_custom_policy_from_the_directory_changes_the_chosen_node() {
    let redis = redis();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let gw = TestGateway::start(&redis, |c| {
        c.policy.dir = Some(path);
        c.policy.config.insert("default_region".into(), "us".into());
    })
    .await;
    // The default prefers eu (all services ready); region-affinity prefers us (the configured region).
    let mut us = gw.node().await;
    us.send(register_with("us", false)).await;
    us.expect("node_register_ack").await;
    let mut eu = gw.node().await;
    eu.send(register_with("eu", true)).await;
    eu.expect("node_register_ack").await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;

    client.utter(&session, 0).await;
    let job = eu.expect("job_assign").await;
    eu.answer(&job, "eu").await;
    assert_eq!(client.expect("translation_result").await["text_translated"], "eu");

    let file = dir.path().join("node-selection.wasm");
    std::fs::write(&file, component("region-affinity")).unwrap();
    let sha = sha256_hex(&component("region-affinity"));
    let policies = gw.state.policies.clone();
    eventually("the file version active", || async {
        policies.active(Role::NodeSelection).compiled.sha256 == sha
    })
    .await;
    client.utter(&session, 1).await;
    let job = us.expect("job_assign").await;
    us.answer(&job, "us").await;
    assert_eq!(client.expect("translation_result").await["text_translated"], "us");

    // A bad version is rejected and the good one stays; deleting the file restores the default.
    std::fs::write(&file, component("hostile-trap")).unwrap();
    eventually("the rejection", || async {
        policies.status()[0]
            .last_rejection
            .as_ref()
            .is_some_and(|r| r.sha256 == sha256_hex(&component("hostile-trap")))
    })
    .await;
    assert_eq!(policies.active(Role::NodeSelection).compiled.sha256, sha);
    std::fs::remove_file(&file).unwrap();
    eventually("the default back", || async { policies.active(Role::NodeSelection).source == "embedded" })
        .await;
    client.utter(&session, 2).await;
    let job = eu.expect("job_assign").await;
    eu.answer(&job, "eu again").await;
    assert_eq!(client.expect("translation_result").await["utterance_index"], 2);
    gw.stop().await;
}

#[tokio::test]
async fn admin_api_pushes_to_every_gateway_with_shadow_and_rollback() {
    let redis = redis();
    let token = Some("tok");
    let with_token = |c: &mut switchboard::config::Config| {
        c.admin_token = Some("tok".into());
        c.policy.sync_interval_ms = 100;
    };
    let a = TestGateway::start(&redis, with_token).await;
    let b = TestGateway::start(&redis, with_token).await;
    let put = "/admin/policies/node-selection";
    let weighted = component("weighted-random");
    let sha = sha256_hex(&weighted);

    assert_eq!(admin(&a, "PUT", put, None, &weighted).await.0, 401);
    assert_eq!(admin(&a, "PUT", put, Some("nope"), &weighted).await.0, 401);
    assert_eq!(admin(&a, "GET", "/admin/policies", None, b"").await.0, 401);
    assert_eq!(admin(&a, "PUT", "/admin/policies/teleport", token, &weighted).await.0, 404);
    let (status, body) = admin(&a, "PUT", put, token, &component("hostile-loop")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("deadline"), "{body}");

    let (status, body) = admin(&a, "PUT", put, token, &weighted).await;
    assert_eq!((status, body["sha256"].as_str()), (200, Some(sha.as_str())), "{body}");
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("the pushed version on every gateway", || async {
            p.active(Role::NodeSelection).compiled.sha256 == sha
        })
        .await;
    }

    // Shadow: runs beside the active one on live traffic, not enforced; agreement is reported.
    let (status, _) =
        admin(&a, "PUT", &format!("{put}?mode=shadow"), token, &component("least-loaded")).await;
    assert_eq!(status, 200);
    let p = a.state.policies.clone();
    eventually("the shadow", || async { p.shadow(Role::NodeSelection).is_some() }).await;
    let (node, mut client, session) = a.node_and_client(4).await;
    let _node = auto_answer(node, "n");
    for i in 0..5 {
        client.utter(&session, i).await;
        client.expect("translation_result").await;
    }
    let (_, listing) = admin(&a, "GET", "/admin/policies", token, b"").await;
    let shadow = &listing["policies"][0]["shadow"];
    assert_eq!(shadow["calls"], 5, "{listing}");
    assert_eq!(shadow["agreement"], 1.0, "one node: the same choice every time");
    assert_eq!(listing["policies"][0]["active"]["sha256"], sha);
    assert_eq!(admin(&a, "DELETE", &format!("{put}/shadow"), token, b"").await.0, 200);
    eventually("no shadow", || async { p.shadow(Role::NodeSelection).is_none() }).await;

    let (status, body) = admin(&b, "POST", &format!("{put}/rollback"), token, b"").await;
    assert_eq!((status, body["active"].as_str()), (200, Some("embedded")), "{body}");
    for gw in [&a, &b] {
        let p = gw.state.policies.clone();
        eventually("the rollback on every gateway", || async {
            p.active(Role::NodeSelection).source == "embedded"
        })
        .await;
    }
    assert_eq!(admin(&a, "POST", &format!("{put}/rollback"), token, b"").await.0, 409);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn admin_api_is_read_only_without_a_token() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    let (status, body) = admin(&gw, "GET", "/admin/policies", None, b"").await;
    assert_eq!(status, 200);
    assert_eq!(body["policies"][0]["active"]["source"], "embedded");
    assert_eq!(body["policies"][1]["role"], "room-routing");
    let (status, _) =
        admin(&gw, "PUT", "/admin/policies/node-selection", None, &component("least-loaded")).await;
    assert_eq!(status, 403);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_policies_under_load_loses_nothing() {
    let redis = redis();
    // 300 utterances at once queue for 24 slots; a slow CI machine must not turn the queue into
    // NO_AVAILABLE_NODE.
    let gw = TestGateway::start(&redis, |c| c.scheduler.dispatch_wait_ms = 120_000).await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let mut node = gw.node().await;
        node.register(&["zh"], &["en"], 8).await;
        nodes.push(auto_answer(node, name));
    }
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    let policies = gw.state.policies.clone();
    let swapper = tokio::task::spawn_blocking(move || {
        let versions =
            [component("weighted-random"), component("least-loaded"), component("region-affinity")];
        for i in 0..100 {
            policies.load(Role::NodeSelection, &versions[i % 3], "swap").unwrap();
        }
    });
    let total = 300;
    for i in 0..total {
        client.utter(&session, i).await;
    }
    let mut results = 0;
    while results < total {
        let m = client.recv().await;
        match m["type"].as_str().unwrap() {
            "translation_result" => results += 1,
            "ui_event" => {}
            other => panic!("unexpected {other}: {m}"),
        }
    }
    swapper.await.unwrap();
    assert_eq!(gw.metric("tasks_failed"), 0);
    assert_eq!(gw.metric("tasks_completed"), total);
    gw.stop().await;
}
