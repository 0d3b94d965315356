//! Read-only views of the stored state for the admin API and the dashboard: nodes, tasks, jobs,
//! rooms, gateways. They read records as stored (hash fields as strings); listing nodes or rooms
//! costs one round trip per page, not per record.

use std::collections::BTreeMap;

use super::{Batch, CellKeys, RegistryKeys, Result, RoomKeys, Store};

/// A stored hash, field → value.
pub type Record = BTreeMap<String, String>;

/// Rooms listed per call at most.
const ROOM_PAGE: usize = 500;

impl Store {
    /// The records of the first `limit` online nodes by id, over every cell (secret and
    /// connection id left out), with their in-flight jobs and cell, and how many nodes are online.
    pub async fn list_nodes(&self, limit: usize) -> Result<(Vec<Record>, usize)> {
        let mut members = Batch::new(&self.conn);
        for cell in self.cells() {
            members.on(&cell.nodes()).cmd("SMEMBERS").arg(cell.nodes());
        }
        let per_cell: Vec<Vec<String>> = members.query(&self.conn).await?;
        let mut ids: Vec<(&str, &CellKeys)> = per_cell
            .iter()
            .zip(self.cells())
            .flat_map(|(ids, cell)| ids.iter().map(move |id| (id.as_str(), cell)))
            .collect();
        let online = ids.len();
        ids.sort_by_key(|(id, _)| *id);
        ids.truncate(limit);
        let mut batch = Batch::new(&self.conn);
        for (id, cell) in &ids {
            let key = cell.node(id);
            batch.on(&key).cmd("HGETALL").arg(&key);
        }
        let rows: Vec<Record> = batch.query(&self.conn).await?;
        let mut nodes = Vec::new();
        for (mut record, (_, cell)) in rows.into_iter().zip(&ids) {
            if record.is_empty() {
                continue;
            }
            record.remove("secret");
            record.remove("conn");
            let in_flight = record.get("running").cloned().unwrap_or_else(|| "0".into());
            record.insert("in_flight".into(), in_flight);
            record.insert("cell".into(), cell.tag().to_owned());
            nodes.push(record);
        }
        Ok((nodes, online))
    }

    /// A task's record: where it runs or ended (a cell it moved out of keeps a `moved` record).
    /// The spec is there while the task runs; an ended task no longer keeps it.
    pub async fn task_record(&self, task_id: &str) -> Result<Option<Record>> {
        let mut batch = Batch::new(&self.conn);
        for cell in self.cells() {
            batch.on(&cell.task(task_id)).cmd("GET").arg(cell.task(task_id));
        }
        let stored: Vec<Option<String>> = batch.query(&self.conn).await?;
        let mut found: Vec<(Record, &CellKeys)> = stored
            .iter()
            .zip(self.cells())
            .filter_map(|(raw, cell)| Some((task_fields(raw.as_deref()?)?, cell)))
            .collect();
        found.sort_by_key(|(r, _)| r.get("state").is_some_and(|s| s == "moved"));
        Ok(found.into_iter().next().map(|(mut record, cell)| {
            record.insert("cell".into(), cell.tag().to_owned());
            record
        }))
    }

    /// A job attempt, from its task (which holds its current job): its node, attempt, state and
    /// timings (while it runs: assigned, acked, started; once ended: `took_ms`); an earlier attempt
    /// of a task that moved on is `superseded`.
    pub async fn job_record(&self, job_id: &str) -> Result<Option<Record>> {
        let Some((cell, task_id)) = self.job_task(job_id) else { return Ok(None) };
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET").arg(cell.task(&task_id)).query_async(&mut conn).await?;
        let Some(task) = raw.as_deref().and_then(task_fields) else { return Ok(None) };
        let mut job = Record::new();
        job.insert("job_id".into(), job_id.to_owned());
        job.insert("task".into(), task_id);
        // A running task names its job in full; an ended one keeps only its <hex> part.
        let hex = job_id.split_once(':').and_then(|(job, _)| job.rsplit_once('-')).map(|(_, hex)| hex);
        let held = task.get("job").is_some_and(|j| j == job_id || Some(j.as_str()) == hex);
        if !held {
            job.insert("state".into(), "superseded".into());
            return Ok(Some(job));
        }
        for field in ["node", "attempt", "state", "lost", "assigned_ms", "acked_ms", "started_ms", "took_ms"]
        {
            if let Some(value) = task.get(field) {
                job.insert(field.into(), value.clone());
            }
        }
        Ok(Some(job))
    }

    async fn record(&self, key: &str) -> Result<Option<Record>> {
        let mut conn = self.conn.clone();
        let record: Record = redis::cmd("HGETALL").arg(key).query_async(&mut conn).await?;
        Ok((!record.is_empty()).then_some(record))
    }

