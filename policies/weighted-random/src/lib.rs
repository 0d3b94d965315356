//! Example: spread load by drawing nodes at random, each weighted by its free slots. A policy has
//! no clock or entropy (no WASI), so the draw is seeded from the task: the same task always ranks
//! the same way, and different tasks spread out.

wit_bindgen::generate!({ path: "../../wit", world: "node-selection" });

struct WeightedRandom;

impl Guest for WeightedRandom {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let mut seed = fnv1a(task.session_id.as_bytes()) ^ task.utterance_index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (task.attempt as u64) << 32;
        let mut pool: Vec<(&Node, u64)> =
            candidates.iter().map(|n| (n, n.capacity.saturating_sub(n.running) as u64)).collect();
        let mut ranked = Vec::with_capacity(pool.len());
        while !pool.is_empty() {
            let total: u64 = pool.iter().map(|(_, w)| w).sum();
            let index = if total == 0 {
                0
            } else {
                let mut pick = next(&mut seed) % total;
                pool.iter().position(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                }).unwrap_or(0)
            };
            ranked.push(pool.remove(index).0.id.clone());
        }
        Ok(ranked)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// xorshift64*.
fn next(state: &mut u64) -> u64 {
    let mut x = *state | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

export!(WeightedRandom);
