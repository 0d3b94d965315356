//! Subcommands other than the gateway itself.

pub mod policy;
