//! Test policy: slow only on live inputs. The loader's smoke test uses a task with a tenant, which
//! it ranks at once; on a task without a tenant it spins until the host's deadline stops it. The
//! breaker's effect on throughput is measured with it (docs/policies.md).

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct LiveSlow;

impl Guest for LiveSlow {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let mut spins: u64 = 0;
        while task.tenant_id.is_none() {
            spins = spins.wrapping_add(1);
            core::hint::black_box(spins);
        }
        Ok(candidates.into_iter().map(|n| n.id).collect())
    }
}

export!(LiveSlow);
