//! Erlang's external term format (what `term_to_binary` writes), for the
//! terms Phoenix puts on the wire: tokens (`{data, signed_at, max_age}`),
//! Redis PubSub messages (`{3, :except, node, topic, message, dispatcher}`)
//! and Phoenix.Tracker's replication messages inside them.
//!
//! [`decode`] reads every term `term_to_binary` writes, plain or
//! compressed: integers of any size, floats, atoms in each of their four
//! encodings, binaries and bit strings, proper and improper lists, tuples,
//! maps, pids, ports, references, funs and export funs. It never panics,
//! and what it reads [`encode`] writes back byte for byte (funs and
//! old-style floats are kept as their bytes: [`Opaque`]). Nothing else is
//! accepted (a distribution header, `LOCAL_EXT`), with a typed error.
//!
//! JSON maps onto terms as Phoenix maps it: `null`/`true`/`false` are atoms,
//! strings are binaries, objects are maps with binary keys.
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

use std::borrow::Cow;
use std::io::Read;

use serde_json::{Map, Number, Value};

mod hash;
mod values;

pub use hash::phash2_binary;
pub use values::{Atom, AtomEncoding, BigInt, BitBinary, Opaque, Pid, Port, PortEncoding, RefEncoding, Reference};

/// Why a term could not be decoded or turned into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TermError {
    /// The bytes end too early, or have bytes left over.
    #[error("truncated or overlong term")]
    Truncated,
    /// A tag the external format does not have here (a distribution
    /// header, `LOCAL_EXT`, garbage) or, for JSON, a term that has no JSON
    /// equivalent (a pid, a tuple, ...).
    #[error("unsupported term (tag {0})")]
    Unsupported(u8),
    /// Not the external term format (version byte).
    #[error("not an external term")]
    NotATerm,
    /// For JSON: a map key that is not a string.
    #[error("map keys must be strings")]
    NonStringKey,
    /// A number out of range (for JSON, an integer beyond 64 bits; a float
    /// that is not finite).
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
const FLOAT: u8 = 99;
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
const BIT_BINARY: u8 = 77;
const SMALL_BIG: u8 = 110;
const LARGE_BIG: u8 = 111;
const MAP: u8 = 116;
const PID: u8 = 103;
const NEW_PID: u8 = 88;
const PORT: u8 = 102;
const NEW_PORT: u8 = 89;
const V4_PORT: u8 = 120;
const REFERENCE: u8 = 101;
const NEW_REFERENCE: u8 = 114;
const NEWER_REFERENCE: u8 = 90;
const NEW_FUN: u8 = 112;
const EXPORT: u8 = 113;
const FUN: u8 = 117;

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
#[non_exhaustive]
pub enum Term {
    /// An integer that fits 128 bits.
    Int(i128),
    /// A larger integer.
    BigInt(BigInt),
    /// A float.
    Float(f64),
    /// An atom.
    Atom(Atom),
    /// A binary (an Elixir string, or any bytes).
    Binary(Vec<u8>),
    /// A bit string that is not a whole number of bytes.
    BitBinary(BitBinary),
    /// A proper list (`[]` is the empty list).
    List(Vec<Term>),
    /// An improper list: its elements and its tail (not `[]`).
    ImproperList(Vec<Term>, Box<Term>),
    /// A tuple.
    Tuple(Vec<Term>),
    /// A map, in the order its pairs were read or are to be written.
    Map(Vec<(Term, Term)>),
    /// A process identifier.
    Pid(Pid),
    /// A port identifier.
    Port(Port),
    /// A reference.
    Ref(Reference),
    /// A fun, an export fun or an old-style float, kept as its bytes.
    Opaque(Opaque),
}

impl Term {
    /// An atom, written as OTP 26+ writes it.
    pub fn atom(name: &str) -> Term {
        Term::Atom(Atom::new(name))
    }

    /// A binary holding `s`.
    pub fn binary(s: &str) -> Term {
        Term::Binary(s.as_bytes().to_vec())
    }

    /// The atom's name, for an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a.as_str()),
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

