//! Test policy: misbehaves only on live inputs. The loader's smoke test uses a task with a tenant,
//! which it ranks like the default; a task without a tenant (what the tests' sessions send) traps.
//! The breaker and the canary's automatic rollback are tested with it.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct LiveTrap;

impl Guest for LiveTrap {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        if task.tenant_id.is_none() {
            core::arch::wasm32::unreachable()
        }
        Ok(candidates.into_iter().map(|n| n.id).collect())
    }
}

export!(LiveTrap);
