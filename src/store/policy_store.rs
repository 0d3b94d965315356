//! Policy versions pushed through the admin API, stored in Redis under the `{policy}` tag so every
//! gateway can load them: each role has a state hash (active sha, shadow sha, version counter), a
//! history of earlier active shas for rollback, and one blob per sha.

use std::collections::HashMap;

use serde::Deserialize;

use super::{Result, Store};

/// History entries kept per role (how many rollbacks are possible).
const HISTORY: u32 = 16;
/// Lifecycle events kept per role (pushes, promotions, rollbacks, canaries ended).
const EVENTS: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySlot {
    Active,
    Shadow,
    /// Decides `share` percent of the calls (by task), watched and rolled back on its own.
    Canary {
        share: u32,
    },
}

/// What ends a canary (`end_canary`): it goes away, or it becomes the active version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryEnd {
    RollBack,
    Promote,
}

/// One change of a role's policies, as logged by the scripts (newest first in `policy_events`).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct PolicyEvent {
    pub at_ms: u64,
    /// `active`, `shadow`, `canary`, `canary_off`, `canary_promote` or `rollback`.
    pub change: String,
    pub sha256: String,
    /// `admin`, or the gateway that decided on its own.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
enum CanaryReportReply {
    Ok {
        // cjson encodes an empty table as `{}`.
        #[serde(default)]
        totals: HashMap<String, u64>,
    },
    Stale,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RollbackReply {
    Ok { active: String, version: u64 },
    Empty,
}

impl Store {
    /// Stores `bytes` (when given) and makes `sha256` the role's active, shadow or canary version
    /// (an operator's change, logged as by `admin`).
    pub async fn set_policy(
        &self,
        role: &str,
        slot: PolicySlot,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<SetPolicyReply> {
        let (change, share) = match slot {
            PolicySlot::Active => ("active", 0),
            PolicySlot::Shadow => ("shadow", 0),
            PolicySlot::Canary { share } => ("canary", share),
        };
        self.change_policy(role, change, sha256, bytes, share, "", "admin").await
    }

    /// Ends the canary `sha256` (if it still is the role's canary), noting why and who (`admin`
    /// or a gateway id): every gateway stops giving it calls, or makes it active. `Ok(false)` when
    /// another gateway ended it first or it was replaced.
    pub async fn end_canary(
        &self,
        role: &str,
        sha256: &str,
        end: CanaryEnd,
        reason: &str,
        by: &str,
    ) -> Result<bool> {
        let change = match end {
            CanaryEnd::RollBack => "canary_off",
            CanaryEnd::Promote => "canary_promote",
        };
        let reply = self.change_policy(role, change, sha256, b"", 0, reason, by).await?;
        Ok(matches!(reply, SetPolicyReply::Ok { .. }))
    }

    #[allow(clippy::too_many_arguments)] // one per ARGV of set_policy.lua, named
    async fn change_policy(
        &self,
        role: &str,
        change: &str,
        sha256: &str,
        bytes: &[u8],
        share: u32,
        reason: &str,
        by: &str,
    ) -> Result<SetPolicyReply> {
        let k = &self.policy_keys;
        let mut inv = self.scripts.set_policy.prepare_invoke();
        inv.key(k.state(role)).key(k.history(role)).key(k.blob(sha256)).key(k.events(role));
        inv.key(k.canary_totals(role));
        inv.arg(change).arg(sha256).arg(bytes).arg(HISTORY).arg(share).arg(reason);
        inv.arg(crate::protocol::now_ms()).arg(by).arg(EVENTS);
        self.call("set_policy", &inv).await
    }

    pub async fn rollback_policy(&self, role: &str) -> Result<RollbackReply> {
        let k = &self.policy_keys;
        let mut inv = self.scripts.rollback_policy.prepare_invoke();
        inv.key(k.state(role)).key(k.history(role)).key(k.events(role));
        inv.arg(crate::protocol::now_ms()).arg("admin").arg(EVENTS);
        self.call("rollback_policy", &inv).await
    }

    /// Adds `counts` (this gateway's since its last report) to the fleet's totals for the role's
    /// canary `sha256`; the totals, or `None` when that is no longer the role's canary.
    pub async fn canary_report(
        &self,
        role: &str,
        sha256: &str,
        counts: &[(String, u64)],
        ttl_ms: u64,
    ) -> Result<Option<HashMap<String, u64>>> {
        let k = &self.policy_keys;
        let mut inv = self.scripts.canary_report.prepare_invoke();
        inv.key(k.state(role)).key(k.canary_totals(role));
        inv.arg(sha256).arg(ttl_ms);
        for (field, count) in counts {
            inv.arg(field).arg(count);
        }
        match self.call("canary_report", &inv).await? {
            CanaryReportReply::Ok { totals } => Ok(Some(totals)),
            CanaryReportReply::Stale => Ok(None),
        }
    }

    /// The role's logged changes, newest first.
    pub async fn policy_events(&self, role: &str) -> Result<Vec<PolicyEvent>> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.policy_keys.events(role))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        Ok(raw.iter().filter_map(|e| serde_json::from_str(e).ok()).collect())
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
