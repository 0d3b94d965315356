//! Switchboard: a scheduler gateway for live speech translation.
//!
//! Nodes and clients connect over WebSocket ([`gateway`]); every scheduling transition is one Lua
//! script in Redis ([`scheduler`]); node choice goes through [`policy`]. See docs/ for the model.

// Replies and messages are short-lived values moved once; boxing their big variants buys nothing.
#![allow(clippy::large_enum_variant)]

pub mod admin_client;
pub mod config;
pub mod devredis;
pub mod gateway;
pub mod histogram;
pub mod policy;
pub mod protocol;
pub mod scheduler;
pub mod sim;

use tracing_subscriber::EnvFilter;

use config::LogFormat;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
