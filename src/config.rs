//! Gateway configuration: a TOML file, then `SWITCHBOARD_*` environment variables and flags on top
//! (clap reads both; a flag wins over its variable, either wins over the file). Over 400 lines
//! because it declares every setting with its doc comment and default; the only logic is
//! `validate`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::SchedulerConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listener: `/ws/node`, `/ws/session`, `/livez`, `/readyz`.
    pub listen: SocketAddr,
    /// Redis (`redis://host:port/db`). `switchboard dev` starts a private one when absent.
    pub redis_url: Option<String>,
    /// This gateway's id; random when absent.
    pub gateway_id: Option<String>,
    /// When set, nodes must present it (`token` in node_register or `Authorization: Bearer`).
    pub node_token: Option<String>,
    /// Slots of a node that does not send `max_concurrent_jobs`.
    pub default_capacity: u32,
    /// Upper bound of `max_concurrent_jobs`.
    pub max_capacity: u32,
    /// Largest WebSocket message; a larger one closes the socket with code 1009.
    pub max_frame_bytes: usize,
    /// Largest base64 audio (or text) of one utterance; larger gets PAYLOAD_TOO_LARGE.
    pub max_payload_bytes: usize,
    /// Most language pairs one node may declare (`asr × semantic`, or `language_pairs`); the
    /// `auto>tgt` pools derived from them come on top.
    pub max_language_pairs: usize,
    /// Time a new socket has to send its first message.
    pub first_message_timeout_ms: u64,
    /// Messages queued to one socket before it counts as stuck and is closed.
    pub outbox_capacity: usize,
    /// Messages per second one connection may send (burst: one second's worth); more are dropped
    /// with `RATE_LIMITED`. 0 = unlimited.
    pub max_messages_per_second: u32,
    /// Open sockets per client address; more get HTTP 429. Behind a load balancer that does not
    /// keep client addresses, every connection has its address: raise it or set 0 (unlimited).
    pub max_connections_per_address: u32,
    /// How long shutdown waits for sockets and in-flight work.
    pub shutdown_grace_ms: u64,
    /// A room without activity (joins, leaves, utterances) for this long is gone.
    pub room_idle_ttl_ms: u64,
    /// Members per room.
    pub room_max_members: u32,
    /// Failed room joins a connection may make per minute before RATE_LIMITED (codes are 6 digits;
    /// this keeps them from being guessed).
    pub room_failed_joins_per_minute: u32,
    /// WebRTC signals (`webrtc_offer`/`answer`/`ice`) a connection may relay per second (the burst
    /// too); more get `room_error RATE_LIMITED`. A member joining a full room sends one offer and a
    /// few ICE candidates per other member.
    pub room_signals_per_second: u32,
    /// Largest `sdp` / `candidate` of one signal, as JSON (a browser's audio offer is 2–6 KiB).
    pub room_signal_max_bytes: usize,
    pub log_format: LogFormat,
    /// Admin listener: the admin API (policies), `/livez`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin API; without one, the API is read-only.
    pub admin_token: Option<String>,
    pub scheduler: SchedulerConfig,
    pub policy: PolicyConfig,
    pub sessions: SessionsConfig,
    pub gateways: GatewaysConfig,
    pub audio: AudioConfig,
}

/// Client sessions: resume and result ordering (docs/rooms.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// A dropped session can be resumed this long; it keeps its room meanwhile and the frames
    /// produced for it wait in its backlog.
    pub resume_grace_ms: u64,
    /// Most frames kept for a detached session (the oldest go first).
    pub backlog: u32,
    /// A result held behind a missing earlier one is released after this long, the missing one
    /// reported as `missing_result{reason:"gap_timeout"}`.
    pub result_gap_timeout_ms: u64,
    /// An outcome awaited this long is looked up in Redis, and again every this long: once all
    /// its tasks have ended (or are gone) for one more round without it arriving, it is reported
    /// as `missing_result{reason:"outcome_unavailable"}` — it was lost with a gateway that died
    /// while it held it.
    pub outcome_audit_ms: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self { resume_grace_ms: 30_000, backlog: 256, result_gap_timeout_ms: 3_000, outcome_audit_ms: 5_000 }
    }
}

