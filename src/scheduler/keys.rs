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
    pub fn new(prefix: &str, cell: u32, cells: u32) -> Self {
        Self { base: format!("{prefix}:{{{}}}:", cell_tag(cell, cells)) }
    }

    /// The cell's hash tag (`c0-…`).
    pub fn tag(&self) -> &str {
        let start = self.base.find('{').map_or(0, |i| i + 1);
        let end = self.base.find('}').unwrap_or(self.base.len());
        &self.base[start..end]
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
    /// The load index of one language pair (`src>tgt`).
    pub fn load(&self, pair: &str) -> String {
        format!("{}load:{pair}", self.base)
    }
    pub fn task(&self, task_id: &str) -> String {
        format!("{}task:{task_id}", self.base)
    }
    pub fn payload(&self, task_id: &str) -> String {
        format!("{}payload:{task_id}", self.base)
    }
    pub fn job(&self, job_id: &str) -> String {
        format!("{}job:{job_id}", self.base)
    }
    pub fn deadlines(&self) -> String {
        format!("{}deadlines", self.base)
    }
    pub fn waiting(&self) -> String {
        format!("{}waiting", self.base)
    }
    pub fn sweep_lock(&self) -> String {
        format!("{}sweep_lock", self.base)
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
}

/// The hash tag of cell `cell` out of `cells`: `c<cell>-<n>` with the smallest `n` whose slot lies in
/// the middle half of the cell's share of the slot space. Bare `{0}`, `{1}`, … land wherever CRC16
/// puts them, often on one Redis Cluster primary; these spread over the primaries evenly.
pub fn cell_tag(cell: u32, cells: u32) -> String {
    let cells = cells.max(1);
    let width = SLOTS as u32 / cells;
    let lo = cell * width + width / 4;
    let hi = cell * width + 3 * width / 4;
    (0u32..)
        .map(|n| format!("c{cell}-{n}"))
        .find(|tag| (lo..=hi).contains(&(slot(tag) as u32)))
        .expect("some tag falls in every slot range")
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

    #[test]
    fn tags_spread_over_the_slot_space() {
        for cells in [1, 3, 16] {
            let width = SLOTS as u32 / cells;
            for cell in 0..cells {
                let s = slot(&cell_tag(cell, cells)) as u32;
                assert_eq!(s / width, cell, "cell {cell}/{cells} at slot {s}");
            }
        }
    }

    #[test]
    fn keys_carry_the_cell_tag() {
        let keys = CellKeys::new("sb", 0, 1);
        let tag = cell_tag(0, 1);
        assert_eq!(keys.node("n1"), format!("sb:{{{tag}}}:node:n1"));
        assert!(keys.load("en>zh").contains(&format!("{{{tag}}}")));
    }
}
