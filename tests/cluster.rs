//! Switchboard on a real local Redis Cluster (3 primaries, `redis-cli --cluster create`): cell tags
//! on distinct primaries, the cluster client (routing by slot, scripts on every primary), sessions
//! and rooms on two gateways over several cells, a node lost mid-job in one cell (the task moves
//! to another cell, once), and a primary restarted during traffic (tasks delayed, none lost or
//! duplicated). Every scenario ends with the invariant checker, which reads every primary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::direct::*;
use common::invariants::{Ledger, redis_problems};
use common::*;
use serde_json::{Value, json};
use switchboard::devredis::RedisCluster;
use switchboard::store::*;

/// One `CLUSTER SLOTS` entry: first slot, last slot, the primary's [ip, port, id, metadata].
type SlotRange = (u16, u16, (String, u16, String, redis::Value));

/// (first slot, last slot, port) of each primary, from `CLUSTER SLOTS`.
async fn slot_owners(url: &str) -> Vec<(u16, u16, u16)> {
    let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let slots: Vec<SlotRange> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.unwrap();
    slots.into_iter().map(|(first, last, (_, port, _, _))| (first, last, port)).collect()
}

fn owner(owners: &[(u16, u16, u16)], slot: u16) -> u16 {
    owners.iter().find(|(first, last, _)| (*first..=*last).contains(&slot)).expect("every slot is served").2
}

fn cluster() -> RedisCluster {
    RedisCluster::start(3).expect("a local 3-primary cluster starts")
}

async fn gateway(
    cluster: &RedisCluster,
    cells: u32,
    tweak: impl FnOnce(&mut switchboard::config::Config),
) -> TestGateway {
    TestGateway::start_at(cluster.url(), |c| {
        c.scheduler.cells = cells;
        tweak(c);
    })
    .await
}

/// The first id `prefix0`, `prefix1`, … whose node lands in `cell` (by id hash).
fn node_id_in(s: &Store, prefix: &str, cell: &CellKeys) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| s.node_cell(id, &BTreeMap::new()).tag() == cell.tag())
        .unwrap()
}

/// A zh/en/ja node named `id` that answers every job with "<id>: <index>" until `stop`, and
/// registers again when told it is unknown.
fn answering_node(url: String, id: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let register = || node_register(Some(&id), &["zh", "en", "ja"], &["zh", "en", "ja"], 8);
        let mut node = Peer::connect(&format!("{url}/ws/node")).await;
        node.send(register()).await;
        while !stop.load(Ordering::Relaxed) {
            match node.try_recv(Duration::from_millis(200)).await {
                Some(m) if m["type"] == "job_assign" => {
                    let text = format!("{id}: {}", m["utterance_index"]);
                    node.answer(&m, &text).await;
                }
                Some(m) if m["type"] == "error" && m["code"] == "NODE_NOT_REGISTERED" => {
                    node.send(register()).await
                }
                Some(_) => {}
                None => node.send(json!({"type":"node_heartbeat","node_id":id,"resource_usage":{}})).await,
            }
        }
        node.close().await;
    })
}

/// Reads `client` until each of `indexes` of `speaker` has an outcome; records all outcomes.
async fn collect(
    client: &mut Peer,
    ledger: &mut Ledger,
    order: &mut Vec<(String, u64)>,
    speaker: &str,
    indexes: &[u64],
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while indexes.iter().any(|i| ledger.outcomes(speaker, *i).is_empty()) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = client.try_recv(left).await else {
            let missing: Vec<_> =
                indexes.iter().filter(|i| ledger.outcomes(speaker, **i).is_empty()).collect();
            panic!("{speaker}: no outcome for {missing:?}");
        };
        if ledger.record(&m) {
            let index = m["utterance_index"].as_u64().or(m["details"]["utterance_index"].as_u64()).unwrap();
            let from = m["session_id"].as_str().or(m["details"]["session_id"].as_str()).unwrap();
            order.push((from.to_owned(), index));
        }
    }
}

/// Which node produced a result ("<node>: <index>").
fn answered_by(result: &Value) -> String {
    result["text_translated"].as_str().unwrap_or_default().split(':').next().unwrap().to_owned()
}

async fn consistent(s: &Store) {
    eventually("Redis to be consistent on every primary", || async { redis_problems(s).await.is_empty() })
        .await;
}

