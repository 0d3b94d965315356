//! Nodes in the store: registration, heartbeats, drain (by the node or an operator), and going
//! offline. Each is one script
//! (`lua/register_node.lua`, `heartbeat.lua`, `drain_node.lua`, `node_offline.lua`) in the node's
//! cell.

use super::{
    Batch, CapabilityUpdate, CellKeys, NodeRegistration, NodeReply, OfflineReply, RegisterReply, Result,
    Store, Usage,
};

impl Store {
    pub async fn register_node(&self, k: &CellKeys, node: &NodeRegistration) -> Result<RegisterReply> {
        let mut inv = self.scripts.register_node.prepare_invoke();
        inv.key(k.node(&node.id)).key(k.alive()).key(k.nodes());
        inv.arg(&node.id)
            .arg(node.presented_secret.as_deref().unwrap_or(""))
            .arg(&node.secret)
            .arg(&node.conn)
            .arg(&node.gateway)
            .arg(node.capacity)
            .arg(node.pairs.join(","))
            .arg(self.config.liveness_ms())
            .arg(node.ready.join(","))
            .arg(serde_json::to_string(&node.labels).expect("labels serialize"))
            .arg(node.info.to_string());
        self.call("register_node", &inv).await
    }

    pub async fn heartbeat(
        &self,
        k: &CellKeys,
        node_id: &str,
        conn_id: &str,
        usage: &Usage,
        update: &CapabilityUpdate,
    ) -> Result<NodeReply> {
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(k.node(node_id)).key(k.alive());
        inv.arg(node_id)
            .arg(conn_id)
            .arg(self.config.liveness_ms())
            .arg(usage.cpu)
            .arg(usage.gpu)
            .arg(usage.gpu_mem)
            .arg(usage.mem)
            .arg(usage.gpu_queue)
            .arg(update.pairs.as_ref().map_or("-".into(), |p| p.join(",")))
            .arg(update.ready.as_ref().map_or("-".into(), |r| r.join(",")));
        self.call("heartbeat", &inv).await
    }

    pub async fn drain_node(&self, k: &CellKeys, node_id: &str, conn_id: &str) -> Result<NodeReply> {
        let mut inv = self.scripts.drain_node.prepare_invoke();
        inv.key(k.node(node_id)).arg(node_id).arg(conn_id);
        self.call("drain_node", &inv).await
    }

    pub async fn node_offline(&self, k: &CellKeys, node_id: &str, conn_id: &str) -> Result<OfflineReply> {
        let mut inv = self.scripts.node_offline.prepare_invoke();
        inv.key(k.node(node_id));
        inv.arg(node_id).arg(conn_id).arg(self.config.node_retention_ms);
        self.call("node_offline", &inv).await
    }

    /// Drains a node on behalf of an operator: it takes no new jobs; its jobs in flight finish.
    pub async fn drain_node_by_operator(&self, node_id: &str) -> Result<bool> {
        let mut batch = Batch::new(&self.conn);
        for cell in self.cells() {
            batch.on(&cell.node(node_id)).cmd("HMGET").arg(cell.node(node_id)).arg("state").arg("conn");
        }
        let rows: Vec<(Option<String>, Option<String>)> = batch.query(&self.conn).await?;
        let online = rows
            .into_iter()
            .zip(self.cells())
            .find_map(|((state, conn), cell)| (state.as_deref() == Some("online")).then_some((cell, conn?)));
        let Some((cell, conn)) = online else { return Ok(false) };
        Ok(!matches!(self.drain_node(cell, node_id, &conn).await?, NodeReply::NotRegistered))
    }
}
