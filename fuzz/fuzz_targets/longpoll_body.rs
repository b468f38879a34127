//! The long-poll body parser on any bytes, both content types: no panic,
//! and every frame it yields goes through the V2 decoder without a panic.
#![no_main]

use bytes::Bytes;
use fawkes_protocol::longpoll::{decode_body, MAX_BATCH};
use fawkes_protocol::Vsn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    for ndjson in [true, false] {
        if let Ok(frames) = decode_body(ndjson, &body) {
            assert!(frames.len() <= MAX_BATCH);
            for f in &frames {
                let _ = Vsn::V2.decode(f);
                let _ = Vsn::V1.decode(f);
            }
        }
    }
});
