//! Phoenix.Token for Rust.
//!
//! Tokens signed here verify in Phoenix and the other way round, byte for
//! byte: the key is PBKDF2-HMAC-SHA256 of the secret key base and the salt
//! (1000 iterations, 32 bytes), the payload is the Erlang term
//! `{data, signed_at_ms, max_age_s}`, and the token is
//! `SFMyNTY.<payload>.<HMAC-SHA256>`, base64url without padding.
//!
//! The data is any `Serialize` value, carried as Erlang terms by way of
//! its JSON form: integers of every size, floats, strings,
//! `null`/`true`/`false` (as the atoms `nil`/`true`/`false`), lists and maps
//! with string keys. [`verify`] gives it back as any `Deserialize` type
//! (`serde_json::Value` to take whatever is there).
//!
//! In an application, the endpoint holds the secret key base
//! (`fawkes::Endpoint::set_secret_key_base`, then `endpoint.sign` and
//! `endpoint.verify`), as Phoenix's `Phoenix.Token.sign(MyEndpoint, ...)`.
//!
//! # Example
//!
//! ```
//! use fawkes_token::{sign, verify, SignOptions, VerifyError, VerifyOptions};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct User {
//!     user_id: u64,
//! }
//!
//! let secret = "a secret key base of at least twenty bytes";
//! let opts = VerifyOptions::default();
//! let token = sign(secret, "user socket", &User { user_id: 42 }, &SignOptions::default()).unwrap();
//! assert_eq!(verify(secret, "user socket", Some(&token), &opts), Ok(User { user_id: 42 }));
//! assert_eq!(verify::<User>(secret, "other salt", Some(&token), &opts), Err(VerifyError::Invalid));
//! assert_eq!(verify::<User>(secret, "user socket", None, &opts), Err(VerifyError::Missing));
//! // genuine, but not a `String`
//! assert_eq!(verify::<String>(secret, "user socket", Some(&token), &opts), Err(VerifyError::Data));
//! ```

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};

use fawkes_etf::Term;
pub use fawkes_etf::{json_to_term, term_to_json, TermError};

/// Phoenix's default `max_age`: one day.
pub const DEFAULT_MAX_AGE: MaxAge = MaxAge::Seconds(86_400.0);

/// The shortest secret key base Phoenix accepts.
pub const MIN_SECRET_LEN: usize = 20;

/// How long a token is valid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxAge {
    /// This many seconds after signing.
    Seconds(f64),
    /// Forever.
    Infinity,
}

/// Options of [`sign`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignOptions {
    /// When the token was signed, in milliseconds since the Unix epoch
    /// (default: now).
    pub signed_at_ms: Option<u64>,
    /// The max age stored in the token (default one day).
    pub max_age: MaxAge,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions { signed_at_ms: None, max_age: DEFAULT_MAX_AGE }
    }
}

impl SignOptions {
    /// Phoenix's `signed_at:` option, in seconds (Phoenix stores
    /// `trunc(seconds * 1000)` milliseconds).
    pub fn signed_at_seconds(mut self, seconds: f64) -> Self {
        self.signed_at_ms = Some((seconds * 1000.0).trunc() as u64);
        self
    }
}

/// Options of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VerifyOptions {
    /// Overrides the max age stored in the token.
    pub max_age: Option<MaxAge>,
    /// The current time in milliseconds (default: now).
    pub now_ms: Option<u64>,
}

/// Why a token was not accepted: Phoenix's three reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Genuine, but older than its max age.
    #[error("expired")]
    Expired,
    /// Not a token signed with this secret and salt, or malformed.
    #[error("invalid")]
    Invalid,
    /// Genuine and in date, but its data is not of the type asked for (not
    /// one of Phoenix's reasons: Phoenix's data is untyped).
    #[error("the token's data is not of the type asked for")]
    Data,
    /// No token at all.
    #[error("missing")]
    Missing,
}

