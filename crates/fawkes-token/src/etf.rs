//! The part of Erlang's external term format that tokens carry: JSON-like
//! data (integers of every size, floats, binaries, `nil`/`true`/`false`,
//! lists and maps) inside the token's tuple.

use std::io::Read;

use serde_json::{Map, Number, Value};

/// Why a term could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TermError {
    /// The bytes end too early, or have bytes left over.
    #[error("truncated or overlong term")]
    Truncated,
    /// A term that has no JSON equivalent (a tuple in the data, a pid, an
    /// atom other than `nil`, `true` or `false`, ...).
    #[error("unsupported term (tag {0})")]
    Unsupported(u8),
    /// Not the external term format (version byte).
    #[error("not an external term")]
    NotATerm,
    /// A map key that is not a string.
    #[error("map keys must be strings")]
    NonStringKey,
    /// A number JSON cannot hold, or a float that is not finite.
    #[error("number out of range")]
    Number,
    /// Nesting deeper than the decoder allows.
    #[error("term nested too deeply")]
    TooDeep,
}

const VERSION: u8 = 131;
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
/// Largest inflated size of a compressed term.
const MAX_INFLATED: usize = 1 << 20;

/// A decoded term: JSON data, or the few shapes tokens use around it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Term {
    Json(Value),
    Atom(String),
    Tuple(Vec<Term>),
    /// A map whose keys are not all binaries (the legacy `%{data:, signed:}`).
    AtomMap(Vec<(Term, Term)>),
}

