//! Fuzzes the JSON batch decoder (text frames of `pushwire.v1.json`) and what the server
//! does next with a decoded publication: re-encode it for clients of both encodings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushwire::protocol::Encoding;

mod common;

fuzz_target!(|frame: &[u8]| {
    common::decode_and_deliver(Encoding::Json, frame);
});
