//! What a policy returns is checked before it is used: a ranking names candidates, each once; routes
//! go to distinct valid languages and to members only. A failed check is the call's error.

use std::collections::HashSet;

use super::CallError;
use super::bindings::{AdmissionDecision, Member, Node, Route};
use crate::protocol::clip;

/// Sorted slices rather than hash sets: this runs on every dispatch, with a few dozen ids.
pub(super) fn validate_ranking(ranked: &[String], candidates: &[Node]) -> Result<(), CallError> {
    if ranked.len() > candidates.len() {
        return Err(CallError::InvalidOutput(format!(
            "{} ids for {} candidates",
            ranked.len(),
            candidates.len()
        )));
    }
    let mut known: Vec<&str> = candidates.iter().map(|n| n.id.as_str()).collect();
    known.sort_unstable();
    if let Some(id) = ranked.iter().find(|id| known.binary_search(&id.as_str()).is_err()) {
        return Err(CallError::InvalidOutput(format!("{:?} is not a candidate", clip(id, 64))));
    }
    let mut seen: Vec<&str> = ranked.iter().map(String::as_str).collect();
    seen.sort_unstable();
    if let Some(pair) = seen.windows(2).find(|w| w[0] == w[1]) {
        return Err(CallError::InvalidOutput(format!("{:?} is ranked twice", clip(pair[0], 64))));
    }
    Ok(())
}

pub(super) fn validate_routes(routes: &[Route], members: &[Member]) -> Result<(), CallError> {
    let known: HashSet<&str> = members.iter().map(|m| m.session_id.as_str()).collect();
    let mut langs = HashSet::new();
    if routes.len() > members.len() + 1 {
        return Err(CallError::InvalidOutput(format!(
            "{} routes for {} members",
            routes.len(),
            members.len()
        )));
    }
    for route in routes {
        if !crate::protocol::is_language_code(&route.tgt_lang) {
            return Err(CallError::InvalidOutput(format!(
                "invalid tgt-lang {:?}",
                clip(&route.tgt_lang, 64)
            )));
        }
        if !langs.insert(route.tgt_lang.as_str()) {
            return Err(CallError::InvalidOutput(format!("tgt-lang {:?} routed twice", route.tgt_lang)));
        }
        if route.recipients.is_empty() {
            return Err(CallError::InvalidOutput(format!("route to {:?} has no recipient", route.tgt_lang)));
        }
        if let Some(r) = route.recipients.iter().find(|r| !known.contains(r.as_str())) {
            return Err(CallError::InvalidOutput(format!("recipient {:?} is not a member", clip(r, 64))));
        }
    }
    Ok(())
}

/// Band 0 to 9, weight in (0, 1000] (a NaN is not), a cap of at least 1, a rejection's reason not
/// empty (it is clipped to a log line).
pub(super) fn validate_admission(decision: &AdmissionDecision) -> Result<(), CallError> {
    let invalid = |why: String| Err(CallError::InvalidOutput(why));
    match decision {
        AdmissionDecision::Configured => Ok(()),
        AdmissionDecision::Reject(reason) if reason.trim().is_empty() => {
            invalid("a rejection without a reason".into())
        }
        AdmissionDecision::Reject(_) => Ok(()),
        AdmissionDecision::Admit(a) if a.band > 9 => invalid(format!("band {} (0 to 9)", a.band)),
        AdmissionDecision::Admit(a) if !(a.weight > 0.0 && a.weight <= 1000.0) => {
            invalid(format!("weight {} (greater than 0, at most 1000)", a.weight))
        }
        AdmissionDecision::Admit(a) if a.max_running == Some(0) => invalid("max-running 0".into()),
        AdmissionDecision::Admit(_) => Ok(()),
    }
}