    /// The integer, for an integer that fits 128 bits.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Term::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements, for a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The pairs, for a map.
    pub fn as_map(&self) -> Option<&[(Term, Term)]> {
        match self {
            Term::Map(pairs) => Some(pairs),
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
    /// become strings. Tuples, pids, non-UTF-8 binaries and other keys are
    /// errors, as they are in Phoenix.
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
            Term::Map(pairs) => {
                let mut m = Map::new();
                for (k, v) in pairs {
                    let key = match k {
                        Term::Binary(b) => utf8(b)?,
                        Term::Atom(a) if lenient => a.as_str().to_owned(),
                        Term::Int(i) if lenient => i.to_string(),
                        _ => return Err(TermError::NonStringKey),
                    };
                    m.insert(key, v.json(lenient)?);
                }
                Value::Object(m)
            }
            Term::BigInt(_) => return Err(TermError::Number),
            other => return Err(TermError::Unsupported(other.tag())),
        })
    }

    /// The tag byte this term is written with.
    pub fn tag(&self) -> u8 {
        match self {
            Term::Int(0..=255) => SMALL_INT,
            Term::Int(i) if i32::try_from(*i).is_ok() => INT,
            Term::Int(_) => SMALL_BIG,
            Term::BigInt(b) => {
                if b.magnitude.len() <= 255 {
                    SMALL_BIG
                } else {
                    LARGE_BIG
                }
            }
            Term::Float(_) => NEW_FLOAT,
            Term::Atom(a) => atom_tag(a),
            Term::Binary(_) => BINARY,
            Term::BitBinary(_) => BIT_BINARY,
            Term::List(items) if items.is_empty() => NIL,
            Term::List(items) if is_string(items) => STRING,
            Term::List(_) | Term::ImproperList(..) => LIST,
            Term::Tuple(items) if items.len() <= 255 => SMALL_TUPLE,
            Term::Tuple(_) => LARGE_TUPLE,
            Term::Map(_) => MAP,
            Term::Pid(p) => {
                if p.old_encoding && p.creation <= 255 {
                    PID
                } else {
                    NEW_PID
                }
            }
            Term::Port(p) => port_tag(p),
            Term::Ref(r) => ref_tag(r),
            Term::Opaque(o) => o.tag(),
        }
    }

    /// Appends the term's encoding, without the version byte, as
    /// `term_to_binary` writes it.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        let tag = self.tag();
        match self {
            Term::Int(i) => encode_int(out, *i),
            Term::BigInt(b) => {
                out.push(tag);
                if tag == SMALL_BIG {
                    out.push(b.magnitude.len() as u8);
                } else {
                    out.extend_from_slice(&len32(b.magnitude.len()).to_be_bytes());
                }
                out.push(u8::from(b.negative));
                out.extend_from_slice(&b.magnitude);
            }
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
            Term::BitBinary(b) => {
                out.push(BIT_BINARY);
                out.extend_from_slice(&len32(b.bytes.len()).to_be_bytes());
                out.push(b.bits);
                out.extend_from_slice(&b.bytes);
            }
            Term::List(items) => match tag {
                NIL => out.push(NIL),
                STRING => {
                    // a list of bytes is written as a STRING_EXT
                    out.push(STRING);
                    out.extend_from_slice(&(items.len() as u16).to_be_bytes());
                    out.extend(items.iter().map(|t| match t {
                        Term::Int(b) => *b as u8,
                        _ => 0,
                    }));
                }
                _ => {
                    out.push(LIST);
                    out.extend_from_slice(&len32(items.len()).to_be_bytes());
                    for t in items {
                        t.encode_body(out);
                    }
                    out.push(NIL);
                }
            },
            Term::ImproperList(items, tail) => {
                out.push(LIST);
                out.extend_from_slice(&len32(items.len()).to_be_bytes());
                for t in items {
                    t.encode_body(out);
                }
                tail.encode_body(out);
            }
            Term::Tuple(items) => {
                out.push(tag);
                if tag == SMALL_TUPLE {
                    out.push(items.len() as u8);
                } else {
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
            Term::Pid(p) => {
                out.push(tag);
                encode_atom(out, &p.node);
                out.extend_from_slice(&p.id.to_be_bytes());
                out.extend_from_slice(&p.serial.to_be_bytes());
                if tag == PID {
                    out.push(p.creation as u8);
                } else {
                    out.extend_from_slice(&p.creation.to_be_bytes());
                }
            }
            Term::Port(p) => {
                out.push(tag);
                encode_atom(out, &p.node);
                if tag == V4_PORT {
                    out.extend_from_slice(&p.id.to_be_bytes());
                } else {
                    out.extend_from_slice(&(p.id as u32).to_be_bytes());
                }
                if tag == PORT {
                    out.push(p.creation as u8);
                } else {
                    out.extend_from_slice(&p.creation.to_be_bytes());
                }
            }
            Term::Ref(r) => {
                out.push(tag);
                if tag == REFERENCE {
                    encode_atom(out, &r.node);
                    out.extend_from_slice(&r.ids.first().copied().unwrap_or(0).to_be_bytes());
                    out.push(r.creation as u8);
                    return;
                }
                out.extend_from_slice(&(r.ids.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
                encode_atom(out, &r.node);
                if tag == NEW_REFERENCE {
                    out.push(r.creation as u8);
                } else {
                    out.extend_from_slice(&r.creation.to_be_bytes());
                }
                for id in r.ids.iter().take(usize::from(u16::MAX)) {
                    out.extend_from_slice(&id.to_be_bytes());
                }
            }
            Term::Opaque(o) => out.extend_from_slice(o.bytes()),
        }
    }
}

fn is_string(items: &[Term]) -> bool {
    items.len() < 65_536 && items.iter().all(|t| matches!(t, Term::Int(0..=255)))
}

fn port_tag(p: &Port) -> u8 {
    match p.encoding {
        _ if p.id > u64::from(u32::MAX) => V4_PORT,
        PortEncoding::Old if p.creation <= 255 => PORT,
        PortEncoding::V4 => V4_PORT,
        _ => NEW_PORT,
    }
}

fn ref_tag(r: &Reference) -> u8 {
    match r.encoding {
        RefEncoding::Old if r.ids.len() == 1 && r.creation <= 255 => REFERENCE,
        RefEncoding::Old | RefEncoding::New if r.creation <= 255 => NEW_REFERENCE,
        _ => NEWER_REFERENCE,
    }
}

/// Lengths over 4 GiB cannot be written; terms that large are not made here.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn utf8(b: &[u8]) -> Result<String, TermError> {
    String::from_utf8(b.to_vec()).map_err(|_| TermError::Unsupported(BINARY))
}

fn latin1(name: &str) -> bool {
    name.chars().all(|c| u32::from(c) <= 0xff)
}

fn atom_tag(a: &Atom) -> u8 {
    let name = a.as_str();
    match a.encoding() {
        AtomEncoding::SmallLatin1 if latin1(name) && name.chars().count() <= 255 => SMALL_ATOM,
        AtomEncoding::Latin1 | AtomEncoding::SmallLatin1 if latin1(name) => ATOM,
        AtomEncoding::Utf8 => ATOM_UTF8,
        _ if name.len() <= 255 => SMALL_ATOM_UTF8,
        _ => ATOM_UTF8,
    }
}

fn encode_atom(out: &mut Vec<u8>, a: &Atom) {
    let tag = atom_tag(a);
    out.push(tag);
    let bytes: Cow<'_, [u8]> = if tag == ATOM || tag == SMALL_ATOM {
        Cow::Owned(a.as_str().chars().map(|c| c as u8).collect())
    } else {
        Cow::Borrowed(a.as_str().as_bytes())
    };
    let n = bytes.len().min(usize::from(u16::MAX));
    if tag == SMALL_ATOM || tag == SMALL_ATOM_UTF8 {
        out.push(n as u8);
    } else {
        out.extend_from_slice(&(n as u16).to_be_bytes());
    }
    out.extend_from_slice(&bytes[..n]);
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

    fn u32(&mut self) -> Result<u32, TermError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len32(&mut self) -> Result<usize, TermError> {
        usize::try_from(self.u32()?).map_err(|_| TermError::Truncated)
    }

    /// A count of elements that each take at least one byte: refused when
    /// the input cannot hold that many, so no allocation trusts a length.
    fn count(&mut self, n: usize) -> Result<usize, TermError> {
        if n > self.data.len() - self.at {
            return Err(TermError::Truncated);
        }
        Ok(n)
    }

    fn atom_of(&mut self, tag: u8) -> Result<Atom, TermError> {
        let len = if tag == ATOM || tag == ATOM_UTF8 { self.u16()? } else { usize::from(self.u8()?) };
        let bytes = self.take(len)?;
        let (name, encoding) = match tag {
            ATOM => (bytes.iter().map(|&b| char::from(b)).collect(), AtomEncoding::Latin1),
            SMALL_ATOM => (bytes.iter().map(|&b| char::from(b)).collect(), AtomEncoding::SmallLatin1),
            _ => {
                let name = String::from_utf8(bytes.to_vec()).map_err(|_| TermError::Unsupported(tag))?;
                (name, if tag == ATOM_UTF8 { AtomEncoding::Utf8 } else { AtomEncoding::SmallUtf8 })
            }
        };
        Ok(Atom::with_encoding(name, encoding))
    }

    /// A node name: an atom in any of its encodings.
    fn node(&mut self) -> Result<Atom, TermError> {
        self.spend(1)?;
        let tag = self.u8()?;
        match tag {
            ATOM | SMALL_ATOM | ATOM_UTF8 | SMALL_ATOM_UTF8 => self.atom_of(tag),
            other => Err(TermError::Unsupported(other)),
        }
    }

    /// A big integer of `n` digits, read from `start` (its tag): an
    /// [`Term::Int`] when it fits and is written as Erlang writes that
    /// integer, else kept as it is.
    fn big(&mut self, start: usize, n: usize) -> Result<Term, TermError> {
        let sign = self.u8()?;
        // Erlang writes 0 or 1; any other sign byte is not a term it wrote
        // (and would not encode back to itself)
        if sign > 1 {
            return Err(TermError::Number);
        }
        let digits = self.take(n)?;
        if digits.iter().skip(16).all(|&b| b == 0) {
            let mut m: u128 = 0;
            for (i, &b) in digits.iter().take(16).enumerate() {
                m |= u128::from(b) << (8 * i);
            }
            let fits = if sign == 0 {
                i128::try_from(m).ok()
            } else if m == 1u128 << 127 {
                Some(i128::MIN)
            } else {
                i128::try_from(m).ok().map(|x| -x)
            };
            if let Some(v) = fits {
                let mut again = Vec::with_capacity(n + 3);
                encode_int(&mut again, v);
                if again == self.data[start..self.at] {
                    return Ok(Term::Int(v));
                }
            }
        }
        Ok(Term::BigInt(BigInt { negative: sign != 0, magnitude: digits.to_vec() }))
    }

    /// Takes `n` terms from the budget.
    fn spend(&mut self, n: usize) -> Result<(), TermError> {
        self.budget = self.budget.checked_sub(n).ok_or(TermError::TooLarge)?;
        Ok(())
    }

    /// The bytes from `start` to here, as an opaque term.
    fn opaque(&self, start: usize) -> Term {
        Term::Opaque(Opaque::new(self.data[start..self.at].to_vec()))
    }

    fn term(&mut self, depth: usize) -> Result<Term, TermError> {
        if depth > MAX_DEPTH {
            return Err(TermError::TooDeep);
        }
        self.spend(1)?;
        let start = self.at;
        let tag = self.u8()?;
        Ok(match tag {
            SMALL_INT => Term::Int(i128::from(self.u8()?)),
            INT => Term::Int(i128::from(self.u32()? as i32)),
            SMALL_BIG => {
                let n = usize::from(self.u8()?);
                self.big(start, n)?
            }
            LARGE_BIG => {
                let n = self.len32()?;
                self.big(start, n)?
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
            FLOAT => {
                // 31 bytes of printf("%.20e"), written by OTPs before R11B
                self.take(31)?;
                self.opaque(start)
            }
            ATOM | SMALL_ATOM | ATOM_UTF8 | SMALL_ATOM_UTF8 => Term::Atom(self.atom_of(tag)?),
            BINARY => {
                let n = self.len32()?;
                Term::Binary(self.take(n)?.to_vec())
            }
            BIT_BINARY => {
                let n = self.len32()?;
                let bits = self.u8()?;
                if n == 0 || !(1..=8).contains(&bits) {
                    return Err(TermError::Unsupported(BIT_BINARY));
                }
                Term::BitBinary(BitBinary { bytes: self.take(n)?.to_vec(), bits })
            }
            NIL => Term::List(Vec::new()),
            STRING => {
                let n = self.u16()?;
                self.spend(n)?;
                Term::List(self.take(n)?.iter().map(|&b| Term::Int(i128::from(b))).collect())
            }
            LIST => {
                let n = self.len32()?;
                let n = self.count(n)?;
                let mut items = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                match self.term(depth + 1)? {
                    Term::List(tail) if tail.is_empty() => Term::List(items),
                    tail => Term::ImproperList(items, Box::new(tail)),
                }
            }
            SMALL_TUPLE | LARGE_TUPLE => {
                let n = if tag == SMALL_TUPLE { usize::from(self.u8()?) } else { self.len32()? };
                let n = self.count(n)?;
                let mut items = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                Term::Tuple(items)
            }
            MAP => {
                let n = self.len32()?;
                let n = self.count(n)?;
                let mut pairs = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    let k = self.term(depth + 1)?;
                    let v = self.term(depth + 1)?;
                    pairs.push((k, v));
                }
                Term::Map(pairs)
            }
            PID | NEW_PID => {
                let node = self.node()?;
                let (id, serial) = (self.u32()?, self.u32()?);
                let creation = if tag == PID { u32::from(self.u8()?) } else { self.u32()? };
                Term::Pid(Pid { node, id, serial, creation, old_encoding: tag == PID })
            }
            PORT | NEW_PORT | V4_PORT => {
                let node = self.node()?;
                let id = if tag == V4_PORT {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    u64::from_be_bytes(a)
                } else {
                    u64::from(self.u32()?)
                };
                let creation = if tag == PORT { u32::from(self.u8()?) } else { self.u32()? };
                let encoding = match tag {
                    PORT => PortEncoding::Old,
                    NEW_PORT => PortEncoding::New,
                    _ => PortEncoding::V4,
                };
                Term::Port(Port { node, id, creation, encoding })
            }
            REFERENCE => {
                let node = self.node()?;
                let id = self.u32()?;
                let creation = u32::from(self.u8()?);
                Term::Ref(Reference { node, creation, ids: vec![id], encoding: RefEncoding::Old })
            }
            NEW_REFERENCE | NEWER_REFERENCE => {
                let n = self.u16()?;
                let node = self.node()?;
                let creation = if tag == NEW_REFERENCE { u32::from(self.u8()?) } else { self.u32()? };
                let n = self.count(n.saturating_mul(4))? / 4;
                let ids = (0..n).map(|_| self.u32()).collect::<Result<Vec<_>, _>>()?;
                let encoding = if tag == NEW_REFERENCE { RefEncoding::New } else { RefEncoding::Newer };
                Term::Ref(Reference { node, creation, ids, encoding })
            }
            NEW_FUN => {
                // Size counts itself and everything after it
                let size = self.len32()?;
                let end = start.checked_add(1).and_then(|s| s.checked_add(size)).ok_or(TermError::Truncated)?;
                if end > self.data.len() {
                    return Err(TermError::Truncated);
                }
                self.take(1 + 16 + 4)?; // arity, uniq, index
                let free = self.len32()?;
                // module, old index, old uniq, pid, then the free variables
                let n = self.count(free)?.checked_add(4).ok_or(TermError::Truncated)?;
                for _ in 0..n {
                    self.term(depth + 1)?;
                }
                if self.at != end {
                    return Err(TermError::Truncated);
                }
                self.opaque(start)
            }
            EXPORT => {
                // module, function, arity
                for _ in 0..3 {
                    self.term(depth + 1)?;
                }
                self.opaque(start)
            }
            FUN => {
                let free = self.len32()?;
                // pid, module, index, uniq, then the free variables
                let n = self.count(free)?.checked_add(4).ok_or(TermError::Truncated)?;
                for _ in 0..n {
                    self.term(depth + 1)?;
                }
                self.opaque(start)
            }
            other => return Err(TermError::Unsupported(other)),
        })
    }
}

