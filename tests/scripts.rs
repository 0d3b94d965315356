//! Each scheduling script's transitions, called directly against a real redis-server.

mod common;

use std::time::Duration;

use common::direct::*;
use common::*;
use switchboard::protocol::ErrorCode;
use switchboard::store::*;

fn config() -> SchedulerConfig {
    SchedulerConfig { heartbeat_interval_ms: 200, job_timeout_ms: 10_000, ..fast_scheduler() }
}

#[tokio::test]
async fn register_indexes_the_node_under_each_pair() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("n1", &["zh>en", "zh>ja"], 2)).await;
    for pool in ["zh>en", "zh>ja"] {
        let c = s.candidates(s.cell(0), pool, &[], None).await.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].id, "n1");
        assert_eq!((c[0].running, c[0].capacity), (0, 2));
        assert_eq!(c[0].ready, ["asr", "nmt", "tts"]);
        assert_eq!(c[0].labels["region"], "eu");
        assert!(!c[0].affinity);
    }
    assert!(s.candidates(s.cell(0), "en>zh", &[], None).await.unwrap().is_empty());
}

#[tokio::test]
async fn register_of_a_live_id_needs_its_secret() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    let n = node("n1", &["zh>en"], 1);
    register(&s, &n).await;
    let mut other = node("n1", &["zh>en"], 1);
    other.conn = "conn-2".into();
    assert!(matches!(s.register_node(s.cell(0), &other).await.unwrap(), RegisterReply::NodeIdConflict));
    other.presented_secret = Some(n.secret.clone());
    other.secret = "secret-2".into();
    register(&s, &other).await;
    // The first connection is fenced off.
    let usage = Usage::default();
    let none = CapabilityUpdate::default();
    assert!(matches!(
        s.heartbeat(s.cell(0), "n1", "conn-n1", &usage, &none).await.unwrap(),
        NodeReply::NotRegistered
    ));
    assert!(matches!(s.heartbeat(s.cell(0), "n1", "conn-2", &usage, &none).await.unwrap(), NodeReply::Ok));
    assert!(matches!(s.node_offline(s.cell(0), "n1", "conn-n1").await.unwrap(), OfflineReply::Stale));
    // Once the node is offline, its id is free again without the secret.
    assert!(matches!(s.node_offline(s.cell(0), "n1", "conn-2").await.unwrap(), OfflineReply::Offline { .. }));
    let mut third = node("n1", &["zh>en"], 1);
    third.conn = "conn-3".into();
    register(&s, &third).await;
}

#[tokio::test]
async fn dispatch_takes_a_slot_and_complete_frees_it() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("n1", &["zh>en"], 1)).await;
    let spec = spec("s-1", 0);
    let reply = create(&s, &spec, Some("n1")).await;
    let job = job_id(&reply);
    assert!(matches!(reply, DispatchReply::Assigned { attempt: 1, .. }));
    // Full: no candidate, and dispatch_task refuses the node.
    assert!(s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap().is_empty());
    let other = spec_with_index(&spec, 1);
    assert_eq!(create(&s, &other, Some("n1")).await, DispatchReply::Refused { reason: "full".into() });

    match s.complete_task(&job, "n1", Some(1), Outcome::Completed).await.unwrap() {
        CompleteReply::Completed(ended) => {
            assert_eq!(ended.task_id, spec.task_id());
            assert_eq!(ended.attempt, 1);
            assert_eq!(ended.spec, Some(spec.clone()));
            // The refused task is waiting, at the head of the pool's fair queue: the freed slot
            // goes to it in the same call (the handoff), and the caller sends its job.
            let handoff = ended.handoff.expect("a handoff");
            assert_eq!(
                (handoff.task_id.as_str(), handoff.node_id.as_str()),
                (other.task_id().as_str(), "n1")
            );
            assert_eq!(ended.wake, "", "nothing to wake: the slot is taken");
            assert_eq!(node_jobs(&s, "n1").await, [handoff.job_id]);
        }
        other => panic!("{other:?}"),
    }
    assert!(s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap().is_empty(), "n1 is full again");
    // The audit's view (a speaker's gap timer asks it): the completed task ended, the waiting one
    // did not, an unknown one counts as ended.
    let refs: Vec<TaskRef> = [spec.task_id(), other.task_id(), "s-none:0:en".into()]
        .into_iter()
        .map(|id| TaskRef { cell: s.cell(0).tag().to_owned(), id })
        .collect();
    assert_eq!(s.tasks_ended(&refs).await.unwrap(), [true, false, true]);
    assert_eq!(task_field(&s, s.cell(0), &spec.task_id(), "state").await.as_deref(), Some("completed"));
}

