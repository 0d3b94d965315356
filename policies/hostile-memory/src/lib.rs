//! Test policy: grows memory without bound; the host's memory cap must stop it.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct Hostile;

impl Guest for Hostile {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let _ = (task, candidates);
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(Vec::with_capacity(4 << 20));
            std::hint::black_box(&hoard);
        }
    }
}

export!(Hostile);