/// Gateways side by side: presence, inboxes, takeover of a dead one (docs/operations.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaysConfig {
    /// Presence refresh; a gateway silent for 3 intervals is taken for dead and taken over.
    /// The same tick checks this gateway's rooms for expiry.
    pub heartbeat_interval_ms: u64,
    /// Entries an inbox stream keeps (approximately) before the oldest are trimmed.
    pub inbox_maxlen: u64,
    /// How long after its death a gateway's inbox is still claimed by the others.
    pub dead_retention_ms: u64,
}

impl Default for GatewaysConfig {
    fn default() -> Self {
        Self { heartbeat_interval_ms: 1_000, inbox_maxlen: 10_000, dead_retention_ms: 60_000 }
    }
}

/// Streaming audio (`audio_chunk`): where the gateway cuts utterances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// No chunk for this long ends the utterance and the turn.
    pub pause_ms: u64,
    /// An utterance this long is cut; the turn goes on (same `turn_id`, same node if it can).
    pub max_duration_ms: u64,
}

impl Default for AudioConfig {
    fn default() -> Self {
        // The fleet's clients stream ~256 ms chunks (with a network hiccup, two can arrive a second
        // apart) and end a turn themselves with `is_final`; their old scheduler cut after 3 s without
        // audio and at 10 s of speech, and its nodes are tuned for utterances of that length.
        Self { pause_ms: 3_000, max_duration_ms: 10_000 }
    }
}

/// Policies (docs/policies.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Watched directory with `node-selection.wasm` / `room-routing.wasm` / `admission.wasm`.
    pub dir: Option<PathBuf>,
    /// Deadline of one policy call.
    pub deadline_ms: u64,
    /// Linear memory one policy call may use.
    pub memory_mib: usize,
    /// How often a gateway checks Redis for versions pushed through the admin API.
    pub sync_interval_ms: u64,
    /// Operator parameters policies read with `config()`.
    pub config: BTreeMap<String, String>,
    /// When set, only versions with one of these sha256s load (pushed, watched or synced); the
    /// embedded defaults always do.
    pub pinned_sha256: Vec<String>,
    /// The breaker: a version that fails this many calls in a row (trap, deadline, invalid
    /// output) is not called for `breaker_cooldown_ms`; the default decides meanwhile. 0 = off.
    pub breaker_failures: u64,
    pub breaker_cooldown_ms: u64,
    /// Replay: one node-selection decision in `replay_every` is kept with its inputs, the newest
    /// `replay_samples` (0 keeps none).
    pub replay_every: u64,
    pub replay_samples: usize,
    /// When a canary is rolled back or promoted on its own: see `policy::CanaryLimits`.
    pub canary_min_calls: u64,
    pub canary_max_fallback_percent: f64,
    pub canary_max_p99_us: u64,
    pub canary_max_failure_points: f64,
    pub canary_max_result_p99_ratio: f64,
    pub canary_result_p99_slack_ms: u64,
    /// Promote a canary that decided this many calls within every limit; 0 = only `policy promote`.
    pub canary_promote_after: u64,
}