fn spec_with_index(spec: &TaskSpec, index: u64) -> TaskSpec {
    TaskSpec { utterance_index: index, ..spec.clone() }
}

#[tokio::test]
async fn complete_is_fenced_by_node_attempt_and_once() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("n1", &["zh>en"], 2)).await;
    register(&s, &node("n2", &["zh>en"], 2)).await;
    let spec = spec("s-1", 0);
    let job = job_id(&create(&s, &spec, Some("n1")).await);
    let stale = |r: CompleteReply| matches!(r, CompleteReply::Stale { .. });
    assert!(stale(s.complete_task(&job, "n2", Some(1), Outcome::Completed).await.unwrap()));
    assert!(stale(s.complete_task(&job, "n1", Some(2), Outcome::Completed).await.unwrap()));
    assert!(matches!(
        s.complete_task("job-nope", "n1", None, Outcome::Completed).await.unwrap(),
        CompleteReply::Unknown
    ));
    assert!(matches!(
        s.complete_task(&job, "n1", None, Outcome::Completed).await.unwrap(),
        CompleteReply::Completed(_)
    ));
    assert!(stale(s.complete_task(&job, "n1", Some(1), Outcome::Completed).await.unwrap()));
    assert!(stale(s.complete_task(&job, "n1", Some(1), Outcome::Failed).await.unwrap()));
}

#[tokio::test]
async fn duplicate_task_and_stale_attempts() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("n1", &["zh>en"], 4)).await;
    let spec = spec("s-1", 0);
    job_id(&create(&s, &spec, Some("n1")).await);
    let duplicate = DispatchReply::Duplicate { state: "assigned".into() };
    assert_eq!(create(&s, &spec, Some("n1")).await, duplicate);
    assert_eq!(create(&s, &spec, None).await, duplicate);
    // An assigned task cannot be dispatched again at the old attempt number.
    assert_eq!(retry(&s, &spec, 0, Some("n1")).await, DispatchReply::Stale);
    assert_eq!(retry(&s, &spec, 1, Some("n1")).await, DispatchReply::Stale);
}

#[tokio::test]
async fn dispatch_refuses_dead_draining_wrong_pair_and_tried_nodes() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("zh-ja", &["zh>ja"], 4)).await;
    assert_eq!(
        create(&s, &spec("s-1", 0), Some("zh-ja")).await,
        DispatchReply::Refused { reason: "wrong_pair".into() }
    );
    assert_eq!(
        retry(&s, &spec("s-1", 0), 0, Some("ghost")).await,
        DispatchReply::Refused { reason: "offline".into() }
    );
    register(&s, &node("d", &["zh>en"], 4)).await;
    assert!(matches!(s.drain_node(s.cell(0), "d", "conn-d").await.unwrap(), NodeReply::Draining));
    assert_eq!(
        retry(&s, &spec("s-1", 0), 0, Some("d")).await,
        DispatchReply::Refused { reason: "draining".into() }
    );
    register(&s, &node("x", &["zh>en"], 4)).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // 3 × 200 ms heartbeat interval
    assert_eq!(
        retry(&s, &spec("s-1", 0), 0, Some("x")).await,
        DispatchReply::Refused { reason: "expired".into() }
    );
    assert!(
        s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap().is_empty(),
        "expired nodes are no candidates"
    );

    // A node this task already tried is refused for its next attempt.
    let usage = Usage::default();
    let none = CapabilityUpdate::default();
    s.heartbeat(s.cell(0), "x", "conn-x", &usage, &none).await.unwrap();
    let job = job_id(&retry(&s, &spec("s-1", 0), 0, Some("x")).await);
    match s.node_offline(s.cell(0), "x", "conn-x").await.unwrap() {
        OfflineReply::Offline { released } => assert_eq!(released.requeued, [spec("s-1", 0).task_id()]),
        other => panic!("{other:?}"),
    }
    let mut back = node("x", &["zh>en"], 4);
    back.conn = "conn-x2".into();
    register(&s, &back).await;
    assert_eq!(
        retry(&s, &spec("s-1", 0), 1, Some("x")).await,
        DispatchReply::Refused { reason: "already_tried".into() }
    );
    assert_eq!(s.candidates(s.cell(0), "zh>en", &["x".into()], None).await.unwrap(), []);
    let _ = job;
}

