//! Example admission policy: people talking to each other in a room go before one-way
//! captioning, and trial tenants share what is left at half weight, with at most 2 tasks running.
//!
//! - a task of a room utterance: band 0 (its listeners are waiting to answer);
//! - a one-way task outside a room (captioning, dubbing): band 2;
//! - anything else: band 1;
//! - a trial tenant (its id starts with `trial-`, or is listed in `[policy.config]`
//!   `trial_tenants = "a,b"`): weight 0.5 and at most `trial_max_running` (default 2) running
//!   tasks per cell; rejected outright when it already has `trial_max_waiting` (default 20) tasks
//!   waiting, so a trial cannot fill the queue;
//! - every other tenant: weight 1, no cap.

wit_bindgen::generate!({ path: "../../wit", world: "admission" });

use switchboard::policy::host::config;

struct InteractiveFirst;

fn setting(settings: &[(String, String)], key: &str) -> Option<String> {
    settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

impl Guest for InteractiveFirst {
    fn admit(request: AdmissionRequest) -> Result<AdmissionDecision, String> {
        let settings = config();
        let tenant = request.tenant_id.as_deref().unwrap_or("");
        let listed = setting(&settings, "trial_tenants")
            .is_some_and(|list| list.split(',').any(|t| t.trim() == tenant && !tenant.is_empty()));
        let trial = tenant.starts_with("trial-") || listed;
        let number = |key: &str, default: u32| {
            setting(&settings, key).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
        };
        if trial && request.tenant_waiting >= number("trial_max_waiting", 20) {
            return Ok(AdmissionDecision::Reject(format!(
                "trial tenant {tenant} already has {} utterances waiting",
                request.tenant_waiting
            )));
        }
        let band = if request.room_code.is_some() {
            0
        } else if request.mode == Mode::OneWay {
            2
        } else {
            1
        };
        Ok(AdmissionDecision::Admit(Terms {
            band,
            weight: if trial { 0.5 } else { 1.0 },
            max_running: trial.then(|| number("trial_max_running", 2)),
        }))
    }
}

export!(InteractiveFirst);