#[tokio::test]
async fn cell_tags_spread_over_a_real_cluster_and_the_client_routes_by_slot() {
    let cluster = cluster();
    let urls = cluster.urls();
    let owners = slot_owners(&urls[0]).await;
    assert_eq!(owners.len(), 3, "{owners:?}");

    // Our CRC16 agrees with the cluster's, and three cells land on three primaries.
    let mut conn =
        redis::Client::open(urls[0].as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let mut primaries = BTreeSet::new();
    for cell in 0..3 {
        let tag = cell_tag(cell);
        let theirs: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{tag}}}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(slot(&tag), theirs, "slot of {tag}");
        primaries.insert(owner(&owners, theirs));
    }
    assert_eq!(primaries.len(), 3, "three cells on three primaries");

    // A plain connection to a primary that does not own cell 0 gets MOVED for its keys ...
    let port = owner(&owners, slot(&cell_tag(0)));
    let elsewhere = owners.iter().map(|o| o.2).find(|p| *p != port).unwrap();
    let mut plain = redis::Client::open(format!("redis://127.0.0.1:{elsewhere}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let err = redis::cmd("HGET")
        .arg(CellKeys::new("sb", 0).node("n1"))
        .arg("state")
        .query_async::<Option<String>>(&mut plain)
        .await
        .unwrap_err();
    assert!(err.to_string().to_ascii_uppercase().contains("MOVED"), "{err}");

    // ... while the scheduler, given that same primary as its only URL, finds out it is a cluster,
    // loads its scripts on every primary and runs each script on the primary of its cell.
    let s = Store::connect(
        &format!("redis://127.0.0.1:{elsewhere}/"),
        SchedulerConfig { heartbeat_interval_ms: 10_000, cells: 3, ..Default::default() },
    )
    .await
    .expect("the scheduler connects through any primary");
    assert!(s.is_cluster());
    assert!(s.ready().await.unwrap(), "every primary holds every script");
    for cell in 0..3 {
        let k = s.cell(cell).clone();
        let id = format!("n{cell}");
        assert!(matches!(
            s.register_node(&k, &node(&id, &["zh>en"], 2)).await.unwrap(),
            RegisterReply::Registered { .. }
        ));
        let spec = spec(&format!("s-{cell}"), 0);
        let (task, pool, payload) = (spec.task_id(), spec.pool(), payload());
        let request = DispatchRequest {
            cell: &k,
            task_id: &task,
            pool: &pool,
            attempt: 0,
            node_id: Some(&id),
            class: None,
            create: Some((&spec, &payload)),
            moved_in: None,
            admission: None,
        };
        let job = job_id(&s.dispatch_task(&request).await.unwrap());
        assert_eq!(s.job_task(&job).unwrap().0.tag(), k.tag(), "{job} names its cell");
        match s.complete_task(&job, &id, Some(1), Outcome::Completed).await.unwrap() {
            CompleteReply::Completed(ended) => assert_eq!(ended.task_id, task),
            other => panic!("{other:?}"),
        }
    }
    let (nodes, online) = s.list_nodes(10).await.unwrap();
    assert_eq!(online, 3);
    let cells: BTreeSet<_> = nodes.iter().map(|n| n["cell"].clone()).collect();
    assert_eq!(cells.len(), 3, "{nodes:?}");
    consistent(&s).await;
}

#[tokio::test]
async fn sessions_and_a_room_on_two_gateways_are_served_across_three_cells() {
    let cluster = cluster();
    let g1 = gateway(&cluster, 3, |_| {}).await;
    let g2 = gateway(&cluster, 3, |_| {}).await;
    let s = g1.state.store.clone();
    // Two nodes per cell, on alternate gateways.
    let stop = Arc::new(AtomicBool::new(false));
    let mut nodes = Vec::new();
    let mut cell_of = BTreeMap::new();
    for cell in 0..3 {
        for k in 0..2 {
            let id = node_id_in(&s, &format!("n{cell}{k}-"), s.cell(cell));
            cell_of.insert(id.clone(), s.cell(cell).tag().to_owned());
            let url = if k == 0 { g1.url.clone() } else { g2.url.clone() };
            nodes.push(answering_node(url, id, stop.clone()));
        }
    }
    eventually("six nodes online", || async { s.list_nodes(10).await.is_ok_and(|(_, n)| n == 6) }).await;

    // Eight one-way sessions, half on each gateway, five utterances each, all sent at once.
    let mut ledger = Ledger::default();
    let mut order = Vec::new();
    let mut expected = Vec::new();
    let mut clients = Vec::new();
    for i in 0..8 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        let mut client = gw.client().await;
        let session = client.init_one_way("zh", "en").await;
        for index in 0..5 {
            client.utter(&session, index).await;
            expected.push((session.clone(), index));
        }
        clients.push((client, session));
    }
    let mut served_by = BTreeSet::new();
    for (client, session) in &mut clients {
        collect(client, &mut ledger, &mut order, session, &[0, 1, 2, 3, 4]).await;
        for index in 0..5 {
            let outcome = &ledger.outcomes(session, index)[0];
            assert_eq!(outcome["type"], "translation_result", "{outcome}");
            served_by.insert(cell_of[&answered_by(outcome)].clone());
        }
    }
    let problems = ledger.check(&expected, &order);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(served_by.len() >= 2, "tasks of eight sessions ran in one cell only: {served_by:?}");

    // A room of en/zh/ja with members on both gateways: each listener hears the speaker's three
    // utterances in its language, once, in order.
    let mut a = g1.client().await;
    let a_id = a.init_one_way("en", "zh").await;
    a.send(json!({"type":"room_create","client_ts":1,"preferred_lang":"en"})).await;
    let code = a.expect("room_create_ack").await["room_code"].as_str().unwrap().to_owned();
    let mut listeners = Vec::new();
    for (lang, gw) in [("zh", &g2), ("ja", &g1)] {
        let mut m = gw.client().await;
        let id = m.init_one_way("en", lang).await;
        m.send(json!({"type":"room_join","room_code":code,"preferred_lang":lang})).await;
        m.expect("room_create_ack").await;
        m.expect("room_members").await;
        listeners.push((m, id, lang));
    }
    eventually("three members", || async {
        s.room_record(&code).await.unwrap().is_some_and(|(_, members)| members.len() == 3)
    })
    .await;
    for index in 0..3 {
        a.utter(&a_id, index).await;
    }
    for (m, _, lang) in &mut listeners {
        let mut got = Vec::new();
        while got.len() < 3 {
            let r = m.recv().await;
            if r["type"] != "translation_result" {
                assert!(
                    matches!(r["type"].as_str(), Some("room_members" | "ui_event" | "server_heartbeat")),
                    "{r}"
                );
                continue;
            }
            assert_eq!(r["tgt_lang"], *lang, "{r}");
            got.push(r["utterance_index"].as_u64().unwrap());
        }
        assert_eq!(got, [0, 1, 2], "{lang}");
    }
    // The admin API lists the rooms of every primary and the nodes of every cell.
    let (status, rooms) = admin(&g2, "GET", "/admin/rooms", None, b"").await;
    assert_eq!(status, 200);
    assert!(rooms["rooms"].as_array().unwrap().iter().any(|r| r == code.as_str()), "{rooms}");
    let metrics = switchboard::admin_client::request("GET", &format!("{}/metrics", g1.admin_url), None, b"")
        .await
        .unwrap()
        .1;
    for cell in s.cells() {
        assert!(
            metrics.contains(&format!("switchboard_nodes{{cell=\"{}\",state=\"online\"}} 2", cell.tag())),
            "{metrics}"
        );
    }

    stop.store(true, Ordering::Relaxed);
    for n in nodes {
        n.await.unwrap();
    }
    consistent(&s).await;
    g1.stop().await;
    g2.stop().await;
}

