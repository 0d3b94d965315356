//! Test policy: traps (unreachable) on every call.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct Hostile;

impl Guest for Hostile {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let _ = (task, candidates);
        core::arch::wasm32::unreachable()
    }
}

export!(Hostile);
