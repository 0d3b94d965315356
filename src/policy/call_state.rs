//! The store data of one policy call, and what a policy can call back: the host interface of
//! `wit/policy.wit` (`log`, `config`, `label`, `labels`, `language-pairs`, `raw-voice-off`) and the
//! memory limiter that caps it.

use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits};

use super::bindings::node_selection::switchboard::policy::host as wit_host;
use super::bindings::{LanguagePair, Level};
use super::host::{LOG_LINE_CHARS, NodeExtras};
use crate::protocol::clip;

/// The store data of one call.
pub struct CallState {
    /// The current call's candidates, for `label`, `labels`, `language-pairs`.
    pub(super) extras: Arc<Vec<NodeExtras>>,
    /// The current call's members' turned-off voices, for `raw-voice-off`.
    pub(super) voices_off: Arc<Vec<(String, Vec<String>)>>,
    pub(super) limits: StoreLimits,
    pub(super) config: Arc<Vec<(String, String)>>,
    pub(super) sha256: Arc<str>,
    pub(super) logs_left: u32,
    /// The largest linear memory the call asked for, in bytes.
    pub(super) peak_memory: usize,
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl wit_host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if self.logs_left == 0 {
            return;
        }
        self.logs_left -= 1;
        let message: String = clip(&message, LOG_LINE_CHARS);
        let sha = super::short(&self.sha256);
        match level {
            Level::Trace => tracing::trace!(policy.sha256 = sha, "{message}"),
            Level::Debug => tracing::debug!(policy.sha256 = sha, "{message}"),
            Level::Info => tracing::info!(policy.sha256 = sha, "{message}"),
            Level::Warn => tracing::warn!(policy.sha256 = sha, "{message}"),
            Level::Error => tracing::error!(policy.sha256 = sha, "{message}"),
        }
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.config.as_ref().clone()
    }

    fn label(&mut self, node: String, key: String) -> Option<String> {
        let extras = self.extras.iter().find(|e| e.id == node)?;
        extras.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    }

    fn labels(&mut self, node: String) -> Vec<(String, String)> {
        self.extras.iter().find(|e| e.id == node).map(|e| e.labels.clone()).unwrap_or_default()
    }

    fn language_pairs(&mut self, node: String) -> Vec<LanguagePair> {
        let Some(extras) = self.extras.iter().find(|e| e.id == node) else { return Vec::new() };
        extras
            .pairs
            .iter()
            .filter_map(|p| p.split_once('>'))
            .map(|(src, tgt)| LanguagePair { src: src.into(), tgt: tgt.into() })
            .collect()
    }

    fn raw_voice_off(&mut self, member: String) -> Vec<String> {
        self.voices_off.iter().find(|(m, _)| *m == member).map(|(_, off)| off.clone()).unwrap_or_default()
    }
}

impl super::bindings::node_selection::switchboard::policy::types::Host for CallState {}
