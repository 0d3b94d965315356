//! Any bytes as a node frame: decoding never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::protocol::{FromNode, decode};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode::<FromNode>(text, FromNode::TYPES);
    }
});