#[tokio::test]
async fn candidates_are_least_loaded_first_with_affinity() {
    let redis = redis();
    let s = scheduler(&redis, SchedulerConfig { candidates: 2, ..config() }).await;
    for (id, cap) in [("a", 4), ("b", 2), ("c", 1)] {
        register(&s, &node(id, &["zh>en"], cap)).await;
    }
    job_id(&create(&s, &spec("s", 0), Some("b")).await); // b: 1/2
    job_id(&create(&s, &spec("s", 1), Some("a")).await); // a: 1/4
    let c = s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap();
    let ids: Vec<&str> = c.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c", "a"], "K = 2, least loaded first");
    let c = s.candidates(s.cell(0), "zh>en", &[], Some("b")).await.unwrap();
    assert_eq!(c[0].id, "b");
    assert!(c[0].affinity);
    assert_eq!(c.len(), 3, "the affinity node comes on top of K");
    job_id(&create(&s, &spec("s", 2), Some("c")).await); // c: full
    let c = s.candidates(s.cell(0), "zh>en", &[], Some("c")).await.unwrap();
    assert!(c.iter().all(|c| c.id != "c"), "a full affinity node is no candidate");
}

#[tokio::test]
async fn heartbeat_refreshes_liveness_and_replaces_pairs() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("n1", &["zh>en"], 2)).await;
    let usage = Usage { cpu: 55.5, gpu: 10.0, gpu_mem: 20.0, mem: 30.0, gpu_queue: 3 };
    let update = CapabilityUpdate { pairs: Some(vec!["ja>en".into()]), ready: Some(vec!["asr".into()]) };
    assert!(matches!(s.heartbeat(s.cell(0), "n1", "conn-n1", &usage, &update).await.unwrap(), NodeReply::Ok));
    assert!(s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap().is_empty());
    let c = s.candidates(s.cell(0), "ja>en", &[], None).await.unwrap();
    assert_eq!(c[0].cpu, 55.5);
    assert_eq!(c[0].gpu_queue, 3);
    assert_eq!(c[0].ready, ["asr"]);
    // Heartbeats keep it alive past 3 intervals.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.heartbeat(s.cell(0), "n1", "conn-n1", &Usage::default(), &CapabilityUpdate::default())
            .await
            .unwrap();
    }
    assert_eq!(s.candidates(s.cell(0), "ja>en", &[], None).await.unwrap().len(), 1);
    assert!(matches!(
        s.heartbeat(s.cell(0), "nobody", "c", &Usage::default(), &CapabilityUpdate::default()).await.unwrap(),
        NodeReply::NotRegistered
    ));
}