impl PolicyConfig {
    pub fn canary_limits(&self) -> crate::policy::CanaryLimits {
        crate::policy::CanaryLimits {
            min_calls: self.canary_min_calls,
            max_fallback_percent: self.canary_max_fallback_percent,
            max_p99_us: self.canary_max_p99_us,
            max_failure_points: self.canary_max_failure_points,
            max_result_p99_ratio: self.canary_max_result_p99_ratio,
            result_p99_slack_ms: self.canary_result_p99_slack_ms,
            promote_after: self.canary_promote_after,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let canary = crate::policy::CanaryLimits::default();
        Self {
            dir: None,
            deadline_ms: 5,
            memory_mib: 16,
            sync_interval_ms: 500,
            config: BTreeMap::new(),
            pinned_sha256: Vec::new(),
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
            replay_every: 16,
            replay_samples: 256,
            canary_min_calls: canary.min_calls,
            canary_max_fallback_percent: canary.max_fallback_percent,
            canary_max_p99_us: canary.max_p99_us,
            canary_max_failure_points: canary.max_failure_points,
            canary_max_result_p99_ratio: canary.max_result_p99_ratio,
            canary_result_p99_slack_ms: canary.result_p99_slack_ms,
            canary_promote_after: canary.promote_after,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            redis_url: None,
            gateway_id: None,
            node_token: None,
            default_capacity: 4,
            max_capacity: 1024,
            max_frame_bytes: 16 << 20,
            max_payload_bytes: 8 << 20,
            max_language_pairs: 256,
            first_message_timeout_ms: 10_000,
            outbox_capacity: 1024,
            max_messages_per_second: 1_000,
            max_connections_per_address: 1_024,
            shutdown_grace_ms: 5_000,
            room_idle_ttl_ms: 30 * 60_000,
            room_max_members: 16,
            room_failed_joins_per_minute: 5,
            room_signals_per_second: 100,
            room_signal_max_bytes: 16 * 1024,
            log_format: LogFormat::Text,
            admin_listen: "127.0.0.1:9090".parse().expect("valid address"),
            admin_token: None,
            scheduler: SchedulerConfig::default(),
            policy: PolicyConfig::default(),
            sessions: SessionsConfig::default(),
            gateways: GatewaysConfig::default(),
            audio: AudioConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Settings that flags and `SWITCHBOARD_*` variables may override.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Address of the public listener.
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Redis URL.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// This gateway's id.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Token nodes must present.
    #[arg(long, env = "SWITCHBOARD_NODE_TOKEN", hide_env_values = true)]
    pub node_token: Option<String>,
    /// Redis key prefix.
    #[arg(long, env = "SWITCHBOARD_PREFIX")]
    pub prefix: Option<String>,
    /// Number of cells (docs/scaling.md).
    #[arg(long, env = "SWITCHBOARD_CELLS")]
    pub cells: Option<u32>,
    /// Job deadline before a new attempt, in ms.
    #[arg(long, env = "SWITCHBOARD_JOB_TIMEOUT_MS")]
    pub job_timeout_ms: Option<u64>,
    /// Wait for a free slot before NO_AVAILABLE_NODE, in ms.
    #[arg(long, env = "SWITCHBOARD_DISPATCH_WAIT_MS")]
    pub dispatch_wait_ms: Option<u64>,
    /// Node heartbeat interval, in ms.
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Log format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Address of the admin listener.
    #[arg(long, env = "SWITCHBOARD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token of the admin API.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Watched policy directory.
    #[arg(long, env = "SWITCHBOARD_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Open sockets per client address (0 = unlimited).
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<u32>,
    /// Messages per second per connection (0 = unlimited).
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGES_PER_SECOND")]
    pub max_messages_per_second: Option<u32>,
}

impl Config {
    /// The file (when given), then the overrides, then validation.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    pub fn apply(&mut self, o: &Overrides) {
        let s = &mut self.scheduler;
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = &o.redis_url {
            self.redis_url = Some(v.clone());
        }
        if let Some(v) = &o.gateway_id {
            self.gateway_id = Some(v.clone());
        }
        if let Some(v) = &o.node_token {
            self.node_token = Some(v.clone());
        }
        if let Some(v) = &o.prefix {
            s.prefix = v.clone();
        }
        if let Some(v) = o.cells {
            s.cells = v;
        }
        if let Some(v) = o.job_timeout_ms {
            s.job_timeout_ms = v;
        }
        if let Some(v) = o.dispatch_wait_ms {
            s.dispatch_wait_ms = v;
        }
        if let Some(v) = o.heartbeat_interval_ms {
            s.heartbeat_interval_ms = v;
        }
        if let Some(v) = o.log_format {
            self.log_format = v;
        }
        if let Some(v) = o.admin_listen {
            self.admin_listen = v;
        }
        if let Some(v) = &o.admin_token {
            self.admin_token = Some(v.clone());
        }
        if let Some(v) = &o.policy_dir {
            self.policy.dir = Some(v.clone());
        }
        if let Some(v) = o.max_connections_per_address {
            self.max_connections_per_address = v;
        }
        if let Some(v) = o.max_messages_per_second {
            self.max_messages_per_second = v;
        }
    }

    /// The effective settings as TOML, secrets replaced by `"<set>"`.
    pub fn describe(&self) -> String {
        let mut shown = self.clone();
        let hide = |s: &mut Option<String>| {
            if s.is_some() {
                *s = Some("<set>".into());
            }
        };
        hide(&mut shown.node_token);
        hide(&mut shown.admin_token);
        if let Some(url) = &mut shown.redis_url
            && let Some((scheme, rest)) = url.split_once("://")
            && let Some((_, host)) = rest.rsplit_once('@')
        {
            *url = format!("{scheme}://<credentials>@{host}");
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("(cannot show the config: {e})"))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.scheduler;
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if s.prefix.is_empty() || s.prefix.contains(['{', '}', ':']) {
            return bad("scheduler.prefix must be non-empty without `{`, `}` or `:`");
        }
        if !(1..=1024).contains(&s.cells) {
            return bad("scheduler.cells must be between 1 and 1024");
        }
        if s.max_attempts == 0 || s.candidates == 0 || s.sweep_limit == 0 {
            return bad("scheduler.max_attempts, candidates and sweep_limit must be at least 1");
        }
        if s.heartbeat_interval_ms == 0 || s.job_timeout_ms == 0 || s.sweep_interval_ms == 0 {
            return bad("scheduler intervals and timeouts must be positive");
        }
        if s.max_waiting_per_tenant == 0
            || s.tenant_weights.values().any(|w| !(w.is_finite() && *w > 0.0))
            || s.tenant_bands.values().any(|b| *b > 9)
        {
            return bad(
                "scheduler.max_waiting_per_tenant must be at least 1, tenant_weights positive, tenant_bands 0 to 9",
            );
        }
        if self.default_capacity == 0 || self.default_capacity > self.max_capacity {
            return bad("default_capacity must be between 1 and max_capacity");
        }
        if self.policy.deadline_ms == 0 || self.policy.memory_mib == 0 || self.policy.sync_interval_ms == 0 {
            return bad("policy.deadline_ms, memory_mib and sync_interval_ms must be positive");
        }
        if self.policy.memory_mib << 20 > crate::policy::MAX_MEMORY_BYTES {
            return bad("policy.memory_mib must be at most 64");
        }
        if self.gateways.heartbeat_interval_ms == 0 || self.sessions.backlog == 0 {
            return bad("gateways.heartbeat_interval_ms and sessions.backlog must be positive");
        }
        if self.audio.pause_ms == 0 || self.audio.max_duration_ms == 0 {
            return bad("audio.pause_ms and audio.max_duration_ms must be positive");
        }
        if self.max_payload_bytes > self.max_frame_bytes {
            return bad("max_payload_bytes must not exceed max_frame_bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's example config parses and validates (it is what operators copy).
    #[test]
    fn readme_example_is_a_valid_config() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("its end");
        let config: Config = toml::from_str(&readme[start..end]).expect("the example parses");
        config.validate().expect("the example is valid");
        assert_eq!(config.policy.config["default_region"], "eu-west");
    }
}
