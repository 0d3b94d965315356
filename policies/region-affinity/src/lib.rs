//! Example: prefer nodes whose `region` label is the tenant's region, least loaded first; spill over
//! to the other nodes when the region is full (they come after, least loaded first).
//!
//! Config (`[policy.config]`): `region.<tenant-id> = "<region>"` per tenant, and `default_region`
//! for tasks without a tenant or with an unmapped one.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

use switchboard::policy::host::{Level, config, label, log};

struct RegionAffinity;

impl Guest for RegionAffinity {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let settings = config();
        let lookup = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let region = task
            .tenant_id
            .as_deref()
            .and_then(|t| lookup(&format!("region.{t}")))
            .or_else(|| lookup("default_region"));
        let Some(region) = region else {
            log(Level::Debug, "no region for this task; least loaded overall");
            return Ok(rank(candidates.iter().collect()));
        };
        let in_region = |n: &Node| label(&n.id, "region").as_deref() == Some(region.as_str());
        let (home, away): (Vec<&Node>, Vec<&Node>) = candidates.iter().partition(|n| in_region(n));
        let mut ranked = rank(home);
        ranked.extend(rank(away));
        Ok(ranked)
    }
}

fn rank(mut nodes: Vec<&Node>) -> Vec<String> {
    let load = |n: &Node| n.running as f64 / n.capacity.max(1) as f64;
    nodes.sort_by(|a, b| load(a).total_cmp(&load(b)));
    nodes.into_iter().map(|n| n.id.clone()).collect()
}

export!(RegionAffinity);