/// The uncompressed form of an external term: `data` itself, or, for a
/// term written with `[compressed]`, the version byte and the inflated
/// term (at most [`MAX_INFLATED`] bytes).
///
/// # Errors
///
/// Not an external term, or a compressed one that does not inflate to the
/// size it announces.
pub fn uncompressed(data: &[u8]) -> Result<Cow<'_, [u8]>, TermError> {
    let (&version, rest) = data.split_first().ok_or(TermError::NotATerm)?;
    if version != VERSION {
        return Err(TermError::NotATerm);
    }
    if rest.first() != Some(&COMPRESSED) {
        return Ok(Cow::Borrowed(data));
    }
    let size = rest.get(1..5).ok_or(TermError::Truncated)?;
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if size > MAX_INFLATED {
        return Err(TermError::Truncated);
    }
    // grown as the data inflates: the header's size is not trusted
    let mut out = Vec::with_capacity(size.min(64 * 1024) + 1);
    out.push(VERSION);
    flate2::read::ZlibDecoder::new(&rest[5..])
        .take(MAX_INFLATED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| TermError::Truncated)?;
    if out.len() != size + 1 {
        return Err(TermError::Truncated);
    }
    Ok(Cow::Owned(out))
}

/// Decodes a whole external term (`131`, then the term, optionally
/// zlib-compressed as `term_to_binary(t, [compressed])` writes it).
///
/// # Errors
///
/// Anything else: see [`TermError`].
pub fn decode(data: &[u8]) -> Result<Term, TermError> {
    let plain = uncompressed(data)?;
    let body = &plain[1..];
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
        assert!(matches!(term_to_json(&[131, 82, 0]), Err(TermError::Unsupported(82))), "an atom cache reference");
        assert_eq!(term_to_json(&[131, 103]), Err(TermError::Truncated));
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
            Term::Atom(Atom::with_encoding("n@host", AtomEncoding::Latin1)),
            Term::Atom(Atom::with_encoding("smäll", AtomEncoding::SmallLatin1)),
            Term::Atom(Atom::with_encoding("✓ utf8", AtomEncoding::Utf8)),
            Term::BigInt(BigInt { negative: true, magnitude: vec![1; 300] }),
            Term::BitBinary(BitBinary { bytes: vec![0xa0], bits: 3 }),
            Term::ImproperList(vec![Term::Int(1)], Box::new(Term::Int(2))),
            Term::Pid(Pid::new(Atom::new("a@h"), 1, 2, 3)),
            Term::Pid(Pid { old_encoding: true, ..Pid::new(Atom::new("a@h"), 1, 2, 3) }),
            Term::Port(Port { node: Atom::new("a@h"), id: 1 << 40, creation: 9, encoding: PortEncoding::V4 }),
            Term::Port(Port { node: Atom::new("a@h"), id: 5, creation: 9, encoding: PortEncoding::Old }),
            Term::Ref(Reference {
                node: Atom::new("a@h"),
                creation: 1,
                ids: vec![1, 2, 3],
                encoding: RefEncoding::Newer,
            }),
            Term::Ref(Reference { node: Atom::new("a@h"), creation: 1, ids: vec![7], encoding: RefEncoding::Old }),
            Term::Ref(Reference { node: Atom::new("a@h"), creation: 1, ids: vec![7, 8], encoding: RefEncoding::New }),
            Term::Binary(vec![0, 255, 1]),
            Term::Map(vec![(Term::atom("k"), Term::List(vec![Term::Int(-300), Term::Int(i128::from(u64::MAX) + 1)]))]),
            Term::Float(-0.25),
            Term::List(vec![]),
            Term::atom(&"x".repeat(300)),
        ]);
        let bytes = encode(&t);
        let back = decode(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(encode(&back), bytes, "written back byte for byte");
        let Term::Tuple(items) = &back else { panic!("a tuple") };
        assert_eq!(items[3].as_atom(), Some("smäll"));
        let Term::Atom(latin1) = &items[2] else { panic!("an atom") };
        assert_eq!(latin1.encoding(), AtomEncoding::Latin1);
        assert_eq!(decode(&encode(&Term::Int(i128::MIN))).unwrap(), Term::Int(i128::MIN));
        // a big integer that fits but is not written as Erlang writes it
        // (a trailing zero digit) is kept as it is written
        // a sign byte Erlang never writes
        assert_eq!(decode(&[131, SMALL_BIG, 1, 183, 5]), Err(TermError::Number));
        assert_eq!(decode(&[131, LARGE_BIG, 0, 0, 0, 1, 2, 5]), Err(TermError::Number));
        let odd = [131, SMALL_BIG, 2, 0, 5, 0];
        assert_eq!(encode(&decode(&odd).unwrap()), odd);
        assert_eq!(
            decode(&[131, SMALL_BIG, 1, 0, 5]),
            Ok(Term::BigInt(BigInt { negative: false, magnitude: vec![5] }))
        );
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
            &[131, NEW_FLOAT, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0],
            &[131, LIST, 0, 0, 0, 1, SMALL_INT, 1],
            &[131, BIT_BINARY, 0, 0, 0, 1, 0, 0xff],
            &[131, BIT_BINARY, 0, 0, 0, 0, 3],
            &[131, NEW_PID, SMALL_INT, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[131, NEW_REFERENCE, 0xff, 0xff, SMALL_ATOM_UTF8, 1, b'n', 0],
            &[131, NEW_FUN, 0, 0, 0, 0x30],
            &[131, NEW_FUN, 0xff, 0xff, 0xff, 0xff],
            &[131, FUN, 0xff, 0xff, 0xff, 0xff],
            &[131, 121, 0],
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
