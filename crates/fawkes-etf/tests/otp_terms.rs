//! Every kind of term as Erlang/OTP itself writes it (`tests/data/otp_terms.txt`,
//! made by `tests/data/otp_terms.escript` with OTP 25's `term_to_binary`, in
//! its default encoding, with `{minor_version, 2}` (OTP 26+'s) and
//! compressed): each decodes, and encodes back to the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fawkes_etf::{decode, encode, uncompressed, Atom, AtomEncoding, BitBinary, Pid, PortEncoding, RefEncoding, Term};

fn vectors() -> Vec<(String, [Vec<u8>; 3])> {
    let hex = |s: &str| (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
    include_str!("data/otp_terms.txt")
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.split(' ').collect();
            (p[0].to_owned(), [hex(p[1]), hex(p[2]), hex(p[3])])
        })
        .collect()
}

fn term(name: &str) -> Term {
    let v = vectors();
    let (_, [default, ..]) = v.iter().find(|(n, _)| n == name).unwrap();
    decode(default).unwrap()
}

#[test]
fn every_term_otp_writes_decodes_and_encodes_back_byte_for_byte() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 31);
    for (name, encodings) in &vectors {
        let mut terms = Vec::new();
        for bytes in encodings {
            let t = decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(encode(&t), uncompressed(bytes).unwrap().as_ref(), "{name}");
            terms.push(t);
        }
        if !name.contains("fun") {
            // (a fun is kept as its bytes, atoms inside included)
            assert_eq!(terms[0], terms[1], "{name}: atoms compare by name, whatever their encoding");
        }
        assert_eq!(terms[0], terms[2], "{name}: compressed");
    }
}

#[test]
fn what_the_terms_hold() {
    let Term::Pid(pid) = term("pid") else { panic!("a pid") };
    assert_eq!(pid, Pid::new(Atom::new("nonode@nohost"), pid.id, 0, 0));
    let Term::Port(port) = term("port") else { panic!("a port") };
    assert_eq!((port.node.as_str(), port.encoding), ("nonode@nohost", PortEncoding::New));
    let Term::Ref(r) = term("ref") else { panic!("a reference") };
    assert_eq!((r.ids.len(), r.encoding), (3, RefEncoding::Newer));
    assert_eq!(term("bits"), Term::BitBinary(BitBinary { bytes: vec![0x20], bits: 3 }));
    assert_eq!(term("improper"), Term::ImproperList(vec![Term::Int(1)], Box::new(Term::Int(2))));
    assert_eq!(term("big_64"), Term::Int(1 << 40));
    assert_eq!(term("big_neg"), Term::Int(-(1 << 100)));
    assert!(matches!(term("big_huge"), Term::BigInt(b) if b.magnitude.len() == 26 && !b.negative));
    let Term::Atom(latin1) = term("atom_latin1") else { panic!("an atom") };
    assert_eq!((latin1.as_str(), latin1.encoding()), ("héllo", AtomEncoding::Latin1));
    assert_eq!(term("atom_utf8").as_atom(), Some("ünïcødé✓"));
    for fun in ["export_fun", "fun_closure", "fun_plain"] {
        assert!(matches!(term(fun), Term::Opaque(_)), "{fun}");
    }
    let Term::Tuple(nested) = term("nested") else { panic!("a tuple") };
    assert_eq!(nested[1].as_atom(), Some("heartbeat"));
    assert_eq!(nested[2], Term::Tuple(vec![Term::atom("node1"), Term::Int(1_796_051_446_938_584)]));
    assert_eq!(term("string"), Term::List(vec![Term::Int(97), Term::Int(98), Term::Int(99)]));
    assert!(matches!(term("large_map"), Term::Map(p) if p.len() == 40));
    assert!(matches!(term("large_tuple"), Term::Tuple(t) if t.len() == 300));
}

/// A fun that claims to be longer or shorter than its parts is refused.
#[test]
fn a_fun_must_hold_exactly_its_size() {
    let (_, [bytes, ..]) = vectors().into_iter().find(|(n, _)| n == "fun_closure").unwrap();
    for delta in [-1i32, 1] {
        let mut bad = bytes.clone();
        let size = u32::from_be_bytes([bad[2], bad[3], bad[4], bad[5]]) as i32 + delta;
        bad[2..6].copy_from_slice(&(size as u32).to_be_bytes());
        assert!(decode(&bad).is_err(), "size off by {delta}");
    }
}