#[tokio::test]
async fn node_offline_releases_jobs_and_fails_tasks_out_of_attempts() {
    let redis = redis();
    let s = scheduler(&redis, SchedulerConfig { max_attempts: 2, ..config() }).await;
    register(&s, &node("n1", &["zh>en"], 4)).await;
    register(&s, &node("n2", &["zh>en"], 4)).await;
    let a = spec("s", 0);
    job_id(&create(&s, &a, Some("n1")).await);
    let b = spec("s", 1);
    job_id(&create(&s, &b, Some("n2")).await);
    job_id(&{
        let _ = s.node_offline(s.cell(0), "n2", "conn-n2").await.unwrap();
        retry(&s, &b, 1, Some("n1")).await
    });
    // n1 holds a (attempt 1) and b (attempt 2 of 2).
    let OfflineReply::Offline { released } = s.node_offline(s.cell(0), "n1", "conn-n1").await.unwrap() else {
        panic!("n1 was online");
    };
    assert_eq!(released.requeued, [a.task_id()]);
    assert_eq!(released.failed.len(), 1);
    assert_eq!(released.failed[0].task_id, b.task_id());
    assert_eq!(released.failed[0].code, ErrorCode::NodeUnavailable);
    assert_eq!(released.failed[0].spec, b);
    assert!(released.cancel.is_empty());
    match s.load_task(s.cell(0), &a.task_id()).await.unwrap() {
        LoadTaskReply::Waiting { attempt, tried, spec, payload } => {
            assert_eq!((attempt, tried), (1, vec!["n1".to_string()]));
            assert_eq!(spec, a);
            assert_eq!(payload, common::direct::payload());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.load_task(s.cell(0), &b.task_id()).await.unwrap(), LoadTaskReply::Failed));
    assert!(matches!(s.load_task(s.cell(0), "s:9:en").await.unwrap(), LoadTaskReply::Missing));
}

#[tokio::test]
async fn waiting_task_fails_after_the_dispatch_wait() {
    let redis = redis();
    let s = scheduler(&redis, SchedulerConfig { dispatch_wait_ms: 200, ..config() }).await;
    let a = spec("s", 0);
    assert_eq!(create(&s, &a, None).await, DispatchReply::Waiting);
    assert_eq!(retry(&s, &a, 0, None).await, DispatchReply::Waiting);
    tokio::time::sleep(Duration::from_millis(250)).await;
    match retry(&s, &a, 0, None).await {
        DispatchReply::Failed { code, spec, .. } => {
            assert_eq!(code, ErrorCode::NoAvailableNode);
            assert_eq!(spec, a);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(retry(&s, &a, 0, None).await, DispatchReply::Stale);
}

#[tokio::test]
async fn sweep_expires_nodes_and_jobs_under_a_lock() {
    let redis = redis();
    let s =
        scheduler(&redis, SchedulerConfig { job_timeout_ms: 100, sweep_interval_ms: 300, ..config() }).await;
    register(&s, &node("n1", &["zh>en"], 4)).await;
    register(&s, &node("n2", &["zh>en"], 4)).await;
    let a = spec("s", 0);
    let job = job_id(&create(&s, &a, Some("n1")).await);
    let waiting = spec("s", 1);
    create(&s, &waiting, None).await;
    // Keep n1 alive, let n2 expire, let the job pass its deadline.
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.heartbeat(s.cell(0), "n1", "conn-n1", &Usage::default(), &CapabilityUpdate::default())
            .await
            .unwrap();
    }
    match s.sweep(s.cell(0), "gw-a").await.unwrap() {
        SweepReply::Swept { offline, released, due } => {
            assert_eq!(offline, ["n2"]);
            assert_eq!(released.requeued, [a.task_id()]);
            assert_eq!(released.cancel.len(), 1);
            assert_eq!(released.cancel[0].job_id, job);
            assert_eq!(released.cancel[0].node_id, "n1");
            assert_eq!(due, [waiting.task_id()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.sweep(s.cell(0), "gw-b").await.unwrap(), SweepReply::Busy), "one sweep per interval");
    assert!(matches!(
        s.complete_task(&job, "n1", Some(1), Outcome::Completed).await.unwrap(),
        CompleteReply::Stale { .. }
    ));
    let c = s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap();
    assert_eq!((c.len(), c[0].running), (1, 0), "n1 got its slot back, n2 is gone");
}

#[tokio::test]
async fn scripts_reload_after_a_script_flush() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    assert!(s.ready().await.unwrap());
    let mut conn = s.connection();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    assert!(!s.ready().await.unwrap());
    register(&s, &node("n1", &["zh>en"], 1)).await;
    s.load_scripts().await.unwrap();
    assert!(s.ready().await.unwrap());
}

#[tokio::test]
async fn keys_share_the_cell_tag_and_expire() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("n1", &["zh>en"], 1)).await;
    let a = spec("s", 0);
    let job = job_id(&create(&s, &a, Some("n1")).await);
    s.complete_task(&job, "n1", None, Outcome::Completed).await.unwrap();
    let mut conn = s.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    let tag = format!("{{{}}}", cell_tag(0));
    for key in &keys {
        assert!(key.starts_with(&format!("sb:{tag}:")), "{key}");
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap();
        let lives_forever = key.ends_with(":alive")
            || key.ends_with(":nodes")
            || key.contains(":pool:")
            || key.contains(":class:")
            || key.ends_with(":node:n1");
        assert!(lives_forever || ttl > 0, "{key} has no TTL");
    }
    assert!(!keys.iter().any(|k| k.contains(":payload:")), "the payload is deleted on completion");
}

