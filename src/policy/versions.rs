//! Versions of a policy: loaded (compiled, type-checked and smoke-tested, or rejected with a
//! reason) and put in a role's slot — active, shadow or canary.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use super::{
    AdmissionRequest, CallError, Candidates, Compiled, LoadError, Policies, Role, RoomView, Stats, samples,
    sha256_hex, short,
};
use crate::protocol::now_ms;

const SMOKE_DEADLINE: std::time::Duration = std::time::Duration::from_millis(50);

/// One loaded version of a policy.
pub struct Loaded {
    pub compiled: Compiled,
    /// Where it came from: `embedded`, `file:<path>`, `admin`.
    pub source: String,
    pub loaded_at_ms: u64,
    pub stats: Stats,
}

impl Loaded {
    pub fn new(compiled: Compiled, source: &str) -> Self {
        Self { compiled, source: source.to_owned(), loaded_at_ms: now_ms(), stats: Stats::default() }
    }
}

/// Why a version was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("failed its smoke test: {0}")]
    Smoke(CallError),
    #[error("sha256 {0} is not in policy.pinned_sha256")]
    NotPinned(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub sha256: String,
    pub source: String,
    pub reason: String,
    pub at_ms: u64,
}

impl Policies {
    /// Compiles, type-checks and smoke-tests a version. CPU-heavy (compilation): call it off the
    /// async runtime.
    pub fn prepare(&self, role: Role, bytes: &[u8], source: &str) -> Result<Arc<Loaded>, Rejected> {
        if !self.pinned.is_empty() {
            let sha = sha256_hex(bytes);
            if !self.pinned.contains(&sha) {
                return Err(Rejected::NotPinned(sha));
            }
        }
        let compiled = self.host.compile(role, bytes)?;
        self.smoke(&compiled).map_err(Rejected::Smoke)?;
        Ok(Arc::new(Loaded::new(compiled, source)))
    }

    /// Runs a new version on sample inputs. Its deadline is ten times the live one (at least 50 ms):
    /// the smoke test checks behaviour, and a busy machine must not reject a sound version; a
    /// version that never returns still fails it.
    fn smoke(&self, compiled: &Compiled) -> Result<(), CallError> {
        let host = self.host.with_deadline((self.host.limits().deadline * 10).max(SMOKE_DEADLINE));
        match compiled.role {
            Role::NodeSelection => {
                host.select(compiled, &samples::task(), &samples::nodes(3))?;
                host.select(compiled, &samples::task(), &Candidates::default())?;
            }
            Role::RoomRouting => {
                let members = samples::members();
                host.route(compiled, &samples::utterance(), &members, &samples::availability())?;
                let alone = RoomView::from(members.members[..1].to_vec());
                host.route(compiled, &samples::utterance(), &alone, &[])?;
            }
            Role::Admission => {
                host.admit(compiled, &samples::admission_request())?;
                let alone =
                    AdmissionRequest { tenant_id: None, room_code: None, ..samples::admission_request() };
                host.admit(compiled, &alone)?;
            }
        }
        Ok(())
    }

    /// Loads `bytes` as the active version of `role`, or records why not and keeps the old one.
    pub fn load(&self, role: Role, bytes: &[u8], source: &str) -> Result<Arc<Loaded>, Rejected> {
        match self.prepare(role, bytes, source) {
            Ok(loaded) => {
                self.activate(role, loaded.clone());
                Ok(loaded)
            }
            Err(rejected) => {
                self.reject(role, bytes, source, &rejected);
                Err(rejected)
            }
        }
    }

    pub fn activate(&self, role: Role, loaded: Arc<Loaded>) {
        let slot = self.slot(role);
        tracing::info!(role = role.as_str(), policy.sha256 = %short(&loaded.compiled.sha256), source = %loaded.source, "Policy active.");
        slot.active.store(loaded);
    }

    pub fn reject(&self, role: Role, bytes: &[u8], source: &str, why: &Rejected) {
        let rejection = Rejection {
            sha256: sha256_hex(bytes),
            source: source.to_owned(),
            reason: why.to_string(),
            at_ms: now_ms(),
        };
        tracing::warn!(role = role.as_str(), source, reason = %rejection.reason, "Policy rejected; the active one stays.");
        self.slot(role).last_rejection.store(Some(Arc::new(rejection)));
    }

    /// Makes the embedded default active again.
    pub fn reset(&self, role: Role) {
        let slot = self.slot(role);
        self.activate(role, slot.default.clone());
    }

    pub fn set_shadow(&self, role: Role, shadow: Option<Arc<Loaded>>) {
        self.slot(role).shadow.store(shadow);
    }

    /// Gives `canary` `share` percent of the role's calls (none: no canary).
    pub fn set_canary(&self, role: Role, canary: Option<Arc<Loaded>>, share: u32) {
        let slot = self.slot(role);
        slot.canary_share.store(share.min(100), Relaxed);
        if let Some(c) = &canary {
            tracing::info!(role = role.as_str(), policy.sha256 = %short(&c.compiled.sha256), share, "Policy canary.");
        }
        slot.canary.store(canary);
    }
}