/// Why a token could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The secret key base is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("the secret key base must be at least {MIN_SECRET_LEN} bytes")]
    SecretTooShort,
    /// A max age that is not finite.
    #[error("max_age must be a finite number of seconds or infinity")]
    MaxAge,
    /// The data's `Serialize` implementation failed (for example a map
    /// whose keys are not strings).
    #[error("the data cannot be serialized: {0}")]
    Data(String),
    /// There is no secret key base to sign with (an endpoint's was never
    /// set: `Endpoint::set_secret_key_base`).
    #[error("no secret key base: set the endpoint's with Endpoint::set_secret_key_base")]
    NoSecretKeyBase,
}

/// A key derived from a secret key base and a salt. Deriving costs 1000
/// PBKDF2 rounds: derive once and keep it, or use the free functions, which
/// cache a few keys.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

const HS256: &str = "SFMyNTY";
const HS384: &str = "SFMzODQ";
const HS512: &str = "SFM1MTI";

fn mac256(key: &[u8], input: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; this cannot fail.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn verify_mac(protected: &str, key: &[u8], input: &[u8], tag: &[u8]) -> bool {
    macro_rules! check {
        ($d:ty) => {
            match <Hmac<$d> as Mac>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(input);
                    m.verify_slice(tag).is_ok()
                }
                Err(_) => false,
            }
        };
    }
    match protected {
        HS256 => check!(Sha256),
        HS384 => check!(Sha384),
        HS512 => check!(Sha512),
        _ => false,
    }
}

impl Key {
    /// Derives the key for `salt`.
    pub fn derive(secret_key_base: &str, salt: &str) -> Key {
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(secret_key_base.as_bytes(), salt.as_bytes(), 1000, &mut key);
        Key(key)
    }

    /// Signs `data`.
    ///
    /// # Errors
    ///
    /// See [`SignError`].
    pub fn sign<T: Serialize + ?Sized>(&self, data: &T, opts: &SignOptions) -> Result<String, SignError> {
        let data = serde_json::to_value(data).map_err(|e| SignError::Data(e.to_string()))?;
        let signed = opts.signed_at_ms.unwrap_or_else(now_ms);
        let max_age = match opts.max_age {
            MaxAge::Infinity => Term::atom("infinity"),
            MaxAge::Seconds(s) if s.is_finite() && s.fract() == 0.0 && s.abs() < 9.0e15 => Term::Int(s as i128),
            MaxAge::Seconds(s) if s.is_finite() => Term::Float(s),
            MaxAge::Seconds(_) => return Err(SignError::MaxAge),
        };
        let payload =
            fawkes_etf::encode(&Term::Tuple(vec![Term::from_json(&data), Term::Int(i128::from(signed)), max_age]));
        let input = format!("{HS256}.{}", URL_SAFE_NO_PAD.encode(&payload));
        let tag = mac256(&self.0, input.as_bytes());
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag)))
    }

    /// Verifies `token` and returns its data as a `T`.
    ///
    /// # Errors
    ///
    /// [`VerifyError::Missing`] for `None`; [`VerifyError::Invalid`] for
    /// anything not signed with this key (or malformed);
    /// [`VerifyError::Expired`] for a genuine token past its max age;
    /// [`VerifyError::Data`] for a genuine token whose data is not a `T`.
    pub fn verify<T: DeserializeOwned>(&self, token: Option<&str>, opts: &VerifyOptions) -> Result<T, VerifyError> {
        let data = self.verify_value(token, opts)?;
        serde_json::from_value(data).map_err(|_| VerifyError::Data)
    }

    fn verify_value(&self, token: Option<&str>, opts: &VerifyOptions) -> Result<Value, VerifyError> {
        let token = token.ok_or(VerifyError::Missing)?;
        let mut parts = token.split('.');
        let (Some(protected), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Invalid);
        };
        let payload_bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| VerifyError::Invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| VerifyError::Invalid)?;
        let input_len = protected.len() + 1 + payload.len();
        if !verify_mac(protected, &self.0, &token.as_bytes()[..input_len], &tag) {
            return Err(VerifyError::Invalid);
        }
        let (data, signed_ms, stored_max_age) =
            envelope(fawkes_etf::decode(&payload_bytes).map_err(|_| VerifyError::Invalid)?)?;
        let max_age = opts.max_age.unwrap_or(stored_max_age);
        let now = opts.now_ms.unwrap_or_else(now_ms);
        match max_age {
            MaxAge::Infinity => Ok(data),
            MaxAge::Seconds(s) if s <= 0.0 => Err(VerifyError::Expired),
            MaxAge::Seconds(s) => {
                let limit = signed_ms.saturating_add((s * 1000.0).trunc() as i128);
                if limit < i128::from(now) {
                    Err(VerifyError::Expired)
                } else {
                    Ok(data)
                }
            }
        }
    }
}

