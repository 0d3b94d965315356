//! The connection to Redis: one server, or a Redis Cluster.
//!
//! `redis_url` names a cluster when it lists several seed nodes (`redis://a:7000,redis://b:7001`)
//! or when its one server says `cluster_enabled:1`. A single server is reached through a
//! `ConnectionManager` (reconnects on its own); a cluster through the crate's cluster-async
//! connection, which routes each command by its key's slot, follows MOVED and ASK, retries
//! TRYAGAIN and CLUSTERDOWN, and sends `SCRIPT LOAD` to every primary.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// Where Redis is and which kind it is, decided once at start.
#[derive(Debug, Clone)]
pub struct Target {
    seeds: Vec<String>,
    cluster: bool,
}

impl Target {
    /// Reads `redis_url` and, for a single URL, asks the server whether it is a cluster node.
    pub async fn discover(redis_url: &str, timeout: Duration) -> RedisResult<Self> {
        let seeds: Vec<String> =
            redis_url.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if seeds.len() > 1 {
            return Ok(Self { seeds, cluster: true });
        }
        let url = seeds.first().map_or(redis_url, String::as_str);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn =
            redis::Client::open(url)?.get_multiplexed_async_connection_with_config(&config).await?;
        let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut conn).await?;
        Ok(Self { cluster: info.contains("cluster_enabled:1"), seeds: vec![url.to_owned()] })
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// A shared connection whose commands time out after `timeout`.
    pub async fn connect(&self, timeout: Duration) -> RedisResult<RedisConn> {
        self.connect_with(timeout, timeout).await
    }

    /// A dedicated connection for commands that block (XREADGROUP BLOCK): its replies may take
    /// up to `block` longer than `timeout`.
    pub async fn connect_blocking(&self, timeout: Duration, block: Duration) -> RedisResult<RedisConn> {
        self.connect_with(timeout, timeout + block).await
    }

    async fn connect_with(&self, connect: Duration, response: Duration) -> RedisResult<RedisConn> {
        if self.cluster {
            let client = cluster_client(&self.seeds, connect, response)?;
            return Ok(RedisConn::Cluster(client.get_async_connection().await?));
        }
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response))
            .set_connection_timeout(Some(connect))
            .set_number_of_retries(2);
        let client = redis::Client::open(self.seeds[0].as_str())?;
        Ok(RedisConn::Single(ConnectionManager::new_with_config(client, manager).await?))
    }
}

/// Retries (MOVED/ASK redirections, TRYAGAIN, a primary that restarts or fails over) back off from
/// 10 ms to 500 ms, all within the `response` timeout: a primary restarted under traffic delays
/// commands instead of failing them.
fn cluster_client(seeds: &[String], connect: Duration, response: Duration) -> RedisResult<ClusterClient> {
    ClusterClient::builder(seeds.to_vec())
        .connection_timeout(connect)
        .response_timeout(response)
        .retries(16)
        .min_retry_wait(10)
        .max_retry_wait(500)
        .build()
}

/// A connection to one Redis or to a cluster; cheap to clone (both are multiplexed handles).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A server of the cluster, by address.
pub type Server = (String, u16);

impl RedisConn {
    /// The servers that hold data: `[None]` for a single Redis (the one server), else each primary
    /// with slots (from `CLUSTER NODES`). For commands that read a whole keyspace (SCAN).
    pub async fn primaries(&self) -> RedisResult<Vec<Option<Server>>> {
        self.slot_owners(false).await
    }

    /// Like [`primaries`](Self::primaries), and with `failed`, also the primaries the cluster
    /// marked failed that still own slots: readiness must count those, their slots are unserved.
    pub async fn slot_owners(&self, failed: bool) -> RedisResult<Vec<Option<Server>>> {
        let Self::Cluster(conn) = self else { return Ok(vec![None]) };
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn.clone()).await?;
        Ok(nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let flags = fields.get(2)?;
                let serves =
                    flags.contains("master") && (failed || !flags.contains("fail")) && fields.len() > 8;
                let (host, port) = fields.get(1)?.split(['@', ',']).next()?.rsplit_once(':')?;
                let port: u16 = port.parse().ok()?;
                serves.then(|| Some((host.to_owned(), port)))
            })
            .collect())
    }

    /// Runs `cmd` on one server (`None`: wherever the connection sends it).
    pub async fn query_on<T: FromRedisValue>(&self, server: Option<&Server>, cmd: Cmd) -> RedisResult<T> {
        match (self, server) {
            (Self::Cluster(conn), Some((host, port))) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = conn.clone().route_command(cmd, route).await?;
                Ok(T::from_redis_value(value)?)
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }
}

/// Commands on keys of different hash tags, sent as one batch: one pipeline on a single Redis; on
/// a cluster one pipeline per slot (a cluster pipeline must stay in one slot), all sent at once.
/// Replies come back in the order the commands were added. Each `add` must add exactly one command
/// whose reply is not ignored.
pub struct Batch {
    cluster: bool,
    /// slot → (positions of its commands, its pipeline).
    parts: BTreeMap<u16, (Vec<usize>, Pipeline)>,
    len: usize,
}

impl Batch {
    pub fn new(conn: &RedisConn) -> Self {
        Self { cluster: matches!(conn, RedisConn::Cluster(_)), parts: BTreeMap::new(), len: 0 }
    }

    /// The pipeline to add the command on `key` to.
    pub fn on(&mut self, key: &str) -> &mut Pipeline {
        let slot = if self.cluster { super::keys::key_slot(key) } else { 0 };
        let (positions, pipe) = self.parts.entry(slot).or_insert_with(|| (Vec::new(), redis::pipe()));
        positions.push(self.len);
        self.len += 1;
        pipe
    }

    pub async fn query<T: FromRedisValue>(&self, conn: &RedisConn) -> RedisResult<Vec<T>> {
        let replies = try_join_all(self.parts.values().map(|(_, pipe)| {
            let mut conn = conn.clone();
            async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
        }))
        .await?;
        let mut out: Vec<Option<Value>> = vec![None; self.len];
        for ((positions, _), values) in self.parts.values().zip(replies) {
            for (position, value) in positions.iter().zip(values) {
                out[*position] = Some(value);
            }
        }
        out.into_iter().map(|v| T::from_redis_value(v.unwrap_or(Value::Nil)).map_err(Into::into)).collect()
    }
}
