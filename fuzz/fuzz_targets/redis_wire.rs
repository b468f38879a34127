//! Messages from the Redis channel, on any bytes: no panic, and whatever
//! decodes as a channel broadcast encodes and decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = fawkes_redis::wire::decode(data) {
        let again = fawkes_redis::wire::decode(&fawkes_redis::wire::encode(&msg).expect("a decoded message encodes"))
            .expect("an encoded message decodes");
        assert_eq!(again, msg);
    }
});
