//! Token verification on any input: no panic; anything that is not a token
//! signed with the key is invalid; the term decoder never panics, what it
//! decodes encodes and decodes to the same term, and what the encoder wrote
//! is written back byte for byte.
#![no_main]

use fawkes_token::{term_to_json, Key, VerifyError, VerifyOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key::derive("fuzzing-secret-key-base-0123456789", "salt");
    if let Ok(s) = std::str::from_utf8(data) {
        // the data type does not matter: no random string passes the MAC
        let r = key.verify::<u8>(Some(s), &VerifyOptions::default());
        assert!(r.is_err(), "a random string verified");
        assert_ne!(r, Err(VerifyError::Missing));
    }
    let _ = term_to_json(data);
    if let Ok(t) = fawkes_etf::decode(data) {
        let _ = t.to_json_lenient();
        let bytes = fawkes_etf::encode(&t);
        let again = fawkes_etf::decode(&bytes).expect("an encoded term decodes");
        assert_eq!(fawkes_etf::encode(&again), bytes);
        assert_eq!(again, t);
    }
});
