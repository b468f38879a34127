//! The terms that are more than data: atoms with their encodings, pids,
//! ports, references, integers beyond 128 bits, bit strings, and the terms
//! kept as their bytes (funs, export funs, old floats).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// How an atom is written. OTP 26 and later write every atom as UTF-8
/// (`SmallUtf8`, or `Utf8` past 255 bytes); older OTPs write Latin-1 atoms
/// as `Latin1` (`ATOM_EXT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AtomEncoding {
    /// `ATOM_EXT` (100): Latin-1, two-byte length.
    Latin1,
    /// `SMALL_ATOM_EXT` (115): Latin-1, one-byte length.
    SmallLatin1,
    /// `ATOM_UTF8_EXT` (118): UTF-8, two-byte length.
    Utf8,
    /// `SMALL_ATOM_UTF8_EXT` (119): UTF-8, one-byte length.
    #[default]
    SmallUtf8,
}

/// An atom: its name, and the encoding it was read in (or is to be written
/// in). Atoms compare, order and hash by name only, as Erlang compares them.
#[derive(Debug, Clone)]
pub struct Atom {
    name: String,
    encoding: AtomEncoding,
}

impl Atom {
    /// An atom written as OTP 26+ writes it.
    pub fn new(name: impl Into<String>) -> Atom {
        Atom { name: name.into(), encoding: AtomEncoding::SmallUtf8 }
    }

    /// An atom written in `encoding` (a Latin-1 encoding falls back to
    /// UTF-8 for a name Latin-1 cannot hold).
    pub fn with_encoding(name: impl Into<String>, encoding: AtomEncoding) -> Atom {
        Atom { name: name.into(), encoding }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The encoding it is written in.
    pub fn encoding(&self) -> AtomEncoding {
        self.encoding
    }
}

impl std::ops::Deref for Atom {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Atom) -> bool {
        self.name == other.name
    }
}

impl Eq for Atom {}

impl PartialEq<str> for Atom {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for Atom {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Atom) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Atom) -> Ordering {
        self.name.cmp(&other.name)
    }
}

impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// A process identifier: the node's name, the process's number and serial,
/// and the node's creation (which tells two runs of a node apart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid {
    /// The node.
    pub node: Atom,
    /// The process's number on the node.
    pub id: u32,
    /// Its serial.
    pub serial: u32,
    /// The node's creation.
    pub creation: u32,
    /// Written as the old `PID_EXT` (one byte of creation) rather than
    /// `NEW_PID_EXT`.
    pub old_encoding: bool,
}

impl Pid {
    /// A pid, written as `NEW_PID_EXT` (what OTP 23 and later write).
    pub fn new(node: Atom, id: u32, serial: u32, creation: u32) -> Pid {
        Pid { node, id, serial, creation, old_encoding: false }
    }
}

/// How a port is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortEncoding {
    /// `PORT_EXT` (102): 32-bit id, one byte of creation.
    Old,
    /// `NEW_PORT_EXT` (89): 32-bit id, 32-bit creation.
    New,
    /// `V4_PORT_EXT` (120): 64-bit id, 32-bit creation.
    V4,
}

/// A port identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// The node.
    pub node: Atom,
    /// The port's number on the node.
    pub id: u64,
    /// The node's creation.
    pub creation: u32,
    /// How it is written.
    pub encoding: PortEncoding,
}

/// How a reference is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefEncoding {
    /// `REFERENCE_EXT` (101): one id, one byte of creation.
    Old,
    /// `NEW_REFERENCE_EXT` (114): one byte of creation.
    New,
    /// `NEWER_REFERENCE_EXT` (90): 32-bit creation (OTP 23 and later).
    Newer,
}

/// A reference (`make_ref()`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// The node.
    pub node: Atom,
    /// The node's creation.
    pub creation: u32,
    /// Its id words.
    pub ids: Vec<u32>,
    /// How it is written.
    pub encoding: RefEncoding,
}

/// An integer beyond 128 bits, as it is written: a sign and the magnitude's
/// bytes, least significant first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BigInt {
    /// Below zero.
    pub negative: bool,
    /// The magnitude, least significant byte first.
    pub magnitude: Vec<u8>,
}

/// A bit string whose length is not a whole number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BitBinary {
    /// The bytes; only the first `bits` bits of the last one belong to it.
    pub bytes: Vec<u8>,
    /// Bits used in the last byte, 1 to 8.
    pub bits: u8,
}

/// A term kept as the bytes it was read from: a fun, an export fun
/// (`fun m:f/a`) or an old-style float. It is written back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Opaque {
    bytes: Vec<u8>,
}

impl Opaque {
    pub(crate) fn new(bytes: Vec<u8>) -> Opaque {
        Opaque { bytes }
    }

    /// Its encoding, from the tag byte on (without the version byte).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The tag byte: 112 (a fun), 113 (an export fun), 117 (an old fun) or
    /// 99 (an old float).
    pub fn tag(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }
}
