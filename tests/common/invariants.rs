//! The invariant checker the fault tests run after each scenario: what listeners received and
//! what Redis holds.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use switchboard::gateway::AppState;
use switchboard::store::Store;

/// The outcomes one listener received, by (speaker, utterance index).
#[derive(Debug, Default)]
pub struct Ledger {
    outcomes: BTreeMap<(String, u64), Vec<Value>>,
}

impl Ledger {
    /// Records `message` if it is an outcome (`translation_result`, `missing_result`, or an
    /// `error` about an utterance); returns whether it was one.
    pub fn record(&mut self, message: &Value) -> bool {
        let (speaker, index) = match message["type"].as_str() {
            Some("translation_result" | "missing_result") => {
                (message["session_id"].as_str(), message["utterance_index"].as_u64())
            }
            Some("error") => {
                let d = &message["details"];
                (d["session_id"].as_str(), d["utterance_index"].as_u64())
            }
            _ => return false,
        };
        let (Some(speaker), Some(index)) = (speaker, index) else { return false };
        self.outcomes.entry((speaker.to_owned(), index)).or_default().push(message.clone());
        true
    }

    pub fn outcomes(&self, speaker: &str, index: u64) -> &[Value] {
        self.outcomes.get(&(speaker.to_owned(), index)).map_or(&[], Vec::as_slice)
    }

    /// Every (speaker, index) in `expected` ended in exactly one outcome, nothing else arrived,
    /// and outcomes came in index order per speaker.
    pub fn check(&self, expected: &[(String, u64)], order: &[(String, u64)]) -> Vec<String> {
        let mut problems = Vec::new();
        for key in expected {
            let n = self.outcomes.get(key).map_or(0, Vec::len);
            if n != 1 {
                problems.push(format!("{key:?}: {n} outcomes"));
            }
        }
        for key in self.outcomes.keys() {
            if !expected.contains(key) {
                problems.push(format!("{key:?}: an outcome for an utterance this listener should not hear"));
            }
        }
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (speaker, index) in order {
            if let Some(previous) = last.insert(speaker, *index)
                && previous > *index
            {
                problems.push(format!("{speaker}: {index} after {previous}"));
            }
        }
        problems
    }
}

/// Redis holds a consistent state: every node's running count equals its in-flight jobs, every
/// job in flight is its task's current job, every online node has its card in its class, and
/// every key that is meant to expire has a TTL.
pub async fn redis_problems(s: &Store) -> Vec<String> {
    let mut conn = s.connection();
    let mut keys: Vec<String> = Vec::new();
    for server in conn.primaries().await.unwrap() {
        let mut all = redis::cmd("KEYS");
        all.arg("*");
        keys.extend(conn.query_on::<Vec<String>>(server.as_ref(), all).await.unwrap());
    }
    let mut problems = Vec::new();
    // Per cell and tenant, the tasks in flight (against the fair queue's running counts).
    let mut running_per_tenant: Running = Default::default();
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap();
        let kind = key.rsplit_once("}:").map_or("", |(_, name)| name);
        let persistent_by_design = matches!(
            kind,
            "nodes" | "alive" | "deadlines" | "waiting" | "fair" | "inbox" | "sessions" | "gateways" | "dead"
        ) || kind.starts_with("pool:")
            || kind.starts_with("class:")
            || kind.starts_with("queue:")
            || kind.starts_with("held:")
            || key.contains("{policy}")
            || (kind.starts_with("node:") && node_is_online(&mut conn, key).await)
            || (kind == "session" && hget(&mut conn, key, "state").await.as_deref() == Some("attached"));
        if ttl == -1 && !persistent_by_design {
            problems.push(format!("{key} has no TTL"));
        }
        if kind.starts_with("node:") {
            problems.extend(index_problems(&mut conn, key).await);
            let running: i64 =
                hget(&mut conn, key, "running").await.and_then(|r| r.parse().ok()).unwrap_or(0);
            let jobs: Vec<String> = hget(&mut conn, key, "jobs")
                .await
                .filter(|j| j != "{}")
                .map(|j| serde_json::from_str(&j).unwrap())
                .unwrap_or_default();
            if running != jobs.len() as i64 {
                problems.push(format!("{key}: running {running}, {} jobs in flight", jobs.len()));
            }
            let (base, id) = key.split_once("node:").unwrap();
            for job in jobs {
                let task_id = job.split_once(':').map(|(_, t)| t).unwrap_or_default();
                let task = task_state(&mut conn, &format!("{base}task:{task_id}")).await;
                let holds = task
                    .as_ref()
                    .is_some_and(|t| t["job"] == job.as_str() && t["node"] == id && t["state"] == "assigned");
                if !holds {
                    problems.push(format!("{key}: job {job} in flight, but its task says {task:?}"));
                }
                let tenant = task.as_ref().and_then(|t| t["tenant"].as_str()).unwrap_or("");
                if !tenant.is_empty() {
                    *running_per_tenant
                        .entry(base.to_owned())
                        .or_default()
                        .entry(tenant.to_owned())
                        .or_default() += 1;
                }
            }
        }
    }
    problems.extend(class_problems(&mut conn, &keys).await);
    problems.extend(queue_problems(&mut conn, &keys, running_per_tenant).await);
    problems
}

