//! The load index by capability class (docs/redis.md, "Load index"), on a real redis-server and on
//! a 3-primary Redis Cluster: what a slot taken or freed costs whatever the pairs a node serves,
//! how classes follow registration, capability changes, drains and node loss, and how candidates
//! merge the classes of a pool.

#[macro_use]
mod common;

use common::direct::*;
use common::invariants::redis_problems;
use common::*;
use switchboard::store::*;

fn config() -> SchedulerConfig {
    SchedulerConfig { heartbeat_interval_ms: 1_000, job_timeout_ms: 10_000, ..fast_scheduler() }
}

async fn connect(backend: &Backend) -> Store {
    Store::connect(&backend.url(), config()).await.expect("scheduler connects")
}

/// `src>tgt` for every pair of `langs` (same-language pairs included, as a fleet node registers).
fn pairs(langs: &[&str]) -> Vec<String> {
    let mut out: Vec<String> =
        langs.iter().flat_map(|a| langs.iter().map(move |b| format!("{a}>{b}"))).collect();
    out.sort();
    out
}

fn languages(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("l{i:02}")).collect()
}

fn registration(id: &str, pairs: &[String], capacity: u32) -> NodeRegistration {
    let refs: Vec<&str> = pairs.iter().map(String::as_str).collect();
    node(id, &refs, capacity)
}

fn task(index: u64, src: &str, tgt: &str) -> TaskSpec {
    TaskSpec { src_lang: src.into(), tgt_lang: tgt.into(), ..spec("s-index", index) }
}

/// Commands the primaries ran since the last reset: (all, set and sorted-set writes), summed over
/// the primaries.
async fn commands(s: &Store) -> (u64, u64) {
    let conn = s.connection();
    let (mut all, mut index) = (0, 0);
    for server in conn.primaries().await.unwrap() {
        let mut info = redis::cmd("INFO");
        info.arg("commandstats");
        let text: String = conn.query_on(server.as_ref(), info).await.unwrap();
        for line in text.lines().filter(|l| l.starts_with("cmdstat_")) {
            let (name, rest) = line.trim_start_matches("cmdstat_").split_once(':').unwrap();
            let calls: u64 = rest.split(',').next().unwrap().trim_start_matches("calls=").parse().unwrap();
            if matches!(name, "info" | "config") {
                continue;
            }
            all += calls;
            if matches!(name, "zadd" | "zrem" | "sadd" | "srem") {
                index += calls;
            }
        }
    }
    (all, index)
}

async fn reset_stats(s: &Store) {
    let conn = s.connection();
    for server in conn.primaries().await.unwrap() {
        let mut reset = redis::cmd("CONFIG");
        reset.arg("RESETSTAT");
        let _: () = conn.query_on(server.as_ref(), reset).await.unwrap();
    }
}

