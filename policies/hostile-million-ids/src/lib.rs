//! Test policy: returns a million ids.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct Hostile;

impl Guest for Hostile {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let _ = task;
        let first = candidates.first().map(|n| n.id.clone()).unwrap_or_default();
        Ok(vec![first; 1_000_000])
    }
}

export!(Hostile);
