//! Every decoder, on any bytes: no panic, and whatever decodes re-encodes and
//! decodes to the same message.
#![no_main]

use fawkes_protocol::{Frame, Vsn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for vsn in Vsn::ALL {
        for frame in [Frame::text(data.to_vec()), Frame::binary(data.to_vec())] {
            if let Ok(msg) = vsn.decode(&frame) {
                let again = vsn.encode_client(&msg).expect("a decoded message encodes");
                assert_eq!(vsn.decode(&again).expect("and decodes again"), msg);
            }
            let _ = vsn.decode_server(&frame);
        }
    }
});
