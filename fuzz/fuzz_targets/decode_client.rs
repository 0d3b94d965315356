//! Any bytes as a client frame: decoding never panics, and whatever decodes is a known type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::protocol::{DecodeError, FromClient, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match decode::<FromClient>(text, FromClient::TYPES) {
        Ok(_) | Err(DecodeError::Malformed(_) | DecodeError::MissingType | DecodeError::UnknownType(_)) => {}
        Err(DecodeError::Binary) => unreachable!("text frames never decode as binary"),
    }
});