/// Per cell key base (`prefix:{cell}:`), per tenant, a count.
type Running = std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>;

/// The fair queue holds waiting tasks only (a tenant's held set only held ones), each tenant's
/// count of waiting tasks is the number of its tasks queued or held, and its count of running
/// tasks the number of its jobs in flight.
async fn queue_problems(
    conn: &mut switchboard::store::RedisConn,
    keys: &[String],
    mut running: Running,
) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut problems = Vec::new();
    // Per cell: the tasks queued in all its pools and held, against the cell's counts.
    let mut queued: Running = BTreeMap::new();
    for key in keys.iter().filter(|k| k.contains("}:queue:") || k.contains("}:held:")) {
        let held = key.contains("}:held:");
        let base = &key[..key.find(if held { "}:held:" } else { "}:queue:" }).unwrap() + 2];
        let members: Vec<String> =
            redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(conn).await.unwrap();
        let per_tenant = queued.entry(base.to_owned()).or_default();
        for task_id in members {
            let task = task_state(conn, &format!("{base}task:{task_id}")).await;
            let fits = |t: &&Value| {
                t["state"] == "waiting" && t.get("fair").is_some() && (t["held"] == true) == held
            };
            match task.as_ref().filter(fits) {
                Some(t) => {
                    *per_tenant.entry(t["tenant"].as_str().unwrap_or("").to_owned()).or_default() += 1;
                    // Per pool too, under a `p:` key (tenant ids and pools share the map).
                    *per_tenant.entry(format!("p:{}", t["pool"].as_str().unwrap_or(""))).or_default() += 1;
                }
                None => problems.push(format!("{key}: {task_id} is queued, but its task says {task:?}")),
            }
        }
    }
    for key in keys.iter().filter(|k| k.ends_with("}:fair")) {
        let base = key.trim_end_matches("fair");
        let mut per_tenant = queued.remove(base).unwrap_or_default();
        let counts: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(format!("{base}fair")).query_async(conn).await.unwrap();
        let mut in_flight = running.remove(base).unwrap_or_default();
        for (tenant, count) in counts.iter().filter_map(|(f, c)| Some((f.strip_prefix("r:")?, c))) {
            let jobs = in_flight.remove(tenant).unwrap_or(0);
            if count.parse::<i64>().unwrap_or(-1) != jobs {
                problems
                    .push(format!("{base}fair: tenant {tenant:?} counts {count} running, {jobs} in flight"));
            }
        }
        for (tenant, jobs) in in_flight.into_iter().filter(|(_, n)| *n > 0) {
            problems.push(format!("{base}fair: tenant {tenant:?} has {jobs} in flight and no running count"));
        }
        let waiting_counts = counts.iter().filter_map(|(f, c)| {
            f.strip_prefix("n:")
                .map(|t| (t.to_owned(), c))
                .or_else(|| f.starts_with("p:").then(|| (f.clone(), c)))
        });
        for (field, count) in waiting_counts {
            let queued = per_tenant.remove(&field).unwrap_or(0);
            if count.parse::<i64>().unwrap_or(-1) != queued {
                problems
                    .push(format!("{base}fair: tenant {field:?} counts {count} waiting, {queued} queued"));
            }
        }
        for (tenant, queued) in per_tenant {
            problems.push(format!("{base}fair: tenant {tenant:?} has {queued} queued and no count"));
        }
    }
    for (base, per_tenant) in running.into_iter().filter(|(_, p)| p.values().any(|n| *n > 0)) {
        problems.push(format!("{base}: {per_tenant:?} in flight, but the cell has no running counts"));
    }
    for (base, per_tenant) in queued.into_iter().filter(|(_, p)| !p.is_empty()) {
        problems.push(format!("{base}: {per_tenant:?} queued, but the cell has no counts"));
    }
    problems
}

