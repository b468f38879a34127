//! Erlang's external term format (what `term_to_binary` writes), for the
//! terms Phoenix puts on the wire: tokens (`{data, signed_at, max_age}`) and
//! Redis PubSub messages (`{3, :except, node, topic, %Broadcast{}, dispatcher}`).
//!
//! [`Term`] holds integers (up to 128 bits), floats, atoms, binaries, proper
//! lists, tuples and maps; [`decode`] reads a whole term (plain or
//! compressed) and refuses anything else (pids, references, funs, improper
//! lists) with a typed error, and never panics. JSON maps onto terms as
//! Phoenix maps it: `null`/`true`/`false` are atoms, strings are binaries,
//! objects are maps with binary keys.
//!
//! ```
//! use fawkes_etf::{decode, encode, Term};
//! use serde_json::json;
//!
//! let data = json!({"user_id": 42, "admin": false});
//! let bytes = encode(&Term::from_json(&data));
//! assert_eq!(decode(&bytes).unwrap().to_json().unwrap(), data);
//! let pair = Term::Tuple(vec![Term::atom("ok"), Term::Int(1)]);
//! assert_eq!(decode(&encode(&pair)).unwrap(), pair);
//! ```

use std::io::Read;

use serde_json::{Map, Number, Value};

/// Why a term could not be decoded or turned into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TermError {
    /// The bytes end too early, or have bytes left over.
    #[error("truncated or overlong term")]
    Truncated,
    /// A term of a kind this crate does not hold (a pid, a reference, an
    /// improper list, ...) or, for JSON, one that has no JSON equivalent.
    #[error("unsupported term (tag {0})")]
    Unsupported(u8),
    /// Not the external term format (version byte).
    #[error("not an external term")]
    NotATerm,
    /// For JSON: a map key that is not a string.
    #[error("map keys must be strings")]
    NonStringKey,
    /// A number out of range (an integer over 128 bits, or one JSON cannot
    /// hold; a float that is not finite).
    #[error("number out of range")]
    Number,
    /// Nesting deeper than the decoder allows.
    #[error("term nested too deeply")]
    TooDeep,
    /// More terms than one decode allows ([`MAX_TERMS`], or the input's
    /// length if larger).
    #[error("too many terms")]
    TooLarge,
}

/// The version byte every external term starts with.
pub const VERSION: u8 = 131;
const COMPRESSED: u8 = 80;
const SMALL_INT: u8 = 97;
const INT: u8 = 98;
const NEW_FLOAT: u8 = 70;
const ATOM: u8 = 100;
const SMALL_ATOM: u8 = 115;
const ATOM_UTF8: u8 = 118;
const SMALL_ATOM_UTF8: u8 = 119;
const SMALL_TUPLE: u8 = 104;
const LARGE_TUPLE: u8 = 105;
const NIL: u8 = 106;
const STRING: u8 = 107;
const LIST: u8 = 108;
const BINARY: u8 = 109;
const SMALL_BIG: u8 = 110;
const LARGE_BIG: u8 = 111;
const MAP: u8 = 116;

const MAX_DEPTH: usize = 128;
/// Most terms one decode may produce beyond one per input byte. Each decoded
/// term takes far more memory than its one-byte minimum on the wire (a
/// `NIL`, a byte of a string): without a budget a small compressed input
/// could decode into gigabytes.
pub const MAX_TERMS: usize = 1 << 20;
/// Largest capacity reserved ahead for a list, tuple or map: the rest grows
/// as elements actually arrive.
const MAX_RESERVE: usize = 1024;
/// Largest inflated size of a compressed term.
pub const MAX_INFLATED: usize = 16 << 20;

/// An Erlang term.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// An integer (Erlang's are unbounded; 128 bits are held here).
    Int(i128),
    /// A float.
    Float(f64),
    /// An atom.
    Atom(String),
    /// A binary (an Elixir string, or any bytes).
    Binary(Vec<u8>),
    /// A proper list (`[]` is the empty list).
    List(Vec<Term>),
    /// A tuple.
    Tuple(Vec<Term>),
    /// A map, in the order its pairs were read or are to be written.
    Map(Vec<(Term, Term)>),
}

