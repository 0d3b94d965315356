//! Admission: the terms a new task waits on under load — its band and weight in the fair queue and
//! its tenant's cap on running tasks — or its rejection (docs/overload.md). The configuration
//! decides (`[scheduler] tenant_weights`, `tenant_bands`, `tenant_max_running`) unless an
//! admission policy is loaded; only then does a task cost a read of its tenant's counts and a call.

use super::{AppState, Metrics};
use crate::policy::{AdmissionDecision, convert};
use crate::store::{Admission, CellKeys, Result, TaskSpec};

/// What admission decided for a new task.
pub enum Admitted {
    /// On these terms (`None`: the configuration's for its tenant).
    On(Option<Admission>),
    /// Turned away, with the policy's reason.
    Rejected(String),
}

impl AppState {
    /// Asks the admission policy about a new task of cell `cell`, with its tenant's and pool's
    /// counts there.
    pub(super) async fn admit_task(&self, cell: &CellKeys, spec: &TaskSpec) -> Result<Admitted> {
        if !self.policies.admission_in_use() {
            return Ok(Admitted::On(None));
        }
        Metrics::inc(&self.metrics.dispatch_script_calls);
        let load = self.store.tenant_load(cell, spec.tenant_id.as_deref(), &spec.pool()).await?;
        Ok(match self.policies.admit(&convert::admission_request(spec, &load)) {
            AdmissionDecision::Configured => Admitted::On(None),
            AdmissionDecision::Admit(terms) => Admitted::On(Some(Admission {
                weight: terms.weight,
                band: u32::from(terms.band),
                max_running: terms.max_running,
            })),
            AdmissionDecision::Reject(reason) => Admitted::Rejected(reason),
        })
    }
}