    /// A room's record and its members (JSON strings by session id).
    pub async fn room_record(&self, code: &str) -> Result<Option<(Record, Record)>> {
        let k = RoomKeys::new(&self.config.prefix, code);
        let Some(room) = self.record(&k.room).await? else { return Ok(None) };
        let mut conn = self.conn.clone();
        let members: Record = redis::cmd("HGETALL").arg(&k.members).query_async(&mut conn).await?;
        Ok(Some((room, members)))
    }

    /// Codes of live rooms (at most a page; SCAN, so it never blocks Redis; on a cluster, SCAN
    /// of every primary).
    pub async fn room_codes(&self) -> Result<Vec<String>> {
        let pattern = format!("{}:{{r:*}}:room", self.config.prefix);
        let mut codes = Vec::new();
        for server in self.conn.primaries().await? {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) = self.conn.query_on(server.as_ref(), scan).await?;
                codes.extend(
                    keys.iter().filter_map(|k| k.split("{r:").nth(1)?.split('}').next().map(str::to_owned)),
                );
                cursor = next;
                if cursor == 0 || codes.len() >= ROOM_PAGE {
                    break;
                }
            }
        }
        codes.sort();
        codes.truncate(ROOM_PAGE);
        Ok(codes)
    }

    /// Gateways found dead recently (id → when, ms).
    pub async fn dead_gateways(&self) -> Result<Vec<(String, u64)>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("ZRANGE")
            .arg(RegistryKeys::new(&self.config.prefix).dead)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?)
    }

    /// Per cell: online nodes and live ones (liveness deadline ahead).
    pub async fn node_counts(&self) -> Result<Vec<(u64, u64)>> {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut batch = Batch::new(&self.conn);
        for cell in self.cells() {
            batch.on(&cell.nodes()).cmd("SCARD").arg(cell.nodes());
            batch.on(&cell.alive()).cmd("ZCOUNT").arg(cell.alive()).arg(now_ms as u64).arg("+inf");
        }
        let counts: Vec<u64> = batch.query(&self.conn).await?;
        Ok(counts.chunks(2).map(|c| (c[0], c[1])).collect())
    }

    /// Per cell, the fair queue's counts: tasks waiting per tenant (`""`: no tenant) and per pool,
    /// tasks running per tenant; one pipeline.
    pub async fn queues(&self) -> Result<Vec<CellQueues>> {
        let mut batch = Batch::new(&self.conn);
        for cell in self.cells() {
            batch.on(&cell.fair()).cmd("HGETALL").arg(cell.fair());
        }
        let hashes: Vec<BTreeMap<String, String>> = batch.query(&self.conn).await?;
        Ok(self
            .cells()
            .iter()
            .zip(hashes)
            .map(|(cell, fair)| {
                let counts = |prefix: &str| -> BTreeMap<String, u64> {
                    fair.iter()
                        .filter_map(|(field, n)| {
                            Some((field.strip_prefix(prefix)?.to_owned(), n.parse().ok()?))
                        })
                        .filter(|(_, n)| *n > 0)
                        .collect()
                };
                CellQueues {
                    cell: cell.tag().to_owned(),
                    waiting: counts("n:"),
                    pools: counts("p:"),
                    running: counts("r:"),
                }
            })
            .collect())
    }

    /// Earlier active versions of a policy role, newest first (the rollback stack).
    pub async fn policy_history(&self, role: &str) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("LRANGE")
            .arg(self.policy_keys.history(role))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?)
    }
}

/// One cell's fair queue counts (`Store::queues`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CellQueues {
    pub cell: String,
    /// Tasks waiting (queued or held) per tenant.
    pub waiting: BTreeMap<String, u64>,
    /// Tasks waiting per pool (`src>tgt`).
    pub pools: BTreeMap<String, u64>,
    /// Tasks running per tenant (tasks with a tenant only).
    pub running: BTreeMap<String, u64>,
}

/// The fields of a stored task (`<state JSON>\n<spec JSON>\n<payload JSON>`, lua/lib.lua) as
/// strings, with its spec when it still has one; not its payload (the audio).
pub(super) fn task_fields(raw: &str) -> Option<Record> {
    let mut parts = raw.splitn(3, '\n');
    let state: serde_json::Map<String, serde_json::Value> = serde_json::from_str(parts.next()?).ok()?;
    let mut record: Record = state
        .into_iter()
        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    if let Some(spec) = parts.next().filter(|s| !s.is_empty()) {
        record.insert("spec".into(), spec.to_owned());
    }
    Some(record)
}
