//! Redis key names (docs/redis.md). Every key is `<prefix>:{<tag>}:<name>`: one hash tag per cell
//! for node, task and job state. Scripts get these as KEYS and derive the rest from the same tag.

/// Redis Cluster hash slots.
const SLOTS: u16 = 16384;

/// The keys of one cell.
#[derive(Debug, Clone)]
pub struct CellKeys {
    /// `<prefix>:{<tag>}:`, the start of every key of this cell.
    base: String,
}

impl CellKeys {
    /// The keys of cell number `cell`.
    pub fn new(prefix: &str, cell: u32) -> Self {
        Self::from_tag(prefix, &cell_tag(cell))
    }

    /// The keys of the cell with this tag (as named by a job id).
    pub fn from_tag(prefix: &str, tag: &str) -> Self {
        Self { base: format!("{prefix}:{{{tag}}}:") }
    }

    /// The cell's hash tag (`c0-…`).
    pub fn tag(&self) -> &str {
        let start = self.base.find('{').map_or(0, |i| i + 1);
        let end = self.base.find('}').unwrap_or(self.base.len());
        &self.base[start..end]
    }

    /// The cell's number (`c<number>-…`), as policies see it.
    pub fn number(&self) -> u32 {
        self.tag().trim_start_matches('c').split('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    pub fn node(&self, id: &str) -> String {
        format!("{}node:{id}", self.base)
    }
    /// Placeholder for "no node": keeps KEYS positions fixed and the cell's slot.
    pub fn no_node(&self) -> String {
        format!("{}node:", self.base)
    }
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.base)
    }
    pub fn alive(&self) -> String {
        format!("{}alive", self.base)
    }
    /// The pool of one language pair (`src>tgt`): the set of capability classes serving it.
    pub fn pool(&self, pair: &str) -> String {
        format!("{}pool:{pair}", self.base)
    }
    /// The load index of one capability class (lua/lib.lua, "class").
    pub fn class(&self, class: &str) -> String {
        format!("{}class:{class}", self.base)
    }
    pub fn task(&self, task_id: &str) -> String {
        format!("{}task:{task_id}", self.base)
    }
    pub fn deadlines(&self) -> String {
        format!("{}deadlines", self.base)
    }
    pub fn waiting(&self) -> String {
        format!("{}waiting", self.base)
    }
    /// The fair queue of a pool's waiting tasks, and the cell's clock and counts (lua/lib.lua,
    /// `enqueue`).
    pub fn queue(&self, pool: &str) -> String {
        format!("{}queue:{pool}", self.base)
    }
    /// A tenant's tasks held by its cap on running tasks (lua/lib.lua, `at_cap`).
    pub fn held(&self, tenant: &str) -> String {
        format!("{}held:{tenant}", self.base)
    }
    pub fn fair(&self) -> String {
        format!("{}fair", self.base)
    }
    pub fn sweep_lock(&self) -> String {
        format!("{}sweep_lock", self.base)
    }
    /// Set by gateway `gateway` and kept alive by it: gone means Redis lost this cell's data.
    pub fn intact_mark(&self, gateway: &str) -> String {
        format!("{}mark:{gateway}", self.base)
    }
}

/// The keys of one room: its own tag, `{r:<code>}`.
#[derive(Debug, Clone)]
pub struct RoomKeys {
    pub room: String,
    pub members: String,
}

impl RoomKeys {
    pub fn new(prefix: &str, code: &str) -> Self {
        Self {
            room: format!("{prefix}:{{r:{code}}}:room"),
            members: format!("{prefix}:{{r:{code}}}:members"),
        }
    }

    /// A WebRTC offer from `from` to `to` not answered yet (room_signal.lua).
    pub fn offer(&self, from: &str, to: &str) -> String {
        format!("{}offer:{from}>{to}", self.members.trim_end_matches("members"))
    }
}

/// The keys of one client session: its own tag, `{s:<id>}`.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    pub session: String,
    /// Frames produced while the session was detached, delivered when it resumes.
    pub backlog: String,
}

impl SessionKeys {
    pub fn new(prefix: &str, session_id: &str) -> Self {
        Self {
            session: format!("{prefix}:{{s:{session_id}}}:session"),
            backlog: format!("{prefix}:{{s:{session_id}}}:backlog"),
        }
    }
}

/// The keys of one gateway: its own tag, `{g:<id>}`.
#[derive(Debug, Clone)]
pub struct GatewayKeys {
    /// The stream other gateways append this gateway's frames to.
    pub inbox: String,
    /// The sessions attached here (for the gateway that takes over when this one dies).
    pub sessions: String,
}

impl GatewayKeys {
    pub fn new(prefix: &str, gateway_id: &str) -> Self {
        Self {
            inbox: format!("{prefix}:{{g:{gateway_id}}}:inbox"),
            sessions: format!("{prefix}:{{g:{gateway_id}}}:sessions"),
        }
    }
}

/// The gateway registry: its own tag, `{gw}`.
#[derive(Debug, Clone)]
pub struct RegistryKeys {
    /// Live gateways → presence deadline.
    pub gateways: String,
    /// Gateways found dead → when.
    pub dead: String,
}

impl RegistryKeys {
    pub fn new(prefix: &str) -> Self {
        Self { gateways: format!("{prefix}:{{gw}}:gateways"), dead: format!("{prefix}:{{gw}}:dead") }
    }
}

/// The keys of stored policy versions: their own tag, `{policy}`.
#[derive(Debug, Clone)]
pub struct PolicyKeys {
    base: String,
}

