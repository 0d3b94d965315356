//! Subcommands other than the gateway itself.

pub mod bench;
pub mod fixtures;
pub mod policy;
pub mod scaffold;
pub mod sim;
pub mod soak;
