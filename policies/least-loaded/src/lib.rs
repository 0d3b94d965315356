//! The default node-selection policy: the turn's affinity node while it has a free slot (the node
//! holding a long utterance's audio must get its continuations), then nodes whose required services
//! are all ready, then the lowest `running / capacity`, then the freshest heartbeat.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct LeastLoaded;

impl Guest for LeastLoaded {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let affinity = task.affinity_node.as_deref();
        // Each node's sort key once, not once per comparison.
        let mut keyed: Vec<(bool, bool, f64, u64, String)> = candidates
            .into_iter()
            .map(|n| {
                let pinned = Some(n.id.as_str()) == affinity && n.running < n.capacity;
                let ready = n.ready_services.contains(task.required_services);
                let load = n.running as f64 / n.capacity.max(1) as f64;
                (!pinned, !ready, load, n.heartbeat_age_ms, n.id)
            })
            .collect();
        keyed.sort_by(|a, b| {
            a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2)).then(a.3.cmp(&b.3))
        });
        Ok(keyed.into_iter().map(|k| k.4).collect())
    }
}

export!(LeastLoaded);
