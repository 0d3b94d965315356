//! Sessions and gateways in Redis: where each session is attached (so any gateway can route a
//! frame to it), its resume token and backlog, and the registry of live gateways. Sessions have
//! their own tag `{s:<id>}`, each gateway `{g:<id>}`, the registry `{gw}` (docs/redis.md).

use serde::Deserialize;

use super::{
    Batch, CellKeys, GatewayKeys, RegistryKeys, Result, SessionKeys, Store, StoreError, TaskRef, is_cell_tag,
};

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AttachReply {
    Attached {
        settings: String,
        #[serde(default)]
        room: String,
        #[serde(default, deserialize_with = "super::types::lua_list")]
        backlog: Vec<String>,
        #[serde(default)]
        previous_gateway: Option<String>,
    },
    Exists,
    Invalid,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SessionEnd {
    Ended { room: String },
    Stale,
}

/// Who may detach a session: the socket that attached it, or whoever takes over its dead gateway
/// (found dead at the given Redis time, ms: a session that gateway attached again since is kept).
#[derive(Debug, Clone, Copy)]
pub enum Fence<'a> {
    Conn(&'a str),
    Gateway(&'a str, u64),
}

/// Where a frame for a session goes (`session_route.lua`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SessionRoute {
    /// To the session's socket on this gateway.
    Attached { gateway: String },
    /// Into the detached session's backlog.
    Kept,
    /// Nowhere: no such session (or a hint for a detached one).
    Gone,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum SessionRoomReply {
    Ok,
    Gone,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum PresenceReply {
    Added,
    Present,
}

#[derive(Debug, Deserialize)]
pub struct ReapReply {
    pub at: u64,
    #[serde(deserialize_with = "super::types::lua_list")]
    pub reaped: Vec<String>,
    #[serde(deserialize_with = "super::types::lua_list")]
    pub dead: Vec<String>,
    #[serde(deserialize_with = "super::types::lua_list")]
    pub forgotten: Vec<String>,
}

/// Where a node is connected, from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    pub gateway: String,
    pub online: bool,
}

impl Store {
    pub fn session_keys(&self, session_id: &str) -> SessionKeys {
        SessionKeys::new(&self.config.prefix, session_id)
    }

    pub fn gateway_keys(&self, gateway_id: &str) -> GatewayKeys {
        GatewayKeys::new(&self.config.prefix, gateway_id)
    }

    fn registry_keys(&self) -> RegistryKeys {
        RegistryKeys::new(&self.config.prefix)
    }

    /// One `session_attach` call; an attached session joins `gateway`'s index.
    async fn attach(
        &self,
        mode: &str,
        session_id: &str,
        gateway: &str,
        conn: &str,
        token_sha: &str,
        settings: &str,
    ) -> Result<AttachReply> {
        let k = self.session_keys(session_id);
        let mut inv = self.scripts.session_attach.prepare_invoke();
        inv.key(&k.session).key(&k.backlog);
        inv.arg(mode).arg(gateway).arg(conn).arg(token_sha).arg(settings);
        let reply = self.call("session_attach", &inv).await?;
        if let AttachReply::Attached { previous_gateway, .. } = &reply {
            self.index_session(gateway, session_id, true).await?;
            if let Some(previous) = previous_gateway.as_deref().filter(|p| *p != gateway) {
                self.index_session(previous, session_id, false).await?;
            }
        }
        Ok(reply)
    }

    /// Records a new session attached to `gateway` through socket `conn`.
    pub async fn session_open(
        &self,
        session_id: &str,
        gateway: &str,
        conn: &str,
        token_sha: &str,
        settings: &str,
    ) -> Result<AttachReply> {
        self.attach("new", session_id, gateway, conn, token_sha, settings).await
    }

    /// Re-attaches a detached (or still attached elsewhere) session presenting its token.
    pub async fn session_resume(
        &self,
        session_id: &str,
        gateway: &str,
        conn: &str,
        token_sha: &str,
    ) -> Result<AttachReply> {
        self.attach("resume", session_id, gateway, conn, token_sha, "").await
    }

    /// Attaches a session again to the socket that still holds it (its gateway had been taken for
    /// dead, or Redis lost its record); returns the frames kept meanwhile, or `None` when another
    /// socket took it.
    pub async fn session_reattach(
        &self,
        session_id: &str,
        gateway: &str,
        conn: &str,
        token_sha: &str,
        settings: &str,
    ) -> Result<Option<Vec<String>>> {
        match self.attach("reattach", session_id, gateway, conn, token_sha, settings).await? {
            AttachReply::Attached { backlog, .. } => Ok(Some(backlog)),
            _ => Ok(None),
        }
    }

    /// Marks a session detached (resumable for `ttl_ms`). Returns the connection id that attached
    /// it (the fence of its `session_end`), or `None` when the fence no longer holds.
    pub async fn session_detach(
        &self,
        session_id: &str,
        fence: Fence<'_>,
        ttl_ms: u64,
    ) -> Result<Option<String>> {
        let k = self.session_keys(session_id);
        let (field, value, before) = match fence {
            Fence::Conn(conn) => ("conn", conn, String::new()),
            Fence::Gateway(gateway, at) => ("gateway", gateway, at.to_string()),
        };
        let mut inv = self.scripts.session_detach.prepare_invoke();
        inv.key(&k.session).key(&k.backlog);
        inv.arg(field).arg(value).arg(ttl_ms).arg(before);
        #[derive(Deserialize)]
        struct Reply {
            conn: Option<String>,
        }
        let reply: Reply = self.call("session_detach", &inv).await?;
        Ok(reply.conn)
    }

    /// Ends a session (`only_if_detached`: the resume grace is over); returns the room to leave.
    pub async fn session_end(
        &self,
        session_id: &str,
        conn: &str,
        only_if_detached: bool,
    ) -> Result<SessionEnd> {
        let k = self.session_keys(session_id);
        let mut inv = self.scripts.session_end.prepare_invoke();
        inv.key(&k.session).key(&k.backlog);
        inv.arg(conn).arg(if only_if_detached { "1" } else { "0" });
        self.call("session_end", &inv).await
    }

    pub async fn session_room(&self, session_id: &str, room: Option<&str>) -> Result<()> {
        let k = self.session_keys(session_id);
        let mut inv = self.scripts.session_room.prepare_invoke();
        inv.key(&k.session).arg(room.unwrap_or(""));
        // A session that is gone has nothing to record the room on: nothing to do either way.
        let _: SessionRoomReply = self.call("session_room", &inv).await?;
        Ok(())
    }

    /// The gateway's index of its sessions (one SADD/SREM: a single atomic command needs no
    /// script). Used only to find a dead gateway's sessions.
    async fn index_session(&self, gateway: &str, session_id: &str, add: bool) -> Result<()> {
        let key = self.gateway_keys(gateway).sessions;
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd(if add { "SADD" } else { "SREM" })
            .arg(key)
            .arg(session_id)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn unindex_session(&self, gateway: &str, session_id: &str) -> Result<()> {
        self.index_session(gateway, session_id, false).await
    }

    /// Up to `count` sessions of `gateway`'s index, removed from it.
    pub async fn pop_sessions(&self, gateway: &str, count: usize) -> Result<Vec<String>> {
        let key = self.gateway_keys(gateway).sessions;
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SPOP").arg(key).arg(count).query_async(&mut conn).await?)
    }

    /// Where each frame goes (one pipeline, in order).
    /// `keep` per frame: `Some(true)` keep whatever the state, `Some(false)` keep when detached,
    /// `None` never keep (a hint).
    /// A backlog holds at most `backlog` frames and lives `ttl_ms` after its last one.
    pub async fn route_sessions(
        &self,
        frames: &[(&str, &str, Option<bool>)],
        backlog: u32,
        ttl_ms: u64,
    ) -> Result<Vec<SessionRoute>> {
        let invocations: Vec<_> = frames
            .iter()
            .map(|(session_id, frame, keep)| {
                let k = self.session_keys(session_id);
                let mut inv = self.scripts.session_route.prepare_invoke();
                inv.key(&k.session).key(k.backlog);
                let keep = match keep {
                    Some(true) => "1",
                    Some(false) => "0",
                    None => "",
                };
                inv.arg(*frame).arg(keep).arg(backlog).arg(ttl_ms);
                (k.session, inv)
            })
            .collect();
        // One session's frames share a slot, so they keep their order in the batch.
        let replies: Vec<String> = self.batch_scripts(&invocations).await?;
        replies.iter().map(|raw| super::parse("session_route", raw)).collect()
    }

    /// Each node's gateway and whether it is online (one batch); nodes as (cell tag, node id).
    pub async fn node_routes(&self, nodes: &[(&str, &str)]) -> Result<Vec<Option<NodeRoute>>> {
        let mut batch = Batch::new(&self.conn);
        for (tag, id) in nodes {
            let key = CellKeys::from_tag(&self.config.prefix, tag).node(id);
            batch.on(&key).cmd("HMGET").arg(&key).arg("gateway").arg("state");
        }
        let rows: Vec<(Option<String>, Option<String>)> = batch.query(&self.conn).await?;
        Ok(rows
            .into_iter()
            .map(|(gateway, state)| {
                gateway.map(|gateway| NodeRoute { gateway, online: state.as_deref() == Some("online") })
            })
            .collect())
    }

    /// Whether each task has ended: `completed`, `failed` or no record left count as ended; a task
    /// that moved is looked up in the cell it moved to. A tag that is not a cell's counts as ended.
    pub async fn tasks_ended(&self, tasks: &[TaskRef]) -> Result<Vec<bool>> {
        let lookup = |refs: &[(usize, String, &str)]| {
            let mut batch = Batch::new(&self.conn);
            for (_, tag, id) in refs {
                let key = CellKeys::from_tag(&self.config.prefix, tag).task(id);
                batch.on(&key).cmd("GET").arg(&key);
            }
            batch
        };
        let mut ended = vec![true; tasks.len()];
        let mut refs: Vec<(usize, String, &str)> = tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| is_cell_tag(&t.cell))
            .map(|(i, t)| (i, t.cell.clone(), t.id.as_str()))
            .collect();
        for (i, _, _) in &refs {
            ended[*i] = false;
        }
        // A move is followed once (a task that moved again counts as running until next time).
        for _ in 0..2 {
            if refs.is_empty() {
                break;
            }
            let stored: Vec<Option<String>> = lookup(&refs).query(&self.conn).await?;
            let mut moved = Vec::new();
            for ((i, _, id), raw) in refs.into_iter().zip(stored) {
                let fields = raw.as_deref().and_then(super::inspect::task_fields);
                let state = fields.as_ref().and_then(|f| f.get("state").cloned());
                let moved_to = fields.as_ref().and_then(|f| f.get("moved_to").cloned());
                match (state.as_deref(), moved_to) {
                    (Some("moved"), Some(to)) if is_cell_tag(&to) => moved.push((i, to, id)),
                    (Some("completed" | "failed" | "moved") | None, _) => ended[i] = true,
                    (Some(_), _) => ended[i] = false,
                }
            }
            refs = moved;
        }
        Ok(ended)
    }

    /// Refreshes this gateway's presence; true when it was missing from the registry.
    pub async fn gateway_presence(&self, gateway: &str, window_ms: u64) -> Result<bool> {
        let k = self.registry_keys();
        let mut inv = self.scripts.gateway_presence.prepare_invoke();
        inv.key(&k.gateways).key(&k.dead).arg(gateway).arg(window_ms);
        let reply: PresenceReply = self.call("gateway_presence", &inv).await?;
        Ok(reply == PresenceReply::Added)
    }

    pub async fn gateway_reap(&self, limit: u32, retention_ms: u64) -> Result<ReapReply> {
        let k = self.registry_keys();
        let mut inv = self.scripts.gateway_reap.prepare_invoke();
        inv.key(&k.gateways).key(&k.dead).arg(limit).arg(retention_ms);
        self.call("gateway_reap", &inv).await
    }

    /// Which of these rooms still exist (one pipeline).
    pub async fn rooms_exist(&self, codes: &[&str]) -> Result<Vec<bool>> {
        let mut batch = Batch::new(&self.conn);
        for code in codes {
            let room = super::RoomKeys::new(&self.config.prefix, code).room;
            batch.on(&room).cmd("EXISTS").arg(&room);
        }
        Ok(batch.query(&self.conn).await?)
    }

    /// A member's record in a room, if it is still a member.
    pub async fn room_member(
        &self,
        code: &str,
        session_id: &str,
    ) -> Result<Option<crate::protocol::RoomMember>> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("HGET")
            .arg(super::RoomKeys::new(&self.config.prefix, code).members)
            .arg(session_id)
            .query_async(&mut conn)
            .await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Live gateways (id → presence deadline ms).
    pub async fn gateways(&self) -> Result<Vec<(String, u64)>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("ZRANGE")
            .arg(self.registry_keys().gateways)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?)
    }

    /// Runs script invocations in one batch (`first_key` of each: its slot); reloads the scripts
    /// once if Redis lost them.
    pub(crate) async fn batch_scripts<T: redis::FromRedisValue>(
        &self,
        invocations: &[(String, redis::ScriptInvocation<'_>)],
    ) -> Result<Vec<T>> {
        let build = || {
            let mut batch = Batch::new(&self.conn);
            for (first_key, inv) in invocations {
                batch.on(first_key).invoke_script(inv);
            }
            batch
        };
        match build().query(&self.conn).await {
            Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_scripts().await?;
                Ok(build().query(&self.conn).await?)
            }
            other => other.map_err(StoreError::from),
        }
    }
}
