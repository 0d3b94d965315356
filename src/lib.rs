//! Switchboard: a scheduler gateway for live speech translation.
//!
//! Nodes and clients connect over WebSocket ([`gateway`]); every scheduling transition is one Lua
//! script in Redis ([`store`]); node choice goes through [`policy`]. See docs/ for the model.

// Replies and messages are short-lived values moved once; boxing their big variants buys nothing.
#![allow(clippy::large_enum_variant)]

pub mod admin_client;
pub mod config;
pub mod devredis;
pub mod gateway;
pub mod histogram;
pub mod policy;
pub mod protocol;
pub mod sim;
pub mod store;

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use config::LogFormat;

/// The handle that changes the log filter at run time (the admin API's log level).
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => {
            registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Json => {
            registry.with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)).try_init()
        }
    };
    if installed.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
}

/// Replaces the log filter (`RUST_LOG` syntax, e.g. `info,switchboard=debug`).
pub fn set_log_filter(directives: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
    let handle = LOG_FILTER.get().ok_or("logging is not initialized by this process")?;
    handle.reload(filter).map_err(|e| e.to_string())
}