/// A node is in its class's load index, at running / capacity, exactly when it is online and not
/// draining.
async fn index_problems(conn: &mut switchboard::store::RedisConn, node_key: &str) -> Vec<String> {
    let (base, id) = node_key.split_once("node:").unwrap();
    let Some(class) = hget(conn, node_key, "class").await else { return Vec::new() };
    let fields: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(node_key)
        .arg(&["state", "draining", "running", "capacity"])
        .query_async(conn)
        .await
        .unwrap();
    let [state, draining, running, capacity]: [Option<String>; 4] = fields.try_into().unwrap();
    let score: Option<f64> =
        redis::cmd("ZSCORE").arg(format!("{base}class:{class}")).arg(id).query_async(conn).await.unwrap();
    let indexed = state.as_deref() == Some("online") && draining.as_deref() == Some("0");
    let want = indexed.then(|| {
        let running: f64 = running.and_then(|r| r.parse().ok()).unwrap_or(0.0);
        running / capacity.and_then(|c| c.parse::<f64>().ok()).unwrap_or(1.0).max(1.0)
    });
    if score != want {
        return vec![format!("{node_key}: load index score {score:?}, want {want:?}")];
    }
    let online = state.as_deref() == Some("online");
    let card = hget(conn, &format!("{base}class:{class}:info"), &format!("n:{id}")).await;
    if card.is_some() != online {
        return vec![format!("{node_key}: online {online}, card in its class {card:?}")];
    }
    Vec::new()
}

/// The state part of a stored task (lua/lib.lua, `load_task`), if the task exists.
pub async fn task_state(conn: &mut switchboard::store::RedisConn, key: &str) -> Option<serde_json::Value> {
    let raw: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
    serde_json::from_str(raw?.split('\n').next()?).ok()
}

/// Every class counts its online nodes and is in the pool of each of its pairs, and only there;
/// no class outlives its last online node.
async fn class_problems(conn: &mut switchboard::store::RedisConn, keys: &[String]) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut problems = Vec::new();
    // (cell base, class) → online nodes of the class.
    let mut online: BTreeMap<(String, String), usize> = BTreeMap::new();
    for key in keys.iter().filter(|k| k.contains("}:node:")) {
        if hget(conn, key, "state").await.as_deref() == Some("online")
            && let Some(class) = hget(conn, key, "class").await
        {
            let base = key.split_once("node:").unwrap().0.to_owned();
            *online.entry((base, class)).or_default() += 1;
        }
    }
    let mut pools: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in keys.iter().filter(|k| k.contains("}:pool:")) {
        let members: Vec<String> = redis::cmd("SMEMBERS").arg(key).query_async(conn).await.unwrap();
        pools.insert(key.clone(), members.into_iter().collect());
    }
    for ((base, class), nodes) in &online {
        let info = format!("{base}class:{class}:info");
        let counted: usize = hget(conn, &info, "nodes").await.and_then(|n| n.parse().ok()).unwrap_or(0);
        if counted != *nodes {
            problems.push(format!("{info}: counts {counted} online nodes, {nodes} are"));
        }
        let pairs = hget(conn, &info, "pairs").await.unwrap_or_default();
        for pair in pairs.split(',').filter(|p| !p.is_empty()) {
            if !pools.get(&format!("{base}pool:{pair}")).is_some_and(|p| p.contains(class)) {
                problems.push(format!("class {class} is missing from pool {pair}"));
            }
        }
    }
    for (pool, classes) in &pools {
        let base = pool.split_once("pool:").unwrap().0;
        for class in classes {
            if !online.contains_key(&(base.to_owned(), class.clone())) {
                problems.push(format!("{pool} names class {class}, which has no online node"));
            }
        }
    }
    problems
}

async fn hget(conn: &mut switchboard::store::RedisConn, key: &str, field: &str) -> Option<String> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await.unwrap();
    if kind != "hash" {
        return None;
    }
    redis::cmd("HGET").arg(key).arg(field).query_async(conn).await.unwrap()
}

async fn node_is_online(conn: &mut switchboard::store::RedisConn, key: &str) -> bool {
    hget(conn, key, "state").await.as_deref() == Some("online")
}

/// A gateway holds nothing for peers that are gone: no sockets, no queued frames.
pub fn footprint_problems(state: &AppState) -> Vec<String> {
    let (nodes, sessions) = state.peers.counts();
    let mut problems = Vec::new();
    if nodes + sessions > 0 {
        problems
            .push(format!("gateway {} still holds {nodes} nodes and {sessions} sessions", state.gateway_id));
    }
    problems
}
