//! Tokens made by real Phoenix 1.7.24 (tests/data/phoenix_token.json):
//! each verifies to its data, and signing the same data with the same
//! inputs gives the same token, byte for byte.
#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fawkes_token::{sign, term_to_json, verify, Key, MaxAge, SignOptions, VerifyError, VerifyOptions};
use serde_json::{json, Value};

fn vectors() -> (String, Vec<Value>) {
    let v: Value = serde_json::from_str(include_str!("data/phoenix_token.json")).unwrap();
    (v["secret_key_base"].as_str().unwrap().to_owned(), v["vectors"].as_array().unwrap().clone())
}

#[test]
fn every_phoenix_token_verifies_to_its_data() {
    let (secret, vectors) = vectors();
    for v in vectors {
        let token = v["token"].as_str().unwrap();
        assert_eq!(
            verify::<Value>(&secret, v["salt"].as_str().unwrap(), Some(token), &VerifyOptions::default()),
            Ok(v["data"].clone()),
            "{token}"
        );
    }
}

/// The vectors record the `signed_at` given to Phoenix.Token.sign, which
/// Phoenix takes in seconds and stores times 1000 as milliseconds.
#[test]
fn signing_the_same_inputs_gives_the_same_tokens() {
    let (secret, vectors) = vectors();
    for v in vectors {
        let opts = SignOptions { signed_at_ms: None, max_age: MaxAge::Seconds(v["max_age_s"].as_f64().unwrap()) }
            .signed_at_seconds(v["signed_at_ms"].as_f64().unwrap());
        let token = sign(&secret, v["salt"].as_str().unwrap(), &v["data"], &opts).unwrap();
        assert_eq!(token, v["token"].as_str().unwrap());
        // what Phoenix stored: {data, signed_at * 1000, max_age}
        let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
        let stored = &payload[payload.len() - 5..];
        assert_eq!(stored[0], 98, "max_age is an integer");
        assert!(term_to_json(&payload).is_err(), "the envelope is a tuple, not data");
    }
}

#[test]
fn a_token_is_valid_up_to_its_max_age_inclusive() {
    let key = Key::derive("0123456789abcdefghijklmnop", "salt");
    let signed = 1_700_000_000_000u64;
    let t = key
        .sign(&json!({"u": 1}), &SignOptions { signed_at_ms: Some(signed), max_age: MaxAge::Seconds(60.0) })
        .unwrap();
    let at = |now: u64, max_age: Option<MaxAge>| {
        key.verify::<Value>(Some(&t), &VerifyOptions { max_age, now_ms: Some(now) })
    };
    assert_eq!(at(signed + 60_000, None), Ok(json!({"u": 1})));
    assert_eq!(at(signed + 60_001, None), Err(VerifyError::Expired));
    assert_eq!(at(signed + 10_001, Some(MaxAge::Seconds(10.0))), Err(VerifyError::Expired));
    assert_eq!(at(u64::MAX, Some(MaxAge::Infinity)), Ok(json!({"u": 1})));
    assert_eq!(at(signed, Some(MaxAge::Seconds(0.0))), Err(VerifyError::Expired));
    let forever = key.sign(&json!(1), &SignOptions { signed_at_ms: Some(0), max_age: MaxAge::Infinity }).unwrap();
    assert_eq!(key.verify::<Value>(Some(&forever), &VerifyOptions::default()), Ok(json!(1)));
}

#[test]
fn tampering_and_malformed_tokens_are_invalid() {
    let secret = "0123456789abcdefghijklmnop";
    let t = sign(secret, "s", &json!("data"), &SignOptions::default()).unwrap();
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(b"\x83m\x00\x00\x00\x01x");
    for bad in [
        parts.join("."),
        format!("{t}x"),
        format!("{t}.x"),
        "a.b".into(),
        "".into(),
        t.replace("SFMyNTY", "SFMyNTZ"),
        "SFMyNTY.!!.!!".into(),
    ] {
        assert_eq!(
            verify::<Value>(secret, "s", Some(&bad), &VerifyOptions::default()),
            Err(VerifyError::Invalid),
            "{bad}"
        );
    }
    assert_eq!(verify::<Value>("short", "s", Some(&t), &VerifyOptions::default()), Err(VerifyError::Invalid));
    assert!(sign("short", "s", &json!(1), &SignOptions::default()).is_err());
}