impl Term {
    /// An atom.
    pub fn atom(name: &str) -> Term {
        Term::Atom(name.to_owned())
    }

    /// A binary holding `s`.
    pub fn binary(s: &str) -> Term {
        Term::Binary(s.as_bytes().to_vec())
    }

    /// The atom's name, for an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// The bytes, for a binary.
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// A map's value under the atom key `key`.
    pub fn get_atom_key(&self, key: &str) -> Option<&Term> {
        match self {
            Term::Map(pairs) => pairs.iter().find(|(k, _)| k.as_atom() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// JSON data as Phoenix writes it: `null`/`true`/`false` as atoms,
    /// numbers as integers or floats, strings as binaries, arrays as lists,
    /// objects as maps with binary keys.
    pub fn from_json(v: &Value) -> Term {
        match v {
            Value::Null => Term::atom("nil"),
            Value::Bool(b) => Term::atom(if *b { "true" } else { "false" }),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Term::Int(i128::from(u)),
                (None, Some(i)) => Term::Int(i128::from(i)),
                // serde_json numbers are u64, i64 or finite f64
                _ => Term::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Term::binary(s),
            Value::Array(items) => Term::List(items.iter().map(Term::from_json).collect()),
            Value::Object(m) => Term::Map(m.iter().map(|(k, v)| (Term::binary(k), Term::from_json(v))).collect()),
        }
    }

    /// The JSON of data terms, strictly: the only atoms are `nil`, `true`
    /// and `false`, map keys are binaries, binaries are UTF-8 and there are
    /// no tuples (what a token's data may hold).
    ///
    /// # Errors
    ///
    /// Any other term.
    pub fn to_json(&self) -> Result<Value, TermError> {
        self.json(false)
    }

    /// The JSON of a term as Phoenix's JSON library renders it: every atom
    /// is a string (but `nil`, `true`, `false`), and atom or number map keys
    /// become strings. Tuples, non-UTF-8 binaries and other keys are errors,
    /// as they are in Phoenix.
    ///
    /// # Errors
    ///
    /// Terms that have no JSON rendering.
    pub fn to_json_lenient(&self) -> Result<Value, TermError> {
        self.json(true)
    }

    fn json(&self, lenient: bool) -> Result<Value, TermError> {
        Ok(match self {
            Term::Int(i) => {
                if let Ok(u) = u64::try_from(*i) {
                    Value::from(u)
                } else {
                    Value::from(i64::try_from(*i).map_err(|_| TermError::Number)?)
                }
            }
            Term::Float(f) => Value::Number(Number::from_f64(*f).ok_or(TermError::Number)?),
            Term::Atom(a) => match a.as_str() {
                "nil" => Value::Null,
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other if lenient => Value::String(other.to_owned()),
                _ => return Err(TermError::Unsupported(SMALL_ATOM_UTF8)),
            },
            Term::Binary(b) => Value::String(utf8(b)?),
            Term::List(items) => Value::Array(items.iter().map(|t| t.json(lenient)).collect::<Result<_, _>>()?),
            Term::Tuple(_) => return Err(TermError::Unsupported(SMALL_TUPLE)),
            Term::Map(pairs) => {
                let mut m = Map::new();
                for (k, v) in pairs {
                    let key = match k {
                        Term::Binary(b) => utf8(b)?,
                        Term::Atom(a) if lenient => a.clone(),
                        Term::Int(i) if lenient => i.to_string(),
                        _ => return Err(TermError::NonStringKey),
                    };
                    m.insert(key, v.json(lenient)?);
                }
                Value::Object(m)
            }
        })
    }

    /// Appends the term's encoding, without the version byte, as
    /// `term_to_binary` writes it.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Term::Int(i) => encode_int(out, *i),
            Term::Float(f) => {
                out.push(NEW_FLOAT);
                out.extend_from_slice(&f.to_be_bytes());
            }
            Term::Atom(a) => encode_atom(out, a),
            Term::Binary(b) => {
                out.push(BINARY);
                out.extend_from_slice(&len32(b.len()).to_be_bytes());
                out.extend_from_slice(b);
            }
            Term::List(items) => {
                if items.is_empty() {
                    out.push(NIL);
                } else if items.len() < 65_536 && items.iter().all(|t| matches!(t, Term::Int(0..=255))) {
                    // a list of bytes is written as a STRING_EXT
                    out.push(STRING);
                    out.extend_from_slice(&(items.len() as u16).to_be_bytes());
                    out.extend(items.iter().map(|t| match t {
                        Term::Int(b) => *b as u8,
                        _ => 0,
                    }));
                } else {
                    out.push(LIST);
                    out.extend_from_slice(&len32(items.len()).to_be_bytes());
                    for t in items {
                        t.encode_body(out);
                    }
                    out.push(NIL);
                }
            }
            Term::Tuple(items) => {
                if let Ok(n) = u8::try_from(items.len()) {
                    out.push(SMALL_TUPLE);
                    out.push(n);
                } else {
                    out.push(LARGE_TUPLE);
                    out.extend_from_slice(&len32(items.len()).to_be_bytes());
                }
                for t in items {
                    t.encode_body(out);
                }
            }
            Term::Map(pairs) => {
                out.push(MAP);
                out.extend_from_slice(&len32(pairs.len()).to_be_bytes());
                for (k, v) in pairs {
                    k.encode_body(out);
                    v.encode_body(out);
                }
            }
        }
    }
}

/// Lengths over 4 GiB cannot be written; terms that large are not made here.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn utf8(b: &[u8]) -> Result<String, TermError> {
    String::from_utf8(b.to_vec()).map_err(|_| TermError::Unsupported(BINARY))
}

