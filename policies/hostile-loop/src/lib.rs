//! Test policy: spins forever; the host's epoch deadline must stop it.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct Hostile;

impl Guest for Hostile {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let _ = (task, candidates);
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Hostile);