#[test]
fn hs384_hs512_and_legacy_envelopes_verify() {
    use hmac::{Hmac, Mac};
    let secret = "0123456789abcdefghijklmnop";
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret.as_bytes(), b"s", 1000, &mut key);
    let now = 1_700_000_000_000u64;
    // {data, signed_ms} (legacy, 1 day) with an HS512 header
    let mut payload = vec![131u8, 104, 2];
    payload.extend_from_slice(&fawkes_token::json_to_term(&json!("legacy"))[1..]);
    payload.extend_from_slice(&fawkes_token::json_to_term(&json!(now))[1..]);
    let input = format!("SFM1MTI.{}", URL_SAFE_NO_PAD.encode(&payload));
    let mut m = <Hmac<sha2::Sha512> as Mac>::new_from_slice(&key).unwrap();
    m.update(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()));
    let opts = VerifyOptions { max_age: None, now_ms: Some(now + 86_400_000) };
    assert_eq!(verify::<Value>(secret, "s", Some(&token), &opts), Ok(json!("legacy")));
    let late = VerifyOptions { max_age: None, now_ms: Some(now + 86_400_001) };
    assert_eq!(verify::<Value>(secret, "s", Some(&token), &late), Err(VerifyError::Expired));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn data() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1.0e9f64..1.0e9).prop_map(Value::from),
            "\\PC{0,10}".prop_map(Value::from)
        ];
        leaf.prop_recursive(3, 20, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("\\PC{0,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect()))
            ]
        })
    }

    proptest! {
        #[test]
        fn sign_then_verify_gives_the_data_back(d in data()) {
            let key = Key::derive("0123456789abcdefghijklmnop", "p");
            let t = key.sign(&d, &SignOptions::default()).unwrap();
            prop_assert_eq!(key.verify::<Value>(Some(&t), &VerifyOptions::default()), Ok(d));
        }

        #[test]
        fn verify_never_panics(s in "\\PC{0,80}", b in prop::collection::vec(any::<u8>(), 0..80)) {
            let key = Key::derive("0123456789abcdefghijklmnop", "p");
            let _ = key.verify::<Value>(Some(&s), &VerifyOptions::default());
            let t = format!("SFMyNTY.{}.x", URL_SAFE_NO_PAD.encode(&b));
            prop_assert_eq!(key.verify::<Value>(Some(&t), &VerifyOptions::default()), Err(VerifyError::Invalid));
            let _ = term_to_json(&b);
        }
    }
}

/// Typed data: a struct signs to the same bytes as its JSON form (so Phoenix
/// reads it as the map it would have signed), and comes back as the struct;
/// a genuine token whose data is another shape is `Data`, not `Invalid`.
#[test]
fn typed_data_signs_as_its_json_and_verifies_back() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Claims {
        user_id: u64,
        admin: bool,
    }
    let secret = "typed data secret key base, long enough";
    let opts = SignOptions { signed_at_ms: Some(1_700_000_000_000), max_age: MaxAge::Seconds(60.0) };
    let typed = sign(secret, "s", &Claims { user_id: 7, admin: true }, &opts).unwrap();
    let untyped = sign(secret, "s", &json!({"user_id": 7, "admin": true}), &opts).unwrap();
    assert_eq!(typed, untyped);
    let at = VerifyOptions { max_age: None, now_ms: Some(1_700_000_001_000) };
    assert_eq!(verify(secret, "s", Some(&typed), &at), Ok(Claims { user_id: 7, admin: true }));
    assert_eq!(verify::<String>(secret, "s", Some(&typed), &at), Err(VerifyError::Data));
    assert_eq!(verify::<Claims>(secret, "t", Some(&typed), &at), Err(VerifyError::Invalid));
}