pub(crate) fn encode_atom(out: &mut Vec<u8>, name: &str) {
    // OTP 26+ writes every atom as SMALL_ATOM_UTF8.
    out.push(SMALL_ATOM_UTF8);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

fn encode_integer(out: &mut Vec<u8>, negative: bool, magnitude: u128) {
    if !negative && magnitude <= 255 {
        out.push(SMALL_INT);
        out.push(magnitude as u8);
        return;
    }
    let signed = if negative { -(magnitude as i128) } else { magnitude as i128 };
    if let Ok(v) = i32::try_from(signed) {
        out.push(INT);
        out.extend_from_slice(&v.to_be_bytes());
        return;
    }
    let bytes: Vec<u8> = magnitude.to_le_bytes().into_iter().collect();
    let len = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    out.push(SMALL_BIG);
    out.push(len as u8);
    out.push(u8::from(negative));
    out.extend_from_slice(&bytes[..len]);
}

/// Appends `v` as Phoenix's `term_to_binary` writes the same data.
pub(crate) fn encode_value(out: &mut Vec<u8>, v: &Value) -> Result<(), TermError> {
    match v {
        Value::Null => encode_atom(out, "nil"),
        Value::Bool(b) => encode_atom(out, if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                encode_integer(out, false, u128::from(u));
            } else if let Some(i) = n.as_i64() {
                encode_integer(out, i < 0, u128::from(i.unsigned_abs()));
            } else {
                let f = n.as_f64().ok_or(TermError::Number)?;
                out.push(NEW_FLOAT);
                out.extend_from_slice(&f.to_be_bytes());
            }
        }
        Value::String(s) => {
            out.push(BINARY);
            out.extend_from_slice(&u32::try_from(s.len()).map_err(|_| TermError::Number)?.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push(NIL);
            } else if items.len() < 65_536 && items.iter().all(|i| i.as_u64().is_some_and(|n| n <= 255)) {
                // a list of bytes is a STRING_EXT
                out.push(STRING);
                out.extend_from_slice(&(items.len() as u16).to_be_bytes());
                out.extend(items.iter().filter_map(Value::as_u64).map(|n| n as u8));
            } else {
                out.push(LIST);
                out.extend_from_slice(&u32::try_from(items.len()).map_err(|_| TermError::Number)?.to_be_bytes());
                for i in items {
                    encode_value(out, i)?;
                }
                out.push(NIL);
            }
        }
        Value::Object(map) => {
            out.push(MAP);
            out.extend_from_slice(&u32::try_from(map.len()).map_err(|_| TermError::Number)?.to_be_bytes());
            // binaries sort bytewise in Erlang's term order
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (k, v) in entries {
                encode_value(out, &Value::String(k.clone()))?;
                encode_value(out, v)?;
            }
        }
    }
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
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

    /// A count of elements that each take at least one byte.
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

    fn big(&mut self, n: usize) -> Result<Value, TermError> {
        let sign = self.u8()?;
        let digits = self.take(n)?;
        if digits.iter().skip(16).any(|&b| b != 0) {
            return Err(TermError::Number);
        }
        let mut m: u128 = 0;
        for (i, &b) in digits.iter().take(16).enumerate() {
            m |= u128::from(b) << (8 * i);
        }
        let v = if sign == 0 {
            u64::try_from(m).map(Value::from).ok()
        } else {
            i64::try_from(m).ok().map(|x| Value::from(-x)).or_else(|| (m == 1u128 << 63).then(|| Value::from(i64::MIN)))
        };
        v.ok_or(TermError::Number)
    }

    fn term(&mut self, depth: usize) -> Result<Term, TermError> {
        if depth > MAX_DEPTH {
            return Err(TermError::TooDeep);
        }
        let tag = self.u8()?;
        Ok(match tag {
            SMALL_INT => Term::Json(Value::from(self.u8()?)),
            INT => {
                let b = self.take(4)?;
                Term::Json(Value::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            SMALL_BIG => {
                let n = usize::from(self.u8()?);
                Term::Json(self.big(n)?)
            }
            LARGE_BIG => {
                let n = self.u32()?;
                Term::Json(self.big(n)?)
            }
            NEW_FLOAT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Term::Json(Value::Number(Number::from_f64(f64::from_be_bytes(a)).ok_or(TermError::Number)?))
            }
            ATOM | SMALL_ATOM | ATOM_UTF8 | SMALL_ATOM_UTF8 => match self.atom(tag)?.as_str() {
                "nil" => Term::Json(Value::Null),
                "true" => Term::Json(Value::Bool(true)),
                "false" => Term::Json(Value::Bool(false)),
                other => Term::Atom(other.to_owned()),
            },
            BINARY => {
                let n = self.u32()?;
                let b = self.take(n)?;
                Term::Json(Value::String(String::from_utf8(b.to_vec()).map_err(|_| TermError::Unsupported(BINARY))?))
            }
            NIL => Term::Json(Value::Array(Vec::new())),
            STRING => {
                let n = self.u16()?;
                Term::Json(Value::Array(self.take(n)?.iter().map(|&b| Value::from(b)).collect()))
            }
            LIST => {
                let n = self.u32()?;
                let n = self.count(n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(json(self.term(depth + 1)?)?);
                }
                if self.u8()? != NIL {
                    return Err(TermError::Unsupported(LIST));
                }
                Term::Json(Value::Array(items))
            }
            SMALL_TUPLE | LARGE_TUPLE => {
                let n = if tag == SMALL_TUPLE { usize::from(self.u8()?) } else { self.u32()? };
                let n = self.count(n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                Term::Tuple(items)
            }
            MAP => {
                let n = self.u32()?;
                let n = self.count(n)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.term(depth + 1)?;
                    let v = self.term(depth + 1)?;
                    pairs.push((k, v));
                }
                if pairs.iter().all(|(k, _)| matches!(k, Term::Json(Value::String(_)))) {
                    let mut map = Map::new();
                    for (k, v) in pairs {
                        if let Term::Json(Value::String(k)) = k {
                            map.insert(k, json(v)?);
                        }
                    }
                    Term::Json(Value::Object(map))
                } else {
                    Term::AtomMap(pairs)
                }
            }
            other => return Err(TermError::Unsupported(other)),
        })
    }
}

/// The JSON of a term that must be data.
pub(crate) fn json(t: Term) -> Result<Value, TermError> {
    match t {
        Term::Json(v) => Ok(v),
        Term::Atom(_) => Err(TermError::Unsupported(SMALL_ATOM_UTF8)),
        Term::Tuple(_) => Err(TermError::Unsupported(SMALL_TUPLE)),
        Term::AtomMap(_) => Err(TermError::NonStringKey),
    }
}

/// Decodes a whole external term (`131`, optionally compressed).
pub(crate) fn decode(data: &[u8]) -> Result<Term, TermError> {
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
        let mut out = Vec::with_capacity(size);
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
    let mut r = Reader { data: body, at: 0 };
    let t = r.term(0)?;
    if r.at != body.len() {
        return Err(TermError::Truncated);
    }
    Ok(t)
}

/// Decodes JSON data from an external term.
///
/// # Errors
///
/// Anything that is not data of the supported kinds.
pub fn term_to_json(data: &[u8]) -> Result<Value, TermError> {
    json(decode(data)?)
}

/// Encodes JSON data as `term_to_binary` does.
///
/// # Errors
///
/// Numbers that JSON holds but a term cannot (none today), kept for
/// future kinds.
pub fn json_to_term(v: &Value) -> Result<Vec<u8>, TermError> {
    let mut out = vec![VERSION];
    encode_value(&mut out, v)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_as_erlang_does() {
        // {1, 1700000000000, 86400} from the Phoenix.Token notes
        let mut out = vec![VERSION, SMALL_TUPLE, 3];
        encode_value(&mut out, &json!(1)).unwrap();
        encode_value(&mut out, &json!(1_700_000_000_000u64)).unwrap();
        encode_value(&mut out, &json!(86400)).unwrap();
        assert_eq!(
            out,
            [
                0x83, 0x68, 0x03, 0x61, 0x01, 0x6E, 0x06, 0x00, 0x00, 0x68, 0xE5, 0xCF, 0x8B, 0x01, 0x62, 0x00, 0x01,
                0x51, 0x80
            ]
        );
        assert_eq!(json_to_term(&json!([1, 2, 3])).unwrap(), [131, STRING, 0, 3, 1, 2, 3]);
        assert_eq!(json_to_term(&json!(-1)).unwrap(), [131, INT, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(json_to_term(&json!(null)).unwrap(), [131, SMALL_ATOM_UTF8, 3, b'n', b'i', b'l']);
    }

    #[test]
    fn round_trips_json_and_accepts_both_atom_encodings() {
        for v in [
            json!({"b": [1, "x", null, true, 2.5, {"n": -5}], "a": i64::MIN, "u": u64::MAX}),
            json!([]),
            json!(""),
            json!([256, 1]),
        ] {
            assert_eq!(term_to_json(&json_to_term(&v).unwrap()).unwrap(), v);
        }
        assert_eq!(term_to_json(&[131, ATOM, 0, 4, b't', b'r', b'u', b'e']).unwrap(), json!(true));
        assert_eq!(term_to_json(&[131, SMALL_ATOM, 5, b'f', b'a', b'l', b's', b'e']).unwrap(), json!(false));
        assert!(matches!(term_to_json(&[131, SMALL_ATOM_UTF8, 2, b'o', b'k']), Err(TermError::Unsupported(_))));
        assert!(matches!(term_to_json(&[131, 104, 0]), Err(TermError::Unsupported(_))));
        assert!(matches!(term_to_json(&[131, 103]), Err(TermError::Unsupported(103))));
    }

    #[test]
    fn accepts_compressed_terms() {
        use std::io::Write;
        let raw = json_to_term(&json!({"k": "v".repeat(100)})).unwrap();
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
            &[131],
            &[],
        ] {
            assert!(term_to_json(data).is_err());
        }
        let mut deep = vec![131u8];
        deep.extend(std::iter::repeat_n([LIST, 0, 0, 0, 1], 200).flatten());
        assert_eq!(term_to_json(&deep), Err(TermError::TooDeep));
    }
}
