//! The default node-selection policy: the turn's affinity node while it has a free slot (the node
//! holding a long utterance's audio must get its continuations), then nodes whose required services
//! are all ready, then the lowest `running / capacity`, then the freshest heartbeat.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct LeastLoaded;

impl Guest for LeastLoaded {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let affinity = task.affinity_node.as_deref();
        let ready = |n: &Node| {
            task.required_services.iter().all(|s| n.ready_services.iter().any(|r| r == s))
        };
        let load = |n: &Node| n.running as f64 / n.capacity.max(1) as f64;
        let mut ranked: Vec<&Node> = candidates.iter().collect();
        ranked.sort_by(|a, b| {
            let pinned = |n: &Node| Some(n.id.as_str()) == affinity && n.running < n.capacity;
            pinned(b)
                .cmp(&pinned(a))
                .then(ready(b).cmp(&ready(a)))
                .then(load(a).total_cmp(&load(b)))
                .then(a.heartbeat_age_ms.cmp(&b.heartbeat_age_ms))
        });
        Ok(ranked.into_iter().map(|n| n.id.clone()).collect())
    }
}

export!(LeastLoaded);