fn max_age_of(t: Term) -> Result<MaxAge, VerifyError> {
    match t {
        Term::Atom(a) if a == "infinity" => Ok(MaxAge::Infinity),
        Term::Int(i) => Ok(MaxAge::Seconds(i as f64)),
        Term::Float(f) => Ok(MaxAge::Seconds(f)),
        _ => Err(VerifyError::Invalid),
    }
}

/// `{data, signed_ms, max_age}`, or the legacy `{data, signed_ms}` and
/// `%{data: d, signed: s}`.
fn envelope(t: Term) -> Result<(Value, i128, MaxAge), VerifyError> {
    let signed = |t: Term| match t {
        Term::Int(i) => Ok(i),
        Term::Float(f) => Ok(f.trunc() as i128),
        _ => Err(VerifyError::Invalid),
    };
    let data = |t: Term| t.to_json().map_err(|_| VerifyError::Invalid);
    match t {
        Term::Tuple(items) if items.len() == 3 => {
            let mut it = items.into_iter();
            let (d, s, m) = (it.next(), it.next(), it.next());
            match (d, s, m) {
                (Some(d), Some(s), Some(m)) => Ok((data(d)?, signed(s)?, max_age_of(m)?)),
                _ => Err(VerifyError::Invalid),
            }
        }
        Term::Tuple(items) if items.len() == 2 => {
            let mut it = items.into_iter();
            match (it.next(), it.next()) {
                (Some(d), Some(s)) => Ok((data(d)?, signed(s)?, DEFAULT_MAX_AGE)),
                _ => Err(VerifyError::Invalid),
            }
        }
        Term::Map(pairs) => {
            let mut d = None;
            let mut s = None;
            for (k, v) in pairs {
                match k.as_atom() {
                    Some("data") => d = Some(v),
                    Some("signed") => s = Some(v),
                    _ => {}
                }
            }
            match (d, s) {
                (Some(d), Some(s)) => Ok((data(d)?, signed(s)?, DEFAULT_MAX_AGE)),
                _ => Err(VerifyError::Invalid),
            }
        }
        _ => Err(VerifyError::Invalid),
    }
}

/// A few derived keys, so that the free functions do not pay PBKDF2 on
/// every call.
static KEYS: Mutex<Option<HashMap<(String, String), Key>>> = Mutex::new(None);

fn key_for(secret_key_base: &str, salt: &str) -> Key {
    let id = (secret_key_base.to_owned(), salt.to_owned());
    if let Some(k) = KEYS.lock().as_ref().and_then(|m| m.get(&id)) {
        return k.clone();
    }
    let key = Key::derive(secret_key_base, salt);
    let mut cache = KEYS.lock();
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(id, key.clone());
    key
}

/// Signs `data` with a secret key base and a salt, as `Phoenix.Token.sign/4`.
///
/// # Errors
///
/// See [`SignError`].
pub fn sign<T: Serialize + ?Sized>(
    secret_key_base: &str,
    salt: &str,
    data: &T,
    opts: &SignOptions,
) -> Result<String, SignError> {
    if secret_key_base.len() < MIN_SECRET_LEN {
        return Err(SignError::SecretTooShort);
    }
    key_for(secret_key_base, salt).sign(data, opts)
}

/// Verifies a token, as `Phoenix.Token.verify/4`, and returns its data as a
/// `T` (`serde_json::Value` for whatever it is).
///
/// # Errors
///
/// See [`VerifyError`].
pub fn verify<T: DeserializeOwned>(
    secret_key_base: &str,
    salt: &str,
    token: Option<&str>,
    opts: &VerifyOptions,
) -> Result<T, VerifyError> {
    if token.is_none() {
        return Err(VerifyError::Missing);
    }
    if secret_key_base.len() < MIN_SECRET_LEN {
        return Err(VerifyError::Invalid);
    }
    key_for(secret_key_base, salt).verify(token, opts)
}