fn encode_atom(out: &mut Vec<u8>, name: &str) {
    // OTP 26+ writes every atom as SMALL_ATOM_UTF8 (or ATOM_UTF8 past 255 bytes).
    if let Ok(n) = u8::try_from(name.len()) {
        out.push(SMALL_ATOM_UTF8);
        out.push(n);
    } else {
        out.push(ATOM_UTF8);
        out.extend_from_slice(&(name.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    }
    out.extend_from_slice(&name.as_bytes()[..name.len().min(usize::from(u16::MAX))]);
}

fn encode_int(out: &mut Vec<u8>, v: i128) {
    if (0..=255).contains(&v) {
        out.push(SMALL_INT);
        out.push(v as u8);
        return;
    }
    if let Ok(v) = i32::try_from(v) {
        out.push(INT);
        out.extend_from_slice(&v.to_be_bytes());
        return;
    }
    let magnitude = v.unsigned_abs();
    let bytes = magnitude.to_le_bytes();
    let len = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    out.push(SMALL_BIG);
    out.push(len as u8);
    out.push(u8::from(v < 0));
    out.extend_from_slice(&bytes[..len]);
}

/// Encodes a whole term: the version byte, then the term.
pub fn encode(term: &Term) -> Vec<u8> {
    let mut out = vec![VERSION];
    term.encode_body(&mut out);
    out
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    /// Terms that may still be decoded.
    budget: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TermError> {
        let end = self.at.checked_add(n).ok_or(TermError::Truncated)?;
        let s = self.data.get(self.at..end).ok_or(TermError::Truncated)?;
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, TermError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, TermError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Result<usize, TermError> {
        let b = self.take(4)?;
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).map_err(|_| TermError::Truncated)
    }

    /// A count of elements that each take at least one byte: refused when
    /// the input cannot hold that many, so no allocation trusts a length.
    fn count(&mut self, n: usize) -> Result<usize, TermError> {
        if n > self.data.len() - self.at {
            return Err(TermError::Truncated);
        }
        Ok(n)
    }

    fn atom(&mut self, tag: u8) -> Result<String, TermError> {
        let len = if tag == ATOM || tag == ATOM_UTF8 { self.u16()? } else { usize::from(self.u8()?) };
        let bytes = self.take(len)?;
        Ok(if tag == ATOM || tag == SMALL_ATOM {
            bytes.iter().map(|&b| char::from(b)).collect()
        } else {
            String::from_utf8(bytes.to_vec()).map_err(|_| TermError::Unsupported(tag))?
        })
    }

    fn big(&mut self, n: usize) -> Result<i128, TermError> {
        let sign = self.u8()?;
        let digits = self.take(n)?;
        if digits.iter().skip(16).any(|&b| b != 0) {
            return Err(TermError::Number);
        }
        let mut m: u128 = 0;
        for (i, &b) in digits.iter().take(16).enumerate() {
            m |= u128::from(b) << (8 * i);
        }
        if sign == 0 {
            i128::try_from(m).map_err(|_| TermError::Number)
        } else if m == 1u128 << 127 {
            Ok(i128::MIN)
        } else {
            i128::try_from(m).map(|x| -x).map_err(|_| TermError::Number)
        }
    }

    /// Takes `n` terms from the budget.
    fn spend(&mut self, n: usize) -> Result<(), TermError> {
        self.budget = self.budget.checked_sub(n).ok_or(TermError::TooLarge)?;
        Ok(())
    }

    fn term(&mut self, depth: usize) -> Result<Term, TermError> {
        if depth > MAX_DEPTH {
            return Err(TermError::TooDeep);
        }
        self.spend(1)?;
        let tag = self.u8()?;
        Ok(match tag {
            SMALL_INT => Term::Int(i128::from(self.u8()?)),
            INT => {
                let b = self.take(4)?;
                Term::Int(i128::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            SMALL_BIG => {
                let n = usize::from(self.u8()?);
                Term::Int(self.big(n)?)
            }
            LARGE_BIG => {
                let n = self.u32()?;
                Term::Int(self.big(n)?)
            }
            NEW_FLOAT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let f = f64::from_be_bytes(a);
                if !f.is_finite() {
                    return Err(TermError::Number);
                }
                Term::Float(f)
            }
            ATOM | SMALL_ATOM | ATOM_UTF8 | SMALL_ATOM_UTF8 => Term::Atom(self.atom(tag)?),
            BINARY => {
                let n = self.u32()?;
                Term::Binary(self.take(n)?.to_vec())
            }
            NIL => Term::List(Vec::new()),
            STRING => {
                let n = self.u16()?;
                self.spend(n)?;
                Term::List(self.take(n)?.iter().map(|&b| Term::Int(i128::from(b))).collect())
            }
            LIST => {
                let n = self.u32()?;
                let n = self.count(n)?;
                let mut items = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                if self.u8()? != NIL {
                    return Err(TermError::Unsupported(LIST));
                }
                Term::List(items)
            }
            SMALL_TUPLE | LARGE_TUPLE => {
                let n = if tag == SMALL_TUPLE { usize::from(self.u8()?) } else { self.u32()? };
                let n = self.count(n)?;
                let mut items = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                Term::Tuple(items)
            }
            MAP => {
                let n = self.u32()?;
                let n = self.count(n)?;
                let mut pairs = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    let k = self.term(depth + 1)?;
                    let v = self.term(depth + 1)?;
                    pairs.push((k, v));
                }
                Term::Map(pairs)
            }
            other => return Err(TermError::Unsupported(other)),
        })
    }
}

/// Decodes a whole external term (`131`, then the term, optionally
/// zlib-compressed as `term_to_binary(t, [compressed])` writes it).
///
/// # Errors
///
/// Anything else: see [`TermError`].
pub fn decode(data: &[u8]) -> Result<Term, TermError> {
    let (&version, rest) = data.split_first().ok_or(TermError::NotATerm)?;
    if version != VERSION {
        return Err(TermError::NotATerm);
    }
    let inflated;
    let body = if rest.first() == Some(&COMPRESSED) {
        let size = rest.get(1..5).ok_or(TermError::Truncated)?;
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
        if size > MAX_INFLATED {
            return Err(TermError::Truncated);
        }
        // grown as the data inflates: the header's size is not trusted
        let mut out = Vec::with_capacity(size.min(64 * 1024));
        flate2::read::ZlibDecoder::new(&rest[5..])
            .take(MAX_INFLATED as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| TermError::Truncated)?;
        if out.len() != size {
            return Err(TermError::Truncated);
        }
        inflated = out;
        &inflated[..]
    } else {
        rest
    };
    // Uncompressed input pays at least a byte per term, so a budget as large
    // as the input costs nothing; only what compression multiplies is held
    // to MAX_TERMS.
    let mut r = Reader { data: body, at: 0, budget: MAX_TERMS.max(data.len()) };
    let t = r.term(0)?;
    if r.at != body.len() {
        return Err(TermError::Truncated);
    }
    Ok(t)
}

/// Decodes JSON data from an external term, strictly (see [`Term::to_json`]).
///
/// # Errors
///
/// Anything that is not data of the supported kinds.
pub fn term_to_json(data: &[u8]) -> Result<Value, TermError> {
    decode(data)?.to_json()
}

/// Encodes JSON data as `term_to_binary` does.
pub fn json_to_term(v: &Value) -> Vec<u8> {
    encode(&Term::from_json(v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn encodes_as_erlang_does() {
        // {1, 1700000000000, 86400} from the Phoenix.Token notes
        let t = Term::Tuple(vec![Term::Int(1), Term::Int(1_700_000_000_000), Term::Int(86400)]);
        assert_eq!(
            encode(&t),
            [
                0x83, 0x68, 0x03, 0x61, 0x01, 0x6E, 0x06, 0x00, 0x00, 0x68, 0xE5, 0xCF, 0x8B, 0x01, 0x62, 0x00, 0x01,
                0x51, 0x80
            ]
        );
        assert_eq!(json_to_term(&json!([1, 2, 3])), [131, STRING, 0, 3, 1, 2, 3]);
        assert_eq!(json_to_term(&json!(-1)), [131, INT, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(json_to_term(&json!(null)), [131, SMALL_ATOM_UTF8, 3, b'n', b'i', b'l']);
        assert_eq!(json_to_term(&json!(i64::MIN)), [131, SMALL_BIG, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0x80]);
    }

    #[test]
    fn round_trips_json_and_accepts_both_atom_encodings() {
        for v in [
            json!({"b": [1, "x", null, true, 2.5, {"n": -5}], "a": i64::MIN, "u": u64::MAX}),
            json!([]),
            json!(""),
            json!([256, 1]),
        ] {
            assert_eq!(term_to_json(&json_to_term(&v)).unwrap(), v);
        }
        assert_eq!(term_to_json(&[131, ATOM, 0, 4, b't', b'r', b'u', b'e']).unwrap(), json!(true));
        assert_eq!(term_to_json(&[131, SMALL_ATOM, 5, b'f', b'a', b'l', b's', b'e']).unwrap(), json!(false));
        assert!(matches!(term_to_json(&[131, SMALL_ATOM_UTF8, 2, b'o', b'k']), Err(TermError::Unsupported(_))));
        assert!(matches!(term_to_json(&[131, 104, 0]), Err(TermError::Unsupported(_))));
        assert!(matches!(term_to_json(&[131, 103]), Err(TermError::Unsupported(103))));
    }

    #[test]
    fn lenient_json_renders_atoms_as_phoenix_does() {
        let t = Term::Map(vec![
            (Term::atom("status"), Term::atom("away")),
            (Term::atom("ok"), Term::atom("true")),
            (Term::Int(7), Term::atom("nil")),
            (Term::binary("list"), Term::List(vec![Term::atom("a"), Term::Float(1.5)])),
        ]);
        assert_eq!(t.to_json_lenient().unwrap(), json!({"status": "away", "ok": true, "7": null, "list": ["a", 1.5]}));
        assert_eq!(t.to_json(), Err(TermError::NonStringKey));
        let tuple_inside = Term::Map(vec![(Term::atom("t"), Term::Tuple(vec![]))]);
        assert_eq!(tuple_inside.to_json_lenient(), Err(TermError::Unsupported(SMALL_TUPLE)));
        assert_eq!(Term::Binary(vec![0xff]).to_json_lenient(), Err(TermError::Unsupported(BINARY)));
    }

    #[test]
    fn every_kind_round_trips() {
        let t = Term::Tuple(vec![
            Term::Int(3),
            Term::atom("except"),
            Term::atom("n@host"),
            Term::Binary(vec![0, 255, 1]),
            Term::Map(vec![(Term::atom("k"), Term::List(vec![Term::Int(-300), Term::Int(i128::from(u64::MAX) + 1)]))]),
            Term::Float(-0.25),
            Term::List(vec![]),
            Term::atom(&"x".repeat(300)),
        ]);
        assert_eq!(decode(&encode(&t)).unwrap(), t);
        assert_eq!(decode(&encode(&Term::Int(i128::MIN))).unwrap(), Term::Int(i128::MIN));
    }

    #[test]
    fn accepts_compressed_terms() {
        use std::io::Write;
        let raw = json_to_term(&json!({"k": "v".repeat(100)}));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw[1..]).unwrap();
        let mut data = vec![131, COMPRESSED];
        data.extend_from_slice(&((raw.len() - 1) as u32).to_be_bytes());
        data.extend(z.finish().unwrap());
        assert_eq!(term_to_json(&data).unwrap(), json!({"k": "v".repeat(100)}));
    }

    #[test]
    fn hostile_lengths_are_errors() {
        for data in [
            &[131u8, LIST, 0xff, 0xff, 0xff, 0xff][..],
            &[131, MAP, 0x7f, 0, 0, 0],
            &[131, BINARY, 0, 0, 0, 9, 1],
            &[131, COMPRESSED, 0xff, 0xff, 0xff, 0xff],
            &[131, SMALL_BIG, 17, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            &[131, NEW_FLOAT, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0],
            &[131, LIST, 0, 0, 0, 1, SMALL_INT, 1, SMALL_INT, 2],
            &[131],
            &[],
        ] {
            assert!(decode(data).is_err(), "{data:?}");
        }
        let mut deep = vec![131u8];
        deep.extend(std::iter::repeat_n([LIST, 0, 0, 0, 1], 200).flatten());
        assert_eq!(decode(&deep), Err(TermError::TooDeep));
    }

    /// A small compressed input that would decode into millions of terms
    /// is refused before it costs the memory.
    #[test]
    fn amplification_is_refused() {
        use std::io::Write;
        let n: u32 = 4 << 20;
        let mut raw = vec![LIST];
        raw.extend_from_slice(&n.to_be_bytes());
        raw.extend(std::iter::repeat_n(NIL, n as usize));
        raw.push(NIL);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&raw).unwrap();
        let mut data = vec![131, COMPRESSED];
        data.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        data.extend(z.finish().unwrap());
        assert!(data.len() < 64 * 1024, "{} bytes", data.len());
        assert_eq!(decode(&data), Err(TermError::TooLarge));
        let mut strings = vec![LIST, 0, 0, 0x40, 0];
        for _ in 0..0x4000 {
            strings.extend_from_slice(&[STRING, 0, 0x80]);
            strings.extend(std::iter::repeat_n(1u8, 0x80));
        }
        strings.push(NIL);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&strings).unwrap();
        let mut data = vec![131, COMPRESSED];
        data.extend_from_slice(&(strings.len() as u32).to_be_bytes());
        data.extend(z.finish().unwrap());
        assert_eq!(decode(&data), Err(TermError::TooLarge), "string bytes count too");
        // uncompressed, every term costs a byte of input: the budget follows
        let mut plain = vec![131u8];
        plain.extend_from_slice(&strings);
        assert!(decode(&plain).is_ok());
        // a large but reasonable term is fine
        assert!(decode(&json_to_term(&serde_json::Value::Array(vec![1.into(); 100_000]))).is_ok());
    }
}