async fn consistent(s: &Store) {
    let problems = redis_problems(s).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One task's scripts (candidates, dispatch_task, complete_task) cost the same on a node serving
/// 256 pairs as on one serving 1: a slot taken or freed is one index write.
async fn a_slot_costs_the_same_whatever_the_pairs(backend: Backend) {
    let s = connect(&backend).await;
    let many = pairs(&languages(16).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(many.len(), 256);
    register(&s, &registration("wide", &many, 4)).await;
    register(&s, &registration("narrow", &["l98>l99".to_owned()], 4)).await;

    let mut cost = Vec::new();
    for (index, (node_id, src, tgt)) in
        [("wide", "l03", "l07"), ("narrow", "l98", "l99")].into_iter().enumerate()
    {
        let spec = task(index as u64, src, tgt);
        reset_stats(&s).await;
        let found = s.candidates(s.cell(0), &spec.pool(), &[], None).await.unwrap();
        assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [node_id]);
        let job = job_id(&create(&s, &spec, Some(node_id)).await);
        assert_eq!(index_score(&s, node_id).await, Some(0.25));
        s.complete_task(&job, node_id, None, Outcome::Completed).await.unwrap();
        assert_eq!(index_score(&s, node_id).await, Some(0.0));
        cost.push(commands(&s).await);
    }
    println!("commands (all, index writes): 256 pairs {:?}, 1 pair {:?}", cost[0], cost[1]);
    assert_eq!(cost[0], cost[1], "the same commands for 256 pairs as for 1");
    // Dispatch: the deadline and the class index; completion: the same two.
    assert!(cost[0].1 <= 4, "set and sorted-set writes per task: {:?}", cost[0]);
    consistent(&s).await;
}

/// Nodes of one shape share a class; a pool lists the classes that serve its pair; a class leaves
/// the pools with its last online node; a capability change moves a node to another class.
async fn classes_follow_registration_change_drain_and_loss(backend: Backend) {
    let s = connect(&backend).await;
    let zh_en = pairs(&["zh", "en"]);
    let zh_en_ja = pairs(&["zh", "en", "ja"]);
    register(&s, &registration("a", &zh_en, 2)).await;
    register(&s, &registration("b", &zh_en, 2)).await;
    assert_eq!(pool_classes(&s, "zh>en").await.len(), 1, "a and b share a class");
    let shared = pool_classes(&s, "zh>en").await.remove(0);
    register(&s, &registration("c", &zh_en_ja, 2)).await;
    assert_eq!(pool_classes(&s, "zh>en").await.len(), 2);
    assert_eq!(pool_classes(&s, "ja>zh").await.len(), 1, "only c serves ja");
    consistent(&s).await;

    // c's capabilities change to a's shape: its class (only c's) leaves every pool.
    let update = CapabilityUpdate { pairs: Some(zh_en.clone()), ready: None };
    s.heartbeat(s.cell(0), "c", "conn-c", &Usage::default(), &update).await.unwrap();
    assert_eq!(pool_classes(&s, "zh>en").await, std::slice::from_ref(&shared));
    assert!(pool_classes(&s, "ja>zh").await.is_empty());
    consistent(&s).await;

    // A draining node leaves the index, not its class; offline nodes leave their class.
    s.drain_node(s.cell(0), "a", "conn-a").await.unwrap();
    assert_eq!(index_score(&s, "a").await, None);
    assert_eq!(pool_classes(&s, "zh>en").await, std::slice::from_ref(&shared));
    consistent(&s).await;
    for id in ["a", "b", "c"] {
        s.node_offline(s.cell(0), id, &format!("conn-{id}")).await.unwrap();
        consistent(&s).await;
    }
    assert!(pool_classes(&s, "zh>en").await.is_empty(), "no online node: no class");
    let mut conn = s.connection();
    let left: Vec<String> =
        redis::cmd("KEYS").arg(format!("*class:{shared}*")).query_async(&mut conn).await.unwrap();
    assert!(left.is_empty() || backend.cells() > 1, "class keys removed: {left:?}");
    // Back online: the class comes back.
    register(&s, &registration("a", &zh_en, 2)).await;
    assert_eq!(pool_classes(&s, "en>zh").await, [shared]);
    consistent(&s).await;
}

/// Candidates are the least loaded of the pool across its classes, with a free slot.
async fn candidates_merge_the_classes_of_a_pool(backend: Backend) {
    let s = connect(&backend).await;
    register(&s, &registration("busy", &pairs(&["zh", "en"]), 4)).await;
    register(&s, &registration("idle", &pairs(&["zh", "en", "ja"]), 4)).await;
    register(&s, &registration("small", &pairs(&["zh", "en", "ko"]), 1)).await;
    register(&s, &registration("full", &pairs(&["zh", "en", "de"]), 1)).await;
    for i in 0..2 {
        create(&s, &task(i, "zh", "en"), Some("busy")).await;
    }
    create(&s, &task(9, "zh", "en"), Some("full")).await;
    let found = s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["idle", "small", "busy"], "by load across classes, the full one left out");
    assert_eq!((found[0].running, found[2].running, found[2].capacity), (0, 2, 4), "running from the load");
    // Each candidate has its class's pairs: sent once per class, then known to the gateway.
    for _ in 0..2 {
        let found = s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap();
        assert_eq!(*found[0].pairs, pairs(&["zh", "en", "ja"]), "{found:?}");
        assert_eq!(*found[2].pairs, pairs(&["zh", "en"]));
    }
    let found = s.candidates(s.cell(0), "zh>en", &["idle".into()], Some("busy")).await.unwrap();
    assert_eq!(found[0].id, "busy");
    assert!(found[0].affinity);
    // An affinity node that does not serve the pair is not a candidate.
    let found = s.candidates(s.cell(0), "ja>zh", &[], Some("busy")).await.unwrap();
    assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["idle"]);
    assert_eq!(
        s.availability(s.cell(0), &["zh>en".into(), "ko>zh".into(), "fr>zh".into()]).await.unwrap(),
        [3, 1, 0]
    );
    consistent(&s).await;
}

/// A job in flight while its node's capabilities change or it drains: completion puts the node
/// back in the index of its current class, or leaves it out while it drains.
async fn completion_races_with_capability_changes_and_drain(backend: Backend) {
    let s = connect(&backend).await;
    register(&s, &registration("n", &pairs(&["zh", "en"]), 2)).await;
    let first = job_id(&create(&s, &task(0, "zh", "en"), Some("n")).await);
    let second = job_id(&create(&s, &task(1, "zh", "en"), Some("n")).await);
    let update = CapabilityUpdate { pairs: Some(pairs(&["zh", "en", "ja"])), ready: None };
    s.heartbeat(s.cell(0), "n", "conn-n", &Usage::default(), &update).await.unwrap();
    assert_eq!(index_score(&s, "n").await, Some(1.0), "its load moved with it");
    consistent(&s).await;
    s.complete_task(&first, "n", None, Outcome::Completed).await.unwrap();
    assert_eq!(index_score(&s, "n").await, Some(0.5));
    assert_eq!(s.candidates(s.cell(0), "ja>en", &[], None).await.unwrap().len(), 1);
    s.drain_node(s.cell(0), "n", "conn-n").await.unwrap();
    s.complete_task(&second, "n", None, Outcome::Completed).await.unwrap();
    assert_eq!(index_score(&s, "n").await, None, "draining: not indexed again");
    assert!(s.candidates(s.cell(0), "zh>en", &[], None).await.unwrap().is_empty());
    consistent(&s).await;
}

on_single_redis_and_cluster!(
    a_slot_costs_the_same_whatever_the_pairs,
    classes_follow_registration_change_drain_and_loss,
    candidates_merge_the_classes_of_a_pool,
    completion_races_with_capability_changes_and_drain,
);
