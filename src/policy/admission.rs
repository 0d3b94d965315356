//! The admission role's calls: whether a new task needs the policy at all, the decision with
//! its fallback, shadow and samples (docs/overload.md).

use std::sync::Arc;

use super::{
    AdmissionDecision, AdmissionRequest, Loaded, Policies, canary_or_active, count_agreement, host,
    off_worker_if_slow, replay,
};

impl Policies {
    /// Whether a new task needs the admission policy: only when a custom version is active, or
    /// runs as shadow or canary. The embedded default answers `configured` to every task, so
    /// without one the gateway neither reads the tenant's state nor calls it.
    pub fn admission_in_use(&self) -> bool {
        let slot = &self.admission;
        !Arc::ptr_eq(&slot.active.load(), &slot.default)
            || slot.shadow.load().is_some()
            || slot.canary.load().is_some()
    }

    /// How a new task is admitted. A version that fails the call falls back to the default
    /// (`configured`), like the other roles.
    pub fn admit(&self, request: &AdmissionRequest) -> AdmissionDecision {
        let slot = &self.admission;
        let run = |l: &Loaded| {
            let (out, us) = host::timed(|| off_worker_if_slow(l, || self.host.admit(&l.compiled, request)));
            l.stats.record(us);
            out
        };
        let key = format!("{}:{}:{}", request.session_id, request.utterance_index, request.tgt_lang);
        let deciding = canary_or_active(slot, &key);
        let decision = self.with_fallback(slot, &deciding, run).unwrap_or(AdmissionDecision::Configured);
        if let Some(shadow) = slot.shadow.load_full()
            && let Some(theirs) = self.guarded(&shadow, &run)
        {
            count_agreement(&shadow, theirs.is_ok_and(|theirs| theirs == decision));
        }
        self.admission_samples.offer(|| replay::AdmissionSample::new(request, &decision));
        decision
    }

    /// The kept admission decisions (`policy replay`).
    pub fn admission_samples(&self) -> Vec<replay::AdmissionSample> {
        self.admission_samples.list()
    }
}
