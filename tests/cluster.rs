//! Groundwork for Redis Cluster (issue #7): a real local 3-primary cluster, cell tags that land on
//! distinct primaries as CRC16 says, and the scheduling scripts — which reach keys derived from
//! their first key's hash tag — accepted by a cluster primary.

mod common;

use common::direct::*;
use switchboard::devredis::RedisCluster;
use switchboard::scheduler::*;

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

#[tokio::test]
async fn cell_tags_spread_over_a_real_cluster_and_scripts_run_on_its_primaries() {
    let cluster = RedisCluster::start(3).expect("a local 3-primary cluster starts");
    let urls = cluster.urls();
    let owners = slot_owners(&urls[0]).await;
    assert_eq!(owners.len(), 3, "{owners:?}");

    // Our CRC16 agrees with the cluster's, and three cells land on three primaries.
    let mut conn =
        redis::Client::open(urls[0].as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let mut primaries = std::collections::BTreeSet::new();
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

    // The dispatch path's scripts run on the primary that owns the cell: every key they touch —
    // declared or derived from KEYS[1]'s tag — is in that slot.
    let tag = cell_tag(0);
    let port = owner(&owners, slot(&tag));
    let url = format!("redis://127.0.0.1:{port}/");
    let s = MinimalSchedulerService::connect(
        &url,
        SchedulerConfig { heartbeat_interval_ms: 10_000, ..Default::default() },
    )
    .await
    .expect("the scheduler connects to the cell's primary and loads its scripts");
    register(&s, &node("n1", &["zh>en"], 2)).await;
    let spec = spec("s-1", 0);
    let job = job_id(&create(&s, &spec, Some("n1")).await);
    match s.complete_task(&job, "n1", Some(1), Outcome::Completed).await.unwrap() {
        CompleteReply::Completed(ended) => assert_eq!(ended.spec.session_id, "s-1"),
        other => panic!("{other:?}"),
    }
    let offline = s.node_offline(s.cell(0), "n1", "conn-n1").await.unwrap();
    assert!(matches!(offline, OfflineReply::Offline { .. }), "{offline:?}");
    // Another primary refuses the cell's keys (MOVED): a cluster client must route by slot.
    let elsewhere = owners.iter().map(|o| o.2).find(|p| *p != port).unwrap();
    let wrong = MinimalSchedulerService::connect(
        &format!("redis://127.0.0.1:{elsewhere}/"),
        SchedulerConfig::default(),
    )
    .await
    .unwrap();
    let err = wrong.register_node(wrong.cell(0), &node("n2", &["zh>en"], 1)).await.unwrap_err();
    assert!(err.to_string().to_ascii_uppercase().contains("MOVED"), "{err}");
}
