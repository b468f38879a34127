//! `GET /autobahn`, the echo the Autobahn testsuite drives: on the socket's
//! WebSocket layer, permessage-deflate offered, and messages beyond the
//! socket's 10,000,000-byte limit taken (Autobahn's 9.* cases send 16 MiB).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// The server on a port of the system's choosing, and its address.
fn start() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conformance-server"))
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let at = line.find("http://127.0.0.1:").expect(&line) + "http://".len();
    let addr = line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    (child, addr)
}

/// Kills the server when the test ends, passed or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn echoes_a_16_mib_message_and_offers_permessage_deflate() {
    let (child, addr) = start();
    let _server = Server(child);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        format!(
            "GET /autobahn HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\
             sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    assert!(head.contains("sec-websocket-extensions: permessage-deflate;"), "{head}");

    // a binary message of 16 MiB, masked with a zero key; random-looking
    // bytes, so that the echo is not compressed much
    let len = 16usize << 20;
    let mut x = 0x9E37_79B9u32;
    let payload: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    s.write_all(&frame).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || s.write_all(&payload).unwrap())
    };
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[0] & 0x0f, 0x2, "a binary frame");
    let n = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            usize::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => usize::from(n),
    };
    let mut echoed = vec![0u8; n];
    s.read_exact(&mut echoed).unwrap();
    writer.join().unwrap();
    if h[0] & 0x40 != 0 {
        echoed = fawkes_ws::deflate::decompress(&echoed, len).unwrap();
    }
    assert!(echoed == payload, "the echo differs");
}
