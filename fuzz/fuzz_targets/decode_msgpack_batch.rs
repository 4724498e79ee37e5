//! Fuzzes the MessagePack batch decoder (binary frames of `pushwire.v1.msgpack`) and what
//! the server does next with a decoded publication: re-encode it for clients of both
//! encodings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushwire::protocol::Encoding;

mod common;

fuzz_target!(|frame: &[u8]| {
    common::decode_and_deliver(Encoding::Msgpack, frame);
});
