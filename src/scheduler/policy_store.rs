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
    /// Decides `share` percent of the calls (by task), watched and rolled back on its own.
    Canary {
        share: u32,
    },
}

/// A role's stored state; an empty sha means "none" (for `active`: the embedded default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    pub active: String,
    pub shadow: String,
    pub canary: String,
    /// Percent of the calls the canary decides.
    pub canary_share: u32,
    /// The last canary rolled back on its own, and why.
    pub canary_rolled_back: String,
    pub canary_reason: String,
    pub version: u64,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SetPolicyReply {
    Ok {
        version: u64,
    },
    MissingBlob,
    /// `canary_off` of a canary that is no longer the role's.
    Stale,
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
        let (name, share) = match slot {
            PolicySlot::Active => ("active", 0),
            PolicySlot::Shadow => ("shadow", 0),
            PolicySlot::Canary { share } => ("canary", share),
        };
        inv.arg(name).arg(sha256).arg(bytes).arg(HISTORY).arg(share).arg("");
        self.call("set_policy", &inv).await
    }

    /// Ends the canary `sha256` (if it still is the role's canary), noting why: every gateway
    /// stops giving it calls. `Ok(false)` when another gateway ended it first or it was replaced.
    pub async fn end_canary(&self, role: &str, sha256: &str, reason: &str) -> Result<bool> {
        let k = &self.policy_keys;
        let mut inv = self.scripts.set_policy.prepare_invoke();
        inv.key(k.state(role)).key(k.history(role)).key(k.blob(sha256));
        inv.arg("canary_off").arg(sha256).arg("").arg(HISTORY).arg(0).arg(reason);
        let reply: SetPolicyReply = self.call("set_policy", &inv).await?;
        Ok(matches!(reply, SetPolicyReply::Ok { .. }))
    }

    pub async fn rollback_policy(&self, role: &str) -> Result<RollbackReply> {
        let k = &self.policy_keys;
        let mut inv = self.scripts.rollback_policy.prepare_invoke();
        inv.key(k.state(role)).key(k.history(role));
        self.call("rollback_policy", &inv).await
    }

    pub async fn policy_state(&self, role: &str) -> Result<PolicyState> {
        let mut conn = self.conn.clone();
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.policy_keys.state(role))
            .arg(&[
                "active",
                "shadow",
                "canary",
                "canary_share",
                "canary_rolled_back",
                "canary_reason",
                "version",
            ])
            .query_async(&mut conn)
            .await?;
        let text = |i: usize| fields.get(i).cloned().flatten().unwrap_or_default();
        Ok(PolicyState {
            active: text(0),
            shadow: text(1),
            canary: text(2),
            canary_share: text(3).parse().unwrap_or(0),
            canary_rolled_back: text(4),
            canary_reason: text(5),
            version: text(6).parse().unwrap_or(0),
        })
    }

    pub async fn policy_blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET").arg(self.policy_keys.blob(sha256)).query_async(&mut conn).await?)
    }
}