/// A session whose home cell holds node `x` only; node `y` sits in another cell.
async fn session_with_nodes_in_two_cells(
    g1: &TestGateway,
    g2: &TestGateway,
) -> (Peer, String, Peer, String, Peer, String) {
    let s = &g1.state.store;
    let mut client = g2.client().await;
    let session = client.init_one_way("zh", "en").await;
    let home = s.home_cell(&session).clone();
    let other = s.cells().iter().find(|c| c.tag() != home.tag()).unwrap().clone();
    let x_id = node_id_in(s, "x", &home);
    let y_id = node_id_in(s, "y", &other);
    let mut x = g1.node().await;
    x.send(node_register(Some(&x_id), &["zh"], &["en"], 4)).await;
    x.expect("node_register_ack").await;
    let mut y = g2.node().await;
    y.send(node_register(Some(&y_id), &["zh"], &["en"], 4)).await;
    y.expect("node_register_ack").await;
    (client, session, x, x_id, y, y_id)
}

#[tokio::test]
async fn a_node_lost_mid_job_moves_its_task_to_another_cell_once() {
    let cluster = cluster();
    let g1 = gateway(&cluster, 2, |_| {}).await;
    let g2 = gateway(&cluster, 2, |_| {}).await;
    let s = g1.state.store.clone();
    let (mut client, session, mut x, _x_id, mut y, y_id) = session_with_nodes_in_two_cells(&g1, &g2).await;

    client.utter(&session, 0).await;
    let job = x.expect("job_assign").await;
    let first_job = job["job_id"].as_str().unwrap().to_owned();
    // The node dies holding the job: the task leaves its home cell for y's.
    drop(x);
    let moved = y.expect("job_assign").await;
    assert_eq!(moved["utterance_index"], 0);
    assert_eq!(moved["attempt_id"], 2, "the move keeps the attempt count");
    let moved_job = moved["job_id"].as_str().unwrap();
    assert_ne!(s.job_task(moved_job).unwrap().0.tag(), s.job_task(&first_job).unwrap().0.tag());
    y.answer(&moved, &format!("{y_id}: 0")).await;
    let result = client.expect("translation_result").await;
    assert_eq!(answered_by(&result), y_id);
    client.expect_silence(Duration::from_millis(500)).await;

    // The home cell keeps a `moved` record naming y's cell; the task ended there.
    let task_id = format!("{session}:0:en");
    let home = s.home_cell(&session).clone();
    let state = direct::task_field(&s, &home, &task_id, "state").await;
    let moved_to = direct::task_field(&s, &home, &task_id, "moved_to").await;
    assert_eq!(state.as_deref(), Some("moved"));
    assert_eq!(moved_to.as_deref(), s.job_task(moved_job).map(|(c, _)| c.tag().to_owned()).as_deref());
    let record = s.task_record(&task_id).await.unwrap().unwrap();
    assert_eq!(record["state"], "completed", "{record:?}");
    consistent(&s).await;
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn a_late_result_from_the_old_cell_is_dropped_after_the_task_moved() {
    let cluster = cluster();
    let short = |c: &mut switchboard::config::Config| c.scheduler.job_timeout_ms = 800;
    let g1 = gateway(&cluster, 2, short).await;
    let g2 = gateway(&cluster, 2, short).await;
    let s = g1.state.store.clone();
    let (mut client, session, mut x, x_id, mut y, y_id) = session_with_nodes_in_two_cells(&g1, &g2).await;

    client.utter(&session, 0).await;
    let job = x.expect("job_assign").await;
    // x stays silent past the job timeout (and is not taken for another attempt: it was tried),
    // so the task moves to y's cell; x answers only after y did.
    let moved = y.expect("job_assign").await;
    y.answer(&moved, &format!("{y_id}: 0")).await;
    let result = client.expect("translation_result").await;
    assert_eq!(answered_by(&result), y_id);
    let stale_before = g1.metric("results_stale");
    x.answer(&job, &format!("{x_id}: 0")).await;
    eventually("x's late result to be dropped", || async { g1.metric("results_stale") > stale_before }).await;
    client.expect_silence(Duration::from_millis(500)).await;
    consistent(&s).await;
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_during_traffic_delays_tasks_and_loses_none() {
    let mut cluster = cluster();
    // A command waits for the primary (retrying) up to `redis_timeout_ms`, and a listener waits for a
    // delayed result up to `result_gap_timeout_ms` (then `missing_result{gap_timeout}`): both as long
    // as a loaded CI machine may take to restart a primary (by default 3 s each).
    let patient = |c: &mut switchboard::config::Config| {
        c.scheduler.redis_timeout_ms = 15_000;
        c.sessions.result_gap_timeout_ms = 20_000;
    };
    let g1 = gateway(&cluster, 3, patient).await;
    let g2 = gateway(&cluster, 3, patient).await;
    let s = g1.state.store.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut nodes = Vec::new();
    for cell in 0..3 {
        let id = node_id_in(&s, &format!("r{cell}-"), s.cell(cell));
        let url = if cell % 2 == 0 { g1.url.clone() } else { g2.url.clone() };
        nodes.push(answering_node(url, id, stop.clone()));
    }
    eventually("three nodes online", || async { s.list_nodes(10).await.is_ok_and(|(_, n)| n == 3) }).await;

    // Three sessions talk steadily (an utterance every 40 ms each) while the primary of cell 1
    // stops and starts again with its data.
    const UTTERANCES: u64 = 40;
    let mut talkers = Vec::new();
    for i in 0..3 {
        let gw = if i == 1 { &g1 } else { &g2 };
        let mut client = gw.client().await;
        let session = client.init_one_way("zh", "en").await;
        talkers.push(tokio::spawn(async move {
            let (mut ledger, mut order) = (Ledger::default(), Vec::new());
            for index in 0..UTTERANCES {
                client.utter(&session, index).await;
                while let Some(m) = client.try_recv(Duration::from_millis(40)).await {
                    if ledger.record(&m) {
                        order.push((session.clone(), m["utterance_index"].as_u64().unwrap_or(u64::MAX)));
                    }
                }
            }
            let all: Vec<u64> = (0..UTTERANCES).collect();
            collect(&mut client, &mut ledger, &mut order, &session, &all).await;
            client.expect_silence(Duration::from_millis(300)).await;
            (session, ledger, order)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let owners = slot_owners(&cluster.urls()[0]).await;
    let port = owner(&owners, slot(s.cell(1).tag()));
    let primary = cluster.ports().iter().position(|p| *p == port).unwrap();
    tokio::task::block_in_place(|| cluster.restart(primary)).expect("the primary comes back");

    for talker in talkers {
        let (session, ledger, order) = talker.await.unwrap();
        let expected: Vec<(String, u64)> = (0..UTTERANCES).map(|i| (session.clone(), i)).collect();
        let problems = ledger.check(&expected, &order);
        assert!(problems.is_empty(), "{session}: {problems:?}");
        for index in 0..UTTERANCES {
            let outcome = &ledger.outcomes(&session, index)[0];
            assert_eq!(outcome["type"], "translation_result", "delayed, not failed: {outcome}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for n in nodes {
        n.await.unwrap();
    }
    consistent(&s).await;
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn raising_the_cell_count_gateway_by_gateway_loses_nothing() {
    let cluster = cluster();
    // The old configuration (2 cells) and, during the rollout, a gateway with 3.
    let old = gateway(&cluster, 2, |_| {}).await;
    let new = gateway(&cluster, 3, |_| {}).await;
    let s3 = new.state.store.clone();
    assert_eq!(old.state.store.cell(1).tag(), s3.cell(1).tag(), "adding a cell renames none");
    let stop = Arc::new(AtomicBool::new(false));
    // Nodes on both; by id, one of them lands in the new cell 2 when it registers with `new`.
    let in_new_cell = node_id_in(&s3, "late-", s3.cell(2));
    let mut nodes = vec![
        answering_node(old.url.clone(), "early-a".into(), stop.clone()),
        answering_node(new.url.clone(), in_new_cell.clone(), stop.clone()),
    ];
    eventually("two nodes online", || async { s3.list_nodes(10).await.is_ok_and(|(_, n)| n == 2) }).await;
    let cells: BTreeSet<String> =
        s3.list_nodes(10).await.unwrap().0.iter().map(|n| n["cell"].clone()).collect();
    assert!(cells.contains(s3.cell(2).tag()), "{cells:?}");

    // Sessions on both gateways talk; every utterance is answered once, in order, whichever cell
    // count the gateway that dispatched it had.
    let mut talkers = Vec::new();
    for (i, gw) in [&old, &new, &old, &new].into_iter().enumerate() {
        let mut client = gw.client().await;
        let session = client.init_one_way("zh", "en").await;
        for index in 0..10 {
            client.utter(&session, index).await;
        }
        talkers.push((i, client, session));
    }
    nodes.push(answering_node(old.url.clone(), "early-b".into(), stop.clone()));
    for (_, client, session) in &mut talkers {
        let (mut ledger, mut order) = (Ledger::default(), Vec::new());
        let all: Vec<u64> = (0..10).collect();
        collect(client, &mut ledger, &mut order, session, &all).await;
        let expected: Vec<(String, u64)> = all.iter().map(|i| (session.clone(), *i)).collect();
        let problems = ledger.check(&expected, &order);
        assert!(problems.is_empty(), "{session}: {problems:?}");
        for index in 0..10 {
            assert_eq!(ledger.outcomes(session, index)[0]["type"], "translation_result");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for n in nodes {
        n.await.unwrap();
    }
    consistent(&s3).await;
    old.stop().await;
    new.stop().await;
}
