//! Gateway inboxes: one Redis stream per gateway (`<prefix>:{g:<id>}:inbox`) that other gateways
//! append frames to. The owner reads it with `XREADGROUP` on a dedicated connection that may block
//! (no response timeout), acknowledges each entry after the socket send, and whoever takes over a
//! dead gateway claims what it left (`XAUTOCLAIM`, then the entries never read).

use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::{Batch, RedisConn, Result, Store};

/// The consumer group every inbox has; each gateway reads as its own consumer.
const GROUP: &str = "gw";
/// Entries read or claimed per call.
const BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub id: String,
    /// The frame envelope (JSON), see `gateway::delivery`.
    pub payload: String,
}

/// This gateway's inbox, read on its own connection.
pub struct Inbox {
    conn: RedisConn,
    key: String,
    consumer: String,
    /// Entries delivered to this consumer before a restart are read again first.
    pending_first: bool,
}

impl Inbox {
    /// Waits up to `block` for entries (pending ones of an earlier run of this gateway first).
    pub async fn read(&mut self, block: Duration) -> Result<Vec<InboxEntry>> {
        if self.pending_first {
            let pending = self.read_from("0", None).await?;
            if !pending.is_empty() {
                return Ok(pending);
            }
            self.pending_first = false;
        }
        self.read_from(">", Some(block)).await
    }

    async fn read_from(&mut self, id: &str, block: Option<Duration>) -> Result<Vec<InboxEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.consumer).arg("COUNT").arg(BATCH);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(id);
        let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn).await?;
        Ok(entries(reply))
    }

    pub async fn ack(&mut self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: i64 =
            redis::cmd("XACK").arg(&self.key).arg(GROUP).arg(ids).query_async(&mut self.conn).await?;
        Ok(())
    }
}

fn entries(reply: Option<StreamReadReply>) -> Vec<InboxEntry> {
    reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).filter_map(entry).collect()
}

fn entry(id: StreamId) -> Option<InboxEntry> {
    let payload = id.get::<String>("m")?;
    Some(InboxEntry { id: id.id, payload })
}

impl Store {
    /// Opens `gateway`'s inbox on a dedicated connection (creating the stream and its group) whose
    /// reads may block up to `block`.
    pub async fn open_inbox(&self, gateway: &str, block: Duration) -> Result<Inbox> {
        let timeout = Duration::from_millis(self.config.redis_timeout_ms);
        let mut conn = self.target.connect_blocking(timeout, block).await?;
        let key = self.gateway_keys(gateway).inbox;
        create_group(&mut conn, &key).await?;
        Ok(Inbox { conn, key, consumer: gateway.to_owned(), pending_first: true })
    }

    /// Appends frame envelopes to gateways' inboxes, in order, in one pipeline; each stream is
    /// capped near `maxlen` entries.
    pub async fn append_to_inboxes(&self, frames: &[(&str, &str)], maxlen: u64) -> Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        // One stream's entries share a slot, so they keep their order in the batch.
        let mut batch = Batch::new(&self.conn);
        for (gateway, payload) in frames {
            let inbox = self.gateway_keys(gateway).inbox;
            batch
                .on(&inbox)
                .cmd("XADD")
                .arg(&inbox)
                .arg("MAXLEN")
                .arg("~")
                .arg(maxlen)
                .arg("*")
                .arg("m")
                .arg(*payload);
        }
        let _: Vec<redis::Value> = batch.query(&self.conn).await?;
        Ok(())
    }

    /// Takes what a dead gateway's inbox holds for `consumer`: entries it read but did not
    /// acknowledge (idle for `min_idle_ms` at least: an entry another claimer took just now is
    /// not taken again), and entries it never read. Each entry goes to one claimer.
    pub async fn claim_inbox(&self, dead: &str, consumer: &str, min_idle_ms: u64) -> Result<Vec<InboxEntry>> {
        let key = self.gateway_keys(dead).inbox;
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut start = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = match redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(&start)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut conn)
                .await
            {
                Ok(reply) => reply,
                // No stream or no group: the gateway never opened its inbox.
                Err(err) if err.code() == Some("NOGROUP") => return Ok(out),
                Err(err) => return Err(err.into()),
            };
            out.extend(reply.claimed.into_iter().filter_map(entry));
            if reply.next_stream_id == "0-0" {
                break;
            }
            start = reply.next_stream_id;
        }
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(BATCH)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .query_async(&mut conn)
                .await?;
            let batch = entries(reply);
            if batch.is_empty() {
                break;
            }
            out.extend(batch);
        }
        Ok(out)
    }

    /// Acknowledges entries claimed from another gateway's inbox.
    pub async fn ack_inbox(&self, gateway: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let key = self.gateway_keys(gateway).inbox;
        let _: i64 = redis::cmd("XACK").arg(key).arg(GROUP).arg(ids).query_async(&mut conn).await?;
        Ok(())
    }

    /// Deletes a long-dead gateway's keys.
    pub async fn forget_gateway(&self, gateway: &str) -> Result<()> {
        let k = self.gateway_keys(gateway);
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL").arg(k.inbox).arg(k.sessions).query_async(&mut conn).await?;
        Ok(())
    }
}

async fn create_group(conn: &mut RedisConn, key: &str) -> Result<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        other => Ok(other?),
    }
}