impl PolicyKeys {
    pub fn new(prefix: &str) -> Self {
        Self { base: format!("{prefix}:{{policy}}:") }
    }
    pub fn state(&self, role: &str) -> String {
        format!("{}state:{role}", self.base)
    }
    pub fn history(&self, role: &str) -> String {
        format!("{}history:{role}", self.base)
    }
    pub fn blob(&self, sha256: &str) -> String {
        format!("{}blob:{sha256}", self.base)
    }
    pub fn events(&self, role: &str) -> String {
        format!("{}events:{role}", self.base)
    }
    pub fn canary_totals(&self, role: &str) -> String {
        format!("{}canary_totals:{role}", self.base)
    }
}

/// Slots the first cells' tags aim at. Found by search (docs/scaling.md): for every n ≤ 12, the
/// first n lie in n different parts of the slot space split evenly in n (as `redis-cli --cluster
/// create` splits it among n primaries). So with n cells on n primaries each primary has one cell,
/// and adding a cell never renames the existing ones: a cell's tag depends on its number only.
const CELL_SLOTS: [u16; 12] = [682, 8564, 12515, 4281, 14449, 6924, 10332, 2194, 15701, 5709, 11195, 2854];

/// The hash tag of cell `cell`: `c<cell>-<n>` with the smallest `n` whose slot lies within 16 of
/// the cell's target slot. Bare `{0}`, `{1}`, … land wherever CRC16 puts them, often several on one
/// primary; these spread. Cells past the table aim along the golden-ratio sequence.
pub fn cell_tag(cell: u32) -> String {
    let target = match CELL_SLOTS.get(cell as usize) {
        Some(slot) => *slot as u32,
        None => ((cell as f64 * 0.618_033_988_75).fract() * SLOTS as f64) as u32,
    };
    (0u32..)
        .map(|n| format!("c{cell}-{n}"))
        .find(|tag| (slot(tag) as u32).abs_diff(target) <= 16)
        .expect("some tag falls near every slot")
}

/// Whether `tag` has the form of a cell tag (`c<digits>-<digits>`): job ids name their cell's tag,
/// and a tag from a peer must not reach a key name unchecked.
pub fn is_cell_tag(tag: &str) -> bool {
    let Some((cell, n)) = tag.strip_prefix('c').and_then(|t| t.split_once('-')) else { return false };
    let digits = |s: &str| (1..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    digits(cell) && digits(n)
}

/// The slot of a key, by the Redis Cluster rule: its hash tag's when it has a non-empty `{…}`.
pub fn key_slot(key: &str) -> u16 {
    let tag = key
        .find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}').filter(|close| *close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key);
    slot(tag)
}

/// The Redis Cluster slot of a key's hash tag.
pub fn slot(tag: &str) -> u16 {
    crc16(tag.as_bytes()) % SLOTS
}

/// CRC16-CCITT (XModem), the checksum Redis Cluster uses for slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis_reference() {
        // From the Redis Cluster specification: CRC16 of "123456789" is 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    /// The slot ranges `redis-cli --cluster create` gives `n` primaries (clusterManagerCommandCreate).
    fn redis_cli_split(n: u32) -> Vec<(u32, u32)> {
        let per = SLOTS as f64 / n as f64;
        let (mut first, mut cursor, mut ranges) = (0u32, 0.0f64, Vec::new());
        for i in 0..n {
            let mut last = (cursor + per - 1.0).round() as u32;
            if last > SLOTS as u32 || i == n - 1 {
                last = SLOTS as u32 - 1;
            }
            last = last.max(first);
            ranges.push((first, last));
            first = last + 1;
            cursor += per;
        }
        ranges
    }

    #[test]
    fn n_cells_sit_on_n_distinct_primaries_for_every_n_up_to_12() {
        for n in 1..=CELL_SLOTS.len() as u32 {
            let ranges = redis_cli_split(n);
            let mut owners: Vec<usize> = (0..n)
                .map(|cell| {
                    let s = slot(&cell_tag(cell)) as u32;
                    ranges.iter().position(|(lo, hi)| (*lo..=*hi).contains(&s)).unwrap()
                })
                .collect();
            owners.sort();
            owners.dedup();
            assert_eq!(owners.len(), n as usize, "{n} cells on {n} primaries");
        }
    }

    #[test]
    fn cell_tags_are_recognised_and_nothing_else() {
        for cell in 0..40 {
            assert!(is_cell_tag(&cell_tag(cell)));
        }
        for bad in ["", "c", "c1", "c-1", "c1-", "x1-2", "c1-2}", "c1-2:x", "{c1-2}", "c1-2-3"] {
            assert!(!is_cell_tag(bad), "{bad}");
        }
    }

    #[test]
    fn key_slot_follows_the_hash_tag_rule() {
        assert_eq!(key_slot("sb:{c0-1}:node:x"), slot("c0-1"));
        assert_eq!(key_slot("plain"), slot("plain"));
        assert_eq!(key_slot("a{}b"), slot("a{}b"));
    }

    #[test]
    fn keys_carry_the_cell_tag() {
        assert_eq!(CellKeys::new("sb", 7).number(), 7);
        let keys = CellKeys::new("sb", 0);
        let tag = cell_tag(0);
        assert_eq!(keys.node("n1"), format!("sb:{{{tag}}}:node:n1"));
        assert!(keys.pool("en>zh").contains(&format!("{{{tag}}}")));
    }
}
