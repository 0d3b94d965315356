//! Read-only views of the stored state for the admin API and the dashboard: nodes, tasks, jobs,
//! rooms, gateways. They read records as stored (hash fields as strings); listing nodes or rooms
//! costs one round trip per page, not per record.

use std::collections::BTreeMap;

use super::{MinimalSchedulerService, RegistryKeys, Result, RoomKeys};

/// A stored hash, field → value.
pub type Record = BTreeMap<String, String>;

/// Rooms listed per call at most.
const ROOM_PAGE: usize = 500;

impl MinimalSchedulerService {
    /// The records of the first `limit` online nodes by id (secret and connection id left out),
    /// with their in-flight jobs, and how many nodes are online.
    pub async fn list_nodes(&self, limit: usize) -> Result<(Vec<Record>, usize)> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.keys.nodes()).query_async(&mut conn).await?;
        let online = ids.len();
        ids.sort();
        ids.truncate(limit);
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.keys.node(id));
            pipe.cmd("SCARD").arg(format!("{}:jobs", self.keys.node(id)));
        }
        let rows: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut nodes = Vec::new();
        for pair in rows.chunks(2) {
            let mut record: Record =
                redis::from_redis_value(pair[0].clone()).map_err(redis::RedisError::from)?;
            let jobs: u64 = redis::from_redis_value(pair[1].clone()).map_err(redis::RedisError::from)?;
            if record.is_empty() {
                continue;
            }
            record.remove("secret");
            record.remove("conn");
            record.insert("in_flight".into(), jobs.to_string());
            record.insert("cell".into(), self.keys.tag().to_owned());
            nodes.push(record);
        }
        Ok((nodes, online))
    }

    /// Drains a node on behalf of an operator: it takes no new jobs; its jobs in flight finish.
    pub async fn drain_node_by_operator(&self, node_id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let current: Option<String> =
            redis::cmd("HGET").arg(self.keys.node(node_id)).arg("conn").query_async(&mut conn).await?;
        let Some(current) = current else { return Ok(false) };
        Ok(!matches!(self.drain_node(node_id, &current).await?, super::NodeReply::NotRegistered))
    }

    pub async fn task_record(&self, task_id: &str) -> Result<Option<Record>> {
        self.record(&self.keys.task(task_id)).await
    }

    pub async fn job_record(&self, job_id: &str) -> Result<Option<Record>> {
        self.record(&self.keys.job(job_id)).await
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

    /// Codes of live rooms (at most a page; SCAN, so it never blocks Redis).
    pub async fn room_codes(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:{{r:*}}:room", self.config.prefix);
        let mut cursor = 0u64;
        let mut codes = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            codes.extend(
                keys.iter().filter_map(|k| k.split("{r:").nth(1)?.split('}').next().map(str::to_owned)),
            );
            cursor = next;
            if cursor == 0 || codes.len() >= ROOM_PAGE {
                break;
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

    /// Online nodes and live ones (liveness deadline ahead) of this cell.
    pub async fn node_counts(&self) -> Result<(u64, u64)> {
        let mut conn = self.conn.clone();
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let (online, live): (u64, u64) = redis::pipe()
            .cmd("SCARD")
            .arg(self.keys.nodes())
            .cmd("ZCOUNT")
            .arg(self.keys.alive())
            .arg(now_ms as u64)
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        Ok((online, live))
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
