//! Policy versions pushed through the admin API, stored in Redis under the `{policy}` tag so every
//! gateway can load them: each role has a state hash (active sha, shadow sha, version counter), a
//! history of earlier active shas for rollback, and one blob per sha.

use serde::Deserialize;

use super::{MinimalSchedulerService, Result};

/// History entries kept per role (how many rollbacks are possible).
const HISTORY: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySlot {
    Active,
    Shadow,
}

/// A role's stored state; an empty sha means "none" (for `active`: the embedded default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    pub active: String,
    pub shadow: String,
    pub version: u64,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SetPolicyReply {
    Ok { version: u64 },
    MissingBlob,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RollbackReply {
    Ok { active: String, version: u64 },
    Empty,
}

impl MinimalSchedulerService {
    /// Stores `bytes` (when given) and makes `sha256` the role's active or shadow version.
    pub async fn set_policy(
        &self,
        role: &str,
        slot: PolicySlot,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<SetPolicyReply> {
        let k = &self.policy_keys;
        let mut inv = self.scripts.set_policy.prepare_invoke();
        inv.key(k.state(role)).key(k.history(role)).key(k.blob(sha256));
        inv.arg(match slot {
            PolicySlot::Active => "active",
            PolicySlot::Shadow => "shadow",
        })
        .arg(sha256)
        .arg(bytes)
        .arg(HISTORY);
        self.call("set_policy", &inv).await
    }

    pub async fn rollback_policy(&self, role: &str) -> Result<RollbackReply> {
        let k = &self.policy_keys;
        let mut inv = self.scripts.rollback_policy.prepare_invoke();
        inv.key(k.state(role)).key(k.history(role));
        self.call("rollback_policy", &inv).await
    }

    pub async fn policy_state(&self, role: &str) -> Result<PolicyState> {
        let mut conn = self.conn.clone();
        let (active, shadow, version): (Option<String>, Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.policy_keys.state(role))
            .arg(&["active", "shadow", "version"])
            .query_async(&mut conn)
            .await?;
        Ok(PolicyState {
            active: active.unwrap_or_default(),
            shadow: shadow.unwrap_or_default(),
            version: version.unwrap_or(0),
        })
    }

    pub async fn policy_blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET").arg(self.policy_keys.blob(sha256)).query_async(&mut conn).await?)
    }
}