#[tokio::test]
async fn availability_counts_live_nodes_with_a_free_slot_per_pool() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("a", &["en>zh", "en>ja"], 1)).await;
    register(&s, &node("b", &["en>zh"], 2)).await;
    let pools = ["en>zh".to_string(), "en>ja".to_string(), "en>fr".to_string()];
    assert_eq!(s.availability(s.cell(0), &pools).await.unwrap(), [2, 1, 0]);
    let mut spec = spec("s", 0);
    spec.src_lang = "en".into();
    spec.tgt_lang = "ja".into();
    job_id(&create(&s, &spec, Some("a")).await); // a is full now
    assert_eq!(s.availability(s.cell(0), &pools).await.unwrap(), [1, 0, 0]);
    assert!(s.availability(s.cell(0), &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_session_resumes_with_its_token_and_gets_what_was_kept() {
    use switchboard::store::SessionRoute::{Gone, Kept};
    let at = |gateway: &str| switchboard::store::SessionRoute::Attached { gateway: gateway.into() };
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    let attached =
        s.session_open("s-1", "gw-a", "gw-a/c1", "sha-token", "{\"mode\":\"one_way\"}").await.unwrap();
    assert!(matches!(attached, AttachReply::Attached { .. }));
    assert!(matches!(
        s.session_open("s-1", "gw-b", "gw-b/c9", "x", "{}").await.unwrap(),
        AttachReply::Exists
    ));
    // Attached: frames are routed to its gateway; hints too.
    let routes = s.route_sessions(&[("s-1", "f0", Some(false)), ("s-1", "", None)], 3, 60_000).await.unwrap();
    assert_eq!(routes, [at("gw-a"), at("gw-a")]);
    // Only the socket that attached it detaches it.
    assert_eq!(s.session_detach("s-1", Fence::Conn("gw-a/other"), 60_000).await.unwrap(), None);
    assert_eq!(
        s.session_detach("s-1", Fence::Conn("gw-a/c1"), 60_000).await.unwrap().as_deref(),
        Some("gw-a/c1")
    );
    // Detached: frames are kept (the last 3), hints dropped; unknown sessions are gone.
    let frames = [("s-1", "f1", Some(false)), ("s-1", "f2", Some(false)), ("s-1", "h", None)];
    assert_eq!(s.route_sessions(&frames, 3, 60_000).await.unwrap(), [Kept, Kept, Gone]);
    let more = [("s-1", "f3", Some(false)), ("s-1", "f4", Some(true)), ("s-9", "f", Some(false))];
    assert_eq!(s.route_sessions(&more, 3, 60_000).await.unwrap(), [Kept, Kept, Gone]);
    // A wrong token resumes nothing; the right one gets the kept frames, once.
    assert!(matches!(
        s.session_resume("s-1", "gw-b", "gw-b/c2", "wrong").await.unwrap(),
        AttachReply::Invalid
    ));
    match s.session_resume("s-1", "gw-b", "gw-b/c2", "sha-token").await.unwrap() {
        AttachReply::Attached { backlog, settings, previous_gateway, .. } => {
            assert_eq!(backlog, ["f2", "f3", "f4"]);
            assert_eq!(settings, "{\"mode\":\"one_way\"}");
            assert_eq!(previous_gateway.as_deref(), Some("gw-a"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.route_sessions(&[("s-1", "f5", Some(false))], 3, 60_000).await.unwrap(), [at("gw-b")]);
    // The old socket's late end is fenced off; the new one's is not.
    assert!(matches!(s.session_end("s-1", "gw-a/c1", false).await.unwrap(), SessionEnd::Stale));
    s.session_room("s-1", Some("123456")).await.unwrap();
    // The grace timer ends only a detached session.
    assert!(matches!(s.session_end("s-1", "gw-b/c2", true).await.unwrap(), SessionEnd::Stale));
    match s.session_end("s-1", "gw-b/c2", false).await.unwrap() {
        SessionEnd::Ended { room } => assert_eq!(room, "123456"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.route_sessions(&[("s-1", "f6", Some(false))], 3, 60_000).await.unwrap(), [Gone]);
}

#[tokio::test]
async fn a_dead_gateway_is_reaped_by_exactly_one_gateway() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    assert!(s.gateway_presence("gw-a", 100).await.unwrap(), "first presence");
    assert!(!s.gateway_presence("gw-a", 100).await.unwrap());
    assert!(s.gateway_presence("gw-b", 60_000).await.unwrap());
    s.session_open("s-1", "gw-a", "gw-a/c1", "t", "{}").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (first, second) = tokio::join!(s.gateway_reap(10, 60_000), s.gateway_reap(10, 60_000));
    let (first, second) = (first.unwrap(), second.unwrap());
    let mut reaped = [first.reaped.clone(), second.reaped.clone()].concat();
    reaped.sort();
    assert_eq!(reaped, ["gw-a"], "one reaper");
    assert_eq!(second.dead, ["gw-a"], "both claim the inbox");
    // The reaper finds the dead gateway's sessions and detaches them under the gateway fence.
    assert_eq!(s.pop_sessions("gw-a", 10).await.unwrap(), ["s-1"]);
    let at = second.at.max(first.at);
    let conn = s.session_detach("s-1", Fence::Gateway("gw-a", at), 60_000).await.unwrap();
    assert_eq!(conn.as_deref(), Some("gw-a/c1"));
    // A session the dead gateway attached again after it was found dead is left alone.
    s.session_open("s-2", "gw-a", "gw-a/c2", "t", "{}").await.unwrap();
    assert_eq!(s.session_detach("s-2", Fence::Gateway("gw-a", at), 60_000).await.unwrap(), None);
    // Coming back removes it from the dead and says so.
    assert!(s.gateway_presence("gw-a", 60_000).await.unwrap());
    assert!(s.gateway_reap(10, 60_000).await.unwrap().dead.is_empty());
    let mut live: Vec<String> = s.gateways().await.unwrap().into_iter().map(|(g, _)| g).collect();
    live.sort();
    assert_eq!(live, ["gw-a", "gw-b"]);
}

#[tokio::test]
async fn inbox_entries_go_to_one_claimer_after_the_owner_dies() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    let mut inbox = s.open_inbox("gw-a", std::time::Duration::from_secs(1)).await.unwrap();
    s.append_to_inboxes(&[("gw-a", "one"), ("gw-a", "two"), ("gw-a", "three")], 100).await.unwrap();
    // The owner reads one batch and dies before acknowledging it.
    let read = inbox.read(Duration::from_millis(100)).await.unwrap();
    assert_eq!(read.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), ["one", "two", "three"]);
    s.append_to_inboxes(&[("gw-a", "four")], 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (b, c) = tokio::join!(s.claim_inbox("gw-a", "gw-b", 100), s.claim_inbox("gw-a", "gw-c", 100));
    let mut claimed: Vec<String> = [b.unwrap(), c.unwrap()].concat().into_iter().map(|e| e.payload).collect();
    claimed.sort();
    assert_eq!(claimed, ["four", "one", "three", "two"], "read-but-unacked and never-read, once each");
}

#[tokio::test]
async fn a_registration_sent_again_after_a_lost_reply_is_done_once() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    let n = node("n1", &["zh>en"], 2);
    register(&s, &n).await;
    let job = job_id(&create(&s, &spec("s-1", 0), Some("n1")).await);
    // The same call again (same connection id): no conflict, and the node keeps its job.
    register(&s, &n).await;
    assert_eq!(hget(&s, &s.cell(0).node("n1"), "running").await.as_deref(), Some("1"));
    assert!(matches!(
        s.complete_task(&job, "n1", Some(1), Outcome::Completed).await.unwrap(),
        CompleteReply::Completed(_)
    ));
}

/// Creates `spec` in `cell` without a node: it waits there.
async fn waiting_in(s: &Store, cell: &CellKeys, spec: &TaskSpec) {
    let (task, pool, payload) = (spec.task_id(), spec.pool(), payload());
    let request = DispatchRequest {
        cell,
        task_id: &task,
        pool: &pool,
        attempt: 0,
        node_id: None,
        class: None,
        create: Some((spec, &payload)),
        moved_in: None,
        admission: None,
    };
    assert_eq!(s.dispatch_task(&request).await.unwrap(), DispatchReply::Waiting);
}

#[tokio::test]
async fn a_task_moves_to_another_cell_once_and_keeps_its_attempts_and_wait() {
    let redis = redis();
    let s = scheduler(&redis, SchedulerConfig { cells: 2, ..config() }).await;
    let (a, b) = (s.cell(0).clone(), s.cell(1).clone());
    let spec = spec("s-1", 0);
    let task = spec.task_id();
    waiting_in(&s, &a, &spec).await;
    let wait_until: u64 = task_field(&s, &a, &task, "wait_until").await.unwrap().parse().unwrap();

    let moved = s.task_move(&a, &task, 0, &b).await.unwrap();
    assert_eq!(moved, MoveReply::Moved { wait_until });
    // Sent again (a lost reply): the same answer; to another cell or at another attempt: stale.
    assert_eq!(s.task_move(&a, &task, 0, &b).await.unwrap(), moved);
    assert_eq!(s.task_move(&a, &task, 1, &b).await.unwrap(), MoveReply::Stale);
    assert_eq!(s.task_move(&a, &task, 0, &CellKeys::new("sb", 2)).await.unwrap(), MoveReply::Stale);
    // The old cell no longer dispatches it, its sweep no longer finds it, its payload is gone.
    assert!(matches!(s.load_task(&a, &task).await.unwrap(), LoadTaskReply::Moved));
    assert_eq!(retry(&s, &spec, 0, None).await, DispatchReply::Stale);
    let mut conn = s.connection();
    let waiting: Vec<String> =
        redis::cmd("ZRANGE").arg(a.waiting()).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert!(waiting.is_empty());
    let stored: String = redis::cmd("GET").arg(a.task(&task)).query_async(&mut conn).await.unwrap();
    assert!(stored.ends_with("\n\n"), "the moved record keeps no spec nor payload: {stored}");

    // Created in the new cell with the attempts made so far and the same dispatch wait.
    let mut n = node("n1", &["zh>en"], 1);
    n.conn = "conn-b".into();
    assert!(matches!(s.register_node(&b, &n).await.unwrap(), RegisterReply::Registered { .. }));
    let p = payload();
    let (pool, attempts_so_far) = (spec.pool(), 2);
    let request = DispatchRequest {
        cell: &b,
        task_id: &task,
        pool: &pool,
        attempt: attempts_so_far,
        node_id: Some("n1"),
        class: None,
        create: Some((&spec, &p)),
        moved_in: Some(wait_until),
        admission: None,
    };
    match s.dispatch_task(&request).await.unwrap() {
        DispatchReply::Assigned { attempt, job_id } => {
            assert_eq!(attempt, 3);
            assert_eq!(s.job_task(&job_id).unwrap().0.tag(), b.tag());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(task_field(&s, &b, &task, "wait_until").await, Some(wait_until.to_string()));
    // A new task with this id in the old cell is a duplicate: the moved record holds its place.
    let request = DispatchRequest { cell: &a, moved_in: None, attempt: 0, node_id: None, ..request };
    assert_eq!(s.dispatch_task(&request).await.unwrap(), DispatchReply::Duplicate { state: "moved".into() });
}

/// The cluster client sends a call again when its connection broke before the reply: the script then
/// runs twice. `dispatch_task` and `complete_task` answer the second run as the first.
#[tokio::test]
async fn dispatch_and_complete_sent_again_after_a_lost_reply_answer_the_same() {
    let redis = redis();
    let s = scheduler(&redis, config()).await;
    register(&s, &node("n1", &["zh>en"], 2)).await;
    let spec = spec("s-1", 0);
    let (task, pool, payload) = (spec.task_id(), spec.pool(), payload());
    let first = DispatchRequest {
        cell: s.cell(0),
        task_id: &task,
        pool: &pool,
        attempt: 0,
        node_id: Some("n1"),
        class: None,
        create: Some((&spec, &payload)),
        moved_in: None,
        admission: None,
    };
    let assigned = s.dispatch_task(&first).await.unwrap();
    let job = job_id(&assigned);
    // The same EVALSHA (same keys and arguments, so the same new job id) run a second time.
    let k = s.cell(0);
    let again = |job: &str, attempt: &str| {
        let mut inv = s.scripts().dispatch_task.prepare_invoke();
        inv.key(k.task(&task)).key(k.waiting()).key(k.deadlines()).key(k.node("n1"));
        inv.arg(&task).arg(attempt).arg("n1").arg(job).arg(10_000).arg(serde_json::to_string(&spec).unwrap());
        inv.arg(serde_json::to_string(&payload).unwrap()).arg(600_000).arg(3).arg(2_000).arg(100).arg("");
        inv.arg("").arg(15_000).arg(&pool);
        inv
    };
    let replay: String = again(&job, "0").invoke_async(&mut s.connection()).await.unwrap();
    assert_eq!(serde_json::from_str::<DispatchReply>(&replay).unwrap(), assigned);
    assert_eq!(hget(&s, &k.node("n1"), "running").await.as_deref(), Some("1"), "one slot taken");
    // Another call for the same utterance (a new job id) is a duplicate.
    let other: String =
        again(&format!("job-other:{task}"), "0").invoke_async(&mut s.connection()).await.unwrap();
    assert_eq!(
        serde_json::from_str::<DispatchReply>(&other).unwrap(),
        DispatchReply::Duplicate { state: "assigned".into() }
    );

    // complete_task: the same call id again answers `completed`; a node's second result is stale.
    let complete = |call: &str| {
        let mut inv = s.scripts().complete_task.prepare_invoke();
        inv.key(k.node("n1")).key(k.waiting()).key(k.deadlines());
        inv.arg(&job).arg("n1").arg("1").arg("completed").arg(call);
        inv
    };
    let done: String = complete("call-1").invoke_async(&mut s.connection()).await.unwrap();
    let replay: String = complete("call-1").invoke_async(&mut s.connection()).await.unwrap();
    // The replay says the same, without the spec: the ended task no longer keeps it.
    for (reply, spec_kept) in [(&done, true), (&replay, false)] {
        match serde_json::from_str::<CompleteReply>(reply).unwrap() {
            CompleteReply::Completed(ended) => {
                assert_eq!((ended.task_id.as_str(), ended.spec.is_some()), (task.as_str(), spec_kept))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(hget(&s, &k.node("n1"), "running").await.as_deref(), Some("0"), "the slot freed once");
    assert!(matches!(
        s.complete_task(&job, "n1", Some(1), Outcome::Completed).await.unwrap(),
        CompleteReply::Stale { .. }
    ));
}
