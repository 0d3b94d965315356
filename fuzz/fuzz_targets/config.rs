//! Any bytes as a config file: parsing and validation never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = toml::from_str::<Config>(text)
    {
        let _ = config.validate();
    }
});
