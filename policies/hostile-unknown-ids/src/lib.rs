//! Test policy: ranks nodes that are not candidates.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct Hostile;

impl Guest for Hostile {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let _ = task;
        let mut ids: Vec<String> = candidates.iter().map(|n| n.id.clone()).collect();
        match ids.first_mut() {
            Some(first) => *first = "node-IMPOSTOR".into(),
            None => ids.push("node-IMPOSTOR".into()),
        }
        Ok(ids)
    }
}

export!(Hostile);
